//! `jaam-bench-fleet` (run by `scripts/bench-daemon --fleet`): one daemon
//! keeping a directory of stacks.
//!
//! - **Builds side by side**: `JAAM_BENCH_STACKS` stacks (200) of one site
//!   each, kept by `jaam daemon --stacks DIR --workers W`
//!   (`JAAM_BENCH_WORKERS`, 4), every build taking 2 s (the SSM stand-in of
//!   `jaam_tests::builds`, in front of moto). One signed push to every stack,
//!   all within 10 s; timed from the first push until every stack's state
//!   has its pushed revision, against the target 1.3 × (stacks × 2 s ÷
//!   workers) plus the 10 s the pushes take to arrive.
//! - **Idle RSS with many stacks**: `JAAM_BENCH_IDLE_STACKS` (1,000) stacks
//!   of one site each, loaded by a second daemon. Their specs say `drift:
//!   report`, so each stack's start-up resync plans everything and applies
//!   nothing (1,000 applied sites would take the emulator most of an hour);
//!   the daemon's RSS is read once every stack has reconciled and the daemon
//!   is idle.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jaam_tests::daemon::{Daemon, deliveries};
use jaam_tests::github::GithubFake;
use jaam_tests::{hosted_zone, unique};

const SECRET: &str = "bench-fleet-webhook-secret";
const BUILD: Duration = Duration::from_secs(2);
/// The pushes arrive spread over this long.
const PUSH_WINDOW: Duration = Duration::from_secs(10);

fn sha() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].repeat(2)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes stack `name` (one site deploying `repo`) under `dir`.
fn write_stack(dir: &Path, name: &str, repo: &str, zone: &str, drift: &str) {
    let stack = dir.join(name);
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::write(
        stack.join("site.yaml"),
        format!(
            "stack:\n  name: {name}\n  drift: {drift}\n\nsite.{name}:\n  repo: {repo}\n  \
             domain: {name}.{zone}\n  zone: {zone}\n  https: false\n  \
             webhook_url: https://jaam.{zone}/hooks/github\n  webhook_secret: ${{env.HOOK_SECRET}}\n"
        ),
    )
    .unwrap();
}

fn start_daemon(
    root: &Path,
    github: &GithubFake,
    aws: &str,
    workers: usize,
    log: &str,
    stacks: &str,
) -> Daemon {
    let mut command = Command::new(jaam_tests::jaam_binary());
    command
        .current_dir(root)
        .arg("daemon")
        .arg("--stacks")
        .arg(root.join(stacks))
        .arg("--state")
        .arg(root.join(format!("state-{stacks}/{{stack}}.json")))
        .args([
            "--workers",
            &workers.to_string(),
            "--resync",
            "1h",
            "--no-color",
        ])
        .env("AWS_ENDPOINT_URL", aws)
        .env("GITHUB_API_URL", &github.url)
        .env("GITHUB_TOKEN", "ghp_bench")
        .env("HOOK_SECRET", SECRET);
    Daemon::start(command, root.join(log))
}

/// Waits until every stack's status says `check`; how long it took.
fn until_all(
    daemon: &Daemon,
    what: &str,
    stacks: usize,
    deadline: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let all = daemon.stacks();
        if all.len() == stacks && all.iter().all(&check) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not done after {deadline:?}: {} of {stacks}\n{}",
            all.iter().filter(|s| check(s)).count(),
            daemon
                .logs()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes `count` stacks `{prefix}0…` under `root/dir`, one site each with
/// its own repository (its head set at the fake); their names.
fn add_stacks(
    root: &Path,
    github: &GithubFake,
    zone: &str,
    (dir, prefix): (&str, &str),
    count: usize,
    drift: &str,
) -> Vec<String> {
    (0..count)
        .map(|n| {
            let name = format!("{prefix}{n}");
            let repo = format!("acme/{zone}-{name}");
            github.set_head(&repo, "main", &sha());
            write_stack(&root.join(dir), &name, &repo, zone, drift);
            name
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let stacks = env_or("JAAM_BENCH_STACKS", 200);
    let workers = env_or("JAAM_BENCH_WORKERS", 4);
    let idle_stacks = env_or("JAAM_BENCH_IDLE_STACKS", 1000);
    let build = if std::env::var_os("JAAM_BINARY").is_some() {
        "optimized"
    } else {
        "debug"
    };
    let moto = jaam_tests::moto_endpoint();
    let (builds, proxy) = jaam_tests::builds::start(&moto, BUILD).await;
    let github = GithubFake::start().await;
    let root = tempfile::tempdir().unwrap();
    let zone = format!("{}.test", unique("benchfleet"));
    hosted_zone(&zone).await;
    let names = add_stacks(root.path(), &github, &zone, ("fleet", "s"), stacks, "heal");

    // The first apply of every stack, by the daemon itself.
    let daemon = start_daemon(
        root.path(),
        &github,
        &proxy.url,
        workers,
        "fleet.log",
        "fleet",
    );
    let applied = until_all(
        &daemon,
        "the first apply",
        stacks,
        Duration::from_secs(1800),
        |s| s["result"] == "applied" || s["result"] == "no_changes",
    );

    // One signed push to every stack, spread over 10 s.
    let pushed: Vec<String> = names.iter().map(|_| sha()).collect();
    let signed: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .chunks(names.len().div_ceil(4).max(1))
            .zip(pushed.chunks(names.len().div_ceil(4).max(1)))
            .map(|(chunk, shas)| {
                let zone = &zone;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .zip(shas)
                        .map(|(name, sha)| {
                            let repo = format!("acme/{zone}-{name}");
                            deliveries(SECRET, &repo, "main", std::slice::from_ref(sha), None)
                                .swap_remove(1)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    builds.slow.store(true, Ordering::SeqCst);
    let gap = PUSH_WINDOW / u32::try_from(stacks).unwrap_or(u32::MAX).max(1);
    let started = Instant::now();
    for (n, (name, delivery)) in names.iter().zip(&signed).enumerate() {
        let repo = format!("acme/{zone}-{name}");
        github.set_head(&repo, "main", &pushed[n]);
        let (status, body) = daemon.deliver(delivery);
        assert_eq!(status, 202, "{body}");
        let due = started + gap * u32::try_from(n + 1).unwrap_or(u32::MAX);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let arrived = started.elapsed();
    let want: std::collections::HashMap<&str, &str> = names
        .iter()
        .map(String::as_str)
        .zip(pushed.iter().map(String::as_str))
        .collect();
    until_all(
        &daemon,
        "the pushed revisions",
        stacks,
        Duration::from_secs(1800),
        |s| {
            let name = s["stack"].as_str().unwrap_or_default();
            s["revisions"][name].as_str() == want.get(name).copied()
        },
    );
    let served = started.elapsed();
    let ideal = BUILD.as_secs_f64() * stacks as f64 / workers as f64;
    let target = 1.3f64.mul_add(ideal, PUSH_WINDOW.as_secs_f64());
    let overlaps = builds.overlaps.lock().unwrap().len();
    let log = daemon.logs();
    let deploys = jaam_tests::daemon::stage_medians(&log, "deploy_only=true", usize::MAX);
    assert_eq!(daemon.terminate(), Some(0));

    println!("jaam daemon fleet benchmark ({build} build; moto, the GitHub fake, an SSM stand-in)");
    println!(
        "first apply of {stacks} stacks of one site each, {workers} workers: {:.1} s",
        applied.as_secs_f64()
    );
    println!(
        "{stacks} pushes in {:.1} s, 2 s builds, {workers} workers: all served {:.1} s after the first push \
         (target ≤ 1.3 × {ideal:.0} s + {:.0} s = {target:.0} s); {overlaps} deploys of one stack at once",
        arrived.as_secs_f64(),
        served.as_secs_f64(),
        PUSH_WINDOW.as_secs_f64()
    );
    println!("  a push's reconcile, by stage (medians): {deploys}");

    // Idle RSS with many stacks loaded.
    add_stacks(
        root.path(),
        &github,
        &zone,
        ("idle", "i"),
        idle_stacks,
        "report",
    );
    let idle = start_daemon(root.path(), &github, &moto, workers, "idle.log", "idle");
    let loaded = until_all(
        &idle,
        "every stack's first resync",
        idle_stacks,
        Duration::from_secs(3600),
        |s| s["result"] == "drift_reported" || s["result"] == "no_changes",
    );
    // Idle: the resyncs are done and nothing else is due for an hour.
    let settled = Instant::now() + Duration::from_secs(5);
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    let rss = idle.rss_mb();
    let stages = jaam_tests::daemon::stage_medians(&idle.logs(), "deploy_only=false", usize::MAX);
    println!(
        "{idle_stacks} stacks loaded (each planned once, in {:.1} s), idle RSS: {rss:.1} MB (target < 150 MB, optimized build)",
        loaded.as_secs_f64()
    );
    println!("  a stack's first reconcile, by stage (medians): {stages}");
    assert_eq!(idle.terminate(), Some(0));
}
