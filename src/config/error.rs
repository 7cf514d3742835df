//! What a configuration that cannot be used says: the file, the key and what was expected.

use std::borrow::Cow;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}{}", if source.kind() == std::io::ErrorKind::NotFound { " (give its path with --config FILE; without it, config.toml in the current folder is read)" } else { "" })]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: Cow<'static, str>, message: String },
}
