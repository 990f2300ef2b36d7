//! Sites that are really served: `jaam` against moto + Pebble + the GitHub
//! fake, with every instance booted as a box (tests/boxes.rs), reached over
//! HTTPS through the Route53 record jaam wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jaam_tests::acme::{Pebble, Route53Mirror, pebble};
use jaam_tests::boxes::BoxConfig;
use jaam_tests::boxes::cloud::{Cloud, GitServer};
use jaam_tests::github::GithubFake;
use jaam_tests::{Run, Workspace, hosted_zone, moto_endpoint, unique, zone_records};

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

/// Creates a role and instance profile in moto's IAM (through the AWS CLI):
/// with the SSM core policy attached, or with only a CloudWatch Logs one.
pub(crate) async fn instance_profile(name: &str, allow_ssm: bool) -> String {
    let cli = jaam_tests::boxes::aws_cli().expect(
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
                extra_ca: None,
            },
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
        self.github
            .repos
            .lock()
            .unwrap()
            .branches
            .insert((self.repo.clone(), "main".to_owned()), sha.clone());
        sha
    }

    /// `jaam ARGS` against the cloud, the GitHub fake and Pebble.
    pub(crate) async fn jaam(&self, args: &[&str]) -> Run {
        let mut command = self.ws.command(args);
        command
            .env("AWS_ENDPOINT_URL", &self.mirror.url)
            .env("GITHUB_API_URL", &self.github.url)
            .env("GITHUB_TOKEN", "ghp_test");
        tokio::task::spawn_blocking(move || Run::from(command.output().expect("run jaam")))
            .await
            .expect("jaam")
    }

    /// The site spec: `extra` lines are added under `site.blog`.
    pub(crate) fn write_site(&self, framework: &str, profile: &str, extra: &str) {
        self.ws.write_specs(&format!(
            "site.blog:\n  repo: {repo}\n  framework: {framework}\n  domain: blog.{domain}\n  zone: {domain}\n  \
             acme_directory: {directory}\n  iam_instance_profile: {profile}\n{extra}",
            repo = self.repo,
            domain = self.domain,
            directory = self.pebble.directory,
        ));
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

    /// GET `scheme://blog.<domain>/path`, resolved through the record, TLS
    /// verified against Pebble's roots.
    pub(crate) async fn get(&self, scheme: &str, path: &str) -> Seen {
        let ip = self.record_ip().await;
        let host = format!("blog.{}", self.domain);
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

fn state(ws: &Workspace) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(ws.state()).expect("state")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn static_site_should_be_served_over_https_redeployed_and_rolled_back() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, first) = Stage::new("served", "static-spa").await;
    let profile = instance_profile(&format!("{}-web", stage.ws.stack), true).await;
    stage.write_site("static", &profile, "");

    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(0);
    let state = state(&stage.ws);
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["revision"],
        first.as_str()
    );
    let page = stage.get("https", "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("<h1"), "{page:?}");
    let route = stage.get("https", "/some/client/route").await;
    assert_eq!(route.status, 200, "client-side routes fall back to index.html");
    let plain = stage.get("http", "/path?q=1").await;
    assert_eq!(plain.status, 301, "{plain:?}");
    assert_eq!(
        plain.location,
        format!("https://blog.{}/path?q=1", stage.domain)
    );
}
