//! Logs as people read them on a laptop, or as JSON lines with Cloud Logging's field names so Cloud
//! Run files them correctly: `timestamp`, `severity`, `message`, `logging.googleapis.com/trace`,
//! and every field of the spans around an event (the request id above all) at the top level.
//!
//! The JSON formatter is written here on purpose. `tracing-subscriber`'s JSON names the level
//! `level` (Cloud Logging wants `severity`) and nests span fields; `tracing-stackdriver` (0.10)
//! nests span fields under `span`/`spans`, renames every key to camelCase, reaches the trace field
//! only through OpenTelemetry, and pulls a second `thiserror` and the unmaintained `Inflector`.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    CloudJson,
}

/// The span field the shim puts Cloud Logging's trace resource name in.
pub const TRACE_FIELD: &str = "trace";
const CLOUD_TRACE_KEY: &str = "logging.googleapis.com/trace";

/// Installs the global subscriber; `RUST_LOG` overrides the default filter and
/// `ASSETGEN_LOG_FORMAT` (`text` or `json`) the format. Safe to call twice. Colours only when
/// stderr is a terminal: a log file or a pipe gets plain text.
pub fn init_logging(format: LogFormat) {
    let format = match std::env::var("ASSETGEN_LOG_FORMAT").as_deref().map(str::trim) {
        Ok("json") => LogFormat::CloudJson,
        Ok("text") => LogFormat::Text,
        _ => format,
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,hyper=warn,reqwest=warn"));
    let ansi = std::io::stderr().is_terminal();
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
            .try_init(),
        LogFormat::CloudJson => tracing_subscriber::registry()
            .with(filter)
            .with(SpanFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).event_format(CloudJson),
            )
            .try_init(),
    };
}

/// `projects/PROJECT/traces/TRACE_ID` from an `X-Cloud-Trace-Context` value (`TRACE_ID/SPAN_ID;o=1`)
/// and `GOOGLE_CLOUD_PROJECT`; `None` without a project or a well-formed trace id.
pub fn cloud_trace(header: &str) -> Option<String> {
    static PROJECT: OnceLock<Option<String>> = OnceLock::new();
    let project = PROJECT.get_or_init(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok().filter(|p| !p.trim().is_empty()));
    trace_resource(project.as_deref()?, header)
}

fn trace_resource(project: &str, header: &str) -> Option<String> {
    let trace_id = header.split(['/', ';']).next()?.trim();
    let valid = !trace_id.is_empty() && trace_id.len() <= 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| format!("projects/{project}/traces/{trace_id}"))
}

/// A span's fields as JSON, kept in the span's extensions for the formatter.
#[derive(Debug, Default)]
struct SpanFields(serde_json::Map<String, serde_json::Value>);

/// Records span fields as structured values (the fmt layer keeps them only as text).
struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut JsonVisitor(&mut fields.0));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }
}

/// Collects fields into a JSON map, numbers and booleans as such.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), serde_json::Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

struct CloudJson;

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut out = serde_json::Map::new();
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now.format(&time::format_description::well_known::Rfc3339).map_err(|_| fmt::Error)?;
        out.insert("timestamp".into(), timestamp.into());
        let severity = match *meta.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        out.insert("severity".into(), severity.into());
        // Spans from the outermost in: an inner span's field (a row's request id) wins over an
        // outer one's (the push request's own id).
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    out.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut out));
        out.insert("target".into(), meta.target().into());
        if let Some(trace) = out.remove(TRACE_FIELD) {
            out.insert(CLOUD_TRACE_KEY.into(), trace);
        }
        let line = serde_json::to_string(&out).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_trace_header_becomes_the_trace_resource_name() {
        assert_eq!(
            trace_resource("proj", "105445aa7843bc8bf206b12000100000/1;o=1").as_deref(),
            Some("projects/proj/traces/105445aa7843bc8bf206b12000100000")
        );
        assert_eq!(trace_resource("proj", "not-hex/1").as_deref(), None);
        assert_eq!(trace_resource("proj", "").as_deref(), None);
    }

    #[test]
    fn json_lines_have_time_severity_and_span_fields_at_the_top_inner_spans_winning() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(SpanFieldsLayer).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .event_format(CloudJson),
        );
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", request_id = "push-1", trace = tracing::field::Empty);
            outer.record("trace", "projects/p/traces/abc");
            let _outer = outer.enter();
            let _row = tracing::info_span!("row", request_id = "submit-9", row = 3u64).entered();
            tracing::warn!(images = 2u64, "row done");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "row done");
        assert_eq!(line["request_id"], "submit-9");
        assert_eq!(line["row"], 3);
        assert_eq!(line["images"], 2);
        assert_eq!(line[CLOUD_TRACE_KEY], "projects/p/traces/abc");
        let stamp = line["timestamp"].as_str().expect("timestamp");
        assert!(time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(), "{stamp}");
        assert!(!text.contains('\u{1b}'), "no ANSI escapes in JSON");
    }
}
