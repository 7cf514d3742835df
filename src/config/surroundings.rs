//! What `run` needs from outside the file: one list of checks, used by `run` (each account
//! before it opens, the first problem stops it) and by `check` (every problem, reported).
//! The configuration itself is checked on load; these are the environment variables, files
//! and folders it names.

use super::{AccountSpec, Config, ConfigError};
use std::path::PathBuf;

/// Something the file names that is not there.
#[derive(Debug)]
pub enum Missing {
    /// `password_env` names a variable that is not set (or empty).
    PasswordEnv { key: String, var: String },
    /// `token_env` names a variable that is not set (or empty).
    TokenEnv { key: String, var: String },
    /// `token_file` cannot be read.
    TokenFile { key: String, path: PathBuf, source: std::io::Error },
    /// An account's own `scripts_dir` cannot be read.
    AccountScriptsDir { key: String, dir: PathBuf, source: std::io::Error },
    /// `scripts.dir` cannot be read.
    ScriptsDir { dir: PathBuf, source: std::io::Error },
    /// `metrics.admin_token_env` names a variable that is unset or holds too short a token.
    AdminToken { why: String },
}

impl Missing {
    /// The key that names what is missing.
    pub fn key(&self) -> &str {
        match self {
            Missing::PasswordEnv { key, .. } | Missing::TokenEnv { key, .. } | Missing::TokenFile { key, .. } | Missing::AccountScriptsDir { key, .. } => key,
            Missing::ScriptsDir { .. } => "scripts.dir",
            Missing::AdminToken { .. } => "metrics.admin_token_env",
        }
    }

    /// What is wrong, for an admin.
    pub fn message(&self) -> String {
        match self {
            Missing::PasswordEnv { var, .. } => format!("the environment variable `{var}` is not set (it must hold the password)"),
            Missing::TokenEnv { var, .. } => format!("the environment variable {var} is not set (it holds the token)"),
            Missing::TokenFile { path, source, .. } => format!("cannot read {}: {source}", path.display()),
            Missing::AccountScriptsDir { dir, source, .. } | Missing::ScriptsDir { dir, source } => format!("cannot read {}: {source}", dir.display()),
            Missing::AdminToken { why } => why.clone(),
        }
    }
}

impl Config {
    /// What one account needs from outside the file: the secrets its `[auth]` names and its
    /// own scripts folder, in that order.
    pub fn account_surroundings(&self, account: &AccountSpec) -> Vec<Missing> {
        let unset = |var: &str| std::env::var(var).map_or(true, |v| v.is_empty());
        let mut problems = Vec::new();
        if let Some(auth) = &account.auth {
            let at = &account.key;
            if let Some(var) = auth.password_env.as_deref().filter(|v| unset(v)) {
                problems.push(Missing::PasswordEnv { key: format!("{at}.password_env"), var: var.to_string() });
            }
            if let Some(var) = auth.token_env.as_deref().filter(|v| unset(v)) {
                problems.push(Missing::TokenEnv { key: format!("{at}.token_env"), var: var.to_string() });
            }
            if let Some(file) = &auth.token_file {
                let path = self.resolve(file);
                if let Err(source) = std::fs::File::open(&path) {
                    problems.push(Missing::TokenFile { key: format!("{at}.token_file"), path, source });
                }
            }
        }
        for dir in account.scripts_dirs.iter().skip(1) {
            if let Err(source) = std::fs::read_dir(dir) {
                problems.push(Missing::AccountScriptsDir { key: format!("account.{}.scripts_dir", account.label()), dir: dir.clone(), source });
            }
        }
        problems
    }

    /// Everything the file names that is not there: every account's surroundings, the
    /// console's admin token, then `scripts.dir` (`check` reports them all).
    pub fn surroundings(&self) -> Vec<Missing> {
        let mut problems: Vec<Missing> = self.accounts().unwrap_or_default().iter().flat_map(|a| self.account_surroundings(a)).collect();
        problems.extend(self.admin_token_missing());
        let dir = self.scripts_dir();
        if let Err(source) = std::fs::read_dir(&dir) {
            problems.push(Missing::ScriptsDir { dir, source });
        }
        problems
    }

    /// The console's admin token, when `metrics.admin_token_env` names one that cannot serve.
    pub fn admin_token_missing(&self) -> Option<Missing> {
        let var = self.metrics.admin_token_env.as_deref()?;
        super::admin_token(var).err().map(|why| Missing::AdminToken { why })
    }

    /// `surroundings`, as configuration errors that name the file and the key.
    pub fn check_surroundings(&self) -> Vec<ConfigError> {
        self.surroundings().iter().map(|m| self.invalid(m.key().to_string(), m.message())).collect()
    }
}
