//! The account's presence subscription: the contacts its loaded scripts watch
//! (`agent.people.watch`, kept in the store per script, so a reload, a new application or a
//! restart keeps them without the script's help), subscribed on each application the account
//! opens (`people/presenceSubscriptions`, one subscription for all of them), its members kept
//! in step with the watches (`addToPresenceSubscription`, memberships deleted), extended before
//! it expires (at once when the pool says it is about to, `presenceSubscription` `updated`;
//! else `RENEW_AFTER` after the last extension), and made again when the pool ended it.
//!
//! One task per application, started and aborted with the keep-alive. The application's
//! presence subscriptions are the account's: any the pool still has when the task starts (a
//! resumed application, after a restart) are deleted and one is made afresh.

use crate::script::{ScriptHost, DURATION_MINUTES, MAX_WATCHED};
use crate::ucwa::{Session, UcwaError};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Extended this long after it was made or last extended, if the pool has not said it is
/// about to expire by then.
const RENEW_AFTER: Duration = Duration::from_secs(20 * 60);

/// The subscription as the pool made it.
struct Sub {
    href: String,
    add: Option<String>,
    memberships: Option<String>,
    members: BTreeSet<String>,
    renew_at: Instant,
}

/// Starts the task for the application at `application` (its href); abort it when the
/// application ends.
pub fn spawn(session: Arc<Session>, application: String, host: ScriptHost) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(session, application, host))
}

fn link(resource: &Value, rel: &str) -> Option<String> {
    let l = resource.get("_links")?.get(rel)?;
    let l = if let Value::Array(a) = l { a.first()? } else { l };
    l.get("href")?.as_str().map(str::to_string)
}

/// The contacts the loaded scripts watch.
fn wanted(host: &ScriptHost) -> BTreeSet<String> {
    let names: Vec<String> = host.scripts().into_iter().map(|(n, _)| n).collect();
    match host.env().store.watched(Some(&names)) {
        Ok(w) => w.into_iter().take(MAX_WATCHED).collect(),
        Err(error) => {
            tracing::error!(%error, "cannot read the watched contacts");
            BTreeSet::new()
        }
    }
}

async fn run(session: Arc<Session>, application: String, host: ScriptHost) {
    let signals = host.env().watches.clone();
    let mut sub: Option<Sub> = None;
    // None until found; Some(None): the pool offers no presence subscriptions.
    let mut collection: Option<Option<String>> = None;
    let mut failures = 0u32;
    loop {
        let step = step(&session, &application, &host, &mut sub, &mut collection).await;
        let wake = match step {
            Ok(()) => {
                failures = 0;
                sub.as_ref().map(|s| s.renew_at)
            }
            Err(error) => {
                failures += 1;
                let delay = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "presence subscription: the request failed; retrying");
                Some(Instant::now() + delay)
            }
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.changed.notified() => {}
            _ = signals.expiring.notified() => {
                if let Some(s) = &mut sub {
                    s.renew_at = Instant::now();
                }
            }
            _ = signals.lost.notified() => {
                // Gone for sure only if the pool says so.
                if let Some(s) = &sub {
                    if let Err(e) = session.get_json(&s.href).await {
                        if e.application_gone() {
                            tracing::info!(subscription = %s.href, "presence subscription ended by the pool; making it again");
                            sub = None;
                        }
                    }
                }
            }
            _ = sleep => {}
        }
    }
}

/// Brings the pool's subscription in line with the watches (and extends it when due).
async fn step(
    session: &Session,
    application: &str,
    host: &ScriptHost,
    sub: &mut Option<Sub>,
    collection: &mut Option<Option<String>>,
) -> Result<(), UcwaError> {
    let want = wanted(host);
    if collection.is_none() {
        if want.is_empty() && sub.is_none() {
            return Ok(());
        }
        *collection = Some(find_collection(session, application).await?);
        match collection {
            // Found once per application, before this task made any: any there are older.
            Some(Some(href)) => clear(session, href).await,
            Some(None) => tracing::warn!("the pool offers no presenceSubscriptions: agent.people.watch gets no contactPresence events"),
            _ => {}
        }
    }
    let Some(Some(collection)) = collection.as_ref() else {
        return Ok(());
    };
    if let Some(s) = sub.as_mut() {
        if want.is_empty() {
            delete(session, &s.href).await?;
            tracing::info!("presence subscription deleted: nobody is watched");
            *sub = None;
            return Ok(());
        }
        match update(session, s, &want).await {
            Err(e) if e.application_gone() => {
                tracing::info!(subscription = %s.href, "the presence subscription is gone; making it again");
                *sub = None;
            }
            other => return other,
        }
    }
    if want.is_empty() {
        return Ok(());
    }
    let body = json!({"duration": DURATION_MINUTES, "uris": want});
    let reply = session.post_json(collection, &body).await?;
    let made = reply.json(collection)?;
    let Some(href) = link(&made, "self") else {
        return Err(UcwaError::Malformed { url: collection.clone(), message: "the presenceSubscription has no self link".into() });
    };
    tracing::info!(subscription = %href, watched = want.len(), "presence subscription made");
    *sub = Some(Sub {
        href,
        add: link(&made, "addToPresenceSubscription"),
        memberships: link(&made, "memberships"),
        members: want,
        renew_at: Instant::now() + RENEW_AFTER,
    });
    Ok(())
}

/// `people/presenceSubscriptions` of the application (embedded `people`, or linked).
async fn find_collection(session: &Session, application: &str) -> Result<Option<String>, UcwaError> {
    let app = session.get_json(application).await?;
    let embedded = app.get("_embedded").and_then(|e| e.get("people")).cloned();
    let people = match embedded {
        Some(p) => p,
        None => match link(&app, "people") {
            Some(href) => session.get_json(&href).await?,
            None => return Ok(None),
        },
    };
    Ok(link(&people, "presenceSubscriptions"))
}

/// Deletes the subscriptions the application has (an earlier run's, on a resumed application).
async fn clear(session: &Session, collection: &str) {
    let Ok(list) = session.get_json(collection).await else {
        return;
    };
    let embedded = list.get("_embedded").and_then(|e| e.get("presenceSubscription")).cloned().unwrap_or(Value::Null);
    let items = match embedded {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        one => vec![one],
    };
    for s in items {
        if let Some(href) = link(&s, "self") {
            match delete(session, &href).await {
                Ok(()) => tracing::info!(subscription = %href, "an earlier presence subscription of this application deleted"),
                Err(error) => tracing::warn!(%error, "cannot delete an earlier presence subscription"),
            }
        }
    }
}

async fn delete(session: &Session, href: &str) -> Result<(), UcwaError> {
    match session.send_ok(Method::DELETE, href, None, None).await {
        Err(e) if e.application_gone() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Extends the subscription when due, and adds and removes members.
async fn update(session: &Session, s: &mut Sub, want: &BTreeSet<String>) -> Result<(), UcwaError> {
    if Instant::now() >= s.renew_at {
        let sep = if s.href.contains('?') { '&' } else { '?' };
        session.send_ok(Method::POST, &format!("{}{sep}duration={DURATION_MINUTES}", s.href), None, None).await?;
        s.renew_at = Instant::now() + RENEW_AFTER;
        tracing::debug!(subscription = %s.href, "presence subscription extended");
    }
    let added: Vec<&String> = want.difference(&s.members).collect();
    if !added.is_empty() {
        let Some(add) = &s.add else {
            // No way to add: a new subscription instead.
            return Err(gone(&s.href));
        };
        session.post_json(add, &json!({"contactUris": added})).await?;
        tracing::info!(added = added.len(), "contacts added to the presence subscription");
    }
    let removed: Vec<String> = s.members.difference(want).cloned().collect();
    if !removed.is_empty() {
        let Some(memberships) = &s.memberships else {
            return Err(gone(&s.href));
        };
        let list = session.get_json(memberships).await?;
        let embedded = list.get("_embedded").and_then(|e| e.get("presenceSubscriptionMembership")).cloned().unwrap_or(Value::Null);
        let items = match embedded {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            one => vec![one],
        };
        for uri in &removed {
            let address = uri.trim_start_matches("sip:").to_ascii_lowercase();
            let member = items.iter().find(|m| {
                let ends = |rel: &str, sep: char| link(m, rel).is_some_and(|h| h.to_ascii_lowercase().ends_with(&format!("{sep}{address}")));
                ends("contact", '/') || ends("self", ',') || ends("self", '/')
            });
            if let Some(href) = member.and_then(|m| link(m, "self")) {
                delete(session, &href).await?;
            }
        }
        tracing::info!(removed = removed.len(), "contacts removed from the presence subscription");
    }
    s.members = want.clone();
    Ok(())
}

/// What a subscription that cannot be changed in place is treated as: gone, so it is made again.
fn gone(href: &str) -> UcwaError {
    UcwaError::Status(Box::new(crate::ucwa::error::StatusError {
        method: "POST".into(),
        url: href.to_string(),
        status: 404,
        code: None,
        subcode: None,
        message: Some("no link to change its members".into()),
        diagnostics: None,
        retry_after: None,
    }))
}
