//! `ucwa-agent check --online`: sign in to the configured pool step by step (discovery,
//! redirects, challenge, token, user resource) and try the `applications` resource with the
//! token, without creating an application or running any script. Each step is timed and says
//! what it found; the first failing step says why.

use super::end::StartError;
use super::pool::Pool;
use crate::config::Config;
use crate::ucwa::signin::{sign_in_steps, Step};
use crate::ucwa::UcwaError;
use reqwest::Method;
use std::time::{Duration, Instant};

/// One step as `check --online` prints it.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub name: &'static str,
    pub took: Duration,
    /// What it found, or why it failed.
    pub outcome: Result<String, String>,
}

/// How the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The pool refused the credentials (exit status 3, as `run` would).
    CredentialsRefused,
    /// Another step failed: the pool cannot be reached, or answers unlike a UCWA pool.
    Failed,
}

/// Walks one account's sign-in against its pool (the embedded simulator for `embedded`).
pub async fn check_account(config: &Config, spec: &crate::config::AccountSpec) -> Result<(Vec<StepResult>, Verdict), StartError> {
    let pool = Pool::of_account(config, spec).await?;
    let mut steps: Vec<StepResult> = Vec::new();
    // A password the pool refused before is not tried again here either (an account lockout).
    if let Some(r) = super::refusal::recorded(&spec.state_dir, &pool.auth) {
        let why = format!("refused before ({}, at {}); not tried again until the password changes (or {} is deleted)", r.reason, r.at, r.file.display());
        steps.push(StepResult { name: "token", took: Duration::ZERO, outcome: Err(why) });
        return Ok((steps, Verdict::CredentialsRefused));
    }
    let mut current: Option<(&'static str, Instant)> = None;
    let signed = {
        let mut record = |s: Step| match s {
            Step::Begin(name) => current = Some((name, Instant::now())),
            Step::Done(found) => {
                if let Some((name, started)) = current.take() {
                    steps.push(StepResult { name, took: started.elapsed(), outcome: Ok(found) });
                }
            }
        };
        sign_in_steps(&pool.http, &pool.discover, &pool.auth, None, &mut record).await
    };
    let signed = match signed {
        Ok(s) => s,
        Err(error) => {
            let (name, started) = current.unwrap_or(("sign-in", Instant::now()));
            let verdict = if matches!(error, UcwaError::Credentials(_)) { Verdict::CredentialsRefused } else { Verdict::Failed };
            steps.push(StepResult { name, took: started.elapsed(), outcome: Err(error.to_string()) });
            return Ok((steps, verdict));
        }
    };
    // The applications resource takes POST only (which would create one); a GET with the
    // token shows whether the pool accepts it there: any answer but 401/403 is a pass (the
    // simulator says 405; pools are not documented to say one thing).
    let started = Instant::now();
    let reply = signed.session.send(Method::GET, &signed.applications_href, None, Some(Duration::from_secs(30))).await;
    let outcome = match reply {
        Ok(r) if r.status != 401 && r.status != 403 && r.status < 500 => {
            Ok(format!("the pool takes the token there (GET answered {}; `run` creates the application with POST)", r.status))
        }
        Ok(r) => Err(crate::ucwa::session::status_error(&Method::GET, &signed.applications_href, &r).to_string()),
        Err(e) => Err(e.to_string()),
    };
    let verdict = if outcome.is_ok() { Verdict::Ok } else { Verdict::Failed };
    steps.push(StepResult { name: "applications", took: started.elapsed(), outcome });
    Ok((steps, verdict))
}
