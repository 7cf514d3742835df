//! `ucwa-agent man`: clap's pages, with what an admin looks for in a manual page besides the
//! options: EXIT STATUS, SIGNALS, ENVIRONMENT, FILES and CONFIGURATION. The configuration keys
//! and the exit statuses come from README's tables (one source: what README says is what the
//! page says). Markdown's backticks are taken out of the text.

use std::path::Path;

/// README, as built into the binary.
const README: &str = include_str!("../../README.md");

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "re-reads the configuration (scripts, accounts, log level, metrics address and users); a file that cannot be used is refused and the running configuration stays, /healthz says degraded and ucwa_config_last_reload_success is 0 until a good reload (see README, Reloading the configuration). A SIGHUP during start-up is applied once the accounts run.",
    ),
    (
        "SIGINT, SIGTERM",
        "stop gracefully: polling stops, the scripts get agent/signedOut and up to 5 s to finish, then the application is deleted (up to 5 s more). A second signal exits at once, with status 130. During start-up: the agent stops, status 0.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "RUST_LOG",
        "log filter directives (debug, info,script=debug); when set, it wins over log.level. Default: info (warn for check, replay, test, trace and tap).",
    ),
    ("NO_COLOR", "when set and not empty, log lines have no colour even at a terminal."),
    ("NOTIFY_SOCKET", "set by systemd (Type=notify, notify-reload): the agent says READY, RELOADING, STOPPING and its STATUS there."),
    ("JOURNAL_STREAM", "set by systemd when standard error is the journal: each log line then carries its priority, so journalctl -p err finds the errors."),
    ("WATCHDOG_USEC", "set by systemd's WatchdogSec: the agent pings the watchdog within that interval while it polls."),
    ("UCWA_AGENT_API_PASSWORD", "tap: the password of the metrics.basic_auth_users user it signs in as."),
    (
        "the variables the configuration names",
        "auth.password_env, auth.token_env and { env = \"NAME\" } secrets of scripts.config hold the secrets; they are read at start and on SIGHUP.",
    ),
];

const FILES: &[(&str, &str)] = &[
    ("config.toml", "the configuration, in the working directory unless --config names another; relative paths in it are relative to it."),
    ("scripts.dir/*.lua", "the scripts (scripts by default); *_test.lua files beside them are their tests (ucwa-agent test), lib/ holds the modules require finds."),
    ("state.dir/agent.db", "the agent's database (SQLite, with agent.db-wal and agent.db-shm): the event journal, each script's cursor and agent.state, the channel position."),
    (
        "state.dir/position.json",
        "the channel position of the empty batches that came while the database was closed (many accounts: state.open_databases); a restart resumes from it when it follows the database's own.",
    ),
    ("state.dir/agent.lock", "held for as long as an agent runs on this state directory (it names the pid): one agent per state.dir."),
    (
        "state.dir/credentials-refused",
        "written when the pool refused the password 3 times (a salted hash, never the password): a restart with the same password exits 3 at once. Delete it, or change the password, to try again.",
    ),
    ("state.dir/NAME/", "with [[account]]: each account's own state directory, holding the files above."),
];

/// The main page (`ucwa-agent.1`) with the extra sections.
pub fn render(cmd: clap::Command) -> std::io::Result<String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    let mut page = plain(&String::from_utf8_lossy(&page));
    page.push_str(&sections());
    Ok(page)
}

/// Writes `ucwa-agent.1` (with the extra sections) and one page per command into `dir`.
pub fn write_to(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    clap_mangen::generate_to(cmd.clone(), dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        if file.starts_with(&format!("{name}-")) && file.ends_with(".1") {
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(&path, plain(&text))?;
        }
    }
    std::fs::write(dir.join(format!("{name}.1")), render(cmd)?)
}

/// Roff without Markdown's backticks (a roff escape, `` \` ``, is kept).
fn plain(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    let mut prev = '\0';
    for c in roff.chars() {
        if c != '`' || prev == '\\' {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Text for roff: no Markdown, backslashes escaped, no line taken for a request.
fn text(markdown: &str) -> String {
    let t = markdown.replace("\\|", "|").replace("**", "").replace('`', "").replace('\\', "\\e");
    t.lines().map(|l| if l.starts_with('.') || l.starts_with('\'') { format!("\\&{l}") } else { l.to_string() }).collect::<Vec<_>>().join("\n")
}

/// The rows of README's table whose header row is `header`: cells split at `|` (not `\|`).
fn table(header: &str) -> Vec<Vec<String>> {
    let mut lines = README.lines().skip_while(|l| l.trim() != header).skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        let line = line.trim();
        if !line.starts_with('|') {
            break;
        }
        let inner = line.trim_start_matches('|').trim_end_matches('|');
        let mut cells = vec![String::new()];
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'|') => {
                    cells.last_mut().expect("a cell").push_str("\\|");
                    chars.next();
                }
                '|' => cells.push(String::new()),
                c => cells.last_mut().expect("a cell").push(c),
            }
        }
        rows.push(cells.into_iter().map(|c| c.trim().to_string()).collect());
    }
    rows
}

fn section(out: &mut String, title: &str, items: impl IntoIterator<Item = (String, String)>) {
    out.push_str(&format!(".SH \"{title}\"\n"));
    for (tag, body) in items {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", text(&tag), text(&body)));
    }
}

/// EXIT STATUS, SIGNALS, ENVIRONMENT, FILES and CONFIGURATION, in roff.
pub fn sections() -> String {
    let mut out = String::new();
    let statuses = table("| status | meaning |").into_iter().filter(|r| r.len() >= 2).map(|r| (r[0].clone(), r[1].clone()));
    section(&mut out, "EXIT STATUS", statuses);
    section(&mut out, "SIGNALS", SIGNALS.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    section(&mut out, "ENVIRONMENT", ENVIRONMENT.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    section(&mut out, "FILES", FILES.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    let keys = table("| key | default | meaning |").into_iter().filter(|r| r.len() >= 3).map(|r| {
        let tag = if r[1] == "—" { r[0].clone() } else { format!("{} (default: {})", r[0], r[1]) };
        (tag, r[2].clone())
    });
    out.push_str(".SH \"CONFIGURATION\"\nThe keys of config.toml (an unknown key or a bad value stops the agent at start, naming the file and the key):\n");
    for (tag, body) in keys {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", text(&tag), text(&body)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sections_come_from_readme_without_markdown() {
        let s = sections();
        for title in ["EXIT STATUS", "SIGNALS", "ENVIRONMENT", "FILES", "CONFIGURATION"] {
            assert!(s.contains(&format!(".SH \"{title}\"")), "{title}: {s}");
        }
        // Every key of README's configuration table, and every exit status of its table.
        assert!(table("| key | default | meaning |").len() > 30, "README's configuration table was not found");
        for key in ["server.discover", "state.dir", "metrics.listen", "metrics.basic_auth_users", "scripts.http_allow", "simulator.listen"] {
            assert!(s.contains(&format!("\\fB{key}")), "{key}: {s}");
        }
        for status in ["0", "1", "2", "3", "4", "130"] {
            assert!(s.contains(&format!(".TP\n\\fB{status}\\fR\n")), "status {status}: {s}");
        }
        assert!(!s.contains('`') && !s.contains("**"), "{s}");
        assert!(s.lines().all(|l| !l.starts_with('.') || l.starts_with(".TP") || l.starts_with(".SH")), "no text line is taken for a request: {s}");
    }
}
