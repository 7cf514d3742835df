//! The resources around the account that the application and `me` link to: presence, note,
//! location, phones, call forwarding, photo, policies, people (contacts, search, a contact and
//! its presence, note and location) and online meetings, in the shapes of the UCWA reference
//! pages (`*_ref.md`).

use super::model::{App, Profile};
use super::paths::{app_path, display_name};
use super::state::SimState;
use serde_json::{json, Value};

fn self_link(href: String) -> Value {
    json!({"self": {"href": href}})
}

/// The availabilities `POST me/presence` takes (presence_ref.md).
pub(crate) const AVAILABILITIES: &[&str] = &["Online", "Busy", "DoNotDisturb", "BeRightBack", "Away", "Offwork"];

pub(crate) fn presence(app: &App, profile: &Profile) -> Value {
    let availability = match (&profile.availability, app.available) {
        (Some(a), _) => a.as_str(),
        (None, true) => "Online",
        (None, false) => "Offline",
    };
    let activity = match availability {
        "Online" => "Available",
        "Busy" | "DoNotDisturb" => "Busy",
        "Offline" => "Offline",
        _ => "Away",
    };
    json!({"rel": "presence", "availability": availability, "activity": activity, "_links": self_link(format!("{}/me/presence", app_path(app.id)))})
}

pub(crate) fn note(app: &App, profile: &Profile) -> Value {
    json!({"rel": "note", "message": profile.note, "type": "Personal", "_links": self_link(format!("{}/me/note", app_path(app.id)))})
}

pub(crate) fn location(app: &App) -> Value {
    json!({"rel": "location", "location": "", "_links": self_link(format!("{}/me/location", app_path(app.id)))})
}

/// A work number derived from the account, so two accounts differ.
fn work_number(user: &str) -> String {
    let n = user.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 10_000;
    format!("tel:+1425555{n:04}")
}

pub(crate) fn phones(app: &App) -> Value {
    let p = app_path(app.id);
    json!({
        "rel": "phones",
        "_links": self_link(format!("{p}/me/phones")),
        "_embedded": {"phone": [phone(app)]},
    })
}

pub(crate) fn phone(app: &App) -> Value {
    let p = app_path(app.id);
    json!({
        "rel": "phone", "number": work_number(&app.user), "type": "Work", "includeInContactCard": true,
        "_links": self_link(format!("{p}/me/phones/work")),
    })
}

pub(crate) fn call_forwarding_settings(app: &App, profile: &Profile) -> Value {
    let p = format!("{}/me/callForwardingSettings", app_path(app.id));
    json!({
        "rel": "callForwardingSettings",
        "activePeriod": "Always",
        "activeSetting": profile.forwarding.setting,
        "unansweredCallHandling": "Disabled",
        "_links": {
            "self": {"href": p},
            "turnOffCallForwarding": {"href": format!("{p}/turnOffCallForwarding")},
            "immediateForwardSettings": {"href": format!("{p}/immediateForwardSettings")},
            "simultaneousRingSettings": {"href": format!("{p}/simultaneousRingSettings")},
        },
    })
}

/// `immediateForwardSettings_ref.md`: where calls go when forwarded at once.
pub(crate) fn immediate_forward_settings(app: &App, profile: &Profile) -> Value {
    let p = format!("{}/me/callForwardingSettings/immediateForwardSettings", app_path(app.id));
    let target = if profile.forwarding.setting == "ImmediateForward" { profile.forwarding.target.as_str() } else { "" };
    json!({
        "rel": "immediateForwardSettings",
        "target": target,
        "_links": {
            "self": {"href": p},
            "immediateForwardToContact": {"href": format!("{p}/immediateForwardToContact")},
            "immediateForwardToVoicemail": {"href": format!("{p}/immediateForwardToVoicemail")},
        },
    })
}

/// `simultaneousRingSettings_ref.md`: who else rings with the account.
pub(crate) fn simultaneous_ring_settings(app: &App, profile: &Profile) -> Value {
    let p = format!("{}/me/callForwardingSettings/simultaneousRingSettings", app_path(app.id));
    let target = if profile.forwarding.setting == "SimultaneousRing" { profile.forwarding.target.as_str() } else { "" };
    json!({
        "rel": "simultaneousRingSettings",
        "target": target,
        "_links": {"self": {"href": p}, "simultaneousRingToContact": {"href": format!("{p}/simultaneousRingToContact")}},
    })
}

/// policies_ref.md's sample, with the account's voicemail.
pub(crate) fn policies(app: &App) -> Value {
    json!({
        "rel": "policies",
        "customerExperienceImprovementProgram": "Disabled",
        "emergencyDialMask": "555",
        "emergencyDialString": "911",
        "emoticons": "Enabled",
        "clientExchangeConnectivity": "Enabled",
        "exchangeUnifiedMessaging": "Disabled",
        "htmlMessaging": "Disabled",
        "logging": "Disabled",
        "loggingLevel": "Light",
        "messageArchiving": "Disabled",
        "messagingUrls": "Enabled",
        "photos": "Enabled",
        "saveCallLogs": "Enabled",
        "saveCredentials": "Enabled",
        "saveMessagingHistory": "Enabled",
        "sharingOnlyOnWifi": "Disabled",
        "telephonyMode": "AudioVideo",
        "voicemailUri": format!("sip:{};opaque=app:voicemail", app.user),
        "_links": self_link(format!("{}/policies", app_path(app.id))),
    })
}

pub(crate) fn people(app: &App) -> Value {
    let p = app_path(app.id);
    json!({"rel": "people", "_links": {
        "self": {"href": format!("{p}/people")},
        "myContacts": {"href": format!("{p}/people/contacts")},
        "search": {"href": format!("{p}/people/search")},
        "presenceSubscriptions": {"href": format!("{p}/people/presenceSubscriptions")},
        "presenceSubscriptionMemberships": {"href": format!("{p}/people/presenceSubscriptionMemberships")},
    }})
}

/// A person the pool knows (`contact_ref.md`), by account name: with the links to their
/// presence, note, location and photo.
pub(crate) fn contact(app: &App, user: &str) -> Value {
    let c = format!("{}/people/{user}", app_path(app.id));
    json!({
        "rel": "contact",
        "uri": format!("sip:{user}"),
        "name": display_name(user),
        "type": "User",
        "sourceNetwork": "SameEnterprise",
        "emailAddresses": [user],
        "workPhoneNumber": work_number(user),
        "_links": {
            "self": {"href": c},
            "contactPresence": {"href": format!("{c}/presence")},
            "contactNote": {"href": format!("{c}/note")},
            "contactLocation": {"href": format!("{c}/location")},
            "contactPhoto": {"href": format!("{}/photos/{user}", app_path(app.id))},
        },
    })
}

/// The availabilities a contact may show: the settable ones and `Offline`.
pub(crate) fn contact_availabilities() -> impl Iterator<Item = &'static str> {
    AVAILABILITIES.iter().copied().chain(["Offline"])
}

impl SimState {
    /// What others see of `person` (an address without `sip:`, lower case): set through the
    /// control API; else, for an account, what it set or `Online` while an application of it is
    /// available; else `Offline`.
    pub(crate) fn availability_of(&self, person: &str) -> String {
        if let Some(a) = self.contact_presence.get(person) {
            return a.clone();
        }
        if !self.users.contains_key(person) {
            return "Offline".into();
        }
        match self.profiles.get(person).and_then(|p| p.availability.clone()) {
            Some(a) => a,
            None if self.apps.values().any(|a| a.user == person && a.available) => "Online".into(),
            None => "Offline".into(),
        }
    }
}

/// `contactPresence` (`people/<address>/presence`).
pub(crate) fn contact_presence(app_id: u64, person: &str, availability: &str) -> Value {
    let activity = match availability {
        "Online" => "Available",
        "Busy" | "DoNotDisturb" => "Busy",
        "Offline" => "Offline",
        _ => "Away",
    };
    json!({"rel": "contactPresence", "availability": availability, "activity": activity, "deviceType": "Computer",
           "_links": self_link(format!("{}/people/{person}/presence", app_path(app_id)))})
}

/// `contactNote`: an account's own note, else none.
pub(crate) fn contact_note(app_id: u64, person: &str, note: &str) -> Value {
    json!({"rel": "contactNote", "message": note, "type": "Personal", "_links": self_link(format!("{}/people/{person}/note", app_path(app_id)))})
}

/// `contactLocation`: nobody shares a location here.
pub(crate) fn contact_location(app_id: u64, person: &str) -> Value {
    json!({"rel": "contactLocation", "location": "", "_links": self_link(format!("{}/people/{person}/location", app_path(app_id)))})
}

/// `myContacts`: every other account of the simulator.
pub(crate) fn my_contacts(app: &App, users: &[&str]) -> Value {
    let contacts: Vec<Value> = users.iter().filter(|u| **u != app.user).map(|u| contact(app, u)).collect();
    json!({"rel": "myContacts", "_links": self_link(format!("{}/people/contacts", app_path(app.id))), "_embedded": {"contact": contacts}})
}

/// `search?query=`: the accounts whose address or name contains the query (case-insensitive).
pub(crate) fn search(app: &App, users: &[&str], query: &str) -> Value {
    let q = query.to_ascii_lowercase();
    let q = q.strip_prefix("sip:").unwrap_or(&q).to_string();
    let found: Vec<Value> = users.iter().filter(|u| u.contains(&q) || display_name(u).to_ascii_lowercase().contains(&q)).map(|u| contact(app, u)).collect();
    let p = app_path(app.id);
    json!({"rel": "search", "_links": self_link(format!("{p}/people/search?query={query}")), "_embedded": {"contact": found}})
}

pub(crate) fn online_meetings(app: &App) -> Value {
    let p = app_path(app.id);
    json!({"rel": "onlineMeetings", "_links": {
        "self": {"href": format!("{p}/onlineMeetings")},
        "myOnlineMeetings": {"href": format!("{p}/onlineMeetings/myOnlineMeetings")},
    }})
}

pub(crate) fn my_online_meetings(app: &App) -> Value {
    json!({"rel": "myOnlineMeetings", "_links": self_link(format!("{}/onlineMeetings/myOnlineMeetings", app_path(app.id))), "_embedded": {"myOnlineMeeting": []}})
}

/// audioVideoPolicies.json's shape.
pub(crate) fn audio_video_policies(app: &App) -> Value {
    json!({
        "rel": "audioVideoPolicies",
        "audioOnly": false,
        "enableMultiViewJoin": false,
        "videoEnabled": true,
        "_links": self_link(format!("{}/communication/audioVideoPolicies", app_path(app.id))),
    })
}

/// A 1×1 PNG: the account's photo (`photo` answers an image, as a pool does).
pub(crate) const PHOTO_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06,
    0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x60, 0x60, 0xf8, 0x0f, 0x00, 0x01, 0x04,
    0x01, 0x00, 0x5f, 0xe5, 0xc3, 0x4b, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
