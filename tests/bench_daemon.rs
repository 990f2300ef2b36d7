//! `jaam-bench-daemon`: the daemon's figures, printed (run by
//! `./scripts/bench-daemon`, which starts moto).
//!
//! - **Intake**: a signed push's POST answered 202, measured at the client
//!   (connect, send, the daemon's signature check, parse, enqueue, answer): an
//!   upper bound of intake-to-enqueue.
//! - **Push to SSM command**: from sending a signed push to the deploy's
//!   SendCommand reaching moto (seen by a proxy in front of it), one push at
//!   a time after a quiet push window, each deploy finished before the next.
//! - **Idle RSS**: the daemon's resident memory after its first reconcile,
//!   idle.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jaam_tests::daemon::{Daemon, deliveries};
use jaam_tests::github::GithubFake;
use jaam_tests::{Intercept, InterceptProxy, Workspace, hosted_zone, unique};

const SECRET: &str = "bench-webhook-secret-0123";

fn sha() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].repeat(2)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// An AWS request's operation: its `X-Amz-Target`, its query `Action`, or
/// its request line.
fn operation(head: &str, body: &str) -> String {
    if let Some(target) = head.lines().find_map(|l| l.strip_prefix("x-amz-target: ")) {
        return target.trim().to_owned();
    }
    if let Some(action) = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
    {
        return action.to_owned();
    }
    head.lines().next().unwrap_or_default().to_owned()
}

/// Where a push's time goes: the median offset from the push of each AWS
/// operation before its command, and the median of each stage of the
/// deploy-only reconciles the daemon logged ("reconcile stages").
fn print_trace(trace: &[Vec<(String, Duration)>], log: &str, rounds: usize) {
    println!(
        "where a push's time goes (medians over {} pushes):",
        trace.len()
    );
    let mut names: Vec<String> = Vec::new();
    for steps in trace {
        for (name, _) in steps {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    for name in names {
        let mut offsets: Vec<Duration> = trace
            .iter()
            .filter_map(|steps| steps.iter().find(|(n, _)| *n == name).map(|(_, d)| *d))
            .collect();
        let count = offsets.len();
        println!(
            "  {} after the push: {name} (in {count} of them)",
            ms(percentile(&mut offsets, 0.5))
        );
    }
    // The daemon's own stage log of its deploy-only reconciles (the timed
    // pushes are the first `rounds` of them).
    let stages = jaam_tests::daemon::stage_medians(log, "deploy_only=true", rounds);
    println!("  the daemon's deploy-only reconciles, by stage: {stages}");
}

#[tokio::main]
async fn main() {
    let moto = jaam_tests::moto_endpoint();
    let rounds: usize = std::env::var("JAAM_BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // When each deploy's SendCommand reached moto, by sha.
    let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let record = Arc::clone(&seen);
    // Every AWS operation and when it reached moto, for the trace.
    let operations: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let traced = Arc::clone(&operations);
    let proxy = InterceptProxy::start(
        &moto,
        Arc::new(move |head: &str, body: &str| {
            traced
                .lock()
                .unwrap()
                .push((operation(head, body), Instant::now()));
            if head.contains("x-amz-target: amazonssm.sendcommand")
                && let Some(rest) = body.split("exec /opt/jaam/bin/deploy ").nth(1)
            {
                let sha: String = rest.chars().take(40).collect();
                record.lock().unwrap().push((sha, Instant::now()));
            }
            Intercept::Forward
        }),
    )
    .await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("benchdaemon"));
    let repo = format!("acme/{}", ws.stack);
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let first = sha();
    let set_head = |sha: &str| {
        github
            .repos
            .lock()
            .unwrap()
            .branches
            .insert((repo.clone(), "main".into()), sha.to_owned());
    };
    set_head(&first);
    ws.write_specs(&format!(
        "site.blog:\n  repo: {repo}\n  domain: blog.{domain}\n  zone: {domain}\n  https: false\n  \
         webhook_url: https://jaam.{domain}/hooks/github\n  webhook_secret: ${{env.HOOK_SECRET}}\n"
    ));
    let mut command = ws.command(&["daemon"]);
    command
        .env("AWS_ENDPOINT_URL", &proxy.url)
        .env("GITHUB_API_URL", &github.url)
        .env("GITHUB_TOKEN", "ghp_bench")
        .env("HOOK_SECRET", SECRET);
    let daemon = Daemon::start(command, ws.dir.path().join("daemon.log"));
    let revision = |d: &Daemon| {
        d.status()["revisions"]["blog"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    daemon.wait_until("the first deploy", Duration::from_secs(60), |d| {
        revision(d) == first
    });

    // Idle RSS.
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let kb = |field: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    let (rss, anon, file) = (kb("VmRSS:"), kb("RssAnon:"), kb("RssFile:"));

    // Push to SSM command, one at a time.
    let shas: Vec<String> = (0..rounds).map(|_| sha()).collect();
    let pushes: Vec<_> = deliveries(SECRET, &repo, "main", &shas, None)
        .into_iter()
        .filter(|d| d.event == "push")
        .collect();
    let mut to_command = Vec::new();
    // Per push: each AWS operation's first time between the push and its
    // command, as an offset from the push.
    let mut trace: Vec<Vec<(String, Duration)>> = Vec::new();
    for (sha, push) in shas.iter().zip(&pushes) {
        // A push after a quiet push window (1 s) is deployed at once.
        std::thread::sleep(Duration::from_millis(1050));
        set_head(sha);
        let sent = Instant::now();
        let (status, body) = daemon.deliver(push);
        assert_eq!(status, 202, "{body}");
        let arrived = loop {
            if let Some((_, at)) = seen.lock().unwrap().iter().find(|(s, _)| s == sha) {
                break *at;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                let log =
                    std::fs::read_to_string(ws.dir.path().join("daemon.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "no deploy for {sha} in 30 s; the daemon's log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        to_command.push(arrived.duration_since(sent));
        let mut steps: Vec<(String, Duration)> = Vec::new();
        for (name, at) in operations.lock().unwrap().iter() {
            if *at >= sent && *at <= arrived && !steps.iter().any(|(n, _)| n == name) {
                steps.push((name.clone(), at.duration_since(sent)));
            }
        }
        trace.push(steps);
        daemon.wait_until("the deploy", Duration::from_secs(30), |d| {
            revision(d) == *sha && d.metrics().contains("jaam_queue_depth 0")
        });
    }

    // Intake: a burst of signed pushes (they coalesce behind the scenes).
    let burst: Vec<String> = (0..200).map(|_| sha()).collect();
    let burst_pushes: Vec<_> = deliveries(SECRET, &repo, "main", &burst, None)
        .into_iter()
        .filter(|d| d.event == "push")
        .collect();
    set_head(burst.last().unwrap());
    let mut intake = Vec::new();
    for push in &burst_pushes {
        let sent = Instant::now();
        let (status, _) = daemon.deliver(push);
        intake.push(sent.elapsed());
        assert_eq!(status, 202);
    }
    let last = burst.last().unwrap().clone();
    daemon.wait_until("the burst", Duration::from_secs(60), |d| {
        revision(d) == last
    });

    println!(
        "jaam daemon benchmark ({}, moto on loopback)",
        if std::env::var_os("JAAM_BINARY").is_some() {
            "optimized build"
        } else {
            "debug build"
        }
    );
    println!(
        "webhook intake (signed push → 202 after enqueue), {} requests: p50 {}, p99 {}  (target p99 < 5 ms)",
        intake.len(),
        ms(percentile(&mut intake, 0.5)),
        ms(percentile(&mut intake, 0.99))
    );
    println!(
        "signed push → SSM SendCommand at moto, {} pushes: p50 {}, p99 {}  (target p99 < 50 ms)",
        to_command.len(),
        ms(percentile(&mut to_command, 0.5)),
        ms(percentile(&mut to_command, 0.99))
    );
    println!(
        "idle RSS after the first reconcile: {rss:.1} MB = {anon:.1} MB heap and stacks + {file:.1} MB mapped code of the binary  (target < 50 MB)"
    );
    print_trace(
        &trace,
        &std::fs::read_to_string(ws.dir.path().join("daemon.log")).unwrap_or_default(),
        rounds,
    );
    assert_eq!(daemon.terminate(), Some(0));
}
