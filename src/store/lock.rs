//! One agent per state directory: `<state.dir>/agent.lock`, locked exclusively for as long as
//! the agent runs (the OS drops the lock when the process ends, however it ends). The file
//! holds the holder's pid, so a second agent can say who has it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{dir} is in use by another ucwa-agent (pid {pid}); one agent per state.dir")]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join("agent.lock");
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        // O_NOFOLLOW: a symlink planted as agent.lock would have the pid written over its target.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new().read(true).write(true).create(true).truncate(false).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(|source| match source
                .raw_os_error()
            {
                Some(libc::ELOOP) => LockError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("is a symbolic link; the lock file must be a plain file (remove the link)"),
                },
                _ => LockError::Io { path: path.clone(), source },
            })?
        };
        if !file.metadata().map_err(io)?.is_file() {
            return Err(LockError::Io { path: path.clone(), source: std::io::Error::other("is not a plain file") });
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = match pid.trim() {
                    "" => "unknown".to_string(),
                    p => p.to_string(),
                };
                return Err(LockError::Held { dir: dir.to_path_buf(), pid });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&std::process::id().to_string()) && err.contains(&dir.path().display().to_string()), "{err}");
        drop(held);
        DirLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_symlink_planted_as_the_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, "keep me").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&canary, state.join("agent.lock")).unwrap();
        let err = DirLock::acquire(&state).unwrap_err().to_string();
        assert!(err.contains("agent.lock") && err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "keep me");
    }
}
