//! The whole file: its sections and accounts, read, parsed and checked (`Config::load`).

use super::error::ConfigError;
use super::sections::{Discover, LogConfig, MetricsConfig, ScriptsConfig, ServerConfig, SimulatorConfig, StateConfig};
use super::tables::{AccountConfig, AuthConfig, AuthKind};
use serde::Deserialize;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `makeMeAvailable`'s `SupportedModalities` may list (the makeMeAvailable reference).
const MODALITIES: [&str; 7] = ["Messaging", "Audio", "Video", "PhoneAudio", "ApplicationSharing", "DataCollaboration", "PanoramicVideo"];

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub scripts: ScriptsConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub simulator: SimulatorConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// `[[account]]`: several accounts in one agent; empty: the one account of `[auth]`.
    #[serde(default, rename = "account")]
    pub accounts: Vec<AccountConfig>,
    /// Where the file was read from; relative paths in it are relative to its folder.
    #[serde(skip)]
    pub path: PathBuf,
    /// `[scripts.calendars]` as read when the file was: once per load (and SIGHUP), shared by
    /// every account's scripts.
    #[serde(skip)]
    calendars_read: std::collections::BTreeMap<String, std::sync::Arc<crate::script::Calendar>>,
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and checks configuration text that was read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        config.path = path.to_path_buf();
        config.check()?;
        config.calendars_read = config.read_calendars()?;
        // Each modality once, spelled as the reference lists it (checked above).
        let mut modalities: Vec<String> = Vec::new();
        for m in &config.server.modalities {
            let listed = MODALITIES.iter().find(|k| k.eq_ignore_ascii_case(m)).map_or(m.as_str(), |k| *k);
            if !modalities.iter().any(|x| x == listed) {
                modalities.push(listed.to_string());
            }
        }
        config.server.modalities = modalities;
        Ok(config)
    }

    pub(super) fn invalid(&self, key: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.clone(), key: key.into(), message: message.into() }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let discover = self.discover()?;
        if self.accounts.is_empty() {
            if discover != Discover::Embedded && self.auth.is_none() {
                return Err(self.invalid("auth", "an [auth] table is required when server.discover is a pool URL"));
            }
            if let Some(auth) = &self.auth {
                self.check_auth(auth, "auth")?;
            }
        } else {
            self.check_accounts()?;
        }
        if let Some(ca) = &self.server.ca_file {
            let path = self.resolve(ca);
            if let Err(e) = std::fs::metadata(&path) {
                return Err(self.invalid("server.ca_file", format!("cannot read {}: {e}", path.display())));
            }
        }
        let s = &self.server;
        if !(180..=1800).contains(&s.poll_timeout_secs) {
            return Err(self.invalid("server.poll_timeout_secs", format!("expected 180 to 1800 seconds, got {}", s.poll_timeout_secs)));
        }
        if !(10..=240).contains(&s.keepalive_secs) {
            return Err(self.invalid("server.keepalive_secs", format!("expected 10 to 240 seconds, got {}", s.keepalive_secs)));
        }
        if s.max_backoff_secs == 0 {
            return Err(self.invalid("server.max_backoff_secs", "expected at least 1 second"));
        }
        if s.user_agent.is_empty() || s.user_agent.len() > 100 {
            return Err(self.invalid("server.user_agent", "expected 1 to 100 characters"));
        }
        if s.endpoint_id.as_deref().is_some_and(|id| id.trim().is_empty()) {
            return Err(self.invalid("server.endpoint_id", "expected an id, not an empty string (leave it out: one is derived from the user name)"));
        }
        // (Any case, repeats allowed, as before this check: `modalities()` sends each once, spelled as listed.)
        for (i, m) in s.modalities.iter().enumerate() {
            if !MODALITIES.iter().any(|k| k.eq_ignore_ascii_case(m)) {
                return Err(self.invalid("server.modalities", format!("entry {} ({m:?}): expected one of {}", i + 1, MODALITIES.join(", "))));
            }
        }
        let sc = &self.scripts;
        let ranges: [(&'static str, u64, u64, u64, &str); 7] = [
            ("scripts.memory_limit_mb", sc.memory_limit_mb, 1, 16_384, "MiB"),
            ("scripts.instruction_limit", sc.instruction_limit, 1000, 1_000_000_000_000, "instructions"),
            ("scripts.handler_timeout_ms", sc.handler_timeout_ms, 1, 3_600_000, "milliseconds"),
            ("scripts.reload_debounce_ms", sc.reload_debounce_ms, 0, 60_000, "milliseconds"),
            ("scripts.state_max_bytes", sc.state_max_bytes, 1024, 1 << 30, "bytes"),
            ("scripts.traces_per_script", sc.traces_per_script, 0, 10_000, "traces"),
            ("scripts.workers", sc.workers, 0, 1024, "threads (0: one per CPU)"),
        ];
        for (key, value, min, max, unit) in ranges {
            if !(min..=max).contains(&value) {
                return Err(self.invalid(key, format!("expected {min} to {max} {unit}, got {value}")));
            }
        }
        for (i, host) in sc.http_allow.iter().enumerate() {
            if host.is_empty() || host.contains('/') || host.contains("://") {
                return Err(
                    self.invalid("scripts.http_allow", format!("entry {} ({host:?}): expected a host name or host:port, such as \"hooks.example.com\"", i + 1))
                );
            }
        }
        if let Some(name) = &sc.time_zone {
            crate::script::zone::by_name(name).map_err(|e| self.invalid("scripts.time_zone", e))?;
        }
        for (name, table) in &sc.config {
            if !table.is_object() {
                return Err(self.invalid("scripts.config", format!("[scripts.config.{name}] must be a table")));
            }
        }
        if self.state.journal_max_events < 100 {
            return Err(self.invalid("state.journal_max_events", "expected at least 100"));
        }
        if !(1..=1_000_000).contains(&self.state.open_databases) {
            return Err(self.invalid("state.open_databases", "expected 1 to 1000000"));
        }
        match (&self.metrics.tls_cert_file, &self.metrics.tls_key_file) {
            (Some(_), None) => return Err(self.invalid("metrics.tls_key_file", "expected with metrics.tls_cert_file (the certificate's private key, PEM)")),
            (None, Some(_)) => return Err(self.invalid("metrics.tls_cert_file", "expected with metrics.tls_key_file (the certificate chain, PEM)")),
            _ => {}
        }
        if let Some(files) = self.metrics_tls() {
            if let Err(e) = files.acceptor() {
                // The key file's faults: no PEM key in it, or a key that does not fit the certificate.
                let text = e.to_string();
                let key = if text.contains("private key") || text.contains("does not go with") { "metrics.tls_key_file" } else { "metrics.tls_cert_file" };
                return Err(self.invalid(key, e.to_string()));
            }
        }
        for (user, hash) in &self.metrics.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(self.invalid("metrics.basic_auth_users", format!("{user:?}: a user name is not empty and has no `:`")));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(self.invalid(
                    format!("metrics.basic_auth_users.{user}"),
                    "expected a bcrypt hash of the password ($2y$10$…, e.g. from `htpasswd -nBC 10 USER`), not the password itself",
                ));
            }
        }
        if let Some(var) = &self.metrics.admin_token_env {
            if var.trim().is_empty() || var.contains('=') {
                return Err(self
                    .invalid("metrics.admin_token_env", "expected the name of the environment variable that holds the console's admin token (not the token)"));
            }
        }
        if let Some(level) = &self.log.level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
                return Err(self.invalid("log.level", format!("expected RUST_LOG-style directives (`info`, `debug`, `info,script=debug`): {e}")));
            }
        }
        let sim = &self.simulator;
        if let Some(addr) = sim.listen {
            if !addr.ip().is_loopback() {
                return Err(self.invalid("simulator.listen", format!("expected a loopback address (127.0.0.1:PORT or [::1]:PORT), got {addr}")));
            }
        }
        if !(sim.calls_per_minute >= 0.0 && sim.calls_per_minute <= 60000.0) {
            return Err(self.invalid("simulator.calls_per_minute", "expected 0 to 60000"));
        }
        if !(sim.ring_secs >= 0.0 && sim.ring_secs <= 300.0) {
            return Err(self.invalid("simulator.ring_secs", "expected 0 to 300 seconds"));
        }
        if !(sim.call_duration_secs >= 0.0 && sim.call_duration_secs <= 86_400.0) {
            return Err(self.invalid("simulator.call_duration_secs", "expected 0 to 86400 seconds"));
        }
        Ok(())
    }

    pub(super) fn check_auth(&self, auth: &AuthConfig, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| -> Cow<'static, str> {
            if k.is_empty() {
                at.to_string().into()
            } else {
                format!("{at}.{k}").into()
            }
        };
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        match auth.kind {
            AuthKind::Password => {
                if blank(&auth.username) {
                    return Err(self.invalid(key("username"), "expected a user name such as \"alice@contoso.com\""));
                }
                if blank(&auth.password_env) {
                    return Err(self.invalid(key("password_env"), "expected the name of the environment variable that holds the password"));
                }
                if auth.token_env.is_some() || auth.token_file.is_some() || auth.token_command.is_some() {
                    return Err(self.invalid(key("kind"), "token_env, token_file and token_command go with kind = \"bearer\""));
                }
            }
            AuthKind::Bearer => {
                let sources = [auth.token_env.is_some(), auth.token_file.is_some(), auth.token_command.is_some()];
                if sources.iter().filter(|s| **s).count() != 1 {
                    return Err(self.invalid(key(""), "kind = \"bearer\" takes exactly one of token_env, token_file, token_command"));
                }
                if auth.password_env.is_some() {
                    return Err(self.invalid(key("password_env"), "goes with kind = \"password\""));
                }
                if auth.token_command.as_ref().is_some_and(|c| c.is_empty() || c[0].is_empty()) {
                    return Err(self.invalid(key("token_command"), "expected a program and its arguments, e.g. [\"/usr/local/bin/get-token\", \"--pool\"]"));
                }
            }
        }
        Ok(())
    }

    /// `server.discover`, checked: plain http is allowed only to a loopback host.
    pub fn discover(&self) -> Result<Discover, ConfigError> {
        self.discover_of(&self.server.discover, "server.discover")
    }

    /// A `discover` value (`key` names where it was read), checked as `server.discover` is.
    pub(super) fn discover_of(&self, raw: &str, key: &str) -> Result<Discover, ConfigError> {
        let key: Cow<'static, str> = key.to_string().into();
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("embedded") {
            return Ok(Discover::Embedded);
        }
        let url = url::Url::parse(raw)
            .map_err(|e| self.invalid(key.clone(), format!("expected \"embedded\" or a URL such as \"https://lyncdiscover.contoso.com/\" ({e})")))?;
        match url.scheme() {
            "https" => Ok(Discover::Url(url)),
            "http" if crate::ucwa::origin::is_loopback(&url) => Ok(Discover::Url(url)),
            "http" => Err(self.invalid(key.clone(), "plain http:// is refused except to a loopback host; use https://")),
            other => Err(self.invalid(key.clone(), format!("expected an https:// URL, got scheme `{other}`"))),
        }
    }

    /// A path from the file, made absolute against the file's folder.
    /// `[metrics]`'s certificate and key, resolved against the file's folder, when both are set.
    pub fn metrics_tls(&self) -> Option<crate::tls::TlsFiles> {
        let m = &self.metrics;
        Some(crate::tls::TlsFiles { cert: self.resolve(m.tls_cert_file.as_ref()?), key: self.resolve(m.tls_key_file.as_ref()?) })
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        let base = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        base.join(p)
    }

    pub fn scripts_dir(&self) -> PathBuf {
        self.resolve(&self.scripts.dir)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.state.dir)
    }

    pub fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.scripts.handler_timeout_ms)
    }

    /// What `[scripts]` means to the script host (limits, allowlist, per-script tables).
    pub fn script_settings(&self) -> crate::script::ScriptSettings {
        let s = &self.scripts;
        crate::script::ScriptSettings {
            limits: crate::script::Limits {
                memory_bytes: (s.memory_limit_mb as usize) << 20,
                instructions: s.instruction_limit,
                handler_timeout: self.handler_timeout(),
            },
            http_allow: s.http_allow.clone(),
            config: s.config.iter().map(|(k, v)| (k.clone(), self.absolute_secret_files(v))).collect(),
            max_consecutive_failures: s.max_consecutive_failures,
            state_max_bytes: s.state_max_bytes as usize,
            // (Checked when the file was read.)
            time_zone: s.time_zone.as_deref().and_then(|n| crate::script::zone::by_name(n).ok()).unwrap_or_else(crate::script::zone::system),
            calendars: self.calendars_read.clone(),
            traces_per_script: s.traces_per_script as usize,
            log_rate: Some(crate::script::LogRate::DEFAULT),
        }
    }

    /// Reads every `[scripts.calendars]` file; a bad one is refused naming its key.
    fn read_calendars(&self) -> Result<std::collections::BTreeMap<String, std::sync::Arc<crate::script::Calendar>>, ConfigError> {
        let mut read = std::collections::BTreeMap::new();
        for (name, path) in &self.scripts.calendars {
            let c = crate::script::Calendar::read(&self.resolve(path)).map_err(|e| self.invalid(format!("scripts.calendars.{name}"), e))?;
            read.insert(name.clone(), std::sync::Arc::new(c));
        }
        Ok(read)
    }

    /// `{ file = "rel" }` secret references made relative to this file's folder, as every
    /// path in it is.
    fn absolute_secret_files(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(o) if o.len() == 1 && o.get("file").is_some_and(Value::is_string) => {
                let file = self.resolve(std::path::Path::new(o["file"].as_str().unwrap_or_default()));
                serde_json::json!({ "file": file.display().to_string() })
            }
            Value::Object(o) => Value::Object(o.iter().map(|(k, m)| (k.clone(), self.absolute_secret_files(m))).collect()),
            Value::Array(items) => Value::Array(items.iter().map(|m| self.absolute_secret_files(m)).collect()),
            other => other.clone(),
        }
    }

    /// The simulator settings `discover = "embedded"` runs with.
    pub fn embedded_simulator(&self) -> crate::sim::SimConfig {
        crate::sim::SimConfig {
            calls_per_minute: self.simulator.calls_per_minute,
            ring_time: Duration::from_secs_f64(self.simulator.ring_secs),
            call_duration: Duration::from_secs_f64(self.simulator.call_duration_secs),
            quirks: self.simulator.quirks.clone(),
            users: self.simulator_users().into_iter().map(|u| (u, crate::sim::DEMO_PASSWORD.to_string())).collect(),
            ..crate::sim::SimConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ucwa/config.toml"))
    }

    #[test]
    fn metrics_listen_takes_any_address_with_bcrypt_users_and_the_simulator_keys_reach_the_simulator() {
        let c = parse("[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap();
        assert!(!c.metrics.trusted(), "no names on a listener anyone may reach");
        assert!(parse("[metrics]\nlisten = \"[::1]:9464\"\n").unwrap().metrics.trusted());
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = parse(&format!("[metrics]\nlisten = \"0.0.0.0:9464\"\nbasic_auth_users = {{ prom = \"{hash}\" }}\n")).unwrap();
        assert!(c.metrics.trusted());
        let e = parse("[metrics]\nadmin_token_env = \"\"\n").unwrap_err().to_string();
        assert!(e.contains("metrics.admin_token_env") && e.contains("environment variable"), "{e}");
        assert!(parse("[metrics]\nadmin_token_env = \"UCWA_ADMIN_TOKEN\"\n").is_ok());
        let e = parse("[metrics]\nbasic_auth_users = { prom = \"s3cret\" }\n").unwrap_err().to_string();
        assert!(e.contains("metrics.basic_auth_users.prom") && e.contains("bcrypt") && !e.contains("s3cret"), "{e}");
        let c = parse("[simulator]\ncalls_per_minute = 30\nring_secs = 1.5\ncall_duration_secs = 4\n").unwrap();
        let sim = c.embedded_simulator();
        assert_eq!((sim.calls_per_minute, sim.ring_time, sim.call_duration), (30.0, Duration::from_millis(1500), Duration::from_secs(4)));
        let e = parse("[log]\nlevel = \"info,[=\"\n").unwrap_err().to_string();
        assert!(e.contains("`log.level`") && e.contains("RUST_LOG-style"), "{e}");
        assert_eq!(parse("[log]\nlevel = \"info,script=debug\"\n").unwrap().log.level.as_deref(), Some("info,script=debug"));
        let e = parse("[simulator]\nring_secs = 301\n").unwrap_err().to_string();
        assert!(e.contains("simulator.ring_secs"), "{e}");
    }

    #[test]
    fn the_scripts_limits_reach_the_script_host() {
        let c = parse("[scripts]\nmemory_limit_mb = 32\ninstruction_limit = 12345\nhandler_timeout_ms = 250\nstate_max_bytes = 4096\nmax_consecutive_failures = 3\nhttp_allow = [\"hooks.example.com\"]\ntraces_per_script = 7\n").unwrap();
        let s = c.script_settings();
        assert_eq!(s.traces_per_script, 7);
        assert_eq!(parse("").unwrap().script_settings().traces_per_script, 100, "traces are on by default");
        assert_eq!((s.limits.memory_bytes, s.limits.instructions, s.limits.handler_timeout), (32 << 20, 12345, Duration::from_millis(250)));
        assert_eq!((s.state_max_bytes, s.max_consecutive_failures, s.http_allow.as_slice()), (4096, 3, ["hooks.example.com".to_string()].as_slice()));
    }

    #[test]
    fn the_scripts_time_zone_is_an_iana_name_and_a_bad_one_names_the_key() {
        let s = parse("[scripts]\ntime_zone = \"Europe/Berlin\"\n").unwrap().script_settings();
        assert_eq!(s.time_zone.iana_name(), Some("Europe/Berlin"));
        let err = parse("[scripts]\ntime_zone = \"Europe/Berlinn\"\n").unwrap_err().to_string();
        assert!(err.contains("scripts.time_zone") && err.contains("\"Europe/Berlinn\""), "{err}");
    }

    #[test]
    fn holiday_calendars_are_read_with_the_configuration_and_a_bad_one_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ics =
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART;VALUE=DATE:20261225\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        std::fs::write(dir.path().join("holidays.ics"), ics).unwrap();
        let path = dir.path().join("config.toml");
        let c = Config::parse("[scripts.calendars]\nholidays = \"holidays.ics\"\n", &path).unwrap();
        assert_eq!(c.script_settings().calendars["holidays"].closed.len(), 1);
        let err = Config::parse("[scripts.calendars]\nwork = \"missing.ics\"\n", &path).unwrap_err().to_string();
        assert!(err.contains("scripts.calendars.work") && err.contains("missing.ics"), "{err}");
    }

    #[test]
    fn script_limits_out_of_range_name_the_key_and_the_range() {
        for (line, key, range) in [
            ("memory_limit_mb = 17592186044416", "scripts.memory_limit_mb", "1 to 16384 MiB"),
            ("memory_limit_mb = 0", "scripts.memory_limit_mb", "1 to 16384 MiB"),
            ("instruction_limit = 10", "scripts.instruction_limit", "1000 to 1000000000000 instructions"),
            ("handler_timeout_ms = 86400000", "scripts.handler_timeout_ms", "1 to 3600000 milliseconds"),
            ("state_max_bytes = 10", "scripts.state_max_bytes", "1024 to 1073741824 bytes"),
            ("reload_debounce_ms = 600000", "scripts.reload_debounce_ms", "0 to 60000 milliseconds"),
            ("traces_per_script = 1000000", "scripts.traces_per_script", "0 to 10000 traces"),
            ("workers = 5000", "scripts.workers", "0 to 1024 threads"),
        ] {
            let err = parse(&format!("[scripts]\n{line}\n")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(range), "{line}: {err}");
        }
    }

    #[test]
    fn an_empty_endpoint_id_and_unknown_modalities_name_the_key() {
        assert!(parse("[server]\nendpoint_id = \"desk-7\"\nmodalities = []\n").is_ok(), "no modality: receives no invitation, a choice");
        let c = parse("[server]\nmodalities = [\"audio\", \"Audio\", \"MESSAGING\"]\n").unwrap();
        assert_eq!(c.server.modalities, ["Audio", "Messaging"], "any case, each once, spelled as listed");
        for (line, key, what) in [
            ("endpoint_id = \"\"", "server.endpoint_id", "not an empty string"),
            ("modalities = [\"Audio\", \"Foo\"]", "server.modalities", "entry 2 (\"Foo\"): expected one of Messaging, Audio"),
        ] {
            let err = parse(&format!("[server]\n{line}\n")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(what), "{line}: {err}");
        }
    }

    #[test]
    fn open_databases_out_of_range_names_the_key() {
        assert_eq!(parse("").unwrap().state.open_databases, crate::store::DEFAULT_OPEN_DATABASES as u64);
        assert_eq!(parse("[state]\nopen_databases = 1\n").unwrap().state.open_databases, 1);
        let err = parse("[state]\nopen_databases = 0\n").unwrap_err().to_string();
        assert!(err.contains("state.open_databases") && err.contains("1 to 1000000"), "{err}");
    }

    #[test]
    fn defaults_are_the_embedded_demo() {
        let c = parse("").unwrap();
        assert_eq!(c.discover().unwrap(), Discover::Embedded);
        assert_eq!(c.scripts_dir(), PathBuf::from("/etc/ucwa/scripts"));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = parse("[server]\npoll_timeout_secs = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("/etc/ucwa/config.toml") && e.contains("poll_timeout_secs") && e.contains("line 2"), "{e}");
        let e = parse("[scripts]\ndri = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `dri`"), "{e}");
        let e = parse("[server]\ndiscover = \"http://pool.contoso.com/\"\n[auth]\nkind=\"password\"\nusername=\"a\"\npassword_env=\"P\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`server.discover`") && e.contains("loopback"), "{e}");
        let e = parse("[server]\ndiscover = \"https://pool.contoso.com/\"\n").unwrap_err().to_string();
        assert!(e.contains("`auth`"), "{e}");
        let e = parse("[auth]\nkind = \"bearer\"\ntoken_env = \"T\"\ntoken_file = \"t\"\n").unwrap_err().to_string();
        assert!(e.contains("exactly one of"), "{e}");
        let e = parse("[auth]\nkind = \"password\"\nusername = \"a\"\n").unwrap_err().to_string();
        assert!(e.contains("`auth.password_env`"), "{e}");
        let e = parse("[auth]\nkind = \"kerberos\"\n").unwrap_err().to_string();
        assert!(e.contains("kerberos") && e.contains("line 2"), "{e}");
        let e = parse("[server]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err().to_string();
        assert!(e.contains("`server.ca_file`"), "{e}");
    }
}
