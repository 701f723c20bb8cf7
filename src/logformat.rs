//! The format of log lines, text or JSON: what `tracing_subscriber::fmt` writes, without its cost.
//!
//! The server writes a line per request, and callgrind put `tracing_subscriber`'s formatter at about
//! a fifth of the instructions of a whole acquire: every string field goes through `Debug` and the
//! formatting machinery a character at a time, and so does the timestamp. These formatters write the
//! same information with plain copies: strings are copied (quoted or escaped only when they need
//! it), numbers go through `itoa` and `zmij`, the timestamp through a digit loop.
//!
//! Text: `2026-11-25T22:43:22.218352Z  INFO session_pool::api::edge: request method=POST status=200`
//! JSON: `{"timestamp":"…","level":"INFO","fields":{"message":"request","method":"POST"},"target":"…"}`,
//! the shape `tracing_subscriber`'s JSON format has. Spans are not written: this crate opens none.

use std::fmt::{self, Write};

use chrono::Utc;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::api::{Fraction, Rfc3339};

/// Which log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `timestamp LEVEL target: message name=value ...`
    Text,
    /// One JSON object per line.
    Json,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut out: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Events of the `log` crate (from dependencies) carry their real target in `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        match self {
            Self::Text => {
                write_timestamp(&mut out)?;
                out.write_str(match *meta.level() {
                    tracing::Level::TRACE => " TRACE ",
                    tracing::Level::DEBUG => " DEBUG ",
                    tracing::Level::INFO => "  INFO ",
                    tracing::Level::WARN => "  WARN ",
                    tracing::Level::ERROR => " ERROR ",
                })?;
                out.write_str(meta.target())?;
                out.write_str(":")?;
                // tracing's macros put the message first, so it comes out right after the target.
                let mut fields = TextFields { out: &mut out, result: Ok(()) };
                event.record(&mut fields);
                fields.result?;
                out.write_char('\n')
            }
            Self::Json => {
                out.write_str("{\"timestamp\":\"")?;
                write_timestamp(&mut out)?;
                out.write_str("\",\"level\":\"")?;
                out.write_str(meta.level().as_str())?;
                out.write_str("\",\"fields\":{")?;
                let mut fields = JsonFields { out: &mut out, first: true, result: Ok(()) };
                event.record(&mut fields);
                fields.result?;
                out.write_str("},\"target\":")?;
                json_string(&mut out, meta.target())?;
                out.write_str("}\n")
            }
        }
    }
}

/// The current UTC time with microseconds, `2026-11-25T22:43:22.218352Z`.
fn write_timestamp(out: &mut impl Write) -> fmt::Result {
    let now = Rfc3339(Utc::now());
    let mut buf = [0u8; Rfc3339::FAST_LEN];
    match now.write_fast(&mut buf, Fraction::Micros) {
        Some(len) => out.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?),
        None => out.write_str(&now.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    }
}

/// The `Visit` methods both formats share: integers and booleans are written the same way in text and
/// JSON, through the visitor's own `record(field, write)`.
macro_rules! record_integers_and_bools {
    () => {
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.record(field, |out| out.write_str(itoa::Buffer::new().format(value)));
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            self.record(field, |out| out.write_str(itoa::Buffer::new().format(value)));
        }

        fn record_bool(&mut self, field: &Field, value: bool) {
            self.record(field, |out| out.write_str(if value { "true" } else { "false" }));
        }
    };
}

/// The message as it is and `name=value` pairs, each after a space; values quoted (as Rust string
/// literals) only when they are empty or hold whitespace, a quote, `=` or a control character.
struct TextFields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl TextFields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        self.out.write_char(' ')?;
        self.out.write_str(field.name())?;
        self.out.write_char('=')
    }

    fn record(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() && !is_log_metadata(field) {
            self.result = self.name(field).and_then(|()| write(self.out));
        }
    }

    fn message(&mut self, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.out.write_char(' ').and_then(|()| write(self.out));
        }
    }
}

impl Visit for TextFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(|out| out.write_str(value));
            return;
        }
        // A byte scan for ASCII text; other text is checked by char, for Unicode spaces and controls.
        let plain = !value.is_empty()
            && if value.is_ascii() {
                value.bytes().all(|b| b > b' ' && b != b'"' && b != b'=' && b != 0x7f)
            } else {
                !value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
            };
        self.record(field, |out| if plain { out.write_str(value) } else { write!(out, "{value:?}") });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message(|out| write!(out, "{value:?}"));
        } else {
            self.record(field, |out| write!(out, "{value:?}"));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, |out| write_f64(out, value));
    }

    record_integers_and_bools!();
}

/// `"name":value` pairs, comma-separated, values as JSON.
struct JsonFields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn record(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() || is_log_metadata(field) {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { "," };
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| json_string(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| write(self.out));
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, |out| json_string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |out| {
            out.write_char('"')?;
            write!(JsonEscaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, |out| if value.is_finite() { write_f64(out, value) } else { out.write_str("null") });
    }

    record_integers_and_bools!();
}

/// The `log.target`, `log.file` ... fields a `log` record arrives with; its metadata says the same.
fn is_log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// The shortest text that reads back as `value` (`0.123`, `12.0`; `NaN` and `inf` as Rust writes them).
fn write_f64(out: &mut impl Write, value: f64) -> fmt::Result {
    if value.is_finite() {
        out.write_str(zmij::Buffer::new().format_finite(value))
    } else {
        write!(out, "{value}")
    }
}

/// A JSON string literal.
fn json_string(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscaped(out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what it is given as the inside of a JSON string: `"`, `\` and control characters.
struct JsonEscaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c.is_ascii_control()) {
            self.0.write_str(&rest[..at])?;
            match rest.as_bytes()[at] {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{other:04x}")?,
            }
            rest = &rest[at + 1..];
        }
        self.0.write_str(rest)
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
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line `format` writes for a request-like event.
    fn line(format: LineFormat, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt().event_format(format).with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn request_event() {
        let cause = "disk \"full\"\n\tretry";
        tracing::error!(
            method = "POST",
            route = "/v1/pools/{pool}/acquire",
            status = 500u16,
            latency_ms = 0.125,
            ok = false,
            delta = -3i64,
            request_id = "",
            cause,
            debug = ?Some(1),
            "request failed"
        );
    }

    #[test]
    fn text_lines_have_time_level_target_message_and_fields() {
        let text = line(LineFormat::Text, request_event);
        let (time, rest) = text.split_at(27);
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time:?}");
        assert_eq!(
            rest,
            " ERROR session_pool::logformat::tests: request failed method=POST route=/v1/pools/{pool}/acquire \
             status=500 latency_ms=0.125 ok=false delta=-3 request_id=\"\" cause=\"disk \\\"full\\\"\\n\\tretry\" \
             debug=Some(1)\n"
        );
    }

    #[test]
    fn json_lines_parse_and_keep_every_field_and_its_type() {
        let text = line(LineFormat::Json, request_event);
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text:?}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(value["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(value["level"], "ERROR");
        assert_eq!(value["target"], "session_pool::logformat::tests");
        assert_eq!(
            value["fields"],
            serde_json::json!({
                "message": "request failed", "method": "POST", "route": "/v1/pools/{pool}/acquire",
                "status": 500, "latency_ms": 0.125, "ok": false, "delta": -3, "request_id": "",
                "cause": "disk \"full\"\n\tretry", "debug": "Some(1)",
            })
        );
    }

    #[test]
    fn unicode_spaces_and_controls_are_quoted_in_text() {
        let text = line(LineFormat::Text, || tracing::info!(a = "x\u{2028}status=200", b = "é", c = "a\u{85}b", "m"));
        assert!(text.ends_with(" m a=\"x\\u{2028}status=200\" b=é c=\"a\\u{85}b\"\n"), "{text}");
    }

    #[test]
    fn log_crate_records_keep_their_own_target() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().event_format(LineFormat::Json).with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let record = log::Record::builder()
                .args(format_args!("from log"))
                .level(log::Level::Warn)
                .target("cookie_store::jar")
                .file(Some("jar.rs"))
                .line(Some(7))
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["target"], "cookie_store::jar", "{text}");
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["fields"], serde_json::json!({"message": "from log"}), "{text}");
    }

    #[test]
    fn control_characters_are_escaped_in_json() {
        let text = line(LineFormat::Json, || tracing::warn!(odd = "\u{1}\u{1f}\\", "x"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["fields"]["odd"], "\u{1}\u{1f}\\");
        assert!(text.contains("\\u0001\\u001f\\\\"), "{text}");
    }
}
