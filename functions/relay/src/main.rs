//! The relay function on Cloud Run: live progress over SSE, image links, the pages and the
//! reference library. It only reads the store (and writes references).

use assetgen_common::config::{Config, Profile};
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::{cloud, shim};
use assetgen_relay::{RelayConfig, RelayState, router};
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    shim::run_function("relay", run).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env(Profile::Cloud)?;
    let store = cloud::store(&config).await?;
    let state = RelayState {
        store: store.clone(),
        access: cloud::access(&config)?,
        public_url: config.public_url.clone(),
        config: RelayConfig { submit_url: config.submit_url.clone(), ..RelayConfig::default() },
        ref_fetch: FetchPolicy { allow_private: config.allow_private_refs, ..FetchPolicy::default() },
    };
    shim::listen(config.port, shim::app(router(Arc::new(state)), shim::Readiness::store(store), "assetgen relay"))
        .await?;
    Ok(())
}
