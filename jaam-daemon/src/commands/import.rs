//! `jaam import ADDR ID`: read an existing resource and record it under `ADDR`.

use std::process::ExitCode;

use crate::cli::{Global, ImportArgs};

pub(crate) async fn run(global: &Global, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_specs(global).ok();
    let registry = super::registry().await?;
    let stack = super::stack_name(global, config.as_ref());
    let engine = super::engine(global, registry, stack).await?;
    let mut session = engine.lock("jaam import").await?;
    let result = session.import(&args.addr, &args.id).await;
    session.release().await?;
    let resource = result?;
    eprintln!("{}: import complete [id={}]", args.addr, resource.id);
    if config
        .as_ref()
        .is_some_and(|config| !config.resources().contains_key(&args.addr))
    {
        eprintln!(
            "\nhint: `{}` is not in the specs yet; the next plan will delete it unless you declare it",
            args.addr
        );
    }
    super::success()
}
