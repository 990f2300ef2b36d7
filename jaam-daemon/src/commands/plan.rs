//! `jaam plan`: refresh, diff, print; optionally save the plan for `jaam apply FILE`.

use std::process::ExitCode;

use jaam_core::plan;

use crate::cli::{Global, PlanArgs};

pub(crate) async fn run(global: &Global, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_specs(global)?;
    let registry = super::registry().await?;
    let stack = super::stack_name(global, Some(&config));
    let engine = super::engine(global, registry, stack).await?;
    let options = plan::Options {
        refresh: args.selection.refresh,
        targets: args.selection.targets.clone(),
        destroy: args.destroy,
        replace: args.selection.replace.clone(),
    };
    let mut plan = engine.plan(&config, &options).await?;
    super::add_framework_notes(&config, &mut plan).await;
    super::print_plan(global, &plan, args.json)?;
    if let Some(path) = &args.out {
        super::write_plan(path, &plan)?;
        if !args.json {
            println!(
                "\nSaved the plan to `{}`. Apply exactly this plan with:\n    jaam apply {}",
                path.display(),
                path.display()
            );
        }
    }
    if args.detailed_exitcode && plan.has_changes() {
        return Ok(ExitCode::from(super::EXIT_CHANGES));
    }
    super::success()
}
