//! `jaam logs` and `jaam rollback`: a deployed site's logs and its previous
//! release. Both read the site's resources from state; neither changes it.

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
    let output = sites::rollback(&config, &state, &args.site).await?;
    if !output.trim().is_empty() {
        println!("{}", output.trim_end());
    }
    eprintln!("{}: rollback complete", args.site);
    super::success()
}
