//! `agent.time`: local time in IANA time zones, shaped like Lua's `os.date`/`os.time`.
//!
//! ```lua
//! local z = agent.time.zone("Europe/Berlin")   -- agent.time.zone(): [scripts] time_zone
//! local t = z:date()                            -- os.date("*t") fields + offset, for agent.now()
//! local ms = z:time{year = 2026, month = 3, day = 29, hour = 2, min = 30}   -- epoch ms
//! ```
//! Schedules (`agent.cron`, `agent.at`) are in `api_cron.rs`; business hours in `hours.rs`.

use super::ctx::ScriptCtx;
use super::env::Clock;
use super::zone;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use mlua::{Lua, Table, UserData, UserDataFields, UserDataMethods, Value};

/// A zone as scripts hold it (`agent.time.zone(name)`).
#[derive(Clone)]
pub(crate) struct Zone {
    pub tz: TimeZone,
    /// The script's clock, for `z:date()` without an argument.
    clock: Clock,
}

impl UserData for Zone {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("name", |_, z| Ok(zone::name(&z.tz)));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("date", |lua, z, ms: Option<f64>| {
            let ms = match ms {
                Some(ms) if ms.is_finite() => ms.floor() as i64,
                Some(ms) => return Err(mlua::Error::runtime(format!("z:date([ms]): ms must be a number of milliseconds, got {ms}"))),
                None => z.clock.now_ms(),
            };
            date_table(lua, &z.tz, ms)
        });
        methods.add_method("time", |_, z, t: Table| Ok(zone::instant(&z.tz, civil_of(&t)?).as_millisecond()));
        methods.add_meta_method("__tostring", |_, z, ()| Ok(format!("zone {}", zone::name(&z.tz))));
    }
}

/// `os.date("*t")`'s fields for `ms` in `tz`, plus `offset` (seconds east of UTC).
fn date_table(lua: &Lua, tz: &TimeZone, ms: i64) -> mlua::Result<Table> {
    let ts = zone::timestamp(ms);
    let info = tz.to_offset_info(ts);
    let dt = info.offset().to_datetime(ts);
    let t = lua.create_table()?;
    t.set("year", dt.year())?;
    t.set("month", dt.month())?;
    t.set("day", dt.day())?;
    t.set("hour", dt.hour())?;
    t.set("min", dt.minute())?;
    t.set("sec", dt.second())?;
    t.set("wday", dt.weekday().to_sunday_one_offset())?;
    t.set("yday", dt.day_of_year())?;
    t.set("isdst", info.dst().is_dst())?;
    t.set("offset", info.offset().seconds())?;
    Ok(t)
}

/// The wall-clock time of an `os.time`-shaped table: `year`, `month`, `day` required; `hour`
/// (default 12, as `os.time`), `min`, `sec` (default 0). Fields out of range carry over as in
/// `os.time` (`day = 32` is the next month's 1st).
fn civil_of(t: &Table) -> mlua::Result<DateTime> {
    const USAGE: &str = "z:time{year, month, day [, hour, min, sec]}";
    let field = |k: &str, default: Option<i64>| -> mlua::Result<i64> {
        match t.get::<Value>(k)? {
            Value::Integer(i) => Ok(i),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e12 => Ok(n as i64),
            Value::Nil => default.ok_or_else(|| mlua::Error::runtime(format!("{USAGE}: field {k} missing"))),
            other => Err(mlua::Error::runtime(format!("{USAGE}: field {k} must be an integer, got {}", other.type_name()))),
        }
    };
    let (year, month, day) = (field("year", None)?, field("month", None)?, field("day", None)?);
    let (hour, min, sec) = (field("hour", Some(12))?, field("min", Some(0))?, field("sec", Some(0))?);
    let out_of_range = || mlua::Error::runtime(format!("{USAGE}: out of range (year {year})"));
    let year = i16::try_from(year).ok().filter(|y| (1..=9998).contains(y)).ok_or_else(out_of_range)?;
    let base = jiff::civil::date(year, 1, 1).at(0, 0, 0, 0);
    let span = jiff::Span::new()
        .try_months(month - 1)
        .and_then(|s| s.try_days(day - 1))
        .and_then(|s| s.try_hours(hour))
        .and_then(|s| s.try_minutes(min))
        .and_then(|s| s.try_seconds(sec))
        .map_err(|_| out_of_range())?;
    // jiff adds the largest units first: `month = 14` is February of the next year, then the days.
    base.checked_add(span).map_err(|_| out_of_range())
}

/// The zone a script named, or the default one: a name, a zone object, or nil.
pub(crate) fn zone_arg(v: &Value, what: &str, default: &TimeZone) -> mlua::Result<TimeZone> {
    match v {
        Value::Nil => Ok(default.clone()),
        Value::String(s) => zone::by_name(&s.to_str()?).map_err(|e| mlua::Error::runtime(format!("{what}: {e}"))),
        Value::UserData(u) => Ok(u.borrow::<Zone>()?.tz.clone()),
        other => Err(mlua::Error::runtime(format!("{what}: zone must be an IANA name or agent.time.zone(…), got {}", other.type_name()))),
    }
}

/// Installs `agent.time`.
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let time = lua.create_table()?;
    let default = ctx.env.settings().time_zone.clone();
    let clock = ctx.env.clock.clone();
    time.set(
        "zone",
        lua.create_function(move |_, name: Value| {
            let tz = zone_arg(&name, "agent.time.zone(name)", &default)?;
            Ok(Zone { tz, clock: clock.clone() })
        })?,
    )?;
    agent.set("time", time)?;
    Ok(())
}
