//! Logs as people read them on a laptop, or as JSON lines with Cloud Logging's field names
//! (`severity`, `message`, `logging.googleapis.com/trace`) so Cloud Run files them correctly.

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    CloudJson,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default filter. Safe to call twice.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,hyper=warn,reqwest=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::CloudJson => {
            builder.event_format(CloudJson { project: std::env::var("GOOGLE_CLOUD_PROJECT").ok() }).try_init()
        }
    };
}

struct CloudJson {
    project: Option<String>,
}

/// Collects an event's fields into a JSON map.
#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
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
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut out = fields.0;
        let severity = match *meta.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        out.insert("severity".into(), severity.into());
        out.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && !f.is_empty()
                {
                    out.insert(format!("span.{}", span.name()), f.to_string().into());
                }
            }
        }
        if let (Some(project), Some(trace)) = (&self.project, out.get("trace_id").and_then(|t| t.as_str())) {
            let trace = format!("projects/{project}/traces/{trace}");
            out.insert("logging.googleapis.com/trace".into(), trace.into());
        }
        let line = serde_json::to_string(&out).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}
