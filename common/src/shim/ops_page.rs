//! The operations page, `/ops`, on every function: this instance's images per minute, 429 rate and
//! spend over the last hour, drawn in the browser from `/metrics-lite`. Its files come from `web/`
//! and are compiled in, like the relay's pages; they live under `/ops/` because only the relay
//! serves `/web/`.

use crate::problem::{ErrorCode, Problem};
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const JS: &str = "text/javascript; charset=utf-8";
const OPS_HTML: &str = include_str!("../../../web/ops.html");
/// The page's files under `/ops/`: (name, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", include_str!("../../../web/app.css")),
    ("ops.js", JS, include_str!("../../../web/ops.js")),
    ("ops-model.js", JS, include_str!("../../../web/ops-model.js")),
    ("common.js", JS, include_str!("../../../web/common.js")),
    ("favicon.svg", "image/svg+xml", include_str!("../../../web/favicon.svg")),
];

/// Scripts, styles and data from this origin only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn respond(content_type: &'static str, body: &'static str, html: bool) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    response
}

/// `GET /ops` and `GET /ops/{file}`.
pub fn ops_routes() -> Router {
    Router::new().route("/ops", get(|| async { respond("text/html; charset=utf-8", OPS_HTML, true) })).route(
        "/ops/{file}",
        get(|Path(file): Path<String>| async move {
            FILES
                .iter()
                .find(|(name, _, _)| *name == file)
                .map(|(_, content_type, body)| respond(content_type, body, false))
                .ok_or_else(|| Problem::new(ErrorCode::NotFound, "no such file"))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_or_imports_is_served() {
        for name in OPS_HTML.split("/ops/").skip(1).filter_map(|rest| rest.split('"').next()) {
            assert!(FILES.iter().any(|(n, _, _)| *n == name), "{name} is referenced but not embedded");
        }
        for (file, _, body) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for line in body.lines().filter(|l| l.trim_start().starts_with("import ")) {
                let target = line.rsplit("from").next().unwrap_or_default();
                let name = target.trim().trim_matches(|c| c == '\'' || c == '"' || c == ';').trim_start_matches("./");
                assert!(FILES.iter().any(|(n, _, _)| *n == name), "{file} imports {name}, which is not embedded");
            }
        }
    }
}
