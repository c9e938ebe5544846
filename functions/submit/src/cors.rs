//! Cross-origin access for the progress page. The relay serves the page from its own origin, and
//! the page calls submit's batch routes (status, cancel, retry) from the browser, so submit allows
//! exactly the origins in `ASSETGEN_CORS_ORIGINS` (the relay's). No cookies are involved: the page
//! sends its batch link's token, so credentials stay off.

use axum::http::{HeaderName, HeaderValue, Method, header};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins` (as browsers send them in `Origin`), or none when there are none.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::layer;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::post;
    use tower::ServiceExt;

    const RELAY: &str = "https://relay-1.europe-west1.run.app";

    fn app() -> Router {
        let cors = layer(&[RELAY.to_owned()]).expect("a layer");
        Router::new().route("/v1/batches/{id}/cancel", post(|| async { "cancelled" })).layer(cors)
    }

    async fn preflight(origin: &str) -> axum::response::Response {
        let request = Request::options("/v1/batches/b1/cancel")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
            .body(Body::empty())
            .expect("request");
        app().oneshot(request).await.expect("answer")
    }

    #[tokio::test]
    async fn the_relays_origin_may_call_with_a_bearer_token_and_no_other_origin_may() {
        let allowed = preflight(RELAY).await;
        assert_eq!(allowed.status(), StatusCode::OK);
        let h = allowed.headers();
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.as_bytes()), Some(RELAY.as_bytes()));
        let allow_headers = h.get(header::ACCESS_CONTROL_ALLOW_HEADERS).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(allow_headers.contains("authorization"), "{allow_headers}");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "no cookies cross origins");

        let other = preflight("https://evil.example").await;
        assert!(other.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

        let request = Request::post("/v1/batches/b1/cancel").header(header::ORIGIN, RELAY).body(Body::empty());
        let answer = app().oneshot(request.expect("request")).await.expect("answer");
        assert_eq!(
            answer.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.as_bytes()),
            Some(RELAY.as_bytes())
        );
    }

    #[test]
    fn no_origins_no_layer() {
        assert!(layer(&[]).is_none());
    }
}
