//! The cloud functions' wiring: from the typed [`Config`] to the adapters each `main` needs. A
//! missing or wrong setting stops the process at start with a message naming the variable.

use crate::auth::{Access, AllowList, Authenticator, CapabilityTokens, DevAuth, LinkSigner, OidcAuth, PushAuth};
use crate::budget::{DailyBudget, UserLimits};
use crate::config::{AuthMode, Config, GeminiBackend, Profile, QueueUrl, StoreUrl};
use crate::model::{AdcTokenSource, BatchApi, GeminiBatchApi, GeminiModel, GeminiTimeouts, ImageModel, PacedModel};
use crate::pipeline::Parts;
use crate::queue::{PubSubQueue, RowQueue};
use crate::refs::fetch::FetchPolicy;
use crate::store::{FileStore, GcsStore, MemoryStore, ObjectStore};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SetupError {
    pub variable: &'static str,
    pub problem: String,
}

fn setup(variable: &'static str, problem: impl std::fmt::Display) -> SetupError {
    SetupError { variable, problem: problem.to_string() }
}

/// The configured store, metered (calls by operation and result).
pub async fn store(config: &Config) -> Result<Arc<dyn ObjectStore>, SetupError> {
    let store: Arc<dyn ObjectStore> = match &config.store {
        StoreUrl::File(path) => Arc::new(FileStore::open(path).map_err(|e| setup("ASSETGEN_STORE", e))?),
        StoreUrl::Memory => Arc::new(MemoryStore::new()),
        StoreUrl::Gcs { bucket } => {
            let emulator = std::env::var("STORAGE_EMULATOR_HOST").ok().filter(|h| !h.trim().is_empty());
            Arc::new(GcsStore::connect(bucket, emulator.as_deref()).await.map_err(|e| setup("ASSETGEN_STORE", e))?)
        }
    };
    Ok(crate::observe::MeteredStore::wrap(store))
}

/// The row queue: Pub/Sub. The in-process queue needs `assetgen serve` to deliver its messages.
pub async fn queue(config: &Config) -> Result<Arc<dyn RowQueue>, SetupError> {
    match &config.queue {
        QueueUrl::PubSub { project, topic } => {
            let emulator = std::env::var("PUBSUB_EMULATOR_HOST").ok().filter(|h| !h.trim().is_empty());
            Ok(Arc::new(
                PubSubQueue::connect(project, topic, emulator.as_deref())
                    .await
                    .map_err(|e| setup("ASSETGEN_QUEUE", e))?,
            ))
        }
        QueueUrl::Local => Err(setup(
            "ASSETGEN_QUEUE",
            "a cloud function needs pubsub://projects/P/topics/T (local is for `assetgen serve`)",
        )),
    }
}

/// The live image model, if one is configured (a Developer API key, or Vertex with a project),
/// paced to this instance's share of the quota when `ASSETGEN_GEMINI_IPM` is set.
pub fn live_model(config: &Config) -> Result<Option<Arc<dyn ImageModel>>, SetupError> {
    let Some(model) = gemini(config)? else { return Ok(None) };
    Ok(Some(match config.pacing() {
        Some(pacing) => {
            tracing::info!(
                quota_ipm = config.gemini_ipm,
                instances = config.gemini_instances,
                share_ipm = pacing.images_per_minute,
                "model calls are paced to this instance's share of the quota"
            );
            Arc::new(PacedModel::new(model, pacing))
        }
        None => model,
    }))
}

/// Gemini's Batch API for run mode `bulk`: the Developer API with a key. Vertex AI's batch
/// prediction works through Cloud Storage and is not supported: bulk is then refused at submit.
pub fn batch_api(config: &Config) -> Result<Option<Arc<dyn BatchApi>>, SetupError> {
    match (&config.gemini_backend, &config.gemini_api_key) {
        (GeminiBackend::Developer, Some(key)) => {
            let model = GeminiModel::developer(key.clone(), config.gemini_base_url.clone(), GeminiTimeouts::default())
                .map_err(|e| setup("GEMINI_BASE_URL", e))?;
            let api = GeminiBatchApi::new(model).map_err(|e| setup("GEMINI_BACKEND", e))?;
            Ok(Some(Arc::new(api)))
        }
        _ => Ok(None),
    }
}

fn gemini(config: &Config) -> Result<Option<Arc<dyn ImageModel>>, SetupError> {
    let timeouts = GeminiTimeouts::default();
    match config.gemini_backend {
        GeminiBackend::Developer => match &config.gemini_api_key {
            Some(key) => Ok(Some(Arc::new(
                GeminiModel::developer(key.clone(), config.gemini_base_url.clone(), timeouts)
                    .map_err(|e| setup("GEMINI_BASE_URL", e))?,
            ))),
            None => Ok(None),
        },
        GeminiBackend::Vertex => {
            let project = config
                .gcp_project
                .clone()
                .ok_or_else(|| setup("GOOGLE_CLOUD_PROJECT", "GEMINI_BACKEND=vertex needs a project"))?;
            let tokens = Arc::new(AdcTokenSource::new().map_err(|e| setup("GOOGLE_APPLICATION_CREDENTIALS", e))?);
            let model = GeminiModel::vertex(
                project,
                config.gcp_location.clone(),
                tokens,
                config.gemini_base_url.clone(),
                timeouts,
            )
            .map_err(|e| setup("GOOGLE_CLOUD_LOCATION", e))?;
            Ok(Some(Arc::new(model)))
        }
    }
}

/// Who may call the user-facing endpoints: users' Google ID tokens for one of
/// `ASSETGEN_OIDC_AUDIENCE`, on `ASSETGEN_ALLOWED`. Dev auth only where the profile allows it
/// (`Config` refuses it in the cloud).
pub fn user_auth(config: &Config) -> Result<Arc<dyn Authenticator>, SetupError> {
    match config.auth {
        AuthMode::Dev => {
            tracing::warn!("ASSETGEN_AUTH=dev: every caller is trusted as X-Assetgen-User; never deploy this");
            Ok(Arc::new(DevAuth))
        }
        AuthMode::Oidc => {
            if config.oidc_audiences.is_empty() {
                return Err(setup(
                    "ASSETGEN_OIDC_AUDIENCE",
                    "not set; list the audiences users' ID tokens carry (the Sheet's OAuth client id, the service URL)",
                ));
            }
            Ok(Arc::new(OidcAuth::new(
                config.oidc_audiences.clone(),
                config.oidc_jwks_url.clone(),
                config.allowed.clone(),
            )))
        }
    }
}

/// Who may push rows: Pub/Sub's service account (`ASSETGEN_PUSH_SA`) with a token for
/// `ASSETGEN_PUSH_AUDIENCE`, which no user token carries.
pub fn push_auth(config: &Config) -> Result<Arc<dyn Authenticator>, SetupError> {
    match config.auth {
        AuthMode::Dev => Ok(Arc::new(DevAuth)),
        AuthMode::Oidc => {
            if config.push_audiences.is_empty() {
                return Err(setup(
                    "ASSETGEN_PUSH_AUDIENCE",
                    "not set; use the audience of the push subscription's OIDC token",
                ));
            }
            Ok(Arc::new(PushAuth::new(
                config.push_audiences.clone(),
                config.oidc_jwks_url.clone(),
                config.push_service_account.clone(),
            )))
        }
    }
}

/// Page links and control tokens (`ASSETGEN_CAPABILITY_SECRET`): required wherever batches are
/// read or controlled, since every instance must check what another issued.
pub fn capability_tokens(config: &Config) -> Result<CapabilityTokens, SetupError> {
    let secret = config
        .capability_secret
        .as_ref()
        .ok_or_else(|| setup("ASSETGEN_CAPABILITY_SECRET", "not set; 32 bytes or more from Secret Manager"))?;
    CapabilityTokens::new(secret).map_err(|e| setup("ASSETGEN_CAPABILITY_SECRET", e))
}

/// Image and reference links (`ASSETGEN_LINK_SECRET`): required wherever links are made or checked.
pub fn link_signer(config: &Config) -> Result<LinkSigner, SetupError> {
    let secret = config
        .link_secret
        .as_ref()
        .ok_or_else(|| setup("ASSETGEN_LINK_SECRET", "not set; 32 bytes or more from Secret Manager"))?;
    LinkSigner::new(secret).map_err(|e| setup("ASSETGEN_LINK_SECRET", e))
}

/// Everything submit and relay decide batch access and make links with.
pub fn access(config: &Config) -> Result<Access, SetupError> {
    Ok(Access {
        auth: user_auth(config)?,
        tokens: capability_tokens(config)?,
        links: link_signer(config)?,
        admins: AllowList::new(&config.admins),
    })
}

/// The pipeline's parts for a cloud function.
pub async fn parts(config: &Config) -> Result<Parts, SetupError> {
    let store = store(config).await?;
    let queue = queue(config).await?;
    let budget = Arc::new(DailyBudget {
        store: store.clone(),
        limits: UserLimits { default: config.daily_limit, overrides: config.user_limits.clone() },
    });
    let mut parts = Parts::new(store, queue, budget);
    parts.live = live_model(config)?;
    parts.batch_api = batch_api(config)?;
    parts.fetch = FetchPolicy {
        allow_private: config.allow_private_refs,
        bucket: config.store.bucket().map(str::to_owned),
        ..FetchPolicy::default()
    };
    parts.limits = config.limits;
    parts.ref_policy = config.ref_policy(Profile::Cloud);
    parts.default_model = config.gemini_model.clone();
    parts.lease_ttl = config.lease_ttl;
    Ok(parts)
}
