//! `jaam graph`: the dependency graph of the specs in Graphviz DOT.

use std::process::ExitCode;

use crate::cli::Global;

pub(crate) async fn run(global: &Global) -> anyhow::Result<ExitCode> {
    let config = super::load_specs(global)?;
    print!("{}", config.graph().to_dot());
    super::success()
}
