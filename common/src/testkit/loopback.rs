//! HTTP servers on loopback for tests that fetch from one (reference images, a slow answer).

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// Serves `app` on a free loopback port until the test's runtime ends; returns its base URL
/// (`http://127.0.0.1:PORT`, no trailing `/`).
pub async fn serve_on_loopback(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// An image answer that never ends: a PNG's magic, then one byte every 20 ms for ever, so it
/// reaches neither an end nor a size cap; only a time limit stops its reader.
pub fn endless_png() -> Response {
    let magic = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"\x89PNG\r\n\x1a\n")) });
    let drip = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"\0")), ()))
    });
    ([(header::CONTENT_TYPE, "image/png")], Body::from_stream(magic.chain(drip))).into_response()
}
