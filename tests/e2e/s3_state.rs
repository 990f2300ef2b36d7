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
        matches!(&error, Error::Locked { holder } if holder.command == "jaam apply (old)"),
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
