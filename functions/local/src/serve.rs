//! `assetgen serve`: the three functions' routers on one port, wired to the filesystem store, the
//! in-process push queue and the dry-run model — the same handlers and domain code as the cloud.

use anyhow::Context;
use assetgen_common::auth::DevAuth;
use assetgen_common::budget::Unmetered;
use assetgen_common::config::{Config, Profile, StoreUrl};
use assetgen_common::cost::PriceTable;
use assetgen_common::domain::BatchId;
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::generation::RowWorker;
use assetgen_common::model::DryRunModel;
use assetgen_common::queue::{LocalPushConfig, LocalPushQueue};
use assetgen_common::refs::fetch::{FetchPolicy, RefFetcher};
use assetgen_common::shim;
use assetgen_common::store::{FileStore, MemoryStore, ObjectStore};
use assetgen_common::submission::Submitter;
use assetgen_generate::GenerateState;
use assetgen_relay::{RelayConfig, RelayState};
use assetgen_submit::SubmitState;
use axum::Json;
use axum::extract::Path;
use axum::response::Redirect;
use axum::routing::get;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on. Dev auth trusts a header, so keep it on loopback.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Use the live Gemini model for batches submitted with run_mode "live" (needs GEMINI_API_KEY).
    #[arg(long)]
    live: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    shim::init_logging(shim::LogFormat::Text);
    let config = Config::from_env(Profile::Local).context("configuration")?;
    if args.live {
        anyhow::bail!(
            "--live needs the Gemini adapter, which this build does not have yet; run without --live for dry runs"
        );
    }
    let store: Arc<dyn ObjectStore> = match &config.store {
        StoreUrl::File(path) => Arc::new(FileStore::open(path).with_context(|| format!("opening {}", path.display()))?),
        StoreUrl::Memory => Arc::new(MemoryStore::new()),
        StoreUrl::Gcs { .. } => {
            anyhow::bail!("ASSETGEN_STORE=gs://… is for the cloud functions; `serve` uses file:// or mem://")
        }
    };
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{} (is another assetgen running? set PORT)", args.host, args.port))?;
    let address = listener.local_addr()?;
    let base = url::Url::parse(&format!("http://{address}"))?;

    let queue = LocalPushQueue::new(LocalPushConfig::for_base(&base)?);
    let auth = Arc::new(DevAuth);
    tracing::warn!("dev auth: every caller is trusted as X-Assetgen-User (or dev@localhost); never expose this port");
    let prices = PriceTable::default();
    let fetcher = RefFetcher::new(
        FetchPolicy { allow_private: config.allow_private_refs, allow_local_files: true, ..FetchPolicy::default() },
        store.clone(),
    );
    let submit = SubmitState {
        submitter: Submitter {
            store: store.clone(),
            queue: Arc::new(queue.clone()),
            budget: Arc::new(Unmetered { limit: config.daily_limit }),
            prices: prices.clone(),
            limits: config.limits,
            ref_policy: config.ref_policy(Profile::Local),
            default_model: config.gemini_model.clone(),
            live_available: false,
        },
        store: store.clone(),
        auth: auth.clone(),
        public_url: config.public_url.clone(),
    };
    let generate = GenerateState {
        worker: RowWorker {
            store: store.clone(),
            dry_run: Arc::new(DryRunModel),
            live: None,
            fetcher,
            prices,
            max_refs: config.limits.max_refs,
            lease_ttl: Duration::from_secs(180),
        },
        auth: auth.clone(),
    };
    let relay = RelayState {
        store: store.clone(),
        auth,
        public_url: config.public_url.clone(),
        config: RelayConfig::default(),
    };
    let app = app(submit, generate, relay, store.clone());

    let store_text = match &config.store {
        StoreUrl::File(path) => format!("files under {}", path.display()),
        _ => "memory (lost on exit)".to_owned(),
    };
    // Tests and scripts read this first line to learn the port.
    println!("assetgen is listening on {base}");
    println!("  store: {store_text}; queue: in-process push; model: dry run (no network, no cost)");
    let server = if address.port() == 8080 { String::new() } else { format!("--server {base} ") };
    println!("  submit a batch:  ./target/debug/assetgen {server}submit examples/rows.csv --follow");
    println!("  API description: {base}openapi.json");
    shim::serve(listener, app).await?;
    Ok(ExitCode::SUCCESS)
}

/// Only a parsed batch id goes into the `Location` header (a raw path segment could hold anything).
async fn progress_page(Path(id): Path<String>) -> Result<Redirect, Problem> {
    let id = BatchId::parse(&id).map_err(|e| Problem::new(ErrorCode::BatchNotFound, e.0))?;
    Ok(Redirect::temporary(&format!("/v1/batches/{id}")))
}

/// The one-process app: the three functions' routers, `/openapi.json`, health, problems.
pub fn app(
    submit: SubmitState,
    generate: GenerateState,
    relay: RelayState,
    store: Arc<dyn ObjectStore>,
) -> axum::Router {
    let (router, mut api) = OpenApiRouter::new()
        .merge(assetgen_submit::router(Arc::new(submit)))
        .merge(assetgen_generate::router(Arc::new(generate)))
        .merge(assetgen_relay::router(Arc::new(relay)))
        .split_for_parts();
    api.info.title = "assetgen".to_owned();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api.info.description = Some("Turn rows of a Sheet into images made by Gemini.".to_owned());
    let api = Arc::new(api);
    let router = router
        .route("/openapi.json", get(move || std::future::ready(Json(api.as_ref().clone()))))
        // The progress page comes with the web issue; until then its link shows the batch's status.
        .route("/b/{id}", get(progress_page))
        .merge(shim::health_routes(store));
    shim::finish(router)
}
