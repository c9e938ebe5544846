//! The browser pages: the progress page at `/b/{batch_id}` and the reference manager at `/refs`,
//! with their scripts and styles under `/web/`. The files of `web/` are compiled into the binary, so
//! a clean clone's `cargo build` serves them without Node or a build step.

use crate::RelayState;
use assetgen_common::domain::BatchId;
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::shim::embedded::{self, CSS, EmbeddedFile, HTML, JS, SVG};
use axum::extract::{Path, State};
use axum::response::Response;
use std::borrow::Cow;
use std::sync::Arc;

const ASSETS: &[EmbeddedFile] = &[
    EmbeddedFile { name: "app.css", content_type: CSS, body: include_str!("../../../web/app.css") },
    EmbeddedFile { name: "common.js", content_type: JS, body: include_str!("../../../web/common.js") },
    EmbeddedFile { name: "progress.js", content_type: JS, body: include_str!("../../../web/progress.js") },
    EmbeddedFile { name: "progress-model.js", content_type: JS, body: include_str!("../../../web/progress-model.js") },
    EmbeddedFile { name: "connection.js", content_type: JS, body: include_str!("../../../web/connection.js") },
    EmbeddedFile {
        name: "provenance-view.js",
        content_type: JS,
        body: include_str!("../../../web/provenance-view.js"),
    },
    EmbeddedFile { name: "refs.js", content_type: JS, body: include_str!("../../../web/refs.js") },
    EmbeddedFile { name: "favicon.svg", content_type: SVG, body: include_str!("../../../web/favicon.svg") },
];

const PROGRESS_HTML: &str = include_str!("../../../web/progress.html");
const REFS_HTML: &str = include_str!("../../../web/refs.html");

/// Scripts and styles come from this origin only; images may also be signed storage URLs; the
/// page may call this origin and, where submit is another one, submit's.
fn csp(submit_origin: Option<&str>) -> String {
    let connect = submit_origin.map_or_else(|| "'self'".to_owned(), |origin| format!("'self' {origin}"));
    format!(
        "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self'; script-src 'self'; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

/// The tag the progress page reads submit's URL from: empty means the page's own origin.
const SUBMIT_URL_META: &str = r#"<meta name="assetgen-submit-url" content="">"#;

/// The progress page, told where submit is when it is not on the page's origin.
fn progress_html(submit: Option<&url::Url>) -> Response {
    let Some(submit) = submit else { return embedded::respond(HTML, Cow::Borrowed(PROGRESS_HTML), Some(&csp(None))) };
    let base = submit.as_str().trim_end_matches('/');
    // A parsed URL has no quote or angle bracket left unescaped; `&` is the one to escape.
    let attribute = base.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    let page = PROGRESS_HTML.replacen(
        SUBMIT_URL_META,
        &format!(r#"<meta name="assetgen-submit-url" content="{attribute}">"#),
        1,
    );
    embedded::respond(HTML, Cow::Owned(page), Some(&csp(Some(&submit.origin().ascii_serialization()))))
}

/// `GET /b/{batch_id}`: the live progress page of one batch.
pub async fn progress_page(State(state): State<Arc<RelayState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    // Only a well-formed batch id gets the page; the page reads the id from its own URL.
    BatchId::parse(&id).map_err(|e| Problem::new(ErrorCode::BatchNotFound, e.0))?;
    Ok(progress_html(state.config.submit_url.as_ref()))
}

/// `GET /refs`: the reference manager.
pub async fn refs_page() -> Response {
    embedded::respond(HTML, Cow::Borrowed(REFS_HTML), Some(&csp(None)))
}

/// `GET /web/{file}`: the pages' scripts, styles and icon.
pub async fn asset(Path(file): Path<String>) -> Result<Response, Problem> {
    embedded::serve(ASSETS, &file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn text(response: Response) -> (String, String) {
        let csp = response.headers().get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok());
        let csp = csp.unwrap_or_default().to_owned();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX));
        (String::from_utf8(body.expect("body").to_vec()).expect("utf-8"), csp)
    }

    #[test]
    fn the_page_is_told_where_submit_is_and_may_connect_there_only_then() {
        let (page, csp) = text(progress_html(None));
        assert!(page.contains(SUBMIT_URL_META), "same origin: the tag stays empty");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        let submit = url::Url::parse("https://submit-1.europe-west1.run.app/").expect("url");
        let (page, csp) = text(progress_html(Some(&submit)));
        assert!(page.contains(r#"<meta name="assetgen-submit-url" content="https://submit-1.europe-west1.run.app">"#));
        assert!(csp.contains("connect-src 'self' https://submit-1.europe-west1.run.app;"), "{csp}");
        let odd = url::Url::parse("https://submit.example/a&b\"<x>").expect("url");
        let (page, _) = text(progress_html(Some(&odd)));
        assert!(!page.contains("a&b") && !page.contains("\"<x>"), "attribute escaped");
    }

    #[test]
    fn every_script_the_pages_import_is_served() {
        assert_eq!(embedded::missing(&[PROGRESS_HTML, REFS_HTML], "/web/", ASSETS), Vec::<String>::new());
    }
}
