//! The command line as a user meets it: shell completions.

use jaam_tests::{Workspace, unique};

/// Issue 16, item 5: `jaam completions bash` completes subcommands and
/// flags in a real bash; zsh and fish scripts are produced too.
#[test]
fn completions_should_complete_subcommands_in_bash() {
    let ws = Workspace::new(&unique("completions"));
    let script = ws.dir.path().join("jaam.bash");
    let run = ws.jaam(&["completions", "bash"]);
    run.expect_code(0);
    std::fs::write(&script, &run.stdout).unwrap();
    // As bash calls a completion function: the words, the cursor's index,
    // and the arguments (command, current word, previous word).
    let complete = |words: &str, index: usize| {
        let list: Vec<&str> = words.split(' ').collect();
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={index}; _jaam jaam '{}' '{}'; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display(),
                list[index],
                list[index - 1]
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let offered = complete("jaam pl", 1);
    assert_eq!(offered.trim(), "plan", "{offered}");
    let offered = complete("jaam plan --de", 2);
    assert!(offered.contains("--detailed-exitcode"), "{offered}");
    assert!(offered.contains("--destroy"), "{offered}");
    for shell in ["zsh", "fish"] {
        let run = ws.jaam(&["completions", shell]);
        run.expect_code(0);
        assert!(run.stdout.contains("jaam"), "{shell}: {}", run.stdout);
    }
}

/// Issue 16, item 5: `jaam init --repo` writes a starter site spec with the
/// framework detected from the repository's package.json; it validates, and a
/// second init never overwrites it.
#[tokio::test(flavor = "multi_thread")]
async fn init_should_write_a_valid_spec_with_the_detected_framework() {
    let github = jaam_tests::github::GithubFake::start().await;
    github.repos.lock().unwrap().files.insert(
        ("acme/shop".into(), "package.json".into()),
        r#"{"name":"shop","dependencies":{"next":"15.0.0","react":"19.0.0"}}"#.into(),
    );
    let ws = Workspace::new(&unique("init"));
    std::fs::remove_dir_all(ws.specs()).unwrap();
    let init = |args: &[&str]| github.jaam(&ws, args);
    let run = init(&["init", "--repo", "acme/shop", "--zone", "example.test"]);
    run.expect_code(0);
    assert!(run.stdout.contains("framework nextjs"), "{}", run.stdout);
    let spec = std::fs::read_to_string(ws.specs().join("shop.yaml")).unwrap();
    assert!(spec.contains("site.shop:"), "{spec}");
    assert!(spec.contains("framework: nextjs"), "{spec}");
    assert!(spec.contains("domain: shop.example.test"), "{spec}");
    ws.jaam(&["validate"]).expect_code(0);
    // Never overwritten.
    let again = init(&["init", "--repo", "acme/shop"]);
    again.expect_code(1);
    assert!(
        again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read_to_string(ws.specs().join("shop.yaml")).unwrap(),
        spec
    );
}

/// Issue 14: the fleet example is what `--stacks` wants: every stack
/// directory validates and names itself after its directory.
#[test]
fn the_fleet_example_should_be_one_valid_stack_per_directory() {
    let fleet = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet");
    let mut stacks = 0;
    for entry in std::fs::read_dir(&fleet).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        stacks += 1;
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let run = jaam_tests::Run::from(
            std::process::Command::new(jaam_tests::jaam_binary())
                .arg("validate")
                .arg("--specs")
                .arg(&dir)
                .output()
                .unwrap(),
        );
        run.expect_code(0);
        let spec = std::fs::read_to_string(dir.join("site.yaml")).unwrap();
        assert!(spec.contains(&format!("name: {name}\n")), "{name}: {spec}");
    }
    assert!(stacks >= 2, "a fleet of {stacks}");
}

/// Issue 14: the CLI takes a fleet's state template (`--state
/// 'state/{stack}.json'`) and works on one stack of it under the name the
/// daemon gives it: its directory's.
#[tokio::test]
async fn the_cli_should_work_on_one_stack_of_a_fleet_through_its_state_template() {
    jaam_tests::moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let dir = tempfile::tempdir().unwrap();
    let name = unique("fleetcli");
    let stack = dir.path().join("fleet").join(&name);
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::write(
        stack.join("logs.yaml"),
        format!("log_group.app:\n  name: /jaam-test/{name}/app\n"),
    )
    .unwrap();
    let template = dir.path().join("state/{stack}.json");
    let jaam = |args: &[&str]| {
        jaam_tests::Run::from(
            std::process::Command::new(jaam_tests::jaam_binary())
                .args(args)
                .arg("--specs")
                .arg(&stack)
                .arg("--state")
                .arg(&template)
                .env("NO_COLOR", "1")
                .output()
                .unwrap(),
        )
    };
    std::fs::create_dir(dir.path().join("state")).unwrap();
    jaam(&["apply", "--auto-approve"]).expect_code(0);
    let file = dir.path().join(format!("state/{name}.json"));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("the stack's own state"))
            .unwrap();
    assert_eq!(state["stack"], name.as_str(), "named by its directory");
    jaam(&["destroy", "--auto-approve"]).expect_code(0);
}
