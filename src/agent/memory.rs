//! The most memory an agent can come to hold, from the bounds it keeps (README "Limits"):
//! what a container's or a unit's memory limit must allow. `check` prints it; a test holds the
//! shipped Kubernetes manifest's limit to it.
//!
//! The model, in MiB:
//! - the process itself (runtime, TLS, HTTP pools, SQLite caches): `BASE_MIB`;
//! - script-defined metrics of the whole agent (`script_metrics::MAX_AGENT_BYTES`), and a
//!   `/metrics` page rendered from them, merged across accounts: three times that;
//! - per account: one answer from the pool read whole (`MAX_RESPONSE_BYTES`) and its events
//!   decoded from it (about as large again), plus the account's journal connection and state;
//! - per script of an account: its Lua memory limit, for the running version and for each stuck
//!   version the watchdog may keep (`STUCK_VERSIONS`), and the traces its runner holds until
//!   the next commit (at most `scripts.traces_per_script`, each at most `TRACE_MAX_BYTES` of
//!   steps plus its event and subscriptions, counted as 1 KiB more).

use crate::config::Config;

/// The process without any account: measured idle at about 15 MiB, doubled for allocator slack.
const BASE_MIB: u64 = 32;
/// An account's journal connection, HTTP session, tasks and Lua runtime overhead.
const ACCOUNT_MIB: u64 = 1;
/// Versions of one script that may hold a Lua state at once: the running one and a stuck one.
const STUCK_VERSIONS: u64 = 1;

/// The worst case for `accounts` accounts of `scripts` scripts each, under `config`'s limits.
pub fn worst_case_mib(config: &Config, accounts: u64, scripts: u64) -> u64 {
    let mib = |bytes: usize| (bytes as u64).div_ceil(1 << 20);
    let metrics = 3 * mib(crate::script_metrics::MAX_AGENT_BYTES);
    let response = 2 * mib(crate::ucwa::session::MAX_RESPONSE_BYTES);
    let traces = mib(config.scripts.traces_per_script as usize * (crate::script::trace::TRACE_MAX_BYTES + 1024));
    let lua = config.scripts.memory_limit_mb * (1 + STUCK_VERSIONS) + traces;
    BASE_MIB + metrics + accounts * (ACCOUNT_MIB + response + scripts * lua)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_grows_with_accounts_scripts_and_the_lua_limit() {
        let c = Config::parse("[scripts]\nmemory_limit_mb = 32\n", std::path::Path::new("c.toml")).unwrap();
        assert_eq!(worst_case_mib(&c, 0, 0), 32 + 96);
        // (100 traces of at most 17 KiB each: 2 MiB.)
        assert_eq!(worst_case_mib(&c, 2, 1), 32 + 96 + 2 * (1 + 64 + 64 + 2));
        assert!(worst_case_mib(&c, 2, 3) > worst_case_mib(&c, 2, 1));
    }
}
