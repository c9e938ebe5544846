//! Files of `web/` compiled into a binary (a clean clone's `cargo build` serves them without Node
//! or a build step), and the headers every such file gets. The relay's pages (`/b/{id}`, `/refs`,
//! `/web/…`) and every function's `/ops` page are served through here.

use crate::problem::{ErrorCode, Problem};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

pub const HTML: &str = "text/html; charset=utf-8";
pub const JS: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";
pub const SVG: &str = "image/svg+xml";

/// One embedded file: its name under its page's prefix, content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedFile {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// A file's answer. No file names with hashes and no build step, so the browser revalidates every
/// time; never sniffed. A page (`csp` given) also gets its content security policy and a
/// same-origin referrer policy, so a token in its URL never leaves for another site.
pub fn respond(content_type: &'static str, body: Cow<'static, str>, csp: Option<&str>) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Some(csp) = csp {
        if let Ok(csp) = HeaderValue::from_str(csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    response
}

/// `name` out of `files`, or a 404 problem.
pub fn serve(files: &[EmbeddedFile], name: &str) -> Result<Response, Problem> {
    files
        .iter()
        .find(|f| f.name == name)
        .map(|f| respond(f.content_type, Cow::Borrowed(f.body), None))
        .ok_or_else(|| Problem::new(ErrorCode::NotFound, "no such file"))
}

/// What `pages` load from under `prefix` (`/web/`, `/ops/`) and their scripts import (`./NAME`)
/// that is not among `files`: a test asserts it is empty, so no page ships with a missing file.
pub fn missing(pages: &[&str], prefix: &str, files: &[EmbeddedFile]) -> Vec<String> {
    let embedded = |name: &str| files.iter().any(|f| f.name == name);
    let loaded = pages.iter().flat_map(|page| page.split(prefix).skip(1).filter_map(|rest| rest.split('"').next()));
    let imported = files.iter().filter(|f| f.name.ends_with(".js")).flat_map(|f| {
        f.body.lines().filter(|l| l.trim_start().starts_with("import ")).map(|line| {
            let target = line.rsplit("from").next().unwrap_or_default();
            target.trim().trim_matches(|c| c == '\'' || c == '"' || c == ';').trim_start_matches("./")
        })
    });
    loaded.chain(imported).filter(|name| !embedded(name)).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &[EmbeddedFile] = &[
        EmbeddedFile {
            name: "a.js",
            content_type: JS,
            body: "import { x } from './b.js';\nimport { y } from './gone.js';",
        },
        EmbeddedFile { name: "b.js", content_type: JS, body: "export const x = 1;" },
    ];

    #[test]
    fn a_file_a_page_loads_or_a_script_imports_is_missing_unless_embedded() {
        let page = r#"<script src="/web/a.js"></script><link href="/web/app.css">"#;
        assert_eq!(missing(&[page], "/web/", FILES), vec!["app.css", "gone.js"]);
        assert!(serve(FILES, "b.js").is_ok());
        assert_eq!(serve(FILES, "c.js").expect_err("not embedded").code, ErrorCode::NotFound);
    }

    #[test]
    fn a_page_gets_its_policy_and_a_file_does_not() {
        let page = respond(HTML, Cow::Borrowed("<p>"), Some("default-src 'self'"));
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], "default-src 'self'");
        assert_eq!(page.headers()[header::REFERRER_POLICY], "same-origin");
        let file = respond(JS, Cow::Borrowed(""), None);
        assert!(!file.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(file.headers()[header::CACHE_CONTROL], "no-cache");
    }
}
