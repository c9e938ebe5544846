use super::{BatchId, ParseError};
use crate::refs::address_policy;
use serde::{Deserialize, Serialize};

/// Which kinds of reference URL a deployment accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefUrlPolicy {
    /// `http://` and loopback/private hosts: tests and local experiments only.
    pub allow_private: bool,
    /// `file://` URLs: the local runner only; a cloud function must never read its own disk.
    pub allow_local_files: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefScheme {
    Http,
    Gs,
    File,
}

/// A reference image URL, checked for form when the batch is accepted. Whether its host resolves to
/// an allowed address is checked again when it is fetched (DNS can change in between).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RefUrl(String);

/// Why a reference URL was refused: its form (the request is wrong for every deployment), or this
/// deployment's address policy (an internal name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefUrlError {
    Invalid(ParseError),
    Forbidden(ParseError),
}

impl From<RefUrlError> for ParseError {
    fn from(e: RefUrlError) -> Self {
        match e {
            RefUrlError::Invalid(p) | RefUrlError::Forbidden(p) => p,
        }
    }
}

// The grammar of an accepted reference, as one regular expression that means the same to Rust's
// `regex`, to Python's `re` and to ECMAScript, so that `/openapi.json` states exactly what this
// check accepts. Every string it matches is a URL the `url` crate parses: host labels are ASCII
// without `--` (no IDNA surprises), the last label starts with a letter (no IPv4 reading), ports
// are at most 65535, and there are no credentials, spaces or non-ASCII characters.
const LABEL: &str = "[A-Za-z0-9]+(-[A-Za-z0-9]+)*";
const TOP_LABEL: &str = "[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*";
const PORT: &str = "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?";
const PATH: &str = "([/?#][!-~]*)?";
const IPV4_OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// An IPv6 literal in brackets, every `::` compression but no embedded IPv4 and no zone.
const IPV6: &str = "\\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\\]";
const UUID: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const SCENE: &str = "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}";

impl RefUrl {
    pub const MAX_LEN: usize = 2048;

    /// The `https://` (and, with `allow_private`, `http://`) form, unanchored.
    /// Address literals are in the grammar; whether one may be reached is the policy's (403).
    fn http_form(policy: RefUrlPolicy) -> String {
        let (scheme, labels) = if policy.allow_private { ("https?", "*") } else { ("https", "+") };
        let hosts = [
            format!("({LABEL}\\.){labels}{TOP_LABEL}\\.?"),
            format!("({IPV4_OCTET}\\.){{3}}{IPV4_OCTET}"),
            IPV6.to_owned(),
        ];
        format!("{scheme}://({}){PORT}{PATH}", hosts.join("|"))
    }

    /// The regular expression a reference fetched over the network matches (anchored).
    pub fn http_pattern(policy: RefUrlPolicy) -> String {
        format!("^({})$", Self::http_form(policy))
    }

    /// The regular expression an accepted reference matches under `policy` (anchored).
    pub fn pattern(policy: RefUrlPolicy) -> String {
        let mut forms = vec![
            Self::http_form(policy),
            format!(
                "gs://[a-z0-9][a-z0-9._-]{{1,61}}[a-z0-9]/(refs/[0-9a-f]{{64}}|images/{UUID}/{SCENE}-v[1-3]\\.png)"
            ),
        ];
        if policy.allow_local_files {
            forms.push("file:///[!-~]*".to_owned());
        }
        format!("^({})$", forms.join("|"))
    }

    fn matcher(policy: RefUrlPolicy) -> &'static regex::Regex {
        static COMPILED: [std::sync::OnceLock<regex::Regex>; 4] = [const { std::sync::OnceLock::new() }; 4];
        let slot = usize::from(policy.allow_private) * 2 + usize::from(policy.allow_local_files);
        COMPILED[slot]
            .get_or_init(|| regex::Regex::new(&Self::pattern(policy)).expect("the reference grammar compiles"))
    }

    pub fn parse(raw: &str, policy: RefUrlPolicy) -> Result<Self, ParseError> {
        Self::check(raw, policy).map_err(Into::into)
    }

    /// Parses a reference as a request carries it: exactly [`Self::pattern`] (nothing trimmed,
    /// at most [`Self::MAX_LEN`] characters), then this deployment's address policy.
    pub fn check(s: &str, policy: RefUrlPolicy) -> Result<Self, RefUrlError> {
        let invalid = |message: String| RefUrlError::Invalid(ParseError(message));
        if s.len() > Self::MAX_LEN {
            return Err(invalid(format!("reference URL is longer than {} characters", Self::MAX_LEN)));
        }
        if !Self::matcher(policy).is_match(s) {
            return Err(invalid(Self::why_not(s, policy)));
        }
        let url = url::Url::parse(s).map_err(|e| invalid(format!("reference {s:?} is not a URL ({e})")))?;
        let internal = url
            .host()
            .filter(|_| matches!(url.scheme(), "https" | "http"))
            .is_some_and(|host| address_policy::host_is_forbidden(&host));
        if internal && !policy.allow_private {
            return Err(RefUrlError::Forbidden(ParseError(format!(
                "reference {s:?} points at a private or internal address"
            ))));
        }
        Ok(Self(url.into()))
    }

    /// Says what is wrong with a reference the grammar refused, as precisely as it can.
    fn why_not(s: &str, policy: RefUrlPolicy) -> String {
        if s.trim() != s {
            return format!("reference {s:?} has spaces around it");
        }
        let url = match url::Url::parse(s) {
            Ok(url) => url,
            Err(e) => return format!("reference {s:?} is not a URL ({e})"),
        };
        match url.scheme() {
            "http" if !policy.allow_private => format!("reference {s:?} uses http://; use https://"),
            "gs" if url.host_str().is_none_or(str::is_empty) || url.path().len() <= 1 => {
                format!("reference {s:?} must look like gs://bucket/object")
            }
            "gs" => format!("reference {s:?}: {GS_REFUSAL}"),
            "file" if !policy.allow_local_files => {
                format!("reference {s:?} is a local file; upload it and use its https:// URL")
            }
            "https" | "http" | "file" => {
                if !url.username().is_empty() || url.password().is_some() {
                    format!("reference {s:?} carries credentials; use a public URL")
                } else {
                    format!(
                        "reference {s:?} is not in the accepted form: a host name of ASCII letters, digits and \
                         single hyphens, an optional port, then a path of printable ASCII (percent-encode the rest)"
                    )
                }
            }
            other => format!("reference {s:?} has scheme {other:?}; use https:// or gs://"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn scheme(&self) -> RefScheme {
        if self.0.starts_with("gs://") {
            RefScheme::Gs
        } else if self.0.starts_with("file:") {
            RefScheme::File
        } else {
            RefScheme::Http
        }
    }
}

/// Why a `gs://` reference is refused, whichever the reason (another bucket, another part of the
/// bucket, someone else's batch, a batch or object that does not exist): one sentence, so that a
/// refusal never tells whether an object exists.
pub const GS_REFUSAL: &str = "a gs:// reference may name only this deployment's bucket, and in it only the reference \
     library (refs/{sha256}) or the images of your own batches (images/{batch}/…)";

/// What a `gs://` reference may name: an image of the reference library (`refs/{sha256}`), or an
/// image of a batch (readable only by that batch's submitter; the fetcher checks who).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsObject {
    pub bucket: String,
    /// The object name, percent-decoded.
    pub name: String,
    /// `Some` for `images/{batch}/…`: the batch whose submitter alone may read it.
    pub batch: Option<BatchId>,
}

impl GsObject {
    /// The bucket and object a `gs://` URL names, if it names one a reference may read at all.
    pub fn of(url: &url::Url) -> Option<Self> {
        if url.scheme() != "gs" || url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        let bucket = url.host_str().filter(|b| !b.is_empty())?.to_owned();
        let name = percent_decode(url.path().strip_prefix('/')?)?;
        crate::store::check_name(&name).ok()?;
        if let Some(sha256) = name.strip_prefix("refs/") {
            // The library is content-addressed (`refs/{sha256}`); its sets are JSON, not references.
            let library = sha256.len() == 64 && sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            return library.then_some(Self { bucket, name, batch: None });
        }
        let (batch, file) = name.strip_prefix("images/")?.split_once('/')?;
        let batch = BatchId::parse(batch).ok().filter(|b| b.to_string() == batch)?;
        (!file.is_empty()).then_some(Self { bucket, name, batch: Some(batch) })
    }
}

/// `%XX` sequences decoded; `None` if malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl std::fmt::Display for RefUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: RefUrlPolicy = RefUrlPolicy { allow_private: false, allow_local_files: false };
    const TESTS: RefUrlPolicy = RefUrlPolicy { allow_private: true, allow_local_files: true };

    #[test]
    fn cloud_accepts_public_https_and_gs_only() {
        assert!(RefUrl::parse("https://example.com/a.png", CLOUD).is_ok());
        assert!(RefUrl::parse(&format!("gs://bucket/refs/{}", "ab".repeat(32)), CLOUD).is_ok());
        assert!(RefUrl::parse("gs://bucket/images/0193a0e4-7f57-7e1c-8a11-5b9f2e0c1d2e/S-1-v1.png", CLOUD).is_ok());
        for bad in [
            "http://example.com/a.png",
            "ftp://example.com/a.png",
            "file:///etc/passwd",
            "https://127.0.0.1/a.png",
            "https://localhost/a.png",
            "https://169.254.169.254/computeMetadata/v1/",
            "https://metadata.google.internal/x",
            "https://10.1.2.3/a.png",
            "https://[::1]/a.png",
            "https://user:pw@example.com/a.png",
            "gs://bucket",
            "not a url",
        ] {
            assert!(RefUrl::parse(bad, CLOUD).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn gs_refs_may_name_only_the_library_and_batch_images() {
        let batch = "0193a0e4-7f57-7e1c-8a11-5b9f2e0c1d2e";
        let url = |s: &str| url::Url::parse(s).expect("url");
        let sha = "0123456789abcdef".repeat(4);
        assert_eq!(
            GsObject::of(&url(&format!("gs://b/refs/{sha}"))),
            Some(GsObject { bucket: "b".into(), name: format!("refs/{sha}"), batch: None })
        );
        let image = GsObject::of(&url(&format!("gs://b/images/{batch}/S-1-v2.png"))).expect("a batch image");
        assert_eq!(image.batch.map(|b| b.to_string()).as_deref(), Some(batch));
        for bad in [
            "gs://b/ledger/2026-11-28/x.json".to_owned(),
            "gs://b/budget/2026-11-28/someone@example.com.json".to_owned(),
            format!("gs://b/batches/{batch}/manifest.json"),
            "gs://b/refs/sets/global.json".to_owned(),
            "gs://b/refs/palette.png".to_owned(),
            format!("gs://b/refs/{}", "AB".repeat(32)),
            format!("gs://b/refs/{}/x", "ab".repeat(32)),
            "gs://b/images/not-a-batch/S-1-v1.png".to_owned(),
            format!("gs://b/images/{batch}/"),
            format!("gs://b/images/{}/S-1-v1.png", batch.to_uppercase()),
            "gs://b/refs/../ledger/x.json".to_owned(),
            "gs://b/refs/%2e%2e/ledger/x.json".to_owned(),
            "gs://b/refs/a.png?alt=media".to_owned(),
        ] {
            assert_eq!(GsObject::of(&url(&bad)), None, "{bad}");
            let err = RefUrl::parse(&bad, CLOUD).expect_err("refused at submit");
            assert!(err.0.contains(GS_REFUSAL), "{bad}: {err}");
        }
    }

    /// What the grammar (and so `/openapi.json`) accepts is exactly what `check` accepts as
    /// well-formed; the address policy only adds 403s for internal names.
    #[test]
    fn the_grammar_is_the_check() {
        let sha = "0123456789abcdef".repeat(4);
        let batch = "0193a0e4-7f57-7e1c-8a11-5b9f2e0c1d2e";
        let cases: Vec<(String, RefUrlPolicy, Result<(), bool>)> = vec![
            // (url, policy, Ok or Err(forbidden?))
            ("https://example.com/a.png".into(), CLOUD, Ok(())),
            ("https://EXAMPLE.com:8443/a%20b.png?x=1#f".into(), CLOUD, Ok(())),
            ("https://a-b.c-d.example/x".into(), CLOUD, Ok(())),
            ("https://example.com".into(), CLOUD, Ok(())),
            ("https://example.com:65535/".into(), CLOUD, Ok(())),
            ("https://example.com:65536/".into(), CLOUD, Err(false)),
            ("https://example.com:/".into(), CLOUD, Err(false)),
            ("https://xn--bcher-kva.example/".into(), CLOUD, Err(false)),
            ("https://a..b/".into(), CLOUD, Err(false)),
            ("https://example.com./".into(), CLOUD, Ok(())),
            ("https://8.8.8.8/a.png".into(), CLOUD, Ok(())),
            ("https://10.0.0.1/a.png".into(), CLOUD, Err(true)),
            ("https://[2606:4700::1]/a".into(), CLOUD, Ok(())),
            ("https://[64:ff9b::808:808]/a".into(), CLOUD, Ok(())),
            ("https://[64:ff9b::a00:1]/a".into(), CLOUD, Err(true)),
            ("https://[::1]/a".into(), CLOUD, Err(true)),
            ("https://[::ffff:127.0.0.1]/a".into(), CLOUD, Err(false)),
            ("https://[1:2:3:4:5:6:7:8:9]/a".into(), CLOUD, Err(false)),
            ("https://a.0x7f/".into(), CLOUD, Err(false)),
            ("https://[2001:db8::1]/".into(), CLOUD, Err(true)),
            ("https://example/a.png".into(), CLOUD, Err(false)),
            ("https://localhost/a.png".into(), CLOUD, Err(false)),
            ("https://metadata.google.internal/x".into(), CLOUD, Err(true)),
            ("https://printer.local/x".into(), CLOUD, Err(true)),
            ("https://metadata.goog/x".into(), CLOUD, Err(true)),
            ("https://example.com/café.png".into(), CLOUD, Err(false)),
            ("https://example.com/a b.png".into(), CLOUD, Err(false)),
            (" https://example.com/a.png".into(), CLOUD, Err(false)),
            ("https://example.com/a.png\n".into(), CLOUD, Err(false)),
            ("https:example.com/a.png".into(), CLOUD, Err(false)),
            ("HTTPS://example.com/a.png".into(), CLOUD, Err(false)),
            ("https://u:p@example.com/".into(), CLOUD, Err(false)),
            ("http://example.com/".into(), CLOUD, Err(false)),
            (format!("gs://my-bucket/refs/{sha}"), CLOUD, Ok(())),
            (format!("gs://my.bucket_1/images/{batch}/HERO-1-v3.png"), CLOUD, Ok(())),
            (format!("gs://my-bucket/images/{batch}/HERO-1-v4.png"), CLOUD, Err(false)),
            (format!("gs://My-Bucket/refs/{sha}"), CLOUD, Err(false)),
            ("file:///tmp/a.png".into(), CLOUD, Err(false)),
            ("file:///tmp/a.png".into(), TESTS, Ok(())),
            ("http://127.0.0.1:9/a.png".into(), TESTS, Ok(())),
            ("http://localhost:9/a.png".into(), TESTS, Ok(())),
            ("http://256.0.0.1/a.png".into(), TESTS, Err(false)),
            ("http://01.0.0.1/a.png".into(), TESTS, Err(false)),
        ];
        for (url, policy, want) in cases {
            let grammar = regex::Regex::new(&RefUrl::pattern(policy)).expect("the grammar compiles");
            let got = RefUrl::check(&url, policy).map(|_| ()).map_err(|e| matches!(e, RefUrlError::Forbidden(_)));
            assert_eq!(got, want, "{url:?}");
            assert_eq!(grammar.is_match(&url), want != Err(false), "{url:?}: the grammar and the check disagree");
        }
        let http_only = regex::Regex::new(&RefUrl::http_pattern(CLOUD)).expect("compiles");
        assert!(http_only.is_match("https://example.com/a.png"));
        assert!(!http_only.is_match(&format!("gs://my-bucket/refs/{sha}")));
    }

    #[test]
    fn percent_decoding_of_object_names() {
        assert_eq!(percent_decode("a/ref%20one.png").as_deref(), Some("a/ref one.png"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[test]
    fn test_policy_opens_loopback_and_files() {
        assert!(RefUrl::parse("http://127.0.0.1:9/a.png", TESTS).is_ok());
        assert_eq!(RefUrl::parse("file:///tmp/a.png", TESTS).map(|u| u.scheme()), Ok(RefScheme::File));
    }
}
