//! How the agent's start and run end: why it could not start (`StartError`), how a run ended
//! (`RunEnd`), and the count of refused credentials that ends an account's run.

use crate::ucwa::UcwaError;
use std::time::Duration;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{file}: `{key}`: the environment variable `{var}` is not set (it must hold the password)")]
    PasswordMissing { file: String, key: String, var: String },
    #[error("{file}: `scripts.dir`: cannot read {dir}: {source}")]
    ScriptsDir { file: String, dir: String, source: std::io::Error },
    #[error("{file}: `{key}`: cannot read {dir}: {source}")]
    AccountScriptsDir { file: String, key: String, dir: String, source: std::io::Error },
    /// Another thing the file names that is not there (`Config::account_surroundings`).
    #[error("{file}: `{key}`: {message}")]
    Missing { file: String, key: String, message: String },
    #[error("{file}: `state.dir`: {source}")]
    State { file: String, source: crate::store::StoreError },
    #[error("{file}: `server.ca_file`: {message}")]
    CaFile { file: String, message: String },
    #[error("{file}: `metrics.listen`: cannot listen on {addr}: {source}")]
    Metrics { file: String, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{file}: `metrics.admin_token_env`: {message}")]
    AdminToken { file: String, message: String },
    #[error("{file}: `state.dir`: {source}")]
    Locked { file: String, source: crate::store::LockError },
    #[error("{file}: cannot start the embedded simulator on {listen} (`simulator.listen`): {source}")]
    Simulator { file: String, listen: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot watch the scripts directory {dir}: {source}")]
    Watch { dir: String, source: notify::Error },
}

/// How long running handlers may take to finish at shutdown.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Sign-in attempts the pool may refuse in a row (`invalid_grant`, a rejected bearer token)
/// before the agent stops: retrying a wrong password against Active Directory locks the account.
pub const MAX_CREDENTIAL_REFUSALS: u32 = 3;

/// How [`Agent::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Shut down as asked.
    Stopped,
    /// The pool refused the credentials [`MAX_CREDENTIAL_REFUSALS`] times in a row (the last reason).
    CredentialsRefused(String),
}

/// Credential refusals since the last successful sign-in.
#[derive(Default)]
pub(crate) struct Refusals(u32);

impl Refusals {
    /// Counts `error` if it is a refusal; at the limit, says so (one ERROR line) and gives the end.
    pub(crate) fn count(&mut self, error: &UcwaError) -> Option<RunEnd> {
        if !matches!(error, UcwaError::Credentials(_)) {
            return None;
        }
        self.0 += 1;
        if self.0 < MAX_CREDENTIAL_REFUSALS {
            return None;
        }
        tracing::error!(
            %error,
            attempts = self.0,
            "the pool refused the credentials {MAX_CREDENTIAL_REFUSALS} times in a row; stopping (fix [auth] or the secret it names, then start the agent again)"
        );
        Some(RunEnd::CredentialsRefused(error.to_string()))
    }
}
