//! The server's clock and the one way the API writes an instant.
//!
//! The domain never reads a clock: handlers, the sweep and the restore call [`now`] and pass the
//! instant down. Every timestamp an answer holds is serialized by [`Rfc3339`].

use chrono::{SecondsFormat, SubsecRound, Utc};
use serde::{Serialize, Serializer};

use crate::session::Timestamp;

/// The server's clock, at millisecond precision (what the API shows).
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(3)
}

/// An instant as the API writes it: RFC 3339 in UTC with a `Z`, and 0, 3, 6 or 9 fraction digits,
/// as few as the instant needs (`2026-11-25T19:00:00.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub Timestamp);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn instants_are_written_with_as_many_fraction_digits_as_they_need() {
        let at = |nanos| Utc.timestamp_opt(1_764_097_200, nanos).unwrap();
        for (t, text) in [
            (at(0), "2025-11-25T19:00:00Z"),
            (at(123_000_000), "2025-11-25T19:00:00.123Z"),
            (at(123_456_000), "2025-11-25T19:00:00.123456Z"),
            (at(123_456_789), "2025-11-25T19:00:00.123456789Z"),
            (Utc.timestamp_opt(5, 1).unwrap(), "1970-01-01T00:00:05.000000001Z"),
        ] {
            assert_eq!(Rfc3339(t).to_string(), text);
            assert_eq!(serde_json::to_string(&Rfc3339(t)).unwrap(), format!("\"{text}\""));
        }
    }

    #[test]
    fn the_clock_reads_whole_milliseconds() {
        assert_eq!(now().timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
