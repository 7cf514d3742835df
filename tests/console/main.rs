//! The web console (`/` on `metrics.listen`) as a person sees it, in headless Chromium, against
//! the agent binary and its embedded simulator: the scripts, a failing handler's error with its
//! `file:line`, an event's timeline, the live tail moving; and its JSON API (paging, the admin
//! token). The browser test needs Chromium (`apt-get install -y chromium`); with
//! `UCWA_SKIP_BROWSER_TESTS=1` it is skipped. `UCWA_CONSOLE_SCREENSHOTS=DIR` also saves the
//! screenshots kept in `docs/` (`tools/screenshots.sh`).

mod cdp;
#[path = "../common/mod.rs"]
mod common;

use common::*;
use std::path::Path;

const TOKEN_ENV: &str = "UCWA_AGENT_CONSOLE_TEST_TOKEN";
const TOKEN: &str = "console-test-admin-token-0123456789";

const GREETER: &str = r#"agent.on("audioVideoSession", "added", function(e)
  agent.log.info("call added")
  local r = agent.ucwa.get(agent.ucwa.application())
  agent.state.calls = (agent.state.calls or 0) + 1
end)
"#;

const BROKEN: &str = "agent.on(\"audioVideoSession\", \"added\", function(e)\n  local t = nil\n  return t.field\nend)\n";

/// The agent binary against its embedded simulator (calls every half second), its console on a
/// loopback port.
struct Agent {
    _process: Guarded,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn start(accounts: &[&str], extra: &str) -> Agent {
    start_on(accounts, extra, "127.0.0.1:0").await
}

async fn start_on(accounts: &[&str], extra: &str, listen: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    write(&scripts, "greeter.lua", GREETER);
    write(&scripts, "broken.lua", BROKEN);
    let accounts: String = accounts.iter().map(|a| format!("[[account]]\nname = \"{a}\"\n")).collect();
    let config = dir.path().join("agent.toml");
    write(
        dir.path(),
        "agent.toml",
        &format!(
            "[server]\ndiscover = \"embedded\"\n[scripts]\ndir = \"scripts\"\nmax_consecutive_failures = 3\n[state]\ndir = \"state\"\n\
             [simulator]\ncalls_per_minute = 120\nring_secs = 0.5\ncall_duration_secs = 1\n[metrics]\nlisten = \"{listen}\"\n{extra}\n{accounts}"
        ),
    );
    let log = dir.path().join("agent.log");
    let process = agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info"), (TOKEN_ENV, TOKEN)])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn_guarded();
    let addr = listening(&log).await;
    Agent { _process: process, addr, _dir: dir }
}

/// Where the agent's endpoint listens, from its log.
async fn listening(log: &Path) -> String {
    let key = "endpoints listening addr=";
    file_contains(log, key).await;
    let text = std::fs::read_to_string(log).unwrap();
    let at = text.find(key).unwrap() + key.len();
    text[at..].split_whitespace().next().unwrap().to_string()
}

async fn get(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Where to save screenshots, if asked.
fn screenshots() -> Option<std::path::PathBuf> {
    std::env::var_os("UCWA_CONSOLE_SCREENSHOTS").map(std::path::PathBuf::from)
}

#[tokio::test]
async fn the_console_shows_scripts_an_error_with_its_line_a_timeline_and_the_live_tail() {
    if !cdp::available() {
        return;
    }
    let agent = start(&[], "").await;
    let mut b = cdp::Browser::start(1400, 1000).await;
    b.navigate(&format!("http://{}/", agent.addr)).await;

    // The scripts, and the failing one's error with where it was.
    b.wait_text("both scripts listed", "#scripts", |t| t.contains("greeter") && t.contains("broken")).await;
    let scripts = b.wait_text("the failing script's error", "#scripts", |t| t.contains("broken.lua:3")).await;
    assert!(scripts.contains("attempt to index a nil value"), "{scripts}");
    let accounts = b.text("#accounts").await;
    assert!(accounts.contains("default") && accounts.contains("polling"), "{accounts}");

    // An event where the broken script failed: its timeline shows what each script did.
    // Both scripts' runs of it committed: the timeline is drawn once, at the click, and the
    // greeter (which makes a request) may commit its trace after the broken script's.
    b.wait_text("an event handled by both scripts", "#events", |t| {
        t.lines().any(|l| l.contains("audioVideoSession added") && l.contains("broken: error") && l.contains("greeter: "))
    })
    .await;
    b.eval("[...document.querySelectorAll('#events li')].find(li => li.innerText.includes('broken: error') && li.innerText.includes('greeter: ')).click()")
        .await;
    let timeline = b.wait_text("the event's timeline", "#timeline", |t| t.contains("greeter v1") && t.contains("broken v1")).await;
    assert!(timeline.contains("handler (subscription 1): error") && timeline.contains("at broken.lua:3"), "{timeline}");
    assert!(timeline.contains("log info: call added") && timeline.contains("ucwa GET /ucwa/oauth/v1/applications/"), "{timeline}");
    assert!(timeline.contains("agent.state: set calls"), "{timeline}");
    if let Some(dir) = screenshots() {
        std::fs::write(dir.join("console-overview.png"), b.screenshot().await).unwrap();
    }
    // An event clicked before every script's run of it was committed: its timeline is drawn
    // again when the list brings the later run (here the page is made to have clicked it with
    // the broken script's run only, as it would have had a moment earlier).
    b.eval("showEvent({ ...S.event, traces: S.event.traces.filter((t) => t.script !== 'greeter') }, null)").await;
    b.wait_text("the timeline with one run", "#timeline", |t| t.contains("broken v1") && !t.contains("greeter v1")).await;
    b.eval("loadEvents()").await;
    b.wait_text("the later run drawn", "#timeline", |t| t.contains("greeter v1") && t.contains("broken v1")).await;

    // Run again as a dry run: what each script would send, nothing sent.
    b.eval("document.querySelector('#dryrun button').click()").await;
    let dry = b.wait_text("the dry run's result", "#dryrun", |t| t.contains("nothing was sent") && t.contains("greeter v1")).await;
    assert!(dry.contains("would send ucwa GET /ucwa/oauth/v1/applications/") && dry.contains("info: call added"), "{dry}");
    assert!(dry.contains("broken v1") && dry.contains("broken.lua:3: attempt to index a nil value"), "{dry}");
    if let Some(dir) = screenshots() {
        std::fs::write(dir.join("console-dry-run.png"), b.screenshot().await).unwrap();
    }

    // The live tail moves, and new events appear, without a reload of the page.
    b.eval("window.notReloaded = true").await;
    b.wait_text("the tail connected", "#tail-state", |t| t == "live").await;
    let first = b.wait_text("an event in the tail", "#tail", |t| t.contains("event #")).await;
    let newest_event = |t: &str| t.lines().find(|l| l.contains("event #")).map(String::from);
    let before = newest_event(&first);
    b.wait_text("a newer event in the tail", "#tail", |t| newest_event(t) != before).await;
    let listed = b.text("#events").await;
    b.wait_text("a newer event listed", "#events", |t| t.lines().next() != listed.lines().next()).await;
    assert_eq!(b.eval("window.notReloaded === true").await, true, "the page was not reloaded");
}

#[tokio::test]
async fn actions_need_the_admin_token_in_a_header() {
    let agent = start(&[], &format!("admin_token_env = \"{TOKEN_ENV}\"")).await;
    let base = format!("http://{}", agent.addr);
    let page = get(&format!("{base}/api/accounts")).await;
    assert_eq!(page["admin"], true, "{page}");
    // The broken script pauses after 3 failures in a row.
    let paused = eventually_json(&format!("{base}/api/scripts?account=default"), |s| s["scripts"][0]["state"] == "paused").await;
    assert_eq!(paused["scripts"][0]["name"], "broken");
    let http = reqwest::Client::new();
    let resume = format!("{base}/api/resume?account=default&script=broken");
    for token in [None, Some("wrong-token-of-the-right-length")] {
        let mut r = http.post(&resume);
        if let Some(t) = token {
            r = r.header("X-Admin-Token", t);
        }
        assert_eq!(r.send().await.unwrap().status(), 403, "token {token:?}");
    }
    // Not as a GET, nor from a cookie.
    assert_eq!(http.get(&resume).header("X-Admin-Token", TOKEN).send().await.unwrap().status(), 405);
    assert_eq!(http.post(&resume).header("Cookie", format!("X-Admin-Token={TOKEN}")).send().await.unwrap().status(), 403);
    let ok = http.post(&resume).header("X-Admin-Token", TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // Resumed, it fails again (the file did not change) and pauses again: it ran meanwhile.
    let before = paused["scripts"][0]["errors"].as_u64().unwrap();
    eventually_json(&format!("{base}/api/scripts?account=default"), |s| s["scripts"][0]["errors"].as_u64().unwrap() > before).await;
    let reload = http.post(format!("{base}/api/reload")).header("X-Admin-Token", TOKEN).send().await.unwrap();
    assert_eq!(reload.status(), 202);
}

#[tokio::test]
async fn a_token_named_but_not_set_stops_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "agent.toml",
        "[server]\ndiscover = \"embedded\"\n[metrics]\nlisten = \"127.0.0.1:0\"\nadmin_token_env = \"UCWA_AGENT_CONSOLE_TEST_UNSET\"\n",
    );
    let out = agent_command(&["run", "--config", dir.path().join("agent.toml").to_str().unwrap()], &[]).stderr(std::process::Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("metrics.admin_token_env") && stderr.contains("UCWA_AGENT_CONSOLE_TEST_UNSET"), "{stderr}");
}

#[tokio::test]
async fn without_a_token_the_console_is_read_only() {
    let agent = start(&[], "").await;
    let base = format!("http://{}", agent.addr);
    assert_eq!(get(&format!("{base}/api/accounts")).await["admin"], false);
    let http = reqwest::Client::new();
    for path in ["/api/reload", "/api/resume?account=default&script=broken"] {
        let r = http.post(format!("{base}{path}")).header("X-Admin-Token", TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("read-only"), "{path}");
    }
}

#[tokio::test]
async fn a_page_of_another_site_can_neither_read_the_console_nor_start_a_dry_run() {
    let agent = start(&[], "").await;
    let base = format!("http://{}", agent.addr);
    let http = reqwest::Client::new();
    let port = agent.addr.rsplit(':').next().unwrap();
    // A name of another site made to resolve to 127.0.0.1 (DNS rebinding): its Host is refused.
    for path in ["/api/events?account=default&limit=1", "/healthz", "/", "/api/traces"] {
        let r = http.get(format!("{base}{path}")).header("Host", format!("attacker.example:{port}")).send().await.unwrap();
        assert_eq!(r.status(), 421, "{path}");
    }
    // This host by its own names is served.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = http.get(format!("{base}/api/accounts")).header("Host", host.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    // A dry run needs the header a cross-site form cannot send (and a cross-site script cannot
    // without a preflight this listener does not grant).
    let events = eventually_json(&format!("{base}/api/events?account=default&limit=5"), |e| e["events"].as_array().is_some_and(|l| !l.is_empty())).await;
    let seq = events["events"][0]["seq"].as_u64().unwrap();
    let dry = format!("{base}/api/dryrun?account=default&seq={seq}");
    let refused = http.post(&dry).header("Origin", "http://attacker.example").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("X-Requested-By"));
    let asked = http.post(&dry).header("X-Requested-By", "ucwa-console").send().await.unwrap();
    assert_ne!(asked.status(), 403);
}

#[tokio::test]
async fn at_most_eight_taps_are_open_at_once_and_a_closed_one_frees_its_slot() {
    let agent = start(&[], "").await;
    // (A tap follows the accounts there are when it opens: wait until the account runs.)
    eventually_json(&format!("http://{}/api/events?account=default&limit=1", agent.addr), |e| e["events"].as_array().is_some_and(|l| !l.is_empty())).await;
    let tap = format!("http://{}/api/tap", agent.addr);
    let http = reqwest::Client::new();
    let mut open = Vec::new();
    for _ in 0..8 {
        let r = http.get(&tap).send().await.unwrap();
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let ninth = http.get(&tap).send().await.unwrap();
    assert_eq!(ninth.status(), 503);
    assert!(ninth.text().await.unwrap().contains("taps are open already"));
    drop(open.pop());
    let mut freed = false;
    let until = std::time::Instant::now() + PATIENCE;
    while !freed && std::time::Instant::now() < until {
        freed = http.get(&tap).send().await.unwrap().status() == 200;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot of a closed tap was not freed");
}

#[tokio::test]
async fn accounts_are_paged_and_filtered_by_the_agent() {
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let agent = start(&names, "").await;
    let base = format!("http://{}", agent.addr);
    // (The endpoint answers while the accounts open.)
    let page = eventually_json(&format!("{base}/api/accounts?per_page=2&page=2"), |p| p["accounts_total"] == 5).await;
    assert_eq!((page["total"].as_u64(), page["pages"].as_u64(), page["page"].as_u64()), (Some(5), Some(3), Some(2)), "{page}");
    let shown: Vec<&str> = page["accounts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(shown, ["carol", "dave"]);
    let found = get(&format!("{base}/api/accounts?q=RO")).await;
    let shown: Vec<&str> = found["accounts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!((shown, found["accounts_total"].as_u64()), (vec!["carol"], Some(5)));
    // An account's scripts and events by its name.
    let scripts = eventually_json(&format!("{base}/api/scripts?account=erin"), |s| s["scripts"].as_array().is_some_and(|l| l.len() == 2)).await;
    assert_eq!(scripts["account"], "erin");
    assert_eq!(reqwest::get(format!("{base}/api/scripts?account=nobody")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_listener_anyone_may_reach_names_no_account_and_quotes_no_error() {
    // (Every address: not trusted, as /healthz.)
    let agent = start_on(&[], "", "0.0.0.0:0").await;
    let base = format!("http://{}", agent.addr.replace("0.0.0.0", "127.0.0.1"));
    let page = eventually_json(&format!("{base}/api/accounts"), |p| p["accounts_total"] == 1).await;
    let account = &page["accounts"][0];
    assert_eq!((account["key"].as_str(), account.get("name")), (Some("#1"), None), "{page}");
    let scripts = eventually_json(&format!("{base}/api/scripts?account=%231"), |s| s["scripts"][0]["last_error"]["at"] == "broken.lua:3").await;
    assert!(scripts["scripts"][0]["last_error"].get("message").is_none(), "where, not what: {scripts}");
    assert_eq!(reqwest::get(format!("{base}/api/scripts?account=default")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_console_pages_and_filters_accounts_and_its_tail_follows_the_one_shown() {
    if !cdp::available() {
        return;
    }
    let agent = start(&["alice", "bob", "carol", "dave", "erin"], "").await;
    let base = format!("http://{}", agent.addr);
    eventually_json(&format!("{base}/api/accounts"), |p| p["accounts_total"] == 5).await;
    let mut b = cdp::Browser::start(1400, 1000).await;
    b.navigate(&format!("{base}/?per_page=2")).await;
    let first = b.wait_text("the first page", "#accounts", |t| t.contains("alice") && t.contains("bob")).await;
    assert!(!first.contains("carol"), "two a page: {first}");
    assert_eq!(b.text("#page").await, "page 1 of 3");
    b.eval("document.getElementById('next').click()").await;
    let second = b.wait_text("the second page", "#accounts", |t| t.contains("carol") && t.contains("dave")).await;
    assert!(!second.contains("alice"), "{second}");
    // Filtered by the agent: `ro` is in carol only.
    b.eval("{ const f = document.getElementById('q'); f.value = 'ro'; f.dispatchEvent(new Event('input')); }").await;
    b.wait_text("the filtered list", "#accounts", |t| t.contains("carol") && !t.contains("dave")).await;
    b.wait_text("the count", "#accounts-count", |t| t == "1 of 5 shown").await;
    // The tail follows the account shown: erin's events only.
    b.eval("{ const f = document.getElementById('q'); f.value = 'erin'; f.dispatchEvent(new Event('input')); }").await;
    b.wait_text("erin listed", "#accounts", |t| t.contains("erin")).await;
    b.eval("document.querySelector('#accounts tbody tr').click()").await;
    b.wait_text("erin's scripts", "#account-name", |t| t == "erin").await;
    let tail = b.wait_text("erin's events in the tail", "#tail", |t| t.lines().filter(|l| l.contains(" event #")).count() >= 3).await;
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().all(|l| l.contains(" erin ")), "only erin's: {tail}");
    if let Some(dir) = screenshots() {
        std::fs::write(dir.join("console-accounts.png"), b.screenshot().await).unwrap();
    }
}

#[tokio::test]
async fn behind_basic_auth_the_console_asks_for_a_user_before_anything() {
    let hash = bcrypt::hash("console-pw", 4).unwrap();
    let agent = start(&[], &format!("basic_auth_users = {{ ops = \"{hash}\" }}\nadmin_token_env = \"{TOKEN_ENV}\"")).await;
    let base = format!("http://{}", agent.addr);
    let http = reqwest::Client::new();
    // (The endpoint answers while the account opens.)
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = http.get(format!("{base}/api/accounts")).basic_auth("ops", Some("console-pw")).send().await.unwrap();
        if r.json::<serde_json::Value>().await.unwrap()["accounts_total"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the account did not open within {PATIENCE:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for path in ["/", "/console.js", "/api/accounts", "/api/scripts?account=default", "/api/events?account=default"] {
        assert_eq!(http.get(format!("{base}{path}")).send().await.unwrap().status(), 401, "{path}");
        let ok = http.get(format!("{base}{path}")).basic_auth("ops", Some("console-pw")).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    // The token alone is not enough: the user first.
    let r = http.post(format!("{base}/api/reload")).header("X-Admin-Token", TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(format!("{base}/api/reload")).basic_auth("ops", Some("console-pw")).header("X-Admin-Token", TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let page = http.get(format!("{base}/")).basic_auth("ops", Some("console-pw")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"), "{csp}");
}

/// GETs `url` until its JSON satisfies `pred` (bounded); that JSON.
async fn eventually_json(url: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = get(url).await;
        if pred(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url}: not as expected within {PATIENCE:?}: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A list of events that answers after another account was picked belongs to the account
/// picked before: it neither replaces the list shown nor redraws the event shown, whose `#seq`
/// the other account's journal may also have (every account numbers its own from 1).
#[tokio::test]
async fn an_answer_for_the_account_left_draws_nothing_over_the_account_picked() {
    if !cdp::available() {
        return;
    }
    let agent = start(&["alice", "bob"], "").await;
    let mut b = cdp::Browser::start(1400, 1000).await;
    b.navigate(&format!("http://{}/", agent.addr)).await;
    b.wait_text("both accounts listed", "#accounts", |t| t.contains("alice") && t.contains("bob")).await;
    b.wait_text("the first account's events", "#events", |t| t.contains("audioVideoSession")).await;
    // The page asks for alice's events; the answer is held (a slow one) while bob is picked,
    // and its scripts renamed `alice-…`, to tell where what is drawn came from.
    b.eval(
        "window.held = []; window.origGetJSON = getJSON; window.holding = S.account; \
         const renamed = (d) => { for (const e of d.events) for (const t of e.traces) t.script = 'alice-' + t.script; return d; }; \
         getJSON = (u) => window.holding && u.startsWith('/api/events') && u.includes('account=' + encodeURIComponent(window.holding)) \
           ? new Promise((ok, fail) => window.held.push(() => window.origGetJSON(u).then(renamed).then(ok, fail))) : window.origGetJSON(u); \
         window.stale = loadEvents(); true",
    )
    .await;
    b.eval("const row = [...$('accounts').tBodies[0].rows].find((r) => r.innerText.includes('bob')); selectAccount(row.dataset.key, 'bob'); true").await;
    b.wait_text("bob's events", "#events", |t| t.contains("audioVideoSession")).await;
    // Bob's event with a `#seq` alice's journal has too, clicked.
    let pick = "(async () => { \
        const a = await window.origGetJSON('/api/events?limit=40&account=' + encodeURIComponent(window.holding)); \
        const seqs = new Set(a.events.filter((e) => e.event).map((e) => e.event.seq)); \
        const li = [...document.querySelectorAll('#events li')].find((li) => { const m = li.innerText.match(/#(\\d+) /); return m && seqs.has(+m[1]); }); \
        if (!li) return false; li.click(); return true; })()";
    let mut picked = b.eval(pick).await;
    for _ in 0..100 {
        if picked == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        picked = b.eval(pick).await;
    }
    assert_eq!(picked, true, "an event number both accounts have");
    b.wait_text("bob's event shown", "#timeline", |t| t.contains("greeter v1")).await;
    // Alice's answer comes now: nothing of it is drawn.
    b.eval("window.holding = null; window.held.forEach((f) => f()); window.stale.then(() => true)").await;
    for what in ["#events", "#timeline"] {
        let t = b.text(what).await;
        assert!(!t.contains("alice-"), "alice's answer drawn over bob's {what}:\n{t}");
    }
    assert_eq!(b.text("#account-name").await, "bob");
}
