//! `ucwa-agent simulate`: the simulator as a standalone server. It runs with the same
//! `[simulator]` settings as the embedded one (from `--config` when that file exists, else the
//! defaults); each flag given overrides its key.

use crate::config::{Config, SimulatorConfig};
use crate::sim::{SimConfig, Simulator, TlsFiles, DEMO_PASSWORD, DEMO_USER};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where `simulate` listens when neither `--listen` nor `simulator.listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Address to listen on, loopback only [default: `simulator.listen`, else 127.0.0.1:8480].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// An account, NAME:PASSWORD (repeatable). Default: the file's `simulator.users`, else the demo
    /// account and the `[[account]]`s' users, each with the password `demo`.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// Calls the generator starts per minute; 0 = none, drive calls with the /sim/v1 API
    /// [default: `simulator.calls_per_minute`, 6].
    #[arg(long)]
    pub calls_per_minute: Option<f64>,
    /// Seconds a generated call rings before it is answered or missed [default: `simulator.ring_secs`, 2].
    #[arg(long)]
    pub ring_secs: Option<f64>,
    /// Seconds a generated call lasts once answered [default: `simulator.call_duration_secs`, 8].
    #[arg(long)]
    pub call_duration_secs: Option<f64>,
    /// Lifetime of each token (expires_in).
    #[arg(long, default_value_t = 28_800)]
    pub token_lifetime_secs: u64,
    /// Seconds an application survives with no event-channel request.
    #[arg(long, default_value_t = 900)]
    pub app_idle_secs: u64,
    /// The smallest `timeout` an event-channel request may ask for (the real server: 180).
    #[arg(long, default_value_t = 180)]
    pub min_poll_timeout_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. For trying a
    /// corporate CA in `server.ca_file` before meeting the pool.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// A real pool's quirk to reproduce (repeatable) [default: `simulator.quirks`].
    #[arg(long = "quirk", value_name = "QUIRK", value_enum)]
    pub quirks: Vec<crate::sim::Quirk>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The `[simulator]` section of `config` and the users it serves (`simulator.users`, or the
/// demo user and the embedded accounts' users) if that file exists; the defaults if it does not.
fn section(config: &Path) -> Result<(SimulatorConfig, Vec<String>), String> {
    if !config.exists() {
        return Ok((SimulatorConfig::default(), vec![DEMO_USER.to_string()]));
    }
    Config::load(config).map(|c| (c.simulator.clone(), c.simulator_users())).map_err(|e| e.to_string())
}

pub async fn simulate(args: SimulateArgs, config: &Path, shutdown: impl Future<Output = ()>) -> ExitCode {
    let (base, file_users) = match section(config) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let listen = args.listen.or(base.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"));
    if !listen.ip().is_loopback() {
        tracing::error!(listen = %listen, "--listen: the simulator serves loopback addresses only (127.0.0.0/8, ::1)");
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
        users = file_users.into_iter().map(|u| (u.to_ascii_lowercase(), DEMO_PASSWORD.to_string())).collect();
    }
    let secs = |s: f64, flag: &str| -> Result<Duration, ExitCode> {
        Duration::try_from_secs_f64(s).map_err(|_| {
            tracing::error!(flag, value = s, "expected a non-negative number of seconds");
            ExitCode::from(2)
        })
    };
    let calls_per_minute = args.calls_per_minute.unwrap_or(base.calls_per_minute);
    if !(0.0..=60000.0).contains(&calls_per_minute) {
        tracing::error!(flag = "--calls-per-minute", value = calls_per_minute, "expected 0 to 60000");
        return ExitCode::from(2);
    }
    let config = SimConfig {
        users,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        app_idle_timeout: Duration::from_secs(args.app_idle_secs),
        min_poll_timeout: Duration::from_secs(args.min_poll_timeout_secs.min(1800)),
        calls_per_minute,
        ring_time: match secs(args.ring_secs.unwrap_or(base.ring_secs), "--ring-secs") {
            Ok(d) => d,
            Err(c) => return c,
        },
        call_duration: match secs(args.call_duration_secs.unwrap_or(base.call_duration_secs), "--call-duration-secs") {
            Ok(d) => d,
            Err(c) => return c,
        },
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles { cert, key }),
        quirks: if args.quirks.is_empty() { base.quirks } else { args.quirks.into_iter().collect() },
        ..SimConfig::default()
    };
    let sim = match Simulator::start(config, listen).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(listen = %listen, %error, "cannot start the simulator");
            // An address in use, or a certificate or key that does not read: what the flags or
            // the file name is wrong (status 2, as README's table says); 1 is for scripts.
            return ExitCode::from(2);
        }
    };
    tracing::info!(discover = %sim.discovery_url(), control = %format!("{}/sim/v1/", sim.origin()), "simulator ready");
    shutdown.await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}
