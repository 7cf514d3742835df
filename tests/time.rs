//! `agent.time`, `agent.cron` and business hours on the test clock (docs/SCRIPTING.md, "Time"),
//! through `ucwa-agent test`'s runner: each case is a `*_test.lua` file written here.

use std::time::Duration;
use ucwa_agent::script::{Limits, ScriptSettings};
use ucwa_agent::tools::lua_test::{run_file_bounded, FileResult};

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
