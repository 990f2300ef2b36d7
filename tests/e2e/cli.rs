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
