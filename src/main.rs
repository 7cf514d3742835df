//! `ucwa-agent`: parse the command line, set up logging, call the library.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use ucwa_agent::{agent::Agent, config::Config, sim};

#[derive(Parser)]
#[command(version, about = "Runs Lua scripts on Skype for Business (UCWA) call events")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file (for `run`, the default command).
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
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
    Run,
    /// Run the UCWA simulator alone, for an agent (or any UCWA client) to talk to.
    Simulate(ucwa_agent::sim::cli::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime starts");
    runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(cli.config).await,
            Command::Simulate(args) => sim::cli::simulate(args, shutdown_signal()).await,
        }
    })
}

async fn run(config: PathBuf) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let agent = match Agent::start(config).await {
        Ok(a) => a,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let reloader = agent.reloader();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            reloader.reload().await;
        }
    });
    agent.run(shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    wait_signal().await;
    tracing::info!("shutting down (send the signal again to exit at once)");
    tokio::spawn(async {
        wait_signal().await;
        std::process::exit(130);
    });
}

async fn wait_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
