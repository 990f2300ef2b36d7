//! Helpers for the end-to-end tests: the emulators `scripts/test` started, the
//! `jaam` binary, and per-test isolation (each test gets its own stack name and
//! log-group prefix, so tests share one moto server without resets).
//!
//! A test that needs an emulator panics with instructions when it is missing;
//! it never skips.

pub mod acme;
pub mod boxes;
pub mod builds;
pub mod daemon;
pub mod github;
pub mod iam_policy;

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

/// Polls `check` with backoff (100 ms doubling to 2 s) until it answers
/// `Some`, failing the test with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: std::time::Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let backoff = jaam_core::backoff::Backoff {
        initial: std::time::Duration::from_millis(100),
        max: std::time::Duration::from_secs(2),
        deadline,
    };
    let mut check = check;
    jaam_core::backoff::poll(backoff, || {
        let next = check();
        async move { Ok::<_, ()>(next.await) }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Stops the app processes the deploy script started under `root` with
/// `JAAM_NO_SYSTEMD=1` (their process groups, from `run/app-*.pid`).
pub fn stop_site_apps(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root.join("run")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("app-") && name.ends_with(".pid") {
            let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let _ = std::process::Command::new("kill")
                .arg("--")
                .arg(format!("-{}", pid.trim()))
                .output();
        }
    }
}

/// A port `p` with `p` and `p + 1` free on 127.0.0.1: a server app
/// alternates between the two. Below Linux's ephemeral range (32768 and up),
/// so no client socket of a concurrent test takes them meanwhile.
pub fn free_port_pair() -> u16 {
    loop {
        let port: u16 = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// A unique, readable name for one test run.
pub fn unique(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The `jaam` binary built alongside the tests (`target/debug/jaam`), or the
/// one `JAAM_BINARY` names (the daemon benchmark's optimized build).
pub fn jaam_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("JAAM_BINARY") {
        return PathBuf::from(path);
    }
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

/// An EC2 client on moto.
pub async fn ec2_client() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&aws_config().await)
}

/// A Route53 client on moto.
pub async fn route53_client() -> aws_sdk_route53::Client {
    aws_sdk_route53::Client::new(&aws_config().await)
}

/// Creates a hosted zone for `domain` and returns its id.
pub async fn hosted_zone(domain: &str) -> String {
    let answer = route53_client()
        .await
        .create_hosted_zone()
        .name(domain)
        .caller_reference(uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .expect("CreateHostedZone");
    answer
        .hosted_zone()
        .expect("zone")
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned()
}

/// Running (or pending) instances tagged for `stack`: (id, `jaam:address`, public ip).
pub async fn stack_instances(stack: &str) -> Vec<(String, String, Option<String>)> {
    use aws_sdk_ec2::types::{Filter, InstanceStateName};
    let client = ec2_client().await;
    let mut out = Vec::new();
    let mut pages = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:jaam:stack")
                .values(stack)
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for instance in page
            .expect("DescribeInstances")
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
        {
            let state = instance.state().and_then(|s| s.name());
            if !matches!(
                state,
                Some(InstanceStateName::Running | InstanceStateName::Pending)
            ) {
                continue;
            }
            let addr = instance
                .tags()
                .iter()
                .find(|t| t.key() == Some("jaam:address"))
                .and_then(|t| t.value())
                .unwrap_or_default();
            out.push((
                instance.instance_id().unwrap_or_default().to_owned(),
                addr.to_owned(),
                instance.public_ip_address().map(str::to_owned),
            ));
        }
    }
    out.sort();
    out
}

/// The record sets of a zone other than SOA and NS: (name without dot, type, values).
pub async fn zone_records(zone_id: &str) -> Vec<(String, String, Vec<String>)> {
    let client = route53_client().await;
    let mut out = Vec::new();
    let mut start: Option<(String, aws_sdk_route53::types::RrType)> = None;
    loop {
        let mut request = client.list_resource_record_sets().hosted_zone_id(zone_id);
        if let Some((name, kind)) = start.take() {
            request = request.start_record_name(name).start_record_type(kind);
        }
        let page = request.send().await.expect("ListResourceRecordSets");
        for set in page.resource_record_sets() {
            let kind = set.r#type().as_str().to_owned();
            if kind == "SOA" || kind == "NS" {
                continue;
            }
            let values = set
                .resource_records()
                .iter()
                .map(|r| r.value().to_owned())
                .collect();
            out.push((set.name().trim_end_matches('.').to_owned(), kind, values));
        }
        match (
            page.is_truncated(),
            page.next_record_name(),
            page.next_record_type(),
        ) {
            (true, Some(name), Some(kind)) => start = Some((name.to_owned(), kind.clone())),
            _ => break,
        }
    }
    out.sort();
    out
}

/// A reverse proxy in front of moto that answers one request in `every` with a
/// throttling error, without forwarding it (a throttled request is not
/// executed), as AWS would: `RequestLimitExceeded` (503) for EC2, `Throttling`
/// (400) for Route53, `ThrottlingException` (400) for the JSON protocols.
/// Every other request is forwarded as it is. Connections close after each
/// response, as moto's do. It runs on the caller's tokio runtime: a test that
/// blocks on a child process meanwhile needs a multi-threaded runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Faults injected so far.
    pub faults: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests seen so far.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, every: usize) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (listener, url, upstream) = bind_proxy(upstream).await;
        let faults = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (fault_count, request_count) = (Arc::clone(&faults), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let n = request_count.fetch_add(1, Ordering::Relaxed) + 1;
                let fault = n % every == 0;
                if fault {
                    fault_count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::spawn(async move {
                    let _ = proxy_one(client, &upstream, fault).await;
                });
            }
        });
        Self {
            url,
            faults,
            requests,
            task,
        }
    }
}

/// Reads one whole HTTP/1.1 request (head and `content-length` body); `None`
/// when the client closed first. Returns the bytes and where the body starts.
pub async fn read_request(
    client: &mut tokio::net::TcpStream,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    use tokio::io::AsyncReadExt;
    let mut request = Vec::new();
    let mut buffer = [0u8; 16384];
    let header_end = loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        request.extend_from_slice(&buffer[..read]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < header_end + length {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    Ok(Some((request, header_end)))
}

/// Sends `request` to `upstream` and copies the whole answer back to `client`.
pub async fn forward(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    request: &[u8],
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = tokio::net::TcpStream::connect(upstream).await?;
    server.write_all(request).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    client.write_all(&response).await?;
    client.shutdown().await
}

async fn proxy_one(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    fault: bool,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let Some((request, header_end)) = read_request(&mut client).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
    if fault {
        let service = head
            .split("/aws4_request")
            .next()
            .and_then(|scope| scope.rsplit('/').next())
            .unwrap_or("");
        let (status, content_type, body) = match service {
            "ec2" => (
                "503 Service Unavailable",
                "text/xml",
                "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault</RequestID></Response>".to_owned(),
            ),
            "route53" => (
                "400 Bad Request",
                "text/xml",
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>fault</RequestId></ErrorResponse>".to_owned(),
            ),
            _ => ("400 Bad Request", "application/x-amz-json-1.1", r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    forward(client, upstream, &request).await
}

/// A proxy in front of moto that answers some requests itself or holds them
/// back: `answer` sees each request's head (lowercased) and body and decides.
pub struct InterceptProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InterceptProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an [`InterceptProxy`] does with one request.
pub enum Intercept {
    /// Forward it.
    Forward,
    /// Forward it after a delay (a slow cloud).
    Delay(std::time::Duration),
    /// Answer with this whole HTTP response instead.
    Respond(String),
}

impl Intercept {
    /// A `GetCommandInvocation` answer for the command the request `body`
    /// names, as SSM reports a failed command (moto runs nothing, so a failed
    /// deploy needs this).
    pub fn failed_invocation(body: &str, stdout: &str, stderr: &str) -> Self {
        Self::invocation(body, "Failed", stdout, stderr)
    }

    /// A `GetCommandInvocation` answer for the command the request `body`
    /// names, in `status` (`InProgress`: a build still running).
    pub fn invocation(body: &str, status: &str, stdout: &str, stderr: &str) -> Self {
        let id = json_field(body, "CommandId").unwrap_or_default();
        let payload = serde_json::json!({
            "CommandId": id,
            "Status": status,
            "StatusDetails": status,
            "StandardOutputContent": stdout,
            "StandardErrorContent": stderr,
        })
        .to_string();
        Self::Respond(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
            payload.len()
        ))
    }
}

/// The string field `name` of a JSON request body (`CommandId`, `InstanceId`).
pub fn json_field(body: &str, name: &str) -> Option<String> {
    body.split(&format!("\"{name}\":"))
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
}

/// What decides an [`InterceptProxy`]'s answers.
pub type Answer = std::sync::Arc<dyn Fn(&str, &str) -> Intercept + Send + Sync>;

impl InterceptProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, answer: Answer) -> Self {
        let (listener, url, upstream) = bind_proxy(upstream).await;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, answer) = (upstream.clone(), std::sync::Arc::clone(&answer));
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let Ok(Some((request, body_start))) = read_request(&mut client).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
                    let body = String::from_utf8_lossy(&request[body_start..]).into_owned();
                    match answer(&head, &body) {
                        Intercept::Respond(response) => {
                            let _ = client.write_all(response.as_bytes()).await;
                            let _ = client.shutdown().await;
                        }
                        Intercept::Delay(delay) => {
                            tokio::time::sleep(delay).await;
                            let _ = forward(client, &upstream, &request).await;
                        }
                        Intercept::Forward => {
                            let _ = forward(client, &upstream, &request).await;
                        }
                    }
                });
            }
        });
        Self { url, task }
    }
}

/// Creates a role and instance profile in moto's IAM (through the AWS CLI):
/// with the SSM core policy attached, or with only a CloudWatch Logs one.
pub async fn instance_profile(name: &str, allow_ssm: bool) -> String {
    let cli = crate::boxes::aws_cli().expect(
        "this test needs the AWS CLI the emulator scripts install (JAAM_TEST_AWS_CLI): run it through ./scripts/test",
    );
    let aws = |args: Vec<String>| {
        let cli = cli.clone();
        async move {
            let out = tokio::process::Command::new(cli)
                .args(&args)
                .output()
                .await
                .expect("aws");
            assert!(
                out.status.success(),
                "aws {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let s = |text: &str| text.to_owned();
    aws(vec![
        s("iam"),
        s("create-role"),
        s("--role-name"),
        s(name),
        s("--assume-role-policy-document"),
        s(trust),
    ])
    .await;
    if allow_ssm {
        aws(vec![
            s("iam"),
            s("attach-role-policy"),
            s("--role-name"),
            s(name),
            s("--policy-arn"),
            s("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"),
        ])
        .await;
    } else {
        aws(vec![
            s("iam"),
            s("put-role-policy"),
            s("--role-name"),
            s(name),
            s("--policy-name"),
            s("logs"),
            s("--policy-document"),
            s(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:PutLogEvents","Resource":"*"}]}"#),
        ])
        .await;
    }
    aws(vec![
        s("iam"),
        s("create-instance-profile"),
        s("--instance-profile-name"),
        s(name),
    ])
    .await;
    aws(vec![
        s("iam"),
        s("add-role-to-instance-profile"),
        s("--instance-profile-name"),
        s(name),
        s("--role-name"),
        s(name),
    ])
    .await;
    name.to_owned()
}

/// One instance profile allowing SSM for this test process (made once).
pub async fn ssm_profile() -> String {
    static PROFILE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    PROFILE
        .get_or_init(|| async {
            let name = format!("jaam-tests-ssm-{}", uuid::Uuid::new_v4().simple());
            instance_profile(&name, true).await
        })
        .await
        .clone()
}

/// The value of an SSM parameter on moto (the AMI the public parameter names).
pub async fn ssm_parameter(name: &str) -> String {
    ssm_parameter_decrypted(name).await
}

/// Writes one event into `group`'s `stream` (made when missing), as the
/// CloudWatch agent on a site's instance would.
pub async fn put_log_event(group: &str, stream: &str, message: &str) {
    let logs = logs_client().await;
    let _ = logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(chrono::Utc::now().timestamp_millis())
                .message(message)
                .build()
                .expect("a log event"),
        )
        .send()
        .await
        .expect("PutLogEvents");
}

/// Binds a proxy's loopback listener: the listener, its URL, and `upstream`
/// as `host:port`.
pub(crate) async fn bind_proxy(upstream: &str) -> (tokio::net::TcpListener, String, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let url = format!("http://{}", listener.local_addr().expect("proxy address"));
    (
        listener,
        url,
        upstream.trim_start_matches("http://").to_owned(),
    )
}

/// The decrypted value of a SecureString parameter on moto.
pub async fn ssm_parameter_decrypted(name: &str) -> String {
    let client = aws_sdk_ssm::Client::new(&aws_config().await);
    let answer = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .expect("GetParameter");
    answer
        .parameter()
        .and_then(|p| p.value())
        .expect("value")
        .to_owned()
}

/// Waits until `journal` holds more than `records` records, then SIGKILLs
/// `child`. Returns whether it really interrupted the run (false when the child
/// finished first). Choosing when to pull the plug polls a file, not the cloud.
pub async fn kill_after_journal_records(
    child: &mut std::process::Child,
    journal: &Path,
    records: usize,
) -> bool {
    use jaam_core::backoff::{self, Backoff};
    use std::time::Duration;
    let watch = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        deadline: Duration::from_secs(60),
    };
    let reached = backoff::poll(watch, || {
        let lines = std::fs::read_to_string(journal)
            .map(|text| text.lines().count())
            .unwrap_or(0);
        let exited = lines <= records && child.try_wait().ok().flatten().is_some();
        async move { Ok::<_, ()>((lines > records || exited).then_some(lines > records)) }
    })
    .await
    .expect("the child journals or exits within a minute");
    child.kill().ok();
    child.wait().expect("reap the child");
    reached
}

/// Creates an S3 bucket on moto and returns its name.
pub async fn bucket(name: &str) -> String {
    let config = aws_config().await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    client
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("CreateBucket");
    name.to_owned()
}
