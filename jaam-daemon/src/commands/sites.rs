//! `jaam logs`, `jaam rollback`, `jaam deployments` and `jaam previews`: a
//! deployed site's logs, its previous release, its deploy history and its
//! pull request previews. They read the site's resources from state; none
//! changes it.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::anyhow;
use jaam_core::providers::aws::sites::{self, LogLine, Logs};
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, LogsArgs, RollbackArgs};

async fn state(global: &Global) -> anyhow::Result<jaam_core::state::State> {
    super::store(global).await?.load().await?.ok_or_else(|| {
        anyhow!(
            "no state at `{}`: apply the specs first",
            global.state.display()
        )
    })
}

fn print(line: &LogLine) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} {:>5}  {}",
        line.timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        line.stream,
        line.message.trim_end()
    );
    let _ = out.flush();
}

pub(crate) async fn logs(global: &Global, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let state = state(global).await?;
    let group = sites::log_group_of(&state, &args.addr).map_err(|e| anyhow!(e))?;
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(args.since).map_err(|_| anyhow!("--since is too long"))?;
    let logs = Logs::new(&jaam_core::providers::aws::load_config().await);
    if !args.follow {
        for line in logs.since(&group, since).await? {
            print(&line);
        }
        return super::success();
    }
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    logs.follow(&group, since, &cancel, |line| print(&line))
        .await?;
    super::success()
}

pub(crate) async fn rollback(global: &Global, args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let state = state(global).await?;
    let config = jaam_core::providers::aws::load_config().await;
    eprintln!("{}: rolling back to the previous release...", args.site);
    let (outcome, deployment) = sites::rollback_recorded(&config, &state, &args.site).await;
    // The history records the rollback whatever happened, under the lock.
    let deployment = deployment.ok_or_else(|| anyhow!("`{}` is not a site", args.site))?;
    let store = super::store(global).await?;
    let lock = store
        .lock(
            jaam_core::state::lock::LockInfo::current("jaam rollback"),
            global.lock_timeout,
        )
        .await?;
    let recorded = store.record_deployments(&[deployment]).await;
    lock.release().await?;
    if let Err(error) = recorded {
        eprintln!("warning: the deploy history was not written: {error}");
    }
    let output = outcome?;
    if !output.trim().is_empty() {
        println!("{}", output.trim_end());
    }
    eprintln!("{}: rollback complete", args.site);
    super::success()
}

/// `jaam deployments site.NAME`: the site's deploy history, newest first.
pub(crate) async fn deployments(
    global: &Global,
    args: &crate::cli::DeploymentsArgs,
) -> anyhow::Result<ExitCode> {
    let site = if args.site.kind() == "site" {
        args.site.name().to_owned()
    } else {
        args.site.to_string()
    };
    let all = super::store(global).await?.deployments().await?;
    let rows: Vec<_> = all.iter().rev().filter(|d| d.site == site).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return super::success();
    }
    if rows.is_empty() {
        println!("No deployments of `{}` recorded.", args.site);
        return super::success();
    }
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    println!(
        "{:<20}  {:<12}  {:<12}  {:<22}  {:>8}  RESULT",
        "STARTED", "REVISION", "PREVIOUS", "TRIGGER", "TOOK"
    );
    for row in rows {
        println!(
            "{:<20}  {:<12}  {:<12}  {:<22}  {:>7.1}s  {}",
            row.started.format("%Y-%m-%d %H:%M:%S"),
            short(&row.revision),
            row.previous
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "-".into()),
            row.trigger,
            row.duration_ms as f64 / 1000.0,
            row.result
        );
        if let Some(error) = &row.error {
            for line in error.lines() {
                println!("    {line}");
            }
        }
    }
    super::success()
}

/// One row of `jaam previews`.
#[derive(serde::Serialize)]
struct PreviewRow {
    number: u64,
    head: String,
    url: String,
    /// `serving`; with the open pull requests listed: `pending` (open, not
    /// served yet), `outdated` (serving an older head), `closing` (no longer
    /// open or beyond `max`: the next apply removes it).
    state: &'static str,
}

/// `jaam previews site.NAME`: the previews state records, compared with the
/// open pull requests GitHub lists now (when the specs load and GitHub
/// answers; otherwise a warning and state alone).
pub(crate) async fn previews(
    global: &Global,
    args: &crate::cli::DeploymentsArgs,
) -> anyhow::Result<ExitCode> {
    use jaam_core::providers::aws::ec2::{previews_of, wanted_previews};
    use jaam_core::spec::site::PreviewSource;
    if args.site.kind() != "site" {
        return Err(anyhow!("`{}` is not a site (write `site.NAME`)", args.site));
    }
    let instance: jaam_core::ResourceAddr = format!("{}.instance", args.site).parse()?;
    let state = state(global).await?;
    let recorded = previews_of(
        state
            .resources
            .get(&instance)
            .and_then(|r| r.attributes.get("previews")),
    );
    let config = super::load_specs(global)
        .map_err(|error| {
            eprintln!(
                "warning: the specs did not load, so the previews are not compared with GitHub's open pull requests: {error:#}"
            );
        })
        .ok();
    let source = config.and_then(|config| {
        let value = config
            .resources()
            .get(&instance)?
            .args
            .get("previews")?
            .evaluate(&|_, _| None, &|_| None);
        PreviewSource::from_value(&value)
    });
    let wanted = match &source {
        Some(source) => {
            let api = jaam_core::providers::github::Api::from_env();
            match api.open_pulls(&source.repo, &source.base).await {
                Ok(open) => Some(previews_of(Some(&wanted_previews(source, &open)))),
                Err(error) => {
                    eprintln!("warning: the open pull requests could not be listed: {error}");
                    None
                }
            }
        }
        None => None,
    };
    let mut rows: Vec<PreviewRow> = recorded
        .iter()
        .map(|(number, preview)| PreviewRow {
            number: *number,
            head: preview.head.clone(),
            url: preview.url.clone(),
            state: match wanted.as_ref().map(|w| w.get(number)) {
                None => "serving",
                Some(None) => "closing",
                Some(Some(w)) if w.head != preview.head => "outdated",
                Some(Some(_)) => "serving",
            },
        })
        .collect();
    for (number, preview) in wanted.iter().flatten() {
        if !recorded.contains_key(number) {
            rows.push(PreviewRow {
                number: *number,
                head: preview.head.clone(),
                url: preview.url.clone(),
                state: "pending",
            });
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.number));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return super::success();
    }
    if rows.is_empty() {
        println!("No previews of `{}`.", args.site);
        return super::success();
    }
    println!("{:<6}  {:<12}  {:<9}  URL", "PR", "HEAD", "STATE");
    for row in rows {
        println!(
            "{:<6}  {:<12}  {:<9}  {}",
            format!("#{}", row.number),
            row.head.chars().take(12).collect::<String>(),
            row.state,
            row.url
        );
    }
    super::success()
}
