//! Rendering core events for people (stderr lines) or programs (JSON lines on stdout).
//!
//! Apply progress reads like Terraform's: `log_group.a: Creating...`, then
//! `Creation complete after 1s [id=…]`. On a terminal the resources in flight
//! stay at the bottom, one live line each with a spinner and the time spent
//! (`indicatif`), while finished lines scroll above them; piped output gets
//! the plain lines only. Stdout carries data (plans, JSON); progress goes to
//! stderr.

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
    /// Stderr is a terminal (enables the live lines of resources in flight).
    pub(crate) terminal: bool,
}

/// Where progress lines go: plain stderr, or above a terminal's live lines.
enum Out {
    Plain,
    Live(indicatif::MultiProgress),
}

impl Out {
    fn line(&self, text: &str) {
        match self {
            Self::Plain => eprintln!("{text}"),
            Self::Live(multi) => {
                let _ = multi.println(text);
            }
        }
    }
}

/// One resource in flight: when it started and, on a terminal, its live line.
struct InFlight {
    action: String,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

fn live_line(
    multi: &indicatif::MultiProgress,
    addr: &ResourceAddr,
    action: &str,
) -> indicatif::ProgressBar {
    let bar = multi.add(indicatif::ProgressBar::new_spinner());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed} elapsed]")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
    );
    bar.set_message(format!("{addr}: {}...", verbs(action).0));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Shows events until the sender is dropped.
pub(crate) async fn follow(mut events: mpsc::UnboundedReceiver<Sequenced>, mode: Mode) {
    let out = if mode.terminal && !mode.json {
        Out::Live(indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr(),
        ))
    } else {
        Out::Plain
    };
    let mut running: BTreeMap<ResourceAddr, InFlight> = BTreeMap::new();
    while let Some(event) = events.recv().await {
        if mode.json {
            let mut stdout = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut stdout, &event);
            let _ = writeln!(stdout);
            continue;
        }
        let mut done = |addr: &ResourceAddr| {
            if let Some(InFlight { bar: Some(bar), .. }) = running.remove(addr) {
                bar.finish_and_clear();
            }
        };
        match event.event {
            Event::Started { addr, action } => {
                out.line(&format!("{addr}: {}...", verbs(&action).0));
                let bar = match &out {
                    Out::Live(multi) => Some(live_line(multi, &addr, &action)),
                    Out::Plain => None,
                };
                running.insert(
                    addr,
                    InFlight {
                        action,
                        started: Instant::now(),
                        bar,
                    },
                );
            }
            Event::Finished {
                addr,
                action,
                id,
                elapsed,
            } => {
                done(&addr);
                let id = id.map(|id| format!(" [id={id}]")).unwrap_or_default();
                out.line(&format!(
                    "{addr}: {} complete after {}{id}",
                    verbs(&action).1,
                    seconds(elapsed)
                ));
            }
            Event::Failed { addr, message } => {
                done(&addr);
                out.line(&format!("{addr}: failed: {message}"));
            }
            Event::Skipped { addr, because } => {
                out.line(&format!("{addr}: skipped because `{because}` failed"));
            }
            Event::NotStarted { addr } => {
                out.line(&format!("{addr}: not started (apply interrupted)"));
            }
            Event::StateSaved { serial } => tracing::info!(serial, "state saved"),
        }
    }
    // Whatever is still drawn (an interrupted apply) goes away cleanly.
    for (addr, flight) in running {
        if let Some(bar) = flight.bar {
            bar.finish_and_clear();
        }
        tracing::debug!(%addr, action = flight.action, elapsed = ?flight.started.elapsed(), "still in flight at the end");
    }
    if let Out::Live(multi) = out {
        let _ = multi.clear();
    }
}
