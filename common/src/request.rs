//! Small helpers handlers share: reading a JSON body into a problem-or-value, and the public base
//! URL that links are built from.

use crate::problem::{ErrorCode, Problem};
use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;

/// Reads a request body up to `limit` bytes; a larger one is `PAYLOAD_TOO_LARGE`, not a cut.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            Problem::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {limit} bytes"))
        } else {
            Problem::new(ErrorCode::InvalidJson, format!("the body could not be read: {e}"))
        }
    })
}

/// The URL clients reach this deployment at: `ASSETGEN_PUBLIC_URL` when set, else what the request
/// says (`X-Forwarded-Proto` from Cloud Run's front end, `Host`).
pub fn base_url(public_url: Option<&url::Url>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let host = header("x-forwarded-host").or_else(|| header("host")).unwrap_or("localhost");
    let proto = header("x-forwarded-proto").unwrap_or("http");
    let proto = if proto == "https" { "https" } else { "http" };
    // A Host header is client-controlled: keep only characters a host[:port] can have.
    let host: String =
        host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')).collect();
    format!("{proto}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_prefers_config_then_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8080".parse().expect("header"));
        assert_eq!(base_url(None, &h), "http://127.0.0.1:8080");
        h.insert("x-forwarded-proto", "https".parse().expect("header"));
        h.insert("x-forwarded-host", "submit-abc.a.run.app".parse().expect("header"));
        assert_eq!(base_url(None, &h), "https://submit-abc.a.run.app");
        let public = url::Url::parse("https://assets.example.com/").expect("url");
        assert_eq!(base_url(Some(&public), &h), "https://assets.example.com");
        h.insert("x-forwarded-host", "evil.com/<script>".parse().expect("header"));
        assert_eq!(base_url(None, &h), "https://evil.comscript");
    }

    #[tokio::test]
    async fn oversized_bodies_are_a_problem() {
        let p = read_body(Body::from(vec![b'x'; 100]), 10).await.expect_err("too large");
        assert_eq!(p.code, ErrorCode::PayloadTooLarge);
        assert_eq!(read_body(Body::from("ok"), 10).await.expect("fits"), Bytes::from_static(b"ok"));
    }
}
