//! `assetgen serve`: the three functions' routers on one port, wired to the filesystem store, the
//! in-process push queue and the dry-run model (or Gemini with `--live`) — the same handlers and
//! domain code as the cloud.

use anyhow::Context;
use assetgen_common::auth::{Access, AllowList, Authenticator, CapabilityTokens, DevAuth, LinkSigner, LocalPushAuth};
use assetgen_common::budget::{DailyBudget, UserLimits};
use assetgen_common::config::{AuthMode, Config, GeminiBackend, Profile, StoreUrl};
use assetgen_common::model::{BatchApi, GeminiBatchApi, GeminiModel, GeminiTimeouts, ImageModel};
use assetgen_common::observe::{self, names};
use assetgen_common::pipeline::{Parts, Pipeline};
use assetgen_common::queue::{LocalPushConfig, LocalPushQueue};
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::store::{CountingStore, OutageStore};
use assetgen_common::{cloud, shim};
use assetgen_generate::{GenerateState, Redelivery};
use assetgen_relay::{RelayConfig, RelayState};
use assetgen_submit::SubmitState;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on. Dev auth trusts a header, so it listens on loopback only; with
    /// `ASSETGEN_AUTH=oidc` any address.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Make batches submitted with run_mode "live" with Gemini (needs GEMINI_API_KEY), and "bulk"
    /// ones with Gemini's Batch API (half the price, results within a day). They cost money.
    #[arg(long)]
    live: bool,
    /// How often the Batch API jobs of bulk batches are polled, in seconds.
    #[arg(long, env = "ASSETGEN_BULK_POLL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    bulk_poll_secs: u64,
    /// Bulk requests larger than this many bytes in all go to Google as an uploaded JSONL file
    /// instead of inline (Google's limit for inline requests is 20 MB).
    #[arg(long, env = "ASSETGEN_BULK_INLINE_BYTES", default_value_t = assetgen_common::model::INLINE_LIMIT_BYTES)]
    bulk_inline_bytes: usize,
}

fn batch_api(config: &Config, inline_limit: usize) -> anyhow::Result<Option<Arc<dyn BatchApi>>> {
    let Some(key) = config.gemini_api_key.clone() else { return Ok(None) };
    let model = GeminiModel::developer(key, config.gemini_base_url.clone(), GeminiTimeouts::default())?;
    Ok(Some(Arc::new(GeminiBatchApi::new(model)?.with_inline_limit(inline_limit))))
}

fn live_model(config: &Config) -> anyhow::Result<Arc<dyn ImageModel>> {
    if config.gemini_backend != GeminiBackend::Developer {
        anyhow::bail!("serve --live uses the Gemini Developer API: unset GEMINI_BACKEND or set it to developer");
    }
    cloud::live_model(config)?.context("--live needs GEMINI_API_KEY (the key is read from the environment only)")
}

/// Who may call, and the secrets links are signed with: the cloud's checks under
/// `ASSETGEN_AUTH=oidc`; dev auth otherwise. A secret that is not configured is made up for this
/// run, and its links stop working when `serve` stops.
fn access(config: &Config) -> anyhow::Result<Access> {
    let auth: Arc<dyn Authenticator> = match config.auth {
        AuthMode::Dev => Arc::new(DevAuth),
        AuthMode::Oidc => cloud::user_auth(config)?,
    };
    // Under dev auth made-up secrets are the norm; under OIDC a studio's Sheet keeps links for long.
    let unset = |variable: &str, what: &str| match config.auth {
        AuthMode::Dev => tracing::info!("{variable} is not set: {what} work until this server stops"),
        AuthMode::Oidc => tracing::warn!("{variable} is not set: {what} work until this server stops"),
    };
    let tokens = match config.capability_secret {
        Some(_) => cloud::capability_tokens(config)?,
        None => {
            unset("ASSETGEN_CAPABILITY_SECRET", "page links");
            CapabilityTokens::random()
        }
    };
    let links = match config.link_secret {
        Some(_) => cloud::link_signer(config)?,
        None => {
            unset("ASSETGEN_LINK_SECRET", "image and reference links");
            LinkSigner::random()
        }
    };
    Ok(Access { auth, tokens, links, admins: AllowList::new(&config.admins) })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    shim::init_logging(shim::LogFormat::Text);
    let config = Config::from_env(Profile::Local).context("configuration")?;
    if config.auth == AuthMode::Dev && !args.host.is_loopback() {
        anyhow::bail!(
            "--host {}: dev auth trusts whatever user a request names, so it listens on loopback only; \
             set ASSETGEN_AUTH=oidc (with ASSETGEN_OIDC_AUDIENCE and ASSETGEN_ALLOWED) to serve a network",
            args.host
        );
    }
    let access = access(&config)?;
    let live = if args.live { Some(live_model(&config)?) } else { None };
    let mut store = cloud::store(&config).await?;
    if let Some(flag) = std::env::var_os("ASSETGEN_FAULT_STORE_OUTAGE_FILE").filter(|f| !f.is_empty()) {
        // Fault tests: the store answers 503 while this file exists.
        let flag = std::path::PathBuf::from(flag);
        tracing::warn!(flag = %flag.display(), "fault injection: the store is down while this file exists");
        store = Arc::new(OutageStore::new(store, flag));
    }
    if std::env::var_os("ASSETGEN_STORE_STATS").is_some() {
        // Operators' and benchmarks' view of what the store is asked, every 10 s on stderr.
        let counting = Arc::new(CountingStore::new(store));
        let calls = counting.calls().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                let (gets, puts, lists, deletes) = calls.snapshot();
                eprintln!("store calls so far: gets={gets} puts={puts} lists={lists} deletes={deletes}");
            }
        });
        store = counting;
    }
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{} (is another assetgen running? set PORT)", args.host, args.port))?;
    let address = listener.local_addr()?;
    let base = url::Url::parse(&format!("http://{address}"))?;

    let mut queue_config = LocalPushConfig::for_base(&base)?;
    queue_config.duplicates = config.queue_duplicates;
    if let (true, Some(pacing)) = (args.live, config.pacing()) {
        // Enough rows in flight to keep the quota busy while calls take seconds (docs/sizing.md).
        queue_config.max_outstanding = pacing.pushes_in_flight();
    }
    queue_config.ack_deadline = config.queue_ack_deadline;
    // Under OIDC no Google service account signs this process's own pushes: a per-process secret
    // does, and nothing else is accepted on /pubsub/*.
    let push_auth: Arc<dyn Authenticator> = match config.auth {
        AuthMode::Dev => {
            tracing::warn!(
                "dev auth: every caller is trusted as X-Assetgen-User (or dev@localhost); never expose this port"
            );
            Arc::new(DevAuth)
        }
        AuthMode::Oidc => {
            let local = LocalPushAuth::random();
            queue_config.bearer = Some(local.secret().clone());
            tracing::info!(audiences = ?config.oidc_audiences, "OIDC auth: callers need a Google ID token");
            Arc::new(local)
        }
    };
    if config.queue_duplicates > 1 {
        tracing::warn!(copies = config.queue_duplicates, "fault injection: every message is delivered more than once");
    }
    let queue = LocalPushQueue::journaled(queue_config, store.clone());
    let sampled = queue.clone();
    observe::install().on_read(move || {
        let stats = sampled.stats();
        let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(names::QUEUE_PENDING).set(stats.pending() as f64);
        metrics::counter!(names::QUEUE_DELIVERIES).absolute(read(&stats.deliveries));
        metrics::counter!(names::QUEUE_NACKS).absolute(read(&stats.nacked));
        metrics::counter!(names::QUEUE_DEAD_LETTERED).absolute(read(&stats.dead_lettered));
    });
    let budget = Arc::new(DailyBudget {
        store: store.clone(),
        limits: UserLimits { default: config.daily_limit, overrides: config.user_limits.clone() },
    });
    let mut parts = Parts::new(store.clone(), Arc::new(queue.clone()), budget);
    parts.live = live;
    if args.live {
        parts.batch_api = batch_api(&config, args.bulk_inline_bytes)?;
    }
    parts.fetch = FetchPolicy {
        allow_private: config.allow_private_refs,
        allow_local_files: true,
        bucket: config.store.bucket().map(str::to_owned),
        ..FetchPolicy::default()
    };
    parts.limits = config.limits;
    parts.ref_policy = config.ref_policy(Profile::Local);
    parts.default_model = config.gemini_model.clone();
    parts.lease_ttl = config.lease_ttl;
    let ref_fetch = parts.fetch.clone();
    let pipeline = Pipeline::assemble(parts);

    let submit = SubmitState {
        submitter: pipeline.submitter.clone(),
        control: pipeline.control.clone(),
        store: store.clone(),
        access: access.clone(),
        public_url: config.public_url.clone(),
    };
    // The in-process queue does not count 429s toward dead-lettering: quota waits are nacked.
    let generate =
        GenerateState { worker: pipeline.worker.clone(), auth: push_auth, redelivery: Redelivery::Uncounted429 };
    let relay = RelayState {
        store: store.clone(),
        access,
        public_url: config.public_url.clone(),
        config: RelayConfig::default(),
        ref_fetch,
    };
    let readiness = shim::Readiness::store(store.clone()).with_queue(Arc::new(queue.clone()));
    let app = app(submit, generate, relay, readiness);

    let store_text = match &config.store {
        StoreUrl::File(path) => format!("files under {}", path.display()),
        StoreUrl::Gcs { bucket } => format!("gs://{bucket}"),
        StoreUrl::Memory => "memory (lost on exit)".to_owned(),
    };
    let model_text = if args.live {
        "dry run, and Gemini for live and bulk batches (these cost money)"
    } else {
        "dry run (no network, no cost)"
    };
    // Tests and scripts read this first line to learn the port.
    println!("assetgen is listening on {base}");
    println!("  store: {store_text}; queue: in-process push; model: {model_text}");
    let server = if address.port() == 8080 { String::new() } else { format!("--server {base} ") };
    println!("  submit a batch:  ./target/debug/assetgen {server}submit examples/rows.csv --follow");
    println!("  API description: {base}openapi.json");

    // Once the server answers: deliver what a previous run left pending, then sweep for rows
    // nothing would bring to an end.
    let bulk_sweep = pipeline.sweep.clone();
    let bulk_every = Duration::from_secs(args.bulk_poll_secs);
    tokio::spawn(async move {
        // Bulk batches wait in Google's Batch API: their jobs are polled, and their results stored
        // as they end (the cloud's scheduled sweep does the same).
        let mut tick = tokio::time::interval(bulk_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(p) = bulk_sweep.poll_bulk().await {
                tracing::error!(detail = %p.detail, "polling bulk jobs failed");
            }
        }
    });
    let sweep = pipeline.sweep.clone();
    let sweep_every = config.lease_ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        match queue.resume().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "delivering messages left pending by a previous run"),
            Err(e) => tracing::error!(error = %e, "could not resume pending messages"),
        }
        if let Err(p) = sweep.run().await {
            tracing::error!(detail = %p.detail, "sweep failed");
        }
        // A duplicate that found its row busy was acknowledged: if the holder dies, only this
        // brings the row to an end, once its lease has expired.
        let mut every_lease = tokio::time::interval(sweep_every);
        every_lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every_lease.tick().await;
        loop {
            every_lease.tick().await;
            if let Err(p) = sweep.republish_abandoned().await {
                tracing::error!(detail = %p.detail, "sweep for abandoned rows failed");
            }
        }
    });
    shim::serve(listener, app).await?;
    Ok(ExitCode::SUCCESS)
}

/// The one-process app: the three functions' routers, `/openapi.json`, health, problems.
pub fn app(
    submit: SubmitState,
    generate: GenerateState,
    relay: RelayState,
    readiness: shim::Readiness,
) -> axum::Router {
    let api = OpenApiRouter::new()
        .merge(assetgen_submit::router(Arc::new(submit)))
        .merge(assetgen_generate::router(Arc::new(generate)))
        .merge(assetgen_relay::router(Arc::new(relay)));
    shim::app(api, readiness, "assetgen")
}
