//! How the agent proves who it is: the MsRtcOAuth password grant (on-premises), or a bearer
//! token obtained elsewhere (Skype for Business Online / Azure AD) from an environment
//! variable, a file (re-read when it changes) or a command (run again when the token is rejected).

use super::{Secret, UcwaError};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug)]
pub enum Auth {
    /// MsRtcOAuth `grant_type=password`.
    Password { username: String, password: Secret },
    /// `Authorization: Bearer <token>` with a token from `source`.
    Bearer { user: String, source: TokenSource },
}

impl Auth {
    /// The account name (for logs, the saved position and the default EndpointId).
    pub fn user(&self) -> &str {
        match self {
            Auth::Password { username, .. } => username,
            Auth::Bearer { user, .. } => user,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The variable's value, read again when the token is rejected.
    Env(String),
    /// The file's content (trimmed), read again when the file changes or the token is rejected.
    File(PathBuf),
    /// The command's standard output (trimmed), run again when the token is rejected.
    Command(Vec<String>),
}

/// How long a token command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl TokenSource {
    /// Where the token comes from, for messages (never the token).
    pub fn describe(&self) -> String {
        match self {
            TokenSource::Env(v) => format!("environment variable {v}"),
            TokenSource::File(p) => format!("file {}", p.display()),
            TokenSource::Command(c) => {
                format!("command `{}`", c.first().map(String::as_str).unwrap_or(""))
            }
        }
    }

    /// The file's modification time, to notice a new token (None for other sources).
    pub fn stamp(&self) -> Option<SystemTime> {
        match self {
            TokenSource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            _ => None,
        }
    }

    /// Reads or produces the token.
    pub async fn fetch(&self) -> Result<Secret, UcwaError> {
        let fail = |why: String| UcwaError::SignIn(format!("bearer token from {}: {why}", self.describe()));
        let raw = match self {
            TokenSource::Env(var) => std::env::var(var).map_err(|_| fail("not set".into()))?,
            TokenSource::File(path) => tokio::fs::read_to_string(path).await.map_err(|e| fail(e.to_string()))?,
            TokenSource::Command(argv) => {
                let (program, args) = argv.split_first().ok_or_else(|| fail("empty command".into()))?;
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
                let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
                    .await
                    .map_err(|_| fail(format!("did not finish within {} s", COMMAND_TIMEOUT.as_secs())))?
                    .map_err(|e| fail(format!("cannot run: {e}")))?;
                if !out.status.success() {
                    // stderr's first line only: it says what went wrong, and keeps logs short.
                    let err = String::from_utf8_lossy(&out.stderr);
                    return Err(fail(format!("exited with {}: {}", out.status, err.lines().next().unwrap_or(""))));
                }
                String::from_utf8(out.stdout).map_err(|_| fail("output is not UTF-8".into()))?
            }
        };
        let token = raw.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        if token.is_empty() {
            return Err(fail("empty".into()));
        }
        Ok(Secret::new(token))
    }
}
