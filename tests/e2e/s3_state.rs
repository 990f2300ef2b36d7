//! State on S3 (moto): the conformance suite, the lease's expiry and fencing,
//! and two `jaam apply` at once on one S3 state.

use std::time::Duration;

use jaam_core::state::lock::LockInfo;
use jaam_core::state::s3::S3Store;
use jaam_core::state::{Error, State, StateStore};
use jaam_tests::{Workspace, aws_config, bucket, moto_endpoint, unique};

#[tokio::test]
async fn s3_store_should_pass_conformance() {
    let config = aws_config().await;
    let bucket = bucket(&unique("conformance")).await;
    let counter = std::sync::atomic::AtomicUsize::new(0);
    jaam_core::state::testing::conformance(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        S3Store::new(
            &config,
            &bucket,
            format!("stacks/s{n}.json"),
            Duration::from_secs(30),
        )
    })
    .await;
}

#[tokio::test]
async fn an_expired_lease_should_be_taken_over_and_the_stale_holder_fenced() {
    let config = aws_config().await;
    let bucket = bucket(&unique("fence")).await;
    let ttl = Duration::from_secs(1);
    let old = S3Store::new(&config, &bucket, "stack.json", ttl);
    let new = S3Store::new(&config, &bucket, "stack.json", ttl);
    let mut state = State::new("fence");
    state.serial = 1;
    old.persist(&state).await.unwrap();

    // The old holder takes the lease, reads state, then stalls (its heartbeat stops).
    let guard = old
        .lock(LockInfo::current("jaam apply (old)"), Duration::ZERO)
        .await
        .unwrap();
    let stale = old.load().await.unwrap().unwrap();
    drop(guard);

    // The new holder waits for the lease to lapse, takes it over and fences.
    let error = new
        .lock(
            LockInfo::current("jaam apply (new)"),
            Duration::from_millis(200),
        )
        .await
        .err()
        .expect("still held");
    assert!(
        matches!(&error, Error::Locked { holder, .. } if holder.command == "jaam apply (old)"),
        "{error}"
    );
    let taken = new
        .lock(
            LockInfo::current("jaam apply (new)"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut current = new.load().await.unwrap().unwrap();
    assert_eq!(
        current.lease_generation,
        Some(2),
        "the snapshot carries the new generation"
    );
    assert_eq!(
        current.serial, 1,
        "fencing keeps the serial: saved plans stay valid"
    );

    // The stalled holder wakes up and writes: refused, nothing lost.
    let mut late = stale.clone();
    late.serial = 2;
    late.resources.clear();
    late.stack = "written by the stale holder".into();
    let refused = old.persist(&late).await.unwrap_err();
    assert!(
        matches!(refused, Error::Conflict { .. } | Error::Fenced { .. }),
        "{refused}"
    );
    assert_eq!(new.load().await.unwrap().unwrap().stack, "fence");

    current.serial = 2;
    new.persist(&current).await.unwrap();
    taken.release().await.unwrap();
}

#[tokio::test]
async fn force_unlock_should_break_a_lease_and_name_what_it_broke() {
    let config = aws_config().await;
    let bucket = bucket(&unique("unlock")).await;
    let holder = S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(300));
    let other = S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(300));
    let info = LockInfo::current("jaam daemon");
    let guard = holder.lock(info.clone(), Duration::ZERO).await.unwrap();
    assert!(
        other
            .lock(LockInfo::current("jaam apply"), Duration::ZERO)
            .await
            .is_err()
    );
    let broken = other.force_unlock(info.id).await.unwrap();
    assert_eq!(broken.command, "jaam daemon");
    let taken = other
        .lock(LockInfo::current("jaam apply"), Duration::ZERO)
        .await
        .unwrap();
    drop(guard);
    taken.release().await.unwrap();
}

#[tokio::test]
async fn two_applies_on_one_s3_state_should_not_lose_an_update() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let bucket = bucket(&unique("applies")).await;
    let url = format!("s3://{bucket}/demo/jaam.state.json");
    let ws = Workspace::new(&unique("s3apply"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    let specs: String = (0..150)
        .map(|n| format!("log_group.g{n}:\n  name: {prefix}g{n}\n"))
        .collect();
    ws.write_specs(&specs);
    let with_s3 = |args: &[&str]| {
        let mut command = ws.command(args);
        command.arg("--state").arg(&url);
        command
    };
    let mut first = with_s3(&["apply", "--auto-approve", "--parallelism", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first holds the lease (its journal has started).
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws_config().await)
            .force_path_style(true)
            .build(),
    );
    let wait = jaam_core::backoff::Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
        deadline: Duration::from_secs(60),
    };
    jaam_core::backoff::poll(wait, || {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let listed = s3
                .list_objects_v2()
                .bucket(&bucket)
                .prefix("demo/jaam.state.json.journal/")
                .send()
                .await
                .unwrap();
            Ok::<_, ()>((listed.key_count().unwrap_or(0) > 1).then_some(()))
        }
    })
    .await
    .expect("the first apply starts journaling");
    let second = jaam_tests::Run::from(with_s3(&["apply", "--auto-approve"]).output().unwrap());
    second.expect_code(1);
    assert!(
        second
            .stderr
            .contains("state is locked by `jaam apply` (pid"),
        "{}",
        second.stderr
    );
    // Issue 11, item 13: the hint tells the truth about leases.
    assert!(
        second.stderr.contains("its lease lapses by itself")
            && !second.stderr.contains("released automatically"),
        "{}",
        second.stderr
    );
    let status = first.wait().unwrap();
    assert!(status.success());
    let plan = jaam_tests::Run::from(with_s3(&["plan", "--detailed-exitcode"]).output().unwrap());
    plan.expect_code(0);
    let state = S3Store::new(
        &aws_config().await,
        &bucket,
        "demo/jaam.state.json",
        Duration::from_secs(30),
    );
    assert_eq!(state.load().await.unwrap().unwrap().resources.len(), 150);
}

/// `jaam` with `--state` pointing at S3 (the last `--state` wins).
fn on_s3(ws: &Workspace, url: &str, args: &[&str]) -> std::process::Command {
    let mut command = ws.command(args);
    command.arg("--state").arg(url);
    command
}

async fn journal_objects(bucket: &str, key: &str) -> i32 {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws_config().await)
            .force_path_style(true)
            .build(),
    );
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{key}.journal/"))
        .send()
        .await
        .unwrap();
    listed.key_count().unwrap_or(0)
}

#[tokio::test]
async fn a_stopped_holder_should_be_taken_over_and_its_late_writes_refused() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let bucket = bucket(&unique("stop")).await;
    let url = format!("s3://{bucket}/jaam.state.json");
    let ws = Workspace::new(&unique("s3stop"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    ws.write_specs(
        &(0..120)
            .map(|n| format!("log_group.g{n}:\n  name: {prefix}g{n}\n"))
            .collect::<String>(),
    );
    let first = on_s3(
        &ws,
        &url,
        &[
            "apply",
            "--auto-approve",
            "--parallelism",
            "1",
            "--lease-ttl",
            "2s",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let wait = jaam_core::backoff::Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        deadline: Duration::from_secs(60),
    };
    jaam_core::backoff::poll(wait, || {
        let bucket = bucket.clone();
        async move { Ok::<_, ()>((journal_objects(&bucket, "jaam.state.json").await > 5).then_some(())) }
    })
    .await
    .expect("the first apply is under way");
    // Stall the holder: it keeps its lease object but stops renewing it.
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &first.id().to_string()])
            .status()
            .unwrap()
            .success()
    );

    let second = jaam_tests::Run::from(
        on_s3(
            &ws,
            &url,
            &[
                "apply",
                "--auto-approve",
                "--lease-ttl",
                "2s",
                "--lock-timeout",
                "60s",
            ],
        )
        .output()
        .unwrap(),
    );
    second.expect_code(0);

    // The stalled holder resumes: every write it tries is refused.
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &first.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the fenced holder must fail:\n{stderr}"
    );
    assert!(
        stderr.contains("taken over")
            || stderr.contains("state changed underneath you")
            || stderr.contains("journal write failed"),
        "{stderr}"
    );

    // No lost update: state holds all 120 groups and matches the cloud.
    let state = jaam_core::state::s3::S3Store::new(
        &aws_config().await,
        &bucket,
        "jaam.state.json",
        Duration::from_secs(30),
    );
    let loaded = state.load().await.unwrap().unwrap();
    loaded.validate().unwrap();
    assert_eq!(loaded.resources.len(), 120);
    assert_eq!(
        jaam_tests::log_groups(&jaam_tests::logs_client().await, &prefix)
            .await
            .len(),
        120
    );
    jaam_tests::Run::from(
        on_s3(&ws, &url, &["plan", "--detailed-exitcode"])
            .output()
            .unwrap(),
    )
    .expect_code(0);
}

#[tokio::test]
async fn a_saved_plan_should_be_refused_when_s3_state_changed() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let bucket = bucket(&unique("stale")).await;
    let url = format!("s3://{bucket}/jaam.state.json");
    let ws = Workspace::new(&unique("s3stale"));
    let name = format!("/jaam-test/{}/", ws.stack);
    ws.write_specs(&format!("log_group.a:\n  name: {name}a\n"));
    jaam_tests::Run::from(
        on_s3(&ws, &url, &["plan", "--out", "plan.json"])
            .output()
            .unwrap(),
    )
    .expect_code(0);
    jaam_tests::Run::from(
        on_s3(&ws, &url, &["apply", "--auto-approve"])
            .output()
            .unwrap(),
    )
    .expect_code(0);
    let run = jaam_tests::Run::from(on_s3(&ws, &url, &["apply", "plan.json"]).output().unwrap());
    run.expect_code(1);
    assert!(run.stderr.contains("plan is stale"), "{}", run.stderr);
}

#[tokio::test]
async fn killed_writers_should_never_leave_s3_state_unparsable() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let bucket = bucket(&unique("kills")).await;
    let url = format!("s3://{bucket}/jaam.state.json");
    let ws = Workspace::new(&unique("s3kill"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    ws.write_specs(
        &(0..40)
            .map(|n| format!("log_group.g{n}:\n  name: {prefix}g{n}\n"))
            .collect::<String>(),
    );
    let store = jaam_core::state::s3::S3Store::new(
        &aws_config().await,
        &bucket,
        "jaam.state.json",
        Duration::from_secs(30),
    );
    for trial in 0..5 {
        let destroying = trial % 2 == 1;
        let args: &[&str] = if destroying {
            &["destroy", "--auto-approve", "--lease-ttl", "1s"]
        } else {
            &["apply", "--auto-approve", "--lease-ttl", "1s"]
        };
        let mut child = on_s3(&ws, &url, args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let objects = rand::Rng::random_range(&mut rand::rng(), 2..30);
        let wait = jaam_core::backoff::Backoff {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(20),
            deadline: Duration::from_secs(60),
        };
        let _ = jaam_core::backoff::poll(wait, || {
            let bucket = bucket.clone();
            let done = child.try_wait().ok().flatten().is_some();
            async move {
                Ok::<_, ()>(
                    (done || journal_objects(&bucket, "jaam.state.json").await > objects)
                        .then_some(()),
                )
            }
        })
        .await;
        child.kill().ok();
        child.wait().unwrap();
        if let Some(state) = store
            .load()
            .await
            .unwrap_or_else(|e| panic!("trial {trial}: state unparsable: {e}"))
        {
            state.validate().unwrap();
        }
        // The killed holder's lease lapses after 1 s; the rerun waits for it.
        let rerun = jaam_tests::Run::from(
            on_s3(
                &ws,
                &url,
                &[args[0], "--auto-approve", "--lock-timeout", "30s"],
            )
            .output()
            .unwrap(),
        );
        rerun.expect_code(0);
        let found = jaam_tests::log_groups(&jaam_tests::logs_client().await, &prefix)
            .await
            .len();
        assert_eq!(found, if destroying { 0 } else { 40 }, "trial {trial}");
    }
}

/// Issue 11, item 13: whoever loses the race for a lease is told who won —
/// never itself, never an earlier holder that has exited — and the id it is
/// told is the live lease's, which `force-unlock` accepts.
#[tokio::test]
async fn a_refused_lock_should_name_the_live_lease_holder() {
    let config = aws_config().await;
    let bucket = bucket(&unique("race")).await;
    for round in 0..2 {
        let stores: Vec<S3Store> = (0..8)
            .map(|_| S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(300)))
            .collect();
        let holders: Vec<LockInfo> = (0..8)
            .map(|n| LockInfo::current(format!("jaam apply #{n} (round {round})")))
            .collect();
        let attempts = stores
            .iter()
            .zip(&holders)
            .map(|(store, holder)| store.lock(holder.clone(), Duration::ZERO));
        let results = futures::future::join_all(attempts).await;
        let mut guards = Vec::new();
        let mut refused = Vec::new();
        for (result, holder) in results.into_iter().zip(&holders) {
            match result {
                Ok(guard) => guards.push((guard, holder.clone())),
                Err(Error::Locked {
                    holder: named,
                    lapses,
                }) => {
                    assert!(lapses.is_some(), "an S3 lease says when it lapses");
                    refused.push((holder.clone(), named));
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(guards.len(), 1, "exactly one wins round {round}");
        let winner = guards[0].1.clone();
        assert_eq!(refused.len(), 7);
        for (me, named) in &refused {
            assert_ne!(
                named.id, me.id,
                "a refused process is never told it holds the lock"
            );
            assert_eq!(
                named.id, winner.id,
                "round {round}: `{}` was told {named}, the live holder is {winner}",
                me.command
            );
        }
        // The id given is the one force-unlock takes.
        let breaker = S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(300));
        assert!(matches!(
            breaker.force_unlock(uuid::Uuid::new_v4()).await,
            Err(Error::NotTheLease { .. })
        ));
        let broken = breaker.force_unlock(refused[0].1.id).await.unwrap();
        assert_eq!(broken.id, winner.id);
        // Round 1 races over the released (lapsed) lease of round 0's winner.
        let (guard, _) = guards.pop().unwrap();
        guard.release().await.unwrap();
    }
}

/// Issue 11, item 13: `force-unlock` on a lapsed lease says the state is not
/// locked (and whose lease lapsed when), not "locked by" an exited process.
#[tokio::test]
async fn force_unlock_of_a_lapsed_lease_should_say_it_is_not_locked() {
    let config = aws_config().await;
    let bucket = bucket(&unique("lapsed")).await;
    let store = S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(300));
    let nothing = store.force_unlock(uuid::Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(nothing, Error::NotLocked { .. }), "{nothing}");
    let guard = store
        .lock(LockInfo::current("jaam apply"), Duration::ZERO)
        .await
        .unwrap();
    guard.release().await.unwrap();
    let error = store
        .force_unlock(uuid::Uuid::new_v4())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("is not locked"), "{error}");
    assert!(error.contains("lapsed at"), "{error}");
    assert!(!error.contains("locked by"), "{error}");
}

/// Issue 11, item 13: a missing bucket is one sentence, and the first
/// apply's journal objects are removed like every later apply's.
#[tokio::test]
async fn a_missing_bucket_should_be_one_sentence_and_first_journals_removed() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("s3first"));
    ws.write_specs(&format!(
        "log_group.a:\n  name: /jaam-test/{}/a\n",
        ws.stack
    ));
    let missing = format!("s3://{}/jaam.state.json", unique("nosuchbucket"));
    let run = jaam_tests::Run::from(on_s3(&ws, &missing, &["plan"]).output().unwrap());
    run.expect_code(1);
    let bucket_name = missing
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap();
    assert!(
        run.stderr.contains(&format!(
            "bucket `{bucket_name}` does not exist or is not yours"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.lines().filter(|l| !l.trim().is_empty()).count() <= 2,
        "one sentence (and a hint at most), not the SDK's structure:\n{}",
        run.stderr
    );

    let bucket = bucket(&unique("first")).await;
    let url = format!("s3://{bucket}/jaam.state.json");
    jaam_tests::Run::from(
        on_s3(&ws, &url, &["apply", "--auto-approve"])
            .output()
            .unwrap(),
    )
    .expect_code(0);
    assert_eq!(
        journal_objects(&bucket, "jaam.state.json").await,
        0,
        "the first apply's journal is folded and removed"
    );
    jaam_tests::Run::from(
        on_s3(&ws, &url, &["destroy", "--auto-approve"])
            .output()
            .unwrap(),
    )
    .expect_code(0);
    assert_eq!(journal_objects(&bucket, "jaam.state.json").await, 0);
}

/// Issue 16, item 1: the deploy history beside an S3 state: two writers'
/// records both kept, newest per site bounded.
#[tokio::test]
async fn deploy_history_should_be_kept_beside_s3_state() {
    use jaam_core::history::{Deployment, KEEP};
    let config = aws_config().await;
    let bucket = bucket(&unique("history")).await;
    let one = S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(30));
    let two = S3Store::new(&config, &bucket, "stack.json", Duration::from_secs(30));
    let row = |n: usize, trigger: &str| Deployment {
        site: "blog".into(),
        stack: "s".into(),
        revision: format!("{n:040}"),
        previous: None,
        trigger: trigger.into(),
        started: chrono::Utc::now(),
        duration_ms: 5,
        result: "succeeded".into(),
        error: None,
    };
    assert!(one.deployments().await.unwrap().is_empty());
    one.record_deployments(&[row(1, "push")]).await.unwrap();
    two.record_deployments(&[row(2, "rollback")]).await.unwrap();
    let kept: Vec<(String, String)> = one
        .deployments()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.revision, d.trigger))
        .collect();
    assert_eq!(
        kept,
        [
            (format!("{:040}", 1), "push".to_owned()),
            (format!("{:040}", 2), "rollback".to_owned())
        ]
    );
    let many: Vec<Deployment> = (0..KEEP + 3).map(|n| row(100 + n, "cli")).collect();
    two.record_deployments(&many).await.unwrap();
    let kept = one.deployments().await.unwrap();
    assert_eq!(kept.len(), KEEP);
    assert_eq!(
        kept.last().unwrap().revision,
        format!("{:040}", 100 + KEEP + 2)
    );
}

/// Issue 14, item 5: a lease whose holder died (it lapses unreleased) is
/// reported once it lapses; a released one, another prefix's, and one that
/// lapsed before the watch began are not.
#[tokio::test]
async fn an_abandoned_lease_should_be_reported_once_it_lapses_and_a_released_one_never() {
    use jaam_core::state::s3::LeaseWatch;
    let config = aws_config().await;
    let bucket = bucket(&unique("leasewatch")).await;
    let ttl = Duration::from_secs(2);
    let store = |key: &str| S3Store::new(&config, &bucket, key, ttl);
    // Abandoned before the watch starts: the daemon's start-up resync covers it.
    drop(
        store("jaam/before.json")
            .lock(LockInfo::current("jaam daemon (before)"), Duration::ZERO)
            .await
            .unwrap(),
    );
    // Its TTL runs out (waiting for the clock, not for S3).
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let mut watch = LeaseWatch::new(&config, &bucket, "jaam/", ttl);
    let crashed = store("jaam/crashed.json")
        .lock(LockInfo::current("jaam daemon (killed)"), Duration::ZERO)
        .await
        .unwrap();
    store("jaam/released.json")
        .lock(LockInfo::current("jaam daemon (done)"), Duration::ZERO)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    drop(
        store("other/crashed.json")
            .lock(LockInfo::current("elsewhere"), Duration::ZERO)
            .await
            .unwrap(),
    );
    // Dropping the guard stops its renewals, as a killed process does.
    drop(crashed);
    assert!(
        watch.check().await.unwrap().is_empty(),
        "nothing has lapsed yet"
    );
    let started = std::time::Instant::now();
    let mut reported = Vec::new();
    while reported.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the abandoned lease was never reported"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        reported = watch.check().await.unwrap();
    }
    let keys: Vec<&str> = reported.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["jaam/crashed.json"]);
    assert_eq!(reported[0].1.holder.command, "jaam daemon (killed)");
    assert!(!reported[0].1.released);
    // The lapse is reported once, however often the watch looks.
    let until = std::time::Instant::now() + ttl * 2;
    while std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(watch.check().await.unwrap().is_empty(), "reported again");
    }
}
