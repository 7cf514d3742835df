//! The tables of the file that the configuration and its accounts both name: `[auth]` (also
//! an account's `auth`) and `[[account]]`.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// MsRtcOAuth password grant (Skype for Business Server on-premises).
    Password,
    /// A bearer token obtained elsewhere (Skype for Business Online / Azure AD).
    Bearer,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub kind: AuthKind,
    /// The account (required for `password`; a label for `bearer`).
    #[serde(default)]
    pub username: Option<String>,
    /// `password`: the environment variable that holds the password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// `bearer`: the environment variable that holds the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `bearer`: a file that holds the token (re-read when it changes).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `bearer`: a command (program and arguments) that prints the token.
    #[serde(default)]
    pub token_command: Option<Vec<String>>,
}

/// One `[[account]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// A label: logs, metrics, `/healthz`, `agent.account.name`, the state folder.
    pub name: String,
    /// As `server.discover`; unset: `server.discover`.
    #[serde(default)]
    pub discover: Option<String>,
    /// As `[auth]`; may be left out on the embedded simulator (the account signs in as the
    /// simulator user `<name>@contoso.com`, or `<name>` when it holds an `@`).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Scripts that run for this account only, besides `scripts.dir` (a script here replaces
    /// the shared one of the same name).
    #[serde(default)]
    pub scripts_dir: Option<PathBuf>,
}
