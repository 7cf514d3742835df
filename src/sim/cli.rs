//! `ucwa-agent simulate`: the simulator as a standalone server.

use super::{SimConfig, Simulator, DEMO_PASSWORD, DEMO_USER};
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// An account, NAME:PASSWORD (repeatable). Default: the demo account demo@contoso.com:demo.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// Calls the generator starts per minute (0 = none; drive calls with the /sim/v1 API).
    #[arg(long, default_value_t = 0.0)]
    pub calls_per_minute: f64,
    /// Seconds a generated call rings before it is answered or missed.
    #[arg(long, default_value_t = 2.0)]
    pub ring_secs: f64,
    /// Seconds a generated call lasts once answered.
    #[arg(long, default_value_t = 20.0)]
    pub call_duration_secs: f64,
    /// Lifetime of each token (expires_in).
    #[arg(long, default_value_t = 28_800)]
    pub token_lifetime_secs: u64,
    /// Seconds an application survives with no event-channel request.
    #[arg(long, default_value_t = 900)]
    pub app_idle_secs: u64,
    /// The smallest `timeout` an event-channel request may ask for (the real server: 180).
    #[arg(long, default_value_t = 180)]
    pub min_poll_timeout_secs: u64,
}

pub async fn simulate(args: SimulateArgs, shutdown: impl Future<Output = ()>) -> ExitCode {
    if !args.listen.ip().is_loopback() {
        tracing::error!(listen = %args.listen, "--listen: the simulator serves loopback addresses only (127.0.0.0/8, ::1)");
        return ExitCode::from(2);
    }
    let mut users = Vec::new();
    for u in &args.users {
        match u.split_once(':') {
            Some((name, pw)) if !name.is_empty() => users.push((name.to_ascii_lowercase(), pw.to_string())),
            _ => {
                tracing::error!(user = %u, "--user: expected NAME:PASSWORD");
                return ExitCode::from(2);
            }
        }
    }
    if users.is_empty() {
        users.push((DEMO_USER.to_string(), DEMO_PASSWORD.to_string()));
    }
    let secs = |s: f64, flag: &str| -> Result<Duration, ExitCode> {
        Duration::try_from_secs_f64(s).map_err(|_| {
            tracing::error!(flag, value = s, "expected a non-negative number of seconds");
            ExitCode::from(2)
        })
    };
    let config = SimConfig {
        users,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        app_idle_timeout: Duration::from_secs(args.app_idle_secs),
        min_poll_timeout: Duration::from_secs(args.min_poll_timeout_secs.min(1800)),
        calls_per_minute: args.calls_per_minute.max(0.0),
        ring_time: match secs(args.ring_secs, "--ring-secs") {
            Ok(d) => d,
            Err(c) => return c,
        },
        call_duration: match secs(args.call_duration_secs, "--call-duration-secs") {
            Ok(d) => d,
            Err(c) => return c,
        },
        ..SimConfig::default()
    };
    let sim = match Simulator::start(config, args.listen).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(listen = %args.listen, %error, "cannot listen");
            return ExitCode::from(1);
        }
    };
    tracing::info!(discover = %sim.discovery_url(), control = %format!("{}/sim/v1/", sim.origin()), "simulator ready");
    shutdown.await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}
