//! Deploy status on GitHub: each site deploy the daemon runs is a GitHub
//! deployment (environment `production`) of the commit it deploys, and each
//! preview it builds one of the pull request's head (environment
//! `preview/pr-N`, `environment_url` the preview's), moved
//! `in_progress` when the apply starts and `success` or `failure` when it
//! ends, with the site's URL (`environment_url`) and, with `--public-url`,
//! the daemon's page of the site as its log (`log_url`). GitHub shows them on
//! the commit and the pull request, as Vercel's and Netlify's checks do.
//!
//! A preview the apply removed (its pull request closed, or evicted by
//! newer ones beyond `previews.max`) has its newest deployment marked
//! `inactive`, so the pull request stops offering a URL that is gone.
//!
//! Whether a deploy succeeded is read from the state the apply saved: the
//! instance's recorded revision, or the preview's recorded head. So a
//! deploy whose revision went out while one preview failed reports
//! `success` for production and `failure` for that preview only.
//!
//! A token that may not write deployments ("Deployments: write" on a
//! fine-grained token, `repo_deployment` on a classic one) costs a warning
//! in the daemon's log, never a failed deploy; so does any other error of
//! these calls.

use jaam_core::ResourceAddr;
use jaam_core::providers::github::{Api, DeploymentStatus};

/// One deploy the apply is about to run.
pub(super) struct Started {
    site: String,
    repo: String,
    revision: String,
    /// `production`, or `preview/pr-N`.
    environment: String,
    /// The pull request, for a preview.
    preview: Option<u64>,
    addr: ResourceAddr,
    url: Option<String>,
    log_url: Option<String>,
    id: Option<u64>,
}

/// What an apply of `plan` deploys: sites whose instance gets a new commit.
fn planned(
    plan: &jaam_core::Plan,
    config: &jaam_core::spec::Config,
    routes: &std::collections::BTreeMap<String, (String, String)>,
    public_url: Option<&str>,
) -> Vec<Started> {
    let mut started: Vec<Started> = plan
        .changes
        .iter()
        .filter(|change| change.action.is_change() && change.addr.kind() == "instance")
        .filter_map(|change| {
            let site = change.addr.composite()?;
            let name = site.name().to_owned();
            let revision = change.after.as_ref()?.get("revision")?.as_str()?.to_owned();
            let before = change
                .before
                .as_ref()
                .and_then(|b| b.get("revision")?.as_str());
            if before == Some(revision.as_str()) || !revision.chars().all(|c| c.is_ascii_hexdigit())
            {
                return None;
            }
            let (repo, _) = routes.get(&name)?.clone();
            let record: ResourceAddr = format!("site.{name}.record").parse().ok()?;
            let domain = config
                .resources()
                .get(&record)
                .and_then(|r| r.args.get("name"))
                .map(|expr| expr.evaluate(&|_, _| None, &|_| None))
                .and_then(|value| value.as_str().map(str::to_owned));
            let https = config.resources().keys().any(|addr| {
                addr.kind() == "certificate"
                    && (addr.to_string() == format!("site.{name}.certificate")
                        || addr.name().starts_with("wildcard-"))
            });
            Some(Started {
                url: domain.map(|d| format!("{}://{d}", if https { "https" } else { "http" })),
                log_url: public_url
                    .map(|base| format!("{}/sites/{name}", base.trim_end_matches('/'))),
                site: name,
                repo,
                revision,
                environment: "production".to_owned(),
                preview: None,
                addr: change.addr.clone(),
                id: None,
            })
        })
        .collect();
    started.extend(previews_planned(plan, routes, public_url));
    started
}

/// The previews `plan` builds: each pull request whose head is new to the
/// instance's recorded previews.
fn previews_planned(
    plan: &jaam_core::Plan,
    routes: &std::collections::BTreeMap<String, (String, String)>,
    public_url: Option<&str>,
) -> Vec<Started> {
    use jaam_core::providers::aws::ec2::previews_of;
    let mut started = Vec::new();
    for change in plan
        .changes
        .iter()
        .filter(|change| change.action.is_change() && change.addr.kind() == "instance")
    {
        let Some(site) = change.addr.composite() else {
            continue;
        };
        let Some((repo, _)) = routes.get(site.name()) else {
            continue;
        };
        let after = previews_of(change.after.as_ref().and_then(|a| a.get("previews")));
        let before = previews_of(change.before.as_ref().and_then(|b| b.get("previews")));
        for (number, preview) in after {
            if before.get(&number).is_some_and(|b| b.head == preview.head) {
                continue;
            }
            started.push(Started {
                site: site.name().to_owned(),
                repo: repo.clone(),
                revision: preview.head,
                environment: format!("preview/pr-{number}"),
                preview: Some(number),
                addr: change.addr.clone(),
                url: Some(preview.url).filter(|url| !url.is_empty()),
                log_url: public_url
                    .map(|base| format!("{}/sites/{}", base.trim_end_matches('/'), site.name())),
                id: None,
            });
        }
    }
    started
}

/// Creates the deployments of what `plan` deploys, `in_progress`.
pub(super) async fn start(
    api: &Api,
    plan: &jaam_core::Plan,
    config: &jaam_core::spec::Config,
    routes: &std::collections::BTreeMap<String, (String, String)>,
    public_url: Option<&str>,
) -> Vec<Started> {
    let mut started = planned(plan, config, routes, public_url);
    for deploy in &mut started {
        let description = format!(
            "jaam: deploying {}{}",
            &deploy.revision[..7.min(deploy.revision.len())],
            deploy
                .preview
                .map(|n| format!(" (preview of #{n})"))
                .unwrap_or_default()
        );
        match api
            .create_deployment(
                &deploy.repo,
                &deploy.revision,
                &deploy.environment,
                &description,
            )
            .await
        {
            Ok(id) => {
                deploy.id = Some(id);
                set(api, deploy, "in_progress", &description).await;
            }
            Err(error) => tracing::warn!(
                site = deploy.site,
                repo = deploy.repo,
                %error,
                "no GitHub deployment for this deploy (the token may lack \"Deployments: write\"); the deploy goes on"
            ),
        }
    }
    started
}

/// Marks `inactive` the newest deployment of each preview `plan` removed
/// (its pull request closed or evicted) and the apply did remove: GitHub
/// then stops offering its URL on the pull request.
pub(super) async fn retire(
    api: &Api,
    plan: &jaam_core::Plan,
    routes: &std::collections::BTreeMap<String, (String, String)>,
    report: &jaam_core::apply::Report,
) {
    use jaam_core::providers::aws::ec2::previews_of;
    for change in plan
        .changes
        .iter()
        .filter(|change| change.action.is_change() && change.addr.kind() == "instance")
    {
        let Some((repo, _)) = change
            .addr
            .composite()
            .and_then(|site| routes.get(site.name()))
        else {
            continue;
        };
        let before = previews_of(change.before.as_ref().and_then(|b| b.get("previews")));
        let after = previews_of(change.after.as_ref().and_then(|a| a.get("previews")));
        let now = previews_of(
            report
                .state
                .resources
                .get(&change.addr)
                .and_then(|r| r.attributes.get("previews")),
        );
        for number in before
            .keys()
            .filter(|n| !after.contains_key(n) && !now.contains_key(n))
        {
            let environment = format!("preview/pr-{number}");
            let latest = match api.latest_deployment(repo, &environment).await {
                Ok(Some(id)) => id,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(repo, environment, %error, "a removed preview's deployment was not found");
                    continue;
                }
            };
            let status = DeploymentStatus {
                state: "inactive",
                description: "jaam: preview removed (its pull request closed, or newer ones took its place)",
                environment_url: None,
                log_url: None,
            };
            if let Err(error) = api.deployment_status(repo, latest, &status).await {
                tracing::warn!(repo, environment, %error, "a removed preview's deployment was not marked inactive");
            }
        }
    }
}

/// Moves each deployment to `success` or `failure` per `report`.
pub(super) async fn finish(api: &Api, started: &[Started], report: &jaam_core::apply::Report) {
    for deploy in started.iter().filter(|d| d.id.is_some()) {
        let failure = report.failed.iter().find(|f| f.addr() == &deploy.addr);
        let (state, description) = if served(report, deploy) {
            ("success", "jaam: deployed".to_owned())
        } else if let Some(failure) = failure {
            let why = std::error::Error::source(failure)
                .map_or_else(|| failure.to_string(), ToString::to_string);
            let line = why.lines().next().unwrap_or_default();
            (
                "failure",
                format!("jaam: {}", line.chars().take(120).collect::<String>()),
            )
        } else {
            (
                "failure",
                "jaam: not deployed (the apply stopped first)".to_owned(),
            )
        };
        set(api, deploy, state, &description).await;
    }
}

/// Whether the state the apply saved serves what `deploy` deployed.
fn served(report: &jaam_core::apply::Report, deploy: &Started) -> bool {
    let Some(recorded) = report.state.resources.get(&deploy.addr) else {
        return false;
    };
    match deploy.preview {
        None => {
            recorded.attributes.get("revision").and_then(|r| r.as_str())
                == Some(deploy.revision.as_str())
        }
        Some(number) => {
            jaam_core::providers::aws::ec2::previews_of(recorded.attributes.get("previews"))
                .get(&number)
                .is_some_and(|preview| preview.head == deploy.revision)
        }
    }
}

async fn set(api: &Api, deploy: &Started, state: &str, description: &str) {
    let Some(id) = deploy.id else { return };
    let status = DeploymentStatus {
        state,
        description,
        environment_url: deploy.url.as_deref(),
        log_url: deploy.log_url.as_deref(),
    };
    if let Err(error) = api.deployment_status(&deploy.repo, id, &status).await {
        tracing::warn!(site = deploy.site, state, %error, "a GitHub deployment status was not set");
    }
}
