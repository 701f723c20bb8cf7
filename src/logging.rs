//! Log lines, text or JSON, written to stdout by a background thread.
//!
//! tracing-subscriber formats (`--log-format text` is its `fmt` line, `json` its JSON object per
//! line, without spans: this crate opens none); tracing-appender's non-blocking writer hands each
//! line to its own thread, so a request never waits on a terminal or a pipe. It is lossy: when stdout
//! stalls long enough to fill its queue of [`QUEUE_LINES`], lines are dropped rather than requests
//! held up, and the drops are counted in `session_pool_log_lines_dropped_total` ([`export_dropped`]).

use std::sync::OnceLock;

use tracing::Subscriber;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::metric_names as names;

/// Lines the queue to the writer thread holds at most.
pub const QUEUE_LINES: usize = 128 * 1024;

/// The dropped-line count of the process's log writer, once [`init`] has made one.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Sends the process's log lines in `format` to stdout, at the level `RUST_LOG` sets (default
/// `info`). The returned guard writes out what is queued when it is dropped (at the end of `main`).
///
/// # Errors
/// `RUST_LOG` is set but is not a filter; a global subscriber (or `log` logger) is set already.
pub fn init(format: LogFormat) -> anyhow::Result<WorkerGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={directives:?} is not a log filter: {e}"))?,
        Ok(_) | Err(std::env::VarError::NotPresent) => EnvFilter::new("info"),
        Err(std::env::VarError::NotUnicode(raw)) => anyhow::bail!("RUST_LOG={raw:?} is not UTF-8"),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    // Also takes the records of the `log` crate (from dependencies), under their own targets.
    subscriber(format, filter, writer).try_init()?;
    Ok(guard)
}

/// The subscriber that writes `format` lines through `writer`.
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false);
    match format {
        LogFormat::Text => Box::new(lines.finish()),
        LogFormat::Json => Box::new(lines.json().with_current_span(false).with_span_list(false).finish()),
    }
}

/// Brings `session_pool_log_lines_dropped_total` up to the writer's count of dropped lines (a scrape
/// calls it; the count only grows).
pub fn export_dropped() {
    if let Some(dropped) = DROPPED.get() {
        metrics::counter!(names::LOG_LINES_DROPPED).absolute(dropped.dropped_lines() as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `format` writes for `emit`.
    fn lines(format: LogFormat, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), move || sink.clone());
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn request_failed() {
        tracing::error!(
            target: "session_pool::access",
            method = %"POST",
            route = %"/v1/pools/{pool}/acquire",
            status = 500u16,
            latency_ms = 0.125,
            request_id = "r-1",
            cause = "disk \"full\"\n",
            "request failed"
        );
    }

    #[test]
    fn json_lines_hold_time_level_fields_and_target_and_nothing_else() {
        let text = lines(LogFormat::Json, request_failed);
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text:?}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["fields", "level", "target", "timestamp"]);
        assert!(chrono::DateTime::parse_from_rfc3339(value["timestamp"].as_str().unwrap()).is_ok(), "{text}");
        assert_eq!(value["level"], "ERROR");
        assert_eq!(value["target"], "session_pool::access");
        assert_eq!(
            value["fields"],
            serde_json::json!({
                "message": "request failed", "method": "POST", "route": "/v1/pools/{pool}/acquire",
                "status": 500, "latency_ms": 0.125, "request_id": "r-1", "cause": "disk \"full\"\n",
            })
        );
    }

    #[test]
    fn text_lines_hold_time_level_target_message_and_fields_without_colours() {
        let text = lines(LogFormat::Text, request_failed);
        let (time, rest) = text.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{text:?}");
        assert!(
            rest.starts_with("ERROR session_pool::access: request failed method=POST route=/v1/pools/{pool}/acquire "),
            "{text:?}"
        );
        assert!(rest.contains(" status=500 latency_ms=0.125 request_id=\"r-1\""), "{text:?}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text:?}");
    }

    #[test]
    fn lines_below_the_level_are_not_written() {
        assert_eq!(lines(LogFormat::Text, || tracing::debug!("hidden")), "");
    }

    #[test]
    fn the_dropped_lines_reach_the_metric() {
        /// An output that never finishes a write, like a pipe nobody reads.
        struct Stalled;
        impl Write for Stalled {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                loop {
                    std::thread::park();
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (writer, guard) = NonBlockingBuilder::default().lossy(true).buffered_lines_limit(4).finish(Stalled);
        let _ = DROPPED.set(writer.error_counter());
        for i in 0..20 {
            writer.make_writer().write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        // At most the queue and the line being written are kept.
        let dropped = DROPPED.get().unwrap().dropped_lines();
        assert!(dropped >= 15, "{dropped} dropped");
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, export_dropped);
        let rendered = handle.render();
        assert!(rendered.contains(&format!("{} {dropped}", names::LOG_LINES_DROPPED)), "{rendered}");
        // Not waiting for the stalled thread: the guard gives up after its own timeout.
        drop(guard);
    }
}
