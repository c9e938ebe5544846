//! The submit function on Cloud Run: configuration from the environment, then serve.

use assetgen_common::shim::PipelineStart;
use assetgen_common::{cloud, shim};
use assetgen_submit::{SubmitState, cors, router};
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    shim::run_function("submit", run).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let PipelineStart { config, store, readiness, pipeline } = PipelineStart::from_env().await?;
    let state = SubmitState {
        submitter: pipeline.submitter,
        control: pipeline.control,
        store: store.clone(),
        access: cloud::access(&config)?,
        public_url: config.public_url.clone(),
    };
    let app = shim::app(router(Arc::new(state)), readiness, "assetgen submit");
    // The relay's page calls the batch routes from its own origin.
    let app = match cors::layer(&config.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    shim::listen(config.port, app).await?;
    Ok(())
}
