//! `jaam-bench-resync` (run by `scripts/bench-daemon --resync`): what a
//! daemon's resync of a fleet costs GitHub when no branch head moved.
//!
//! One stack of `JAAM_BENCH_SITES` sites (default 1,000; each its own
//! repository, webhook and instance, `https: false`) is applied against moto
//! and the GitHub fake, then kept by `jaam daemon --resync 45s`. After its
//! first reconcile (a resync at start, which reads everything once), the
//! next resync's GitHub requests are counted at the fake: the branch heads
//! and hook listings are conditional requests, so while nothing changed they
//! are `304 Not Modified`, which GitHub does not count against a token's
//! 5,000 requests an hour. Printed: the requests, the 304s, the rest (what
//! counts) per resync and per hour at the default 10-minute period, and how
//! long the resync took.

use std::time::{Duration, Instant};

use jaam_tests::daemon::Daemon;
use jaam_tests::github::GithubFake;
use jaam_tests::{Workspace, hosted_zone, unique};

const SECRET: &str = "bench-resync-webhook-secret";

fn sha(n: usize) -> String {
    format!("{n:040x}")
}

#[tokio::main]
async fn main() {
    let sites: usize = std::env::var("JAAM_BENCH_SITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("benchresync"));
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let mut specs = String::new();
    for n in 0..sites {
        let repo = format!("acme/{}-s{n}", ws.stack);
        github
            .repos
            .lock()
            .unwrap()
            .branches
            .insert((repo.clone(), "main".into()), sha(n + 1));
        specs.push_str(&format!(
            "site.s{n}:\n  repo: {repo}\n  domain: s{n}.{domain}\n  zone: {domain}\n  https: false\n  \
             webhook_url: https://jaam.{domain}/hooks/github\n  webhook_secret: ${{env.HOOK_SECRET}}\n"
        ));
    }
    ws.write_specs(&specs);
    let env = |command: &mut std::process::Command| {
        command
            .env("GITHUB_API_URL", &github.url)
            .env("GITHUB_TOKEN", "ghp_bench")
            .env("HOOK_SECRET", SECRET);
    };

    let started = Instant::now();
    let mut apply = ws.command(&["apply", "--auto-approve", "--parallelism", "20"]);
    env(&mut apply);
    let out = apply.output().expect("jaam apply");
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let applied = started.elapsed();

    let mut command = ws.command(&["daemon", "--resync", "45s"]);
    env(&mut command);
    let daemon = Daemon::start(command, ws.dir.path().join("daemon.log"));
    let reconciles = |d: &Daemon| d.status()["reconciles"].as_u64().unwrap_or(0);
    daemon.wait_until("the first resync", Duration::from_secs(600), |d| {
        reconciles(d) >= 1
    });
    let not_modified = {
        let mut repos = github.repos.lock().unwrap();
        repos.requests.clear();
        repos.not_modified
    };
    let waited = Instant::now();
    daemon.wait_until("the second resync", Duration::from_secs(600), |d| {
        reconciles(d) >= 2
    });
    let (total, free) = {
        let repos = github.repos.lock().unwrap();
        (repos.requests.len(), repos.not_modified - not_modified)
    };
    // The resync's own duration, from the daemon's stage log.
    let log = std::fs::read_to_string(ws.dir.path().join("daemon.log")).unwrap_or_default();
    let took: f64 = log
        .lines()
        .filter(|l| l.contains("reconcile stages"))
        .nth(1)
        .and_then(|line| line.split("stages=").nth(1))
        .map(|stages| {
            stages
                .split_whitespace()
                .filter_map(|pair| pair.split_once('=')?.1.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(f64::NAN);
    let counted = total - free;
    let rss_mb = daemon.rss_mb();
    println!("jaam daemon resync benchmark ({sites} sites, one stack, moto and the GitHub fake)");
    println!("first apply of the fleet: {:.1} s", applied.as_secs_f64());
    println!(
        "a resync with no branch head moved: {total} GitHub requests, {free} of them 304 Not Modified; \
         {counted} counted against the rate limit = {} an hour at the 10-minute period  (target ≤ 1,000)",
        counted * 6
    );
    println!(
        "its duration: {:.2} s (stages summed, from the daemon's log; {:.1} s between the two resyncs' ends)",
        took / 1000.0,
        waited.elapsed().as_secs_f64()
    );
    println!(
        "the daemon's RSS after it ({} build): {rss_mb:.1} MB",
        if std::env::var_os("JAAM_BINARY").is_some() {
            "optimized"
        } else {
            "debug"
        }
    );
    assert_eq!(daemon.terminate(), Some(0));
}
