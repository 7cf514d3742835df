//! What signing in to a pool needs: the HTTP client every account shares (with
//! `server.ca_file`'s CAs), an account's credentials from its `[auth]`, the embedded simulator
//! when that is the pool, and `Pool`, all of it for one account (`check --online`).

use super::end::StartError;
use crate::config::{AccountSpec, AuthConfig, AuthKind, Config, Discover};
use crate::sim::{Simulator, DEMO_PASSWORD};
use crate::ucwa::{session::http_client, Auth, Secret, TokenSource};
use std::sync::Arc;
use url::Url;

/// What every account of an agent shares.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Pool requests (with `server.ca_file`'s CAs).
    pub http: reqwest::Client,
    /// Scripts' `agent.http.request`.
    pub outbound: reqwest::Client,
    /// The embedded simulator's discovery URL, when it runs.
    pub embedded: Option<Url>,
    /// Bytes of script-defined metric series held by every account together
    /// (`script_metrics::MAX_AGENT_BYTES`).
    pub metric_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts the embedded simulator with the file's `[simulator]` settings.
pub(crate) async fn start_embedded(config: &Config) -> Result<Simulator, StartError> {
    let listen = config.simulator.listen.unwrap_or(([127, 0, 0, 1], 0).into());
    Simulator::start(config.embedded_simulator(), listen).await.map_err(|source| StartError::Simulator {
        file: config.path.display().to_string(),
        listen,
        source,
    })
}

/// The client every pool request goes through (with `server.ca_file`'s CAs).
pub(crate) fn pool_client(config: &Config) -> Result<reqwest::Client, StartError> {
    let file = config.path.display().to_string();
    let ca = match &config.server.ca_file {
        Some(p) => Some(std::fs::read(config.resolve(p)).map_err(|e| StartError::CaFile { file: file.clone(), message: e.to_string() })?),
        None => None,
    };
    http_client(ca.as_deref()).map_err(|message| StartError::CaFile { file, message })
}

/// What signing in needs for one account (`check --online`): where to discover the pool
/// (starting the embedded simulator if that is the pool), the credentials and the HTTP client.
pub struct Pool {
    pub discover: Url,
    pub auth: Auth,
    pub http: reqwest::Client,
    /// The embedded simulator, when that is the pool; it serves as long as this lives.
    pub simulator: Option<Simulator>,
}

impl Pool {
    pub async fn of_account(config: &Config, spec: &AccountSpec) -> Result<Pool, StartError> {
        let (discover, simulator) = match &spec.discover {
            Discover::Embedded => {
                let sim = start_embedded(config).await?;
                (Url::parse(&sim.discovery_url()).expect("the simulator's URL parses"), Some(sim))
            }
            Discover::Url(url) => (url.clone(), None),
        };
        Ok(Pool { discover, auth: auth_for(spec, config)?, http: pool_client(config)?, simulator })
    }
}

/// How the account signs in: its `[auth]`, or on the embedded simulator without one, the
/// simulator user of its name with the demo password.
pub(crate) fn auth_for(spec: &AccountSpec, config: &Config) -> Result<Auth, StartError> {
    match &spec.auth {
        Some(a) => auth_of(config, &config.path.display().to_string(), a, &spec.key),
        None => Ok(Auth::Password { username: spec.simulator_user(), password: Secret::new(DEMO_PASSWORD) }),
    }
}

/// The configured way to authenticate (`key` says where `[auth]` is); the password is read
/// from its variable now, so a missing one stops the agent at start.
pub(crate) fn auth_of(config: &Config, file: &str, a: &AuthConfig, key: &str) -> Result<Auth, StartError> {
    let user = a.username.clone().unwrap_or_else(|| "bearer".into());
    Ok(match a.kind {
        AuthKind::Password => {
            let var = a.password_env.clone().expect("checked by Config::check");
            match std::env::var(&var) {
                Ok(p) if !p.is_empty() => Auth::Password { username: user, password: Secret::new(p) },
                _ => return Err(StartError::PasswordMissing { file: file.to_string(), key: format!("{key}.password_env"), var }),
            }
        }
        AuthKind::Bearer => {
            let source = if let Some(v) = &a.token_env {
                TokenSource::Env(v.clone())
            } else if let Some(p) = &a.token_file {
                TokenSource::File(config.resolve(p))
            } else {
                TokenSource::Command(a.token_command.clone().expect("checked by Config::check"))
            };
            Auth::Bearer { user, source }
        }
    })
}
