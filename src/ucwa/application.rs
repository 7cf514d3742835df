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
    /// `me/reportMyActivity` once available (the application path as a fallback).
    pub report_activity: String,
}

impl Application {
    fn from_resource(v: &Value, url: &str) -> Result<Application, UcwaError> {
        let missing = |what: &str| UcwaError::Malformed { url: url.to_string(), message: format!("the application has no {what} link") };
        let self_href = link(v, "self").ok_or_else(|| missing("self"))?.to_string();
        let events_href = link(v, "events").ok_or_else(|| missing("events"))?.to_string();
        let me = v.get("_embedded").and_then(|e| e.get("me"));
        let make_me_available = me.and_then(|m| link(m, "makeMeAvailable")).map(str::to_string);
        let report_activity = me
            .and_then(|m| link(m, "reportMyActivity"))
            .or_else(|| link(v, "reportMyActivity"))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/me/reportMyActivity", self_href.trim_end_matches('/')));
        Ok(Application { self_href, events_href, make_me_available, report_activity })
    }
}

/// `POST applications`; the same EndpointId gives back the same application (and channel).
pub async fn create(
    session: &Session,
    applications_href: &str,
    user_agent: &str,
    endpoint_id: &str,
) -> Result<Application, UcwaError> {
    let body = json!({"UserAgent": user_agent, "EndpointId": endpoint_id, "Culture": "en-US"});
    let reply = session.post_json(applications_href, &body).await?;
    let v = reply.json(applications_href)?;
    Application::from_resource(&v, applications_href)
}

/// `POST me/makeMeAvailable`, then re-reads the application for the links it gains.
pub async fn make_me_available(session: &Session, app: &Application, modalities: &[String]) -> Result<Application, UcwaError> {
    if let Some(href) = &app.make_me_available {
        match session.post_json(href, &json!({"SupportedModalities": modalities})).await {
            Ok(_) => {}
            // Already available (a restart reusing the application): fine.
            Err(e) if e.status() == Some(409) && e.subcode() == Some("AlreadyExists") => {}
            Err(e) => return Err(e),
        }
    }
    let v = session.get_json(&app.self_href).await?;
    Application::from_resource(&v, &app.self_href)
}

/// `POST me/reportMyActivity` (empty body).
pub async fn report_activity(session: &Session, app: &Application) -> Result<(), UcwaError> {
    session.send_ok(Method::POST, &app.report_activity, Some(("application/json".to_string(), bytes::Bytes::new())), None).await?;
    Ok(())
}

/// `DELETE` the application (on shutdown).
pub async fn delete(session: &Session, app: &Application) -> Result<(), UcwaError> {
    session.send_ok(Method::DELETE, &app.self_href, None, None).await?;
    Ok(())
}
