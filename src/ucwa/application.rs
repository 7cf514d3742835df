//! The UCWA application (PROTOCOL.md §3): create, makeMeAvailable, reportMyActivity, delete.

use super::{link, Session, UcwaError};
use reqwest::Method;
use serde_json::{json, Value};

/// What the agent needs of its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// `_links.self`: GET and DELETE go here.
    pub self_href: String,
    /// `_links.events`: the first event-channel request (`…/events?ack=1`).
    pub events_href: String,
    /// `me/makeMeAvailable`, while the application has not done it.
    pub make_me_available: Option<String>,
    /// `reportMyActivity`, on `me` or on the application, once available; None when the pool
    /// links it nowhere (the keep-alive is then not sent).
    pub report_activity: Option<String>,
    /// Whether the application resource embeds or links `me` at all.
    me: MeAt,
}

/// Where an application resource says `me` is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MeAt {
    Embedded,
    Linked(String),
    /// Neither: `<application>/me` is tried.
    Unsaid,
}

/// Whether incoming calls can reach the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// makeMeAvailable was done now (or the pool said it already was).
    Available,
    /// `me` has no makeMeAvailable link: the application already is available.
    AlreadyAvailable,
    /// makeMeAvailable could not be found or done: incoming calls will not arrive. Why.
    Unavailable(String),
}

impl Application {
    fn from_resource(v: &Value, url: &str) -> Result<Application, UcwaError> {
        let missing = |what: &str| UcwaError::Malformed { url: url.to_string(), message: format!("the application has no {what} link") };
        let self_href = link(v, "self").ok_or_else(|| missing("self"))?.to_string();
        let events_href = link(v, "events").ok_or_else(|| missing("events"))?.to_string();
        // `_embedded.me` may come as an array of one (captured traffic).
        let me = v.get("_embedded").and_then(|e| e.get("me")).map(|m| match m {
            Value::Array(items) => items.first().unwrap_or(m),
            one => one,
        });
        let make_me_available = me.and_then(|m| link(m, "makeMeAvailable")).map(str::to_string);
        let report_activity = me.and_then(|m| link(m, "reportMyActivity")).or_else(|| link(v, "reportMyActivity")).map(str::to_string);
        let me = match (me, link(v, "me")) {
            (Some(_), _) => MeAt::Embedded,
            (None, Some(href)) => MeAt::Linked(href.to_string()),
            (None, None) => MeAt::Unsaid,
        };
        Ok(Application { self_href, events_href, make_me_available, report_activity, me })
    }

    /// A saved application the pool still has (its resource, as a GET answered), polled again
    /// from the saved events href.
    pub fn resumed(resource: &Value, href: &str, events_href: String) -> Result<Application, UcwaError> {
        let mut app = Application::from_resource(resource, href)?;
        app.events_href = events_href;
        Ok(app)
    }
}

/// `POST applications`; the same EndpointId gives back the same application (and channel).
pub async fn create(session: &Session, applications_href: &str, user_agent: &str, endpoint_id: &str) -> Result<Application, UcwaError> {
    let body = json!({"UserAgent": user_agent, "EndpointId": endpoint_id, "Culture": "en-US"});
    let reply = session.post_json(applications_href, &body).await?;
    let v = reply.json(applications_href)?;
    Application::from_resource(&v, applications_href)
}

/// Finds makeMeAvailable wherever the pool put it (`me` embedded in the application, linked
/// from it, or only at `<application>/me`), POSTs it, then re-reads the application and `me`
/// for the links they gain (reportMyActivity). A pool error on the POST is an error; `me` not
/// to be found is [`Availability::Unavailable`], not an error: the channel still works.
pub async fn make_me_available(session: &Session, app: &Application, modalities: &[String]) -> Result<(Application, Availability), UcwaError> {
    let me_href = match &app.me {
        MeAt::Embedded => None,
        MeAt::Linked(href) => Some(href.clone()),
        MeAt::Unsaid => Some(format!("{}/me", app.self_href.trim_end_matches('/'))),
    };
    let (offer, me) = match &me_href {
        None => (app.make_me_available.clone(), None),
        Some(href) => match session.get_json(href).await {
            Ok(me) => (link(&me, "makeMeAvailable").map(str::to_string), Some(me)),
            Err(e) if matches!(e.status(), Some(404) | Some(405)) => {
                let status = e.status().unwrap_or_default();
                let why = format!("the application has no `me`: not embedded, not linked, and {href} answered {status}");
                return Ok((app.clone(), Availability::Unavailable(why)));
            }
            Err(e) => return Err(e),
        },
    };
    let mut availability = Availability::AlreadyAvailable;
    if let Some(href) = &offer {
        match session.post_json(href, &json!({"SupportedModalities": modalities})).await {
            Ok(_) => availability = Availability::Available,
            // Already available (a restart reusing the application): fine.
            Err(e) if e.status() == Some(409) && e.subcode() == Some("AlreadyExists") => availability = Availability::Available,
            Err(e) => return Err(e),
        }
    }
    let v = session.get_json(&app.self_href).await?;
    let mut fresh = Application::from_resource(&v, &app.self_href)?;
    // The channel goes on where it was (a resumed application's saved position).
    fresh.events_href = app.events_href.clone();
    fresh.me = app.me.clone();
    if fresh.report_activity.is_none() {
        // Linked only from a `me` fetched apart: read it again now that it is available.
        if let (Some(href), true) = (&me_href, me.is_some()) {
            if let Ok(me) = session.get_json(href).await {
                fresh.report_activity = link(&me, "reportMyActivity").map(str::to_string);
            }
        }
    }
    Ok((fresh, availability))
}

/// `POST me/reportMyActivity` (empty body).
pub async fn report_activity(session: &Session, href: &str) -> Result<(), UcwaError> {
    session.send_ok(Method::POST, href, Some(("application/json".to_string(), bytes::Bytes::new())), None).await?;
    Ok(())
}

/// `DELETE` the application (on shutdown).
pub async fn delete(session: &Session, app: &Application) -> Result<(), UcwaError> {
    session.send_ok(Method::DELETE, &app.self_href, None, None).await?;
    Ok(())
}

/// A GUID-shaped EndpointId derived from the user name, so a restart finds the same application.
pub fn endpoint_id_for(username: &str) -> String {
    // FNV-1a, 128 bits: stable across builds and platforms (unlike std's hasher).
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in username.to_ascii_lowercase().bytes().chain(*b"ucwa-agent") {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let x = format!("{h:032x}");
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}
