//! Running `jaam daemon` in tests: start it on a free loopback port, talk to
//! it over HTTP, stop it with SIGTERM; and real signed GitHub deliveries.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `jaam daemon` child process.
pub struct Daemon {
    /// The child.
    pub child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// One HTTP/1.1 exchange with 127.0.0.1:`port`: status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

impl Daemon {
    /// Starts `command` (a `jaam daemon` command without `--listen`) and
    /// waits until it answers `/healthz`.
    pub fn start(mut command: Command, log: PathBuf) -> Self {
        let port = free_port();
        let file = std::fs::File::create(&log).expect("daemon log");
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start jaam daemon");
        let mut daemon = Self { child, port, log };
        let started = Instant::now();
        while http(port, "GET", "/healthz", &[], b"").is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("jaam daemon exited with {status}:\n{}", daemon.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "jaam daemon did not answer in a minute:\n{}",
                daemon.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` as JSON (the first stack).
    pub fn status(&self) -> serde_json::Value {
        let (_, body) = http(self.port, "GET", "/status", &[], b"").expect("GET /status");
        let json: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        json["stacks"][0].clone()
    }

    /// `GET path`: the status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET /status` of stack `name` (null when it is not listed).
    pub fn stack(&self, name: &str) -> serde_json::Value {
        self.stacks()
            .into_iter()
            .find(|stack| stack["stack"] == name)
            .unwrap_or_default()
    }

    /// `GET /status`: every stack.
    pub fn stacks(&self) -> Vec<serde_json::Value> {
        let (_, body) = http(self.port, "GET", "/status", &[], b"").expect("GET /status");
        let json: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        json["stacks"].as_array().cloned().unwrap_or_default()
    }

    /// Its resident memory (`VmRSS`), in MB.
    pub fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        http(self.port, "GET", "/metrics", &[], b"")
            .expect("GET /metrics")
            .1
    }

    /// The total of a counter over all labels.
    pub fn counter(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Posts a delivery.
    pub fn deliver(&self, delivery: &Delivery) -> (u16, String) {
        let mut headers = vec![
            ("x-github-event", delivery.event.as_str()),
            ("x-github-delivery", delivery.id.as_str()),
            ("content-type", "application/json"),
        ];
        if !delivery.signature.is_empty() {
            headers.push(("x-hub-signature-256", delivery.signature.as_str()));
        }
        http(
            self.port,
            "POST",
            "/hooks/github",
            &headers,
            delivery.body.as_bytes(),
        )
        .expect("POST /hooks/github")
    }

    /// Waits (polling with backoff, under `deadline`) until `check` holds.
    pub fn wait_until(&self, what: &str, deadline: Duration, check: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        while !check(self) {
            assert!(
                started.elapsed() < deadline,
                "timed out waiting for {what}; status: {}\n{}",
                self.status(),
                self.logs()
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "jaam daemon did not stop:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One GitHub delivery: event, id, body and `X-Hub-Signature-256`.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Delivery {
    /// `X-GitHub-Event`.
    pub event: String,
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// The raw body.
    pub body: String,
    /// `sha256=…` from `@octokit/webhooks-methods`.
    pub signature: String,
}

/// Real payloads from `@octokit/webhooks-examples` aimed at `repo`@`branch`
/// and signed with `secret` by `@octokit/webhooks-methods` (through
/// `tests/node/deliveries.mjs`): a ping, one push per sha of `pushes`, an
/// unmerged closed pull request, and a merged one when `merged` is given.
pub fn deliveries(
    secret: &str,
    repo: &str,
    branch: &str,
    pushes: &[String],
    merged: Option<&str>,
) -> Vec<Delivery> {
    run_deliveries(&serde_json::json!({
        "secret": secret, "repo": repo, "branch": branch, "pushes": pushes, "merged": merged,
    }))
}

/// Signed `pull_request` deliveries of `repo` into `base`, one per
/// `(action, number, head, fork)`, made from GitHub's example of an opened
/// pull request (no ping or push).
pub fn pull_deliveries(
    secret: &str,
    repo: &str,
    base: &str,
    pulls: &[(&str, u64, &str, bool)],
) -> Vec<Delivery> {
    let pulls: Vec<serde_json::Value> = pulls
        .iter()
        .map(|(action, number, head, fork)| {
            serde_json::json!({"action": action, "number": number, "head": head, "fork": fork})
        })
        .collect();
    run_deliveries(&serde_json::json!({
        "secret": secret, "repo": repo, "branch": base, "pulls": pulls,
    }))
}

fn run_deliveries(request: &serde_json::Value) -> Vec<Delivery> {
    let modules = std::env::var("JAAM_TEST_NODE_MODULES").unwrap_or_else(|_| {
        panic!(
            "this test needs @octokit/webhooks-examples and @octokit/webhooks-methods: run it \
             through `./scripts/test`, which installs them (JAAM_TEST_NODE_MODULES is not set)"
        )
    });
    let dir = std::path::Path::new(&modules)
        .parent()
        .expect("the node folder")
        .to_owned();
    let mut child = Command::new("node")
        .arg("deliveries.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write the request");
    let output = child.wait_with_output().expect("node output");
    assert!(
        output.status.success(),
        "deliveries.mjs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("deliveries JSON")
}

/// The median of each stage of the first `take` reconciles whose
/// `reconcile stages` log line contains `filter`, from a daemon's log:
/// `specs 0.52 ms, lock 1.10 ms, …`.
pub fn stage_medians(log: &str, filter: &str, take: usize) -> String {
    let mut stages: Vec<(String, Vec<f64>)> = Vec::new();
    for line in log
        .lines()
        .filter(|l| l.contains("reconcile stages") && l.contains(filter))
        .take(take)
    {
        let Some(rest) = line.split("stages=").nth(1) else {
            continue;
        };
        for pair in rest.split_whitespace() {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            match stages.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value),
                None => stages.push((name.to_owned(), vec![value])),
            }
        }
    }
    stages
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(f64::total_cmp);
            format!("{name} {:.2} ms", values[values.len() / 2])
        })
        .collect::<Vec<_>>()
        .join(", ")
}
