//! systemd's service notification protocol (`sd_notify(3)`), spoken directly: one datagram per
//! message to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket). No C library is needed. Without `$NOTIFY_SOCKET` (not under systemd, or
//! `Type=simple`) every call does nothing.
//!
//! What the agent sends (`Type=notify-reload` in `deploy/*.service`):
//! - `READY=1` once every account has signed in and polls, or has had its first attempt fail
//!   (`STATUS=` then says which retry);
//! - `RELOADING=1` with `MONOTONIC_USEC=` on SIGHUP, then `READY=1` when the reload is done;
//!   a rejected reload also sends `STATUS=configuration reload rejected: …` and `ERRNO=`;
//! - `WATCHDOG=1` every half `WatchdogSec=` while every account's event-channel loop runs;
//! - `STOPPING=1` at shutdown.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; `None` inside when not under a service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET` (read once; the variable stays for child processes).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty());
        Notifier { socket: target.and_then(|t| Self::connect(&t.to_string_lossy())) }
    }

    fn connect(target: &str) -> Option<(UnixDatagram, std::os::unix::net::SocketAddr)> {
        let addr = match target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(target).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some((socket, addr))
    }

    /// Whether anything listens (a service manager gave a socket).
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (`KEY=value` lines). Failures are logged, never fatal: the agent runs
    /// the same with or without a service manager.
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(error) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(%error, "cannot notify the service manager");
            }
        }
    }

    /// `STATUS=` text: one line (a newline would start another assignment).
    pub fn status(&self, text: &str) {
        let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(400).collect();
        self.send(&format!("STATUS={line}"));
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC=` that `Type=notify-reload` requires.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload times with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_MONOTONIC exists
    // on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set for this process
/// (`$WATCHDOG_PID` absent or ours). Also gives the full interval, the most a loop may be silent.
pub fn watchdog() -> Option<(Duration, Duration)> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    let full = Duration::from_micros(usec);
    Some((full / 2, full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_socket_given_by_path_and_by_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { socket: Notifier::connect(path.to_str().unwrap()) };
        assert!(n.active());
        n.reloading();
        n.status("two\nlines");
        let mut buf = [0u8; 256];
        let got = {
            let n = listener.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert!(got.starts_with("RELOADING=1\nMONOTONIC_USEC=") && got.len() > 28, "{got}");
        let got = {
            let n = listener.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(got, "STATUS=two lines");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ucwa-agent-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier { socket: Notifier::connect(&format!("@{name}")) };
        n.send("READY=1");
        let got = {
            let n = abs.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(got, "READY=1");
        assert!(!Notifier { socket: None }.active());
    }
}
