//! Following a batch on its event stream (`GET /v1/batches/{id}/events`) until `done`.
//!
//! The stream is parsed by `eventsource-stream`; this module only keeps the cursor. When the stream
//! breaks (server restart, network, the relay's planned close before Cloud Run's request timeout)
//! it reconnects with `Last-Event-ID` set to the last id seen, waiting with exponential backoff —
//! or the server's `retry:` hint when that is longer — and gives up after a stretch of failures.

use super::http::{Api, OpenError, Refusal, describe};
use super::table::{failure_line, wire_name};
use anyhow::Context as _;
use assetgen_common::api::{BatchView, RowStatus, RowView};
use assetgen_common::events::BatchEvent;
use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};
use url::Url;

/// The longest `retry:` hint honoured, so a wrong one cannot stall the client.
const MAX_SERVER_RETRY: Duration = Duration::from_secs(60);
const BAR_TEMPLATE: &str =
    "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} images · {msg} · ETA {eta}";

/// How the follow is shown.
pub enum Mode {
    /// A progress bar drawn on this target, failed rows printed above it.
    Progress(ProgressDrawTarget),
    /// One JSON line per event on `out`: `{"event": name, "id": id, "data": <json>}`.
    Json,
}

/// Reconnection policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub first: Duration,
    pub cap: Duration,
    /// Stop after failing for this long without receiving a single event.
    pub give_up_after: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            give_up_after: Duration::from_secs(120),
        }
    }
}

#[derive(Debug)]
pub enum FollowError {
    /// The server refused the stream for good (unknown batch, not allowed).
    Refused(Refusal),
    /// Reconnecting failed for `Retry::give_up_after`.
    GaveUp { last_error: String, after: Duration },
    /// Anything else: an unreadable event, output that cannot be written.
    Failed(anyhow::Error),
}

/// Follows the stream at `events` until `done`, and returns the batch as `done` describes it.
/// Progress goes to the draw target (or as JSON lines to `out`); notes and failed rows go above a
/// visible bar, else to `err`.
pub async fn follow(
    api: &Api,
    events: &Url,
    mode: Mode,
    retry: Retry,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<BatchView, FollowError> {
    let mut tracker = Tracker::new(mode);
    let mut cursor = StreamCursor::default();
    let mut delay = retry.first;
    let mut failing_since: Option<Instant> = None;
    loop {
        let attempt = connect_once(api, events, &mut cursor, &mut tracker, out, err).await;
        let reason = match attempt.step {
            Step::Done(view) => return Ok(view),
            Step::Fatal(e) => {
                tracker.abandon();
                return Err(e);
            }
            Step::Lost(reason) => reason,
        };
        if attempt.progressed {
            failing_since = None;
            delay = retry.first;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= retry.give_up_after {
            tracker.abandon();
            return Err(FollowError::GaveUp { last_error: reason, after: since.elapsed() });
        }
        let wait = delay.max(cursor.server_retry.unwrap_or_default().min(MAX_SERVER_RETRY));
        if !(attempt.progressed && attempt.clean_close) {
            // A clean close after events is the relay's planned one: resume without a word.
            let note = format!("event stream interrupted ({reason}); reconnecting in {:.1} s", wait.as_secs_f64());
            tracker.note(&note, err).map_err(FollowError::Failed)?;
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(retry.cap);
    }
}

/// What the stream told us about resuming.
#[derive(Debug, Default)]
struct StreamCursor {
    last_event_id: Option<String>,
    server_retry: Option<Duration>,
}

enum Step {
    Done(BatchView),
    Lost(String),
    Fatal(FollowError),
}

struct Attempt {
    /// At least one event arrived on this connection.
    progressed: bool,
    /// The server ended the body normally (as opposed to a broken connection).
    clean_close: bool,
    step: Step,
}

async fn connect_once(
    api: &Api,
    url: &Url,
    cursor: &mut StreamCursor,
    tracker: &mut Tracker,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Attempt {
    let end = |progressed, step| Attempt { progressed, clean_close: false, step };
    let response = match api.open_events(url, cursor.last_event_id.as_deref()).await {
        Ok(response) => response,
        Err(OpenError::Transient(reason)) => return end(false, Step::Lost(reason)),
        Err(OpenError::Refused(refusal)) => return end(false, Step::Fatal(FollowError::Refused(refusal))),
    };
    let mut stream = std::pin::pin!(response.bytes_stream().eventsource());
    let mut progressed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                progressed = true;
                if let Some(retry) = event.retry {
                    cursor.server_retry = Some(retry);
                }
                if !event.id.is_empty() {
                    cursor.last_event_id = Some(event.id.clone());
                }
                match tracker.handle(&event, out, err) {
                    Ok(Some(view)) => return end(true, Step::Done(view)),
                    Ok(None) => {}
                    Err(e) => return end(true, Step::Fatal(FollowError::Failed(e))),
                }
            }
            Err(EventStreamError::Transport(e)) => return end(progressed, Step::Lost(describe(e))),
            Err(e) => return end(progressed, Step::Lost(format!("unreadable event stream: {e}"))),
        }
    }
    Attempt {
        progressed,
        clean_close: true,
        step: Step::Lost("the server closed the stream before the batch ended".to_owned()),
    }
}

/// The batch as the events so far describe it, and how it is being shown.
struct Tracker {
    json: bool,
    draw_target: Option<ProgressDrawTarget>,
    bar: Option<ProgressBar>,
    view: Option<BatchView>,
    /// Rows whose failure was already printed.
    reported: HashSet<u32>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    event: &'a str,
    id: Option<&'a str>,
    data: serde_json::Value,
}

impl Tracker {
    fn new(mode: Mode) -> Self {
        let (json, draw_target) = match mode {
            Mode::Progress(target) => (false, Some(target)),
            Mode::Json => (true, None),
        };
        Self { json, draw_target, bar: None, view: None, reported: HashSet::new() }
    }

    /// Applies one event; `Some` with the final view on `done`.
    fn handle(
        &mut self,
        event: &Event,
        out: &mut (dyn Write + Send),
        err: &mut (dyn Write + Send),
    ) -> anyhow::Result<Option<BatchView>> {
        let parsed = match event.event.as_str() {
            "snapshot" | "row" | "batch" | "done" => Some(
                BatchEvent::parse(&event.event, &event.data)
                    .with_context(|| format!("the server sent a {} event this client cannot read", event.event))?,
            ),
            other => {
                tracing::debug!(event = other, "ignoring an unknown event");
                None
            }
        };
        if self.json {
            let data = serde_json::from_str(&event.data).unwrap_or_else(|_| event.data.clone().into());
            let id = Some(event.id.as_str()).filter(|id| !id.is_empty());
            serde_json::to_writer(&mut *out, &JsonLine { event: &event.event, id, data })?;
            writeln!(out)?;
            out.flush()?;
        }
        match parsed {
            Some(BatchEvent::Snapshot(view)) => {
                self.view = Some(view);
                self.report_failures(err)?;
            }
            Some(BatchEvent::Row(row)) => {
                if let Some(view) = &mut self.view {
                    upsert_row(view, row);
                }
                self.report_failures(err)?;
            }
            Some(BatchEvent::Batch(progress)) => {
                if let Some(view) = &mut self.view {
                    view.status = progress.status;
                    view.totals = progress.totals;
                    view.cost_usd = progress.cost_usd;
                }
            }
            Some(BatchEvent::Done(view)) => {
                self.view = Some(view.clone());
                self.report_failures(err)?;
                self.refresh();
                self.abandon();
                return Ok(Some(view));
            }
            None => {}
        }
        self.refresh();
        Ok(None)
    }

    /// Prints each newly failed or cancelled row once.
    fn report_failures(&mut self, err: &mut (dyn Write + Send)) -> anyhow::Result<()> {
        if self.json {
            return Ok(());
        }
        let Some(view) = &self.view else { return Ok(()) };
        let mut lines = Vec::new();
        for row in &view.rows {
            if matches!(row.status, RowStatus::Failed | RowStatus::Cancelled) && self.reported.insert(row.row) {
                lines.push(failure_line(row));
            }
        }
        for line in lines {
            self.note(&line, err)?;
        }
        Ok(())
    }

    /// A line above the bar when one is visible, else on `err`.
    fn note(&mut self, line: &str, err: &mut (dyn Write + Send)) -> anyhow::Result<()> {
        self.refresh();
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => writeln!(err, "{line}")?,
        }
        Ok(())
    }

    /// Shows the view on the bar, creating the bar on the first view.
    fn refresh(&mut self) {
        let Some(view) = &self.view else { return };
        let t = &view.totals;
        let (len, pos) = (u64::from(t.images_total), u64::from(t.images_done));
        let ended = t.succeeded + t.failed + t.cancelled;
        let mut message = format!("rows {ended}/{} · {} failed", t.rows, t.failed);
        if t.cancelled > 0 {
            message.push_str(&format!(" · {} cancelled", t.cancelled));
        }
        message.push_str(&format!(" · {}", wire_name(&view.status)));
        if let Some(waiting) = view.bulk.as_ref().and_then(|b| b.waiting_text()).filter(|_| !view.status.is_terminal())
        {
            message.push_str(&format!(" · {waiting}"));
        }

        if let Some(bar) = &self.bar {
            bar.set_length(len);
            bar.set_position(pos);
            bar.set_message(message);
        } else if let Some(target) = self.draw_target.take() {
            let style = ProgressStyle::with_template(BAR_TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = ProgressBar::with_draw_target(Some(len), target)
                .with_style(style.progress_chars("=> "))
                .with_position(pos)
                .with_message(message);
            if !bar.is_hidden() {
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            self.bar = Some(bar);
        }
    }

    /// Stops the bar where it is: `finish()` would show every image made even when some failed.
    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// Puts a row's new state into the view and recounts the totals from the rows.
fn upsert_row(view: &mut BatchView, row: RowView) {
    match view.rows.iter_mut().find(|r| r.row == row.row) {
        Some(slot) => *slot = row,
        None => {
            view.rows.push(row);
            view.rows.sort_by_key(|r| r.row);
        }
    }
    let rows = &view.rows;
    let count = |status: RowStatus| u32::try_from(rows.iter().filter(|r| r.status == status).count()).unwrap_or(0);
    let t = &mut view.totals;
    t.rows = t.rows.max(u32::try_from(rows.len()).unwrap_or(u32::MAX));
    t.queued = count(RowStatus::Queued);
    t.running = count(RowStatus::Running);
    t.succeeded = count(RowStatus::Succeeded);
    t.failed = count(RowStatus::Failed);
    t.cancelled = count(RowStatus::Cancelled);
    t.images_done = rows.iter().map(|r| u32::try_from(r.images.len()).unwrap_or(0)).sum();
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::ClientOptions;
    use super::super::table::exit_code;
    use super::super::table::tests::{row, view};
    use super::*;
    use assetgen_common::api::{BatchProgress, BatchStatus};
    use assetgen_common::problem::{ErrorCode, Problem};
    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::Response;
    use axum::routing::get;
    use std::sync::{Arc, Mutex, PoisonError};

    pub const EVENTS_PATH: &str = "/v1/batches/b1/events";

    /// Headers of each request a fake server received.
    #[derive(Clone, Default)]
    pub struct Seen(pub Arc<Mutex<Vec<HeaderMap>>>);

    impl Seen {
        /// Records a request; returns how many there were so far.
        pub fn push(&self, headers: HeaderMap) -> usize {
            let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            all.push(headers);
            all.len()
        }

        /// One header of every request, in order.
        pub fn header(&self, name: &str) -> Vec<Option<String>> {
            let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            all.iter().map(|h| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)).collect()
        }
    }

    pub fn sse(event: &BatchEvent, id: i64) -> String {
        format!("event: {}\nid: {id}\ndata: {}\n\n", event.name(), event.data_json())
    }

    /// A body that sends `chunks`, then either ends or breaks the connection.
    pub fn stream_body(chunks: Vec<String>, break_after: bool) -> Response {
        let sent = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        let body = if break_after {
            // After a pause, so that what was sent reaches the client before the connection breaks.
            Body::from_stream(sent.chain(futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "relay restarted"))
            })))
        } else {
            Body::from_stream(sent)
        };
        let mut response = Response::new(body);
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
        response
    }

    pub fn status_response(status: StatusCode, body: &str) -> Response {
        let mut response = Response::new(Body::from(body.to_owned()));
        *response.status_mut() = status;
        response
    }

    /// Serves `router` on a free loopback port; returns its base URL.
    pub async fn serve(router: Router) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(format!("http://{addr}"))
    }

    fn api(base: &str) -> anyhow::Result<Api> {
        Api::new(&ClientOptions {
            server: base.to_owned(),
            user: Some("tester@example.com".into()),
            id_token: Some("secret-token".into()),
        })
    }

    pub fn fast_retry() -> Retry {
        Retry {
            first: Duration::from_millis(20),
            cap: Duration::from_millis(100),
            give_up_after: Duration::from_secs(5),
        }
    }

    /// The running batch: row 0 done, row 1 still queued.
    pub fn running() -> BatchView {
        view(BatchStatus::Running, vec![row(0, "A", RowStatus::Succeeded, 2, 2), row(1, "B", RowStatus::Queued, 1, 0)])
    }

    pub fn finished() -> BatchView {
        view(
            BatchStatus::CompletedWithFailures,
            vec![row(0, "A", RowStatus::Succeeded, 2, 2), row(1, "B", RowStatus::Failed, 1, 0)],
        )
    }

    /// Connection 1: snapshot (id 3) and a failed row (id 7), then the connection breaks.
    /// Connection 2 must resume from 7: a batch event (id 9) with a `retry:` hint, then a clean close.
    /// Connection 3 must resume from 9: `done` (id 12). Anything else gets a 400.
    pub async fn resuming_relay(State(seen): State<Seen>, headers: HeaderMap) -> Response {
        let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let connection = seen.push(headers);
        match (connection, last.as_deref()) {
            (1, None) => stream_body(
                vec![
                    ": heartbeat\n\n".to_owned(),
                    sse(&BatchEvent::Snapshot(running()), 3),
                    sse(&BatchEvent::Row(row(1, "B", RowStatus::Failed, 1, 0)), 7),
                ],
                true,
            ),
            (2, Some("7")) => {
                let progress = BatchProgress {
                    batch_id: "b1".into(),
                    status: BatchStatus::CompletedWithFailures,
                    totals: finished().totals,
                    cost_usd: 0.0,
                    ended_at: None,
                    bulk: None,
                };
                let event = sse(&BatchEvent::Batch(progress), 9).replace("\n\n", "\nretry: 30\n\n");
                stream_body(vec![event], false)
            }
            (3, Some("9")) => stream_body(vec![sse(&BatchEvent::Done(finished()), 12)], false),
            (n, id) => status_response(StatusCode::BAD_REQUEST, &format!("connection {n} with Last-Event-ID {id:?}")),
        }
    }

    #[tokio::test]
    async fn resumes_with_last_event_id_after_a_broken_and_a_closed_stream() -> anyhow::Result<()> {
        let seen = Seen::default();
        let base = serve(Router::new().route(EVENTS_PATH, get(resuming_relay)).with_state(seen.clone())).await?;
        let api = api(&base)?;
        let url = api.resolve(EVENTS_PATH)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());

        let view = follow(&api, &url, Mode::Progress(ProgressDrawTarget::hidden()), fast_retry(), &mut out, &mut err)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;

        assert_eq!(seen.header("last-event-id"), vec![None, Some("7".into()), Some("9".into())]);
        assert_eq!(seen.header("x-assetgen-user"), vec![Some("tester@example.com".into()); 3]);
        assert_eq!(seen.header("authorization"), vec![Some("Bearer secret-token".into()); 3]);
        assert_eq!(seen.header("accept"), vec![Some("text/event-stream".into()); 3]);
        assert_eq!(view, finished());
        assert_eq!((view.totals.rows, view.totals.succeeded, view.totals.failed), (2, 1, 1));
        assert_eq!((view.totals.images_done, view.totals.images_total), (2, 3));
        assert_eq!(exit_code(&view), 1);

        let err = String::from_utf8(err)?;
        let failure = failure_line(&row(1, "B", RowStatus::Failed, 1, 0));
        assert!(failure.starts_with("row 1 (B) failed: CONTENT_BLOCKED: the model blocked the image — Rephrase"));
        assert_eq!(err.matches(&failure).count(), 1, "the failed row is reported once: {err}");
        assert_eq!(err.matches("event stream interrupted").count(), 1, "only the broken connection is noted: {err}");
        assert!(out.is_empty(), "progress mode writes nothing to stdout itself");
        Ok(())
    }

    #[tokio::test]
    async fn json_mode_prints_one_line_per_event() -> anyhow::Result<()> {
        let ok = view(BatchStatus::Succeeded, vec![row(0, "A", RowStatus::Succeeded, 1, 1)]);
        let relay = move || {
            let ok = ok.clone();
            async move {
                let chunks = vec![
                    sse(&BatchEvent::Snapshot(ok.clone()), 1),
                    "data: hello\n\n".to_owned(),
                    sse(&BatchEvent::Done(ok), 2),
                ];
                stream_body(chunks, false)
            }
        };
        let base = serve(Router::new().route(EVENTS_PATH, get(relay))).await?;
        let api = api(&base)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());

        let view = follow(&api, &api.resolve(EVENTS_PATH)?, Mode::Json, fast_retry(), &mut out, &mut err)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;

        assert_eq!(exit_code(&view), 0);
        let out = String::from_utf8(out)?;
        let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0]["event"], "snapshot");
        assert_eq!(lines[0]["id"], "1");
        assert_eq!(lines[0]["data"]["batch_id"], "b1");
        assert_eq!(lines[1]["event"], "message");
        assert_eq!(lines[1]["data"], "hello");
        assert_eq!(lines[2]["event"], "done");
        assert_eq!(lines[2]["data"]["totals"]["succeeded"], 1);
        assert!(out.starts_with("{\"event\":\"snapshot\",\"id\":\"1\",\"data\":{"), "{out}");
        assert!(err.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_stream_is_not_retried() -> anyhow::Result<()> {
        let seen = Seen::default();
        let relay = |State(seen): State<Seen>, headers: HeaderMap| async move {
            seen.push(headers);
            let problem = Problem::new(ErrorCode::BatchNotFound, "batch b1 does not exist");
            status_response(StatusCode::NOT_FOUND, &serde_json::to_string(&problem).unwrap_or_default())
        };
        let base = serve(Router::new().route(EVENTS_PATH, get(relay)).with_state(seen.clone())).await?;
        let api = api(&base)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = follow(&api, &api.resolve(EVENTS_PATH)?, Mode::Json, fast_retry(), &mut out, &mut err).await;
        match result {
            Err(FollowError::Refused(refusal)) => {
                assert_eq!(refusal.status, 404);
                assert_eq!(refusal.problem.map(|p| p.detail), Some("batch b1 does not exist".to_owned()));
            }
            other => anyhow::bail!("expected a refusal, got {other:?}"),
        }
        assert_eq!(seen.header("accept").len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn gives_up_after_failing_for_the_whole_window() -> anyhow::Result<()> {
        let seen = Seen::default();
        let relay = |State(seen): State<Seen>, headers: HeaderMap| async move {
            seen.push(headers);
            status_response(StatusCode::SERVICE_UNAVAILABLE, "restarting")
        };
        let base = serve(Router::new().route(EVENTS_PATH, get(relay)).with_state(seen.clone())).await?;
        let api = api(&base)?;
        let retry = Retry { give_up_after: Duration::from_millis(300), ..fast_retry() };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let started = Instant::now();
        let result = follow(&api, &api.resolve(EVENTS_PATH)?, Mode::Json, retry, &mut out, &mut err).await;
        match result {
            Err(FollowError::GaveUp { last_error, after }) => {
                assert!(last_error.contains("503") && last_error.contains("restarting"), "{last_error}");
                assert!(after >= Duration::from_millis(300));
            }
            other => anyhow::bail!("expected to give up, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        // Attempts 20, 40, 80, 100, 100… ms apart: several, with the backoff capped.
        let attempts = seen.header("accept").len();
        assert!((4..=12).contains(&attempts), "{attempts} attempts");
        let err = String::from_utf8(err)?;
        assert!(err.contains("reconnecting in 0.0 s") && err.contains("reconnecting in 0.1 s"), "{err}");
        Ok(())
    }

    fn event(event: &BatchEvent, id: &str) -> Event {
        Event { event: event.name().into(), data: event.data_json(), id: id.into(), retry: None }
    }

    #[test]
    fn the_bar_follows_the_events_and_stops_where_the_batch_ended() -> anyhow::Result<()> {
        let mut tracker = Tracker::new(Mode::Progress(ProgressDrawTarget::hidden()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(tracker.handle(&event(&BatchEvent::Snapshot(running()), "1"), &mut out, &mut err)?.is_none());
        let bar = tracker.bar.clone().ok_or_else(|| anyhow::anyhow!("no bar after the snapshot"))?;
        assert_eq!((bar.position(), bar.length()), (2, Some(3)));
        assert_eq!(bar.message(), "rows 1/2 · 0 failed · running");

        let failed = row(1, "B", RowStatus::Failed, 1, 0);
        assert!(tracker.handle(&event(&BatchEvent::Row(failed), "2"), &mut out, &mut err)?.is_none());
        assert_eq!(bar.message(), "rows 2/2 · 1 failed · running");

        let done = tracker.handle(&event(&BatchEvent::Done(finished()), "3"), &mut out, &mut err)?;
        assert_eq!(done, Some(finished()));
        assert!(bar.is_finished());
        assert_eq!((bar.position(), bar.length()), (2, Some(3)), "one image was never made");
        assert_eq!(bar.message(), "rows 2/2 · 1 failed · completed_with_failures");
        assert!(out.is_empty());
        Ok(())
    }

    #[test]
    fn an_unreadable_event_is_an_error_and_unknown_events_are_skipped() -> anyhow::Result<()> {
        let mut tracker = Tracker::new(Mode::Progress(ProgressDrawTarget::hidden()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let unknown = Event { event: "ping".into(), data: "{}".into(), ..Event::default() };
        assert!(tracker.handle(&unknown, &mut out, &mut err)?.is_none());
        let broken = Event { event: "done".into(), data: "{\"batch_id\":1}".into(), ..Event::default() };
        let e = tracker.handle(&broken, &mut out, &mut err).expect_err("unreadable done");
        assert!(e.to_string().contains("done event this client cannot read"), "{e}");
        Ok(())
    }

    #[test]
    fn a_row_event_updates_the_totals() {
        let mut v = running();
        upsert_row(&mut v, row(1, "B", RowStatus::Succeeded, 1, 1));
        assert_eq!((v.totals.succeeded, v.totals.queued, v.totals.images_done, v.totals.images_total), (2, 0, 3, 3));
        upsert_row(&mut v, row(2, "C", RowStatus::Running, 1, 0));
        assert_eq!((v.totals.rows, v.totals.running), (3, 1));
        assert_eq!(v.rows.iter().map(|r| r.row).collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
