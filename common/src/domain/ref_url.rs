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

impl RefUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str, policy: RefUrlPolicy) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.len() > Self::MAX_LEN {
            return Err(ParseError(format!("reference URL is longer than {} characters", Self::MAX_LEN)));
        }
        let url = url::Url::parse(s).map_err(|e| ParseError(format!("reference {s:?} is not a URL ({e})")))?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_private => {}
            "http" => return Err(ParseError(format!("reference {s:?} uses http://; use https://"))),
            "gs" => {
                if url.host_str().is_none_or(str::is_empty) || url.path().len() <= 1 {
                    return Err(ParseError(format!("reference {s:?} must look like gs://bucket/object")));
                }
                if GsObject::of(&url).is_none() {
                    return Err(ParseError(format!("reference {s:?}: {GS_REFUSAL}")));
                }
                return Ok(Self(url.into()));
            }
            "file" if policy.allow_local_files => return Ok(Self(url.into())),
            "file" => {
                return Err(ParseError(format!("reference {s:?} is a local file; upload it and use its https:// URL")));
            }
            other => return Err(ParseError(format!("reference {s:?} has scheme {other:?}; use https:// or gs://"))),
        }
        let host = url.host().ok_or_else(|| ParseError(format!("reference {s:?} has no host")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ParseError(format!("reference {s:?} carries credentials; use a public URL")));
        }
        if !policy.allow_private && address_policy::host_is_forbidden(&host) {
            return Err(ParseError(format!("reference {s:?} points at a private or internal address")));
        }
        Ok(Self(url.into()))
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
