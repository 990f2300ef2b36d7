//! Issue 11 (hardening): one test per defect the security review found, each
//! failing on the code before its fix. Items tested closer to their code are
//! named here: 4 in `sites.rs`, 5 in `jaam-core/src/spec/site/tests.rs`.

use std::os::unix::fs::PermissionsExt as _;

use jaam_tests::{Workspace, unique};

/// Item 12: `plan --out` writes a new 0600 file and renames it into place,
/// even when the path exists as a world-readable file or a symlink.
#[test]
fn a_plan_file_should_be_a_new_private_file_even_over_a_symlink_or_a_loose_file() {
    jaam_tests::moto_endpoint();
    let ws = Workspace::new(&unique("planfile"));
    ws.write_specs(&format!("log_group.a:\n  name: /jaam/{}/a\n", ws.stack));
    let victim = ws.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let linked = ws.dir.path().join("linked.json");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    ws.jaam(&["plan", "--out", linked.to_str().unwrap()])
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(&linked).unwrap().is_symlink());
    assert!(
        std::fs::read_to_string(&linked)
            .unwrap()
            .contains("log_group.a")
    );

    let loose = ws.dir.path().join("loose.json");
    std::fs::write(&loose, "old").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    ws.jaam(&["plan", "--out", loose.to_str().unwrap()])
        .expect_code(0);
    let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the plan file holds argument values: owner only"
    );
}

/// Item 14: a domain outside the certificate's zone fails at plan, with one
/// clear message, before any ACME order is opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_domain_outside_its_zone_should_fail_at_plan() {
    jaam_tests::moto_endpoint();
    let pebble = jaam_tests::acme::pebble();
    let ws = Workspace::new(&unique("certzone"));
    let domain = format!("{}.test", ws.stack);
    jaam_tests::hosted_zone(&domain).await;
    ws.write_specs(&format!(
        "certificate.www:\n  domains: [www.{domain}, www.elsewhere-{domain}]\n  zone: {domain}\n  \
         acme_directory: {}\n",
        pebble.directory
    ));
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let run = ws.jaam(args);
        run.expect_code(1);
        let needle = format!("`www.elsewhere-{domain}` is not in zone `{domain}`");
        assert_eq!(
            run.stderr.matches(&needle).count(),
            1,
            "`jaam {}`: one clear message:\n{}",
            args.join(" "),
            run.stderr
        );
        assert!(!run.stderr.contains("order"), "{}", run.stderr);
    }
}

/// The stack of the double-crash test: an instance (its user data `script`),
/// `records` A records and three webhooks with generated secrets.
fn crash_stack(domain: &str, repo: &str, script: &str, records: usize) -> String {
    let mut out = format!(
        "instance.web:\n  ami: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\n  \
         instance_type: t3.micro\n  user_data: |\n    #!/bin/bash\n    {script}\n"
    );
    for n in 0..records {
        out.push_str(&format!(
            "record.r{n}:\n  zone: {domain}\n  name: r{n}.{domain}\n  type: A\n  ttl: 60\n  values: [\"192.0.2.{}\"]\n",
            n + 1
        ));
    }
    if records > 0 {
        for n in 0..3 {
            out.push_str(&format!(
                "webhook.h{n}:\n  repo: {repo}\n  url: https://jaam.{domain}/hooks/{n}\n"
            ));
        }
    }
    out
}

/// Waits until `journal` is no longer `old` extended (a new run opened it)
/// and holds at least `lines` lines, then SIGKILLs `child`. False when the
/// child exited first.
async fn kill_once_rewritten(
    child: &mut std::process::Child,
    journal: &std::path::Path,
    old: &str,
    lines: usize,
) -> bool {
    use jaam_core::backoff::{self, Backoff};
    let watch = Backoff {
        initial: std::time::Duration::from_millis(1),
        max: std::time::Duration::from_millis(5),
        deadline: std::time::Duration::from_secs(60),
    };
    let reached = backoff::poll(watch, || {
        let text = std::fs::read_to_string(journal).unwrap_or_default();
        let rewritten = !text.starts_with(old) && text.lines().count() >= lines;
        let exited = !rewritten && child.try_wait().ok().flatten().is_some();
        async move { Ok::<_, ()>((rewritten || exited).then_some(rewritten)) }
    })
    .await
    .expect("the child journals or exits within a minute");
    child.kill().ok();
    child.wait().expect("reap the child");
    reached
}

/// Item 8: SIGKILL an apply, SIGKILL its rerun before it finishes: what state
/// held after the first kill is still held after the second, and a destroy
/// after it leaves nothing behind (records, hooks, the replaced instance).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_crash_should_not_lose_what_the_first_crash_journaled() {
    use jaam_core::state::{LocalStore, StateStore};
    use std::sync::Arc;
    use std::time::Duration;

    let moto = jaam_tests::moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = jaam_tests::github::GithubFake::start().await;
    let ws = Workspace::new(&unique("doublecrash"));
    let domain = format!("{}.test", ws.stack);
    let repo = format!("acme/{}", ws.stack);
    let zone = jaam_tests::hosted_zone(&domain).await;
    // A slow Route53: every change takes 150 ms, so both runs are mid-way when killed.
    let answer: jaam_tests::Answer = Arc::new(|head: &str, _body: &str| {
        if head.contains("/rrset") {
            jaam_tests::Intercept::Delay(Duration::from_millis(150))
        } else {
            jaam_tests::Intercept::Forward
        }
    });
    let proxy = jaam_tests::InterceptProxy::start(&moto, answer).await;
    let run = |args: &[&str], aws: &str| {
        let mut command = ws.command(args);
        command
            .env("AWS_ENDPOINT_URL", aws)
            .env("GITHUB_API_URL", &github.url)
            .env("GITHUB_TOKEN", "ghp_test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    ws.write_specs(&crash_stack(&domain, &repo, "echo one", 0));
    assert!(
        run(&["apply", "--auto-approve"], &moto)
            .status()
            .unwrap()
            .success()
    );

    // New user data (the instance is replaced first, the old one deposed),
    // 20 records and 3 hooks; killed part-way.
    ws.write_specs(&crash_stack(&domain, &repo, "echo two", 20));
    let journal = ws.dir.path().join("jaam.state.json.journal");
    let apply = ["apply", "--auto-approve", "--parallelism", "2"];
    let mut first = run(&apply, &proxy.url).spawn().unwrap();
    assert!(
        kill_once_rewritten(&mut first, &journal, "\u{0}", 16).await,
        "the first apply was interrupted"
    );
    let store = LocalStore::new(ws.state());
    let after_first = store
        .load()
        .await
        .unwrap()
        .expect("state after the first kill");
    let records_known = after_first
        .resources
        .keys()
        .filter(|a| a.kind() == "record")
        .count();
    assert!(
        records_known >= 2,
        "the first run got somewhere: {records_known} records"
    );

    // The rerun is killed as soon as it has journaled anything of its own.
    let old = std::fs::read_to_string(&journal).unwrap_or_default();
    let mut second = run(&apply, &proxy.url).spawn().unwrap();
    assert!(
        kill_once_rewritten(&mut second, &journal, &old, 2).await,
        "the rerun was interrupted"
    );
    let after_second = store
        .load()
        .await
        .unwrap()
        .expect("state after the second kill");
    after_second.validate().expect("a crashed state validates");
    for (addr, resource) in &after_first.resources {
        let kept = after_second.resources.get(addr);
        assert_eq!(
            kept.map(|r| &r.id),
            Some(&resource.id),
            "`{addr}` held after the first kill is held after the second"
        );
    }
    for deposed in &after_first.deposed {
        assert!(
            after_second.deposed.contains(deposed)
                || jaam_tests::stack_instances(&ws.stack)
                    .await
                    .iter()
                    .all(|(id, _, _)| *id != deposed.resource.id),
            "the deposed instance `{}` is still known or gone",
            deposed.resource.id
        );
    }

    // A destroy after the double crash leaves nothing behind.
    assert!(
        run(&["destroy", "--auto-approve"], &moto)
            .status()
            .unwrap()
            .success()
    );
    let left: Vec<_> = jaam_tests::zone_records(&zone)
        .await
        .into_iter()
        .filter(|(_, kind, _)| kind == "A")
        .collect();
    assert!(
        left.is_empty(),
        "records nothing can see any more: {left:?}"
    );
    assert!(github.hooks(&repo).is_empty(), "{:?}", github.hooks(&repo));
    assert!(jaam_tests::stack_instances(&ws.stack).await.is_empty());
}

/// Item 1: an empty or short webhook secret is a validate error naming the
/// address (an empty `JAAM_WEBHOOK_SECRET=` no longer authenticates anything).
#[test]
fn an_empty_or_short_webhook_secret_should_be_a_validate_error() {
    let ws = Workspace::new(&unique("shortsecret"));
    ws.write_specs(
        "webhook.deploys:\n  repo: acme/blog\n  url: https://jaam.example.test/hooks/github\n  \
         secret: ${env.HOOK_SECRET}\n",
    );
    for secret in ["", "short-secret"] {
        let run = jaam_tests::Run::from(
            ws.command(&["validate"])
                .env("HOOK_SECRET", secret)
                .output()
                .unwrap(),
        );
        run.expect_code(1);
        assert!(run.stderr.contains("main.yaml:4:"), "{}", run.stderr);
        assert!(run.stderr.contains("`webhook.deploys`"), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("a webhook secret must be at least 16 bytes"),
            "{}",
            run.stderr
        );
        assert!(secret.is_empty() || !run.stderr.contains(secret));
    }
}

/// A daemon keeping one log group, for the read-side and load tests.
fn quiet_daemon(ws: &Workspace, extra: &[&str], token: Option<&str>) -> jaam_tests::daemon::Daemon {
    ws.write_specs(&format!("log_group.a:\n  name: /jaam/{}/a\n", ws.stack));
    let mut command = ws.command(&["daemon"]);
    command.args(extra);
    if let Some(token) = token {
        command.env("JAAM_DAEMON_TOKEN", token);
    }
    jaam_tests::daemon::Daemon::start(command, ws.dir.path().join("daemon.log"))
}

/// Item 3: a missing or malformed signature is refused before the body is
/// read, concurrent bodies are capped, and `/healthz` answers promptly while
/// 50 clients each send a 25 MiB unsigned body.
#[tokio::test(flavor = "multi_thread")]
async fn unsigned_bodies_should_be_refused_early_and_health_should_stay_responsive() {
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};

    jaam_tests::moto_endpoint();
    let ws = Workspace::new(&unique("load"));
    let daemon = quiet_daemon(&ws, &["--body-timeout", "20s"], None);
    let port = daemon.port;
    const SIZE: usize = 25 * 1024 * 1024;

    // No signature, a 25 MiB body announced and never sent: 401 at once.
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-github-event: push\r\n\
                 x-github-delivery: d\r\ncontent-length: {SIZE}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused before the body"
    );

    // 50 senders of 25 MiB with a well-formed but wrong signature. The first
    // ten pause after their first MiB, so the body permits are surely taken
    // when the other forty arrive.
    let signature = format!("sha256={}", "ab".repeat(32));
    let spawn = |n: usize| {
        let signature = signature.clone();
        std::thread::spawn(move || -> Option<u16> {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .ok()?;
            let head = format!(
                "POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-github-event: push\r\n\
                     x-github-delivery: load-{n}\r\nx-hub-signature-256: {signature}\r\n\
                     content-length: {SIZE}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).ok()?;
            let chunk = vec![b'{'; 1024 * 1024];
            for sent in 0..25 {
                if sent == 1 && n < 10 {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            String::from_utf8_lossy(&response)
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
        })
    };
    let mut senders: Vec<_> = (0..10).map(spawn).collect();
    std::thread::sleep(Duration::from_millis(300));
    senders.extend((10..50).map(spawn));
    let mut slowest = Duration::ZERO;
    let mut checks = 0;
    while senders.iter().any(|s| !s.is_finished()) {
        let asked = Instant::now();
        let (status, _) = jaam_tests::daemon::http(port, "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(status, 200);
        slowest = slowest.max(asked.elapsed());
        checks += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers: Vec<Option<u16>> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    assert!(checks > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz took {slowest:?} while unsigned bodies arrived"
    );
    assert!(
        answers
            .iter()
            .flatten()
            .all(|status| *status == 401 || *status == 503),
        "{answers:?}"
    );
    assert!(
        answers.contains(&Some(503)),
        "concurrent bodies are capped: {answers:?}"
    );
    let metrics = daemon.metrics();
    assert!(metrics.contains("outcome=\"busy\""), "{metrics}");
    assert_eq!(daemon.terminate(), Some(0));
}

/// Item 11: the read side. A non-loopback listener without a token is
/// refused unless `--public-read`; the token comes from the environment or a
/// file (never argv); log streams are capped and share one poller per site.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_side_should_want_a_token_beyond_loopback_and_share_log_pollers() {
    jaam_tests::moto_endpoint();
    let ws = Workspace::new(&unique("readside"));
    ws.write_specs(&format!("log_group.a:\n  name: /jaam/{}/a\n", ws.stack));

    // Beyond loopback without a token: refused, with what to do.
    let run = jaam_tests::Run::from(
        ws.command(&["daemon", "--listen", "0.0.0.0:0"])
            .env_remove("JAAM_DAEMON_TOKEN")
            .output()
            .unwrap(),
    );
    run.expect_code(1);
    assert!(run.stderr.contains("without a token"), "{}", run.stderr);
    assert!(run.stderr.contains("--public-read"), "{}", run.stderr);
    // The token is not an argument any more.
    let run = jaam_tests::Run::from(
        ws.command(&["daemon", "--read-token", "t0k3n"])
            .output()
            .unwrap(),
    );
    assert_ne!(run.code, Some(0));

    // From a file: wrong tokens of any length are refused, the right one passes.
    let file = ws.dir.path().join("token");
    std::fs::write(&file, "s3cret-read-token\n").unwrap();
    let daemon = quiet_daemon(&ws, &["--read-token-file", file.to_str().unwrap()], None);
    for wrong in [
        "",
        "s",
        "s3cret-read-toke",
        "s3cret-read-tokenX",
        "x".repeat(4096).as_str(),
    ] {
        let header = format!("Bearer {wrong}");
        let (status, _) = jaam_tests::daemon::http(
            daemon.port,
            "GET",
            "/status",
            &[("authorization", &header)],
            b"",
        )
        .unwrap();
        assert_eq!(status, 401, "{wrong:?}");
    }
    let (status, _) = jaam_tests::daemon::http(
        daemon.port,
        "GET",
        "/status",
        &[("authorization", "Bearer s3cret-read-token")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(daemon.terminate(), Some(0));
}

fn hook_spec(repo: &str, url: &str) -> String {
    format!("webhook.deploys:\n  repo: {repo}\n  url: {url}\n")
}

fn recorded_parameter(ws: &Workspace) -> String {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.state()).unwrap()).unwrap();
    state["resources"]["webhook.deploys"]["attributes"]["secret_parameter"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn parameter_value(name: &str) -> Option<String> {
    let ssm = aws_sdk_ssm::Client::new(&jaam_tests::aws_config().await);
    ssm.get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .ok()?
        .parameter()?
        .value()
        .map(str::to_owned)
}

/// Item 9: generated webhook secrets survive a replacement and an adoption
/// by URL, and a token without hook rights fails only that webhook.
#[tokio::test(flavor = "multi_thread")]
async fn generated_webhook_secrets_should_survive_replacement_and_adoption() {
    jaam_tests::moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = jaam_tests::github::GithubFake::start().await;
    let ws = Workspace::new(&unique("hooksecret"));
    let (a, b) = (
        format!("acme/{}-a", ws.stack),
        format!("acme/{}-b", ws.stack),
    );
    let url = format!("https://jaam.{}.test/hooks/github", ws.stack);

    ws.write_specs(&hook_spec(&a, &url));
    github
        .jaam(&ws, &["apply", "--auto-approve"])
        .expect_code(0);
    let first = recorded_parameter(&ws);
    assert!(parameter_value(&first).await.is_some());

    // A new repository replaces the hook (create, then delete the old one):
    // the new hook keeps a secret of its own.
    ws.write_specs(&hook_spec(&b, &url));
    github
        .jaam(&ws, &["apply", "--auto-approve"])
        .expect_code(0);
    let second = recorded_parameter(&ws);
    assert_ne!(second, first, "two hooks never share a parameter");
    assert!(
        parameter_value(&first).await.is_none(),
        "the old hook's secret went with it"
    );
    let secret = parameter_value(&second)
        .await
        .expect("the new hook's secret survives the replacement");
    assert_eq!(github.hooks(&b)[0]["config"]["secret"], secret);

    // Forget the hook from state: the next apply adopts it by its URL and
    // sets its secret again (GitHub never shows it), into a new parameter.
    std::fs::remove_file(ws.state()).unwrap();
    let run = github.jaam(&ws, &["apply", "--auto-approve"]);
    run.expect_code(0);
    assert!(run.stdout.contains("secret is set again"), "{}", run.stdout);
    assert_eq!(github.hooks(&b).len(), 1, "adopted, not created twice");
    let adopted = recorded_parameter(&ws);
    assert!(!adopted.is_empty(), "adoption records a secret parameter");
    assert_eq!(
        github.hooks(&b)[0]["config"]["secret"],
        parameter_value(&adopted).await.unwrap()
    );
    github
        .jaam(&ws, &["plan", "--detailed-exitcode"])
        .expect_code(0);

    // The token loses hook rights: the recorded hook is kept, not planned
    // again; a new hook fails naming the permission; the rest proceeds.
    github
        .repos
        .lock()
        .unwrap()
        .hook_admin_denied
        .insert(b.clone());
    github
        .jaam(&ws, &["plan", "--detailed-exitcode"])
        .expect_code(0);
    let c = format!("acme/{}-c", ws.stack);
    github
        .repos
        .lock()
        .unwrap()
        .hook_admin_denied
        .insert(c.clone());
    ws.write_specs(&format!(
        "{}webhook.other:\n  repo: {c}\n  url: {url}\nlog_group.a:\n  name: /jaam/{}/a\n",
        hook_spec(&b, &url),
        ws.stack
    ));
    let run = github.jaam(&ws, &["apply", "--auto-approve"]);
    run.expect_code(1);
    assert!(run.stderr.contains("admin:repo_hook"), "{}", run.stderr);
    assert!(run.stderr.contains("webhook.other"), "{}", run.stderr);
    let state = std::fs::read_to_string(ws.state()).unwrap();
    assert!(
        state.contains("log_group.a"),
        "the rest of the plan was applied"
    );
    assert!(state.contains("webhook.deploys"));
    // Clean up with the rights back.
    github.repos.lock().unwrap().hook_admin_denied.clear();
    ws.write_specs(&hook_spec(&b, &url));
    github
        .jaam(&ws, &["destroy", "--auto-approve"])
        .expect_code(0);
    assert!(parameter_value(&adopted).await.is_none());
}

/// Item 2: the head a reconcile deploys is read with one conditional
/// request; an unchanged branch is a `304` (free of GitHub's rate limit).
#[tokio::test(flavor = "multi_thread")]
async fn branch_heads_should_be_read_with_conditional_requests() {
    let github = jaam_tests::github::GithubFake::start().await;
    let api = jaam_core::providers::github::Api::new(&github.url, Some("ghp_test".into()));
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let set = |sha: &str| {
        github
            .repos
            .lock()
            .unwrap()
            .branches
            .insert(("acme/blog".into(), "main".into()), sha.to_owned());
    };
    set(&a);
    assert_eq!(api.branch_head("acme/blog", "main").await.unwrap(), a);
    assert_eq!(api.branch_head("acme/blog", "main").await.unwrap(), a);
    assert_eq!(
        github.repos.lock().unwrap().not_modified,
        1,
        "the second read was a 304"
    );
    set(&b);
    assert_eq!(api.branch_head("acme/blog", "main").await.unwrap(), b);
    assert_eq!(github.repos.lock().unwrap().not_modified, 1);
}
