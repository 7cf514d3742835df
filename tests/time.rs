//! `agent.time`, `agent.cron` and business hours on the test clock (docs/SCRIPTING.md, "Time"),
//! through `ucwa-agent test`'s runner: each case is a `*_test.lua` file written here.

mod common;

use common::{messages_of, write};
use std::sync::Arc;
use std::time::Duration;
use ucwa_agent::script::{Clock, Limits, ScriptEnv, ScriptHost, ScriptSettings};
use ucwa_agent::store::Store;
use ucwa_agent::tools::lua_test::{run_file_bounded, FileResult};
use ucwa_agent::ucwa::{batch, Event, Origin};

/// Runs `test` (a `*_test.lua` body) with `files` beside it; panics with every failure.
fn run(test: &str, files: &[(&str, &str)]) -> FileResult {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let file = dir.path().join("time_test.lua");
    std::fs::write(&file, test).unwrap();
    let r = run_file_bounded(&file, ScriptSettings::new(Limits::default()), Duration::from_secs(60));
    let failures: Vec<String> = r.cases.iter().filter_map(|c| c.failure.as_ref().map(|f| format!("{}: {f}", c.name))).chain(r.error.clone()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    r
}

#[test]
fn zones_give_local_dates_and_instants_on_both_sides_of_the_2026_changes() {
    run(
        r#"
local z = agent.time.zone("Europe/Berlin")
test.case("name and unknown names", function()
  test.eq(z.name, "Europe/Berlin")
  test.fails(function() agent.time.zone("Europe/Berlinn") end, '"Europe/Berlinn"')
  test.eq(agent.time.zone().name, agent.time.zone(nil).name)
end)
test.case("date for epoch ms and for now", function()
  -- 2026-03-29 00:59:59Z is 01:59:59 CET; one second later it is 03:00 CEST.
  local before = z:date(1774745999000)
  test.eq({before.hour, before.min, before.sec, before.offset, before.isdst}, {1, 59, 59, 3600, false})
  local after = z:date(1774746000000)
  test.eq({after.year, after.month, after.day, after.hour, after.offset, after.isdst, after.wday, after.yday}, {2026, 3, 29, 3, 7200, true, 1, 88})
  test.clock(1774746000000)
  test.eq(z:date().hour, 3)
end)
test.case("time: plain, skipped and repeated", function()
  test.eq(z:time{year = 2026, month = 7, day = 1, hour = 9, min = 0}, 1782889200000)
  -- skipped: 02:30 on 29 March is the instant the clocks skip to, 03:00 CEST
  test.eq(z:time{year = 2026, month = 3, day = 29, hour = 2, min = 30}, 1774746000000)
  -- repeated: 02:30 on 25 October is the earlier instant, 02:30 CEST (00:30Z)
  test.eq(z:time{year = 2026, month = 10, day = 25, hour = 2, min = 30}, 1792888200000)
  -- hour defaults to 12 as in os.time; fields carry over as in os.time
  test.eq(z:time{year = 2026, month = 1, day = 32}, z:time{year = 2026, month = 2, day = 1, hour = 12})
  test.fails(function() z:time{year = 2026, month = 1} end, "field day missing")
end)
"#,
        &[],
    );
}

#[test]
fn a_cron_job_runs_once_on_each_2026_dst_day_at_its_local_time() {
    run(
        r#"
local z = agent.time.zone("Europe/Berlin")
local runs = {}
local function stamp() local t = z:date(); runs[#runs + 1] = string.format("%02d-%02d %02d:%02d", t.month, t.day, t.hour, t.min) end
test.case("spring forward: 02:30 runs once, at 03:00 CEST; 08:30 stays 08:30", function()
  test.clock(z:time{year = 2026, month = 3, day = 28, hour = 12})
  runs = {}
  local a = agent.cron("30 2 * * *", {zone = "Europe/Berlin"}, stamp)
  local b = agent.cron("30 8 * * *", {zone = z}, stamp)
  test.eq(a:next(), z:time{year = 2026, month = 3, day = 29, hour = 3, min = 0})
  test.advance(3 * 24 * 3600000)
  test.eq(runs, {"03-29 03:00", "03-29 08:30", "03-30 02:30", "03-30 08:30", "03-31 02:30", "03-31 08:30"})
  test.ok(a:cancel()); test.ok(b:cancel()); test.ok(not a:cancel())
end)
test.case("fall back: 02:30 runs once, in the first pass", function()
  test.clock(z:time{year = 2026, month = 10, day = 24, hour = 12})
  runs = {}
  local a = agent.cron("30 2 * * *", {zone = "Europe/Berlin"}, stamp)
  test.advance(2 * 24 * 3600000)
  test.eq(runs, {"10-25 02:30", "10-26 02:30"})
  test.eq(z:date(a:next()).offset, 3600)
  a:cancel()
end)
test.case("agent.at with days, and a cancelled job runs no more", function()
  test.clock(z:time{year = 2026, month = 1, day = 2, hour = 0})   -- a Friday
  runs = {}
  local j = agent.at("08:30", {days = {"MON-WED", "FRI"}, zone = z}, stamp)
  test.advance(7 * 24 * 3600000)
  test.eq(runs, {"01-02 08:30", "01-05 08:30", "01-06 08:30", "01-07 08:30"})
  j:cancel()
  test.advance(7 * 24 * 3600000)
  test.eq(#runs, 4)
end)
test.case("a failing job still runs the next time", function()
  test.clock(z:time{year = 2026, month = 1, day = 1, hour = 0})
  local n = 0
  local j = agent.cron("0 * * * *", function() n = n + 1; error("boom") end)
  test.fails(function() test.advance(3600000) end, "boom")
  test.fails(function() test.advance(3600000) end, "boom")
  test.eq(n, 2)
  j:cancel()
end)
test.case("a run more than a year away waits through the wake-ups on the way", function()
  test.clock(z:time{year = 2026, month = 3, day = 1, hour = 0})
  local ran = 0
  local j = agent.cron("0 0 29 2 *", {zone = z}, function() ran = ran + 1 end)
  local leap = z:time{year = 2028, month = 2, day = 29, hour = 0}
  test.eq(j:next(), leap)
  test.advance(400 * 24 * 3600000)
  test.eq({j:next(), ran}, {leap, 0})
  test.advance(leap - agent.now())
  test.eq(ran, 1)
  j:cancel()
end)
test.case("bad expressions and options say what is wrong", function()
  test.fails(function() agent.cron("30 8 * *", print) end, "5 fields")
  test.fails(function() agent.cron("30 8 * * FUN", print) end, "day of week")
  test.fails(function() agent.cron("0 0 30 2 *", print) end, "never matches")
  test.fails(function() agent.cron("0 0 * * *", {zone = "Nowhere/Land"}, print) end, '"Nowhere/Land"')
  test.fails(function() agent.at("8:3", print) end, "HH:MM")
  test.fails(function() agent.at("25:00", print) end, "HH:MM")
end)
"#,
        &[],
    );
}

#[test]
fn a_run_missed_while_the_agent_was_down_runs_once_at_start_only_with_catch_up() {
    // The agent stopped after the run of 1 January 08:30 and starts again on 3 January at
    // 10:00: agent.state._cron holds the last run, as the earlier start left it.
    run(
        r#"
local z = agent.time.zone("Europe/Berlin")
test.clock(z:time{year = 2026, month = 1, day = 3, hour = 10})
agent.state._cron = { summary = z:time{year = 2026, month = 1, day = 1, hour = 8, min = 30} }
local caught, plain = 0, 0
agent.cron("30 8 * * *", {zone = z, catch_up = true, name = "summary"}, function() caught = caught + 1 end)
agent.cron("30 8 * * *", {zone = z}, function() plain = plain + 1 end)
local fresh = agent.cron("0 9 * * *", {zone = z, catch_up = true}, function() end)
test.case("catch_up runs once at start; the default does not", function()
  test.advance(0)
  test.eq({caught, plain}, {1, 0})
  test.eq(agent.state._cron.summary, z:time{year = 2026, month = 1, day = 3, hour = 10})
  test.eq(agent.state._cron["0 9 * * * Europe/Berlin"], z:time{year = 2026, month = 1, day = 3, hour = 10}, "a new job notes its start")
  test.advance(23 * 3600000)
  test.eq({caught, plain}, {2, 1})
  test.eq(agent.state._cron.summary, z:time{year = 2026, month = 1, day = 4, hour = 8, min = 30})
end)
"#,
        &[],
    );
}

/// An event for the host (on a manual clock the runner looks at its timers between events).
fn event(seq: u64) -> Vec<Event> {
    let body = std::fs::read(format!("{}/tests/fixtures/events/audioVideoSession-added.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let mut ev = batch::parse(&body, &origin).unwrap().events.remove(0);
    ev.seq = seq;
    vec![ev]
}

/// 2026-01-01 08:00 in Berlin (07:00Z).
const JAN_1_0800: i64 = 1_767_250_800_000;
const DAY: i64 = 24 * 3600 * 1000;

fn host(dir: &std::path::Path, store: Arc<Store>, clock: &Clock) -> ScriptHost {
    let mut env = ScriptEnv::new(ScriptSettings::new(Limits::default()), store);
    env.clock = clock.clone();
    ScriptHost::with_env(dir.to_path_buf(), env)
}

#[tokio::test]
async fn cron_jobs_belong_to_the_version_and_a_missed_run_follows_the_policy_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let clock = Clock::manual(JAN_1_0800);
    let script = |v: u32| {
        format!(
            r#"
agent.cron("30 8 * * *", {{zone = "Europe/Berlin", catch_up = true, name = "daily"}}, function() agent.log.info("caught up v{v}") end)
agent.cron("30 8 * * *", {{zone = "Europe/Berlin"}}, function() agent.log.info("plain v{v}") end)
agent.on("*", function(e) agent.log.info("event " .. e.seq) end)
"#
        )
    };
    write(dir.path(), "daily.lua", &script(1));
    let store = Arc::new(Store::open(db.path()).unwrap());
    let h = host(dir.path(), store.clone(), &clock);
    let mut out = h.subscribe();
    h.load_dir().await.unwrap();
    // A reload replaces the jobs: at 08:30 only version 2's run, once each.
    write(dir.path(), "daily.lua", &script(2));
    h.load_file(&dir.path().join("daily.lua")).await.unwrap();
    // The runner swaps versions between two messages: once it has, version 1's jobs are gone
    // (before, the clock could reach 08:30 while version 1 still ran).
    h.barrier().await;
    clock.advance(30 * 60 * 1000);
    h.dispatch(event(1));
    let mut lines = messages_of(&mut out, "daily", 3).await;
    lines.sort();
    assert_eq!(lines, ["caught up v2", "event 1", "plain v2"]);
    h.shutdown(Duration::from_secs(5)).await;
    drop(h);
    drop(store);

    // Down for two days; up again on 3 January at 10:00: the catch-up job runs once, the
    // plain one waits for 4 January.
    clock.advance(2 * DAY + 90 * 60 * 1000);
    let store = Arc::new(Store::open(db.path()).unwrap());
    let h = host(dir.path(), store, &clock);
    let mut out = h.subscribe();
    h.load_dir().await.unwrap();
    h.dispatch(event(2));
    let mut lines = messages_of(&mut out, "daily", 2).await;
    lines.sort();
    assert_eq!(lines, ["caught up v2", "event 2"]);
    h.dispatch(event(3));
    assert_eq!(messages_of(&mut out, "daily", 1).await, ["event 3"], "a missed run is made up once");
    h.shutdown(Duration::from_secs(5)).await;
}

const HOLIDAYS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:Good Friday\r\nDTSTART;VALUE=DATE:20260403\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:2\r\nSUMMARY:Staff meeting\r\nDTSTART;TZID=Europe/Berlin:20260401T140000\r\nDTEND;TZID=Europe/Berlin:20260401T160000\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

#[test]
fn berlin_office_hours_are_right_on_both_sides_of_both_changes_and_holidays_close() {
    run(
        r#"
test.calendar("holidays", "holidays.ics")
local z = agent.time.zone("Europe/Berlin")
local hours = { zone = "Europe/Berlin", week = {"MON-FRI 08:30-17:30"}, closed = {"2026-10-26"}, calendar = "holidays" }
local function at(y, mo, d, h, mi) return z:time{year = y, month = mo, day = d, hour = h, min = mi or 0} end
test.case("the Friday before and the Monday after spring forward (27 and 30 March)", function()
  test.eq({agent.time.open(hours, at(2026, 3, 27, 8, 29))}, {false, at(2026, 3, 27, 8, 30)})
  test.eq(agent.time.open(hours, at(2026, 3, 27, 8, 30)), true)
  test.eq(agent.time.open(hours, at(2026, 3, 27, 17, 29)), true)
  local open, change = agent.time.open(hours, at(2026, 3, 27, 17, 30))
  test.eq({open, change}, {false, at(2026, 3, 30, 8, 30)}, "closed over the weekend; opens Monday 08:30 CEST")
  test.eq(z:date(change).offset, 7200)
  test.eq(agent.time.open(hours, at(2026, 3, 30, 8, 30)), true)
  test.eq(agent.time.open(hours, at(2026, 3, 30, 8, 29)), false)
  -- 07:00Z was 08:00 CET on Friday (closed) and is 09:00 CEST on Monday (open): no fixed offset.
  test.eq(agent.time.open(hours, 1774594800000), false)
  test.eq(agent.time.open(hours, 1774854000000), true)
end)
test.case("the Friday before and the Tuesday after fall back (23 and 27 October)", function()
  test.eq(agent.time.open(hours, at(2026, 10, 23, 17, 29)), true)
  test.eq(agent.time.open(hours, at(2026, 10, 23, 17, 30)), false)
  test.eq(agent.time.open(hours, at(2026, 10, 27, 8, 30)), true)
  test.eq(agent.time.open(hours, at(2026, 10, 27, 8, 29)), false)
  test.eq(z:date(at(2026, 10, 27, 8, 30)).offset, 3600)
end)
test.case("a holiday from the ICS file, a dated event in it, and a closed date close the office", function()
  test.eq({agent.time.open(hours, at(2026, 4, 3, 10))}, {false, at(2026, 4, 6, 8, 30)}, "Good Friday, then the weekend")
  test.eq({agent.time.open(hours, at(2026, 4, 1, 13))}, {true, at(2026, 4, 1, 14)})
  test.eq({agent.time.open(hours, at(2026, 4, 1, 15))}, {false, at(2026, 4, 1, 16)})
  test.eq(agent.time.open(hours, at(2026, 10, 26, 10)), false, "closed = {\"2026-10-26\"}")
end)
test.case("now is the script's clock; bad hours say what is wrong", function()
  test.clock(at(2026, 4, 2, 9))
  test.eq(agent.time.open(hours), true)
  test.fails(function() agent.time.open({week = {"MON-FRI 17:30-08:30"}}) end, "ends before it starts")
  test.fails(function() agent.time.open({week = {"MOX 08:00-09:00"}}) end, "MOX")
  test.fails(function() agent.time.open({calendar = "nope"}) end, "no calendar \"nope\"")
  test.fails(function() agent.time.open({closed = {"26.10.2026"}}) end, "not a date")
end)
"#,
        &[("holidays.ics", HOLIDAYS)],
    );
}
