//! What belongs to the process rather than to one account, for `/metrics` and `/healthz`: the
//! build, the outcome of the last configuration reload, and the standard `process_*` metrics
//! of Prometheus client libraries (read from `/proc/self`; left out where there is no `/proc`).

use std::fmt::Write;
use std::sync::Mutex;
use std::time::SystemTime;

/// The last configuration (re)load: at start, then each SIGHUP.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub ok: bool,
    /// When the configuration was last loaded or reloaded successfully.
    pub ok_at: SystemTime,
    /// Why the last reload was rejected (cleared by a good one).
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct ProcessStatus {
    reload: Mutex<ReloadOutcome>,
}

impl Default for ProcessStatus {
    fn default() -> Self {
        ProcessStatus { reload: Mutex::new(ReloadOutcome { ok: true, ok_at: SystemTime::now(), error: None }) }
    }
}

impl ProcessStatus {
    /// Records a reload's outcome (`Err`: what was rejected).
    pub fn reloaded(&self, outcome: Result<(), String>) {
        let mut r = self.reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.ok = outcome.is_ok();
        if r.ok {
            r.ok_at = SystemTime::now();
        }
        r.error = outcome.err();
    }

    pub fn last_reload(&self) -> ReloadOutcome {
        self.reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The process-wide families, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let r = self.last_reload();
        let at = r.ok_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP ucwa_agent_build_info The agent's version, as a label; always 1.\n# TYPE ucwa_agent_build_info gauge\nucwa_agent_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP ucwa_config_last_reload_success 1 if the last configuration reload (SIGHUP) was applied, 0 if it was rejected.\n# TYPE ucwa_config_last_reload_success gauge\nucwa_config_last_reload_success {}",
            r.ok as u8
        );
        let _ = writeln!(
            out,
            "# HELP ucwa_config_last_reload_success_timestamp_seconds When the configuration was last loaded or reloaded successfully (Unix time).\n# TYPE ucwa_config_last_reload_success_timestamp_seconds gauge\nucwa_config_last_reload_success_timestamp_seconds {}",
            at
        );
        if let Some(p) = ProcFigures::read() {
            p.render(out);
        }
    }
}

/// `process_*` as the Prometheus client libraries export them.
struct ProcFigures {
    cpu_seconds: f64,
    start_time: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    threads: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

impl ProcFigures {
    fn read() -> Option<ProcFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let num = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        // Clock ticks per second: 100 on every Linux architecture the agent is built for.
        const TICKS: f64 = 100.0;
        let cpu_seconds = (num(14)? + num(15)?) as f64 / TICKS;
        let boot = std::fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let start_time = boot as f64 + num(22)? as f64 / TICKS;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| l.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse().ok()));
        Some(ProcFigures {
            cpu_seconds,
            start_time,
            virtual_bytes: num(23)?,
            resident_bytes: kib("VmRSS:")? * 1024,
            threads: num(20)?,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            max_fds,
        })
    }

    fn render(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", self.cpu_seconds.to_string());
        family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", self.start_time.to_string());
        family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", self.virtual_bytes.to_string());
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", self.resident_bytes.to_string());
        family("process_threads", "gauge", "Number of OS threads in the process.", self.threads.to_string());
        family("process_open_fds", "gauge", "Number of open file descriptors.", self.open_fds.to_string());
        if let Some(max) = self.max_fds {
            family("process_max_fds", "gauge", "Maximum number of open file descriptors.", max.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read_and_rendered() {
        let s = ProcessStatus::default();
        let mut out = String::new();
        s.render(&mut out);
        for family in [
            "ucwa_agent_build_info{version=",
            "ucwa_config_last_reload_success 1",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(out.contains(family), "{family} in {out}");
        }
        s.reloaded(Err("bad.toml: TOML parse error".into()));
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("ucwa_config_last_reload_success 0"), "{out}");
        assert!(!out.contains("ucwa_config_last_reload_success_timestamp_seconds 0\n"), "the last success's time stays: {out}");
    }
}
