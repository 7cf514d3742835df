//! Time zones as scripts mean them: IANA names looked up in the time-zone database built into
//! the binary (jiff's bundled tzdb, so a container without `/usr/share/zoneinfo` works), and
//! the two answers a wall-clock time needs around daylight-saving changes:
//!
//! - a time the clocks skip (spring forward, 02:30 in Berlin on 29 March 2026) means the
//!   instant the clocks skip to (03:00 CEST): the first moment that exists after it;
//! - a time the clocks repeat (fall back, 02:30 in Berlin on 25 October 2026) means its
//!   first, earlier instant (02:30 CEST, not 02:30 CET).
//!
//! Both keep wall-clock order: a later wall-clock time never maps to an earlier instant, which
//! is what lets a schedule walk wall-clock times in order (`cron.rs`).

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// A zone by IANA name (`Europe/Berlin`, `UTC`); the error names it.
pub(crate) fn by_name(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("unknown time zone {name:?} (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"))
}

/// The system's zone (`TZ`, else `/etc/localtime`), else UTC.
pub(crate) fn system() -> TimeZone {
    TimeZone::try_system().unwrap_or(TimeZone::UTC)
}

/// A zone's name as scripts see it (`z.name`).
pub(crate) fn name(tz: &TimeZone) -> String {
    tz.iana_name().map(str::to_string).unwrap_or_else(|| "local".to_string())
}

/// The instant of a wall-clock time in `tz`: the instant after the gap for a skipped time,
/// the earlier one for a repeated time.
pub(crate) fn instant(tz: &TimeZone, dt: DateTime) -> Timestamp {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).unwrap_or(Timestamp::MAX),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).unwrap_or(Timestamp::MAX),
        AmbiguousOffset::Gap { after, .. } => {
            // At the later offset the time lies before the transition; the transition itself
            // is the first instant after the gap.
            let early = after.to_timestamp(dt).unwrap_or(Timestamp::MAX);
            tz.following(early).next().map(|t| t.timestamp()).unwrap_or(early)
        }
    }
}

/// Milliseconds since the epoch as an instant (clamped to what jiff can hold).
pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        by_name("Europe/Berlin").unwrap()
    }

    fn at(tz: &TimeZone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> String {
        instant(tz, jiff::civil::date(y, mo, d).at(h, mi, 0, 0)).to_string()
    }

    #[test]
    fn the_skipped_hour_means_the_instant_after_the_gap_and_the_repeated_hour_its_first_pass() {
        let tz = berlin();
        assert_eq!(at(&tz, 2026, 3, 29, 1, 59), "2026-03-29T00:59:00Z");
        assert_eq!(at(&tz, 2026, 3, 29, 2, 0), "2026-03-29T01:00:00Z");
        assert_eq!(at(&tz, 2026, 3, 29, 2, 30), "2026-03-29T01:00:00Z", "skipped: the instant the clocks skip to (03:00 CEST)");
        assert_eq!(at(&tz, 2026, 3, 29, 3, 0), "2026-03-29T01:00:00Z");
        assert_eq!(at(&tz, 2026, 10, 25, 2, 30), "2026-10-25T00:30:00Z", "repeated: the earlier instant (CEST)");
        assert_eq!(at(&tz, 2026, 10, 25, 3, 0), "2026-10-25T02:00:00Z");
    }

    #[test]
    fn unknown_names_are_named() {
        assert!(by_name("Mars/Olympus").unwrap_err().contains("\"Mars/Olympus\""));
        assert_eq!(name(&by_name("UTC").unwrap()), "UTC");
    }
}
