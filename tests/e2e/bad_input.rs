//! Bad input: every spec error exits 1 naming file:line:col, never panics, and
//! leaves the state file byte-for-byte as it was.

use jaam_tests::{Workspace, unique};

const STATE: &str = r#"{
  "version": 1,
  "lineage": "6f1c1f44-9f51-4d9c-9d3f-0c3c3a6b1a11",
  "serial": 4,
  "stack": "bad",
  "resources": {}
}
"#;

/// Runs `plan` and `apply` on `files` and checks the error and the untouched state.
fn expect_error(files: &[(&str, &str)], expected: &[&str]) {
    let ws = Workspace::new(&unique("bad"));
    std::fs::write(ws.state(), STATE).unwrap();
    for (name, text) in files {
        std::fs::write(ws.specs().join(name), text).unwrap();
    }
    for args in [
        &["validate"][..],
        &["plan"][..],
        &["apply", "--auto-approve"][..],
    ] {
        let run = ws.jaam(args);
        run.expect_code(1);
        for needle in expected {
            assert!(
                run.stderr.contains(needle),
                "`jaam {}`: expected {needle:?} in:\n{}",
                args.join(" "),
                run.stderr
            );
        }
        assert!(
            run.stdout.is_empty(),
            "no plan is printed for invalid specs: {}",
            run.stdout
        );
        assert_eq!(
            std::fs::read_to_string(ws.state()).unwrap(),
            STATE,
            "state untouched after `jaam {}`",
            args.join(" ")
        );
        assert!(!ws.dir.path().join("jaam.state.json.journal").exists());
    }
}

#[test]
fn yaml_syntax_error_should_exit_1_with_its_location() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: [x\n  retention_days: 1\n",
        )],
        &["main.yaml:3:", "invalid YAML"],
    );
}

#[test]
fn unknown_kind_should_exit_1_with_a_suggestion() {
    expect_error(
        &[("main.yaml", "log_groups.a:\n  name: /x\n")],
        &[
            "main.yaml:1:1: `log_groups.a`: unknown resource kind `log_groups`",
            "hint: did you mean `log_group`?",
        ],
    );
}

#[test]
fn unknown_field_should_exit_1_with_did_you_mean() {
    expect_error(
        &[("main.yaml", "log_group.a:\n  name: /x\n  retention: 14\n")],
        &[
            "main.yaml:3:3: `log_group.a`: unknown field `retention`",
            "hint: did you mean `retention_days`?",
        ],
    );
}

#[test]
fn wrong_type_should_exit_1() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: /x\n  retention_days: two weeks\n",
        )],
        &[
            "main.yaml:3:19: `log_group.a`: wrong type for `retention_days`: expected integer, found string",
        ],
    );
}

#[test]
fn invalid_retention_should_exit_1() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: /x\n  retention_days: 13\n",
        )],
        &[
            "main.yaml:3:19: `log_group.a`: invalid value for `retention_days`: 13 is not a retention CloudWatch Logs accepts",
        ],
    );
}

#[test]
fn duplicate_address_across_files_should_exit_1() {
    expect_error(
        &[
            ("a.yaml", "log_group.a:\n  name: /x\n"),
            ("b.yaml", "# again\nlog_group.a:\n  name: /y\n"),
        ],
        &[
            "b.yaml:2:1: `log_group.a`: duplicate resource address, first declared at",
            "a.yaml:1:1",
        ],
    );
}

#[test]
fn reference_to_missing_resource_should_exit_1() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: /x\n  tags:\n    peer: ${log_group.b.arn}\n",
        )],
        &["main.yaml:4:11: `log_group.a`: reference to undeclared resource `log_group.b`"],
    );
}

#[test]
fn reference_to_missing_attribute_should_exit_1() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: /x\nlog_group.b:\n  name: /y-${log_group.a.public_ip}\n",
        )],
        &["main.yaml:4:9: `log_group.b`: `log_group.a` has no attribute `public_ip`"],
    );
}

#[test]
fn dependency_cycle_should_exit_1_with_the_path() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: /a\n  depends_on: [log_group.b]\nlog_group.b:\n  name: /b\n  depends_on: [log_group.a]\n",
        )],
        &[
            "main.yaml:1:1: `log_group.a`: dependency cycle: `log_group.a` -> `log_group.b` -> `log_group.a`",
        ],
    );
}

#[test]
fn missing_env_var_should_exit_1() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  name: /${env.JAAM_TEST_SURELY_UNSET}\n",
        )],
        &["main.yaml:2:9: `log_group.a`: environment variable `JAAM_TEST_SURELY_UNSET` is not set"],
    );
}

#[test]
fn several_mistakes_should_all_be_reported_at_once() {
    expect_error(
        &[(
            "main.yaml",
            "log_group.a:\n  nme: /a\nlog_group.b:\n  name: /b\n  retention_days: x\n",
        )],
        &[
            "main.yaml:2:3",
            "main.yaml:1:1: `log_group.a`: missing required field `name`",
            "main.yaml:5:19",
            "3 errors in specs",
        ],
    );
}

#[test]
fn the_demo_specs_should_be_valid() {
    let ws = Workspace::new(&unique("demo"));
    let specs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let run = jaam_tests::Run::from(
        std::process::Command::new(jaam_tests::jaam_binary())
            .args(["validate", "--specs"])
            .arg(&specs)
            .current_dir(ws.dir.path())
            // What `./scripts/demo` sets for the example site.
            .env("JAAM_ACME_DIRECTORY", "https://127.0.0.1:14000/dir")
            .env("JAAM_WEBHOOK_SECRET", "demo-webhook-secret-0123456789")
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    // Three log groups, an instance and its record, and a site's seven.
    assert!(run.stdout.contains("12 resources"), "{}", run.stdout);
}

/// `jaam` with no AWS region and the instance-metadata endpoint on a closed
/// loopback port (the SDK would probe it for a region and warn).
fn without_region(ws: &Workspace, args: &[&str]) -> jaam_tests::Run {
    // An empty AWS config: no profile of the machine's names a region.
    let empty = ws.dir.path().join("aws-config");
    std::fs::write(&empty, "").unwrap();
    jaam_tests::Run::from(
        ws.command(args)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env_remove("JAAM_LOG")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .output()
            .unwrap(),
    )
}

/// Issue 16, item 5: a newcomer's first mistakes read as one clear error with
/// a hint, before (and without) any noise from AWS's configuration chain.
#[test]
fn missing_specs_and_a_missing_region_should_each_be_one_error_with_a_hint() {
    let ws = Workspace::new(&unique("newcomer"));
    std::fs::remove_dir_all(ws.specs()).ok();
    let run = without_region(&ws, &["plan"]);
    run.expect_code(1);
    assert!(run.stderr.contains("failed to read `"), "{}", run.stderr);
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: there is no"), "{}", run.stderr);
    assert!(run.stderr.contains("--specs DIR"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("WARN") && !run.stderr.contains("IMDS"),
        "{}",
        run.stderr
    );

    std::fs::create_dir(ws.specs()).unwrap();
    ws.write_specs("log_group.a:\n  name: /jaam/newcomer/a\n");
    let run = without_region(&ws, &["plan"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("no AWS region is set"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: set AWS_REGION"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("WARN") && !run.stderr.contains("IMDS"),
        "{}",
        run.stderr
    );
    // `validate` needs no cloud configuration at all.
    without_region(&ws, &["validate"]).expect_code(0);
}
