//! `jaam apply` and `jaam destroy`: plan under the lock, confirm, apply, report.
//!
//! A saved plan (`jaam apply FILE`) was reviewed when it was made, so it applies
//! without a prompt; it is refused when the state changed since. Otherwise the
//! plan is shown and applied only after the user types `yes` on a terminal, or
//! with `--auto-approve`; without a terminal and without `--auto-approve` the
//! command refuses. Ctrl-C during apply stops launching operations, lets those in
//! flight finish, and saves state.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use jaam_core::apply::{self, Report};
use jaam_core::plan::{self, render};
use jaam_core::spec::Config;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, Selection};
use crate::view;

/// What to apply.
pub(crate) struct Request<'a> {
    pub(crate) plan_file: Option<&'a std::path::Path>,
    pub(crate) selection: &'a Selection,
    pub(crate) run: crate::cli::Run,
    pub(crate) destroy: bool,
}

pub(crate) fn confirm(destroy: bool) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to {} without confirmation: stdin is not a terminal\n\nhint: review the plan, then run again with `--auto-approve`, or save it with `jaam plan --out FILE` and run `jaam apply FILE`",
            if destroy { "destroy" } else { "apply" }
        );
    }
    eprint!(
        "\nDo you want to perform these actions?\n  jaam will perform the actions described above.\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

pub(crate) async fn run(global: &Global, request: Request<'_>) -> anyhow::Result<ExitCode> {
    let command = if request.destroy {
        "jaam destroy"
    } else {
        "jaam apply"
    };
    let (plan, config) = match request.plan_file {
        Some(path) => (Some(super::read_plan(path)?), None),
        None if request.destroy && !global.specs.exists() => (None, Some(Config::default())),
        None => (None, Some(super::load_specs(global)?)),
    };
    let registry = super::registry().await?;
    let stack = match &plan {
        Some(plan) => global.stack.clone().unwrap_or_else(|| plan.stack.clone()),
        None => super::stack_name(global, config.as_ref()),
    };
    let engine = super::engine(global, registry, stack).await?;
    let mut session = engine.lock(command).await?;
    let result = apply_locked(global, &request, &mut session, plan, config).await;
    session.release().await?;
    result
}

async fn apply_locked(
    global: &Global,
    request: &Request<'_>,
    session: &mut jaam_core::Session<'_>,
    saved: Option<jaam_core::Plan>,
    config: Option<Config>,
) -> anyhow::Result<ExitCode> {
    let colour = super::colour(global);
    let plan = match saved {
        Some(plan) => plan,
        None => {
            let config = config.unwrap_or_default();
            let options = plan::Options {
                refresh: request.selection.refresh,
                targets: request.selection.targets.clone(),
                destroy: request.destroy,
                replace: request.selection.replace.clone(),
            };
            let mut plan = session.plan(&config, &options).await?;
            super::add_framework_notes(&config, &mut plan).await;
            if !request.run.json {
                print!(
                    "{}",
                    render::text(
                        &plan,
                        render::TextOptions {
                            colour,
                            full: global.full,
                        }
                    )
                );
            }
            let needs_state_write = !plan.drift.is_empty() || !plan.resolved_intents.is_empty();
            if !plan.has_changes() && !needs_state_write {
                return super::success();
            }
            if plan.has_changes() && !request.run.auto_approve && !confirm(request.destroy)? {
                eprintln!("\nApply cancelled.");
                return Ok(ExitCode::FAILURE);
            }
            plan
        }
    };

    let (sender, receiver) = mpsc::unbounded_channel();
    let mode = view::Mode {
        json: request.run.json,
        terminal: std::io::stderr().is_terminal(),
    };
    let viewer = tokio::spawn(view::follow(receiver, mode));
    let cancel = CancellationToken::new();
    let interrupt = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\nInterrupt received: finishing operations in flight, then saving state..."
                );
                cancel.cancel();
            }
        })
    };
    let options = apply::Options {
        parallelism: usize::from(request.run.parallelism),
    };
    let (started, took) = (chrono::Utc::now(), std::time::Instant::now());
    let report = session.apply(&plan, &options, Some(sender), cancel).await;
    interrupt.abort();
    let _ = viewer.await;
    let report = report?;
    let deployments =
        jaam_core::history::from_apply(&plan, &report, "cli", started, took.elapsed());
    if let Err(error) = session.record_deployments(&deployments).await {
        eprintln!("warning: the deploy history was not written: {error}");
    }
    summarize(&plan, &report, request.run.json)
}

fn summarize(plan: &jaam_core::Plan, report: &Report, json: bool) -> anyhow::Result<ExitCode> {
    let mut counts = plan::Summary::default();
    for addr in &report.applied {
        match plan.change(addr).map(|change| &change.action) {
            Some(plan::Action::Create) => counts.add += 1,
            Some(plan::Action::Update { .. }) => counts.change += 1,
            Some(plan::Action::Replace { .. }) => {
                counts.add += 1;
                counts.destroy += 1;
            }
            Some(plan::Action::Delete) => counts.destroy += 1,
            _ => {}
        }
    }
    if report.succeeded() {
        if !json {
            let verb = if plan.destroy { "Destroy" } else { "Apply" };
            eprintln!(
                "\n{verb} complete! Resources: {} added, {} changed, {} destroyed.",
                counts.add, counts.change, counts.destroy
            );
        }
        return super::success();
    }
    for error in &report.failed {
        eprintln!("\nerror: {}", apply::error_chain(error));
    }
    if !report.not_started.is_empty() {
        eprintln!(
            "\nerror: apply interrupted; {} resource(s) not started; state saved",
            report.not_started.len()
        );
    }
    eprintln!(
        "\n{} succeeded, {} failed, {} skipped. State records exactly what happened; run `jaam apply` again to continue.",
        report.applied.len(),
        report.failed.len(),
        report.skipped.len()
    );
    Ok(ExitCode::FAILURE)
}
