//! JSON resources in the shapes of the documentation's samples (`ucwa-samples/resources/`), with
//! hrefs relative to the pool origin as a real pool sends them.

use super::model::{App, CallRecord, Direction, Phase};
use super::paths::{
    app_path, audio_video_path, conversation_path, display_name, invitation_path, remote_participant_path, session_path, DISCOVERY_PATH, USER_PATH,
};
use serde_json::{json, Value};

/// The discovery document (`autodiscover-root.json`): absolute hrefs.
pub(crate) fn discovery(origin: &str) -> Value {
    json!({"_links": {
        "self": {"href": format!("{origin}{DISCOVERY_PATH}")},
        "user": {"href": format!("{origin}{USER_PATH}")},
        "xframe": {"href": format!("{origin}/Autodiscover/XFrame/XFrame.html")},
    }})
}

/// The user resource with a valid token (`user-authenticated.json`).
pub(crate) fn user(origin: &str) -> Value {
    json!({"_links": {
        "self": {"href": format!("{origin}{USER_PATH}")},
        "applications": {"href": format!("{origin}/ucwa/oauth/v1/applications")},
        "xframe": {"href": format!("{origin}/Autodiscover/XFrame/XFrame.html")},
    }})
}

pub(crate) fn me(app: &App) -> Value {
    let p = app_path(app.id);
    let mut links = json!({
        "self": {"href": format!("{p}/me")},
        "callForwardingSettings": {"href": format!("{p}/me/callForwardingSettings")},
        "phones": {"href": format!("{p}/me/phones")},
        "photo": {"href": format!("{p}/photos/{}", app.user)},
    });
    if app.available {
        links["presence"] = json!({"href": format!("{p}/me/presence")});
        links["note"] = json!({"href": format!("{p}/me/note")});
        links["location"] = json!({"href": format!("{p}/me/location")});
        links["reportMyActivity"] = json!({"href": format!("{p}/me/reportMyActivity")});
    } else {
        links["makeMeAvailable"] = json!({"href": format!("{p}/me/makeMeAvailable")});
    }
    json!({"name": display_name(&app.user), "uri": format!("sip:{}", app.user), "_links": links, "rel": "me"})
}

pub(crate) fn communication(app: &App) -> Value {
    let p = app_path(app.id);
    let modalities: Vec<&str> = if app.available { vec!["Messaging", "Audio", "Video"] } else { vec![] };
    json!({
        app.communication_key.as_str(): "please pass this in a PUT request",
        "supportedModalities": modalities,
        "supportedMessageFormats": ["Plain"],
        "_links": {
            "self": {"href": format!("{p}/communication")},
            "conversations": {"href": format!("{p}/communication/conversations?filter=active")},
            "startMessaging": {"href": format!("{p}/communication/messagingInvitations")},
            "startAudioVideo": {"href": format!("{p}/communication/audioVideoInvitations")},
            "startOnlineMeeting": {"href": format!("{p}/communication/onlineMeetingInvitations?onlineMeetingUri=adhoc")},
            "joinOnlineMeeting": {"href": format!("{p}/communication/onlineMeetingInvitations")},
        },
        "rel": "communication",
        "etag": app.etag.to_string(),
    })
}

/// The application (`application-201.json`, plus the GET-only properties of `application.json`).
pub(crate) fn application(app: &App) -> Value {
    let p = app_path(app.id);
    json!({
        "culture": app.culture,
        "userAgent": app.user_agent,
        "type": "Browser",
        "endpointId": app.endpoint_id,
        "id": app.id.to_string(),
        "_links": {
            "self": {"href": p},
            "policies": {"href": format!("{p}/policies")},
            "batch": {"href": format!("{p}/batch")},
            "events": {"href": app.channel.first_href()},
            "reportMyActivity": {"href": format!("{p}/reportMyActivity")},
        },
        "_embedded": {
            "me": me(app),
            "people": {"_links": {
                "self": {"href": format!("{p}/people")},
                "myContacts": {"href": format!("{p}/people/contacts")},
                "search": {"href": format!("{p}/people/search")},
                "presenceSubscriptions": {"href": format!("{p}/people/presenceSubscriptions")},
                "presenceSubscriptionMemberships": {"href": format!("{p}/people/presenceSubscriptionMemberships")},
            }, "rel": "people"},
            "onlineMeetings": {"_links": {
                "self": {"href": format!("{p}/onlineMeetings")},
                "myOnlineMeetings": {"href": format!("{p}/onlineMeetings/myOnlineMeetings")},
            }, "rel": "onlineMeetings"},
            "communication": communication(app),
        },
        "rel": "application",
    })
}

/// `conversation.json`: `state` follows the call.
pub(crate) fn conversation(call: &CallRecord) -> Value {
    let c = conversation_path(call);
    let state = match (call.phase, call.direction) {
        (Phase::Ringing, Direction::Incoming) => "Incoming",
        (Phase::Ringing, Direction::Outgoing) => "Connecting",
        (Phase::Connected, _) => "Connected",
        (Phase::Ended, _) => "Disconnected",
    };
    let modalities: Vec<&str> = if call.phase == Phase::Connected { vec!["Audio"] } else { vec![] };
    json!({
        "rel": "conversation",
        "activeModalities": modalities,
        "importance": "Normal",
        "participantCount": 2,
        "state": state,
        "subject": call.subject,
        "threadId": call.thread_id,
        // conversation.json has it (as a .NET date: the `dotnet_dates` quirk).
        "created": crate::date::iso_utc(call.created_ms),
        "_links": {
            "self": {"href": c},
            "audioVideo": {"href": format!("{c}/audioVideo")},
            "messaging": {"href": format!("{c}/messaging")},
            "participants": {"href": format!("{c}/participants")},
            "localParticipant": {"href": format!("{c}/participants/local")},
            "addParticipant": {"href": format!("{c}/addParticipant")},
        },
    })
}

/// `audioVideo.json`: the modality; its `state` is what call logs usually read.
pub(crate) fn audio_video(call: &CallRecord) -> Value {
    let av = audio_video_path(call);
    let state = match call.phase {
        Phase::Ringing => "Connecting",
        Phase::Connected => "Connected",
        Phase::Ended => "Disconnected",
    };
    let mut links = json!({
        "self": {"href": av},
        "conversation": {"href": conversation_path(call)},
        "audioVideoPolicies": {"href": format!("{}/communication/audioVideoPolicies", app_path(call.app_id))},
    });
    if call.phase == Phase::Connected {
        links["audioVideoSession"] = json!({"href": session_path(call)});
        links["stopAudioVideo"] = json!({"href": format!("{av}/stopAudioVideo")});
        links["stopAudio"] = json!({"href": format!("{av}/stopAudio")});
        links["addVideo"] = json!({"href": format!("{av}/addVideo")});
    }
    json!({"rel": "audioVideo", "state": state, "supportsReplaces": "None", "videoSourcesAllowed": "PresentersOnly", "_links": links})
}

/// `audioVideoInvitation.json`: an incoming call offers acceptWithAnswer/decline while it rings.
pub(crate) fn invitation(call: &CallRecord) -> Value {
    let inv = invitation_path(call);
    let c = conversation_path(call);
    let state = match call.phase {
        Phase::Ringing => "Connecting",
        Phase::Connected => "Connected",
        Phase::Ended if call.answered => "Connected",
        Phase::Ended => "Failed",
    };
    let direction = call.direction.as_str();
    let mut links = json!({
        "self": {"href": inv},
        "audioVideo": {"href": format!("{c}/audioVideo")},
        "conversation": {"href": c},
        "from": {"href": remote_participant_path(call)},
        "to": {"href": format!("{}/people/{}", app_path(call.app_id), call.local_uri.trim_start_matches("sip:"))},
        "mediaOffer": {"href": "data:application/sdp;base64,dj0wDQpvPS0gMCAwIElOIElQNCAxMjcuMC4wLjENCnM9c2ltDQo="},
    });
    if call.phase == Phase::Ringing {
        match call.direction {
            Direction::Incoming => {
                links["acceptWithAnswer"] = json!({"href": format!("{inv}/acceptWithAnswer")});
                links["decline"] = json!({"href": format!("{inv}/decline")});
                links["acceptWithPhoneAudio"] = json!({"href": format!("{inv}/acceptWithPhoneAudio")});
            }
            Direction::Outgoing => links["cancel"] = json!({"href": format!("{inv}/cancel")}),
        }
    }
    json!({
        "rel": "audioVideoInvitation",
        "direction": direction,
        "importance": "Normal",
        "operationId": call.operation_id,
        "sessionContext": call.session_context,
        "state": state,
        "subject": call.subject,
        "threadId": call.thread_id,
        "to": call.local_uri,
        "_links": links,
        "_embedded": {"from": {
            "rel": "participant",
            "name": call.remote_name,
            "uri": call.remote_uri,
            "local": false,
            "_links": {"self": {"href": remote_participant_path(call)}, "conversation": {"href": c}},
        }},
    })
}

/// `audioVideoSession.json`.
pub(crate) fn session(call: &CallRecord) -> Value {
    let c = conversation_path(call);
    let s = session_path(call);
    json!({
        "rel": "audioVideoSession",
        "remoteEndpoint": call.remote_uri,
        "sessionContext": call.session_context,
        "state": call.session_state,
        "_links": {
            "self": {"href": s},
            "audioVideo": {"href": format!("{c}/audioVideo")},
            "conversation": {"href": c},
            "renegotiations": {"href": format!("{s}/renegotiations")},
            "publishCallQualityFeedback": {"href": format!("{s}/publishCallQualityFeedback")},
            // The documentation's sample (`audioVideoSession.json`) links the conversation's
            // other modalities too.
            "applicationSharing": {"href": format!("{c}/applicationSharing")},
            "dataCollaboration": {"href": format!("{c}/dataCollaboration")},
        },
    })
}

/// `participants`: the two parties of the call (`participant.json`'s shape).
pub(crate) fn participants(call: &CallRecord) -> Value {
    let c = conversation_path(call);
    json!({
        "rel": "participants",
        "_links": {"self": {"href": format!("{c}/participants")}},
        "_embedded": {"participant": [participant(call), local_participant(call)]},
    })
}

/// The remote party (`participant.json`).
pub(crate) fn participant(call: &CallRecord) -> Value {
    let c = conversation_path(call);
    let remote = call.remote_uri.trim_start_matches("sip:");
    json!({
        "rel": "participant", "name": call.remote_name, "uri": call.remote_uri, "local": false, "anonymous": false,
        "inLobby": false, "organizer": call.direction == Direction::Incoming, "role": "Attendee", "sourceNetwork": "SameEnterprise",
        "_links": {
            "self": {"href": remote_participant_path(call)},
            "conversation": {"href": c},
            "contact": {"href": format!("{}/people/{remote}", app_path(call.app_id))},
        },
    })
}

/// The account itself in the call (`localParticipant.json`).
pub(crate) fn local_participant(call: &CallRecord) -> Value {
    let c = conversation_path(call);
    let local = call.local_uri.trim_start_matches("sip:");
    json!({
        "rel": "localParticipant", "name": display_name(local), "uri": call.local_uri, "local": true, "anonymous": false,
        "inLobby": false, "organizer": call.direction == Direction::Outgoing, "role": "Attendee", "sourceNetwork": "SameEnterprise",
        "_links": {
            "self": {"href": format!("{c}/participants/local")},
            "conversation": {"href": c},
            "me": {"href": format!("{}/me", app_path(call.app_id))},
        },
    })
}

/// A modality of the conversation that this simulator does not carry (messaging, data
/// collaboration, application sharing): it exists, disconnected, as in an audio-only call.
pub(crate) fn idle_modality(call: &CallRecord, rel: &str) -> Value {
    let c = conversation_path(call);
    json!({"rel": rel, "state": "Disconnected", "_links": {"self": {"href": format!("{c}/{rel}")}, "conversation": {"href": c}}})
}
