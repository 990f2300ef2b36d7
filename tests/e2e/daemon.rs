//! `jaam daemon` end to end: real signed deliveries, a site deployed on a
//! push, a burst of pushes coalesced, spec edits, drift healed or reported,
//! and SIGTERM in the middle of a reconcile.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jaam_tests::daemon::{Daemon, deliveries, http};
use jaam_tests::github::GithubFake;
use jaam_tests::{Workspace, aws_config, hosted_zone, moto_endpoint, unique};

const SECRET: &str = "daemon-test-webhook-secret";
/// The secret of another repository's webhook in the same stack.
const OTHER_SECRET: &str = "another-sites-webhook-secret";

fn sha() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].repeat(2)
}

fn daemon_command(
    ws: &Workspace,
    github: Option<&GithubFake>,
    aws: &str,
    extra: &[&str],
) -> Command {
    let mut command = ws.command(&["daemon"]);
    command
        .args(extra)
        .env("AWS_ENDPOINT_URL", aws)
        .env("GITHUB_TOKEN", "ghp_test")
        .env("HOOK_SECRET", SECRET)
        .env("OTHER_SECRET", OTHER_SECRET);
    if let Some(github) = github {
        command.env("GITHUB_API_URL", &github.url);
    }
    command
}

/// SSM commands (on any instance: moto fans SendCommand out) whose script
/// ends with `script` (a deploy waits for the boot script first).
async fn commands(script: &str) -> usize {
    let ssm = aws_sdk_ssm::Client::new(&aws_config().await);
    let mut count = 0;
    let mut pages = ssm.list_commands().into_paginator().send();
    while let Some(page) = pages.next().await {
        count += page
            .expect("ListCommands")
            .commands()
            .iter()
            .filter(|c| {
                c.parameters()
                    .and_then(|p| p.get("commands"))
                    .and_then(|lines| lines.last())
                    .is_some_and(|last| last == script || *last == format!("exec {script}"))
            })
            .count();
    }
    count
}

/// `jaam ARGS` with the environment the daemon has.
fn cli(ws: &Workspace, github: &GithubFake, aws: &str, args: &[&str]) -> jaam_tests::Run {
    let mut command = daemon_command(ws, Some(github), aws, &[]);
    command.args(["--stack", &ws.stack]);
    let mut full = ws.command(args);
    full.envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
    jaam_tests::Run::from(full.output().expect("run jaam"))
}

fn site(ws: &Workspace, repo: &str, domain: &str, profile: &str) {
    ws.write_specs(&format!(
        "site.blog:\n  repo: {repo}\n  domain: blog.{domain}\n  zone: {domain}\n  https: false\n  \
         iam_instance_profile: {profile}\n  \
         webhook_url: https://jaam.{domain}/hooks/github\n  webhook_secret: ${{env.HOOK_SECRET}}\n\
         webhook.other:\n  repo: {repo}-other\n  url: https://jaam.{domain}/hooks/github\n  \
         secret: ${{env.OTHER_SECRET}}\n"
    ));
}

fn set_head(github: &GithubFake, repo: &str, sha: &str) {
    github.set_head(repo, "main", sha);
}

/// Opens the blog's build-log stream (server-sent events) on the daemon.
fn log_stream(port: u16) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /sites/blog/logs HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .unwrap();
    std::io::BufReader::new(stream)
}

fn revision(daemon: &Daemon) -> String {
    daemon.status()["revisions"]["blog"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_should_be_verified_deduplicated_and_deploy_the_site() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("daemonhook"));
    let repo = format!("acme/{}", ws.stack);
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let a = sha();
    github
        .repos
        .lock()
        .unwrap()
        .branches
        .insert((repo.clone(), "main".into()), a.clone());
    site(&ws, &repo, &domain, &jaam_tests::ssm_profile().await);
    let daemon = Daemon::start(
        daemon_command(&ws, Some(&github), &moto, &["--max-body", "65536"]),
        ws.dir.path().join("daemon.log"),
    );
    // The first reconcile (a resync) deploys the branch head.
    daemon.wait_until("the first deploy", Duration::from_secs(60), |d| {
        revision(d) == a
    });
    assert_eq!(github.hooks(&repo).len(), 1);

    let b = sha();
    let c = sha();
    let all = deliveries(SECRET, &repo, "main", std::slice::from_ref(&b), Some(&c));
    let [ping, push, closed, merged] = all.as_slice() else {
        panic!("four deliveries: {all:?}")
    };

    // ping is answered.
    let (status, body) = daemon.deliver(ping);
    assert_eq!(status, 200, "{body}");
    // Bad, missing and SHA-1-only signatures are refused, and do nothing.
    let mut forged = push.clone();
    forged.signature = deliveries(
        "another secret",
        &repo,
        "main",
        std::slice::from_ref(&b),
        None,
    )[1]
    .signature
    .clone();
    forged.id = uuid::Uuid::new_v4().to_string();
    assert_eq!(daemon.deliver(&forged).0, 401);
    let mut tampered = push.clone();
    tampered.body = tampered.body.replace(&b, &c);
    tampered.id = uuid::Uuid::new_v4().to_string();
    assert_eq!(daemon.deliver(&tampered).0, 401);
    let mut missing = push.clone();
    missing.signature = String::new();
    assert_eq!(daemon.deliver(&missing).0, 401);
    let (status, _) = http(
        daemon.port,
        "POST",
        "/hooks/github",
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "sha1-only"),
            (
                "x-hub-signature",
                "sha1=0123456789abcdef0123456789abcdef01234567",
            ),
        ],
        push.body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 401);
    // Oversize bodies are refused before they are checked (a signature
    // header must be there at all for the body to be read).
    let big = vec![b'x'; 200_000];
    let well_formed = format!("sha256={}", "00".repeat(32));
    let (status, _) = http(
        daemon.port,
        "POST",
        "/hooks/github",
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "big"),
            ("x-hub-signature-256", &well_formed),
        ],
        &big,
    )
    .unwrap();
    assert_eq!(status, 413);
    assert_eq!(commands(&format!("/opt/jaam/bin/deploy {c}")).await, 0);

    // Issue 11, item 1: another site's secret does not authenticate a
    // delivery for this site's repository.
    let cross = deliveries(OTHER_SECRET, &repo, "main", std::slice::from_ref(&b), None);
    let (status, body) = daemon.deliver(&cross[1]);
    assert_eq!(status, 401, "{body}");

    // A valid push deploys the branch head: exactly one SSM command carries it.
    set_head(&github, &repo, &b);
    let (status, body) = daemon.deliver(push);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("accepted"), "{body}");
    daemon.wait_until("the pushed revision", Duration::from_secs(60), |d| {
        revision(d) == b
    });
    // The deploy history says a push did it (issue 16, item 1).
    let history = cli(&ws, &github, &moto, &["deployments", "site.blog", "--json"]);
    history.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(rows[0]["revision"], b.as_str(), "{rows}");
    assert_eq!(
        rows[0]["trigger"],
        format!("push (delivery {})", push.id),
        "the delivery that asked: {rows}"
    );
    assert_eq!(rows[0]["previous"], a.as_str(), "{rows}");
    assert_eq!(rows[1]["trigger"], "resync", "the first deploy: {rows}");
    // The same delivery again is processed once; so is the same body under
    // a new delivery id (the id header is not signed).
    let (status, body) = daemon.deliver(push);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("duplicate"), "{body}");
    let mut renamed = push.clone();
    renamed.id = uuid::Uuid::new_v4().to_string();
    let (status, body) = daemon.deliver(&renamed);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("duplicate"), "{body}");
    // An unmerged closed pull request is ignored.
    let (status, body) = daemon.deliver(closed);
    assert_eq!(status, 202);
    assert!(body.contains("ignored"), "{body}");
    // A merged one deploys its merge commit (the branch head).
    set_head(&github, &repo, &c);
    let (status, body) = daemon.deliver(merged);
    assert_eq!(status, 202, "{body}");
    daemon.wait_until("the merge commit", Duration::from_secs(60), |d| {
        revision(d) == c
    });
    assert_eq!(commands(&format!("/opt/jaam/bin/deploy {b}")).await, 1);
    assert_eq!(commands(&format!("/opt/jaam/bin/deploy {c}")).await, 1);

    // Issue 11, item 2: a signed delivery that claims an old commit (here a
    // new body: the repository named in another case) is a trigger only: the
    // head is still `c`, so nothing new is deployed.
    let before = daemon.status()["reconciles"].as_u64().unwrap();
    let replay = deliveries(
        SECRET,
        &repo.to_uppercase(),
        "main",
        std::slice::from_ref(&b),
        None,
    );
    let (status, body) = daemon.deliver(&replay[1]);
    assert_eq!(
        status, 202,
        "a push for the repository in another case is routed: {body}"
    );
    daemon.wait_until("the replay's reconcile", Duration::from_secs(60), |d| {
        d.status()["reconciles"].as_u64().unwrap() > before
    });
    assert_eq!(
        revision(&daemon),
        c,
        "the head serves, not the replayed commit"
    );
    assert_eq!(commands(&format!("/opt/jaam/bin/deploy {b}")).await, 1);

    // The site's build log as server-sent events.
    jaam_tests::put_log_event(
        &format!("/jaam/sites/blog.{domain}"),
        "build",
        &format!("serving {c}"),
    )
    .await;
    {
        use std::io::BufRead;
        let reader = log_stream(daemon.port);
        let mut saw = Vec::new();
        for line in reader.lines() {
            let line = line.expect("an event before the timeout");
            saw.push(line.clone());
            if line.starts_with("data:") && line.contains(&format!("serving {c}")) {
                break;
            }
        }
        assert!(
            saw.iter().any(|l| l.contains("text/event-stream")),
            "{saw:?}"
        );
        assert!(saw.iter().any(|l| l == "event: build"), "{saw:?}");
    }

    // Issue 11, item 11: streams of one site share one poller; streams are capped.
    {
        use std::io::BufRead;
        let open = || log_stream(daemon.port);
        let mut streams: Vec<_> = (0..32).map(|_| open()).collect();
        for reader in streams.iter_mut().take(3) {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        }
        daemon.wait_until("every stream open", Duration::from_secs(20), |d| {
            let metrics = d.metrics();
            metrics.contains("jaam_log_streams 32") && metrics.contains("jaam_log_pollers 1")
        });
        let mut refused = String::new();
        open().read_line(&mut refused).unwrap();
        assert!(
            refused.starts_with("HTTP/1.1 503"),
            "the 33rd stream: {refused}"
        );
        // Every follower sees the same line, from the one poller.
        jaam_tests::put_log_event(
            &format!("/jaam/sites/blog.{domain}"),
            "build",
            "shared by every follower",
        )
        .await;
        for reader in streams.iter_mut().take(3) {
            let seen = reader
                .lines()
                .map(|line| line.expect("an event before the timeout"))
                .any(|line| line.contains("shared by every follower"));
            assert!(seen);
        }
        assert!(daemon.metrics().contains("jaam_log_pollers 1"));
        // Closed streams are noticed at the next write (a keep-alive comes
        // every 15 s); then the last one stops the poller.
        drop(streams);
        daemon.wait_until("the poller stopped", Duration::from_secs(45), |d| {
            d.metrics().contains("jaam_log_pollers 0")
        });
    }

    let metrics = daemon.metrics();
    assert!(
        metrics.contains("jaam_webhook_deliveries_total{outcome=\"unauthorized\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jaam_webhook_deliveries_total{outcome=\"duplicate\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jaam_webhook_deliveries_total{outcome=\"too_large\"} 1"),
        "{metrics}"
    );
    assert!(!daemon.logs().contains(SECRET));
    assert_eq!(daemon.terminate(), Some(0));

    // Delivery ids survive a restart.
    let daemon = Daemon::start(
        daemon_command(&ws, Some(&github), &moto, &[]),
        ws.dir.path().join("daemon2.log"),
    );
    let (status, body) = daemon.deliver(merged);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("duplicate"), "{body}");
    assert_eq!(daemon.terminate(), Some(0));
    cli(&ws, &github, &moto, &["destroy", "--auto-approve"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_pushes_should_coalesce_into_at_most_two_reconciles() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("daemonburst"));
    let repo = format!("acme/{}", ws.stack);
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let first = sha();
    github
        .repos
        .lock()
        .unwrap()
        .branches
        .insert((repo.clone(), "main".into()), first.clone());
    site(&ws, &repo, &domain, &jaam_tests::ssm_profile().await);
    let daemon = Daemon::start(
        daemon_command(&ws, Some(&github), &moto, &[]),
        ws.dir.path().join("daemon.log"),
    );
    daemon.wait_until("the first deploy", Duration::from_secs(60), |d| {
        revision(d) == first
    });
    let before = daemon.counter("jaam_reconciles_total");

    let shas: Vec<String> = (0..100).map(|_| sha()).collect();
    let pushes = deliveries(SECRET, &repo, "main", &shas, None);
    let last = shas.last().unwrap().clone();
    github
        .repos
        .lock()
        .unwrap()
        .branches
        .insert((repo.clone(), "main".into()), last.clone());
    let started = std::time::Instant::now();
    for push in pushes.iter().filter(|d| d.event == "push") {
        let (status, body) = daemon.deliver(push);
        assert_eq!(status, 202, "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "100 pushes in one second"
    );
    daemon.wait_until("the last revision", Duration::from_secs(60), |d| {
        revision(d) == last && d.metrics().contains("jaam_queue_depth 0")
    });
    let reconciles = daemon.counter("jaam_reconciles_total") - before;
    assert!(
        (1..=2).contains(&reconciles),
        "{reconciles} reconciles for 100 pushes"
    );
    assert_eq!(commands(&format!("/opt/jaam/bin/deploy {last}")).await, 1);
    assert_eq!(daemon.terminate(), Some(0));
    cli(&ws, &github, &moto, &["destroy", "--auto-approve"]).expect_code(0);
}

fn log_groups(stack: &str, names: &[&str], drift: &str) -> String {
    let mut out = format!("stack:\n  drift: {drift}\n");
    for name in names {
        out.push_str(&format!(
            "log_group.{name}:\n  name: /jaam/{stack}/{name}\n"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_edit_should_reconcile_once_and_drift_should_heal_at_the_next_resync() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("daemonheal"));
    let stack = ws.stack.clone();
    ws.write_specs(&log_groups(&stack, &["a"], "heal"));
    let daemon = Daemon::start(
        daemon_command(
            &ws,
            None,
            &moto,
            &[
                "--resync",
                "3s",
                "--header-timeout",
                "1s",
                "--body-timeout",
                "1s",
            ],
        ),
        ws.dir.path().join("daemon.log"),
    );
    // Slow clients are cut off: headers that never end, a body that never comes.
    {
        use std::io::{Read, Write};
        let mut slow = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.write_all(b"POST /hooks/github HTTP/1.1\r\nhost: x\r\n")
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "headers timed out"
        );
        let mut slow = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.write_all(
            format!(
                "POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\
                 x-hub-signature-256: sha256={}\r\n\r\n{{\"partial",
                "00".repeat(32)
            )
            .as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let logs = jaam_tests::logs_client().await;
    let prefix = format!("/jaam/{stack}/");
    // The first resync applies; the next may already have found nothing to
    // do (it comes ½ to 1½ periods later), so either result will do.
    daemon.wait_until("the first reconcile", Duration::from_secs(30), |d| {
        let status = d.status();
        status["reconciles"].as_u64() >= Some(1)
            && (status["result"] == "applied" || status["result"] == "no_changes")
    });

    // Saving a spec file: one reconcile.
    let before = daemon.status()["reconciles"].as_u64().unwrap();
    std::fs::write(
        ws.specs().join("more.yaml"),
        format!("log_group.b:\n  name: /jaam/{stack}/b\n"),
    )
    .unwrap();
    // (The log, not the last status: a resync may follow at once and
    // replace the status's reasons before a poll sees them; one due within
    // the debounce merges with the spec change, `["resync", "spec change"]`.)
    let spec_changes = |log: &str| {
        log.lines()
            .filter(|l| l.contains("reconcile started") && l.contains("\"spec change\""))
            .count()
    };
    daemon.wait_until("the new group", Duration::from_secs(30), |d| {
        spec_changes(&d.logs()) > 0
    });
    jaam_tests::eventually("the new group", Duration::from_secs(30), || async {
        (jaam_tests::log_groups(&logs, &prefix).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        spec_changes(&daemon.logs()),
        1,
        "one reconcile for one save"
    );
    assert!(daemon.status()["reconciles"].as_u64().unwrap() > before);

    // Deleted behind its back: recreated at the next resync.
    logs.delete_log_group()
        .log_group_name(format!("/jaam/{stack}/a"))
        .send()
        .await
        .unwrap();
    jaam_tests::eventually(
        "the deleted group healed",
        Duration::from_secs(30),
        || async { (jaam_tests::log_groups(&logs, &prefix).await.len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(daemon.terminate(), Some(0));
    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_should_only_be_reported_under_the_report_policy() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("daemonreport"));
    let stack = ws.stack.clone();
    ws.write_specs(&log_groups(&stack, &["a"], "report"));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let logs = jaam_tests::logs_client().await;
    logs.delete_log_group()
        .log_group_name(format!("/jaam/{stack}/a"))
        .send()
        .await
        .unwrap();
    let daemon = Daemon::start(
        daemon_command(&ws, None, &moto, &["--resync", "2s"]),
        ws.dir.path().join("daemon.log"),
    );
    daemon.wait_until("a drift report", Duration::from_secs(30), |d| {
        let status = d.status();
        status["result"] == "drift_reported"
            && status["drift"] == serde_json::json!(["log_group.a"])
    });
    // Two resyncs later it is still only reported.
    let seen = daemon.status()["reconciles"].as_u64().unwrap();
    daemon.wait_until("two more resyncs", Duration::from_secs(30), |d| {
        d.status()["reconciles"].as_u64().unwrap() >= seen + 2
    });
    assert!(
        jaam_tests::log_groups(&logs, &format!("/jaam/{stack}/"))
            .await
            .is_empty()
    );
    assert!(
        daemon
            .metrics()
            .contains("jaam_reconciles_total{result=\"drift_reported\"}")
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_reconcile_should_finish_it_and_exit_0() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("daemonterm"));
    let stack = ws.stack.clone();
    // A slow cloud: every CreateLogGroup takes a second.
    let held = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&held);
    let answer: jaam_tests::Answer = Arc::new(move |head: &str, _body: &str| {
        if head.contains("x-amz-target: logs_20140328.createloggroup") {
            count.fetch_add(1, Ordering::SeqCst);
            jaam_tests::Intercept::Delay(Duration::from_secs(1))
        } else {
            jaam_tests::Intercept::Forward
        }
    });
    let proxy = jaam_tests::InterceptProxy::start(&moto, answer).await;
    let names = ["a", "b", "c", "d", "e"];
    ws.write_specs(&log_groups(&stack, &names, "heal"));
    let daemon = Daemon::start(
        {
            let mut command = daemon_command(&ws, None, &proxy.url, &[]);
            command.env("JAAM_DAEMON_TOKEN", "t0k3n");
            command
        },
        ws.dir.path().join("daemon.log"),
    );
    // Read endpoints want the bearer token; health does not.
    assert_eq!(
        http(daemon.port, "GET", "/healthz", &[], b"").unwrap().0,
        200
    );
    assert_eq!(
        http(daemon.port, "GET", "/metrics", &[], b"").unwrap().0,
        401
    );
    assert_eq!(
        http(
            daemon.port,
            "GET",
            "/status",
            &[("authorization", "Bearer nope!")],
            b""
        )
        .unwrap()
        .0,
        401
    );
    let (status, body) = http(
        daemon.port,
        "GET",
        "/status",
        &[("authorization", "Bearer t0k3n")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while held.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconcile started:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = daemon.log.clone();
    assert_eq!(
        daemon.terminate(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // The reconcile finished: every group exists and state holds them all.
    let logs = jaam_tests::logs_client().await;
    assert_eq!(
        jaam_tests::log_groups(&logs, &format!("/jaam/{stack}/"))
            .await
            .len(),
        names.len()
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.state()).unwrap()).unwrap();
    assert_eq!(state["resources"].as_object().unwrap().len(), names.len());
    assert!(!ws.state().with_extension("json.journal").exists());
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

/// Issue 14, item 3 (in part): a failed push is retried as what it was — a
/// deploy of the pushed site planned from state — never as a full refresh.
/// A proxy in front of moto whose deploys fail (a build's tail as SSM
/// reports it) while the flag is set; it also counts DescribeInstances.
async fn failing_builds(
    moto: &str,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<AtomicUsize>,
    jaam_tests::InterceptProxy,
) {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let describes = Arc::new(AtomicUsize::new(0));
    let answer: jaam_tests::Answer = {
        let (failing, describes) = (Arc::clone(&failing), Arc::clone(&describes));
        Arc::new(move |head: &str, body: &str| {
            if body.contains("Action=DescribeInstances") {
                describes.fetch_add(1, Ordering::SeqCst);
            }
            if !(failing.load(Ordering::SeqCst)
                && head.contains("x-amz-target: amazonssm.getcommandinvocation"))
            {
                return jaam_tests::Intercept::Forward;
            }
            jaam_tests::Intercept::failed_invocation(
                body,
                "> build\nerror: the build broke\n",
                "error: build failed; still serving the previous release",
            )
        })
    };
    let proxy = jaam_tests::InterceptProxy::start(moto, answer).await;
    (failing, describes, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_push_should_be_retried_as_a_deploy() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let (failing, describes, proxy) = failing_builds(&moto).await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("daemonretry"));
    let repo = format!("acme/{}", ws.stack);
    // A token that may not write deployments: a warning, never a failed deploy.
    github
        .repos
        .lock()
        .unwrap()
        .deployments_denied
        .insert(repo.clone());
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let (a, b) = (sha(), sha());
    set_head(&github, &repo, &a);
    site(&ws, &repo, &domain, &jaam_tests::ssm_profile().await);
    let daemon = Daemon::start(
        daemon_command(&ws, Some(&github), &proxy.url, &[]),
        ws.dir.path().join("daemon.log"),
    );
    daemon.wait_until("the first deploy", Duration::from_secs(60), |d| {
        revision(d) == a
    });

    failing.store(true, Ordering::SeqCst);
    set_head(&github, &repo, &b);
    let push = deliveries(SECRET, &repo, "main", std::slice::from_ref(&b), None);
    assert_eq!(daemon.deliver(&push[1]).0, 202);
    daemon.wait_until("the failed deploy", Duration::from_secs(60), |d| {
        d.status()["result"] == "failed"
    });
    let before = describes.load(Ordering::SeqCst);
    let failed_at = daemon.status()["reconciles"].as_u64().unwrap();
    daemon.wait_until("a retry", Duration::from_secs(60), |d| {
        d.status()["reconciles"].as_u64().unwrap() > failed_at
    });
    assert_eq!(
        daemon.status()["reasons"],
        serde_json::json!(["push", "retry"]),
        "the retry keeps its reason"
    );
    assert_eq!(
        describes.load(Ordering::SeqCst),
        before,
        "a retried deploy is planned from state, without a refresh"
    );
    failing.store(false, Ordering::SeqCst);
    daemon.wait_until("the retried deploy", Duration::from_secs(90), |d| {
        revision(d) == b
    });
    assert!(
        daemon
            .logs()
            .contains("no GitHub deployment for this deploy"),
        "the missing permission is a warning"
    );
    assert_eq!(daemon.terminate(), Some(0));
    cli(&ws, &github, &moto, &["destroy", "--auto-approve"]).expect_code(0);
}

/// Issue 14, item 3: a revision whose deploy fails `--max-failures` times in
/// a row is parked: no more retries, and resyncs keep the site on what it
/// serves instead of rebuilding the broken head every time; `/status` says
/// so; a new push lets the branch deploy again.
#[tokio::test(flavor = "multi_thread")]
async fn a_revision_that_keeps_failing_should_be_parked_until_a_new_push() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let (failing, _, proxy) = failing_builds(&moto).await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("daemonpark"));
    let repo = format!("acme/{}", ws.stack);
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let (a, b, c) = (sha(), sha(), sha());
    set_head(&github, &repo, &a);
    site(&ws, &repo, &domain, &jaam_tests::ssm_profile().await);
    let daemon = Daemon::start(
        daemon_command(
            &ws,
            Some(&github),
            &proxy.url,
            &[
                "--max-failures",
                "2",
                "--resync",
                "3s",
                "--public-url",
                "https://jaam.example.test/",
            ],
        ),
        ws.dir.path().join("daemon.log"),
    );
    daemon.wait_until("the first deploy", Duration::from_secs(60), |d| {
        revision(d) == a
    });

    failing.store(true, Ordering::SeqCst);
    set_head(&github, &repo, &b);
    let push = deliveries(SECRET, &repo, "main", std::slice::from_ref(&b), None);
    assert_eq!(daemon.deliver(&push[1]).0, 202);
    daemon.wait_until("the revision parked", Duration::from_secs(60), |d| {
        d.status()["parked"][0]["revision"] == b.as_str()
    });
    let parked = daemon.status()["parked"][0].clone();
    assert_eq!(parked["failures"], 2, "{parked}");
    assert_eq!(parked["serving"], a.as_str(), "{parked}");
    assert!(
        parked["error"]
            .as_str()
            .unwrap()
            .contains("the build broke"),
        "{parked}"
    );
    assert_eq!(revision(&daemon), a, "the site still serves a");
    let deploys = commands(&format!("/opt/jaam/bin/deploy {b}")).await;
    assert_eq!(deploys, 2, "two failed deploys of b");

    // Resyncs go on, without building b again.
    let seen = daemon.status()["reconciles"].as_u64().unwrap();
    daemon.wait_until("two more resyncs", Duration::from_secs(30), |d| {
        d.status()["reconciles"].as_u64().unwrap() >= seen + 2
    });
    assert_eq!(
        commands(&format!("/opt/jaam/bin/deploy {b}")).await,
        deploys,
        "a parked revision is not deployed again"
    );
    assert_eq!(daemon.status()["result"], "no_changes");

    // A new push: the branch deploys again.
    failing.store(false, Ordering::SeqCst);
    set_head(&github, &repo, &c);
    let push = deliveries(SECRET, &repo, "main", std::slice::from_ref(&c), None);
    assert_eq!(daemon.deliver(&push[1]).0, 202);
    daemon.wait_until("the new push deployed", Duration::from_secs(60), |d| {
        revision(d) == c
    });
    assert_eq!(daemon.status()["parked"], serde_json::json!([]));

    // Issue 15, item 2: each deploy was a GitHub deployment of its commit,
    // moved in_progress then success or failure, with the site's URL and
    // the daemon's page of it.
    let (deployments, statuses) = {
        let fake = github.repos.lock().unwrap();
        (fake.deployments.clone(), fake.statuses.clone())
    };
    let of = |sha: &str| -> Vec<(i64, serde_json::Value)> {
        deployments
            .iter()
            .filter(|(_, (r, body))| *r == repo && body["ref"] == sha)
            .map(|(id, (_, body))| (*id, body.clone()))
            .collect()
    };
    let states = |id: i64| -> Vec<String> {
        statuses
            .iter()
            .filter(|(d, _)| *d == id)
            .map(|(_, body)| body["state"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    for (sha, expected) in [(&a, "success"), (&c, "success")] {
        let made = of(sha);
        assert_eq!(made.len(), 1, "one deployment of {sha}: {deployments:?}");
        let (id, body) = &made[0];
        assert_eq!(body["environment"], "production");
        assert_eq!(states(*id), ["in_progress", expected], "{statuses:?}");
    }
    let failed = of(&b);
    assert_eq!(failed.len(), 2, "two failed deploys of b: {deployments:?}");
    for (id, _) in &failed {
        assert_eq!(states(*id), ["in_progress", "failure"], "{statuses:?}");
    }
    let last = &statuses.last().unwrap().1;
    assert_eq!(last["environment_url"], format!("http://blog.{domain}"));
    assert_eq!(last["log_url"], "https://jaam.example.test/sites/blog");
    assert_eq!(daemon.terminate(), Some(0));
    cli(&ws, &github, &moto, &["destroy", "--auto-approve"]).expect_code(0);
}
