//! `trace`: the traces of scripts' runs read from the accounts' state databases (read-only: it
//! works beside a running agent, and on a stopped one's state directory); `tap`: a running
//! agent's events and traces as they happen, from its `/api/tap` endpoint.

use crate::config::Config;
use crate::script::trace::{self, Trace};
use crate::store::{self, TraceQuery};

/// What `trace` shows.
#[derive(Debug, Default, Clone)]
pub struct TraceOptions {
    pub script: Option<String>,
    pub seq: Option<u64>,
    pub account: Option<String>,
    /// The newest K (0: every one kept).
    pub last: usize,
    pub json: bool,
}

/// Writes the traces asked for to `out`, oldest first (JSON lines with `json`, a timeline per
/// trace otherwise); how many. An account whose database is not there yet has none.
pub fn show(config: &Config, o: &TraceOptions, out: &mut dyn FnMut(&str)) -> Result<usize, String> {
    let accounts = config.accounts().map_err(|e| e.to_string())?;
    let named = accounts.iter().any(|a| a.name.is_some());
    if let Some(want) = &o.account {
        if !accounts.iter().any(|a| a.label() == want) {
            return Err(format!("--account {want}: the configuration has no account of that name"));
        }
    }
    let query = TraceQuery { script: o.script.clone(), seq: o.seq, limit: o.last };
    let mut found: Vec<(i64, String)> = Vec::new();
    for a in accounts.iter().filter(|a| o.account.as_ref().is_none_or(|w| a.label() == w)) {
        if !a.state_dir.join("agent.db").exists() {
            continue;
        }
        let conn = store::open_read_only(&a.state_dir).map_err(|e| e.to_string())?;
        let lines = store::read_traces(&conn, &query).map_err(|e| format!("{}: {e}", a.state_dir.join("agent.db").display()))?;
        for line in lines {
            let at = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["at_ms"].as_i64()).unwrap_or(0);
            found.push((at, line));
        }
    }
    // Each account's are in order; merged by time, the newest `last` kept.
    found.sort_by_key(|(at, _)| *at);
    let skip = if o.last > 0 { found.len().saturating_sub(o.last) } else { 0 };
    let mut n = 0;
    for (_, line) in found.into_iter().skip(skip) {
        if o.json {
            out(&format!("{line}\n"));
        } else {
            match serde_json::from_str::<Trace>(&line) {
                Ok(t) => out(&format!("{}\n", trace::render(&t, named))),
                Err(e) => out(&format!("(a trace this version cannot read: {e})\n\n")),
            }
        }
        n += 1;
    }
    Ok(n)
}

/// What `tap` streams.
#[derive(Debug, Default, Clone)]
pub struct TapOptions {
    pub rel: Option<String>,
    pub script: Option<String>,
    pub json: bool,
    /// `[metrics] basic_auth_users` user to sign in as (the password from
    /// `UCWA_AGENT_API_PASSWORD`); unset: the only user configured, if any.
    pub user: Option<String>,
}

/// The environment variable `tap` reads the endpoint's password from.
pub const PASSWORD_ENV: &str = "UCWA_AGENT_API_PASSWORD";

/// Streams `/api/tap` of the agent listening at `listen` (`[metrics] listen` unless given) to
/// `out` until the agent closes it (or the process is stopped).
pub async fn tap(config: &Config, listen: Option<std::net::SocketAddr>, o: &TapOptions, out: &mut dyn FnMut(&str)) -> Result<(), String> {
    let listen = listen.or(config.metrics.listen).ok_or("the agent has no HTTP listener: set [metrics] listen (or give --metrics-listen)")?;
    // A listener on every address is reached on loopback.
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let mut client = reqwest::Client::builder();
    let scheme = match &config.metrics.tls_cert_file {
        Some(cert) => {
            // The agent's own certificate is trusted (self-signed ones included).
            let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", cert.display()))? {
                client = client.add_root_certificate(c);
            }
            "https"
        }
        None => "http",
    };
    let client = client.build().map_err(|e| e.to_string())?;
    let mut url = url::Url::parse(&format!("{scheme}://{host}:{}/api/tap", listen.port())).map_err(|e| e.to_string())?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(r) = &o.rel {
            q.append_pair("rel", r);
        }
        if let Some(s) = &o.script {
            q.append_pair("script", s);
        }
    }
    let mut req = client.get(url.clone());
    let users = &config.metrics.basic_auth_users;
    if !users.is_empty() {
        let user = match (&o.user, users.len()) {
            (Some(u), _) => u.clone(),
            (None, 1) => users.keys().next().cloned().unwrap_or_default(),
            (None, _) => return Err("the endpoint has several users (metrics.basic_auth_users): say which with --user".into()),
        };
        let password = std::env::var(PASSWORD_ENV).map_err(|_| format!("the endpoint asks for a password: put it in {PASSWORD_ENV}"))?;
        req = req.basic_auth(user, Some(password));
    }
    let mut resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    let mut pending = String::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                out(&tap_line(data.trim_start(), o.json));
            }
        }
    }
    Ok(())
}

/// One item of the tap as printed.
fn tap_line(data: &str, json: bool) -> String {
    if json {
        return format!("{data}\n");
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        return format!("{data}\n");
    };
    let account = v["account"].as_str().map(|a| format!(" [{a}]")).unwrap_or_default();
    match v["kind"].as_str() {
        Some("event") => format!(
            "event{account} #{} {} {}  {}\n",
            v["seq"],
            v["rel"].as_str().unwrap_or(""),
            v["type"].as_str().unwrap_or(""),
            v["href"].as_str().unwrap_or("")
        ),
        Some("trace") => {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                if let Some(run) = o.remove("run") {
                    o.insert("kind".into(), run);
                }
                o.entry("account").or_insert_with(|| "".into());
            }
            match serde_json::from_value::<Trace>(v) {
                Ok(t) => format!("{}\n", trace::render(&t, !account.is_empty())),
                Err(_) => format!("{data}\n"),
            }
        }
        Some("lagged") => format!("({} items missed: this reader fell behind)\n", v["missed"]),
        _ => format!("{data}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::trace::{Call, TracedEvent};

    fn trace(account: &str, seq: u64, at_ms: i64) -> Trace {
        let mut t = Trace::new(account, "rule", 3, "event", at_ms);
        t.event = Some(TracedEvent { seq, rel: "audioVideoInvitation".into(), kind: "started".into(), href: "/x".into() });
        t.calls.push(Call {
            what: "handler".into(),
            sub: None,
            start_ms: at_ms,
            us: 1500,
            outcome: "error".into(),
            error: Some("rule.lua:7: no".into()),
            at: Some("rule.lua:7".into()),
            steps: Vec::new(),
            started: None,
        });
        t
    }

    #[test]
    fn trace_reads_every_accounts_database_or_one() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            format!("[server]\ndiscover = \"embedded\"\n[state]\ndir = \"{}\"\n[[account]]\nname = \"a\"\n[[account]]\nname = \"b\"\n", dir.path().display());
        let config = Config::parse(&text, &dir.path().join("config.toml")).unwrap();
        for (name, seq, at) in [("a", 5, 1000), ("b", 9, 2000)] {
            let store = crate::store::Store::open(&dir.path().join(name)).unwrap();
            let (chunk, _) = crate::script::trace::chunk([trace(name, seq, at)], 100, false);
            store.commit_script_with("rule", Some(seq), None, Some(&chunk)).unwrap();
        }
        let run = |o: TraceOptions| {
            let mut out = String::new();
            let n = show(&config, &o, &mut |s| out.push_str(s)).unwrap();
            (n, out)
        };
        let (n, out) = run(TraceOptions { last: 10, ..TraceOptions::default() });
        assert_eq!(n, 2);
        let (a, b) = (out.find("[a] rule v3  event #5").unwrap(), out.find("[b] rule v3  event #9").unwrap());
        assert!(a < b, "oldest first: {out}");
        assert!(out.contains("error at rule.lua:7: no"), "{out}");
        let (n, out) = run(TraceOptions { account: Some("b".into()), json: true, ..TraceOptions::default() });
        assert_eq!(n, 1);
        assert_eq!(serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["account"], "b");
        assert_eq!(run(TraceOptions { seq: Some(5), ..TraceOptions::default() }).0, 1);
        assert_eq!(run(TraceOptions { last: 1, ..TraceOptions::default() }).1.matches("rule v3").count(), 1);
        let err = show(&config, &TraceOptions { account: Some("c".into()), ..TraceOptions::default() }, &mut |_| {}).unwrap_err();
        assert!(err.contains("--account c"), "{err}");
    }
}
