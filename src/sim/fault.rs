//! The faults the control API injects into event-channel requests, and the one list of their
//! names.

use serde::{Deserialize, Serialize};

/// Defines `Fault` and `FAULT_KINDS` from one list, so the control API's list of kinds (its
/// error message names them) cannot miss one: each variant is written with its `kind`, which
/// is also its serde tag.
macro_rules! faults {
    ($(#[$enum_meta:meta])* pub enum $name:ident { $($(#[$meta:meta])* $kind:literal $variant:ident $({ $($fields:tt)* })?,)* }) => {
        $(#[$enum_meta])*
        pub enum $name {
            $($(#[$meta])* #[serde(rename = $kind)] $variant $({ $($fields)* })?,)*
        }

        /// Every `kind` of `Fault`, as the control API names them, in the order of the enum.
        pub(crate) const FAULT_KINDS: &[&str] = &[$($kind),*];
    };
}

faults! {
    /// A fault the control API injects into the next event-channel requests.
    #[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
    #[serde(tag = "kind", deny_unknown_fields)]
    pub enum Fault {
        /// Answer with this 5xx status (`ServiceFailure` / `ServiceUnavailable`), optionally with `Retry-After`.
        "server_error" ServerError {
            #[serde(default = "default_5xx")]
            status: u16,
            #[serde(default)]
            retry_after: Option<u64>,
        },
        /// 429 TooManyRequests, optionally with `Retry-After`.
        "too_many_requests" TooManyRequests {
            #[serde(default)]
            retry_after: Option<u64>,
        },
        /// Send the headers and part of the body, then drop the connection.
        "drop_connection" DropConnection,
        /// A 200 whose body is not valid JSON.
        "malformed_body" MalformedBody,
        /// Answer with a `resync` link instead of the batch.
        "resync" Resync,
        /// Answer with a `resume` link instead of the batch, as a pool does after cleaning up
        /// following a long gap in polling.
        "resume" Resume,
        /// Every token of every user stops being valid now (applied at once, not queued).
        "token_expiry" TokenExpiry,
        /// Every application is deleted now (applied at once, not queued).
        "application_gone" ApplicationGone,
        /// A 200 whose body never ends (chunked, about 1 GiB of padding after a batch's start),
        /// gzip-compressed when `gzip` (a "gzip bomb": about 1 MiB on the wire): what a broken proxy
        /// or a hostile pool may send. A client must stop reading, not run out of memory.
        "endless_body" EndlessBody {
            #[serde(default)]
            gzip: bool,
        },
        /// The next batch carries, before its real events, one event without `type` (a broken
        /// pool's event): a client should skip that one event and deliver the rest.
        "malformed_event" MalformedEvent,
    }
}

fn default_5xx() -> u16 {
    503
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_fault_kind_is_a_fault_and_serializes_as_itself() {
        for kind in FAULT_KINDS {
            let f: Result<Fault, _> = serde_json::from_value(serde_json::json!({"kind": kind}));
            assert!(f.is_ok(), "{kind}: {f:?}");
            let back = serde_json::to_value(f.expect("checked")).expect("faults serialize");
            assert_eq!(back["kind"], *kind);
        }
    }
}
