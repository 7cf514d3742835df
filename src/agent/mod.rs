//! The agent: sign in, create the application, keep it alive, poll its event channel, and hand
//! every event to the scripts, recovering from failures until shut down.

mod access;
mod account;
mod admission;
pub mod backoff;
pub mod channel;
mod console;
pub(crate) mod dry_run;
mod end;
pub mod endpoints;
mod fleet;
pub mod keepalive;
mod lifecycle;
pub mod memory;
pub mod online;
pub mod open_files;
mod pool;
pub mod presence;
pub mod record;
pub mod refusal;
mod reload;
mod run;
pub mod sd_notify;
pub mod sink;
pub mod status;

pub use account::Account;
pub use end::{RunEnd, StartError, MAX_CREDENTIAL_REFUSALS};
pub use fleet::Fleet;
pub use lifecycle::{Lifecycle, ReloadRequests};
pub use pool::Pool;
pub use reload::{LogLevelApplier, Reloader};
pub use run::Agent;
