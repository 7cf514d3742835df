//! What the console's files share: the state every route reads and the queries they take.

use super::token::AdminToken;
use crate::agent::access::Access;
use crate::agent::Fleet;
use crate::script::ScriptHost;
use std::sync::Arc;

/// What every console route reads.
pub(crate) struct Console {
    pub(super) fleet: Arc<Fleet>,
    pub(super) access: Arc<Access>,
    /// Accounts named and errors quoted (`MetricsConfig::trusted`, as `/healthz`).
    pub(super) details: bool,
    pub(super) admin: AdminToken,
}

impl Console {
    /// The account a request names by its key (`api::key`): its label and scripts.
    pub(super) fn account(&self, key: &str) -> Option<(String, ScriptHost)> {
        let (accounts, _) = self.fleet.accounts();
        if self.details {
            return accounts.into_iter().find(|(n, _)| n == key);
        }
        // (Unnamed where names are not shown: `#3` is the third account.)
        let i: usize = key.strip_prefix('#')?.parse().ok()?;
        accounts.into_iter().nth(i.checked_sub(1)?)
    }
}

/// `/api/accounts?page=&per_page=&q=`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AccountsQuery {
    /// From 1.
    pub(super) page: Option<usize>,
    pub(super) per_page: Option<usize>,
    /// Kept: accounts whose name (where shown) or state holds this, case-insensitively;
    /// `trouble`: those not polling, or with a script not running well.
    pub(super) q: Option<String>,
}

/// `?account=` (its key).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct AccountQuery {
    pub(super) account: String,
}

/// `?account=&script=`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ScriptQuery {
    pub(super) account: String,
    pub(super) script: String,
}

/// `/api/events?account=&limit=&seq=`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct EventsQuery {
    pub(super) account: String,
    pub(super) limit: Option<usize>,
    /// That event alone.
    pub(super) seq: Option<u64>,
}
