//! Where the simulated pool's resources live: the hrefs every route, flow and resource builds
//! on, and the display name a pool derives from an address.

use super::model::CallRecord;

/// `/ucwa/oauth/v1/applications/<id>`: the prefix of every href of one application.
pub(crate) fn app_path(app_id: u64) -> String {
    format!("/ucwa/oauth/v1/applications/{app_id}")
}

pub(crate) const DISCOVERY_PATH: &str = "/Autodiscover/AutodiscoverService.svc/root";
pub(crate) const USER_PATH: &str = "/Autodiscover/AutodiscoverService.svc/root/oauth/user";
pub(crate) const TOKEN_PATH: &str = "/WebTicket/oauthtoken";

pub(crate) fn conversation_path(call: &CallRecord) -> String {
    format!("{}/communication/conversations/{}", app_path(call.app_id), call.id)
}
pub(crate) fn audio_video_path(call: &CallRecord) -> String {
    format!("{}/audioVideo", conversation_path(call))
}
pub(crate) fn session_path(call: &CallRecord) -> String {
    format!("{}/audioVideo/audioVideoSession", conversation_path(call))
}
pub(crate) fn invitation_path(call: &CallRecord) -> String {
    format!("{}/communication/audioVideoInvitations/{}", app_path(call.app_id), call.invitation_id)
}
pub(crate) fn remote_participant_path(call: &CallRecord) -> String {
    format!("{}/participants/{}", conversation_path(call), call.remote_uri.trim_start_matches("sip:"))
}

/// "alice@contoso.com" → "Alice".
pub(crate) fn display_name(user: &str) -> String {
    let local = user.split('@').next().unwrap_or(user);
    let mut chars = local.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
