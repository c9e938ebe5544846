//! What a user sees before paying: `assetgen submit --live` against a real `assetgen serve --live`
//! (a loopback Gemini stub behind it). On a pseudo-terminal it shows the estimate and the budget
//! left and submits only on "y"; with no terminal it submits only with `--yes`. "Nothing was
//! submitted" is checked in the server's store and budget, not in the client's word.

use assetgen_tests::{Server, serve_flaky_gemini, spawn_serve_with_args};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ASSETGEN: &str = env!("CARGO_BIN_EXE_assetgen");
const USER: &str = "payer@studio.test";
/// 2 rows, 3 images: $0.117 at gemini-2.5-flash-image's $0.039.
const CSV: &str = "scene_id,prompt,variants\nLAMP-1,a brass lamp,2\nLAMP-2,a glass lamp,1\n";

/// Batches in the server's store (`batches/{id}/`), and the user's money held and spent today.
struct Ledger {
    batches: usize,
    reserved_usd: f64,
    spent_usd: f64,
}

async fn ledger(server: &Server, data: &Path) -> Ledger {
    let batches = std::fs::read_dir(data.join("batches")).map(|d| d.count()).unwrap_or(0);
    let budget = server.api().as_dev_user(USER).budget().await;
    Ledger {
        batches,
        reserved_usd: budget["reserved_usd"].as_f64().unwrap_or(f64::NAN),
        spent_usd: budget["spent_usd"].as_f64().unwrap_or(f64::NAN),
    }
}

/// The client, as a script runs it: no terminal anywhere.
fn run_without_terminal(server: &Server, csv: &Path, extra: &[&str]) -> (i32, String) {
    let output = Command::new(ASSETGEN)
        .args(["--server", &server.base, "--user", USER, "submit"])
        .arg(csv)
        .args(["--live"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run assetgen");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The client on a pseudo-terminal (its stdin, stdout and stderr, as in a shell): waits for the
/// question, types `answer` and Enter, and returns the exit code and everything the terminal showed.
fn run_on_terminal(server: &Server, csv: &Path, answer: &str) -> (i32, String) {
    let (pty, pts) = pty_process::blocking::open().expect("a pseudo-terminal");
    pty.resize(pty_process::Size::new(24, 120)).expect("resize");
    let mut child = pty_process::blocking::Command::new(ASSETGEN)
        .args(["--server", &server.base, "--user", USER, "submit"])
        .arg(csv)
        .arg("--live")
        .env("TERM", "xterm")
        .spawn(pts)
        .expect("spawn on the pty");
    let pty = Arc::new(pty);
    let screen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reader = {
        let (pty, screen) = (pty.clone(), screen.clone());
        // Reads until the child is gone (the master then reads EIO).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = (&*pty).read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&screen.lock().expect("lock")).into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shown().contains("Submit and spend") {
        assert!(Instant::now() < deadline, "no question on the terminal; it showed:\n{}", shown());
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the client ended ({status}) without asking; it showed:\n{}", shown());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A person types the letter, then Enter (a terminal sends a carriage return).
    (&*pty).write_all(answer.as_bytes()).expect("type");
    std::thread::sleep(Duration::from_millis(100));
    (&*pty).write_all(b"\r").expect("enter");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the client did not end after the answer; it showed:\n{}", shown());
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(pty);
    let _ = reader.join();
    (status.code().unwrap_or(-1), shown())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_submit_is_paid_for_only_once_confirmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gemini, stub) = serve_flaky_gemini(0).await.expect("gemini stub");
    let env = [("GEMINI_API_KEY", "test-key"), ("GEMINI_BASE_URL", gemini.as_str())];
    let server = Arc::new(spawn_serve_with_args(Path::new(ASSETGEN), dir.path(), &env, &["--live"]).expect("serve"));
    let data = dir.path().join("data");
    let csv = dir.path().join("lamps.csv");
    std::fs::write(&csv, CSV).expect("csv");

    // No terminal, no --yes: refused before any request, and nothing exists on the server.
    let (code, err) = {
        let (server, csv) = (server.clone(), csv.clone());
        tokio::task::spawn_blocking(move || run_without_terminal(&server, &csv, &[])).await.expect("join")
    };
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("nothing was submitted") && err.contains("--yes"), "{err}");
    let after = ledger(&server, &data).await;
    assert_eq!((after.batches, after.reserved_usd, after.spent_usd), (0, 0.0, 0.0));

    // On a terminal, answering no: the price and budget were shown, nothing was held.
    let (code, screen) = {
        let (server, csv) = (server.clone(), csv.clone());
        tokio::task::spawn_blocking(move || run_on_terminal(&server, &csv, "n")).await.expect("join")
    };
    assert_eq!(code, 4, "{screen}");
    assert!(screen.contains("live batch: 3 images at $0.039 = $0.12"), "{screen}");
    assert!(screen.contains("$10.00 left of $10.00 today"), "{screen}");
    assert!(screen.contains("$9.88 after this batch"), "{screen}");
    assert!(screen.contains("not submitted"), "{screen}");
    let after = ledger(&server, &data).await;
    assert_eq!((after.batches, after.reserved_usd), (0, 0.0), "answered no: {screen}");

    // Answering yes: one batch, its estimate held (or already spent).
    let (code, screen) = {
        let (server, csv) = (server.clone(), csv.clone());
        tokio::task::spawn_blocking(move || run_on_terminal(&server, &csv, "y")).await.expect("join")
    };
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("accepted: 3 images"), "{screen}");
    let after = ledger(&server, &data).await;
    assert_eq!(after.batches, 1, "{screen}");
    assert!((after.reserved_usd + after.spent_usd - 0.117).abs() < 1e-6, "held or spent $0.117");

    // A script's --yes: a second batch, with no terminal at all.
    let (code, err) = {
        let (server, csv) = (server.clone(), csv.clone());
        tokio::task::spawn_blocking(move || run_without_terminal(&server, &csv, &["--yes"])).await.expect("join")
    };
    assert_eq!(code, 0, "{err}");
    assert_eq!(ledger(&server, &data).await.batches, 2);
    // Only the two confirmed batches ever reached the model (3 images each, once they run).
    let deadline = Instant::now() + Duration::from_secs(60);
    while stub.calls.load(std::sync::atomic::Ordering::Relaxed) < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.calls.load(std::sync::atomic::Ordering::Relaxed), 6);
}
