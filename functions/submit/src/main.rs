//! The submit function on Cloud Run: configuration from the environment, then serve.

use assetgen_common::config::{Config, Profile};
use assetgen_common::pipeline::Pipeline;
use assetgen_common::{cloud, shim};
use assetgen_submit::{SubmitState, router};
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    shim::run_function("submit", run).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env(Profile::Cloud)?;
    let parts = cloud::parts(&config).await?;
    let store = parts.store.clone();
    let pipeline = Pipeline::assemble(parts);
    let state = SubmitState {
        submitter: pipeline.submitter,
        control: pipeline.control,
        store: store.clone(),
        auth: cloud::user_auth(&config)?,
        public_url: config.public_url.clone(),
        capabilities: cloud::capability_tokens(&config)?,
    };
    shim::listen(config.port, shim::app(router(Arc::new(state)), store, "assetgen submit")).await?;
    Ok(())
}
