//! Holiday calendars: iCalendar files named in `[scripts.calendars]`, read when the
//! configuration is (start, SIGHUP), as the closed days and times business hours skip
//! (`hours.rs`). Parsed with the `icalendar` crate; each VEVENT counts:
//!
//! - all-day (`DTSTART;VALUE=DATE:20261225`): closed from that day to `DTEND` (exclusive; one
//!   day when there is none), on the dates of the zone the hours are in;
//! - dated (`DTSTART:20261224T120000Z`, with a `TZID`, or floating): closed from `DTSTART` to
//!   `DTEND` (to `DTSTART` + 1 day when there is none); a floating time is in the hours' zone.
//!
//! Recurring events (`RRULE`) are refused, naming the event: list each date instead.

use super::zone;
use chrono::{Datelike, Timelike};
use icalendar::{CalendarComponent, CalendarDateTime, Component, DatePerhapsTime};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use std::path::Path;

/// A closed stretch of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Whole days, `from` up to `until` (exclusive), in the zone of the hours that ask.
    Days { from: Date, until: Date },
    /// Fixed instants, epoch ms, `from` up to `until`.
    Instants { from: i64, until: i64 },
    /// Wall-clock times in the zone of the hours that ask.
    Floating { from: DateTime, until: DateTime },
}

impl Closed {
    /// Whether `ms` (whose wall-clock time in the asking zone is `local`) is in it.
    pub(crate) fn covers(&self, ms: i64, local: DateTime) -> bool {
        match self {
            Closed::Days { from, until } => (*from..*until).contains(&local.date()),
            Closed::Instants { from, until } => (*from..*until).contains(&ms),
            Closed::Floating { from, until } => (*from..*until).contains(&local),
        }
    }
}

/// The largest holiday file read (a year of holidays is a few KiB).
const MAX_CALENDAR_BYTES: u64 = 1 << 20;
/// How deep BEGIN blocks may nest (VCALENDAR > VEVENT > VALARM, and a margin).
const MAX_NESTING: usize = 8;

/// One calendar's closed stretches, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    pub(crate) closed: Vec<Closed>,
}

impl Calendar {
    /// Reads an iCalendar file; the error says what is wrong (the caller names the key).
    pub fn read(path: &Path) -> Result<Calendar, String> {
        let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
        if size > MAX_CALENDAR_BYTES {
            return Err(format!("{}: {size} bytes; a holiday calendar is at most {MAX_CALENDAR_BYTES} bytes", path.display()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Calendar::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Calendar, String> {
        // The parser recurses once per nested BEGIN: a file of nested blocks would overflow the
        // stack (and take the agent down on a reload). Real calendars nest 3 deep (VALARM in VEVENT).
        let mut depth = 0usize;
        for line in text.lines() {
            let l = line.trim_end();
            if l.len() >= 6 && l[..6].eq_ignore_ascii_case("BEGIN:") {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!("BEGIN blocks nested more than {MAX_NESTING} deep"));
                }
            } else if l.len() >= 4 && l[..4].eq_ignore_ascii_case("END:") {
                depth = depth.saturating_sub(1);
            }
        }
        let cal: icalendar::Calendar = text.parse().map_err(|e: String| format!("not an iCalendar file: {}", e.lines().next().unwrap_or("")))?;
        let mut closed = Vec::new();
        for c in &cal.components {
            let CalendarComponent::Event(e) = c else { continue };
            let name = e.get_summary().unwrap_or("(no SUMMARY)");
            if e.property_value("RRULE").is_some() {
                return Err(format!("event {name:?} repeats (RRULE), which is not supported: list each date as an event of its own"));
            }
            let start = e.get_start().ok_or_else(|| format!("event {name:?} has no DTSTART"))?;
            let end = e.get_end();
            closed.push(match start {
                DatePerhapsTime::Date(d) => {
                    let from = date(d)?;
                    let until = match end {
                        Some(DatePerhapsTime::Date(d)) => date(d)?,
                        _ => from.tomorrow().map_err(|e| e.to_string())?,
                    };
                    Closed::Days { from, until: until.max(from) }
                }
                DatePerhapsTime::DateTime(start) => match (point(&start)?, end) {
                    (Point::Floating(from), Some(DatePerhapsTime::DateTime(end))) if matches!(end, CalendarDateTime::Floating(_)) => {
                        let Point::Floating(until) = point(&end)? else { unreachable!("floating") };
                        Closed::Floating { from, until }
                    }
                    (Point::Floating(from), _) => Closed::Floating { from, until: from.checked_add(jiff::Span::new().days(1)).map_err(|e| e.to_string())? },
                    (Point::Instant(from), end) => {
                        let until = match end.map(|e| match e {
                            DatePerhapsTime::DateTime(e) => point(&e),
                            DatePerhapsTime::Date(_) => Err(format!("event {name:?}: DTSTART is a time but DTEND a date")),
                        }) {
                            Some(Ok(Point::Instant(until))) => until,
                            Some(Err(e)) => return Err(e),
                            _ => from + 24 * 3600 * 1000,
                        };
                        Closed::Instants { from, until }
                    }
                },
            });
        }
        Ok(Calendar { closed })
    }
}

enum Point {
    Instant(i64),
    Floating(DateTime),
}

fn date(d: chrono::NaiveDate) -> Result<Date, String> {
    Date::new(d.year() as i16, d.month() as i8, d.day() as i8).map_err(|e| e.to_string())
}

fn civil(dt: chrono::NaiveDateTime) -> Result<DateTime, String> {
    Ok(date(dt.date())?.at(dt.hour() as i8, dt.minute() as i8, dt.second().min(59) as i8, 0))
}

fn point(t: &CalendarDateTime) -> Result<Point, String> {
    Ok(match t {
        CalendarDateTime::Floating(dt) => Point::Floating(civil(*dt)?),
        CalendarDateTime::Utc(dt) => Point::Instant(dt.timestamp_millis()),
        CalendarDateTime::WithTimezone { date_time, tzid } => {
            let tz: TimeZone = zone::by_name(tzid)?;
            Point::Instant(zone::instant(&tz, civil(*date_time)?).as_millisecond())
        }
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn nested_blocks_and_huge_files_are_refused_not_parsed() {
        let nested = format!("BEGIN:VCALENDAR\n{}{}END:VCALENDAR\n", "BEGIN:VEVENT\n".repeat(1000), "END:VEVENT\n".repeat(1000));
        assert!(Calendar::parse(&nested).unwrap_err().contains("nested more than 8 deep"));
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.ics");
        std::fs::write(&big, vec![b'x'; (MAX_CALENDAR_BYTES + 1) as usize]).unwrap();
        assert!(Calendar::read(&big).unwrap_err().contains("at most 1048576 bytes"));
    }
    use super::*;

    const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:Christmas Day\r\nDTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261227\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:2\r\nSUMMARY:German Unity Day\r\nDTSTART;VALUE=DATE:20261003\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:3\r\nSUMMARY:Christmas Eve afternoon\r\nDTSTART;TZID=Europe/Berlin:20261224T120000\r\nDTEND;TZID=Europe/Berlin:20261224T180000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:4\r\nSUMMARY:Maintenance\r\nDTSTART:20260701T220000Z\r\nDTEND:20260701T230000Z\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    #[test]
    fn all_day_and_dated_events_close() {
        let c = Calendar::parse(ICS).unwrap();
        let d = |y, m, d| jiff::civil::date(y, m, d);
        assert_eq!(c.closed[0], Closed::Days { from: d(2026, 12, 25), until: d(2026, 12, 27) });
        assert_eq!(c.closed[1], Closed::Days { from: d(2026, 10, 3), until: d(2026, 10, 4) });
        assert_eq!(c.closed[2], Closed::Instants { from: 1_798_110_000_000, until: 1_798_131_600_000 });
        assert_eq!(c.closed[3], Closed::Instants { from: 1_782_943_200_000, until: 1_782_946_800_000 });
    }

    #[test]
    fn recurring_events_and_garbage_are_refused() {
        let rrule = ICS.replace("UID:2\r\n", "UID:2\r\nRRULE:FREQ=YEARLY\r\n");
        assert!(Calendar::parse(&rrule).unwrap_err().contains("\"German Unity Day\" repeats"));
        assert!(Calendar::parse("hello").is_err());
    }
}
