//! A refused password is remembered in `state.dir/credentials-refused`, so that a supervisor
//! restarting the agent (systemd without `RestartPreventExitStatus`, Docker's restart policy,
//! Kubernetes) does not try it again and again: Active Directory locks an account after a few
//! bad attempts. The file holds a salted PBKDF2 hash of the password, never the password; a
//! start with another password (or after the file is deleted) tries again, and a successful
//! sign-in removes it.

use crate::ucwa::Auth;
use ring::pbkdf2;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

const FILE: &str = "credentials-refused";
const ITERATIONS: u32 = 100_000;

#[derive(Serialize, Deserialize)]
struct Mark {
    user: String,
    salt: String,
    hash: String,
    /// When, and what the pool said.
    at: String,
    reason: String,
}

/// The refusal on record for these credentials, if any: when, and the pool's reason.
pub struct Refused {
    pub at: String,
    pub reason: String,
    pub file: PathBuf,
}

fn hash(password: &str, salt: &[u8]) -> String {
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, NonZeroU32::new(ITERATIONS).expect("non-zero"), salt, password.as_bytes(), &mut out);
    hex(&out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// Only passwords are remembered: a bearer source may well give a new token next time.
fn password(auth: &Auth) -> Option<(&str, &str)> {
    match auth {
        Auth::Password { username, password } => Some((username.as_str(), password.expose())),
        Auth::Bearer { .. } => None,
    }
}

/// The refusal on record for exactly these credentials. A record for other credentials is
/// removed: they changed, so they are tried.
pub fn recorded(state_dir: &Path, auth: &Auth) -> Option<Refused> {
    let (user, pw) = password(auth)?;
    let file = state_dir.join(FILE);
    let mark: Mark = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    let same = mark.user == user && unhex(&mark.salt).is_some_and(|salt| hash(pw, &salt) == mark.hash);
    if !same {
        let _ = std::fs::remove_file(&file);
        return None;
    }
    Some(Refused { at: mark.at, reason: mark.reason, file })
}

/// Records that the pool refused these credentials.
pub fn record(state_dir: &Path, auth: &Auth, reason: &str) {
    let Some((user, pw)) = password(auth) else {
        return;
    };
    let salt: [u8; 16] = rand::random();
    let at = crate::date::iso_utc(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64));
    let mark = Mark { user: user.to_string(), salt: hex(&salt), hash: hash(pw, &salt), at, reason: reason.to_string() };
    let file = state_dir.join(FILE);
    if let Err(error) = std::fs::write(&file, serde_json::to_vec(&mark).expect("a mark serializes")) {
        tracing::warn!(file = %file.display(), %error, "cannot record the refused credentials");
    }
}

/// The credentials worked: forget any refusal.
pub fn clear(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ucwa::Secret;

    #[test]
    fn remembered_for_the_same_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let auth = |pw: &str| Auth::Password { username: "a@b.c".into(), password: Secret::new(pw) };
        assert!(recorded(dir.path(), &auth("wrong")).is_none());
        record(dir.path(), &auth("wrong"), "invalid_grant");
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("wrong\""), "the password itself is not stored: {text}");
        assert_eq!(recorded(dir.path(), &auth("wrong")).map(|r| r.reason).as_deref(), Some("invalid_grant"));
        assert!(recorded(dir.path(), &auth("fixed")).is_none(), "another password is tried");
        assert!(!dir.path().join(FILE).exists(), "and the record goes");
        record(dir.path(), &auth("wrong"), "x");
        clear(dir.path());
        assert!(recorded(dir.path(), &auth("wrong")).is_none());
    }
}
