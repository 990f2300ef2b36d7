//! Two `jaam apply` at once on one state: the second names the holder and exits 1.

use std::time::Duration;

use jaam_core::backoff::{self, Backoff};
use jaam_tests::{Workspace, log_groups, logs_client, moto_endpoint, unique};

#[tokio::test]
async fn second_apply_should_name_the_lock_holder_and_leave_state_intact() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("lock"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    let specs: String = (0..300)
        .map(|n| format!("log_group.g{n}:\n  name: {prefix}g{n}\n  retention_days: 7\n"))
        .collect();
    ws.write_specs(&specs);

    let mut first = ws
        .command(&["apply", "--auto-approve", "--parallelism", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock_file = ws.dir.path().join("jaam.state.json.lock");
    // Wait until the first apply has taken the lock and started journaling.
    let wait = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
        deadline: Duration::from_secs(60),
    };
    let journal = ws.dir.path().join("jaam.state.json.journal");
    backoff::poll(wait, || {
        let held = std::fs::read_to_string(&lock_file)
            .is_ok_and(|text| text.contains("jaam apply"))
            && journal.exists();
        async move { Ok::<_, ()>(held.then_some(())) }
    })
    .await
    .expect("the first apply takes the lock");

    let second = ws.jaam(&["apply", "--auto-approve"]);
    second.expect_code(1);
    let pid = first.id();
    assert!(
        second
            .stderr
            .contains(&format!("state is locked by `jaam apply` (pid {pid} on ")),
        "the error names the holder:\n{}",
        second.stderr
    );
    assert!(second.stderr.contains("hint:"), "{}", second.stderr);

    // With --lock-timeout, a third apply waits for the holder instead of failing.
    let third = ws
        .command(&["apply", "--auto-approve", "--lock-timeout", "5m"])
        .output()
        .unwrap();
    assert!(
        first.try_wait().unwrap().is_some(),
        "the third apply returned only after the first finished"
    );
    let third = jaam_tests::Run::from(third);
    third.expect_code(0);
    assert!(third.stdout.contains("No changes."), "{}", third.stdout);

    let status = first.wait().unwrap();
    assert!(status.success(), "the first apply finishes");
    assert_eq!(log_groups(&logs_client().await, &prefix).await.len(), 300);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    let state =
        jaam_core::state::StateFile::parse(&std::fs::read_to_string(ws.state()).unwrap(), "state")
            .unwrap();
    assert_eq!(state.resources.len(), 300);
    assert_eq!(state.serial, 1, "only the first apply wrote");
}
