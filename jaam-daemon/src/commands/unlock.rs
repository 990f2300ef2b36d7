//! `jaam force-unlock LEASE_ID`: break an S3 state lease whose holder cannot
//! release it, saying whose lease it was. Local state needs no such command: its
//! OS lock is released when the holder exits.

use std::process::ExitCode;

use anyhow::bail;

use crate::cli::{ForceUnlockArgs, Global};

pub(crate) async fn run(global: &Global, args: &ForceUnlockArgs) -> anyhow::Result<ExitCode> {
    let text = global.state.to_string_lossy();
    let Some((bucket, key)) = jaam_core::state::s3::S3Store::parse_url(&text) else {
        bail!(
            "`{text}` is a local state file: its lock is released when the holding process exits\n\nhint: `jaam force-unlock` is for `--state s3://bucket/key`"
        );
    };
    let config = jaam_core::providers::aws::load_config().await;
    let store = jaam_core::state::s3::S3Store::new(&config, bucket, key, global.lease_ttl);
    let holder = store.force_unlock(args.lease_id).await?;
    eprintln!(
        "Broke the lease of {holder}.\nIf that process is still running, it can no longer write state: its next write is refused."
    );
    Ok(ExitCode::SUCCESS)
}
