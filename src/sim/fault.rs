//! The faults the control API injects into event-channel requests, and the one list of their
//! names.

use serde::{Deserialize, Serialize};

/// A fault the control API injects into the next event-channel requests.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this 5xx status (`ServiceFailure` / `ServiceUnavailable`), optionally with `Retry-After`.
    ServerError {
        #[serde(default = "default_5xx")]
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// 429 TooManyRequests, optionally with `Retry-After`.
    TooManyRequests {
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Send the headers and part of the body, then drop the connection.
    DropConnection,
    /// A 200 whose body is not valid JSON.
    MalformedBody,
    /// Answer with a `resync` link instead of the batch.
    Resync,
    /// Answer with a `resume` link instead of the batch, as a pool does after cleaning up
    /// following a long gap in polling.
    Resume,
    /// Every token of every user stops being valid now (applied at once, not queued).
    TokenExpiry,
    /// Every application is deleted now (applied at once, not queued).
    ApplicationGone,
    /// A 200 whose body never ends (chunked, about 1 GiB of padding after a batch's start),
    /// gzip-compressed when `gzip` (a "gzip bomb": about 1 MiB on the wire): what a broken proxy
    /// or a hostile pool may send. A client must stop reading, not run out of memory.
    EndlessBody {
        #[serde(default)]
        gzip: bool,
    },
    /// The next batch carries, before its real events, one event without `type` (a broken
    /// pool's event): a client should skip that one event and deliver the rest.
    MalformedEvent,
}

/// Every `kind` of `Fault`, as the control API names them (its error message lists them; a
/// test checks each deserializes).
pub(crate) const FAULT_KINDS: &[&str] = &[
    "server_error",
    "too_many_requests",
    "drop_connection",
    "malformed_body",
    "resync",
    "resume",
    "token_expiry",
    "application_gone",
    "endless_body",
    "malformed_event",
];

fn default_5xx() -> u16 {
    503
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_fault_kind_is_a_fault() {
        for kind in FAULT_KINDS {
            let f: Result<Fault, _> = serde_json::from_value(serde_json::json!({"kind": kind}));
            assert!(f.is_ok(), "{kind}: {f:?}");
        }
    }
}
