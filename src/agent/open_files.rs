//! Open files: every account holds several (its database with its WAL and shared-memory files,
//! its lock file, its HTTP connections), so a few hundred accounts pass the usual soft limit of
//! 1,024. At start the agent raises its soft limit to the hard one (what systemd expects of a
//! program that needs many: its default hard limit is 524,288) and warns, naming the settings,
//! when the hard limit is below what its accounts need.

/// Files one account keeps open, idle: its lock file, its long poll's connection and one more
/// for its other requests (BENCHMARKS.md "Many accounts" measures it), plus one for what comes
/// and goes (a request of a script). Its database, WAL and shared-memory files are open only
/// while it is among the `state.open_databases` most recently used: `DB_FILES` each.
pub const PER_ACCOUNT: u64 = 4;

/// An open database: `agent.db`, its WAL and its shared-memory file (and, for a busy one, the
/// checkpointer's connection to them: counted as one more).
const DB_FILES: u64 = 4;

/// The process without accounts: the runtime, the listeners, the watcher, the scripts' files
/// being loaded.
const BASE: u64 = 256;

/// What `accounts` need at most.
pub fn needed(accounts: usize, open_databases: u64) -> u64 {
    BASE + PER_ACCOUNT * accounts as u64 + DB_FILES * open_databases.min(accounts as u64)
}

/// Raises the soft limit on open files to the hard one; warns when that is below what
/// `accounts` need. Returns the limit now in force.
pub fn raise(accounts: usize, open_databases: u64) -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: a valid rlimit, within the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(from = lim.rlim_cur, to = lim.rlim_max, "open files limit raised to the hard limit");
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let need = needed(accounts, open_databases);
    if (lim.rlim_cur) < need {
        tracing::warn!(
            limit = lim.rlim_cur,
            needed = need,
            accounts,
            "the open files limit is below what {accounts} accounts need ({PER_ACCOUNT} each, {DB_FILES} per open database): some will fail to sign in or to open their \
             database; raise it (systemd: LimitNOFILE={need} in the unit; a shell: ulimit -n; a container: --ulimit nofile={need}:{need})"
        );
    }
    Some(lim.rlim_cur)
}
