//! Issue 14: one daemon keeps a directory of stacks (`--stacks DIR`), builds
//! of different stacks run side by side (`--workers`), a stack that keeps
//! failing never holds the others up, deliveries are routed by repository
//! and branch to the stack that deploys them, and stacks come and go with
//! their directories.
//!
//! The builds run on SSM: a stand-in in front of moto keeps every command
//! `InProgress` for [`BUILD`] after it is first asked about (moto runs
//! nothing), and fails the commands of one chosen instance when told to.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jaam_tests::daemon::{Daemon, deliveries};
use jaam_tests::github::GithubFake;
use jaam_tests::{hosted_zone, moto_endpoint, unique};

/// How long each emulated build takes.
const BUILD: Duration = Duration::from_secs(5);
/// A short emulated build, for the fleet of two daemons.
const SHORT_BUILD: Duration = Duration::from_secs(1);

fn sha() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].repeat(2)
}

/// A fleet directory: one stack per site, each with its own repository
/// and webhook secret.
struct Fleet {
    dir: tempfile::TempDir,
    zone: String,
    profile: String,
}

impl Fleet {
    async fn new() -> Self {
        let zone = format!("{}.test", unique("fleet"));
        hosted_zone(&zone).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("stacks")).unwrap();
        Self {
            dir,
            zone,
            profile: jaam_tests::ssm_profile().await,
        }
    }

    fn stacks(&self) -> PathBuf {
        self.dir.path().join("stacks")
    }

    fn state(&self, stack: &str) -> PathBuf {
        self.dir.path().join("state").join(format!("{stack}.json"))
    }

    /// Stack `stack` with one site of the same name, deploying `repo`.
    fn add_site(&self, stack: &str, repo: &str, secret_env: &str) {
        let dir = self.stacks().join(stack);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("site.yaml"),
            format!(
                "site.{stack}:\n  repo: {repo}\n  domain: {stack}.{zone}\n  zone: {zone}\n  https: false\n  \
                 iam_instance_profile: {profile}\n  webhook_url: https://jaam.{zone}/hooks/github\n  \
                 webhook_secret: ${{env.{secret_env}}}\n",
                zone = self.zone,
                profile = self.profile,
            ),
        )
        .unwrap();
    }

    /// The id of stack `stack`'s instance, per its state.
    fn instance(&self, stack: &str) -> String {
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.state(stack)).unwrap()).unwrap();
        state["resources"][format!("site.{stack}.instance")]["id"]
            .as_str()
            .expect("the instance in state")
            .to_owned()
    }

    fn daemon(&self, github: &GithubFake, aws: &str, extra: &[&str]) -> Daemon {
        let state = self.dir.path().join("state/{stack}.json");
        self.daemon_on(&state.to_string_lossy(), github, aws, extra, "daemon.log")
    }

    /// A daemon of the fleet on state `state` (a template).
    fn daemon_on(
        &self,
        state: &str,
        github: &GithubFake,
        aws: &str,
        extra: &[&str],
        log: &str,
    ) -> Daemon {
        let mut command = Command::new(jaam_tests::jaam_binary());
        command
            .current_dir(self.dir.path())
            .arg("daemon")
            .arg("--stacks")
            .arg(self.stacks())
            .arg("--state")
            .arg(state)
            .args(["--resync", "10m", "--debounce", "200ms"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("AWS_ENDPOINT_URL", aws)
            .env("GITHUB_TOKEN", "ghp_test")
            .env("GITHUB_API_URL", &github.url)
            .env("A_SECRET", "secret-of-stack-a-webhook")
            .env("B_SECRET", "secret-of-stack-b-webhook");
        Daemon::start(command, self.dir.path().join(log))
    }

    /// `jaam destroy` of stack `stack`.
    fn destroy(&self, stack: &str, github: &GithubFake) {
        self.destroy_on(stack, &self.state(stack).to_string_lossy(), github);
    }

    /// `jaam destroy` of stack `stack` whose state is at `state`.
    fn destroy_on(&self, stack: &str, state: &str, github: &GithubFake) {
        let output = Command::new(jaam_tests::jaam_binary())
            .args(["destroy", "--auto-approve", "--specs"])
            .arg(self.stacks().join(stack))
            .arg("--state")
            .arg(state)
            .args(["--stack", stack])
            .env("NO_COLOR", "1")
            .env("GITHUB_TOKEN", "ghp_test")
            .env("GITHUB_API_URL", &github.url)
            .env("A_SECRET", "secret-of-stack-a-webhook")
            .env("B_SECRET", "secret-of-stack-b-webhook")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "destroy {stack}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn set_head(github: &GithubFake, repo: &str, sha: &str) {
    github.set_head(repo, "main", sha);
}

fn serving(daemon: &Daemon, stack: &str) -> String {
    daemon.stack(stack)["revisions"][stack]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Delivers a push of `sha` to `repo`, signed with `secret`.
fn push(daemon: &Daemon, secret: &str, repo: &str, sha: &str) -> (u16, String) {
    let push = deliveries(secret, repo, "main", &[sha.to_owned()], None);
    daemon.deliver(&push[1])
}

/// The status code of a GET of `path` that may answer a stream (only the
/// status line is read).
fn stream_status(port: u16, path: &str) -> u16 {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_default()
}

/// Waits until every stack in `want` serves its revision; how long it took.
fn until_served(daemon: &Daemon, want: &[(&str, &str)], deadline: Duration) -> Duration {
    let started = Instant::now();
    daemon.wait_until("the pushed revisions", deadline, |d| {
        want.iter().all(|(stack, sha)| serving(d, stack) == *sha)
    });
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn stacks_should_build_side_by_side_and_a_failing_stack_should_hold_up_no_other() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let (builds, proxy) = jaam_tests::builds::start(&moto, BUILD).await;
    let github = GithubFake::start().await;
    let fleet = Fleet::new().await;
    let (a, b) = (unique("fleeta"), unique("fleetb"));
    let (repo_a, repo_b) = (format!("acme/{a}"), format!("acme/{b}"));
    fleet.add_site(&a, &repo_a, "A_SECRET");
    fleet.add_site(&b, &repo_b, "B_SECRET");
    let (a1, b1) = (sha(), sha());
    set_head(&github, &repo_a, &a1);
    set_head(&github, &repo_b, &b1);
    let daemon = fleet.daemon(&github, &proxy.url, &["--workers", "2"]);
    until_served(&daemon, &[(&a, &a1), (&b, &b1)], Duration::from_secs(120));
    assert!(
        daemon.metrics().contains("jaam_stacks{state=\"kept\"} 2"),
        "{}",
        daemon.metrics()
    );

    // The read side covers every stack: each site's log stream and page.
    for stack in [&a, &b] {
        assert_eq!(
            stream_status(daemon.port, &format!("/sites/{stack}/logs")),
            200,
            "{stack}'s log stream"
        );
        let (status, page) =
            jaam_tests::daemon::http(daemon.port, "GET", &format!("/sites/{stack}"), &[], b"")
                .unwrap();
        assert_eq!(status, 200, "{stack}'s page");
        assert!(page.contains(&format!("acme/{stack}")), "{page}");
    }
    assert_eq!(stream_status(daemon.port, "/sites/nobody/logs"), 404);
    let (_, index) = jaam_tests::daemon::http(daemon.port, "GET", "/", &[], b"").unwrap();
    assert!(
        index.contains(&a) && index.contains(&b) && index.contains("2 stacks"),
        "{index}"
    );

    // A delivery is routed by its repository: A's secret cannot deploy B.
    let (forged, _) = push(&daemon, "secret-of-stack-a-webhook", &repo_b, &sha());
    assert_eq!(forged, 401, "one stack's secret signs nothing of another's");

    // Pushes to both stacks at once: the two 5 s builds run side by side.
    builds.slow.store(true, Ordering::SeqCst);
    let (a2, b2) = (sha(), sha());
    set_head(&github, &repo_a, &a2);
    set_head(&github, &repo_b, &b2);
    assert_eq!(
        push(&daemon, "secret-of-stack-a-webhook", &repo_a, &a2).0,
        202
    );
    assert_eq!(
        push(&daemon, "secret-of-stack-b-webhook", &repo_b, &b2).0,
        202
    );
    let took = until_served(&daemon, &[(&a, &a2), (&b, &b2)], Duration::from_secs(60));
    eprintln!("two 5 s builds of two stacks, pushed at once: both served after {took:?}");
    assert!(
        took >= BUILD && took < BUILD.mul_f64(1.5),
        "both served {took:?} after the pushes: within 1.5 × {BUILD:?}, not one after the other"
    );

    // Stack A now fails on every deploy; B's deploys are not held up.
    *builds.failing.lock().unwrap() = Some(fleet.instance(&a));
    let (a3, b3) = (sha(), sha());
    set_head(&github, &repo_a, &a3);
    set_head(&github, &repo_b, &b3);
    assert_eq!(
        push(&daemon, "secret-of-stack-a-webhook", &repo_a, &a3).0,
        202
    );
    assert_eq!(
        push(&daemon, "secret-of-stack-b-webhook", &repo_b, &b3).0,
        202
    );
    let took = until_served(&daemon, &[(&b, &b3)], Duration::from_secs(60));
    assert!(
        took < BUILD.mul_f64(1.5),
        "B served {took:?} after its push while A failed"
    );
    daemon.wait_until("A's retry", Duration::from_secs(60), |d| {
        d.stack(&a)["reasons"] == serde_json::json!(["push", "retry"])
    });
    // A keeps retrying; B's next push still goes straight through.
    let b4 = sha();
    set_head(&github, &repo_b, &b4);
    assert_eq!(
        push(&daemon, "secret-of-stack-b-webhook", &repo_b, &b4).0,
        202
    );
    let took = until_served(&daemon, &[(&b, &b4)], Duration::from_secs(60));
    assert!(
        took < BUILD.mul_f64(1.5),
        "B served {took:?} after its push while A retried"
    );
    assert_eq!(
        serving(&daemon, &a),
        a2,
        "A still serves its last good build"
    );
    assert_eq!(daemon.stack(&a)["result"], "failed");

    // Fixed, and pushed again (after `--max-failures` the broken revision
    // is parked until a new push): A deploys.
    *builds.failing.lock().unwrap() = None;
    builds.slow.store(false, Ordering::SeqCst);
    let a4 = sha();
    set_head(&github, &repo_a, &a4);
    assert_eq!(
        push(&daemon, "secret-of-stack-a-webhook", &repo_a, &a4).0,
        202
    );
    until_served(&daemon, &[(&a, &a4)], Duration::from_secs(120));
    assert_eq!(daemon.terminate(), Some(0));
    fleet.destroy(&a, &github);
    fleet.destroy(&b, &github);
}

/// Stacks come and go with their directories; one whose specs do not load
/// is listed with its error and the others go on.
#[tokio::test(flavor = "multi_thread")]
async fn stacks_should_appear_and_disappear_with_their_directories() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = GithubFake::start().await;
    let fleet = Fleet::new().await;
    let write = |stack: &str, text: &str| {
        let dir = fleet.stacks().join(stack);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("logs.yaml"), text).unwrap();
    };
    let group = |stack: &str| format!("log_group.app:\n  name: /jaam/{stack}/app\n");
    let (one, two, bad) = (unique("fleetone"), unique("fleettwo"), unique("fleetbad"));
    write(&one, &group(&one));
    let daemon = fleet.daemon(&github, &moto, &[]);
    daemon.wait_until("the first stack applied", Duration::from_secs(60), |d| {
        d.stack(&one)["result"] == "applied"
    });

    write(&two, &group(&two));
    write(
        &bad,
        "log_group.app:\n  name: /jaam/bad\n  retention_days: lots\n",
    );
    daemon.wait_until("the new stack applied", Duration::from_secs(60), |d| {
        d.stack(&two)["result"] == "applied"
    });
    daemon.wait_until("the broken stack listed", Duration::from_secs(30), |d| {
        d.stack(&bad)["result"] == "specs_invalid"
    });
    let error = daemon.stack(&bad)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("logs.yaml:3:"),
        "the error names the file and line: {error}"
    );
    assert!(fleet.state(&two).exists(), "each stack has its own state");

    // The broken stack fixed: kept. A stack's directory removed: no longer
    // kept, and nothing of it destroyed.
    write(&bad, &group(&bad));
    daemon.wait_until("the fixed stack applied", Duration::from_secs(60), |d| {
        d.stack(&bad)["result"] == "applied"
    });
    let saved = fleet.dir.path().join("kept-two");
    std::fs::rename(fleet.stacks().join(&two), &saved).unwrap();
    daemon.wait_until("the removed stack dropped", Duration::from_secs(30), |d| {
        d.stack(&two).is_null()
    });
    let logs = aws_sdk_cloudwatchlogs::Client::new(&jaam_tests::aws_config().await);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/jaam/{two}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups().len(), 1, "its log group stays");
    assert_eq!(daemon.terminate(), Some(0));

    std::fs::rename(&saved, fleet.stacks().join(&two)).unwrap();
    for stack in [&one, &two, &bad] {
        fleet.destroy(stack, &github);
    }
}

/// Issue 14: a stack whose state is locked elsewhere (a CLI's apply,
/// another daemon's reconcile) is handed back to the queue and tried again,
/// not waited for inside a worker: with one worker, another stack's change
/// still goes through meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_stack_locked_elsewhere_should_hold_up_no_worker() {
    use jaam_core::state::StateStore as _;
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = GithubFake::start().await;
    let fleet = Fleet::new().await;
    let write = |stack: &str, groups: &[&str]| {
        let dir = fleet.stacks().join(stack);
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = groups
            .iter()
            .map(|g| format!("log_group.{g}:\n  name: /jaam/{stack}/{g}\n"))
            .collect();
        std::fs::write(dir.join("logs.yaml"), text).unwrap();
    };
    let has = |stack: &str, group: &str| {
        std::fs::read_to_string(fleet.state(stack))
            .is_ok_and(|state| state.contains(&format!("log_group.{group}")))
    };
    let (locked, free) = (unique("fleetlocked"), unique("fleetfree"));
    write(&locked, &["app"]);
    write(&free, &["app"]);
    let daemon = fleet.daemon(&github, &moto, &["--workers", "1"]);
    daemon.wait_until("both stacks applied", Duration::from_secs(60), |_| {
        has(&locked, "app") && has(&free, "app")
    });

    // A CLI holds the first stack's lock; both stacks' specs change, the
    // locked one first. (The daemon may still hold the lock a moment after
    // its state shows the first apply: the test waits for it, as a CLI
    // would.)
    let store = jaam_core::state::LocalStore::new(fleet.state(&locked));
    let guard = store
        .lock(
            jaam_core::state::lock::LockInfo::current("jaam apply (held by the test)"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    write(&locked, &["app", "more"]);
    std::thread::sleep(Duration::from_millis(300));
    write(&free, &["app", "more"]);
    let edited = Instant::now();
    daemon.wait_until("the free stack's change", Duration::from_secs(20), |_| {
        has(&free, "more")
    });
    let took = edited.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the free stack waited {took:?} (--lock-wait is 60 s)"
    );
    assert!(!has(&locked, "more"), "the locked stack was not applied");
    assert!(
        daemon
            .logs()
            .contains("locked elsewhere; trying again shortly"),
        "{}",
        daemon.logs()
    );
    guard.release().await.unwrap();
    daemon.wait_until("the locked stack's change", Duration::from_secs(30), |_| {
        has(&locked, "more")
    });
    assert_eq!(daemon.terminate(), Some(0));
    fleet.destroy(&locked, &github);
    fleet.destroy(&free, &github);
}

/// The revision stack `stack`'s instance has in its S3 state.
async fn s3_revision(bucket: &str, stack: &str) -> String {
    use jaam_core::state::StateStore as _;
    let store = jaam_core::state::s3::S3Store::new(
        &jaam_tests::aws_config().await,
        bucket,
        format!("jaam/{stack}.json"),
        Duration::from_secs(5),
    );
    let Ok(Some(state)) = store.load().await else {
        return String::new();
    };
    let addr: jaam_core::ResourceAddr = format!("site.{stack}.instance").parse().unwrap();
    state
        .resources
        .get(&addr)
        .and_then(|r| r.attributes.get("revision")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until every stack's S3 state has its revision.
async fn until_s3_serves(bucket: &str, want: &[(String, String)], deadline: Duration) {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let mut missing = Vec::new();
        for (stack, sha) in want {
            if s3_revision(bucket, stack).await != *sha {
                missing.push(stack.clone());
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "stacks not on their revision after {deadline:?}: {missing:?}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Issue 14, item 5: two daemons behind one webhook URL share twenty
/// stacks through S3. Pushes split across both end with every stack on its
/// last pushed revision, one deploy command per (stack, revision), never
/// two at once on one stack; a daemon killed mid-deploy has its deploy
/// completed by the other once the lease lapses.
#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_on_s3_state_should_share_the_stacks_and_take_over_a_killed_one() {
    const STACKS: usize = 20;
    const ROUNDS: usize = 5;
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let (builds, proxy) = jaam_tests::builds::start(&moto, SHORT_BUILD).await;
    let github = GithubFake::start().await;
    let fleet = Fleet::new().await;
    let bucket = jaam_tests::bucket(&unique("fleets3")).await;
    let state = format!("s3://{bucket}/jaam/{{stack}}.json");
    let stacks: Vec<String> = (0..STACKS)
        .map(|i| unique(&format!("s3fleet{i}")))
        .collect();
    let mut heads = Vec::new();
    for stack in &stacks {
        let repo = format!("acme/{stack}");
        fleet.add_site(stack, &repo, "A_SECRET");
        let head = sha();
        set_head(&github, &repo, &head);
        heads.push((stack.clone(), head));
    }
    let extra = ["--workers", "4", "--lease-ttl", "5s", "--lock-wait", "120s"];
    let daemons = [
        fleet.daemon_on(&state, &github, &proxy.url, &extra, "daemon-1.log"),
        fleet.daemon_on(&state, &github, &proxy.url, &extra, "daemon-2.log"),
    ];
    until_s3_serves(&bucket, &heads, Duration::from_secs(300)).await;

    // Five rounds of a push to every stack, alternately to each daemon.
    builds.slow.store(true, Ordering::SeqCst);
    let pushes: Vec<Vec<String>> = stacks
        .iter()
        .map(|_| (0..ROUNDS).map(|_| sha()).collect())
        .collect();
    let signed: Vec<_> = stacks
        .iter()
        .zip(&pushes)
        .map(|(stack, shas)| {
            deliveries(
                "secret-of-stack-a-webhook",
                &format!("acme/{stack}"),
                "main",
                shas,
                None,
            )
        })
        .collect();
    for round in 0..ROUNDS {
        for (i, stack) in stacks.iter().enumerate() {
            set_head(&github, &format!("acme/{stack}"), &pushes[i][round]);
            let daemon = &daemons[(i + round) % 2];
            let (status, body) = daemon.deliver(&signed[i][round + 1]);
            assert_eq!(status, 202, "{body}");
        }
    }
    let last: Vec<(String, String)> = stacks
        .iter()
        .zip(&pushes)
        .map(|(stack, shas)| (stack.clone(), shas[ROUNDS - 1].clone()))
        .collect();
    until_s3_serves(&bucket, &last, Duration::from_secs(300)).await;
    let instances: Vec<String> = {
        let mut out = Vec::new();
        for stack in &stacks {
            out.push(instance_on_s3(&bucket, stack).await);
        }
        out
    };
    for (i, instance) in instances.iter().enumerate() {
        for (round, revision) in pushes[i].iter().enumerate() {
            let sent = builds.deploys_of(instance, revision);
            assert!(
                sent <= 1,
                "{} got {sent} deploys of push {round}",
                stacks[i]
            );
        }
        assert_eq!(
            builds.deploys_of(instance, &pushes[i][ROUNDS - 1]),
            1,
            "{}: its last push deployed once",
            stacks[i]
        );
    }
    assert!(
        builds.overlaps.lock().unwrap().is_empty(),
        "two deploys ran at once on one stack: {:?}",
        builds.overlaps.lock().unwrap()
    );
    let deployed: usize = builds.deploys.lock().unwrap().values().sum();
    eprintln!(
        "{} pushes to {STACKS} stacks over two daemons: {deployed} deploy commands",
        STACKS * ROUNDS
    );

    // Daemon 1 is killed mid-deploy: daemon 2 finishes it once the lease lapses.
    *builds.build.lock().unwrap() = Duration::from_secs(4);
    let [first, second] = daemons;
    let (stack, instance) = (&stacks[0], &instances[0]);
    let revision = sha();
    set_head(&github, &format!("acme/{stack}"), &revision);
    let push = deliveries(
        "secret-of-stack-a-webhook",
        &format!("acme/{stack}"),
        "main",
        std::slice::from_ref(&revision),
        None,
    );
    assert_eq!(first.deliver(&push[1]).0, 202);
    let started = Instant::now();
    while builds.deploys_of(instance, &revision) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no deploy sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    until_s3_serves(
        &bucket,
        &[(stack.clone(), revision.clone())],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        second.logs().contains("taking the stack over"),
        "{}",
        second.logs()
    );
    assert_eq!(
        builds.deploys_of(instance, &revision),
        2,
        "sent again by the survivor"
    );
    assert_eq!(second.terminate(), Some(0));

    std::thread::scope(|scope| {
        for chunk in stacks.chunks(5) {
            let (fleet, github, state) = (&fleet, &github, &state);
            scope.spawn(move || {
                for stack in chunk {
                    fleet.destroy_on(stack, &state.replace("{stack}", stack), github);
                }
            });
        }
    });
}

/// The id of stack `stack`'s instance in its S3 state.
async fn instance_on_s3(bucket: &str, stack: &str) -> String {
    use jaam_core::state::StateStore as _;
    let store = jaam_core::state::s3::S3Store::new(
        &jaam_tests::aws_config().await,
        bucket,
        format!("jaam/{stack}.json"),
        Duration::from_secs(5),
    );
    let state = store.load().await.unwrap().expect("state");
    let addr: jaam_core::ResourceAddr = format!("site.{stack}.instance").parse().unwrap();
    state.resources[&addr].id.clone()
}
