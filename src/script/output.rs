//! What scripts did, as a stream (a leaf type: every layer above may send it).

/// What scripts did, as a stream (tests, and tools that show what scripts do).
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptOutput {
    /// `agent.log.*` or `print`.
    Log { script: String, version: u64, level: &'static str, message: String, fields: Option<serde_json::Value> },
    /// A handler raised an error or was stopped by a limit.
    HandlerError { script: String, rel: String, kind: String, seq: u64, error: String },
    /// A version was loaded and is in service.
    Loaded { script: String, version: u64 },
    /// A new version failed to load; the old one (if any) keeps running.
    LoadFailed { script: String, error: String },
    /// The script's file is gone; its subscriptions stopped.
    Unloaded { script: String },
    /// Too many consecutive failures: events skip the script until its file changes.
    Paused { script: String, failures: u32 },
    /// A call into the script ran past its time limit and did not come back (C code, a
    /// finalizer): the script is no longer fed until its file changes.
    Stuck { script: String, doing: String, limit_ms: u64 },
    /// Tracing (`replay`): the script is about to handle this event.
    Event { script: String, seq: u64, rel: String, kind: String, href: String },
    /// Tracing (`replay`): the script's `agent.state` after an event, when it changed.
    State { script: String, json: String },
    /// Events as they are handed to the scripts (for `tap`; only while someone listens).
    Received { seq: u64, rel: String, kind: String, href: String },
    /// A run's trace (`script::trace::Trace` as JSON), as it is committed.
    Trace { script: String, seq: u64, json: std::sync::Arc<str> },
    /// Offline (`replay`, `test`): a request the script would have sent.
    Request { script: String, via: &'static str, method: String, url: String, body: Option<String> },
}
