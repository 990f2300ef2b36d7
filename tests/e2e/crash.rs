//! Crash consistency: SIGKILL `jaam apply` (and `jaam destroy`) at random moments;
//! every time the state and journal load, and a rerun converges with no
//! duplicate and no orphaned log group.

use std::time::Duration;

use jaam_core::backoff::{self, Backoff};
use jaam_core::state::{LocalStore, StateStore};
use jaam_tests::{Workspace, log_groups, logs_client, moto_endpoint, unique};
use rand::Rng;

const GROUPS: usize = 60;

async fn owned_by_stack(stack: &str) -> usize {
    use jaam_core::provider::{Context, Provider};
    let provider =
        jaam_core::providers::aws::logs::LogGroups::new(&jaam_tests::aws_config().await, None);
    provider
        .list_owned(&Context {
            stack: stack.to_owned(),
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn killed_applies_should_leave_loadable_state_and_converge_on_rerun() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("crash"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    let specs: String = (0..GROUPS)
        .map(|n| {
            let dependency = if n >= 10 { format!("  depends_on: [log_group.g{}]\n", n % 10) } else { String::new() };
            format!("log_group.g{n}:\n  name: {prefix}g{n}\n  retention_days: 14\n  tags:\n    n: \"{n}\"\n{dependency}")
        })
        .collect();
    ws.write_specs(&specs);
    let logs = logs_client().await;
    let store = LocalStore::new(ws.state());
    let mut interrupted = 0;

    for trial in 0..6 {
        let destroying = trial % 2 == 1;
        let args: &[&str] = if destroying {
            &["destroy", "--auto-approve"]
        } else {
            &["apply", "--auto-approve", "--parallelism", "4"]
        };
        let mut child = ws
            .command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Pull the plug once the journal holds a random number of records: somewhere
        // between the first intent and the last outcome of this run.
        let records = rand::rng().random_range(1..GROUPS * 2 - 4);
        let journal = ws.dir.path().join("jaam.state.json.journal");
        let reached = jaam_tests::kill_after_journal_records(&mut child, &journal, records).await;
        if reached {
            interrupted += 1;
        }

        let state = store
            .load()
            .await
            .expect("state and journal load after SIGKILL");
        if let Some(state) = &state {
            state.validate().expect("a crashed state validates");
        }

        let rerun = ws.jaam(args);
        rerun.expect_code(0);
        let found = log_groups(&logs, &prefix).await;
        if destroying {
            assert!(
                found.is_empty(),
                "trial {trial}: destroy converges to nothing, found {found:?}"
            );
            assert_eq!(
                owned_by_stack(&ws.stack).await,
                0,
                "trial {trial}: no orphan"
            );
        } else {
            assert_eq!(
                found.len(),
                GROUPS,
                "trial {trial}: exactly the declared groups"
            );
            assert!(
                found.iter().all(|(_, retention)| *retention == Some(14)),
                "trial {trial}: {found:?}"
            );
            let state = store.load().await.unwrap().unwrap();
            assert_eq!(
                state.resources.len(),
                GROUPS,
                "trial {trial}: state knows every group"
            );
            assert!(
                state.pending.is_empty(),
                "trial {trial}: interrupted intents resolved"
            );
            assert_eq!(
                owned_by_stack(&ws.stack).await,
                GROUPS,
                "trial {trial}: no orphan"
            );
            ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
        }
    }
    assert!(
        interrupted >= 5,
        "the trials must really interrupt an apply ({interrupted} of 6 did)"
    );
}

#[tokio::test]
async fn interrupted_apply_should_finish_in_flight_work_and_save_state() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("sigint"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    let specs: String = (0..150)
        .map(|n| format!("log_group.g{n}:\n  name: {prefix}g{n}\n"))
        .collect();
    ws.write_specs(&specs);
    let child = ws
        .command(&["apply", "--auto-approve", "--parallelism", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let journal = ws.dir.path().join("jaam.state.json.journal");
    let watch = Backoff {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(20),
        deadline: Duration::from_secs(60),
    };
    backoff::poll(watch, || {
        let lines = std::fs::read_to_string(&journal)
            .map(|text| text.lines().count())
            .unwrap_or(0);
        async move { Ok::<_, ()>((lines > 10).then_some(())) }
    })
    .await
    .expect("the apply starts journaling");
    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let run = jaam_tests::Run::from(child.wait_with_output().unwrap());
    run.expect_code(1);
    assert!(run.stderr.contains("Interrupt received"), "{}", run.stderr);
    assert!(run.stderr.contains("not started"), "{}", run.stderr);
    // State was saved: the journal is folded, and state holds exactly what exists.
    assert!(
        !journal.exists(),
        "the journal was folded into the snapshot"
    );
    let state = LocalStore::new(ws.state()).load().await.unwrap().unwrap();
    let created = log_groups(&logs_client().await, &prefix).await.len();
    assert!(
        created > 0 && created < 150,
        "interrupted part way: {created}"
    );
    assert_eq!(
        state.resources.len(),
        created,
        "state records exactly what exists"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(log_groups(&logs_client().await, &prefix).await.len(), 150);
}
