//! A Gemini `generateContent` stub that behaves like a project's image quota, for the pacing
//! benchmark: at most `ipm` calls are accepted in any 60 s window, and beyond that the answer is a
//! 429 with `QuotaFailure` and `RetryInfo` (the wire format of
//! `shared/fixtures/gemini-error-429.json`), its delay saying when the window frees a call. Accepted
//! calls take a log-normal time (seconds, with a long tail, as image calls do) before the image.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct QuotaStubConfig {
    /// Images per minute the "project" may make.
    pub ipm: u32,
    /// The latency's median and 95th percentile (log-normal between them).
    pub median: Duration,
    pub p95: Duration,
    /// Multiplies every latency (a quick run uses 0.1).
    pub latency_scale: f64,
}

/// One accepted call, as the stub saw it.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub arrived: Instant,
    pub answered: Instant,
}

#[derive(Debug, Default)]
pub struct QuotaStubStats {
    pub calls: AtomicU64,
    /// Calls answered 429 because the window was full.
    pub refused: AtomicU64,
    accepted: Mutex<VecDeque<Instant>>,
    served: Mutex<Vec<Served>>,
}

impl QuotaStubStats {
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A standard normal draw (Box–Muller; two uniform draws make one).
fn standard_normal() -> f64 {
    let u1: f64 = 1.0 - rand::random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rand::random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl QuotaStubConfig {
    /// One call's latency: log-normal with the configured median and p95, scaled, capped at 60 s.
    pub fn latency(&self) -> Duration {
        let median = self.median.as_secs_f64().max(1e-3);
        let sigma = (self.p95.as_secs_f64().max(median) / median).ln() / 1.645;
        let seconds = (median.ln() + sigma * standard_normal()).exp().min(60.0) * self.latency_scale;
        Duration::from_secs_f64(seconds.max(0.0))
    }
}

fn quota_exceeded(retry_after: Duration) -> axum::response::Response {
    // Google's delay is whole seconds ("17s"); rounded up, so a client that waits it out is let in.
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let body = serde_json::json!({"error": {
    "code": 429,
    "message": "Resource has been exhausted (e.g. check quota).",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")}
    ]}});
    (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
}

/// Starts the stub on loopback; returns its base URL (for `GEMINI_BASE_URL`) and what it saw.
pub async fn serve_quota_gemini(config: QuotaStubConfig) -> anyhow::Result<(String, Arc<QuotaStubStats>)> {
    const WINDOW: Duration = Duration::from_secs(60);
    let stats = Arc::new(QuotaStubStats::default());
    let seen = stats.clone();
    let handler = move || {
        let stats = seen.clone();
        async move {
            let arrived = Instant::now();
            let n = stats.calls.fetch_add(1, Ordering::SeqCst);
            let refused = {
                let mut accepted = stats.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while accepted.front().is_some_and(|t| arrived.duration_since(*t) >= WINDOW) {
                    accepted.pop_front();
                }
                if accepted.len() >= config.ipm as usize {
                    accepted.front().map(|oldest| WINDOW.saturating_sub(arrived.duration_since(*oldest)))
                } else {
                    accepted.push_back(arrived);
                    None
                }
            };
            if let Some(retry_after) = refused {
                stats.refused.fetch_add(1, Ordering::SeqCst);
                return quota_exceeded(retry_after);
            }
            tokio::time::sleep(config.latency()).await;
            let image = base64::engine::general_purpose::STANDARD.encode(crate::png((n % 250) as u8));
            let answer = serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "planning the composition", "thought": true},
                {"inlineData": {"mimeType": "image/png", "data": image}}
            ]}, "finishReason": "STOP", "index": 0}], "modelVersion": "gemini-2.5-flash-image",
                "responseId": format!("quota-stub-{n}")});
            if let Ok(mut served) = stats.served.lock() {
                served.push(Served { arrived, answered: Instant::now() });
            }
            Json(answer).into_response()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1beta/models/{call}", axum::routing::post(handler.clone()))
        .route("/v1/projects/{*call}", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_log_normal_with_the_asked_median_and_p95() {
        let c = QuotaStubConfig {
            ipm: 1,
            median: Duration::from_secs(3),
            p95: Duration::from_secs(10),
            latency_scale: 1.0,
        };
        let mut draws: Vec<f64> = (0..20_000).map(|_| c.latency().as_secs_f64()).collect();
        draws.sort_by(f64::total_cmp);
        let (p50, p95) = (draws[10_000], draws[19_000]);
        assert!((2.8..3.2).contains(&p50), "median {p50}");
        assert!((9.0..11.0).contains(&p95), "p95 {p95}");
    }

    #[tokio::test]
    async fn beyond_the_quota_the_answer_is_a_429_with_retry_info() {
        let (base, stats) = serve_quota_gemini(QuotaStubConfig {
            ipm: 2,
            median: Duration::from_millis(1),
            p95: Duration::from_millis(2),
            latency_scale: 1.0,
        })
        .await
        .expect("stub");
        let client = reqwest::Client::new();
        let url = format!("{base}/v1beta/models/m:generateContent");
        let mut statuses = Vec::new();
        let mut last = serde_json::Value::Null;
        for _ in 0..3 {
            let r = client.post(&url).json(&serde_json::json!({})).send().await.expect("call");
            statuses.push(r.status().as_u16());
            last = r.json().await.expect("json");
        }
        assert_eq!(statuses, [200, 200, 429]);
        assert_eq!(last["error"]["details"][1]["retryDelay"], "60s", "the window frees a call in a minute");
        assert_eq!(stats.refused.load(Ordering::SeqCst), 1);
    }
}
