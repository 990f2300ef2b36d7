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
    for framework in ["static", "nextjs", "node"] {
        let site = sample_site(
            "blog",
            framework,
            &[
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
    assert_eq!(checked, 12);
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

/// Runs the deploy script with `args`.
fn deploy(script: &Path, root: &Path, nginx: &Nginx, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(script)
        .args(args)
        .env("JAAM_SITE_ROOT", root)
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

fn stop_apps(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("run")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("app-") && name.ends_with(".pid") {
            let pid = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let _ = Command::new("kill")
                .arg("--")
                .arg(format!("-{}", pid.trim()))
                .output();
        }
    }
}

fn run_deploy_cycle(app: &str, framework: &str, needle: impl Fn(&str) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path(), app);
    let a = git(&repo.work, &["rev-parse", "HEAD"]);
    let root = dir.path().join("site");
    let port = free_port();
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
    assert!(
        releases.contains(&a) && releases.contains(&b),
        "{releases:?}"
    );
    assert!(!releases.contains(&c), "{releases:?}");
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
            stop_apps(&self.0);
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
