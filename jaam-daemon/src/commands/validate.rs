//! `jaam validate`: load the specs and report every mistake, without touching the cloud.

use std::process::ExitCode;

use crate::cli::Global;

pub(crate) async fn run(global: &Global) -> anyhow::Result<ExitCode> {
    let config = super::load_specs(global)?;
    let count = config.resources().len();
    println!(
        "Success! {count} resource{} in `{}` are valid.",
        if count == 1 { "" } else { "s" },
        global.specs.display()
    );
    super::success()
}
