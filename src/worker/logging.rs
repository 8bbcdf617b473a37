//! Logging: Kafka Connect's text layout by default (`[yyyy-MM-dd HH:mm:ss,SSS] LEVEL message (target)`),
//! JSON lines with `--log-format json`. The level filter comes from `IOTCONNECT_LOG` (RUST_LOG syntax)
//! and can be changed at run time (REST `/admin/loggers`, SIGHUP re-reads the variable).

use std::fmt;
use std::sync::OnceLock;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{prelude::*, reload, EnvFilter, Registry};

pub const LOG_ENV: &str = "IOTCONNECT_LOG";
const DEFAULT_FILTER: &str = "info";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Kafka Connect's log4j layout.
    Text,
    /// One JSON object per line.
    Json,
}

type Handle = reload::Handle<EnvFilter, Registry>;

static HANDLE: OnceLock<Handle> = OnceLock::new();
static CURRENT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The filter in force at start: `IOTCONNECT_LOG`, else `info`.
pub fn filter_from_env() -> String {
    std::env::var(LOG_ENV).unwrap_or_else(|_| DEFAULT_FILTER.to_string())
}

/// The Azure SDK crates whose INFO lines are noise for an operator (a retry logs dozens of them).
const SDK_TARGETS: &[&str] = &[
    "azure_core",
    "azure_core_amqp",
    "azure_messaging_eventhubs",
    "fe2o3_amqp",
    "fe2o3_amqp_ws",
];

/// `spec` with the SDK crates at WARN unless it names them itself (`IOTCONNECT_LOG=info,azure_core_amqp=debug`
/// brings one back).
pub fn with_quiet_sdk(spec: &str) -> String {
    let mut out = spec.to_string();
    for t in SDK_TARGETS {
        let named = spec
            .split(',')
            .any(|d| d.trim().split('=').next() == Some(*t));
        if !named {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(t);
            out.push_str("=warn");
        }
    }
    out
}

/// Installs the global subscriber (stderr). Safe to call once; later calls do nothing.
pub fn init(format: LogFormat) {
    let spec = filter_from_env();
    let filter = EnvFilter::try_new(with_quiet_sdk(&spec)).unwrap_or_else(|e| {
        eprintln!("{LOG_ENV}={spec} is not a valid filter ({e}); using {DEFAULT_FILTER}");
        EnvFilter::new(with_quiet_sdk(DEFAULT_FILTER))
    });
    let (filter, handle) = reload::Layer::new(filter);
    let base = Registry::default().with(filter);
    let installed = match format {
        LogFormat::Text => base
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .event_format(ConnectLayout),
            )
            .try_init(),
        LogFormat::Json => base
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = HANDLE.set(handle);
        *CURRENT.lock().unwrap() = spec;
    }
}

/// Replaces the level filter (RUST_LOG syntax). Returns the error text for a bad filter.
pub fn set_filter(spec: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(with_quiet_sdk(spec)).map_err(|e| e.to_string())?;
    let handle = HANDLE.get().ok_or("logging is not initialised")?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    *CURRENT.lock().unwrap() = spec.to_string();
    Ok(())
}

/// The filter in force.
pub fn current_filter() -> String {
    let c = CURRENT.lock().unwrap().clone();
    if c.is_empty() {
        DEFAULT_FILTER.to_string()
    } else {
        c
    }
}

/// `[2017-08-29 20:15:54,106] INFO message (target)`, as Connect's `[%d] %p %m (%c:%L)%n`.
struct ConnectLayout;

impl<S, N> FormatEvent<S, N> for ConnectLayout
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now =
            time::OffsetDateTime::now_local().unwrap_or_else(|_| time::OffsetDateTime::now_utc());
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        write!(
            writer,
            "[{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}] {level} ",
            now.year(),
            now.month() as u8,
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        )?;
        // Connect 3.x's MDC prefix: `[connector|task-0] `, from the innermost span's `ctx` field.
        if let Some(scope) = ctx.event_scope() {
            if let Some(span) = scope.from_root().last() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if let Some(v) = fields.fields.split("ctx=").nth(1) {
                        let v = v.split(' ').next().unwrap_or("").trim_matches('"');
                        write!(writer, "[{v}] ")?;
                    }
                }
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer, " ({})", meta.target())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sdk_crates_are_quiet_unless_named() {
        let f = super::with_quiet_sdk("info");
        assert!(f.starts_with("info,"), "{f}");
        assert!(f.contains("azure_core_amqp=warn"), "{f}");
        assert!(f.contains("fe2o3_amqp=warn"), "{f}");
        let f = super::with_quiet_sdk("info,azure_core_amqp=debug");
        assert!(!f.contains("azure_core_amqp=warn"), "{f}");
        assert!(f.contains("azure_messaging_eventhubs=warn"), "{f}");
    }
}
