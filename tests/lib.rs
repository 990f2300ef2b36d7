//! Helpers for the end-to-end tests: the emulators `scripts/test` started, the
//! `jaam` binary, and per-test isolation (each test gets its own stack name and
//! log-group prefix, so tests share one moto server without resets).
//!
//! A test that needs an emulator panics with instructions when it is missing;
//! it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The moto endpoint, or a loud failure explaining how to start it.
pub fn moto_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if url.starts_with("http://127.0.0.1:") => url,
        _ => panic!(
            "this test needs the moto AWS emulator: run it through `./scripts/test`, which installs and starts it \
             (AWS_ENDPOINT_URL must point at http://127.0.0.1:PORT)"
        ),
    }
}

/// Tests that create or delete resources on the shared moto server hold this
/// lock shared; a test that counts API calls holds it exclusively. moto's
/// GetResources pages lazily over a live dictionary, so groups created or
/// deleted by a concurrent test between two pages cut the listing short (real
/// AWS paginates a consistent listing); the count would then measure moto.
pub static MOTO: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The shared AWS configuration pointed at moto.
pub async fn aws_config() -> aws_config::SdkConfig {
    moto_endpoint();
    jaam_core::providers::aws::load_config().await
}

/// A CloudWatch Logs client on moto, for checking what really exists.
pub async fn logs_client() -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&aws_config().await)
}

/// Every log group name under `prefix`, paginated.
pub async fn log_groups(
    client: &aws_sdk_cloudwatchlogs::Client,
    prefix: &str,
) -> Vec<(String, Option<i32>)> {
    let mut out = Vec::new();
    let mut pages = client
        .describe_log_groups()
        .log_group_name_prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for group in page.expect("DescribeLogGroups").log_groups() {
            out.push((
                group.log_group_name().unwrap_or_default().to_owned(),
                group.retention_in_days(),
            ));
        }
    }
    out.sort();
    out
}

/// A unique, readable name for one test run.
pub fn unique(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The `jaam` binary built alongside the tests (`target/debug/jaam`).
pub fn jaam_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("jaam"))
        .collect::<Vec<_>>();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("the `jaam` binary is not built; run `cargo build -p jaam-daemon` (looked in {candidates:?})"))
}

/// A scratch directory with a `specs/` folder and a state file path.
pub struct Workspace {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The stack name.
    pub stack: String,
}

impl Workspace {
    /// A new workspace for `stack`.
    pub fn new(stack: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("specs")).expect("specs dir");
        Self {
            dir,
            stack: stack.to_owned(),
        }
    }

    /// The specs directory.
    pub fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }

    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("jaam.state.json")
    }

    /// Replaces the specs with one file holding `text`.
    pub fn write_specs(&self, text: &str) {
        for entry in std::fs::read_dir(self.specs()).expect("read specs") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove spec");
        }
        std::fs::write(self.specs().join("main.yaml"), text).expect("write spec");
    }

    /// A `jaam` command with `--specs`, `--state` and `--stack` set, run in the workspace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(jaam_binary());
        command
            .current_dir(self.dir.path())
            .args(args)
            .arg("--specs")
            .arg(self.specs())
            .arg("--state")
            .arg(self.state())
            .arg("--stack")
            .arg(&self.stack)
            .env("NO_COLOR", "1");
        command
    }

    /// Runs `jaam ARGS` to completion.
    pub fn jaam(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().expect("run jaam");
        Run::from(output)
    }

    /// The state file's serial.
    pub fn serial(&self) -> u64 {
        serial_of(&self.state())
    }
}

/// The serial of a state file.
pub fn serial_of(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("state file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("state JSON");
    json["serial"].as_u64().expect("serial")
}

/// A finished `jaam` run.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "jaam panicked:\n{}",
            self.stderr
        );
        self
    }

    /// Stdout and stderr with runs of spaces folded.
    pub fn squashed(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
