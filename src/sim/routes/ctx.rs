//! What every route under an application shares: the request's context (`At`), the operations
//! a GET may not use, and the answer for anything else.

use crate::sim::model::{App, CallCommand, CallRecord};
use crate::sim::reply::Reply;
use crate::sim::shared::{not_found, Answer, Req, Shared};
use crate::sim::state::SimState;
use axum::http::StatusCode;
use std::sync::Arc;

/// One request to one application, found and still there (the dispatch checked it).
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub shared: &'a Arc<Shared>,
    pub req: &'a Req,
    /// Whose token the request carries (the application is theirs).
    pub user: &'a str,
    /// The application's id.
    pub id: u64,
    /// GET or HEAD.
    pub get: bool,
    pub post: bool,
}

impl At<'_> {
    /// The application, which the dispatch found under the same lock.
    pub(crate) fn app<'s>(&self, st: &'s mut SimState) -> &'s mut App {
        st.app_of(self.id, self.user).expect("the dispatch found the application under this lock")
    }
}

/// The operations the simulator links to (POST only): a GET on one answers 405, as a pool does.
const OPERATIONS: &[&str] = &[
    "makemeavailable",
    "reportmyactivity",
    "batch",
    "acceptwithanswer",
    "decline",
    "cancel",
    "stopaudiovideo",
    "stopaudio",
    "addvideo",
    "addparticipant",
    "acceptwithphoneaudio",
    "renegotiations",
    "publishcallqualityfeedback",
    "audiovideoinvitations",
    "messaginginvitations",
    "accept",
    "terminate",
    "messages",
    "onlinemeetinginvitations",
    "turnoffcallforwarding",
    "immediateforwardtocontact",
    "immediateforwardtovoicemail",
    "simultaneousringtocontact",
];

/// Whether the last segment names an operation (POST only).
pub(crate) fn is_operation(path: &[&str]) -> bool {
    path.last().is_some_and(|last| OPERATIONS.contains(last))
}

/// 405: a GET on an operation.
pub(crate) fn operation_only() -> Reply {
    Reply::error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", None, "This is an operation: use POST.")
}

/// What a path no route of its family takes gets: 405 for an operation, else 404.
pub(crate) fn fallback(get: bool, rest: &[&str]) -> Answer {
    if get && is_operation(rest) {
        operation_only().into()
    } else {
        not_found().into()
    }
}

/// Hands a command to the call's task; 204.
pub(crate) fn send(call: &CallRecord, cmd: CallCommand) -> Answer {
    let _ = call.commands.send(cmd);
    Reply::no_content().into()
}
