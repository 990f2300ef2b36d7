//! `jaam gc`: find (and with `--delete`, remove) resources tagged as this stack's
//! that state does not know — what an interrupted apply or a lost state file
//! leaves behind. Kinds that cannot carry tags (records) are never reported.

use std::process::ExitCode;

use crate::cli::{GcArgs, Global};

pub(crate) async fn run(global: &Global, args: &GcArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_specs(global).ok();
    let registry = super::registry().await?;
    let stack = super::stack_name(global, config.as_ref());
    let engine = super::engine(global, registry, stack).await?;
    // Under the lock: an apply running now would otherwise look like orphans.
    let session = engine.lock("jaam gc").await?;
    let result = async {
        let orphans = engine.orphans().await?;
        if orphans.is_empty() {
            println!(
                "No orphans: every resource tagged for stack `{}` is in state.",
                engine.stack()
            );
            return Ok(ExitCode::SUCCESS);
        }
        for (kind, orphan) in &orphans {
            let addr = orphan
                .owner
                .as_ref()
                .map_or("?", |owner| owner.addr.as_str());
            println!("{kind} {} (tagged `{addr}`)", orphan.id);
        }
        if !args.delete {
            eprintln!(
                "\n{} orphan(s). Run `jaam gc --delete` to remove them.",
                orphans.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if !args.auto_approve && !super::apply::confirm(true)? {
            eprintln!("\nNothing deleted.");
            return Ok(ExitCode::FAILURE);
        }
        for (kind, orphan) in &orphans {
            engine.delete_orphan(kind, orphan).await?;
            eprintln!("{kind} {}: deleted", orphan.id);
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    session.release().await?;
    result
}
