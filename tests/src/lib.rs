//! Helpers for the end-to-end tests and the load driver: run the real `assetgen` binary on a free
//! port, and serve reference images from loopback.

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::io::{BufRead, BufReader};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The release `assetgen` binary, for the load driver (`make bench` builds it first). Tests use
/// `env!("CARGO_BIN_EXE_assetgen")` instead, which cargo keeps fresh.
pub fn release_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().context("load driver has no directory")?;
    let bin = profile_dir.join(format!("assetgen{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        bail!("{} is missing: run `make bench`, which builds it", bin.display());
    }
    Ok(bin)
}

/// A running `assetgen serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve --port 0` in `dir` with `env`, and waits for the line that names its URL.
pub fn spawn_serve(binary: &FsPath, dir: &FsPath, env: &[(&str, &str)]) -> anyhow::Result<Server> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--port", "0"])
        .current_dir(dir)
        .env("ASSETGEN_STORE", format!("file://{}", dir.join("data").display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().context("starting assetgen serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("assetgen is listening on ") {
                let _ = tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let mut server = Server { child, base: String::new() };
    server.base = rx.recv_timeout(Duration::from_secs(60)).context("assetgen serve did not say where it listens")?;
    Ok(server)
}

/// A small valid PNG whose pixels depend on `seed`, so different seeds are different content.
pub fn png(seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 4, 4);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let Ok(mut writer) = encoder.write_header() else { return out };
        let pixels: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(seed).wrapping_add(seed)).collect();
        let _ = writer.write_image_data(&pixels);
    }
    out
}

/// Serves `/refs/{name}` on loopback: `{n}.png` is `png(n)`; `copy-{n}.png` is the same bytes under
/// another URL (for content dedup). Returns the base URL.
pub async fn serve_refs() -> anyhow::Result<String> {
    async fn reference(Path(name): Path<String>) -> impl IntoResponse {
        let seed = name.trim_start_matches("copy-").trim_end_matches(".png").parse::<u8>();
        match seed {
            Ok(seed) => ([(header::CONTENT_TYPE, "image/png")], png(seed)).into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/refs/{name}", get(reference))).await });
    Ok(base)
}

/// The acceptance batch as CSV: BATCH-001…BATCH-100, "product on clean bg #i", variants (i mod 3)+1,
/// and 20 rows with 1–3 references, some of which repeat another's content under another URL.
pub fn acceptance_csv(rows: usize, refs_base: &str) -> String {
    let mut csv = String::from("scene_id,prompt,variants,refs,ref_mode\n");
    for i in 0..rows {
        let refs = if i % 5 == 0 && i < 100 {
            match (i / 5) % 3 {
                0 => format!("{refs_base}/refs/{}.png", i % 7),
                1 => format!("{refs_base}/refs/{}.png|{refs_base}/refs/copy-{}.png", i % 7, i % 7),
                _ => format!("{refs_base}/refs/1.png|{refs_base}/refs/2.png|{refs_base}/refs/copy-1.png"),
            }
        } else {
            String::new()
        };
        let mode = if i % 2 == 0 { "style_only" } else { "style_and_composition" };
        csv.push_str(&format!("BATCH-{:03},product on clean bg #{i},{},{refs},{mode}\n", i + 1, (i % 3) + 1));
    }
    csv
}
