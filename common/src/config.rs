//! One typed configuration, read from the environment (DESIGN.md "Configuration") and validated at
//! start: a wrong value stops the process with a message that names the variable.

use crate::cost::DEFAULT_MODEL;
use crate::domain::{Money, RefUrlPolicy};
use crate::limits::Limits;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    Memory,
    Gcs { bucket: String },
}

impl StoreUrl {
    /// The bucket's name, for a GCS store.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Self::Gcs { bucket } => Some(bucket),
            Self::File(_) | Self::Memory => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueUrl {
    Local,
    PubSub { project: String, topic: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Trust `X-Assetgen-User` (or `dev@localhost`): local only, logged loudly.
    Dev,
    Oidc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiBackend {
    Developer,
    Vertex,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub store: StoreUrl,
    pub queue: QueueUrl,
    pub gemini_backend: GeminiBackend,
    /// Never logged: `Debug` of this struct redacts it.
    pub gemini_api_key: Option<Secret>,
    pub gemini_base_url: Option<url::Url>,
    pub gemini_model: String,
    pub limits: Limits,
    pub daily_limit: Money,
    /// Per-user daily limits that differ from `daily_limit` (`ASSETGEN_USER_LIMITS=a@x.com=25,b@y.com=5`).
    pub user_limits: std::collections::HashMap<String, Money>,
    pub auth: AuthMode,
    pub allowed: Vec<String>,
    pub allow_private_refs: bool,
    pub public_url: Option<url::Url>,
    /// Accepted `aud` of users' ID tokens (`ASSETGEN_OIDC_AUDIENCE`, comma-separated: the Sheet's
    /// OAuth client id, the service URL).
    pub oidc_audiences: Vec<String>,
    /// Accepted `aud` of Pub/Sub push tokens (`ASSETGEN_PUSH_AUDIENCE`), checked by generate only.
    pub push_audiences: Vec<String>,
    /// Users who may read and cancel anyone's batch (`ASSETGEN_ADMINS`, emails). Not retry: a
    /// retry spends the owner's budget.
    pub admins: Vec<String>,
    /// Key set ID tokens are checked against (`ASSETGEN_OIDC_JWKS_URL`, default Google's).
    pub oidc_jwks_url: String,
    /// The service account Pub/Sub push tokens must carry (`ASSETGEN_PUSH_SA`; unset: refuse push).
    pub push_service_account: Option<String>,
    /// Signs page links and control tokens (`ASSETGEN_CAPABILITY_SECRET`, Secret Manager).
    pub capability_secret: Option<Secret>,
    /// Signs image and reference links (`ASSETGEN_LINK_SECRET`, Secret Manager; rotating it
    /// revokes every such link).
    pub link_secret: Option<Secret>,
    /// Vertex AI project and location (`GOOGLE_CLOUD_PROJECT`, `GOOGLE_CLOUD_LOCATION`, default `global`).
    pub gcp_project: Option<String>,
    pub gcp_location: String,
    /// How long a row's lease holds without renewal (`ASSETGEN_LEASE_TTL_SECS`, default 180).
    pub lease_ttl: std::time::Duration,
    /// Fault injection for tests: the local queue delivers every message this many times
    /// (`ASSETGEN_QUEUE_DUPLICATES`, default 1), as an at-least-once queue may.
    pub queue_duplicates: u32,
    /// Test-only: how long the local queue waits for a push's answer before it counts as a nack
    /// (`ASSETGEN_QUEUE_ACK_DEADLINE_SECS`, default 600, Pub/Sub's longest).
    pub queue_ack_deadline: std::time::Duration,
    /// Where the relay's page finds submit's batch routes (`ASSETGEN_SUBMIT_URL`; unset: the page's
    /// own origin, as under `assetgen serve`).
    pub submit_url: Option<url::Url>,
    /// Browser origins that may call submit across origins: the relay's (`ASSETGEN_CORS_ORIGINS`,
    /// comma-separated; unset: none).
    pub cors_origins: Vec<String>,
    /// The project's images-per-minute quota model calls are paced to (`ASSETGEN_GEMINI_IPM`;
    /// unset: unpaced).
    pub gemini_ipm: Option<u32>,
    /// How many generate instances share that quota (`ASSETGEN_GEMINI_INSTANCES`, default 1;
    /// Terraform sets generate's maximum instances): each paces to its share.
    pub gemini_instances: u32,
}

/// A secret value whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// Where the defaults differ: a laptop (`assetgen serve`) or a cloud function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Local,
    Cloud,
}

impl Config {
    pub fn from_env(profile: Profile) -> Result<Self, ConfigError> {
        Self::from_lookup(profile, |k| std::env::var(k).ok())
    }

    /// Reads through `lookup` so tests need not touch the process environment.
    pub fn from_lookup(profile: Profile, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let err = |variable, problem: String| ConfigError { variable, problem };

        let port = match get("PORT") {
            Some(p) => p.parse().map_err(|_| err("PORT", format!("{p:?} is not a port number")))?,
            None => 8080,
        };
        let store = match get("ASSETGEN_STORE") {
            Some(s) => parse_store(&s).map_err(|p| err("ASSETGEN_STORE", p))?,
            None if profile == Profile::Local => StoreUrl::File(PathBuf::from("./.data")),
            None => return Err(err("ASSETGEN_STORE", "not set; use gs://BUCKET".into())),
        };
        let queue = match get("ASSETGEN_QUEUE").as_deref() {
            None | Some("local") => QueueUrl::Local,
            Some(q) => parse_pubsub(q).map_err(|p| err("ASSETGEN_QUEUE", p))?,
        };
        let gemini_backend = match get("GEMINI_BACKEND").as_deref() {
            None | Some("developer") => GeminiBackend::Developer,
            Some("vertex") => GeminiBackend::Vertex,
            Some(other) => return Err(err("GEMINI_BACKEND", format!("{other:?} is not developer or vertex"))),
        };
        let gemini_base_url = get("GEMINI_BASE_URL")
            .map(|u| url::Url::parse(&u).map_err(|e| err("GEMINI_BASE_URL", format!("not a URL: {e}"))))
            .transpose()?;
        let max_rows = match get("ASSETGEN_MAX_ROWS") {
            Some(n) => n
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| err("ASSETGEN_MAX_ROWS", format!("{n:?} is not a number from 1 to 1000")))?,
            None => Limits::default().max_rows,
        };
        let daily_limit = match get("ASSETGEN_DAILY_LIMIT_USD") {
            Some(v) => parse_usd(&v)
                .ok_or_else(|| err("ASSETGEN_DAILY_LIMIT_USD", format!("{v:?} is not an amount of dollars")))?,
            None => Money::from_micros(10_000_000),
        };
        let mut user_limits = std::collections::HashMap::new();
        for entry in get("ASSETGEN_USER_LIMITS").unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty())
        {
            let parsed = entry
                .rsplit_once('=')
                .and_then(|(user, usd)| Some((user.trim().to_ascii_lowercase(), parse_usd(usd)?)));
            let (user, limit) =
                parsed.ok_or_else(|| err("ASSETGEN_USER_LIMITS", format!("{entry:?} is not EMAIL=DOLLARS")))?;
            user_limits.insert(user, limit);
        }
        let auth = match get("ASSETGEN_AUTH").as_deref() {
            Some("dev") if profile == Profile::Cloud => {
                return Err(err(
                    "ASSETGEN_AUTH",
                    "dev trusts whatever user a request names; the cloud functions run only with oidc".into(),
                ));
            }
            Some("dev") => AuthMode::Dev,
            Some("oidc") => AuthMode::Oidc,
            None if profile == Profile::Local => AuthMode::Dev,
            None => AuthMode::Oidc,
            Some(other) => return Err(err("ASSETGEN_AUTH", format!("{other:?} is not oidc or dev"))),
        };
        let allow_private_refs = match get("ASSETGEN_ALLOW_PRIVATE_REFS").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => return Err(err("ASSETGEN_ALLOW_PRIVATE_REFS", format!("{other:?} is not true or false"))),
        };
        let lease_ttl = match get("ASSETGEN_LEASE_TTL_SECS") {
            Some(v) => std::time::Duration::from_secs(
                v.parse()
                    .ok()
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or_else(|| err("ASSETGEN_LEASE_TTL_SECS", format!("{v:?} is not 1 to 3600 seconds")))?,
            ),
            None => std::time::Duration::from_secs(180),
        };
        let queue_duplicates = match get("ASSETGEN_QUEUE_DUPLICATES") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| err("ASSETGEN_QUEUE_DUPLICATES", format!("{v:?} is not 1 to 10")))?,
            None => 1,
        };
        let gemini_ipm = get("ASSETGEN_GEMINI_IPM")
            .map(|v| {
                v.parse().ok().filter(|n| (1..=1_000_000).contains(n)).ok_or_else(|| {
                    err("ASSETGEN_GEMINI_IPM", format!("{v:?} is not a number of images per minute from 1 to 1000000"))
                })
            })
            .transpose()?;
        let gemini_instances = match get("ASSETGEN_GEMINI_INSTANCES") {
            Some(v) => v.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                err("ASSETGEN_GEMINI_INSTANCES", format!("{v:?} is not a number of instances from 1 to 1000"))
            })?,
            None => 1,
        };
        let queue_ack_deadline = match get("ASSETGEN_QUEUE_ACK_DEADLINE_SECS") {
            Some(v) => std::time::Duration::from_secs(
                v.parse()
                    .ok()
                    .filter(|n| (1..=600).contains(n))
                    .ok_or_else(|| err("ASSETGEN_QUEUE_ACK_DEADLINE_SECS", format!("{v:?} is not 1 to 600 seconds")))?,
            ),
            None => std::time::Duration::from_secs(600),
        };
        let oidc_jwks_url =
            get("ASSETGEN_OIDC_JWKS_URL").unwrap_or_else(|| "https://www.googleapis.com/oauth2/v3/certs".to_owned());
        url::Url::parse(&oidc_jwks_url).map_err(|e| err("ASSETGEN_OIDC_JWKS_URL", format!("not a URL: {e}")))?;
        let public_url = get("ASSETGEN_PUBLIC_URL")
            .map(|u| url::Url::parse(&u).map_err(|e| err("ASSETGEN_PUBLIC_URL", format!("not a URL: {e}"))))
            .transpose()?;
        let submit_url = get("ASSETGEN_SUBMIT_URL")
            .map(|u| parse_base_url(&u).map_err(|p| err("ASSETGEN_SUBMIT_URL", p)))
            .transpose()?;
        let cors_origins = get("ASSETGEN_CORS_ORIGINS")
            .map(|o| parse_origins(&o).map_err(|p| err("ASSETGEN_CORS_ORIGINS", p)))
            .transpose()?
            .unwrap_or_default();
        // Users' and Pub/Sub's audiences are checked by different verifiers (submit and relay read
        // the first, generate the second), so a push token never passes for a user's and back.
        let oidc_audiences = list(get("ASSETGEN_OIDC_AUDIENCE"));
        let push_audiences = list(get("ASSETGEN_PUSH_AUDIENCE"));
        Ok(Self {
            port,
            store,
            queue,
            gemini_backend,
            gemini_api_key: get("GEMINI_API_KEY").map(Secret),
            gemini_base_url,
            gemini_model: get("GEMINI_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            limits: Limits { max_rows, ..Limits::default() },
            daily_limit,
            user_limits,
            auth,
            allowed: get("ASSETGEN_ALLOWED")
                .map(|a| a.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_ascii_lowercase).collect())
                .unwrap_or_default(),
            allow_private_refs,
            public_url,
            lease_ttl,
            queue_duplicates,
            gemini_ipm,
            gemini_instances,
            queue_ack_deadline,
            oidc_audiences,
            push_audiences,
            admins: list(get("ASSETGEN_ADMINS")).into_iter().map(|a| a.to_ascii_lowercase()).collect(),
            oidc_jwks_url,
            push_service_account: get("ASSETGEN_PUSH_SA").map(|s| s.to_ascii_lowercase()),
            capability_secret: get("ASSETGEN_CAPABILITY_SECRET").map(Secret),
            link_secret: get("ASSETGEN_LINK_SECRET").map(Secret),
            gcp_project: get("GOOGLE_CLOUD_PROJECT"),
            gcp_location: get("GOOGLE_CLOUD_LOCATION").unwrap_or_else(|| "global".to_owned()),
            submit_url,
            cors_origins,
        })
    }

    /// How this instance paces its model calls, if a quota is configured: its share of the quota,
    /// waiting for a turn at most a third of a lease and at most a minute. The lease is not renewed
    /// while a call waits, and a row's 3 variants × (wait + 120 s call) must stay within Pub/Sub's
    /// 600 s ack deadline (docs/sizing.md).
    pub fn pacing(&self) -> Option<crate::model::Pacing> {
        let max_wait = (self.lease_ttl / 3).min(crate::model::MAX_WAIT_CAP);
        self.gemini_ipm.map(|ipm| crate::model::Pacing::share_of(ipm, self.gemini_instances, max_wait))
    }

    pub fn ref_policy(&self, profile: Profile) -> RefUrlPolicy {
        RefUrlPolicy { allow_private: self.allow_private_refs, allow_local_files: profile == Profile::Local }
    }
}

/// An `http(s)` URL with no query or fragment, the base of other URLs.
fn parse_base_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{s:?} must be an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must have no query or fragment"));
    }
    Ok(url)
}

/// Comma-separated browser origins (`https://host[:port]`, no path), each serialized as browsers
/// send it in `Origin`.
fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let url = parse_base_url(o)?;
            if url.path() != "/" {
                return Err(format!("{o:?} is not an origin: drop the path"));
            }
            Ok(url.origin().ascii_serialization())
        })
        .collect()
}

/// A comma-separated list, entries trimmed, blanks dropped.
fn list(value: Option<String>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

fn parse_store(s: &str) -> Result<StoreUrl, String> {
    if let Some(path) = s.strip_prefix("file://") {
        if path.is_empty() {
            return Err("file:// needs a path, e.g. file://./.data".into());
        }
        Ok(StoreUrl::File(PathBuf::from(path)))
    } else if s == "mem://" {
        Ok(StoreUrl::Memory)
    } else if let Some(bucket) = s.strip_prefix("gs://") {
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(format!("{s:?} must be gs://BUCKET"));
        }
        Ok(StoreUrl::Gcs { bucket: bucket.to_owned() })
    } else {
        Err(format!("{s:?} is not file://PATH, mem:// or gs://BUCKET"))
    }
}

fn parse_pubsub(s: &str) -> Result<QueueUrl, String> {
    let rest =
        s.strip_prefix("pubsub://").ok_or_else(|| format!("{s:?} is not local or pubsub://projects/P/topics/T"))?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", project, "topics", topic] if !project.is_empty() && !topic.is_empty() => {
            Ok(QueueUrl::PubSub { project: (*project).to_owned(), topic: (*topic).to_owned() })
        }
        _ => Err(format!("{s:?} is not pubsub://projects/P/topics/T")),
    }
}

/// "10", "10.5", "$7.25" → micro-dollars, exactly (no float on the way).
fn parse_usd(s: &str) -> Option<Money> {
    let s = s.trim().trim_start_matches('$');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 6
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = format!("{frac:0<6}").parse().ok()?;
    Some(Money::from_micros(whole.checked_mul(1_000_000)?.checked_add(frac)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(profile: Profile, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(profile, |k| map.get(k).cloned())
    }

    #[test]
    fn local_defaults_need_nothing() {
        let c = config(Profile::Local, &[]).expect("defaults");
        assert_eq!(
            (c.port, c.store.clone(), c.queue.clone(), c.auth),
            (8080, StoreUrl::File("./.data".into()), QueueUrl::Local, AuthMode::Dev)
        );
        assert_eq!(c.daily_limit, Money::from_micros(10_000_000));
        assert_eq!(c.limits.max_rows, 10);
    }

    #[test]
    fn cloud_requires_a_bucket_and_defaults_to_oidc() {
        assert_eq!(config(Profile::Cloud, &[]).expect_err("no store").variable, "ASSETGEN_STORE");
        let c = config(
            Profile::Cloud,
            &[("ASSETGEN_STORE", "gs://b"), ("ASSETGEN_QUEUE", "pubsub://projects/p/topics/rows")],
        )
        .expect("ok");
        assert_eq!(c.auth, AuthMode::Oidc);
        assert_eq!(c.queue, QueueUrl::PubSub { project: "p".into(), topic: "rows".into() });
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("PORT", "http"),
            ("ASSETGEN_STORE", "s3://x"),
            ("ASSETGEN_QUEUE", "pubsub://x"),
            ("ASSETGEN_MAX_ROWS", "0"),
            ("ASSETGEN_DAILY_LIMIT_USD", "ten"),
            ("ASSETGEN_AUTH", "none"),
            ("ASSETGEN_GEMINI_IPM", "0"),
            ("ASSETGEN_GEMINI_IPM", "lots"),
            ("ASSETGEN_GEMINI_INSTANCES", "0"),
            ("ASSETGEN_GEMINI_INSTANCES", "-2"),
        ] {
            assert_eq!(config(Profile::Local, &[(var, value)]).expect_err(value).variable, var);
        }
    }

    #[test]
    fn the_cloud_refuses_dev_auth() {
        let vars = [("ASSETGEN_STORE", "gs://b"), ("ASSETGEN_AUTH", "dev")];
        let refused = config(Profile::Cloud, &vars).expect_err("dev auth in the cloud");
        assert_eq!(refused.variable, "ASSETGEN_AUTH");
        assert_eq!(config(Profile::Local, &vars).expect("dev auth locally").auth, AuthMode::Dev);
    }

    #[test]
    fn audiences_are_lists_and_push_has_its_own() {
        let c = config(
            Profile::Local,
            &[
                ("ASSETGEN_OIDC_AUDIENCE", " 123-abc.apps.googleusercontent.com , https://submit.example.run.app,"),
                ("ASSETGEN_PUSH_AUDIENCE", "https://generate.example.run.app/pubsub"),
                ("ASSETGEN_ADMINS", "Lead@Studio.com, ops@studio.com"),
            ],
        )
        .expect("ok");
        assert_eq!(c.oidc_audiences, ["123-abc.apps.googleusercontent.com", "https://submit.example.run.app"]);
        assert_eq!(c.push_audiences, ["https://generate.example.run.app/pubsub"]);
        assert_eq!(c.admins, ["lead@studio.com", "ops@studio.com"]);
    }

    #[test]
    fn link_secrets_stay_secret() {
        let c = config(
            Profile::Local,
            &[("ASSETGEN_LINK_SECRET", "link-very-secret"), ("ASSETGEN_CAPABILITY_SECRET", "cap-very-secret")],
        )
        .expect("ok");
        assert!(!format!("{c:?}").contains("very-secret"));
        assert_eq!(c.link_secret.as_ref().map(Secret::expose), Some("link-very-secret"));
    }

    #[test]
    fn dollars_parse_exactly_and_keys_stay_secret() {
        assert_eq!(parse_usd("7.25"), Some(Money::from_micros(7_250_000)));
        assert_eq!(parse_usd("$0.039"), Some(Money::from_micros(39_000)));
        assert_eq!(parse_usd("1.0000001"), None);
        let c = config(Profile::Local, &[("GEMINI_API_KEY", "AIza-very-secret")]).expect("ok");
        assert!(!format!("{c:?}").contains("very-secret"));
        assert_eq!(c.gemini_api_key.as_ref().map(Secret::expose), Some("AIza-very-secret"));
    }

    #[test]
    fn per_user_limits_parse_and_refuse_nonsense() {
        let c = config(Profile::Local, &[("ASSETGEN_USER_LIMITS", "Lead@Studio.com=25, intern@studio.com=0.5")])
            .expect("ok");
        assert_eq!(c.user_limits.get("lead@studio.com"), Some(&Money::from_micros(25_000_000)));
        assert_eq!(c.user_limits.get("intern@studio.com"), Some(&Money::from_micros(500_000)));
        assert_eq!(
            config(Profile::Local, &[("ASSETGEN_USER_LIMITS", "bob")]).expect_err("no amount").variable,
            "ASSETGEN_USER_LIMITS"
        );
    }

    #[test]
    fn submit_url_and_cors_origins_are_urls_and_origins() {
        let c = config(
            Profile::Cloud,
            &[
                ("ASSETGEN_STORE", "gs://b"),
                ("ASSETGEN_QUEUE", "pubsub://projects/p/topics/rows"),
                ("ASSETGEN_SUBMIT_URL", "https://submit-1.europe-west1.run.app"),
                ("ASSETGEN_CORS_ORIGINS", " https://Relay-1.europe-west1.run.app/ ,http://127.0.0.1:8081"),
            ],
        )
        .expect("ok");
        assert_eq!(c.submit_url.map(String::from).as_deref(), Some("https://submit-1.europe-west1.run.app/"));
        assert_eq!(c.cors_origins, ["https://relay-1.europe-west1.run.app", "http://127.0.0.1:8081"]);
        let local = config(Profile::Local, &[]).expect("ok");
        assert_eq!((local.submit_url, local.cors_origins.len()), (None, 0));
        for (variable, value) in [
            ("ASSETGEN_SUBMIT_URL", "submit.example"),
            ("ASSETGEN_SUBMIT_URL", "ftp://submit.example"),
            ("ASSETGEN_SUBMIT_URL", "https://submit.example/?x=1"),
            ("ASSETGEN_CORS_ORIGINS", "https://relay.example/b"),
            ("ASSETGEN_CORS_ORIGINS", "https://relay.example,*"),
        ] {
            assert_eq!(config(Profile::Local, &[(variable, value)]).expect_err(value).variable, variable);
        }
    }

    #[test]
    fn the_quota_is_shared_among_instances_and_unset_means_unpaced() {
        let c = config(Profile::Local, &[]).expect("defaults");
        assert_eq!((c.gemini_ipm, c.gemini_instances, c.pacing()), (None, 1, None));
        let c = config(
            Profile::Cloud,
            &[
                ("ASSETGEN_STORE", "gs://b"),
                ("ASSETGEN_GEMINI_IPM", "2000"),
                ("ASSETGEN_GEMINI_INSTANCES", "4"),
                ("ASSETGEN_LEASE_TTL_SECS", "120"),
            ],
        )
        .expect("ok");
        let pacing = c.pacing().expect("paced");
        assert!((pacing.images_per_minute - 500.0 * crate::model::HEADROOM).abs() < 1e-9, "{pacing:?}");
        assert_eq!(pacing.max_wait, std::time::Duration::from_secs(40), "a third of the lease");
        let long_lease = config(Profile::Local, &[("ASSETGEN_GEMINI_IPM", "60"), ("ASSETGEN_LEASE_TTL_SECS", "900")]);
        assert_eq!(long_lease.expect("ok").pacing().map(|p| p.max_wait), Some(std::time::Duration::from_secs(60)));
    }
}
