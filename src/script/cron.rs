//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) and the next
//! instant one matches in a time zone.
//!
//! Each field is `*`, a number, a range `a-b`, a list `a,b,c`, or a step `*/n` / `a-b/n` /
//! `a/n` (from `a` to the field's end); months may be `JAN`–`DEC`, days of the week `SUN`–`SAT`
//! (0 or 7 is Sunday), case-insensitive. When both day fields are restricted a day matching
//! either runs (as in every cron).
//!
//! Wall-clock times are taken as `zone.rs` resolves them: a time the clocks skip runs at the
//! instant after the gap (once, however many of the job's times fell in it), a time they repeat
//! runs in its first pass only.

use super::zone;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// A parsed expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1–31.
    days: u32,
    /// Bits 1–12.
    months: u16,
    /// Bits 0–6, 0 = Sunday.
    weekdays: u8,
    /// Whether the day-of-month / day-of-week field was `*` (cron's "either day" rule).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
pub(crate) const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// How far ahead a match is looked for: 8 years cover any leap day on any weekday... almost;
/// an expression that matches no day in that time (`0 0 30 2 *`) is an error.
const HORIZON_DAYS: i32 = 8 * 366;

impl Cron {
    /// Parses `30 8 * * MON-FRI`; the error names the field.
    pub(crate) fn parse(expr: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [min, hour, dom, mon, dow] = fields[..] else {
            return Err(format!("{expr:?}: expected 5 fields (minute hour day-of-month month day-of-week), got {}", fields.len()));
        };
        let minutes = field(min, "minute", 0, 59, &[])?;
        let hours = field(hour, "hour", 0, 23, &[])? as u32;
        let days = field(dom, "day of month", 1, 31, &[])? as u32;
        let months = field(mon, "month", 1, 12, &MONTHS)? as u16;
        let mut weekdays = field(dow, "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f; // 7 is Sunday too
        }
        let any = |f: &str| f == "*" || f == "?";
        let cron = Cron { minutes, hours, days, months, weekdays: weekdays as u8, any_day: any(dom), any_weekday: any(dow) };
        Ok(cron)
    }

    fn matches_day(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first instant (ms) after `after_ms` that matches, in `tz`; None if no day matches
    /// within the horizon.
    pub(crate) fn next_after(&self, tz: &TimeZone, after_ms: i64) -> Option<i64> {
        // A day early: the wall-clock date of a skipped time can be the day before's.
        let mut day = tz.to_datetime(zone::timestamp(after_ms)).date().yesterday().ok()?;
        for _ in 0..HORIZON_DAYS {
            if self.matches_day(day) {
                for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                        let at = zone::instant(tz, day.at(h, m, 0, 0)).as_millisecond();
                        if at > after_ms {
                            return Some(at);
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// Days of the week as cron's field gives them (`MON-FRI`, `SAT,SUN`, `1-5`): bits 0–6, 0 = Sunday.
pub(crate) fn weekdays(text: &str) -> Result<u8, String> {
    let bits = field(text, "day of week", 0, 7, &WEEKDAYS)?;
    Ok(((bits | (bits >> 7)) & 0x7f) as u8)
}

/// One field as a bit set of the values from `lo` to `hi` it allows.
fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let bad = |why: String| format!("cron {what} field {text:?}: {why}");
    let value = |s: &str| -> Result<u32, String> {
        let n = match s.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
                Some(i) => i as u32 + if names.len() == 12 { 1 } else { 0 },
                None => return Err(bad(format!("{s:?} is not a number{}", if names.is_empty() { "" } else { " or a name" }))),
            },
        };
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("{n} is out of range {lo}-{hi}")))
        }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| bad(format!("step {s:?} is not a positive number")))?),
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => (value(r)?, value(r)?),
            },
        };
        if a > b {
            return Err(bad(format!("range {a}-{b} goes backwards")));
        }
        for v in (a..=b).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, after: &str) -> String {
        let tz = zone::by_name("Europe/Berlin").unwrap();
        let after: jiff::Timestamp = after.parse().unwrap();
        let ms = Cron::parse(expr).unwrap().next_after(&tz, after.as_millisecond()).unwrap();
        zone::timestamp(ms).to_zoned_datetime(tz).to_string()
    }

    #[test]
    fn fields_parse_with_ranges_lists_steps_and_names() {
        let c = Cron::parse("*/15 8-17/3 1,15 JAN-mar MON-FRI").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, 1 << 8 | 1 << 11 | 1 << 14 | 1 << 17);
        assert_eq!((c.days, c.months, c.weekdays), (1 << 1 | 1 << 15, 0b1110, 0b0111110));
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().weekdays, 1);
        for (bad, says) in
            [("* * * *", "5 fields"), ("60 * * * *", "minute"), ("* * * * FUN", "day of week"), ("5-1 * * * *", "backwards"), ("*/0 * * * *", "step")]
        {
            let e = Cron::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn weekdays_and_the_either_day_rule() {
        assert_eq!(next("30 8 * * MON-FRI", "2026-01-02T08:00:00Z"), "2026-01-05T08:30:00+01:00[Europe/Berlin]");
        assert_eq!(next("0 9 13 * FRI", "2026-01-01T00:00:00Z"), "2026-01-02T09:00:00+01:00[Europe/Berlin]");
    }

    #[test]
    fn across_the_2026_changes_a_job_runs_once() {
        // 02:30 does not exist on 29 March: it runs when the clocks skip to 03:00, once.
        assert_eq!(next("30 2 * * *", "2026-03-28T02:00:00Z"), "2026-03-29T03:00:00+02:00[Europe/Berlin]");
        assert_eq!(next("30 2 * * *", "2026-03-29T01:00:00Z"), "2026-03-30T02:30:00+02:00[Europe/Berlin]");
        assert_eq!(next("0,30 2 * * *", "2026-03-29T00:59:00Z"), "2026-03-29T03:00:00+02:00[Europe/Berlin]");
        assert_eq!(next("0,30 2 * * *", "2026-03-29T01:00:00Z"), "2026-03-30T02:00:00+02:00[Europe/Berlin]");
        // 02:30 happens twice on 25 October: it runs in the first pass only.
        assert_eq!(next("30 2 * * *", "2026-10-24T12:00:00Z"), "2026-10-25T02:30:00+02:00[Europe/Berlin]");
        assert_eq!(next("30 2 * * *", "2026-10-25T00:30:00Z"), "2026-10-26T02:30:00+01:00[Europe/Berlin]");
        // A daily 08:30 stays 08:30 local on both sides.
        assert_eq!(next("30 8 * * *", "2026-03-28T12:00:00Z"), "2026-03-29T08:30:00+02:00[Europe/Berlin]");
        assert_eq!(next("30 8 * * *", "2026-10-24T12:00:00Z"), "2026-10-25T08:30:00+01:00[Europe/Berlin]");
    }
}
