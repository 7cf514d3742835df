//! `ucwa-agent`: parse the command line, set up logging, call the library, print results.

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use ucwa_agent::agent::{Agent, RunEnd};
use ucwa_agent::{config::Config, tools};

// Exit statuses, documented in README "Commands" (systemd's RestartPreventExitStatus uses 2 and 3).
/// A script problem (`check`, `test`, `replay`).
const EXIT_SCRIPTS: u8 = 1;
/// The configuration (or a file it names) is wrong; nothing was tried.
const EXIT_CONFIG: u8 = 2;
/// The pool refused the credentials.
const EXIT_CREDENTIALS: u8 = 3;
/// `check --online`: the pool cannot be reached, or answers unlike a UCWA pool.
const EXIT_POOL: u8 = 4;

/// `println!` for the tools' reports, through [`out_raw`].
macro_rules! out {
    ($($arg:tt)*) => { out_raw(&format!("{}\n", format_args!($($arg)*))) };
}

#[derive(Parser)]
#[command(version, about = "Runs Lua scripts on Skype for Business (UCWA) call events")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    /// Run only the `[[account]]`s of shard K of N (0-based K): those whose name hashes to K.
    /// Each of N agents (a StatefulSet's pods) takes one shard; see README "Kubernetes and
    /// shards". For run, record and check.
    #[arg(long, global = true, value_name = "K/N")]
    shard: Option<ucwa_agent::config::Shard>,
    /// Serve `/metrics` and `/healthz` here instead of `[metrics] listen` (127.0.0.1:9464, 0.0.0.0:9464, any
    /// address; one per agent when several share a configuration, as shards do). For run,
    /// record and check (tap: the agent to connect to).
    #[arg(long, global = true, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log lines for people, or one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in and run the scripts on every event (the default).
    Run {
        /// Also append every event-channel batch, as received, to this JSON Lines file.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Run the agent and record every event-channel batch to FILE (JSON Lines).
    Record {
        /// The JSON Lines file the batches are appended to (created if missing).
        file: PathBuf,
    },
    /// Load the configuration and every script without signing in; report problems.
    Check {
        /// Also sign in to the pool step by step (discovery, challenge, token, user resource,
        /// applications), without creating an application.
        #[arg(long)]
        online: bool,
        /// Warnings fail too (exit status 1), for CI.
        #[arg(long)]
        strict: bool,
    },
    /// Feed a recorded file (one batch JSON per line) through the scripts offline.
    Replay {
        /// A recording (`record`, `run --record`) or any file with one event-channel batch (JSON) per line.
        file: PathBuf,
        /// Only this script (its file name without .lua).
        #[arg(long)]
        script: Option<String>,
        /// Canned `agent.ucwa` answers: a JSON array of {"method", "path", "status", "body"};
        /// path absolute, on the pool, or relative to the application ("me/presence").
        #[arg(long, value_name = "FILE")]
        answers: Option<PathBuf>,
    },
    /// Run script tests: each FILE given, and the `*_test.lua` files of each DIR (default: the
    /// scripts directory).
    Test {
        /// Test files (`*_test.lua`) and directories holding them.
        #[arg(value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
    /// Show what scripts did: the traces of their last runs (each event's subscriptions, each
    /// handler's log lines, requests, timers, errors with file:line), read from the state
    /// directory (the agent may be running or stopped).
    Trace {
        /// Only this script's traces.
        #[arg(long)]
        script: Option<String>,
        /// Only the traces of this event (its seq, as the log and `tap` show it).
        #[arg(long)]
        seq: Option<u64>,
        /// Only this `[[account]]`'s traces.
        #[arg(long)]
        account: Option<String>,
        /// The newest K traces, 1 or more (default 10; every one kept with --seq).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
        last: Option<u64>,
        /// One JSON object per trace and line, as stored.
        #[arg(long)]
        json: bool,
    },
    /// Stream a running agent's events and what each script did with them, as they happen
    /// (from `/api/tap` on its `[metrics] listen`; the password of `--user` from
    /// UCWA_AGENT_API_PASSWORD).
    Tap {
        /// Only the events of this rel (and the traces of such events).
        #[arg(long)]
        rel: Option<String>,
        /// Only this script's traces.
        #[arg(long)]
        script: Option<String>,
        /// The `[metrics] basic_auth_users` user to sign in as (default: the only one).
        #[arg(long)]
        user: Option<String>,
        /// One JSON object per line, as the endpoint sends them.
        #[arg(long)]
        json: bool,
    },
    /// Move an account's state between agents (resharding): export it from the state directory
    /// of the agent that ran it, import it into the one of the agent that will. Both refuse
    /// while an agent runs on that state.
    #[command(subcommand)]
    State(StateCommand),
    /// Run the UCWA simulator alone, for an agent (or any UCWA client) to talk to.
    Simulate(tools::simulate::SimulateArgs),
    /// Print a shell completion script (e.g. `ucwa-agent completions bash > /etc/bash_completion.d/ucwa-agent`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write it and one page per command into DIR.
    Man {
        /// Write ucwa-agent.1 and ucwa-agent-<command>.1 into this folder (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write an account's state (each script's cursor and `agent.state`, watches, the channel
    /// position, the journal's unhandled events) to a file.
    Export {
        /// The `[[account]]` (may be left out when the configuration has one account).
        #[arg(long)]
        account: Option<String>,
        /// The file to write (standard output without it).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Replace an account's state with an exported file's (the account it names, which the
    /// configuration must have).
    Import {
        /// A file written by `state export`.
        file: PathBuf,
        /// Replace state written after the exported state was.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    refuse_flags_without_effect(&cli);
    // A panic (a bug) is an ERROR log line with its thread, like everything else the agent says.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !tracing::dispatcher::has_been_set() {
            return default_hook(info);
        }
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(thread, panic = %info, "internal error (please report it)");
    }));
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "ucwa-agent", &mut script);
            let mut script = String::from_utf8_lossy(&script).into_owned();
            if *shell == clap_complete::Shell::Bash {
                // clap_complete names the subcommands' cases of a hyphenated binary
                // `ucwa__subcmd__agent__…` but looks for `ucwa__agent__…` (clap-rs/clap#6421), so
                // nothing completes after the subcommand. (A no-op once that is fixed.)
                script = script.replace("ucwa__subcmd__agent", "ucwa__agent");
            }
            out_raw(&script);
            return ExitCode::SUCCESS;
        }
        Some(Command::Man { dir }) => {
            let written = match dir {
                Some(dir) => tools::manual::write_to(Cli::command(), dir),
                None => tools::manual::render(Cli::command()).map(|page| out_raw(&page)),
            };
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                // `ucwa-agent man | head`: the reader went away; nothing is wrong.
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("cannot write the manual page: {error}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        _ => {}
    }
    // The offline tools print their own report; scripts' log lines would only repeat it.
    let quiet = matches!(
        cli.command,
        Some(Command::Check { .. } | Command::Replay { .. } | Command::Test { .. } | Command::Trace { .. } | Command::Tap { .. } | Command::State(_))
    );
    let log_level = init_logging(cli.log_format, if quiet { "warn,script=off" } else { "info" });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime starts");
    let code = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run { record: None }) {
            Command::Run { record } => run(cli.config, cli.shard, cli.metrics_listen, record, log_level).await,
            Command::Record { file } => run(cli.config, cli.shard, cli.metrics_listen, Some(file), log_level).await,
            Command::Check { online, strict } => {
                with_config(&cli.config, |c| async move { check(&c, online, strict, cli.metrics_listen, cli.shard).await }).await
            }
            Command::Replay { file, script, answers } => {
                with_config(&cli.config, |c| async move { replay(&c, &file, script.as_deref(), answers.as_deref()).await }).await
            }
            Command::Test { paths } => test(&cli.config, paths).await,
            Command::Trace { script, seq, account, last, json } => {
                let o = tools::traces::TraceOptions { script, seq, account, last: last.map_or(if seq.is_some() { 0 } else { 10 }, |k| k as usize), json };
                with_config(&cli.config, |c| async move { show_traces(&c, &o) }).await
            }
            Command::Tap { rel, script, user, json } => {
                let o = tools::traces::TapOptions { rel, script, json, user };
                let listen = cli.metrics_listen;
                with_config(&cli.config, |c| async move {
                    let mut print = |s: &str| out_raw(s);
                    tokio::select! {
                        r = tools::traces::tap(&c, listen, &o, &mut print) => match r {
                            Ok(()) => ExitCode::SUCCESS,
                            Err(error) => {
                                eprintln!("tap: {error}");
                                ExitCode::from(EXIT_CONFIG)
                            }
                        },
                        _ = shutdown_signal() => ExitCode::SUCCESS,
                    }
                })
                .await
            }
            Command::State(cmd) => with_config(&cli.config, |c| async move { state(&c, cmd) }).await,
            Command::Completions { .. } | Command::Man { .. } => {
                unreachable!("answered before the runtime starts")
            }
            Command::Simulate(args) => tools::simulate::simulate(args, &cli.config, shutdown_signal()).await,
        }
    });
    // Whatever still runs (a script's load given up on, a request in flight) is not waited
    // for: the process ends now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// `--shard` and `--metrics-listen` are global (they come before or after the command), but
/// only `run`, `record` and `check` use them: elsewhere they are a usage error (status 2), not
/// silently ignored.
fn refuse_flags_without_effect(cli: &Cli) {
    let name = match &cli.command {
        Some(Command::Completions { .. }) => "completions",
        Some(Command::Man { .. }) => "man",
        Some(Command::Test { .. }) => "test",
        Some(Command::Replay { .. }) => "replay",
        Some(Command::Trace { .. }) => "trace",
        Some(Command::State(_)) => "state",
        Some(Command::Simulate(_)) => "simulate",
        Some(Command::Tap { .. }) if cli.shard.is_some() => "tap",
        _ => return,
    };
    // (`tap` connects to the --metrics-listen address.)
    let listen_given = cli.metrics_listen.is_some() && name != "tap";
    let given: Vec<&str> = [(cli.shard.is_some(), "--shard"), (listen_given, "--metrics-listen")].into_iter().filter(|(on, _)| *on).map(|(_, f)| f).collect();
    if !given.is_empty() {
        let verb = if given.len() > 1 { "apply" } else { "applies" };
        let message = format!("{} {verb} to run, record and check, not to {name}", given.join(" and "));
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
}

async fn with_config<F: std::future::Future<Output = ExitCode>>(path: &std::path::Path, f: impl FnOnce(Config) -> F) -> ExitCode {
    match Config::load(path) {
        Ok(c) => f(c).await,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn run(
    config: PathBuf,
    shard: Option<ucwa_agent::config::Shard>,
    metrics_listen: Option<std::net::SocketAddr>,
    record: Option<PathBuf>,
    log_level: ucwa_agent::agent::LogLevelApplier,
) -> ExitCode {
    use ucwa_agent::agent::sd_notify::{self, Notifier};
    // Signal handlers before anything slow: a SIGHUP (`systemctl reload`) or SIGTERM during
    // start-up must not take the default action, which ends the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("SIGHUP handler");
    let mut shutdown = Box::pin(shutdown_signal());
    let notifier = std::sync::Arc::new(Notifier::from_env());
    let mut config = match Config::load(&config) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(addr) = metrics_listen {
        config.metrics.listen = Some(addr);
    }
    // `log.level` applies unless RUST_LOG says otherwise (checked when the file was read).
    if let (Some(level), None) = (&config.log.level, std::env::var_os("RUST_LOG").filter(|v| !v.is_empty())) {
        if let Err(error) = log_level(level) {
            tracing::warn!(%error, "log.level not applied");
        }
    }
    notifier.status("starting: loading scripts");
    let started = tokio::select! {
        a = Agent::start_shard(config, shard) => a,
        _ = &mut shutdown => {
            notifier.send("STOPPING=1");
            tracing::info!("stopped during start-up");
            return ExitCode::SUCCESS;
        }
    };
    let mut agent = match started {
        Ok(a) => a,
        Err(error) => {
            let error = match (&error, metrics_listen) {
                // The address came from the flag, not the file: say so.
                (ucwa_agent::agent::StartError::Metrics { addr, source, .. }, Some(_)) => {
                    format!("--metrics-listen: cannot listen on {addr}: {source}")
                }
                _ => error.to_string(),
            };
            tracing::error!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(path) = record {
        if let Err(error) = agent.record_to(&path) {
            tracing::error!(file = %path.display(), "--record: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    agent.set_log_level_applier(log_level);
    agent.set_metrics_listen_override(metrics_listen);
    let reloader = agent.reloader();
    let reload_requests = agent.reload_requests();
    let lifecycle = agent.lifecycle();
    // READY=1 once every account signed in (or failed a first attempt), then a STATUS line
    // whenever it changes. A SIGHUP that came during start-up is handled now, once.
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    {
        let (n, life) = (notifier.clone(), lifecycle.clone());
        tokio::spawn(async move {
            let mut said = String::new();
            let mut ready = false;
            loop {
                let (now_ready, status) = life.readiness();
                if now_ready && !ready {
                    ready = true;
                    n.send(&format!("READY=1\nSTATUS={status}"));
                    let _ = ready_tx.send(true);
                    said = status;
                } else if status != said {
                    n.status(&status);
                    said = status;
                }
                // Every account's state is walked: often while signing in, so READY=1 comes
                // soon after the last account; then once every 2 s (a walk of 10,000 accounts
                // four times a second was most of an idle agent's CPU), and not at all once
                // ready when no service manager reads the STATUS lines.
                if ready && !n.active() {
                    break;
                }
                let every = if ready { 2000 } else { 250 };
                tokio::time::sleep(std::time::Duration::from_millis(every)).await;
            }
        });
    }
    if let Some((every, within)) = sd_notify::watchdog().filter(|_| notifier.active()) {
        let (n, life) = (notifier.clone(), lifecycle);
        tokio::spawn(async move {
            loop {
                // Fed only while every account's event-channel loop runs: a wedged loop
                // stops the pings and systemd restarts the agent (WatchdogSec=).
                // A loop is late when its bounded wait ended (or its work began) more than
                // `within` ago and it has not parked again: at least 3 s, so that a short
                // WatchdogSec= does not flap while a loop journals a batch.
                if life.alive(within.max(std::time::Duration::from_secs(3))) {
                    n.send("WATCHDOG=1");
                } else {
                    tracing::error!(
                        within_secs = within.as_secs(),
                        "an event-channel loop has not run within the watchdog interval; not telling systemd it is alive"
                    );
                }
                tokio::time::sleep(every).await;
            }
        });
    }
    {
        let (n, mut ready_rx) = (notifier.clone(), ready_rx.clone());
        tokio::spawn(async move {
            // Reloads apply to running accounts: one asked for during start-up waits for them.
            while !*ready_rx.borrow_and_update() {
                if ready_rx.changed().await.is_err() {
                    return;
                }
            }
            loop {
                tokio::select! {
                    signal = hup.recv() => {
                        if signal.is_none() {
                            break;
                        }
                        tracing::info!("SIGHUP: reloading the configuration");
                    }
                    _ = reload_requests.next() => tracing::info!("the console asked: reloading the configuration"),
                }
                n.reloading();
                let outcome = reloader.reload().await;
                let ready = "READY=1\n";
                match outcome {
                    Ok(()) => n.send(&format!("{ready}STATUS=configuration reloaded")),
                    Err(error) => {
                        let line: String = error.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
                        n.send(&format!("{ready}STATUS=configuration reload rejected, the running one stays: {line}\nERRNO=22"));
                    }
                }
            }
        });
    }
    let n = notifier.clone();
    let end = agent
        .run(async move {
            shutdown.await;
            n.send("STOPPING=1\nSTATUS=stopping: letting handlers finish, deleting the application");
        })
        .await;
    match end {
        RunEnd::Stopped => ExitCode::SUCCESS,
        RunEnd::CredentialsRefused(_) => ExitCode::from(EXIT_CREDENTIALS),
    }
}

async fn check(
    config: &Config,
    online: bool,
    strict: bool,
    metrics_listen: Option<std::net::SocketAddr>,
    shard: Option<ucwa_agent::config::Shard>,
) -> ExitCode {
    let report = tools::check::check(config, metrics_listen);
    for p in &report.config {
        out!("{p}");
    }
    for p in &report.problems {
        out!("{p}");
    }
    for (name, subs) in &report.loaded {
        out!("ok: {name} ({subs} subscription{})", if *subs == 1 { "" } else { "s" });
    }
    let (errors, warnings) = (report.errors(), report.warnings());
    let failing = if strict && warnings > 0 { " (--strict: warnings fail)" } else { "" };
    out!("{} script(s) loaded, {errors} error(s), {warnings} warning(s){failing}", report.loaded.len());
    if let Some(s) = shard {
        // Which accounts `run --shard K/N` would run: a pod that gets none idles.
        match config.accounts_of(Some(s)) {
            Ok(mine) if mine.is_empty() => out!("shard {}/{}: no account (an agent of this shard would idle)", s.index, s.count),
            Ok(mine) => out!("shard {}/{}: {}", s.index, s.count, mine.iter().map(|a| a.label()).collect::<Vec<_>>().join(", ")),
            Err(error) => {
                // `run --shard` refuses to start on it (status 2): so does check.
                out!("{error}");
                out!("the configuration has {} problem(s): `run --shard` would not start", report.config.len() + 1);
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Ok(accounts) = config.accounts() {
        // `loaded` names each account's copy of a script: per account, the most any has.
        let n = accounts.len().max(1) as u64;
        let scripts = (report.loaded.len() as u64).div_ceil(n);
        out!(
            "memory: at most about {} MiB for {n} account(s) of {scripts} script(s) each (README \"Limits\"; a container or unit limit must allow it)",
            ucwa_agent::agent::memory::worst_case_mib(config, n, scripts)
        );
    }
    if !report.config.is_empty() {
        out!("the configuration has {} problem(s): `run` would not start", report.config.len());
        return ExitCode::from(EXIT_CONFIG);
    }
    let online = if online { check_online(config).await } else { None };
    if let Some(code) = online {
        code
    } else if errors > 0 || (strict && warnings > 0) {
        ExitCode::from(EXIT_SCRIPTS)
    } else {
        ExitCode::SUCCESS
    }
}

/// `check --online`: one line per sign-in step, for each account. None when every step of
/// every account passed; else the exit status of the worst (credentials refused, then pool).
async fn check_online(config: &Config) -> Option<ExitCode> {
    let accounts = match config.accounts() {
        Ok(a) => a,
        Err(error) => {
            out!("{error}");
            return Some(ExitCode::from(EXIT_CONFIG));
        }
    };
    let mut worst: Option<u8> = None;
    let mut failed = 0;
    for spec in &accounts {
        if let Some(name) = &spec.name {
            out!("account {name}:");
        }
        if let Some(code) = check_online_account(config, spec).await {
            failed += 1;
            worst = Some(match worst {
                Some(EXIT_CONFIG) => EXIT_CONFIG,
                Some(EXIT_CREDENTIALS) if code != EXIT_CONFIG => EXIT_CREDENTIALS,
                _ => code,
            });
        }
    }
    if accounts.len() > 1 {
        out!("online: {} of {} accounts signed in", accounts.len() - failed, accounts.len());
    }
    worst.map(ExitCode::from)
}

async fn check_online_account(config: &Config, spec: &ucwa_agent::config::AccountSpec) -> Option<u8> {
    use ucwa_agent::agent::online::Verdict;
    let (steps, verdict) = match ucwa_agent::agent::online::check_account(config, spec).await {
        Ok(r) => r,
        Err(error) => {
            out!("{error}");
            return Some(EXIT_CONFIG);
        }
    };
    for s in &steps {
        let (mark, text) = match &s.outcome {
            Ok(found) => ("ok  ", found),
            Err(why) => ("FAIL", why),
        };
        out!("{mark} {:<12} {:>6} ms  {text}", s.name, s.took.as_millis());
    }
    match verdict {
        Verdict::Ok => {
            out!("online: signed in; `run` can create its application");
            None
        }
        Verdict::CredentialsRefused => Some(EXIT_CREDENTIALS),
        Verdict::Failed => Some(EXIT_POOL),
    }
}

async fn replay(config: &Config, file: &std::path::Path, script: Option<&str>, answers: Option<&std::path::Path>) -> ExitCode {
    let show = std::io::stderr().is_terminal();
    let progress = move |done: usize, total: usize| {
        if show {
            eprint!("\rreplaying: {done}/{total} batches");
            if done == total {
                eprintln!();
            }
        }
    };
    match tools::replay::replay(config, file, script, answers, &progress).await {
        Ok(r) => {
            for bad in &r.bad_lines {
                eprintln!("{bad}");
            }
            out_raw(&r.output);
            if r.handler_errors > 0 {
                eprintln!("{} handler error(s) (each is in the report above, as `error:`)", r.handler_errors);
            }
            if r.bad_lines.is_empty() && r.load_errors.is_empty() && r.handler_errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_SCRIPTS)
            }
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn test(config: &std::path::Path, paths: Vec<PathBuf>) -> ExitCode {
    // No configuration file is fine (defaults); a broken one is not.
    let loaded = match Config::load(config) {
        Ok(c) => Some(c),
        Err(_) if !config.exists() => None,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let paths = if paths.is_empty() { vec![loaded.as_ref().map(|c| c.scripts_dir()).unwrap_or_else(|| PathBuf::from("scripts"))] } else { paths };
    let settings = loaded.unwrap_or_else(|| Config::parse("", config).expect("defaults are valid")).script_settings();
    let mut files = Vec::new();
    for path in &paths {
        if path.is_dir() {
            match tools::lua_test::find_tests(path) {
                Ok(found) => files.extend(found),
                Err(error) => {
                    eprintln!("{}: {error}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        } else if path.exists() {
            // A file, or something else that its run says is not one (a FIFO).
            files.push(path.clone());
        } else {
            eprintln!("{}: no such file or directory", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if files.is_empty() {
        let places: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!("no test files (`*_test.lua`) in {}", places.join(", "));
        return ExitCode::from(EXIT_SCRIPTS);
    }
    let mut results = Vec::new();
    // Each file may take its cases' time limits many times over, but not for ever.
    let limit = (settings.limits.handler_timeout * 30).max(std::time::Duration::from_secs(60));
    for f in files {
        let settings = settings.clone();
        results.push(tokio::task::spawn_blocking(move || tools::lua_test::run_file_bounded(&f, settings, limit)).await.expect("the test runner thread"));
    }
    let (text, passed, failed) = tools::lua_test::tap(&results);
    out_raw(&text);
    out!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SCRIPTS)
    }
}

/// `trace`: the traces asked for; none is not an error (said on standard error).
/// `state export|import`: what was moved goes to standard error (standard output may be the file).
fn state(config: &Config, cmd: StateCommand) -> ExitCode {
    let done = match cmd {
        StateCommand::Export { account, out } => {
            tools::state::export(config, account.as_deref(), out.as_deref(), &mut |s| out_raw(s)).map(|w| format!("exported {w}"))
        }
        StateCommand::Import { file, force } => tools::state::import(config, &file, force).map(|w| format!("imported {w}")),
    };
    match done {
        Ok(what) => {
            eprintln!("{what}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("state: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn show_traces(config: &Config, o: &tools::traces::TraceOptions) -> ExitCode {
    match tools::traces::show(config, o, &mut |s| out_raw(s)) {
        Ok(0) => {
            eprintln!("no traces match (traces are kept for events a subscription of the script looks at; scripts.traces_per_script)");
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trace: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Standard output of the tools' reports. A reader that went away (`… | head -1`) ends the
/// output, not the process: no panic, and the exit status is still what the command found.
fn out_raw(text: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cannot write to standard output: {error}");
        }
    }
}

/// The first SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first awaited: a signal that comes in between is kept, never fatal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // The same streams listen for the second signal, from before the line below is written:
        // one sent as soon as it is read is not lost.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            std::process::exit(130);
        });
        tracing::info!("shutting down (send the signal again to exit at once)");
    }
}

/// Sets up logging; gives what changes the filter later (`log.level`, at start and on SIGHUP).
fn init_logging(format: LogFormat, default: &str) -> ucwa_agent::agent::LogLevelApplier {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = ucwa_agent::logfmt::filter(std::env::var("RUST_LOG").ok().as_deref(), default);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colour only for a person at a terminal: pipes, files and journald get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let lines = ucwa_agent::logfmt::LineFormat { json: matches!(format, LogFormat::Json), ansi, journald: ucwa_agent::logfmt::journal_stream() };
    // Span fields (an account's `account`) are kept as JSON, for the line formats to spread out.
    let layer =
        tracing_subscriber::fmt::layer().fmt_fields(tracing_subscriber::fmt::format::JsonFields::new()).event_format(lines).with_writer(std::io::stderr);
    tracing_subscriber::registry().with(filter).with(layer).init();
    std::sync::Arc::new(move |level: &str| handle.reload(ucwa_agent::logfmt::filter(None, level)).map_err(|e| e.to_string()))
}
