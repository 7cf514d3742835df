//! `ucwa-agent state export|import`: move an account's state between agents (a fleet
//! resharded, README "Resharding"). The file format and the checks: `store::portable`.

use crate::config::{AccountSpec, Config};
use crate::store::portable::{self, Snapshot};
use std::path::Path;

/// The account `name` of the configuration, or the only one when no name is given.
fn account<'a>(accounts: &'a [AccountSpec], name: Option<&str>) -> Result<&'a AccountSpec, String> {
    let names = || accounts.iter().map(|a| a.label()).collect::<Vec<_>>().join(", ");
    match name {
        Some(n) => accounts.iter().find(|a| a.label() == n).ok_or_else(|| format!("the configuration has no account {n:?} (it has: {})", names())),
        None if accounts.len() == 1 => Ok(&accounts[0]),
        None => Err(format!("the configuration has {} accounts: name one with --account ({})", accounts.len(), names())),
    }
}

/// Exports the state of `name` (a configured account) to `out` (standard output for None);
/// returns what it wrote, for the report.
pub fn export(config: &Config, name: Option<&str>, out: Option<&Path>, stdout: &mut dyn FnMut(&str)) -> Result<String, String> {
    let accounts = config.accounts().map_err(|e| e.to_string())?;
    let spec = account(&accounts, name)?;
    let snap = portable::export_dir(&spec.state_dir, spec.label()).map_err(|e| e.to_string())?;
    let text = serde_json::to_string(&snap).expect("a snapshot serializes") + "\n";
    let what = summary(&snap);
    match out {
        None => stdout(&text),
        Some(path) => {
            // Written whole or not at all: a half file must not be imported.
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(what)
}

/// Imports a file written by `export` into its account's state directory (the account must be
/// in the configuration); returns what it imported.
pub fn import(config: &Config, file: &Path, force: bool) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let snap: Snapshot = serde_json::from_str(&text).map_err(|e| format!("{}: not a state file: {e}", file.display()))?;
    let accounts = config.accounts().map_err(|e| e.to_string())?;
    let spec = account(&accounts, Some(&snap.account))?;
    portable::import_dir(&spec.state_dir, &snap, force).map_err(|e| e.to_string())?;
    Ok(format!("{} into {}", summary(&snap), spec.state_dir.display()))
}

fn summary(s: &Snapshot) -> String {
    format!("account {}: {} script(s), journal head {}, {} batch(es) not yet handled by every script", s.account, s.scripts.len(), s.head, s.journal.len())
}
