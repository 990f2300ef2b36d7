//! `site`: the generated scripts linted with shellcheck, the deploy script run
//! for real against local git repositories of the sample apps behind Debian's
//! nginx, and the whole site applied against moto.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jaam_core::spec::site::{self, NginxLayout, Site};
use jaam_core::value::{Attrs, Value};

fn sample_site(name: &str, framework: &str, extra: &[(&str, Value)]) -> Site {
    let mut attrs = Attrs::from([
        ("repo".to_owned(), Value::from("acme/app")),
        ("framework".to_owned(), Value::from(framework)),
        ("domain".to_owned(), Value::from("app.example.test")),
        ("zone".to_owned(), Value::from("example.test")),
    ]);
    for (key, value) in extra {
        attrs.insert((*key).to_owned(), value.clone());
    }
    Site::from_attrs(name, &attrs)
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "this test needs `{name}`: run it through `./scripts/test`, which installs it from Debian"
    )
}

#[test]
fn every_generated_script_should_pass_shellcheck() {
    let shellcheck = tool("shellcheck");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for framework in ["auto", "static", "nextjs", "node", "auto-with-previews"] {
        let previews = Value::Map([("enabled".to_owned(), Value::Bool(true))].into());
        let site = sample_site(
            "blog",
            framework.trim_end_matches("-with-previews"),
            &[
                (
                    "previews",
                    if framework.ends_with("previews") {
                        previews
                    } else {
                        Value::Null
                    },
                ),
                (
                    "env",
                    Value::Map([("TITLE".to_owned(), Value::from("it's \"quoted\""))].into()),
                ),
                (
                    "secrets",
                    Value::Map([("API_KEY".to_owned(), Value::from("/blog/api-key"))].into()),
                ),
            ],
        );
        for (name, text) in site::scripts(&site) {
            let path = dir.path().join(format!("{framework}-{name}.sh"));
            std::fs::write(&path, &text).unwrap();
            let output = Command::new(&shellcheck)
                .args(["--shell=bash", "--severity=style"])
                .arg(&path)
                .output()
                .expect("run shellcheck");
            assert!(
                output.status.success(),
                "shellcheck {framework}/{name}:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 25);
}

/// Issue 11, item 4: a secret that cannot be read fails the deploy by name and
/// leaves the env file of the running release as it was.
#[test]
fn fetch_secrets_should_fail_by_name_and_keep_the_old_file_when_a_read_fails() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    // An `aws` stand-in: answers parameters under /ok/, fails the rest as the
    // CLI does for a missing parameter or a revoked permission.
    let aws = bin.join("aws");
    std::fs::write(
        &aws,
        "#!/bin/bash\nname=''\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --name ]; then name=$2; fi\n  shift\ndone\n\
         case \"$name\" in\n  /ok/*) printf 'value of %s with $(id) and spaces\\n' \"$name\" ;;\n  \
         *) echo 'An error occurred (ParameterNotFound) when calling the GetParameter operation' >&2; exit 254 ;;\nesac\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&aws)
        .status()
        .unwrap();
    let run = |secrets: &[(&str, &str)]| {
        let site = sample_site(
            "blog",
            "static",
            &[(
                "secrets",
                Value::Map(
                    secrets
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                        .collect(),
                ),
            )],
        );
        let script = dir.path().join("fetch-secrets");
        std::fs::write(&script, site::fetch_secrets_script(&site)).unwrap();
        Command::new("bash")
            .arg(&script)
            .env("JAAM_SITE_ROOT", &root)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap()
    };
    let file = root.join("env.secrets");

    let output = run(&[("API_KEY", "/ok/api"), ("DB_URL", "/ok/db")]);
    assert!(output.status.success(), "{output:?}");
    let good = std::fs::read_to_string(&file).unwrap();
    assert!(good.contains("API_KEY="), "{good}");
    assert!(good.contains("DB_URL="), "{good}");
    // The values are quoted for the shell that sources the file.
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && printf %s \"$API_KEY\"", file.display()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sourced.stdout),
        "value of /ok/api with $(id) and spaces"
    );

    // One of three parameters is missing: the script fails naming it, and the
    // good file stays byte for byte.
    let output = run(&[
        ("API_KEY", "/ok/api"),
        ("DB_URL", "/missing/db"),
        ("TOKEN", "/ok/token"),
    ]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/missing/db"), "{stderr}");
    assert!(stderr.contains("DB_URL"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), good);
    assert!(!root.join("env.secrets.new").exists());
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=jaam", "-c", "user.email=jaam@example.test"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A work tree of a sample app with a bare repository to deploy from.
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    fn new(dir: &Path, app: &str) -> Self {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/apps")
            .join(app);
        let work = dir.join("work");
        copy_dir(&source, &work);
        git(&work, &["init", "-q", "-b", "main"]);
        let bare = dir.join("app.git");
        let repo = Self { work, bare };
        repo.commit("hello from revision A");
        git(
            dir,
            &["clone", "-q", "--bare", "work", bare_name(&repo.bare)],
        );
        repo
    }

    /// Commits a new message (and optionally other files); returns the sha.
    fn commit(&self, message: &str) -> String {
        std::fs::write(self.work.join("message.txt"), format!("{message}\n")).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        if self.bare.exists() {
            git(
                &self.work,
                &["push", "-q", self.bare.to_str().unwrap(), "main"],
            );
        }
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn bare_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`: the status and body, or `None` on a
/// connection error.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: app.example.test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// nginx on a loopback port, serving the site's generated configuration.
struct Nginx {
    conf: PathBuf,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path, site: &Site, root: &Path) -> Self {
        let nginx = tool("nginx");
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let port = free_port();
        let layout = NginxLayout {
            listen: format!("127.0.0.1:{port}"),
            root: root.display().to_string(),
        };
        std::fs::write(prefix.join("site.conf"), site::nginx_conf(site, &layout)).unwrap();
        // What the user data does before the first deploy: point the upstream somewhere.
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(
            root.join("upstream.conf"),
            format!("server 127.0.0.1:{};\n", site.port),
        )
        .unwrap();
        // And what the site's `configure` does: both ways of serving, the
        // framework's in place, `www` pointing at the static output.
        for (mode, server) in [("static", false), ("server", true)] {
            std::fs::write(
                root.join(format!("serve-{mode}.conf")),
                site::serve_conf(site, &layout.root, server),
            )
            .unwrap();
        }
        let mode = if site.framework.is_server() {
            "server"
        } else {
            "static"
        };
        std::fs::copy(
            root.join(format!("serve-{mode}.conf")),
            root.join("serve.conf"),
        )
        .unwrap();
        let _ = std::fs::remove_file(root.join("www"));
        std::os::unix::fs::symlink(
            format!("current/{}", site.commands.output_dir),
            root.join("www"),
        )
        .unwrap();
        // As root the workers must run as root to read the temp directories.
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "{user}worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{}}\n\
                 http {{\n    access_log off;\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;\n    \
                 fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n    \
                 include {p}/site.conf;\n}}\n",
                user = if is_root { "user root;\n" } else { "" },
                p = prefix.display()
            ),
        )
        .unwrap();
        let output = Command::new(&nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&prefix)
            .output()
            .expect("start nginx");
        assert!(
            output.status.success(),
            "nginx: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { conf, prefix, port }
    }

    fn reload_command(&self) -> String {
        format!(
            "{} -c {} -p {} -s reload",
            tool("nginx").display(),
            self.conf.display(),
            self.prefix.display()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(tool("nginx"))
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(&self.prefix)
            .args(["-s", "quit"])
            .output();
    }
}

/// The user the deploy tests build and run apps as (the site's own system
/// user on an instance; `nobody` here, which exists everywhere).
const SITE_USER: &str = "nobody";

/// A temporary directory the site's user may enter (tempdirs are 0700).
fn site_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs the deploy script with `args`.
fn deploy(script: &Path, root: &Path, nginx: &Nginx, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(script)
        .args(args)
        .env("JAAM_SITE_ROOT", root)
        .env("JAAM_SITE_USER", SITE_USER)
        .env("JAAM_NO_SYSTEMD", "1")
        .env("JAAM_NGINX_RELOAD", nginx.reload_command())
        .env("JAAM_FETCH_SECRETS", "/nonexistent")
        .output()
        .expect("run deploy")
}

/// Requests in a loop until stopped: how many failed, and every body seen in order.
fn hammer(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut failed, mut total) = (0, 0);
        let mut seen: Vec<String> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            total += 1;
            match get(port, "/") {
                Some((200, body)) => {
                    if seen.last() != Some(&body) {
                        seen.push(body);
                    }
                }
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (failed, total, seen)
    })
}

fn run_deploy_cycle(app: &str, framework: &str, needle: impl Fn(&str) -> bool) {
    let dir = site_dir();
    let repo = Repo::new(dir.path(), app);
    let a = git(&repo.work, &["rev-parse", "HEAD"]);
    let root = dir.path().join("site");
    let port = jaam_tests::free_port_pair();
    let site = sample_site(
        "sample",
        framework,
        &[
            ("repo_url", Value::from(repo.bare.to_str().unwrap())),
            ("port", Value::Int(i64::from(port))),
            ("keep_releases", Value::Int(2)),
        ],
    );
    let script = dir.path().join("deploy");
    std::fs::write(&script, site::deploy_script(&site, &site.root())).unwrap();
    let nginx = Nginx::start(dir.path(), &site, &root);
    let _cleanup = scopeguard(root.clone());

    // Revision A is served.
    let output = deploy(&script, &root, &nginx, &[&a]);
    assert!(
        output.status.success(),
        "deploy A: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, body) = get(nginx.port, "/").expect("nginx answers");
    assert_eq!(status, 200);
    assert!(body.contains("revision A"), "{body}");
    assert!(needle(&body), "{body}");
    if framework == "static" {
        // Client-side routes fall back to index.html.
        let (status, body) = get(nginx.port, "/about/team").expect("nginx answers");
        assert_eq!(status, 200);
        assert!(body.contains("revision A"), "{body}");
    }

    // Revision B replaces it while requests keep coming: none fails.
    let b = repo.commit("hello from revision B");
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(nginx.port, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    let output = deploy(&script, &root, &nginx, &[&b]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (failed, total, seen) = client.join().unwrap();
    assert!(
        output.status.success(),
        "deploy B: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        failed, 0,
        "{failed} of {total} requests failed during the switch"
    );
    assert!(total > 20, "the client kept asking ({total} requests)");
    // Only A and B were ever served, starting with A and ending with B. (While
    // nginx reloads gracefully, an old worker may still take a connection for
    // a few milliseconds, so a server app's answers may alternate briefly.)
    assert!(
        seen.first().is_some_and(|body| body.contains("revision A")),
        "{seen:?}"
    );
    assert!(
        seen.last().is_some_and(|body| body.contains("revision B")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|body| body.contains("revision A") || body.contains("revision B")),
        "{seen:?}"
    );
    if framework == "static" {
        assert_eq!(
            seen.len(),
            2,
            "one symlink rename switches at once: {seen:?}"
        );
    }

    // A build that fails leaves B serving, and says why.
    std::fs::write(
        repo.work.join("package.json"),
        r#"{"name":"broken","private":true,"scripts":{"build":"node -e \"console.error('the build broke'); process.exit(3)\"","start":"node -e \"process.exit(3)\""}}"#,
    )
    .unwrap();
    let c = repo.commit("hello from revision C");
    let output = deploy(&script, &root, &nginx, &[&c]);
    assert!(!output.status.success(), "a failed build fails the deploy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("build of {c} failed; still serving {b}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("the build broke"),
        "the build log's tail: {stderr}"
    );
    assert!(get(nginx.port, "/").unwrap().1.contains("revision B"));
    let current = deploy(&script, &root, &nginx, &["current"]);
    assert_eq!(String::from_utf8_lossy(&current.stdout).trim(), b);

    // Rollback returns to A at once (no build).
    let output = deploy(&script, &root, &nginx, &["rollback"]);
    assert!(
        output.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(get(nginx.port, "/").unwrap().1.contains("revision A"));
    // Two releases kept, never a half-built one.
    let releases: Vec<String> = std::fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        releases.iter().all(|name| !name.starts_with('.')),
        "{releases:?}"
    );
    // A release is named by its commit and its build key.
    let has = |sha: &str| releases.iter().any(|r| r.starts_with(&format!("{sha}-")));
    assert!(has(&a) && has(&b), "{releases:?}");
    assert!(!has(&c), "{releases:?}");
    assert!(
        std::fs::read_to_string(root.join("logs/build.log"))
            .unwrap()
            .contains("the build broke")
    );
}

/// Stops the sample app processes when a test ends, passed or not.
fn scopeguard(root: PathBuf) -> impl Drop {
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            jaam_tests::stop_site_apps(&self.0);
        }
    }
    Guard(root)
}

#[test]
fn deploy_script_should_switch_a_static_app_atomically_and_roll_back() {
    run_deploy_cycle("static-spa", "static", |body| body.contains("<h1"));
}

#[test]
fn deploy_script_should_switch_a_node_server_without_dropping_requests() {
    run_deploy_cycle("node-server", "node", |body| !body.contains("<h1"));
}

/// Issue 17, `framework: auto`: the instance detects each commit's framework
/// and serves it the way it needs, so a repository that turns from a static
/// app into a Node server is served by proxy from that commit on, and a
/// rollback serves the static release as it was built (with nginx's
/// `serve.conf` following).
#[test]
fn deploy_script_should_serve_each_commit_as_auto_detects_it() {
    let dir = site_dir();
    let repo = Repo::new(dir.path(), "static-spa");
    let a = git(&repo.work, &["rev-parse", "HEAD"]);
    let root = dir.path().join("site");
    let port = jaam_tests::free_port_pair();
    let site = sample_site(
        "sample",
        "auto",
        &[
            ("repo_url", Value::from(repo.bare.to_str().unwrap())),
            ("port", Value::Int(i64::from(port))),
        ],
    );
    let script = dir.path().join("deploy");
    std::fs::write(&script, site::deploy_script(&site, &site.root())).unwrap();
    let nginx = Nginx::start(dir.path(), &site, &root);
    let _cleanup = scopeguard(root.clone());
    let log = || std::fs::read_to_string(root.join("logs/build.log")).unwrap_or_default();

    let output = deploy(&script, &root, &nginx, &[&a]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        log().contains(
            "framework: static (auto: no framework dependency and no start script in package.json)"
        ),
        "{}",
        log()
    );
    let (status, body) = get(nginx.port, "/about/team").expect("nginx answers");
    assert_eq!(status, 200);
    assert!(
        body.contains("<h1") && body.contains("revision A"),
        "{body}"
    );

    // The repository becomes a Node server.
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/node-server");
    for file in ["server.js", "package.json", "package-lock.json"] {
        std::fs::copy(server.join(file), repo.work.join(file)).unwrap();
    }
    let b = repo.commit("hello from revision B");
    let output = deploy(&script, &root, &nginx, &[&b]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        log().contains("framework: node (auto: package.json has a `start` script)"),
        "{}",
        log()
    );
    let (status, body) = get(nginx.port, "/").expect("nginx answers");
    assert_eq!(status, 200);
    assert_eq!(
        body.trim(),
        "hello from revision B",
        "served by the Node server"
    );
    assert!(
        std::fs::read_to_string(root.join("serve.conf"))
            .unwrap()
            .contains("proxy_pass")
    );

    // A rollback serves the static release as it was built; the server stops.
    let output = deploy(&script, &root, &nginx, &["rollback"]);
    assert!(output.status.success(), "{output:?}");
    let (status, body) = get(nginx.port, "/").expect("nginx answers");
    assert_eq!(status, 200);
    assert!(
        body.contains("<h1") && body.contains("revision A"),
        "{body}"
    );
    assert!(
        std::fs::read_to_string(root.join("serve.conf"))
            .unwrap()
            .contains("try_files")
    );
    assert!(!root.join("run/port").exists(), "no server app is active");
}

// --- The whole site against moto, Pebble and a GitHub fake -----------------

use jaam_tests::acme::{Route53Mirror, pebble};
use jaam_tests::github::GithubFake;
use jaam_tests::{Run, Workspace, aws_config, hosted_zone, moto_endpoint, unique};

fn random_sha() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].repeat(2)
}

struct SiteEnv {
    ws: Workspace,
    github: GithubFake,
    aws: String,
}

impl SiteEnv {
    fn jaam(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run jaam"))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.ws.command(args);
        command
            .env("AWS_ENDPOINT_URL", &self.aws)
            .env("GITHUB_API_URL", &self.github.url)
            .env("GITHUB_TOKEN", "ghp_test")
            .env("HOOK_SECRET", "site-hook-secret-never-printed");
        command
    }

    fn set_head(&self, repo: &str, sha: &str) {
        self.github.set_head(repo, "main", sha);
    }
}

fn site_spec(stack: &str, domain: &str, directory: &str) -> String {
    format!(
        "site.blog:\n  repo: acme/{stack}\n  framework: static\n  domain: blog.{domain}\n  zone: {domain}\n  \
         acme_directory: {directory}\n  webhook_url: https://jaam.{domain}/hooks/github\n  \
         webhook_secret: ${{env.HOOK_SECRET}}\n"
    )
}

/// Commands sent to `instance` whose parameters mention `needle`.
async fn commands_with(instance: &str, needle: &str) -> Vec<String> {
    let ssm = aws_sdk_ssm::Client::new(&aws_config().await);
    let mut out = Vec::new();
    let mut pages = ssm
        .list_commands()
        .instance_id(instance)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for command in page.expect("ListCommands").commands() {
            let script = command
                .parameters()
                .and_then(|p| p.get("commands"))
                .map(|lines| lines.join("\n"))
                .unwrap_or_default();
            if script.contains(needle) {
                out.push(script);
            }
        }
    }
    out
}

fn position(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn site_should_apply_redeploy_roll_back_show_logs_and_destroy() {
    let moto = moto_endpoint();
    let pebble = pebble();
    let _moto = jaam_tests::MOTO.read().await;
    let mirror = Route53Mirror::start(&moto, &pebble.challtestsrv, false).await;
    let env = SiteEnv {
        ws: Workspace::new(&unique("site")),
        github: GithubFake::start().await,
        aws: mirror.url.clone(),
    };
    let stack = env.ws.stack.clone();
    let repo = format!("acme/{stack}");
    let domain = format!("{stack}.test");
    hosted_zone(&domain).await;
    let a = random_sha();
    env.set_head(&repo, &a);
    // From nothing but a hosted zone: the site brings its role and group.
    env.ws
        .write_specs(&site_spec(&stack, &domain, &pebble.directory));

    // The plan shows the expansion, with the branch head resolved.
    let run = env.jaam(&["plan"]);
    run.expect_code(0);
    let text = run.squashed();
    for kind in [
        "log_group",
        "iam_role",
        "security_group",
        "instance",
        "record",
        "certificate",
        "webhook",
    ] {
        assert!(
            text.contains(&format!("# site.blog.{kind} will be created")),
            "{kind}: {text}"
        );
    }
    assert!(text.contains(&format!("+ revision = \"{a}\"")), "{text}");
    // Generated user data is summarized; `--full` prints it as a heredoc.
    assert!(text.contains("+ user_data = (generated: "), "{text}");
    assert!(
        !text.contains("\\n"),
        "no escaped multi-line strings: {text}"
    );
    let full = env.jaam(&["plan", "--full"]);
    full.expect_code(0);
    assert!(
        full.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("+ user_data") && l.ends_with("= <<-EOT")),
        "{}",
        full.stdout
    );
    assert!(
        full.stdout.contains("            #!/bin/bash"),
        "{}",
        full.stdout
    );
    let graph = env.jaam(&["graph"]);
    graph.expect_code(0);
    assert!(
        graph
            .stdout
            .contains("\"site.blog.record\" -> \"site.blog.instance\""),
        "{}",
        graph.stdout
    );

    let run = env.jaam(&["apply", "--auto-approve"]);
    run.expect_code(0);
    let log = &run.stderr;
    assert!(
        position(log, "site.blog.log_group: Creation complete")
            < position(log, "site.blog.instance: Creating...")
    );
    assert!(
        position(log, "site.blog.instance: Creation complete")
            < position(log, "site.blog.record: Creating...")
    );
    for first in ["iam_role", "security_group"] {
        assert!(
            position(log, &format!("site.blog.{first}: Creation complete"))
                < position(log, "site.blog.instance: Creating..."),
            "{first} before the instance"
        );
    }
    assert!(
        position(log, "site.blog.instance: Creation complete")
            < position(log, "site.blog.certificate: Creating...")
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.ws.state()).unwrap()).unwrap();
    let instance = state["resources"]["site.blog.instance"]["id"]
        .as_str()
        .expect("instance recorded")
        .to_owned();
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["revision"],
        a.as_str()
    );
    assert_eq!(
        commands_with(&instance, &format!("deploy {a}")).await.len(),
        1
    );
    assert_eq!(
        commands_with(
            &instance,
            &format!("/jaam/{stack}/site.blog.certificate/private_key")
        )
        .await
        .len(),
        1,
        "the certificate was installed on the instance"
    );
    assert_eq!(env.github.hooks(&repo).len(), 1);
    // The site's role reads its own stack's certificate parameters only.
    let policy = tokio::process::Command::new(jaam_tests::boxes::aws_cli().expect("aws CLI"))
        .args([
            "iam",
            "get-role-policy",
            "--policy-name",
            "jaam-site",
            "--role-name",
        ])
        .arg(format!("jaam-site-blog.{domain}"))
        .output()
        .await
        .unwrap();
    let policy = String::from_utf8_lossy(&policy.stdout).into_owned();
    assert!(
        policy.contains(&format!("parameter/jaam/{stack}/site.blog.certificate/*")),
        "{policy}"
    );
    assert!(
        !std::fs::read_to_string(env.ws.state())
            .unwrap()
            .contains("site-hook-secret")
    );
    env.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // A merge moves the branch: one in-place update, one deploy command.
    let b = random_sha();
    env.set_head(&repo, &b);
    let run = env.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(text.contains("~ site.blog.instance {"), "{text}");
    assert!(
        text.contains(&format!("~ revision = \"{a}\" -> \"{b}\"")),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    env.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let deploys = commands_with(&instance, &format!("deploy {b}")).await;
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert!(
        deploys[0].starts_with("if command -v cloud-init")
            && deploys[0].ends_with(&format!("\nexec /opt/jaam/bin/deploy {b}")),
        "a deploy waits for the boot script, then runs the deploy command: {deploys:?}"
    );
    env.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Rollback runs the deploy script's rollback on the instance.
    let run = env.jaam(&["rollback", "site.blog"]);
    run.expect_code(0);
    assert!(run.stderr.contains("rollback complete"), "{}", run.stderr);
    assert_eq!(
        commands_with(&instance, "/opt/jaam/bin/deploy rollback")
            .await
            .len(),
        1
    );

    // Logs: what the agent ships, then new events while following.
    let group = format!("/jaam/sites/blog.{domain}");
    let logs = jaam_tests::logs_client().await;
    let put = |message: &'static str| jaam_tests::put_log_event(&group, "build", message);
    put("npm run build: compiled 12 pages").await;
    let run = env.jaam(&["logs", "site.blog", "--since", "1h"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("build  npm run build: compiled 12 pages"),
        "{}",
        run.stdout
    );
    let mut follower = env
        .command(&["logs", "site.blog", "--follow", "--since", "1h"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn jaam logs --follow");
    let stdout = follower.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let first = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("the old event");
    assert!(first.contains("compiled 12 pages"), "{first}");
    put("deploy: serving the new release").await;
    let next = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("the new event");
    assert!(next.contains("serving the new release"), "{next}");
    follower.kill().ok();
    follower.wait().ok();

    // Destroy removes everything.
    env.jaam(&["destroy", "--auto-approve"]).expect_code(0);
    assert!(env.github.hooks(&repo).is_empty());
    assert!(jaam_tests::stack_instances(&stack).await.is_empty());
    assert!(jaam_tests::log_groups(&logs, &group).await.is_empty());
    let groups = jaam_tests::ec2_client()
        .await
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(format!("jaam-site-blog.{domain}"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        groups.security_groups().is_empty(),
        "the site's group is gone"
    );
    let role = tokio::process::Command::new(jaam_tests::boxes::aws_cli().expect("aws CLI"))
        .args(["iam", "get-role", "--role-name"])
        .arg(format!("jaam-site-blog.{domain}"))
        .output()
        .await
        .unwrap();
    assert!(!role.status.success(), "the site's role is gone");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.ws.state()).unwrap()).unwrap();
    assert_eq!(state["resources"], serde_json::json!({}));
}

/// moto runs no command, so a failing build is injected: GetCommandInvocation
/// answers `Failed` with a build log's tail, as SSM does for a failed deploy.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deploy_should_fail_the_apply_with_the_build_log_and_keep_the_revision() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let stack = unique("sitefail");
    let bad = random_sha();
    let needle = bad.clone();
    let answer: jaam_tests::Answer = std::sync::Arc::new(move |head: &str, body: &str| {
        let is_invocation = head.contains("x-amz-target: amazonssm.getcommandinvocation");
        // Only this test's bad revision fails: its command id is not known here,
        // so every invocation looked up while the bad deploy runs is failed.
        if !(is_invocation && FAILING.lock().unwrap().as_deref() == Some(needle.as_str())) {
            return jaam_tests::Intercept::Forward;
        }
        jaam_tests::Intercept::failed_invocation(
            body,
            "> build\nsrc/App.tsx(3,1): error TS2304: Cannot find name 'oops'.\n",
            &format!("error: build of {needle} failed; still serving the previous release"),
        )
    });
    let proxy = jaam_tests::InterceptProxy::start(&moto, answer).await;
    let env = SiteEnv {
        ws: Workspace::new(&stack),
        github: GithubFake::start().await,
        aws: proxy.url.clone(),
    };
    let repo = format!("acme/{stack}");
    let domain = format!("{stack}.test");
    hosted_zone(&domain).await;
    let good = random_sha();
    env.set_head(&repo, &good);
    env.ws.write_specs(&format!(
        "site.blog:\n  repo: {repo}\n  domain: blog.{domain}\n  zone: {domain}\n  https: false\n  \
         iam_instance_profile: {}\n",
        jaam_tests::ssm_profile().await
    ));
    env.jaam(&["apply", "--auto-approve"]).expect_code(0);

    env.set_head(&repo, &bad);
    *FAILING.lock().unwrap() = Some(bad.clone());
    let run = env.jaam(&["apply", "--auto-approve"]);
    *FAILING.lock().unwrap() = None;
    run.expect_code(1);
    let text = run.squashed();
    assert!(text.contains(&format!("deploy of {bad} failed")), "{text}");
    assert!(
        text.contains("error TS2304: Cannot find name 'oops'."),
        "the build log's tail: {text}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.ws.state()).unwrap()).unwrap();
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["revision"],
        good.as_str(),
        "state keeps the revision that serves"
    );
    let run = env.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    assert!(
        run.squashed()
            .contains(&format!("~ revision = \"{good}\" -> \"{bad}\""))
    );

    // Issue 16, item 1: the deploy history holds the deploy, the failed build
    // (with its last lines) and a rollback, newest first.
    env.jaam(&["rollback", "site.blog"]).expect_code(0);
    let run = env.jaam(&["deployments", "site.blog", "--json"]);
    run.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["trigger"], "rollback");
    assert_eq!(rows[0]["result"], "succeeded");
    assert_eq!(rows[0]["previous"], good.as_str());
    assert_eq!(rows[1]["trigger"], "cli");
    assert_eq!(rows[1]["result"], "failed");
    assert_eq!(rows[1]["revision"], bad.as_str());
    assert_eq!(rows[1]["previous"], good.as_str());
    assert!(
        rows[1]["error"]
            .as_str()
            .unwrap()
            .contains("error TS2304: Cannot find name 'oops'."),
        "{rows:?}"
    );
    assert_eq!(rows[2]["result"], "succeeded");
    assert_eq!(rows[2]["revision"], good.as_str());
    assert!(
        rows[2].get("previous").is_none(),
        "the first deploy: {rows:?}"
    );
    let table = env.jaam(&["deployments", "site.blog"]);
    table.expect_code(0);
    assert!(table.stdout.starts_with("STARTED"), "{}", table.stdout);
    assert_eq!(
        table.stdout.lines().filter(|l| l.contains("cli")).count(),
        2
    );
    env.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

static FAILING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Serves the bare repository `bare` over git's dumb HTTP protocol on
/// loopback, answering 401 to any request without `authorization` (the whole
/// header value). Returns the port; the thread serves until the test ends.
fn serve_private_repo(bare: PathBuf, authorization: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let authorized = head
                .lines()
                .any(|line| line.eq_ignore_ascii_case(&format!("authorization: {authorization}")));
            let file = path
                .split('?')
                .next()
                .and_then(|p| p.strip_prefix("/app.git/"))
                .filter(|p| !p.contains(".."))
                .map(|p| bare.join(p));
            let response: Vec<u8> = match (authorized, file.and_then(|f| std::fs::read(f).ok())) {
                (false, _) => b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"private\"\r\ncontent-length: 0\r\n\r\n".to_vec(),
                (true, Some(body)) => {
                    let mut out = format!("HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                    out.extend(body);
                    out
                }
                (true, None) => b"HTTP/1.0 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    port
}

/// Issue 11, item 6: a private repository is fetched with a token read from
/// Parameter Store on the instance and given to git through its environment:
/// never in argv, the generated script, the build log or the output.
#[test]
fn a_private_repository_should_be_fetched_with_a_token_that_never_leaks() {
    const TOKEN: &str = "ghp_private-repo-token-0123456789";
    let dir = site_dir();
    let repo = Repo::new(dir.path(), "static-spa");
    git(&repo.bare, &["update-server-info"]);
    let a = git(&repo.work, &["rev-parse", "HEAD"]);
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    };
    let port = serve_private_repo(repo.bare.clone(), format!("Basic {basic}"));

    // Stand-ins on PATH: `aws` answers the token parameter, `git` logs its argv.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv_log = dir.path().join("argv.log");
    std::fs::write(
        bin.join("aws"),
        "#!/bin/bash\nname=''\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --name ]; then name=$2; fi\n  shift\ndone\n\
         case \"$name\" in\n  /blog/repo-token) echo '".to_owned() + TOKEN + "' ;;\n  \
         *) echo 'An error occurred (ParameterNotFound)' >&2; exit 254 ;;\nesac\n",
    )
    .unwrap();
    std::fs::write(
        bin.join("git"),
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"$*\" >>{}\nexec {} \"$@\"\n",
            argv_log.display(),
            tool("git").display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("aws"))
        .arg(bin.join("git"))
        .status()
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let url = format!("http://127.0.0.1:{port}/app.git");

    let run = |name: &str, token: Option<&str>| {
        let mut extra = vec![("repo_url", Value::from(url.as_str()))];
        if let Some(token) = token {
            extra.push(("repo_token", Value::from(token)));
        }
        let site = sample_site(name, "static", &extra);
        let script_text = site::deploy_script(&site, &site.root());
        assert!(!script_text.contains(TOKEN) && !script_text.contains(&basic));
        let script = dir.path().join(format!("deploy-{name}"));
        std::fs::write(&script, &script_text).unwrap();
        let root = dir.path().join(name);
        let nginx = Nginx::start(&dir.path().join(format!("nginx-{name}")), &site, &root);
        let output = Command::new("bash")
            .arg(&script)
            .arg(&a)
            .env("PATH", &path)
            .env("JAAM_SITE_ROOT", &root)
            .env("JAAM_SITE_USER", SITE_USER)
            .env("JAAM_NO_SYSTEMD", "1")
            .env("JAAM_NGINX_RELOAD", nginx.reload_command())
            .env("JAAM_FETCH_SECRETS", "/nonexistent")
            .output()
            .unwrap();
        let log = std::fs::read_to_string(root.join("logs/build.log")).unwrap_or_default();
        (output, log, nginx)
    };

    // Without a token the server refuses: the deploy fails, saying so.
    let (output, _, _) = run("public", None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("could not fetch"));
    // A token parameter that cannot be read fails by name.
    let (output, _, _) = run("missing", Some("/blog/other-token"));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/blog/other-token"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // With the token: fetched, built and served.
    let (output, log, nginx) = run("private", Some("/blog/repo-token"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (status, body) = get(nginx.port, "/").expect("nginx answers");
    assert_eq!(status, 200);
    assert!(body.contains("revision A"), "{body}");
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("fetch"), "{argv}");
    for (place, text) in [
        ("stdout", stdout.as_ref()),
        ("stderr", stderr.as_ref()),
        ("the build log", log.as_str()),
        ("git's argv", argv.as_str()),
    ] {
        assert!(
            !text.contains(TOKEN) && !text.contains(&basic),
            "the token reached {place}:\n{text}"
        );
    }
}

/// Issue 11, item 7: the site's code runs unprivileged. An npm `postinstall`
/// that tries to read the TLS private key and to rewrite the deploy script
/// fails at both, and the build goes on as the site's user.
#[test]
fn a_hostile_postinstall_should_neither_read_the_key_nor_change_the_deploy_script() {
    let dir = site_dir();
    let repo = Repo::new(dir.path(), "static-spa");
    let root = dir.path().join("site");
    let script = dir.path().join("deploy");
    // The instance's TLS directory: root only, as the certificate installs it.
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let key = tls.join("privkey.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY----- secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The attack, committed to the app: it reports what it managed to do.
    let package = repo.work.join("package.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&package).unwrap()).unwrap();
    manifest["scripts"]["postinstall"] = serde_json::Value::String(format!(
        // The markers are quote-split so that only their output (not npm's
        // echo of this command) matches.
        "id -un > whoami.txt; (cat {key} > stolen.txt && echo read-the-\"key\") || echo key-\"denied\"; \
         (echo pwned >> {script} && echo wrote-\"deploy\") || echo deploy-\"denied\"",
        key = key.display(),
        script = script.display()
    ));
    std::fs::write(&package, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let sha = repo.commit("with a hostile postinstall");

    let site = sample_site(
        "hostile",
        "static",
        &[("repo_url", Value::from(repo.bare.to_str().unwrap()))],
    );
    let text = site::deploy_script(&site, &site.root());
    std::fs::write(&script, &text).unwrap();
    let nginx = Nginx::start(dir.path(), &site, &root);
    let output = deploy(&script, &root, &nginx, &[&sha]);
    let log = std::fs::read_to_string(root.join("logs/build.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    let release = root.join("current");
    assert_eq!(
        std::fs::read_to_string(release.join("whoami.txt"))
            .unwrap()
            .trim(),
        SITE_USER,
        "the install ran as the site's user"
    );
    assert!(log.contains("key-denied"), "{log}");
    assert!(log.contains("deploy-denied"), "{log}");
    assert!(
        !log.contains("read-the-key") && !log.contains("wrote-deploy"),
        "{log}"
    );
    assert!(
        std::fs::read_to_string(release.join("stolen.txt"))
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        std::fs::read_to_string(&script).unwrap(),
        text,
        "the deploy script is unchanged"
    );
    let (status, body) = get(nginx.port, "/").expect("nginx answers");
    assert_eq!(status, 200);
    assert!(body.contains("with a hostile postinstall"), "{body}");
}

/// Issue 13, item 6: two sites of one zone with `certificate: wildcard`
/// share one certificate for `*.<zone>`, issued once by the ACME CA through
/// DNS-01 and installed on both instances.
#[tokio::test(flavor = "multi_thread")]
async fn wildcard_sites_should_share_one_certificate_issued_once() {
    let moto = moto_endpoint();
    let pebble = pebble();
    let _moto = jaam_tests::MOTO.read().await;
    let mirror = Route53Mirror::start(&moto, &pebble.challtestsrv, false).await;
    let env = SiteEnv {
        ws: Workspace::new(&unique("wild")),
        github: GithubFake::start().await,
        aws: mirror.url.clone(),
    };
    let stack = env.ws.stack.clone();
    let domain = format!("{stack}.test");
    hosted_zone(&domain).await;
    let mut specs = String::new();
    for name in ["blog", "docs"] {
        let repo = format!("acme/{stack}-{name}");
        env.set_head(&repo, &random_sha());
        specs.push_str(&format!(
            "site.{name}:\n  repo: {repo}\n  domain: {name}.{domain}\n  zone: {domain}\n  \
             certificate: wildcard\n  acme_directory: {}\n",
            pebble.directory
        ));
    }
    env.ws.write_specs(&specs);
    let shared = format!("certificate.wildcard-{}", domain.replace('.', "-"));
    let run = env.jaam(&["plan"]);
    run.expect_code(0);
    let text = run.squashed();
    assert!(
        text.contains(&format!("# {shared} will be created")),
        "{text}"
    );
    assert!(!text.contains("site.blog.certificate"), "{text}");
    env.jaam(&["apply", "--auto-approve"]).expect_code(0);

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.ws.state()).unwrap()).unwrap();
    let certificate = &state["resources"][shared.as_str()];
    assert_eq!(
        certificate["attributes"]["domains"],
        serde_json::json!([format!("*.{domain}"), domain])
    );
    assert!(
        certificate["attributes"]["not_after"].is_string(),
        "{certificate}"
    );
    let certificates = state["resources"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|addr| addr.contains("certificate"))
        .count();
    assert_eq!(certificates, 1, "one certificate for both sites");
    for name in ["blog", "docs"] {
        let instance = state["resources"][format!("site.{name}.instance").as_str()]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            commands_with(&instance, &format!("/jaam/{stack}/{shared}/private_key"))
                .await
                .len(),
            1,
            "installed on {name}"
        );
    }
    env.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    env.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

/// Issue 14, item 4: a repository whose branch head cannot be read holds
/// back only its own site (a plan note; the other site deploys), and a
/// targeted plan reads only its targets' branch heads.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_repository_should_hold_back_only_its_own_site() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let env = SiteEnv {
        ws: Workspace::new(&unique("unread")),
        github: GithubFake::start().await,
        aws: moto.clone(),
    };
    let stack = env.ws.stack.clone();
    let domain = format!("{stack}.test");
    hosted_zone(&domain).await;
    let repo = |name: &str| format!("acme/{stack}-{name}");
    let (blog_a, docs_a) = (random_sha(), random_sha());
    env.set_head(&repo("blog"), &blog_a);
    env.set_head(&repo("docs"), &docs_a);
    let mut specs = String::new();
    for name in ["blog", "docs"] {
        specs.push_str(&format!(
            "site.{name}:\n  repo: {}\n  domain: {name}.{domain}\n  zone: {domain}\n  https: false\n",
            repo(name)
        ));
    }
    env.ws.write_specs(&specs);
    env.jaam(&["apply", "--auto-approve"]).expect_code(0);

    // docs' repository cannot be read any more; blog moves on.
    env.github
        .repos
        .lock()
        .unwrap()
        .branches
        .remove(&(repo("docs"), "main".to_owned()));
    let blog_b = random_sha();
    env.set_head(&repo("blog"), &blog_b);
    let run = env.jaam(&["plan"]);
    run.expect_code(0);
    let text = run.squashed();
    assert!(
        text.contains(&format!(
            "Note: `site.docs.instance` keeps revision = \"{docs_a}\": the head of `{}@main` could not be read",
            repo("docs")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("~ revision = \"{blog_a}\" -> \"{blog_b}\"")),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    env.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.ws.state()).unwrap()).unwrap();
    assert_eq!(
        state["resources"]["site.blog.instance"]["attributes"]["revision"],
        blog_b.as_str()
    );
    assert_eq!(
        state["resources"]["site.docs.instance"]["attributes"]["revision"],
        docs_a.as_str()
    );

    // A plan targeted at blog reads blog's branch head only.
    env.set_head(&repo("docs"), &docs_a);
    let asked = |name: &str| {
        env.github
            .repos
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(_, path, _)| path.contains(&format!("{}/branches", repo(name))))
            .count()
    };
    let (blog_before, docs_before) = (asked("blog"), asked("docs"));
    env.jaam(&["plan", "--target", "site.blog.instance"])
        .expect_code(0);
    assert_eq!(asked("blog"), blog_before + 1);
    assert_eq!(asked("docs"), docs_before, "the docs head is not read");
    env.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

/// Writes `work`'s lockfile from its package.json, offline (the build
/// cache's tests depend on nothing from a registry).
fn lock_offline(work: &Path) {
    let locked = Command::new("npm")
        .args([
            "install",
            "--offline",
            "--no-audit",
            "--no-fund",
            "--package-lock-only",
        ])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(locked.status.success(), "{locked:?}");
}

/// A static site `cached` deployed from `repo` by its generated script,
/// behind nginx, for the build cache's tests.
struct CachedSite {
    root: PathBuf,
    script: PathBuf,
    nginx: Nginx,
}

impl CachedSite {
    fn new(dir: &Path, repo: &Repo) -> Self {
        let root = dir.join("site");
        let site = sample_site(
            "cached",
            "static",
            &[("repo_url", Value::from(repo.bare.to_str().unwrap()))],
        );
        let script = dir.join("deploy");
        std::fs::write(&script, site::deploy_script(&site, &site.root())).unwrap();
        let nginx = Nginx::start(dir, &site, &root);
        Self {
            root,
            script,
            nginx,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("logs/build.log")).unwrap_or_default()
    }

    /// The release serving.
    fn serving(&self) -> PathBuf {
        std::fs::canonicalize(self.root.join("current")).unwrap()
    }

    fn deploy(&self, sha: &str) -> std::process::Output {
        deploy(&self.script, &self.root, &self.nginx, &[sha])
    }

    /// Deploys `sha`, which must succeed.
    fn run(&self, sha: &str) {
        let output = self.deploy(sha);
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }
}

/// Issue 17, item 2: the build cache. A redeploy with the same lockfile
/// reuses the serving release's node_modules (hard links, nothing
/// installed), a cache broken between deploys falls back to a clean install
/// and the deploy still succeeds, and the log says which path ran.
#[test]
fn deploy_script_should_reuse_node_modules_and_fall_back_to_a_clean_install() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = site_dir();
    let repo = Repo::new(dir.path(), "static-spa");
    // A dependency from a tarball in the repository: npm installs it
    // without a registry, as it would any package.
    let package = dir.path().join("greeting");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(
        package.join("package.json"),
        r#"{"name":"greeting","version":"1.0.0","main":"index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        package.join("index.js"),
        "module.exports = (m) => `greeting: ${m}`;\n",
    )
    .unwrap();
    let packed = Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(&repo.work)
        .current_dir(&package)
        .output()
        .unwrap();
    assert!(packed.status.success(), "{packed:?}");
    std::fs::write(
        repo.work.join("package.json"),
        r#"{"name":"cached","version":"1.0.0","private":true,"scripts":{"build":"node build.cjs"},"dependencies":{"greeting":"file:greeting-1.0.0.tgz"}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.work.join("build.cjs"),
        "const fs = require('fs');\nconst greet = require('greeting');\nfs.mkdirSync('dist', { recursive: true });\n\
         fs.writeFileSync('dist/index.html', greet(fs.readFileSync('message.txt', 'utf8').trim()));\n\
         // A tool's cache in node_modules/.cache, rewritten in place.\n\
         const cache = 'node_modules/.cache/greeting/builds.txt';\n\
         const before = fs.existsSync(cache) ? fs.readFileSync(cache, 'utf8') : '';\n\
         const links = fs.existsSync(cache) ? fs.statSync(cache).nlink : 0;\n\
         fs.mkdirSync('node_modules/.cache/greeting', { recursive: true });\n\
         fs.writeFileSync(cache, before + 'built\\n');\n\
         fs.writeFileSync('dist/links.txt', `${links}`);\n",
    )
    .unwrap();
    std::fs::write(repo.work.join(".gitignore"), "node_modules\n").unwrap();
    lock_offline(&repo.work);
    let a = repo.commit("hello from revision A");
    let cached = CachedSite::new(dir.path(), &repo);
    let log = || cached.log();
    let serving = || cached.serving();
    let run = |sha: &str| cached.run(sha);

    run(&a);
    assert!(log().contains("(clean, as nobody)"), "{}", log());
    let first = serving();
    let dependency = |release: &Path| release.join("node_modules/greeting/index.js");
    assert!(dependency(&first).is_file());

    // Same lockfile: the node_modules of the release serving, hard-linked.
    let b = repo.commit("hello from revision B");
    run(&b);
    let second = serving();
    assert_ne!(first, second);
    assert!(
        log().contains(&format!(
            "install: reusing node_modules of release {}",
            first.file_name().unwrap().to_string_lossy()
        )),
        "{}",
        log()
    );
    assert_eq!(
        std::fs::metadata(dependency(&first)).unwrap().ino(),
        std::fs::metadata(dependency(&second)).unwrap().ino(),
        "a hard-linked copy"
    );
    // The tools' cache came along as a copy of its own (the build rewrites
    // it in place); the release before keeps its node_modules for a
    // rollback, not its build cache.
    assert_eq!(
        std::fs::read_to_string(second.join("dist/links.txt")).unwrap(),
        "1",
        "a copy, not a hard link to the serving release's cache"
    );
    assert_eq!(
        std::fs::read_to_string(second.join("node_modules/.cache/greeting/builds.txt")).unwrap(),
        "built\nbuilt\n"
    );
    assert!(
        !first.join("node_modules/.cache").exists(),
        "its build cache dropped"
    );
    assert_eq!(
        std::fs::read_to_string(second.join("dist/index.html")).unwrap(),
        "greeting: hello from revision B"
    );

    // A cache broken between deploys: the deploy still succeeds, clean.
    std::fs::remove_file(dependency(&second)).unwrap();
    let c = repo.commit("hello from revision C");
    run(&c);
    let third = serving();
    assert!(
        log().contains(
            "the build failed with the cached node_modules: once more with a clean install"
        ),
        "{}",
        log()
    );
    assert_eq!(
        std::fs::read_to_string(third.join("dist/index.html")).unwrap(),
        "greeting: hello from revision C"
    );
    assert!(
        dependency(&first).is_file(),
        "the older release is untouched"
    );

    // A failed install fails the deploy even when the build after it would
    // pass (the install ran where `set -e` does not apply).
    std::fs::write(
        repo.work.join("package.json"),
        r#"{"name":"cached","version":"1.0.0","private":true,"scripts":{"build":"node -e \"require('fs').mkdirSync('dist',{recursive:true});require('fs').writeFileSync('dist/index.html','built anyway')\""},"dependencies":{"missing":"file:missing-1.0.0.tgz"}}"#,
    )
    .unwrap();
    let d = repo.commit("hello from revision D");
    let output = cached.deploy(&d);
    assert!(!output.status.success(), "{}", log());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("build of {d} failed")),
        "{output:?}"
    );
    assert_eq!(serving(), third, "the release before keeps serving");
}

/// Issue 17, item 2: the framework's cache (`.next/cache`) is the serving
/// release's, copied: a build that writes it in place (as TypeScript writes
/// `.tsbuildinfo`) leaves the release before untouched, and a corrupt one
/// fails no deploy, even with no `node_modules` cached (a clean install, or
/// none at all): the build runs once more without it.
#[test]
fn deploy_script_should_copy_the_framework_cache_and_build_without_it_when_it_is_corrupt() {
    let dir = site_dir();
    let repo = Repo::new(dir.path(), "static-spa");
    std::fs::write(
        repo.work.join("package.json"),
        r#"{"name":"framework-cache","version":"1.0.0","private":true,"scripts":{"build":"node build.cjs"}}"#,
    )
    .unwrap();
    // A framework that keeps a cache in .next/cache, rewrites it in place
    // and refuses a corrupt one; dist/links.txt says whether the cache it
    // found was a copy of its own (1 link) or shared.
    std::fs::write(
        repo.work.join("build.cjs"),
        "const fs = require('fs');\n\
         const cache = '.next/cache/builds.txt';\n\
         const before = fs.existsSync(cache) ? fs.readFileSync(cache, 'utf8') : '';\n\
         const links = fs.existsSync(cache) ? fs.statSync(cache).nlink : 0;\n\
         if (before.includes('corrupt')) { console.error('the framework cache is corrupt'); process.exit(1); }\n\
         fs.mkdirSync('.next/cache', { recursive: true });\n\
         fs.writeFileSync(cache, before + 'built\\n');\n\
         fs.mkdirSync('dist', { recursive: true });\n\
         fs.writeFileSync('dist/links.txt', `${links}`);\n\
         const builds = before.split('\\n').filter(Boolean).length;\n\
         const message = fs.readFileSync('message.txt', 'utf8').trim();\n\
         fs.writeFileSync('dist/index.html', `${message} after ${builds} cached builds`);\n",
    )
    .unwrap();
    lock_offline(&repo.work);
    let a = repo.commit("hello from revision A");
    let cached = CachedSite::new(dir.path(), &repo);
    let log = || cached.log();
    let serving = || cached.serving();
    let page = || std::fs::read_to_string(serving().join("dist/index.html")).unwrap();
    let cache = |release: &Path| {
        std::fs::read_to_string(release.join(".next/cache/builds.txt")).unwrap_or_default()
    };
    let run = |sha: &str| cached.run(sha);

    run(&a);
    assert_eq!(page(), "hello from revision A after 0 cached builds");
    let first = serving();

    // The next build starts from a copy of the serving release's cache, its
    // own; the release before, kept for a rollback, keeps no build cache.
    run(&repo.commit("hello from revision B"));
    assert_eq!(page(), "hello from revision B after 1 cached builds");
    let second = serving();
    assert_eq!(
        std::fs::read_to_string(second.join("dist/links.txt")).unwrap(),
        "1",
        "a copy, not a hard link to the serving release's cache"
    );
    assert_eq!(cache(&second), "built\nbuilt\n");
    assert!(
        first.join("dist/index.html").is_file(),
        "kept for a rollback"
    );
    assert!(
        !first.join(".next/cache").exists(),
        "its build cache dropped"
    );

    // A corrupt cache: the build fails on it, and once more without it.
    std::fs::write(second.join(".next/cache/builds.txt"), "corrupt\n").unwrap();
    run(&repo.commit("hello from revision C"));
    assert_eq!(page(), "hello from revision C after 0 cached builds");
    assert!(
        log().contains(&format!(
            "the build failed with the .next/cache of release {}: once more without it",
            second.file_name().unwrap().to_string_lossy()
        )),
        "{}",
        log()
    );
}

/// Issue 17, item 3: the bootstrap adds 2 GiB of swap where memory is under
/// 2 GiB and there is no swap yet (run here against stand-ins of
/// fallocate/mkswap/swapon and a made-up meminfo).
#[test]
fn bootstrap_should_add_swap_only_where_memory_is_short() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.path().join("calls");
    for (tool, body) in [
        ("fallocate", "touch \"$3\""),
        ("mkswap", "true"),
        (
            "swapon",
            "if [ \"$1\" = --show=NAME ]; then printf '%s' \"${FAKE_SWAP:-}\"; fi",
        ),
    ] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/bash\necho \"{tool} $*\" >>{}\n{body}\n",
                calls.display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    let swapfile = dir.path().join("swapfile");
    let fstab = dir.path().join("fstab");
    let script = site::swap_script(swapfile.to_str().unwrap(), fstab.to_str().unwrap());
    let run = |mem_kb: u64, existing: &str| {
        let _ = std::fs::remove_file(&calls);
        let _ = std::fs::remove_file(&fstab);
        let meminfo = dir.path().join("meminfo");
        std::fs::write(
            &meminfo,
            format!("MemTotal: {mem_kb} kB\nSwapTotal: 0 kB\n"),
        )
        .unwrap();
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("JAAM_MEMINFO", &meminfo)
            .env("FAKE_SWAP", existing)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        (
            std::fs::read_to_string(&calls).unwrap_or_default(),
            std::fs::read_to_string(&fstab).unwrap_or_default(),
        )
    };
    // A t3.micro (1 GiB) without swap: 2 GiB of swap, kept across reboots.
    let (called, table) = run(1_000_000, "");
    assert!(
        called.contains(&format!("mkswap {}", swapfile.display())),
        "{called}"
    );
    assert!(
        called.contains(&format!("swapon {}", swapfile.display())),
        "{called}"
    );
    assert_eq!(table, format!("{} none swap sw 0 0\n", swapfile.display()));
    // Swap there already, or memory enough: nothing done.
    let (called, table) = run(1_000_000, "/dev/zram0");
    assert!(!called.contains("mkswap") && table.is_empty(), "{called}");
    let (called, table) = run(4_000_000, "");
    assert!(called.is_empty() && table.is_empty(), "{called}");
}

/// Issue 17, item 3: the build's heap is sized from the instance's memory
/// and swap; a build killed for memory fails with a message that says so
/// and names a bigger `instance_type`, and the release before keeps serving.
#[test]
fn a_build_killed_for_memory_should_say_so_and_name_a_bigger_instance_type() {
    let dir = site_dir();
    let repo = Repo::new(dir.path(), "static-spa");
    let a = git(&repo.work, &["rev-parse", "HEAD"]);
    let root = dir.path().join("site");
    let meminfo = dir.path().join("meminfo");
    // 1,000,000 kB of memory + 2 GiB of swap: (976 + 2048) * 3 / 4 MB.
    std::fs::write(&meminfo, "MemTotal: 1000000 kB\nSwapTotal: 2097152 kB\n").unwrap();
    let deploy_with = |build: &str, sha: &str| {
        let site = sample_site(
            "heap",
            "static",
            &[
                ("repo_url", Value::from(repo.bare.to_str().unwrap())),
                ("build", Value::from(build)),
            ],
        );
        let script = dir.path().join("deploy");
        std::fs::write(&script, site::deploy_script(&site, &site.root())).unwrap();
        let nginx = Nginx::start(
            &dir.path().join(format!("nginx-{}", &sha[..7])),
            &site,
            &root,
        );
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .arg(sha)
            .env("JAAM_SITE_ROOT", &root)
            .env("JAAM_SITE_USER", SITE_USER)
            .env("JAAM_NO_SYSTEMD", "1")
            .env("JAAM_NGINX_RELOAD", nginx.reload_command())
            .env("JAAM_FETCH_SECRETS", "/nonexistent")
            .env("JAAM_MEMINFO", &meminfo);
        command.output().unwrap()
    };
    let output = deploy_with(
        "mkdir -p dist && printf '%s' \"$NODE_OPTIONS\" >dist/index.html",
        &a,
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("current/dist/index.html")).unwrap(),
        "--max-old-space-size=2268"
    );

    let b = repo.commit("hello from revision B");
    let output = deploy_with("echo 'allocating…'; kill -9 $$", &b);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("build of {b} was killed (SIGKILL, exit 137)"))
            && stderr.contains("lack of memory (3024 MB of memory and swap here)")
            && stderr.contains("choose a bigger instance_type")
            && stderr.contains(&format!("still serving {a}")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("current/dist/index.html")).unwrap(),
        "--max-old-space-size=2268",
        "the release before keeps serving"
    );
}
