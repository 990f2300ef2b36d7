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
