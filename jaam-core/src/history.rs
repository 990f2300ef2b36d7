//! Deploy history: every deploy and rollback of a site, kept beside the state.
//!
//! A [`Deployment`] says which site went to which revision from which, why
//! (the trigger: `cli`, `push`, `merged pull request`, `spec change`,
//! `resync`, `retry`, `rollback`), when, for how long and with what result —
//! with the failing build's last lines. [`from_apply`] derives them from a
//! plan and its apply report: an instance created with a revision, or
//! updated with a new one, is a deploy.
//!
//! # Storage
//! The state store keeps the newest [`KEEP`] per site
//! ([`crate::state::StateStore::record_deployments`]): a file beside a local
//! state (`<state>.history.json`), an object beside an S3 one
//! (`KEY.history`). Callers record under the stack's lock, after the apply:
//! the lock is held no longer than one write for it.
//!
//! # Decisions
//! - `duration_ms` is the apply's that deployed it (for a deploy-only
//!   reconcile, the deploy itself).
//! - A deploy the plan skipped or never started is not recorded: nothing ran.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::addr::ResourceAddr;
use crate::plan::{Action, Plan};
use crate::value::Value;

/// Deployments kept per site.
pub const KEEP: usize = 100;

/// One deploy or rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The site's name (`blog` for `site.blog`), or the instance's address.
    pub site: String,
    /// The stack.
    pub stack: String,
    /// The revision deployed (or rolled back to).
    pub revision: String,
    /// The revision served before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Why it ran.
    pub trigger: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// `succeeded` or `failed`.
    pub result: String,
    /// Why it failed: the error, ending with the build's last lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The site an instance address belongs to.
pub fn site_of(addr: &ResourceAddr) -> String {
    addr.composite()
        .map_or_else(|| addr.to_string(), |site| site.name().to_owned())
}

/// The history row of a rollback of `site` (`site.NAME`) begun at
/// `started` that took `took`: `output` is what the deploy script printed
/// (it ends with "serving <sha>"), or why it failed. `None` when `site` is
/// not a site.
pub fn rollback(
    state: &crate::state::State,
    site: &ResourceAddr,
    started: DateTime<Utc>,
    took: std::time::Duration,
    output: Result<&str, String>,
) -> Option<Deployment> {
    let instance: ResourceAddr = format!("{site}.instance").parse().ok()?;
    let previous = state
        .resources
        .get(&instance)
        .and_then(|r| r.attributes.get("revision"))
        .and_then(crate::value::Value::as_str)
        .map(str::to_owned);
    Some(Deployment {
        site: site_of(&instance),
        stack: state.stack.clone(),
        revision: output
            .as_ref()
            .ok()
            .and_then(|text| {
                text.lines()
                    .rev()
                    .find_map(|line| line.split("serving ").nth(1))
            })
            .and_then(|rest| rest.split_whitespace().next())
            .map_or_else(
                || "(the previous release)".to_owned(),
                |release| release.split('-').next().unwrap_or(release).to_owned(),
            ),
        previous,
        trigger: "rollback".to_owned(),
        started,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        result: if output.is_ok() {
            "succeeded"
        } else {
            "failed"
        }
        .to_owned(),
        error: output.err(),
    })
}

/// The deploys an apply of `plan` ran, per its `report`.
pub fn from_apply(
    plan: &Plan,
    report: &crate::apply::Report,
    trigger: &str,
    started: DateTime<Utc>,
    elapsed: std::time::Duration,
) -> Vec<Deployment> {
    let revision = |attrs: Option<&crate::value::Attrs>| {
        attrs
            .and_then(|a| a.get("revision"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    plan.changes
        .iter()
        .filter(|change| change.kind == "instance")
        .filter(|change| match &change.action {
            Action::Create => true,
            Action::Update { changed } | Action::Replace { changed, .. } => {
                changed.iter().any(|c| c == "revision")
            }
            _ => false,
        })
        .filter_map(|change| {
            let wanted = revision(change.after.as_ref())?;
            let failure = report.failed.iter().find(|f| f.addr() == &change.addr);
            let ran = failure.is_some() || report.applied.contains(&change.addr);
            ran.then(|| Deployment {
                site: site_of(&change.addr),
                stack: plan.stack.clone(),
                revision: wanted,
                previous: revision(change.before.as_ref()),
                trigger: trigger.to_owned(),
                started,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                result: if failure.is_some() {
                    "failed"
                } else {
                    "succeeded"
                }
                .to_owned(),
                error: failure.map(|f| crate::apply::error_chain(f)),
            })
        })
        .collect()
}

/// Adds `new` to `kept` (oldest first) and keeps the newest [`KEEP`] per site.
pub fn merge(kept: &mut Vec<Deployment>, new: &[Deployment]) {
    kept.extend(new.iter().cloned());
    let mut per_site: std::collections::HashMap<String, usize> = Default::default();
    for deployment in kept.iter() {
        *per_site.entry(deployment.site.clone()).or_default() += 1;
    }
    let mut drop: std::collections::HashMap<String, usize> = per_site
        .into_iter()
        .map(|(site, count)| (site, count.saturating_sub(KEEP)))
        .collect();
    kept.retain(|deployment| match drop.get_mut(&deployment.site) {
        Some(extra) if *extra > 0 => {
            *extra -= 1;
            false
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(site: &str, n: usize) -> Deployment {
        Deployment {
            site: site.to_owned(),
            stack: "s".into(),
            revision: format!("{n:040}"),
            previous: None,
            trigger: "cli".into(),
            started: Utc::now(),
            duration_ms: 1,
            result: "succeeded".into(),
            error: None,
        }
    }

    #[test]
    fn history_should_keep_the_newest_per_site() {
        let mut kept = Vec::new();
        for n in 0..KEEP + 5 {
            merge(&mut kept, &[at("blog", n)]);
        }
        merge(&mut kept, &[at("shop", 0)]);
        let blog: Vec<_> = kept.iter().filter(|d| d.site == "blog").collect();
        assert_eq!(blog.len(), KEEP);
        assert_eq!(
            blog[0].revision,
            format!("{:040}", 5),
            "the oldest went first"
        );
        assert_eq!(kept.iter().filter(|d| d.site == "shop").count(), 1);
    }
}
