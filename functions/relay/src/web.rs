//! The browser pages: the progress page at `/b/{batch_id}` and the reference manager at `/refs`,
//! with their scripts and styles under `/web/`. The files of `web/` are compiled into the binary, so
//! a clean clone's `cargo build` serves them without Node or a build step.

use assetgen_common::domain::BatchId;
use assetgen_common::problem::{ErrorCode, Problem};
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// One embedded file: its name under `/web/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../../../web/app.css") },
    Asset { name: "common.js", content_type: JS, body: include_str!("../../../web/common.js") },
    Asset { name: "progress.js", content_type: JS, body: include_str!("../../../web/progress.js") },
    Asset { name: "progress-model.js", content_type: JS, body: include_str!("../../../web/progress-model.js") },
    Asset { name: "connection.js", content_type: JS, body: include_str!("../../../web/connection.js") },
    Asset { name: "refs.js", content_type: JS, body: include_str!("../../../web/refs.js") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_str!("../../../web/favicon.svg") },
];

const JS: &str = "text/javascript; charset=utf-8";
const PROGRESS_HTML: &str = include_str!("../../../web/progress.html");
const REFS_HTML: &str = include_str!("../../../web/refs.html");

/// Scripts and styles come from this origin only; images may also be signed storage URLs.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn respond(content_type: &'static str, body: &'static str, html: bool) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // No file names with hashes and no build step: let the browser revalidate every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    response
}

/// `GET /b/{batch_id}`: the live progress page of one batch.
pub async fn progress_page(Path(id): Path<String>) -> Result<Response, Problem> {
    // Only a well-formed batch id gets the page; the page reads the id from its own URL.
    BatchId::parse(&id).map_err(|e| Problem::new(ErrorCode::BatchNotFound, e.0))?;
    Ok(respond("text/html; charset=utf-8", PROGRESS_HTML, true))
}

/// `GET /refs`: the reference manager.
pub async fn refs_page() -> Response {
    respond("text/html; charset=utf-8", REFS_HTML, true)
}

/// `GET /web/{file}`: the pages' scripts, styles and icon.
pub async fn asset(Path(file): Path<String>) -> Result<Response, Problem> {
    ASSETS
        .iter()
        .find(|a| a.name == file)
        .map(|a| respond(a.content_type, a.body, false))
        .ok_or_else(|| Problem::new(ErrorCode::NotFound, "no such file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_pages_import_is_served() {
        for page in [PROGRESS_HTML, REFS_HTML] {
            for name in page.split("/web/").skip(1).filter_map(|rest| rest.split('"').next()) {
                assert!(ASSETS.iter().any(|a| a.name == name), "{name} is referenced but not embedded");
            }
        }
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.body.lines().filter(|l| l.trim_start().starts_with("import ")) {
                let target = line.rsplit("from").next().unwrap_or_default();
                let name = target.trim().trim_matches(|c| c == '\'' || c == '"' || c == ';').trim_start_matches("./");
                assert!(ASSETS.iter().any(|a| a.name == name), "{} imports {name}, which is not embedded", asset.name);
            }
        }
    }
}
