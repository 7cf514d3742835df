//! The systemd units of deploy/: `systemd-analyze security` exposure of 4.0 or lower,
//! `systemd-analyze verify` clean (with the binary path pointed at the built agent), the notify
//! protocol and a reload that can fail, and install steps that leave the test scripts out.
//! Where systemd-analyze is not installed the systemd-analyze checks say so and pass (CI
//! requires it: .ci/run).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = ["ucwa-agent.service", "ucwa-agent@.service", "ucwa-agent-shard@.service"];
/// The highest exposure `systemd-analyze security` may give a shipped unit (its scale: 0–10).
const MAX_EXPOSURE: f64 = 4.0;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text(name: &str) -> String {
    std::fs::read_to_string(root().join("deploy").join(name)).unwrap()
}

/// The values of `key=` in the unit (every occurrence, in order).
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

/// The systemd version of systemd-analyze ("systemd 252 (252.38-1~deb12u1)"), or None (with a
/// line saying the check is skipped) when it is not installed.
fn systemd_version(check: &str) -> Option<u32> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let version = text.split_whitespace().nth(1).and_then(|v| v.parse().ok());
            Some(version.unwrap_or_else(|| panic!("systemd-analyze --version: {text}")))
        }
        _ => {
            // Straight to standard error, past the test harness's capture: shown by every run.
            let _ = writeln!(std::io::stderr(), "SKIPPED {check}: systemd-analyze is not installed (apt-get install systemd); CI requires it");
            None
        }
    }
}

/// The unit as the systemd 252-and-older drop-in of its comments makes it: Type=notify, and
/// ExecReload= the check and then the signal.
fn for_systemd_252(unit: &str) -> String {
    let mut out = String::new();
    for line in unit.lines() {
        if line == "Type=notify-reload" {
            out.push_str("Type=notify\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("ExecReload=") {
            out.push_str("ExecReload=/bin/kill -HUP $MAINPID\n");
        }
    }
    out
}

/// `unit` written into `dir` as `file`, the agent's path pointed at the built binary (verify
/// insists that an ExecStart= binary exists).
fn write_unit(dir: &Path, file: &str, unit: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, unit.replace("/usr/local/bin/ucwa-agent", env!("CARGO_BIN_EXE_ucwa-agent"))).unwrap();
    path
}

/// `systemd-analyze security --offline=yes`: the overall exposure, and whether
/// `--threshold` (exposure × 10) passed.
fn exposure(path: &Path) -> (f64, bool, String) {
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
    let o = Command::new("systemd-analyze").args(["security", "--offline=yes", &threshold]).arg(path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let line = text.lines().find(|l| l.contains("Overall exposure level for")).unwrap_or_else(|| panic!("{}: no overall exposure in:\n{text}", path.display()));
    let level: f64 = line.split(": ").nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    (level, o.status.success(), text)
}

#[test]
fn every_unit_is_exposed_at_most_4() {
    let Some(_) = systemd_version("systemd-analyze security") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        let unit = unit_text(name);
        for (variant, text) in [("", unit.clone()), (" (systemd 252 drop-in)", for_systemd_252(&unit))] {
            let (level, passed, out) = exposure(&write_unit(dir.path(), name, &text));
            println!("{name}{variant}: overall exposure {level}");
            assert!(level <= MAX_EXPOSURE && passed, "{name}{variant}: exposure {level} > {MAX_EXPOSURE}:\n{out}");
        }
    }
    // The check bites: a unit without the sandbox (as the units were) is far above.
    let bare = "[Service]\nType=simple\nUser=ucwa\nExecStart=/usr/local/bin/ucwa-agent run\nNoNewPrivileges=true\nProtectSystem=strict\nProtectHome=true\nPrivateTmp=true\n";
    let (level, passed, _) = exposure(&write_unit(dir.path(), "bare.service", bare));
    println!("a unit without the sandbox: overall exposure {level}");
    assert!(level > MAX_EXPOSURE && !passed, "{level}");
}

/// `systemd-analyze verify` of the unit file: its exit status and every line it printed, less
/// the one that systemd 252 and older print for Type=notify-reload (253) when `allow_new_type`.
fn verify(path: &Path, version: u32, allow_new_type: bool) -> (bool, Vec<String>) {
    let o = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(path).env("SYSTEMD_LOG_LEVEL", "notice").output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let complaints = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(allow_new_type && version < 253 && l.ends_with("Failed to parse service type, ignoring: notify-reload")))
        .map(String::from)
        .collect();
    (o.status.success(), complaints)
}

#[test]
fn every_unit_verifies() {
    let Some(version) = systemd_version("systemd-analyze verify") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        // A template is verified as an instance of it.
        let file = name.replace("@.", if name.contains("shard") { "@1." } else { "@alice." });
        let unit = unit_text(name);
        for (variant, text, allow_new_type) in [("", unit.clone(), true), (" (systemd 252 drop-in)", for_systemd_252(&unit), false)] {
            let (ok, complaints) = verify(&write_unit(dir.path(), &file, &text), version, allow_new_type);
            assert!(ok && complaints.is_empty(), "systemd {version}: verify {file}{variant}: {complaints:#?}");
            println!("systemd {version}: verify {file}{variant}: clean");
        }
        // The check bites: a misspelt key is reported.
        let typo = unit.replace("\nWatchdogSec=", "\nWatchdogSecs=");
        let (_, complaints) = verify(&write_unit(dir.path(), &file, &typo), version, true);
        assert!(complaints.iter().any(|l| l.contains("WatchdogSecs")), "{name}: {complaints:?}");
    }
}

#[test]
fn the_units_notify_and_a_rejected_reload_fails() {
    for name in UNITS {
        let unit = unit_text(name);
        assert_eq!(values(&unit, "Type"), ["notify-reload"], "{name}");
        assert_eq!(values(&unit, "NotifyAccess"), ["main"], "{name}: the agent notifies (also what the watchdog pings need)");
        assert_eq!(values(&unit, "WatchdogSec"), ["60s"], "{name}");
        // The reload runs `check` on what `run` reads: the same --config (and --shard).
        let start = values(&unit, "ExecStart")[0];
        let reload = values(&unit, "ExecReload");
        assert_eq!(reload.len(), 1, "{name}: {reload:?}");
        assert!(reload[0].starts_with("/usr/local/bin/ucwa-agent check "), "{name}: {reload:?}");
        let arg = |line: &str, flag: &str| {
            let words: Vec<String> = line.split_whitespace().map(|w| w.trim_matches('\'').replace("$${", "${")).collect();
            words.iter().position(|w| w == flag).map(|i| words[i + 1].clone())
        };
        assert_eq!(arg(start, "--config"), arg(reload[0], "--config"), "{name}");
        assert!(arg(start, "--config").is_some(), "{name}");
        assert_eq!(arg(start, "--shard"), arg(reload[0], "--shard"), "{name}");
        assert!(!reload[0].contains("kill"), "{name}: Type=notify-reload sends the signal itself");
    }
}

#[test]
fn the_install_steps_leave_out_the_test_scripts() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut loops = 0;
    for (file, text) in std::iter::once(("README.md".to_string(), readme)).chain(UNITS.iter().map(|u| (u.to_string(), unit_text(u)))) {
        for line in text.lines() {
            assert!(
                !(line.contains("install ") && line.contains("scripts/*.lua") && !line.contains("*_test.lua")),
                "{file}: copies the *_test.lua files too: {line}"
            );
            let Some(start) = line.find("for f in scripts/*.lua") else {
                continue;
            };
            loops += 1;
            // Run it, from a copy of the repository's scripts, into a folder of our own.
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("installed");
            std::fs::create_dir(&target).unwrap();
            std::fs::create_dir(dir.path().join("scripts")).unwrap();
            for f in ["call_log.lua", "call_log_test.lua"] {
                std::fs::copy(root().join("scripts").join(f), dir.path().join("scripts").join(f)).unwrap();
            }
            let step = line[start..].replace("/etc/ucwa-agent/alice/scripts/", "installed/").replace("/etc/ucwa-agent/scripts/", "installed/");
            assert!(step.contains("installed/"), "{file}: {line}");
            let o = Command::new("sh").args(["-c", &step]).current_dir(dir.path()).output().unwrap();
            assert!(o.status.success(), "{file}: {step}: {}", String::from_utf8_lossy(&o.stderr));
            let mut installed: Vec<String> = std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            installed.sort();
            assert_eq!(installed, ["call_log.lua"], "{file}: {step}");
        }
    }
    assert!(loops >= 3, "README's and the units' install steps: {loops}");
}
