//! Instance boxes: what an EC2 instance is to a `site`, on this machine.
//!
//! moto launches instances that run nothing. For each instance a test stack
//! launches through [`cloud::Cloud`], the harness boots an [`InstanceBox`]: a
//! Linux network namespace (a veth pair to the host; the public IP moto gave
//! the instance is the box's address, routed from the host, so an HTTPS
//! client reaches the site through the Route53 record jaam wrote) and a mount
//! namespace in which the instance's disk — per-box copies of `/etc`, `/srv`,
//! `/opt`, `/var/log`, `/var/lib/{cloud,nginx,amazon}`, `/usr/local/{bin,sbin}`
//! — is bind-mounted over the host's, with a fresh tmpfs on `/run`, `/tmp` and
//! `/var/tmp` at every boot; the rest of the host's file system is read-only
//! in the box (a script writing elsewhere fails, as on a read-only image, and
//! never touches this machine). The programs are Debian's (nginx, git, node, curl), with
//! stand-ins from `tests/boxes/` first on `PATH`: `dnf` (checks the packages
//! asked for are the ones provided), `systemctl` (really starts, stops,
//! restarts, reloads and enables units and nginx; a boot starts what is
//! enabled), `cloud-init status` and the CloudWatch agent's control script.
//!
//! The user data runs once, at the first boot, as cloud-init's `scripts-user`
//! does (output in `/var/log/cloud-init-output.log`, errors in
//! `/var/lib/cloud/data/result.json`, then `boot-finished`). A stop kills
//! every process of the box; a start boots it again on its new public IP.
//! Inside, `127.0.0.1:<port>` of the forwarded ports (moto's, the Git
//! server's) reaches the host's: the box's AWS CLI talks to moto, and
//! `https://github.com/` clones come from the local Git server
//! (`url.<…>.insteadOf` in the box's `/etc/gitconfig`).
//!
//! Everything binds to loopback or to the boxes' own addresses. It needs root
//! (namespaces, veth pairs); a test that needs it and is not root fails
//! loudly.

pub mod cloud;

use std::os::fd::AsFd as _;

use rustix::process::Signal;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The paths of an instance's disk, each bind-mounted from the box's own copy.
const DISK: [&str; 10] = [
    "/etc",
    "/srv",
    "/opt",
    "/var/log",
    "/var/lib/cloud",
    "/var/lib/nginx",
    "/var/lib/amazon",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/home",
];

/// `PATH` inside a box: the stand-ins first.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a box needs from its surroundings.
#[derive(Clone, Debug)]
pub struct BoxConfig {
    /// Host loopback ports reachable at the same port inside the box.
    pub forwards: Vec<u16>,
    /// Where `https://github.com/` clones go (`http://127.0.0.1:PORT/`).
    pub git_base: Option<String>,
    /// The environment of every command run in the box (AWS endpoint,
    /// region and credentials, as an instance role would give them).
    pub env: Vec<(String, String)>,
    /// Packages the `dnf` stand-in does not find (a mirror outage).
    pub missing_packages: Vec<String>,
}

/// The npm registry the boxes' builds install from: the caching proxy
/// `scripts/emulators.sh` starts (`npm_registry_start`), named by
/// `JAAM_TEST_NPM_REGISTRY`.
///
/// # Panics
/// When it is not running: a test that builds a real app fails loudly.
pub fn npm_registry() -> String {
    std::env::var("JAAM_TEST_NPM_REGISTRY").unwrap_or_else(|_| {
        panic!(
            "JAAM_TEST_NPM_REGISTRY is unset: start the npm registry proxy (scripts/emulators.sh: npm_registry_start)"
        )
    })
}

impl BoxConfig {
    /// Boxes whose `npm` installs from [`npm_registry`] (forwarded into the
    /// box at the same port), as a real instance installs from
    /// registry.npmjs.org; without the proxy running, boxes that have no
    /// registry (an app with dependencies fails its install).
    pub fn with_npm_registry(mut self) -> Self {
        if let Ok(registry) = std::env::var("JAAM_TEST_NPM_REGISTRY") {
            let port = registry
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("JAAM_TEST_NPM_REGISTRY ends with a port");
            self.forwards.push(port);
            self.env.push(("npm_config_registry".into(), registry));
        }
        self
    }
}

/// How one command run in a box ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// The exit code (`None`: killed at its timeout).
    pub code: Option<i32>,
    /// Everything written to standard output.
    pub stdout: String,
    /// Everything written to standard error.
    pub stderr: String,
}

/// One instance's box.
pub struct InstanceBox {
    /// The EC2 instance id.
    pub id: String,
    namespace: String,
    host_if: String,
    box_if: String,
    host_addr: String,
    box_addr: String,
    dir: tempfile::TempDir,
    config: BoxConfig,
    /// The running box: its init process and public IP.
    running: Mutex<Option<(tokio::process::Child, u32, String)>>,
    forwarders: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    commands: AtomicU32,
}

static BOXES: AtomicU32 = AtomicU32::new(0);

/// Fails loudly unless this process may make namespaces.
pub fn require_root() {
    if !rustix::process::geteuid().is_root() {
        panic!(
            "instance boxes need root (network and mount namespaces, veth pairs): run the tests as root, as CI does"
        );
    }
}

async fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The stand-in scripts' directory.
pub fn stand_ins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boxes")
}

impl InstanceBox {
    /// Makes the box of instance `id` (its disk and network), not booted.
    ///
    /// # Panics
    /// When the namespace or the disk cannot be made.
    pub async fn create(id: &str, config: BoxConfig) -> Self {
        require_root();
        let n = BOXES.fetch_add(1, Ordering::Relaxed);
        // One /30 of 10.200.0.0/14 per box: this process's slice, then the box.
        let slot = ((std::process::id() % 1024) << 6) | (n % 64);
        let base = u32::from(std::net::Ipv4Addr::new(10, 200, 0, 0)) + slot * 4;
        let tag = format!("{slot:05x}");
        let this = Self {
            id: id.to_owned(),
            namespace: format!("jaam-{tag}"),
            host_if: format!("jh{tag}"),
            box_if: format!("jb{tag}"),
            host_addr: std::net::Ipv4Addr::from(base + 1).to_string(),
            box_addr: std::net::Ipv4Addr::from(base + 2).to_string(),
            dir: tempfile::Builder::new()
                .prefix(&format!("jaam-box-{id}-"))
                .tempdir()
                .expect("box directory"),
            config,
            running: Mutex::new(None),
            forwarders: Mutex::new(Vec::new()),
            commands: AtomicU32::new(0),
        };
        this.make_disk().await;
        this.make_network().await;
        this
    }

    fn disk(&self, inside: &str) -> PathBuf {
        self.dir
            .path()
            .join("disk")
            .join(inside.trim_start_matches('/').replace('/', "_"))
    }

    /// Where the file at `inside` (an absolute path in the box) lives on the host.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        for root in DISK {
            if let Some(rest) = inside.strip_prefix(root)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return self.disk(root).join(rest.trim_start_matches('/'));
            }
        }
        panic!("{inside} is not on the box's disk")
    }

    async fn make_disk(&self) {
        for root in DISK {
            std::fs::create_dir_all(self.disk(root)).expect("box disk");
        }
        let etc = self.disk("/etc");
        sh("cp", &["-a", "/etc/.", etc.to_str().unwrap()])
            .await
            .expect("copy /etc");
        // A fresh image: nothing of this machine's enabled or served.
        let _ = std::fs::remove_file(etc.join("nginx/sites-enabled/default"));
        let wants = etc.join("systemd/system/multi-user.target.wants");
        let _ = std::fs::remove_dir_all(&wants);
        std::fs::create_dir_all(&wants).expect("multi-user.target.wants");
        if let Some(base) = &self.config.git_base {
            std::fs::write(
                etc.join("gitconfig"),
                format!("[url \"{base}\"]\n\tinsteadOf = https://github.com/\n"),
            )
            .expect("gitconfig");
        }
        if !self.config.missing_packages.is_empty() {
            std::fs::create_dir_all(etc.join("dnf")).expect("dnf dir");
            std::fs::write(
                etc.join("dnf/jaam-missing-packages"),
                self.config.missing_packages.join("\n") + "\n",
            )
            .expect("missing packages");
        }
        for dir in ["nginx", "journal"] {
            std::fs::create_dir_all(self.disk("/var/log").join(dir)).expect("log dir");
        }
        std::fs::create_dir_all(self.disk("/var/lib/cloud").join("data")).expect("cloud dir");
        let sbin = self.disk("/usr/local/sbin");
        for entry in std::fs::read_dir(stand_ins()).expect("tests/boxes") {
            let path = entry.expect("stand-in").path();
            if path.extension().is_none() {
                std::fs::copy(&path, sbin.join(path.file_name().unwrap())).expect("stand-in");
            }
        }
        // Amazon Linux has the AWS CLI; here it is the emulators' venv's.
        if let Some(aws) = aws_cli() {
            std::os::unix::fs::symlink(aws, self.disk("/usr/local/bin").join("aws"))
                .expect("aws link");
        }
    }

    async fn make_network(&self) {
        let ns = self.namespace.as_str();
        let (host_if, box_if) = (self.host_if.as_str(), self.box_if.as_str());
        let host = format!("{}/30", self.host_addr);
        let inside = format!("{}/30", self.box_addr);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", ns],
            vec![
                "link", "add", host_if, "type", "veth", "peer", "name", box_if,
            ],
            vec!["link", "set", box_if, "netns", ns],
            vec!["addr", "add", &host, "dev", host_if],
            vec!["link", "set", host_if, "up"],
            vec!["-n", ns, "addr", "add", &inside, "dev", box_if],
            vec!["-n", ns, "link", "set", box_if, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
            vec!["-n", ns, "route", "add", "default", "via", &self.host_addr],
        ];
        for step in steps {
            sh("ip", &step).await.expect("box network");
        }
        let mut forwarders = Vec::new();
        for port in &self.config.forwards {
            forwarders.push(forward_into(ns, *port));
        }
        *self.forwarders.lock().unwrap() = forwarders;
    }

    /// Whether the box is up.
    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// The public IP the box answers on while it runs.
    pub fn public_ip(&self) -> Option<String> {
        self.running
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, _, ip)| ip.clone())
    }

    /// Boots the box on `public_ip`: a fresh `/run` and `/tmp`, the enabled
    /// units started, and at the first boot the user data run once. Returns
    /// the user data's outcome at the first boot.
    ///
    /// # Panics
    /// When the namespaces cannot be entered.
    pub async fn boot(&self, public_ip: &str, user_data: Option<&str>) -> Option<Ran> {
        let ns = self.namespace.as_str();
        let address = format!("{public_ip}/32");
        sh(
            "ip",
            &["-n", ns, "addr", "add", &address, "dev", &self.box_if],
        )
        .await
        .expect("public address");
        sh(
            "ip",
            &[
                "route",
                "replace",
                &address,
                "dev",
                &self.host_if,
                "src",
                &self.host_addr,
            ],
        )
        .await
        .expect("public route");
        let mut mounts = String::new();
        for root in DISK {
            mounts.push_str(&format!(
                "mkdir -p '{root}' && mount --bind '{}' '{root}' && ",
                self.disk(root).display()
            ));
        }
        mounts.push_str("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /tmp && ");
        mounts.push_str("mount -t tmpfs tmpfs /var/tmp && ");
        // The rest of the file system is this machine's: read-only in the box.
        mounts.push_str("mount -o remount,bind,ro / && ");
        mounts.push_str("echo ready && exec sleep infinity");
        let mut init = tokio::process::Command::new("nsenter")
            .args([&format!("--net=/run/netns/{ns}"), "--"])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", &mounts])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("box init");
        let pid = init.id().expect("init pid");
        {
            use tokio::io::AsyncBufReadExt as _;
            let mut line = String::new();
            tokio::io::BufReader::new(init.stdout.take().unwrap())
                .read_line(&mut line)
                .await
                .expect("box init output");
            assert_eq!(line.trim(), "ready", "the box's disk did not mount");
        }
        *self.running.lock().unwrap() = Some((init, pid, public_ip.to_owned()));
        let finished = "/var/lib/cloud/instance/boot-finished";
        let _ = std::fs::remove_file(self.host_path(finished));
        let boot = self
            .run("systemctl jaam-boot", Duration::from_secs(60))
            .await;
        assert_eq!(boot.code, Some(0), "box boot: {boot:?}");
        let first = !self.host_path("/var/lib/cloud/instance/scripts").exists();
        let mut outcome = None;
        if first && let Some(script) = user_data {
            outcome = Some(self.run_user_data(script).await);
        }
        let errors: Vec<String> = match &outcome {
            Some(ran) if ran.code != Some(0) => vec![format!(
                "('scripts_user', RuntimeError('Runparts: 1 failures (part-001) in /var/lib/cloud/instance/scripts'))"
            )],
            _ => Vec::new(),
        };
        if outcome.is_some() {
            std::fs::write(
                self.host_path("/var/lib/cloud/data/result.json"),
                serde_json::json!({"v1": {"datasource": "DataSourceEc2", "errors": errors}})
                    .to_string(),
            )
            .expect("result.json");
        }
        if !self.host_path("/var/lib/cloud/data/result.json").exists() {
            std::fs::write(
                self.host_path("/var/lib/cloud/data/result.json"),
                r#"{"v1": {"datasource": "DataSourceEc2", "errors": []}}"#,
            )
            .expect("result.json");
        }
        std::fs::create_dir_all(self.host_path("/var/lib/cloud/instance")).expect("instance dir");
        std::fs::write(self.host_path(finished), "booted\n").expect("boot-finished");
        outcome
    }

    async fn run_user_data(&self, script: &str) -> Ran {
        let scripts = self.host_path("/var/lib/cloud/instance/scripts");
        std::fs::create_dir_all(&scripts).expect("scripts dir");
        std::fs::write(scripts.join("part-001"), script).expect("user data");
        let ran = self
            .run(
                "chmod +x /var/lib/cloud/instance/scripts/part-001 && /var/lib/cloud/instance/scripts/part-001",
                Duration::from_secs(600),
            )
            .await;
        let log = self.host_path("/var/log/cloud-init-output.log");
        let mut text = std::fs::read_to_string(&log).unwrap_or_default();
        text.push_str(&ran.stdout);
        text.push_str(&ran.stderr);
        std::fs::write(&log, text).expect("cloud-init log");
        ran
    }

    /// Runs `script` (bash) as root in the running box, killing its process
    /// group at `timeout`.
    ///
    /// # Panics
    /// When the box is not running.
    pub async fn run(&self, script: &str, timeout: Duration) -> Ran {
        let pid = self
            .running
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, pid, _)| *pid)
            .expect("the box is running");
        let n = self.commands.fetch_add(1, Ordering::Relaxed);
        let work = self.dir.path().join(format!("command-{n}"));
        std::fs::create_dir_all(&work).expect("command dir");
        let (out, err) = (work.join("stdout"), work.join("stderr"));
        let mut command = tokio::process::Command::new("nsenter");
        command
            .args(["-t", &pid.to_string(), "-m", "-n", "--", "env", "-i"])
            .arg(format!("PATH={PATH}"))
            .args(["HOME=/root", "LANG=C.UTF-8", "USER=root"]);
        for (name, value) in &self.config.env {
            command.arg(format!("{name}={value}"));
        }
        command
            .args(["bash", "-c", script])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .process_group(0);
        let mut child = command.spawn().expect("run in box");
        let group = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?))
            .expect("command pid");
        let code = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.expect("wait").code(),
            Err(_) => {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                let _ = child.wait().await;
                None
            }
        };
        Ran {
            code,
            stdout: String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned(),
        }
    }

    /// Stops the box: every process in it is killed, the public IP released.
    pub async fn shutdown(&self) {
        let Some((mut init, pid, ip)) = self.running.lock().unwrap().take() else {
            return;
        };
        if let Ok(namespace) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) {
            for _ in 0..50 {
                let members = processes_in(&namespace);
                if members.is_empty() {
                    break;
                }
                for member in members {
                    let _ = rustix::process::kill_process(member, Signal::KILL);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = init.kill().await;
        let address = format!("{ip}/32");
        let _ = sh(
            "ip",
            &[
                "-n",
                &self.namespace,
                "addr",
                "del",
                &address,
                "dev",
                &self.box_if,
            ],
        )
        .await;
        let _ = sh("ip", &["route", "del", &address]).await;
    }

    /// Stops the box and removes its network.
    pub async fn destroy(&self) {
        self.shutdown().await;
        for task in self.forwarders.lock().unwrap().drain(..) {
            task.abort();
        }
        let _ = sh("ip", &["netns", "del", &self.namespace]).await;
    }
}

impl Drop for InstanceBox {
    fn drop(&mut self) {
        if let Some((_, pid, _)) = self.running.lock().unwrap().take()
            && let Ok(namespace) = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        {
            for member in processes_in(&namespace) {
                let _ = rustix::process::kill_process(member, Signal::KILL);
            }
        }
        for task in self.forwarders.lock().unwrap().drain(..) {
            task.abort();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// Every process whose mount namespace is `namespace`.
fn processes_in(namespace: &Path) -> Vec<rustix::process::Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .ok()
                .as_deref()
                == Some(namespace)
        })
        .filter_map(rustix::process::Pid::from_raw)
        .collect()
}

/// The AWS CLI the emulator scripts installed (`JAAM_TEST_AWS_CLI`).
pub fn aws_cli() -> Option<PathBuf> {
    std::env::var_os("JAAM_TEST_AWS_CLI")
        .map(PathBuf::from)
        .filter(|path| path.exists())
}

/// Listens on `127.0.0.1:port` inside network namespace `namespace` and
/// forwards each connection to the host's `127.0.0.1:port`.
fn forward_into(namespace: &str, port: u16) -> tokio::task::JoinHandle<()> {
    let path = format!("/run/netns/{namespace}");
    // A thread enters the namespace, binds, and is gone: the socket stays in it.
    let listener = std::thread::spawn(move || {
        let target = std::fs::File::open(&path).expect("box namespace");
        let home = std::fs::File::open("/proc/thread-self/ns/net").expect("host namespace");
        let network = Some(LinkNameSpaceType::Network);
        move_into_link_name_space(target.as_fd(), network).expect("setns into the box");
        let listener = std::net::TcpListener::bind(("127.0.0.1", port));
        move_into_link_name_space(home.as_fd(), network).expect("setns back");
        listener.expect("bind in the box")
    })
    .join()
    .expect("forwarder thread");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move {
        loop {
            let Ok((mut inside, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut outside) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    })
}
