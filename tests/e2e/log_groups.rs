//! The log group lifecycle through the CLI, against moto.

use jaam_tests::{Workspace, log_groups, logs_client, moto_endpoint, serial_of, unique};

fn group(name: &str, path: &str, retention: u32, extra: &str) -> String {
    format!("log_group.{name}:\n  name: {path}\n  retention_days: {retention}\n{extra}")
}

#[tokio::test]
async fn log_groups_should_go_through_create_update_delete_replace_and_destroy() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("life"));
    let prefix = format!("/jaam-test/{}/", ws.stack);
    let logs = logs_client().await;
    let a = |retention| group("a", &format!("{prefix}a"), retention, "");
    let b = |path: &str| {
        group(
            "b",
            &format!("{prefix}{path}"),
            30,
            "  tags:\n    team: web\n",
        )
    };
    let c = group(
        "c",
        &format!("{prefix}c"),
        7,
        "  depends_on: [log_group.a]\n",
    );

    // Three groups.
    ws.write_specs(&format!("{}{}{}", a(14), b("b"), c));
    let run = ws.jaam(&["apply", "--auto-approve"]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("Apply complete! Resources: 3 added, 0 changed, 0 destroyed."),
        "{}",
        run.stderr
    );
    let found = log_groups(&logs, &prefix).await;
    assert_eq!(
        found,
        [
            (format!("{prefix}a"), Some(14)),
            (format!("{prefix}b"), Some(30)),
            (format!("{prefix}c"), Some(7))
        ]
    );
    assert_eq!(ws.serial(), 1);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // A retention change: exit 2 and a `~` line.
    ws.write_specs(&format!("{}{}{}", a(30), b("b"), c));
    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(text.contains("~ log_group.a {"), "{text}");
    assert!(text.contains("~ retention_days = 14 -> 30"), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(
        log_groups(&logs, &format!("{prefix}a")).await,
        [(format!("{prefix}a"), Some(30))]
    );
    assert_eq!(ws.serial(), 2);
    assert_eq!(
        serial_of(&ws.dir.path().join("jaam.state.json.backup")),
        1,
        "the previous snapshot is the backup"
    );

    // Remove one: `-`.
    ws.write_specs(&format!("{}{}", a(30), b("b")));
    let run = ws.jaam(&["plan"]);
    run.expect_code(0);
    assert!(run.squashed().contains("- log_group.c {"), "{}", run.stdout);
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(log_groups(&logs, &prefix).await.len(), 2);
    assert_eq!(ws.serial(), 3);
    assert_eq!(serial_of(&ws.dir.path().join("jaam.state.json.backup")), 2);

    // Rename one: a replacement, the new group created before the old is deleted.
    ws.write_specs(&format!("{}{}", a(30), b("b-renamed")));
    let run = ws.jaam(&["plan"]);
    let text = run.squashed();
    assert!(text.contains("+/- log_group.b {"), "{text}");
    assert!(
        text.contains(&format!(
            "~ name = \"{prefix}b\" -> \"{prefix}b-renamed\" # forces replacement"
        )),
        "{text}"
    );
    assert!(
        text.contains("Plan: 1 to add, 0 to change, 1 to destroy."),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let names: Vec<String> = log_groups(&logs, &prefix)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, [format!("{prefix}a"), format!("{prefix}b-renamed")]);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Outputs and state listing read the recorded attributes.
    let run = ws.jaam(&["output", "log_group.a.arn"]);
    run.expect_code(0);
    assert!(
        run.stdout.trim().ends_with(&format!("log-group:{prefix}a")),
        "{}",
        run.stdout
    );
    let run = ws.jaam(&["state", "list"]);
    assert_eq!(run.stdout, "log_group.a\nlog_group.b\n");

    // Destroy leaves none.
    let before = ws.serial();
    let run = ws.jaam(&["destroy", "--auto-approve"]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("Destroy complete! Resources: 0 added, 0 changed, 2 destroyed."),
        "{}",
        run.stderr
    );
    assert!(log_groups(&logs, &prefix).await.is_empty());
    assert_eq!(ws.serial(), before + 1);
    assert_eq!(ws.jaam(&["state", "list"]).stdout, "");
}

#[tokio::test]
async fn retention_changed_through_the_api_should_show_as_drift_and_be_corrected() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("drift"));
    let name = format!("/jaam-test/{}/app", ws.stack);
    let logs = logs_client().await;
    ws.write_specs(&group("app", &name, 14, ""));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);

    logs.put_retention_policy()
        .log_group_name(&name)
        .retention_in_days(60)
        .send()
        .await
        .unwrap();

    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    let drift = text
        .find("objects have changed outside of jaam")
        .expect("drift section");
    let actions = text
        .find("jaam will perform the following actions")
        .expect("plan section");
    assert!(drift < actions, "{text}");
    assert!(
        text.contains("# log_group.app has changed (changed outside jaam)"),
        "{text}"
    );
    assert!(text.contains("~ retention_days = 14 -> 60"), "{text}");
    assert!(text.contains("~ retention_days = 60 -> 14"), "{text}");

    let run = ws.jaam(&["apply", "--auto-approve", "--json"]);
    run.expect_code(0);
    // --json: progress as JSON lines on stdout, numbered from 1.
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "{}",
        run.stdout
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "finished" && e["action"] == "update"),
        "{}",
        run.stdout
    );
    assert_eq!(log_groups(&logs, &name).await, [(name.clone(), Some(14))]);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
}

#[tokio::test]
async fn saved_plan_should_apply_once_and_be_refused_when_stale() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("saved"));
    let name = format!("/jaam-test/{}/app", ws.stack);
    ws.write_specs(&group("app", &name, 14, ""));
    ws.jaam(&["plan", "-out=plan.json"]).expect_code(0);
    ws.jaam(&["plan", "--out", "second.json"]).expect_code(0);
    let run = ws.jaam(&["show", "plan.json"]);
    assert!(
        run.squashed().contains("+ log_group.app {"),
        "{}",
        run.stdout
    );
    ws.jaam(&["apply", "plan.json"]).expect_code(0);
    let state_before = std::fs::read(ws.state()).unwrap();
    let run = ws.jaam(&["apply", "second.json"]);
    run.expect_code(1);
    assert!(run.stderr.contains("plan is stale"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(ws.state()).unwrap(),
        state_before,
        "a refused plan writes nothing"
    );
}

#[tokio::test]
async fn import_should_adopt_an_existing_group_and_plan_only_real_differences() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("import"));
    let name = format!("/jaam-test/{}/legacy", ws.stack);
    let logs = logs_client().await;
    logs.create_log_group()
        .log_group_name(&name)
        .send()
        .await
        .unwrap();
    logs.put_retention_policy()
        .log_group_name(&name)
        .retention_in_days(7)
        .send()
        .await
        .unwrap();
    ws.write_specs(&group("legacy", &name, 14, ""));

    ws.jaam(&["import", "log_group.legacy", &name])
        .expect_code(0);
    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(text.contains("~ retention_days = 7 -> 14"), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    // Importing an address twice is refused.
    ws.jaam(&["import", "log_group.legacy", &name])
        .expect_code(1);
}

#[tokio::test]
async fn apply_without_terminal_or_auto_approve_should_refuse() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("confirm"));
    ws.write_specs(&group(
        "app",
        &format!("/jaam-test/{}/app", ws.stack),
        14,
        "",
    ));
    let run = ws.jaam(&["apply"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("refusing to apply without confirmation"),
        "{}",
        run.stderr
    );
    assert!(!ws.state().exists(), "nothing was written");
}
