//! Sites that are really served: `jaam` against moto + Pebble + the GitHub
//! fake, with every instance booted as a box (tests/boxes.rs), reached over
//! HTTPS through the Route53 record jaam wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jaam_tests::acme::{Pebble, Route53Mirror, pebble};
use jaam_tests::boxes::BoxConfig;
use jaam_tests::boxes::cloud::{Cloud, GitServer};
use jaam_tests::daemon::{Daemon, deliveries};
use jaam_tests::github::GithubFake;
use jaam_tests::{
    Run, Workspace, hosted_zone, instance_profile, moto_endpoint, unique, zone_records,
};

/// One test's world: a stack, its zone, its repository and the cloud.
pub(crate) struct Stage {
    pub ws: Workspace,
    pub cloud: Cloud,
    pub git: GitServer,
    pub github: GithubFake,
    pub pebble: Pebble,
    mirror: Route53Mirror,
    pub domain: String,
    pub zone: String,
    pub repo: String,
    ca: tempfile::NamedTempFile,
}

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/apps")
        .join(name)
}

/// What an HTTP(S) client saw.
#[derive(Debug)]
pub(crate) struct Seen {
    pub status: u16,
    pub body: String,
    pub location: String,
}

impl Stage {
    /// A stack named after `test`, its zone, and `app`'s first commit pushed.
    pub(crate) async fn new(test: &str, app_name: &str) -> (Self, String) {
        Self::with_missing(test, app_name, &[]).await
    }

    /// [`Stage::new`] with boxes whose package mirror lacks `missing`.
    pub(crate) async fn with_missing(
        test: &str,
        app_name: &str,
        missing: &[&str],
    ) -> (Self, String) {
        let moto = moto_endpoint();
        let pebble = pebble();
        let git = GitServer::start().await;
        let moto_port: u16 = moto.rsplit(':').next().unwrap().parse().unwrap();
        let cloud = Cloud::start(
            &moto,
            BoxConfig {
                forwards: vec![moto_port, git.port],
                git_base: Some(git.base()),
                env: vec![
                    ("AWS_ENDPOINT_URL".into(), moto.clone()),
                    ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
                    ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                ],
                missing_packages: missing.iter().map(|p| (*p).to_owned()).collect(),
            }
            .with_npm_registry(),
        )
        .await;
        let mirror = Route53Mirror::start(&cloud.url, &pebble.challtestsrv, false).await;
        let ws = Workspace::new(&unique(test));
        let domain = format!("{}.test", ws.stack);
        let zone = hosted_zone(&domain).await;
        let repo = format!("acme/{}", ws.stack);
        let ca = tempfile::NamedTempFile::new().expect("CA file");
        std::fs::write(ca.path(), pebble.roots()).expect("Pebble's roots");
        let stage = Self {
            ws,
            cloud,
            git,
            github: GithubFake::start().await,
            pebble,
            mirror,
            domain,
            zone,
            repo,
            ca,
        };
        let sha = stage.push(app_name, &[]);
        (stage, sha)
    }

    /// Pushes `app` with `changes` to the repository's `main`; the GitHub
    /// fake reports the new head. Returns the commit id.
    pub(crate) fn push(&self, app_name: &str, changes: &[(&str, &str)]) -> String {
        let sha = self.git.push(&self.repo, &app(app_name), changes);
        let mut repos = self.github.repos.lock().unwrap();
        repos
            .branches
            .insert((self.repo.clone(), "main".to_owned()), sha.clone());
        // The contents API serves the head's package.json (the fake keeps one
        // version per path: the head's).
        if let Ok(package) = std::fs::read_to_string(app(app_name).join("package.json")) {
            repos
                .files
                .insert((self.repo.clone(), "package.json".to_owned()), package);
        }
        sha
    }

    /// `jaam ARGS` against the cloud, the GitHub fake and Pebble.
    pub(crate) async fn jaam(&self, args: &[&str]) -> Run {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || Run::from(command.output().expect("run jaam")))
            .await
            .expect("jaam")
    }

    /// The `jaam ARGS` command [`Stage::jaam`] runs.
    pub(crate) fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = self.ws.command(args);
        command
            .env("AWS_ENDPOINT_URL", &self.mirror.url)
            .env("GITHUB_API_URL", &self.github.url)
            .env("GITHUB_TOKEN", "ghp_test")
            .env("HOOK_SECRET", HOOK_SECRET);
        command
    }

    /// Puts `value` in Parameter Store (SecureString) as the stack's
    /// `/jaam/<stack>/<name>`; returns the parameter's name.
    pub(crate) async fn put_secret(&self, name: &str, value: &str) -> String {
        let parameter = format!("/jaam/{}/{name}", self.ws.stack);
        aws_sdk_ssm::Client::new(&jaam_tests::aws_config().await)
            .put_parameter()
            .name(&parameter)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .expect("PutParameter");
        parameter
    }

    /// The site spec, with `profile` as its instance profile (none: the
    /// site's own role); `extra` lines are added under `site.blog`. An
    /// empty `framework` names none (`auto`).
    pub(crate) fn write_site(&self, framework: &str, profile: Option<&str>, extra: &str) {
        let profile = profile
            .map(|name| format!("  iam_instance_profile: {name}\n"))
            .unwrap_or_default();
        let framework = if framework.is_empty() {
            String::new()
        } else {
            format!("  framework: {framework}\n")
        };
        self.ws.write_specs(&format!(
            "site.blog:\n  repo: {repo}\n{framework}  domain: blog.{domain}\n  zone: {domain}\n  \
             acme_directory: {directory}\n{profile}{extra}",
            repo = self.repo,
            domain = self.domain,
            directory = self.pebble.directory,
        ));
    }

    /// The site's webhook lines (under `site.blog`), so a daemon takes the
    /// test's signed pushes ([`HOOK_SECRET`]).
    pub(crate) fn webhook(&self) -> String {
        format!(
            "  webhook_url: https://jaam.{}/hooks/github\n  webhook_secret: ${{env.HOOK_SECRET}}\n",
            self.domain
        )
    }

    /// Delivers the signed push of `sha` (the repository's `main`) to
    /// `daemon`, which must accept it.
    pub(crate) fn deliver_push(&self, daemon: &Daemon, sha: &str) {
        let all = deliveries(HOOK_SECRET, &self.repo, "main", &[sha.to_owned()], None);
        let push = all.iter().find(|d| d.event == "push").expect("a push");
        let (status, body) = daemon.deliver(push);
        assert!(status == 200 || status == 202, "{status} {body}");
    }

    /// The A record's value for `blog.<domain>` in moto.
    pub(crate) async fn record_ip(&self) -> String {
        let name = format!("blog.{}", self.domain);
        zone_records(&self.zone)
            .await
            .into_iter()
            .find(|(n, kind, _)| *n == name && kind == "A")
            .and_then(|(_, _, values)| values.into_iter().next())
            .unwrap_or_else(|| panic!("no A record for {name}"))
    }

    /// The site's instance box (its first instance in state).
    pub(crate) fn instance_box(&self) -> std::sync::Arc<jaam_tests::boxes::InstanceBox> {
        let id = state(&self.ws)["resources"]["site.blog.instance"]["id"]
            .as_str()
            .expect("the instance in state")
            .to_owned();
        self.cloud
            .machine(&id)
            .and_then(|machine| machine.instance_box())
            .expect("the instance's box is booted")
    }

    /// GET `scheme://blog.<domain>/path`, resolved through the record, TLS
    /// verified against Pebble's roots.
    pub(crate) async fn get(&self, scheme: &str, path: &str) -> Seen {
        self.get_host(&format!("blog.{}", self.domain), scheme, path)
            .await
    }

    /// GET `scheme://host/path` at the site's address, TLS verified against
    /// Pebble's roots (a preview's host: the wildcard record points there).
    pub(crate) async fn get_host(&self, host: &str, scheme: &str, path: &str) -> Seen {
        let ip = self.record_ip().await;
        let port = if scheme == "https" { 443 } else { 80 };
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.ca.path())
            .arg("--resolve")
            .arg(format!("{host}:{port}:{ip}"))
            .args(["-w", "\n%{http_code} %{redirect_url}"])
            .arg(format!("{scheme}://{host}{path}"))
            .output()
            .await
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (status, location) = last.split_once(' ').unwrap_or((last, ""));
        Seen {
            status: status.parse().unwrap_or(0),
            body: body.to_owned(),
            location: location.to_owned(),
        }
    }
}

pub(crate) fn state(ws: &Workspace) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(ws.state()).expect("state")).expect("JSON")
}

/// Requests `https://blog.<domain>/` in a loop until stopped; counts what
/// was not a 200 and keeps every distinct body.
pub(crate) struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, usize, Vec<String>)>,
}

impl Prober {
    pub(crate) fn start(stage: &Stage, ip: String) -> Self {
        Self::spawn(stage, ip, true)
    }

    /// [`Prober::start`] accepting any certificate: Pebble's live 40 s (the
    /// renewal tests need that), less than a real framework's build, so
    /// across one the certificate expires. What it counts is the switch.
    pub(crate) fn start_any_certificate(stage: &Stage, ip: String) -> Self {
        Self::spawn(stage, ip, false)
    }

    fn spawn(stage: &Stage, ip: String, verify: bool) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let host = format!("blog.{}", stage.domain);
        let ca = stage.ca.path().to_owned();
        let flag = std::sync::Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut total, mut failed, mut bodies) = (0, 0, Vec::<String>::new());
            while !flag.load(Ordering::SeqCst) {
                let mut curl = tokio::process::Command::new("curl");
                curl.args(["-sS", "--max-time", "10"]);
                if verify {
                    curl.arg("--cacert").arg(&ca);
                } else {
                    curl.arg("--insecure");
                }
                let out = curl
                    .arg("--resolve")
                    .arg(format!("{host}:443:{ip}"))
                    .args(["-w", "\n%{http_code}"])
                    .arg(format!("https://{host}/"))
                    .output()
                    .await
                    .expect("curl");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
                total += 1;
                if status != "200" {
                    failed += 1;
                    eprintln!(
                        "probe failed: {status} {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let body = body.trim().to_owned();
                if !bodies.contains(&body) {
                    bodies.push(body);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (total, failed, bodies)
        });
        Self { stop, task }
    }

    pub(crate) async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("prober")
    }
}

pub(crate) const HOOK_SECRET: &str = "served-hook-secret-never-printed";

#[tokio::test(flavor = "multi_thread")]
async fn static_site_should_be_served_over_https_redeployed_and_rolled_back() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, first) = Stage::new("served", "static-spa").await;
    // No profile named: the site's own role is what lets the agent register.
    stage.write_site("static", None, &stage.webhook());

    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(0);
    let state = state(&stage.ws);
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["revision"],
        first.as_str()
    );
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["iam_instance_profile"],
        format!("jaam-site-blog.{}", stage.domain),
        "the instance runs with the site's own profile"
    );
    let page = stage.get("https", "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("hello from revision A"), "{page:?}");
    let route = stage.get("https", "/some/client/route").await;
    assert_eq!(
        route.status, 200,
        "client-side routes fall back to index.html"
    );
    let plain = stage.get("http", "/path?q=1").await;
    assert_eq!(plain.status, 301, "{plain:?}");
    assert_eq!(
        plain.location,
        format!("https://blog.{}/path?q=1", stage.domain)
    );

    // The daemon deploys a signed push; a client looping meanwhile sees no failure.
    let daemon = Daemon::start(
        stage.command(&["daemon"]),
        stage.ws.dir.path().join("daemon.log"),
    );
    let revision = |d: &Daemon| d.status()["revisions"]["blog"].as_str().map(str::to_owned);
    daemon.wait_until(
        "the daemon's first reconcile",
        Duration::from_secs(120),
        |d| revision(d).as_deref() == Some(first.as_str()),
    );
    let prober = Prober::start(&stage, stage.record_ip().await);
    let second = stage.push("static-spa", &[("message.txt", "hello from revision B\n")]);
    stage.deliver_push(&daemon, &second);
    daemon.wait_until(
        "the pushed commit deployed",
        Duration::from_secs(300),
        |d| revision(d).as_deref() == Some(second.as_str()),
    );
    let served = stage.get("https", "/").await;
    assert!(served.body.contains("hello from revision B"), "{served:?}");
    let (total, failed, bodies) = prober.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {total} requests failed during the switch"
    );
    assert!(
        bodies.iter().any(|b| b.contains("revision A"))
            && bodies.iter().any(|b| b.contains("revision B")),
        "the loop saw the switch: {bodies:?}"
    );
    assert_eq!(daemon.terminate(), Some(0));

    // A build that fails: the apply fails with the build's last lines and
    // the previous release keeps serving.
    let broken = stage.push(
        "static-spa",
        &[(
            "build.mjs",
            "console.log('compiling the broken page');\nthrow new Error('the build broke on purpose');\n",
        )],
    );
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(1);
    let text = run.squashed();
    assert!(
        text.contains(&format!("deploy of {broken} failed")),
        "{text}"
    );
    assert!(
        text.contains("compiling the broken page"),
        "the build's output: {text}"
    );
    assert!(text.contains("Error: the build broke on purpose"), "{text}");
    assert!(
        text.contains(&format!("build of {broken} failed; still serving {second}")),
        "{text}"
    );
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("hello from revision B")
    );

    // Rollback serves the release before.
    let run = stage.jaam(&["rollback", "site.blog"]).await;
    run.expect_code(0);
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("hello from revision A")
    );

    // The build log the agent shipped, read back with `jaam logs`.
    let lines = jaam_tests::eventually(
        "the build log in CloudWatch",
        Duration::from_secs(30),
        || async {
            let run = stage.jaam(&["logs", "site.blog", "--since", "1h"]).await;
            let text = run.stdout.clone();
            (text.contains("built: hello from revision B")
                && text.contains("the build broke on purpose"))
            .then_some(text)
        },
    )
    .await;
    assert!(lines.contains("build: npm run build"), "{lines}");
}

/// Issue 13: the site's files travel over SSM, not in user data. An `env`
/// edit is an update in place: the same instance gets the new env file and
/// serves a new release built with it. An instance set up by an older jaam
/// (another deploy script recorded and on the box) is brought to this jaam's
/// files in place, too.
#[tokio::test(flavor = "multi_thread")]
async fn env_edit_and_a_new_deploy_script_should_be_updates_in_place() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, first) = Stage::new("envedit", "static-spa").await;
    let title = |text: &str| format!("  env:\n    PUBLIC_TITLE: {text}\n");
    stage.write_site("static", None, &title("First title"));
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let page = stage.get("https", "/").await;
    assert!(page.body.contains("<title>First title</title>"), "{page:?}");
    let id = |stage: &Stage| {
        state(&stage.ws)["resources"]["site.blog.instance"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let instance = id(&stage);
    let machine = stage.cloud.machine(&instance).expect("the instance's box");
    let on_box = |path: &str| {
        std::fs::read_to_string(machine.instance_box().expect("booted").host_path(path))
            .unwrap_or_default()
    };
    assert!(on_box("/srv/jaam/blog/env").contains("PUBLIC_TITLE='First title'"));

    // The env edit: in place, shown as a change of the files.
    stage.write_site("static", None, &title("Second title"));
    let run = stage.jaam(&["plan"]).await;
    run.expect_code(0);
    let text = run.squashed();
    assert!(
        text.contains("# site.blog.instance will be updated in place"),
        "{text}"
    );
    assert!(!text.contains("must be replaced"), "{text}");
    assert!(
        text.contains("~ files[\"/srv/jaam/blog/env\"] = <<-EOT"),
        "{text}"
    );
    assert!(text.contains("- PUBLIC_TITLE='First title'"), "{text}");
    assert!(text.contains("+ PUBLIC_TITLE='Second title'"), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    assert_eq!(id(&stage), instance, "the same instance");
    assert!(on_box("/srv/jaam/blog/env").contains("PUBLIC_TITLE='Second title'"));
    let page = stage.get("https", "/").await;
    assert!(
        page.body.contains("<title>Second title</title>")
            && page.body.contains("hello from revision A"),
        "a new release of the same commit: {page:?}"
    );
    assert_eq!(
        state(&stage.ws)["resources"]["site.blog.instance"]["attributes"]["revision"],
        first.as_str()
    );

    // An older jaam's deploy script, recorded in state and on the instance.
    let deploy = "/opt/jaam/bin/deploy";
    let current = on_box(deploy);
    let older = current.replace(
        "(generated by jaam; do not edit)",
        "(generated by an older jaam)",
    );
    assert_ne!(older, current);
    let path = stage.ws.state();
    let mut recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    recorded["resources"]["site.blog.instance"]["attributes"]["files"][deploy] =
        serde_json::Value::String(older.clone());
    std::fs::write(&path, serde_json::to_string_pretty(&recorded).unwrap()).unwrap();
    let disk = machine.instance_box().expect("booted");
    std::fs::write(disk.host_path(deploy), &older).unwrap();
    std::fs::write(disk.host_path("/opt/jaam/files.version"), "older\n").unwrap();
    let run = stage.jaam(&["plan"]).await;
    run.expect_code(0);
    let text = run.squashed();
    assert!(
        text.contains("# site.blog.instance will be updated in place"),
        "{text}"
    );
    assert!(
        text.contains("- # jaam deploy script for site blog (generated by an older jaam)"),
        "{text}"
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    assert_eq!(id(&stage), instance, "the same instance");
    assert_eq!(
        on_box(deploy),
        current,
        "this jaam's deploy script on the instance"
    );
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(0);

    // An older jaam's boot script: the running instance keeps it (a note,
    // no replacement); `--replace` would take the new one.
    let mut recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    recorded["resources"]["site.blog.instance"]["attributes"]["user_data"] =
        serde_json::Value::String("#!/bin/bash\n# an older bootstrap\n".into());
    std::fs::write(&path, serde_json::to_string_pretty(&recorded).unwrap()).unwrap();
    let run = stage.jaam(&["plan", "--detailed-exitcode"]).await;
    run.expect_code(0);
    let text = run.squashed();
    assert!(
        text.contains("`site.blog.instance` keeps user_data = (")
            && text.contains("jaam apply --replace site.blog.instance"),
        "{text}"
    );
    assert!(text.contains("No changes."), "{text}");
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("<title>Second title</title>"),
        "still serving"
    );
}

/// A server app: deployed behind nginx, switched to a new commit without a
/// failed request, and serving again after an `instance_type` change (a
/// stop/start: new public IP, only enabled units come back), with the record
/// following the new IP in the same apply.
async fn server_app_should_switch_without_failures_and_survive_a_restart(
    app: &str,
    framework: &str,
) {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, _) = Stage::new(&format!("srv-{framework}"), app).await;
    stage.write_site(framework, None, "  instance_type: t3.micro\n");
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let page = stage.get("https", "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("hello from revision A"), "{page:?}");

    let prober = Prober::start(&stage, stage.record_ip().await);
    stage.push(app, &[("message.txt", "hello from revision B\n")]);
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let (total, failed, bodies) = prober.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {total} requests failed during the switch"
    );
    assert!(
        bodies.iter().any(|b| b.contains("revision B")),
        "the loop saw the new release: {bodies:?}"
    );

    let before = stage.record_ip().await;
    stage.write_site(framework, None, "  instance_type: t3.small\n");
    let plan = stage.jaam(&["plan"]).await;
    plan.expect_code(0);
    let text = plan.squashed();
    assert!(
        text.contains("~ site.blog.record {") && text.contains("(known after apply)"),
        "the record follows the instance's new IP: {text}"
    );
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(0);
    let after = stage.record_ip().await;
    assert_ne!(before, after, "a stop/start gives a new public IP");
    let state = state(&stage.ws);
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["public_ip"],
        after.as_str()
    );
    let page = stage.get("https", "/").await;
    assert_eq!(
        page.status, 200,
        "serving again after the restart: {page:?}"
    );
    assert!(page.body.contains("hello from revision B"), "{page:?}");
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_server_should_switch_without_failures_and_survive_a_restart() {
    server_app_should_switch_without_failures_and_survive_a_restart("node-server", "node").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nextjs_app_should_switch_without_failures_and_survive_a_restart() {
    server_app_should_switch_without_failures_and_survive_a_restart("next-shaped", "nextjs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_without_an_ssm_profile_should_fail_fast_naming_the_profile() {
    let _moto = jaam_tests::MOTO.read().await;
    // An instance told to serve a revision, with no instance profile.
    let (stage, sha) = Stage::new("noprofile", "static-spa").await;
    stage.ws.write_specs(&format!(
        "instance.web:\n  ami: ami-12c6146b\n  instance_type: t3.micro\n  revision: {sha}\n  \
         user_data: |\n    #!/bin/bash\n    true\n"
    ));
    let started = std::time::Instant::now();
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(1);
    let text = run.squashed();
    assert!(
        text.contains("has no instance profile (`iam_instance_profile`)"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );

    // A profile whose role does not allow SSM: the agent never registers,
    // and the error names the profile once the registration deadline passes.
    let (stage, _) = Stage::new("nossm", "static-spa").await;
    let denied = instance_profile(&format!("{}-denied", stage.ws.stack), false).await;
    stage.write_site("static", Some(&denied), "  https: false\n");
    let mut command = stage.command(&["apply", "--auto-approve"]);
    command.env("JAAM_SSM_REGISTRATION_TIMEOUT", "20");
    let run = tokio::task::spawn_blocking(move || Run::from(command.output().expect("jaam")))
        .await
        .unwrap();
    run.expect_code(1);
    let text = run.squashed();
    assert!(text.contains("did not register with SSM"), "{text}");
    assert!(
        text.contains(&format!("check instance profile `{denied}`")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_boot_script_should_fail_the_first_deploy_with_its_errors() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, _) = Stage::with_missing("badboot", "static-spa", &["nginx"]).await;
    stage.write_site("static", None, "  https: false\n");
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(1);
    let text = run.squashed();
    assert!(
        text.contains("the instance's boot script (user data) failed"),
        "{text}"
    );
    assert!(
        text.contains("Unable to find a match: nginx"),
        "the boot script's output: {text}"
    );
    assert!(
        !text.contains("No such file"),
        "not a missing deploy command: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_secret_should_fail_the_deploy_by_name_and_keep_the_running_environment() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, _) = Stage::new("secret", "node-server").await;
    let parameter = stage.put_secret("api-key", "first-secret-value").await;
    let ssm = aws_sdk_ssm::Client::new(&jaam_tests::aws_config().await);
    stage.write_site(
        "node",
        None,
        &format!("  https: false\n  secrets:\n    API_KEY: {parameter}\n"),
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let machine = stage.cloud.machines().pop().expect("one instance");
    let instance_box = machine.instance_box().expect("its box");
    let secrets = instance_box.host_path("/srv/jaam/blog/env.secrets");
    let before = std::fs::read_to_string(&secrets).expect("env.secrets");
    assert!(before.contains("API_KEY=first-secret-value"), "{before}");

    ssm.delete_parameter()
        .name(&parameter)
        .send()
        .await
        .expect("DeleteParameter");
    let next = stage.push("node-server", &[("message.txt", "hello from revision B\n")]);
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(1);
    let text = run.squashed();
    assert!(text.contains(&format!("deploy of {next} failed")), "{text}");
    assert!(
        text.contains(&format!(
            "cannot read secret API_KEY from SSM parameter {parameter}"
        )),
        "{text}"
    );
    assert!(!text.contains("first-secret-value"), "{text}");
    assert_eq!(std::fs::read_to_string(&secrets).unwrap(), before);
    let page = stage.get("http", "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("hello from revision A"), "{page:?}");
}
