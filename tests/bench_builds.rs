//! `jaam-bench-builds` (run by `scripts/bench-builds`): how long a site's
//! deploy takes for the real sample apps (`examples/apps/nextjs`,
//! `examples/apps/vite-react`) with `framework: auto`, on each path of the
//! build cache:
//!
//! 1. the first deploy: a fresh instance (empty npm cache, no release
//!    before), its packages downloaded from registry.npmjs.org through a
//!    caching proxy that starts empty (`tests/node/npm-registry.py`), as an
//!    instance downloads them;
//! 2. a redeploy of a one-line source change (lockfile unchanged: the
//!    serving release's `node_modules` reused as hard links);
//! 3. a redeploy after a lockfile change (a dependency added: a clean
//!    `npm ci`, with npm's cache of the instance warm).
//!
//! Each deploy is the generated deploy script run for real (as the test
//! `sites::run_deploy_cycle` does: the site's user `nobody`, apps as plain
//! processes, no nginx), timed from start to "serving". The instance boxes
//! would add nothing to it but a namespace. Needs root (the build runs as
//! another user), node and npm, and the npm registry. Prints one table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jaam_core::spec::site::{self, Site};
use jaam_core::value::{Attrs, Value};

fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("GIT_AUTHOR_NAME", "jaam bench")
        .env("GIT_AUTHOR_EMAIL", "bench@jaam.invalid")
        .env("GIT_COMMITTER_NAME", "jaam bench")
        .env("GIT_COMMITTER_EMAIL", "bench@jaam.invalid")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The caching npm registry proxy, started with an empty cache.
struct Registry {
    url: String,
    child: std::process::Child,
    _cache: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        let cache = tempfile::tempdir().expect("cache");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/npm-registry.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(cache.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the npm registry proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            url: format!("http://127.0.0.1:{port}/"),
            child,
            _cache: cache,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// One app's site: its repository, its root and its deploy script.
struct Bench {
    /// Everything below (removed when the bench ends).
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    root: PathBuf,
    script: PathBuf,
    registry: String,
}

impl Bench {
    fn new(app: &str, registry: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/apps")
            .join(app);
        let work = dir.path().join("work");
        run(
            dir.path(),
            "cp",
            &["-a", &source.display().to_string(), "work"],
            &[],
        );
        run(&work, "git", &["init", "-q", "-b", "main"], &[]);
        run(&work, "git", &["add", "-A"], &[]);
        run(&work, "git", &["commit", "-q", "-m", "first"], &[]);
        run(
            dir.path(),
            "git",
            &["clone", "-q", "--bare", "work", "app.git"],
            &[],
        );
        let bare = dir.path().join("app.git");
        let root = dir.path().join("site");
        let attrs = Attrs::from([
            ("repo".to_owned(), Value::from("acme/app")),
            ("domain".to_owned(), Value::from("app.example.test")),
            ("zone".to_owned(), Value::from("example.test")),
            (
                "repo_url".to_owned(),
                Value::from(bare.display().to_string()),
            ),
            (
                "port".to_owned(),
                Value::Int(i64::from(jaam_tests::free_port_pair())),
            ),
            (
                "env".to_owned(),
                Value::Map([("NEXT_TELEMETRY_DISABLED".to_owned(), Value::from("1"))].into()),
            ),
        ]);
        let site = Site::from_attrs("bench", &attrs);
        let script = dir.path().join("deploy");
        std::fs::write(&script, site::deploy_script(&site, &site.root())).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("env"), site::env_file(&site)).unwrap();
        Self {
            _dir: dir,
            work,
            bare,
            root,
            script,
            registry: registry.to_owned(),
        }
    }

    /// Commits `changes` (path → content) and publishes them.
    fn commit(&self, changes: &[(&str, &str)]) -> String {
        for (path, content) in changes {
            std::fs::write(self.work.join(path), content).unwrap();
        }
        run(&self.work, "git", &["add", "-A"], &[]);
        run(&self.work, "git", &["commit", "-q", "-m", "change"], &[]);
        run(
            &self.work,
            "git",
            &["push", "-q", &self.bare.display().to_string(), "main"],
            &[],
        );
        run(&self.work, "git", &["rev-parse", "HEAD"], &[])
    }

    /// Deploys `sha`; how long it took.
    fn deploy(&self, sha: &str) -> Duration {
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&self.script)
            .arg(sha)
            .env("JAAM_SITE_ROOT", &self.root)
            .env("JAAM_SITE_USER", "nobody")
            .env("JAAM_NO_SYSTEMD", "1")
            .env("JAAM_NGINX_RELOAD", "true")
            .env("JAAM_FETCH_SECRETS", "/nonexistent")
            .env("npm_config_registry", &self.registry)
            .output()
            .expect("deploy");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "deploy {sha}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    /// The install's and the build's seconds in the last deploy of `sha`,
    /// from the build log's timestamps (whole seconds).
    fn phases(&self, sha: &str) -> (i64, i64) {
        let log = self.log();
        let since = log.rfind(&format!("deploy {sha}")).unwrap_or(0);
        let at = |needle: &str| {
            log[since..]
                .lines()
                .find(|l| l.contains(needle))
                .and_then(|line| {
                    let stamp = line.split_whitespace().next()?;
                    chrono::DateTime::parse_from_rfc3339(stamp)
                        .ok()
                        .map(|t| t.timestamp())
                })
        };
        match (at("] install: "), at("] build: "), at("] serving ")) {
            (Some(install), Some(build), Some(serving)) => (build - install, serving - build),
            _ => (-1, -1),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("logs/build.log")).unwrap_or_default()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        jaam_tests::stop_site_apps(&self.root);
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn main() {
    assert!(
        rustix::process::geteuid().is_root(),
        "jaam-bench-builds needs root: the build runs as the site's user"
    );
    println!(
        "| app | first deploy (empty caches) | redeploy, lockfile unchanged | ratio | redeploy after a lockfile change |"
    );
    println!("|---|---|---|---|---|");
    let mut phases = Vec::new();
    for (app, source) in [
        ("nextjs", "app/message.ts"),
        ("vite-react", "src/message.js"),
    ] {
        // A proxy with an empty cache: the first deploy downloads from the registry.
        let registry = Registry::start();
        let bench = Bench::new(app, &registry.url);
        let first_sha = run(&bench.work, "git", &["rev-parse", "HEAD"], &[]);
        let first = bench.deploy(&first_sha);
        let second_sha = bench.commit(&[(
            source,
            "export const message = \"hello from revision B\";\n",
        )]);
        let second = bench.deploy(&second_sha);
        assert!(
            bench.log().contains("install: reusing node_modules"),
            "the redeploy reused node_modules: {}",
            bench.log()
        );
        // A dependency added: package.json and the lockfile change, as on a
        // developer's machine (registry.npmjs.org, resolved URLs kept).
        run(
            &bench.work,
            "npm",
            &[
                "install",
                "--package-lock-only",
                "--no-audit",
                "--no-fund",
                "--omit-lockfile-registry-resolved=false",
                "ms@2.1.3",
            ],
            &[],
        );
        let third_sha = bench.commit(&[]);
        let third = bench.deploy(&third_sha);
        assert!(
            bench.log().matches("(clean, as nobody)").count() >= 2,
            "the lockfile change installed clean: {}",
            bench.log()
        );
        println!(
            "| {app} | {} | {} | {:.2} | {} |",
            seconds(first),
            seconds(second),
            second.as_secs_f64() / first.as_secs_f64(),
            seconds(third)
        );
        phases.push((
            app,
            bench.phases(&first_sha),
            bench.phases(&second_sha),
            bench.phases(&third_sha),
        ));
    }
    println!("\ninstall + build (then start and switch), seconds from the build log:");
    for (app, first, second, third) in phases {
        println!(
            "{app}: first {} + {}, redeploy {} + {}, after the lockfile change {} + {}",
            first.0, first.1, second.0, second.1, third.0, third.1
        );
    }
}
