//! `agent.time.open(hours [, at])`: business hours, weekly ranges of wall-clock time in a zone,
//! less closed dates and holiday calendars.
//!
//! ```lua
//! local hours = {
//!   zone = "Europe/Berlin",                           -- default: scripts.time_zone
//!   week = {"MON-FRI 08:30-12:00", "MON-FRI 13:00-17:30", "SAT 09:00-12:00"},
//!   closed = {"2026-12-24", "2026-12-31"},            -- whole local days
//!   calendar = "holidays",                            -- [scripts.calendars] holidays = "….ics"
//! }
//! local open, change = agent.time.open(hours)          -- now; or agent.time.open(hours, ms)
//! ```
//! `change` is when the answer next changes (epoch ms; nil if not within a year).

use super::api_time::zone_arg;
use super::calendar::{Calendar, Closed};
use super::cron::weekdays;
use super::ctx::ScriptCtx;
use super::zone;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use mlua::{Lua, Table, Value};
use std::sync::Arc;

const WHAT: &str = "agent.time.open(hours [, at])";

/// One weekly range: on `days` (bits 0–6, 0 = Sunday), from `from` to `to` minutes of the day.
struct Range {
    days: u8,
    from: u16,
    to: u16,
}

/// What a `hours` table says.
struct Hours {
    tz: TimeZone,
    week: Vec<Range>,
    closed: Vec<Closed>,
    calendars: Vec<Arc<Calendar>>,
}

impl Hours {
    fn open(&self, ms: i64) -> bool {
        let local = self.tz.to_datetime(zone::timestamp(ms));
        if self.closed.iter().chain(self.calendars.iter().flat_map(|c| c.closed.iter())).any(|c| c.covers(ms, local)) {
            return false;
        }
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let day = local.weekday().to_sunday_zero_offset();
        self.week.iter().any(|r| r.days & (1 << day) != 0 && (r.from..r.to).contains(&minute))
    }

    /// The instants on `date` where the answer may change: the day's start, each range's ends,
    /// and each dated closing's ends.
    fn edges(&self, date: Date, out: &mut Vec<i64>) {
        out.push(zone::instant(&self.tz, date.to_datetime(Time::midnight())).as_millisecond());
        let at = |minutes: u16| {
            let dt = if minutes >= 24 * 60 {
                date.tomorrow().unwrap_or(date).to_datetime(Time::midnight())
            } else {
                date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0)
            };
            zone::instant(&self.tz, dt).as_millisecond()
        };
        for r in &self.week {
            out.push(at(r.from));
            out.push(at(r.to));
        }
        for c in self.closed.iter().chain(self.calendars.iter().flat_map(|c| c.closed.iter())) {
            match c {
                Closed::Instants { from, until } => out.extend([*from, *until]),
                Closed::Floating { from, until } => out.extend([from, until].map(|t| zone::instant(&self.tz, *t).as_millisecond())),
                Closed::Days { .. } => {}
            }
        }
    }

    /// When `open` next changes after `ms` (within a year).
    fn next_change(&self, ms: i64) -> Option<i64> {
        let now = self.open(ms);
        let mut day = self.tz.to_datetime(zone::timestamp(ms)).date();
        let mut edges = Vec::new();
        for _ in 0..367 {
            edges.clear();
            self.edges(day, &mut edges);
            let next_day = day.tomorrow().ok()?;
            // (Dated closings are edges of every day: only this day's count now.)
            let end = zone::instant(&self.tz, next_day.to_datetime(Time::midnight())).as_millisecond();
            edges.sort_unstable();
            if let Some(t) = edges.iter().copied().filter(|t| *t > ms && *t <= end).find(|t| self.open(*t) != now) {
                return Some(t);
            }
            day = next_day;
        }
        None
    }
}

fn err(message: String) -> mlua::Error {
    mlua::Error::runtime(format!("{WHAT}: {message}"))
}

/// "HH:MM" as minutes of the day; "24:00" is the day's end.
fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':').filter(|(h, m)| (1..=2).contains(&h.len()) && m.len() == 2)?;
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// "MON-FRI 08:30-17:30".
fn range(text: &str) -> Result<Range, String> {
    let usage = || format!("week entry {text:?}: expected days and a time range, such as \"MON-FRI 08:30-17:30\"");
    let (days, times) = text.trim().split_once(' ').ok_or_else(usage)?;
    let (from, to) = times.trim().split_once('-').ok_or_else(usage)?;
    let (from, to) = (minutes(from.trim()).ok_or_else(usage)?, minutes(to.trim()).ok_or_else(usage)?);
    if from >= to {
        return Err(format!(
            "week entry {text:?}: the range ends before it starts (split one across midnight in two: \"FRI 22:00-24:00\", \"SAT 00:00-06:00\")"
        ));
    }
    Ok(Range { days: weekdays(days.trim()).map_err(|e| format!("week entry {text:?}: {e}"))?, from, to })
}

/// A list of strings, or one string.
fn strings(v: Value, key: &str) -> mlua::Result<Vec<String>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.to_str()?.to_string()]),
        Value::Table(t) => t
            .sequence_values::<Value>()
            .map(|v| match v? {
                Value::String(s) => Ok(s.to_str()?.to_string()),
                other => Err(err(format!("hours.{key}: expected strings, got a {}", other.type_name()))),
            })
            .collect(),
        other => Err(err(format!("hours.{key}: expected a list of strings, got {}", other.type_name()))),
    }
}

/// Weekly ranges one `hours` table may hold.
const MAX_WEEK: usize = 100;
/// Closed dates one `hours` table may list.
const MAX_CLOSED: usize = 1000;

fn hours(t: &Table, ctx: &ScriptCtx) -> mlua::Result<Hours> {
    let settings = ctx.env.settings();
    let tz = zone_arg(&t.get::<Value>("zone")?, WHAT, &settings.time_zone)?;
    let week_text = strings(t.get("week")?, "week")?;
    let closed_text = strings(t.get("closed")?, "closed")?;
    // Bounded: the answer's next change walks a year of days over every entry, in Rust, where
    // no instruction limit reaches.
    if week_text.len() > MAX_WEEK || closed_text.len() > MAX_CLOSED {
        return Err(err(format!("hours: at most {MAX_WEEK} week entries and {MAX_CLOSED} closed dates (a holiday calendar holds more)")));
    }
    let week = week_text.iter().map(|r| range(r)).collect::<Result<Vec<_>, _>>().map_err(err)?;
    let mut closed = Vec::new();
    for d in closed_text {
        let from: Date = d.parse().map_err(|_| err(format!("hours.closed: {d:?} is not a date (YYYY-MM-DD)")))?;
        closed.push(Closed::Days { from, until: from.tomorrow().map_err(|e| err(e.to_string()))? });
    }
    let mut calendars = Vec::new();
    for name in strings(t.get("calendar")?, "calendar")? {
        match settings.calendars.get(&name) {
            Some(c) => calendars.push(c.clone()),
            None => return Err(err(format!("hours.calendar: no calendar {name:?} in [scripts.calendars]"))),
        }
    }
    Ok(Hours { tz, week, closed, calendars })
}

/// Installs `agent.time.open` in `agent.time` (installed before it).
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let time: Table = agent.get("time")?;
    let ctx = ctx.clone();
    time.set(
        "open",
        lua.create_function(move |_, (t, at): (Table, Option<f64>)| {
            let h = hours(&t, &ctx)?;
            let at = match at {
                Some(ms) if ms.is_finite() => ms.floor() as i64,
                Some(ms) => return Err(err(format!("at must be epoch ms, got {ms}"))),
                None => ctx.env.clock.now_ms(),
            };
            Ok((h.open(at), h.next_change(at)))
        })?,
    )?;
    Ok(())
}
