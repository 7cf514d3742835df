//! The event `rel`s a UCWA 2.0 pool sends (from the reference pages' event tables and the
//! documentation's samples), so that `check` can warn about a subscription that can never fire.

/// Every `link.rel` an event may carry, plus the agent's own `agent`.
pub const KNOWN_RELS: &[&str] = &[
    "agent",
    "applicationSharer",
    "applicationSharing",
    "applicationSharingRenegotiation",
    "audioVideo",
    "audioVideoInvitation",
    "audioVideoNegotiation",
    "audioVideoRenegotiation",
    "audioVideoSession",
    "callForwardingSettings",
    "communication",
    "contact",
    "contactLocation",
    "contactNote",
    "contactPresence",
    "contactPrivacyRelationship",
    "contactSupportedModalities",
    "conversation",
    "dataCollaboration",
    "defaultGroup",
    "delegatorsGroup",
    "distributionGroup",
    "group",
    "localParticipant",
    "location",
    "me",
    "message",
    "messaging",
    "messagingInvitation",
    "missedItems",
    "myOrganizationGroup",
    "myContactsAndGroupsSubscription",
    "note",
    "onlineMeeting",
    "onlineMeetingInvitation",
    "participant",
    "participantApplicationSharing",
    "participantAudio",
    "participantDataCollaboration",
    "participantInvitation",
    "participantMessaging",
    "participantPanoramicVideo",
    "participantVideo",
    "phoneAudio",
    "phoneAudioInvitation",
    "pinnedGroup",
    "policies",
    "presence",
    "presenceSubscription",
    "videoLockedOnParticipant",
];

/// Event types: resources are added/updated/deleted, operations started/updated/completed; the
/// agent's own events are signedIn/signedOut/resync.
pub const KNOWN_TYPES: &[&str] = &["added", "updated", "deleted", "started", "completed", "signedIn", "signedOut", "resync"];

/// The rels whose events are an operation's (`started`/`updated`/`completed`): invitations,
/// (re)negotiations and messages, as the documentation's samples show.
pub fn is_operation(rel: &str) -> bool {
    rel.ends_with("Invitation") || rel.ends_with("Negotiation") || rel.ends_with("Renegotiation") || rel == "message"
}

/// The event types a known `rel` comes with (None for `*` or an unknown rel).
pub fn types_for(rel: &str) -> Option<&'static [&'static str]> {
    if rel == "*" || !KNOWN_RELS.contains(&rel) {
        return None;
    }
    Some(match rel {
        "agent" => &["signedIn", "signedOut", "resync"],
        r if is_operation(r) => &["started", "updated", "completed"],
        _ => &["added", "updated", "deleted"],
    })
}

pub fn is_known_rel(rel: &str) -> bool {
    rel == "*" || KNOWN_RELS.contains(&rel)
}

/// The known name closest to `word` (case-insensitive edit distance ≤ 3), for "did you mean".
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known.iter().map(|k| (distance(&word.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k)).filter(|(d, _)| *d <= 3).min().map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + (ca != *cb) as usize).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("audioVideoSesion", KNOWN_RELS), Some("audioVideoSession"));
        assert_eq!(closest("AUDIOVIDEO", KNOWN_RELS), Some("audioVideo"));
        assert_eq!(closest("completely-unrelated", KNOWN_RELS), None);
        assert!(is_known_rel("*") && is_known_rel("conversation") && !is_known_rel("call"));
    }

    /// Every (rel, type) pair in the documentation's event samples (listed, with the sample
    /// each came from, in tests/fixtures/sample-event-types.json) is known and fits its rel.
    #[test]
    fn the_documentation_samples_fit_the_rel_type_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sample-event-types.json");
        let pairs: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(pairs.len() > 80, "{}", pairs.len());
        for p in &pairs {
            let (rel, kind) = (p["rel"].as_str().unwrap(), p["type"].as_str().unwrap());
            let fitting = types_for(rel).unwrap_or_else(|| panic!("{rel} is not known ({})", p["sample"]));
            assert!(fitting.contains(&kind), "{rel}/{kind} ({}) does not fit {fitting:?}", p["sample"]);
        }
        assert_eq!(types_for("audioVideoInvitation"), Some(&["started", "updated", "completed"][..]));
        assert_eq!(types_for("*"), None);
    }
}
