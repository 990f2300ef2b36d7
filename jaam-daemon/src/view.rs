//! Rendering core events for people (stderr lines) or programs (JSON lines on stdout).
//!
//! Apply progress reads like Terraform's: `log_group.a: Creating...`, then
//! `Creation complete after 1s [id=…]`. On a terminal, operations still running
//! get a `Still creating... [10s elapsed]` line every 10 seconds; piped output
//! gets the plain lines only. Stdout carries data (plans, JSON); progress goes
//! to stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use jaam_core::ResourceAddr;
use jaam_core::apply::{Event, Sequenced};
use tokio::sync::mpsc;

fn verbs(action: &str) -> (&'static str, &'static str, &'static str) {
    match action {
        "create" => ("Creating", "Creation", "creating"),
        "update" => ("Modifying", "Modifications", "modifying"),
        "replace" => ("Replacing", "Replacement", "replacing"),
        "delete" => ("Destroying", "Destruction", "destroying"),
        _ => ("Working on", "Work", "working on"),
    }
}

fn seconds(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}s", elapsed.as_secs())
    }
}

/// How to show progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mode {
    /// JSON lines on stdout instead of text on stderr.
    pub(crate) json: bool,
    /// Stderr is a terminal (enables the periodic "still …" lines).
    pub(crate) terminal: bool,
}

/// Shows events until the sender is dropped.
pub(crate) async fn follow(mut events: mpsc::UnboundedReceiver<Sequenced>, mode: Mode) {
    let mut running: BTreeMap<ResourceAddr, (String, Instant)> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    ticker.tick().await;
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = ticker.tick(), if mode.terminal && !mode.json => {
                for (addr, (action, started)) in &running {
                    eprintln!("{addr}: Still {}... [{} elapsed]", verbs(action).2, seconds(started.elapsed()));
                }
                continue;
            }
        };
        if mode.json {
            let mut stdout = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut stdout, &event);
            let _ = writeln!(stdout);
            continue;
        }
        match event.event {
            Event::Started { addr, action } => {
                eprintln!("{addr}: {}...", verbs(&action).0);
                running.insert(addr, (action, Instant::now()));
            }
            Event::Finished {
                addr,
                action,
                id,
                elapsed,
            } => {
                running.remove(&addr);
                let id = id.map(|id| format!(" [id={id}]")).unwrap_or_default();
                eprintln!(
                    "{addr}: {} complete after {}{id}",
                    verbs(&action).1,
                    seconds(elapsed)
                );
            }
            Event::Failed { addr, message } => {
                running.remove(&addr);
                eprintln!("{addr}: failed: {message}");
            }
            Event::Skipped { addr, because } => {
                eprintln!("{addr}: skipped because `{because}` failed")
            }
            Event::NotStarted { addr } => eprintln!("{addr}: not started (apply interrupted)"),
            Event::StateSaved { serial } => tracing::info!(serial, "state saved"),
        }
    }
}
