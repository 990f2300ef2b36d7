//! Embedding jaam: plan and apply a spec directory from Rust, following progress events.
//!
//! Run with (against the local emulator that `./scripts/demo` starts, or real AWS):
//! ```text
//! cargo run -p jaam-core --example embed -- specs /tmp/embed.state.json
//! ```
//!
//! It does what `jaam apply --auto-approve` does, through the library API:
//! load specs, take the stack's lock, plan, print the plan, apply it while
//! printing typed events as they arrive, and cancel cleanly on Ctrl-C (operations
//! in flight finish and the state is saved).

use std::path::PathBuf;

use jaam_core::Engine;
use jaam_core::apply::{self, Event};
use jaam_core::plan::{self, render};
use jaam_core::state::LocalStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let specs = PathBuf::from(args.next().unwrap_or_else(|| "specs".into()));
    let state = PathBuf::from(args.next().unwrap_or_else(|| "embed.state.json".into()));

    let registry = jaam_core::providers::default_registry().await;
    let engine = Engine::new(registry, LocalStore::new(state), "embed");
    let config = engine.load_specs(&specs)?;

    let mut session = engine.lock("embed example").await?;
    let plan = session.plan(&config, &plan::Options::default()).await?;
    print!("{}", render::text(&plan, render::TextOptions::default()));
    if !plan.has_changes() {
        session.release().await?;
        return Ok(());
    }

    let (events, mut received) = mpsc::unbounded_channel::<apply::Sequenced>();
    let printer = tokio::spawn(async move {
        while let Some(sequenced) = received.recv().await {
            match sequenced.event {
                Event::Started { addr, action } => {
                    println!("#{} {addr}: {action} started", sequenced.seq)
                }
                Event::Finished { addr, elapsed, .. } => {
                    println!("#{} {addr}: done in {elapsed:?}", sequenced.seq)
                }
                other => println!("#{} {other:?}", sequenced.seq),
            }
        }
    });
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });

    let report = session
        .apply(&plan, &apply::Options::default(), Some(events), cancel)
        .await?;
    session.release().await?;
    printer.await?;
    println!(
        "applied {}, failed {}, state serial {}",
        report.applied.len(),
        report.failed.len(),
        report.state.serial
    );
    Ok(())
}
