//! Operations on a deployed `site` outside plan and apply: reading its build
//! and app logs (`jaam logs`, the daemon's log stream) and rolling it back
//! (`jaam rollback`). Both find the site's resources in state.

use std::collections::HashSet;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_cloudwatchlogs::Client as LogsClient;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::classify;
use crate::addr::ResourceAddr;
use crate::backoff::Backoff;
use crate::provider::{ErrorKind, ProviderError, Result};
use crate::state::State;
use crate::value::Value;

/// One log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The stream (`build` or `app` for a site).
    pub stream: String,
    /// The text.
    pub message: String,
    /// CloudWatch's event id (for de-duplication while following).
    pub id: String,
}

/// How `follow` polls when nothing new arrived: from half a second up to five.
const FOLLOW: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(5),
    deadline: Duration::MAX,
};

/// The log group of `addr`: a `site` (its `log_group`), or a `log_group` itself.
///
/// # Errors
/// A message naming what is missing from state.
pub fn log_group_of(state: &State, addr: &ResourceAddr) -> std::result::Result<String, String> {
    let target = if addr.kind() == "site" {
        format!("{addr}.log_group")
            .parse::<ResourceAddr>()
            .map_err(|e| e.to_string())?
    } else if addr.kind() == "log_group" {
        addr.clone()
    } else {
        return Err(format!(
            "`{addr}` has no logs: name a site (`site.blog`) or a log group"
        ));
    };
    let resource = state
        .resources
        .get(&target)
        .ok_or_else(|| format!("`{target}` is not in state: apply the specs first"))?;
    Ok(resource
        .attributes
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&resource.id)
        .to_owned())
}

/// Reads a log group with FilterLogEvents.
#[derive(Clone, Debug)]
pub struct Logs {
    client: LogsClient,
}

impl Logs {
    /// A reader using `config`.
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            client: LogsClient::from_conf(
                super::instrumented!(
                    aws_sdk_cloudwatchlogs::config::Builder::from(config),
                    None::<super::CallCounter>
                )
                .build(),
            ),
        }
    }

    /// Every event of `group` from `since` on, oldest first (all pages).
    ///
    /// # Errors
    /// A failed FilterLogEvents call.
    pub async fn since(&self, group: &str, since: DateTime<Utc>) -> Result<Vec<LogLine>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .filter_log_events()
            .log_group_name(group)
            .start_time(since.timestamp_millis())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("FilterLogEvents", e))?;
            out.extend(page.events().iter().map(|event| {
                LogLine {
                    timestamp: DateTime::from_timestamp_millis(
                        event.timestamp().unwrap_or_default(),
                    )
                    .unwrap_or_default(),
                    stream: event.log_stream_name().unwrap_or_default().to_owned(),
                    message: event.message().unwrap_or_default().to_owned(),
                    id: event.event_id().unwrap_or_default().to_owned(),
                }
            }));
        }
        out.sort_by_key(|line| line.timestamp);
        Ok(out)
    }

    /// Calls `sink` with every event from `since` on, then with new ones as
    /// they arrive (polling with backoff while nothing comes) until `cancel`.
    ///
    /// # Errors
    /// A failed call that is not transient.
    pub async fn follow(
        &self,
        group: &str,
        since: DateTime<Utc>,
        cancel: &CancellationToken,
        mut sink: impl FnMut(LogLine),
    ) -> Result<()> {
        let mut from = since;
        // Ids already delivered at the newest timestamp (polls overlap by it).
        let mut seen: HashSet<String> = HashSet::new();
        let mut quiet = 0;
        loop {
            match self.since(group, from).await {
                Ok(lines) => {
                    let fresh: Vec<LogLine> = lines
                        .into_iter()
                        .filter(|line| !seen.contains(&line.id))
                        .collect();
                    if fresh.is_empty() {
                        quiet += 1;
                    } else {
                        quiet = 0;
                        let newest = fresh.last().map_or(from, |line| line.timestamp);
                        if newest > from {
                            seen.clear();
                            from = newest;
                        }
                        for line in fresh {
                            if line.timestamp == from {
                                seen.insert(line.id.clone());
                            }
                            sink(line);
                        }
                    }
                }
                Err(error) if error.is_retryable() => quiet += 1,
                Err(error) => return Err(error),
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(FOLLOW.delay(quiet)) => {}
            }
        }
    }
}

/// [`rollback`], timed, with the deploy-history entry that records it
/// whatever happened (`None` when `site` is not a site of `state`): what
/// `jaam rollback` and the dashboard's Roll back both write.
pub async fn rollback_recorded(
    config: &SdkConfig,
    state: &State,
    site: &ResourceAddr,
) -> (Result<String>, Option<crate::history::Deployment>) {
    let (started, took) = (chrono::Utc::now(), std::time::Instant::now());
    let outcome = rollback(config, state, site).await;
    let deployment = crate::history::rollback(
        state,
        site,
        started,
        took.elapsed(),
        outcome
            .as_ref()
            .map(String::as_str)
            .map_err(ToString::to_string),
    );
    (outcome, deployment)
}

/// Runs the deploy script's `rollback` on the site's instance: it switches
/// back to the previous release at once. State is not changed: the site stays
/// rolled back until the next revision is deployed.
///
/// # Errors
/// The site is not in state, or the command failed (with its output's tail).
pub async fn rollback(config: &SdkConfig, state: &State, site: &ResourceAddr) -> Result<String> {
    let addr: ResourceAddr = format!("{site}.instance")
        .parse()
        .map_err(|_| ProviderError::new(ErrorKind::Invalid, format!("`{site}` is not a site")))?;
    if site.kind() != "site" {
        return Err(ProviderError::new(
            ErrorKind::Invalid,
            format!("`{site}` is not a site: `jaam rollback site.NAME`"),
        ));
    }
    let instance = state.resources.get(&addr).ok_or_else(|| {
        ProviderError::new(
            ErrorKind::NotFound,
            format!("`{addr}` is not in state: apply the specs first"),
        )
    })?;
    let command = instance
        .attributes
        .get("deploy_command")
        .and_then(Value::as_str)
        .unwrap_or(super::ec2::DEPLOY_COMMAND);
    let client = aws_sdk_ssm::Client::from_conf(
        super::instrumented!(
            aws_sdk_ssm::config::Builder::from(config),
            None::<super::CallCounter>
        )
        .build(),
    );
    let outputs = super::ssm::send_command(
        &client,
        std::slice::from_ref(&instance.id),
        &format!("jaam: rollback {site}"),
        vec![format!("{command} rollback")],
        super::ssm::COMMAND,
    )
    .await?;
    Ok(outputs.concat())
}
