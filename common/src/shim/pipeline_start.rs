//! What a cloud function that runs the pipeline (submit, generate) starts from. Both read the same
//! configuration, wire the same adapters into the same pipeline and are ready when the store and
//! the queue answer; they differ only in the routes they serve. The relay runs no pipeline.

use super::Readiness;
use crate::cloud;
use crate::config::{Config, Profile};
use crate::pipeline::Pipeline;
use crate::store::ObjectStore;
use std::sync::Arc;

/// The configuration, the store, what `/readyz` checks, and the assembled pipeline.
#[derive(Debug)]
pub struct PipelineStart {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    pub readiness: Readiness,
    pub pipeline: Pipeline,
}

impl PipelineStart {
    /// From the environment (the cloud profile): a missing or wrong setting is an error naming it.
    pub async fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        let config = Config::from_env(Profile::Cloud)?;
        let parts = cloud::parts(&config).await?;
        let store = parts.store.clone();
        let readiness = Readiness::store(store.clone()).with_queue(parts.queue.clone());
        Ok(Self { config, store, readiness, pipeline: Pipeline::assemble(parts) })
    }
}
