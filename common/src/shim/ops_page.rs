//! The operations page, `/ops`, on every function: this instance's images per minute, 429 rate and
//! spend over the last hour, drawn in the browser from `/metrics-lite`. Its files come from `web/`
//! and are compiled in, like the relay's pages; they live under `/ops/` because only the relay
//! serves `/web/`.

use super::embedded::{self, CSS, EmbeddedFile, HTML, JS, SVG};
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use std::borrow::Cow;

const OPS_HTML: &str = include_str!("../../../web/ops.html");
/// The page's files under `/ops/`.
const FILES: &[EmbeddedFile] = &[
    EmbeddedFile { name: "app.css", content_type: CSS, body: include_str!("../../../web/app.css") },
    EmbeddedFile { name: "ops.js", content_type: JS, body: include_str!("../../../web/ops.js") },
    EmbeddedFile { name: "ops-model.js", content_type: JS, body: include_str!("../../../web/ops-model.js") },
    EmbeddedFile { name: "common.js", content_type: JS, body: include_str!("../../../web/common.js") },
    EmbeddedFile { name: "favicon.svg", content_type: SVG, body: include_str!("../../../web/favicon.svg") },
];

/// Scripts, styles and data from this origin only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `GET /ops` and `GET /ops/{file}`.
pub fn ops_routes() -> Router {
    Router::new()
        .route("/ops", get(|| async { embedded::respond(HTML, Cow::Borrowed(OPS_HTML), Some(CSP)) }))
        .route("/ops/{file}", get(|Path(file): Path<String>| async move { embedded::serve(FILES, &file) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_or_imports_is_served() {
        assert_eq!(embedded::missing(&[OPS_HTML], "/ops/", FILES), Vec::<String>::new());
    }
}
