use super::ParseError;
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
        assert!(RefUrl::parse("gs://bucket/refs/a.png", CLOUD).is_ok());
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
    fn test_policy_opens_loopback_and_files() {
        assert!(RefUrl::parse("http://127.0.0.1:9/a.png", TESTS).is_ok());
        assert_eq!(RefUrl::parse("file:///tmp/a.png", TESTS).map(|u| u.scheme()), Ok(RefScheme::File));
    }
}
