//! The stacks one daemon keeps: one (`--specs`) or a directory of them
//! (`--stacks DIR`).
//!
//! # A directory of stacks
//! Each subdirectory of DIR is one stack, named by the directory (`DIR/blog`
//! is stack `blog`; names starting with `.` are skipped, and YAML files
//! directly in DIR belong to no stack). A directory rather than a file per
//! stack, because a site's stack often grows files of its own (a second
//! site, a log group, a webhook) and `jaam plan --specs DIR/blog` then works
//! on it exactly as the daemon sees it. A stack whose specs name a
//! `stack.name` must name its directory: the name tags the stack's
//! resources, and two stacks with one name would claim each other's.
//!
//! `--state` is a template: `{stack}` is replaced by the stack's name
//! (`state/{stack}.json`, `s3://bucket/jaam/{stack}.json`); a template
//! without it is refused, since two stacks cannot share one state.
//!
//! The watcher adds a stack when its directory appears with specs, reloads
//! it when they change, and stops keeping it when the directory goes.
//! Renaming a directory makes a new stack (with a new, empty state): move
//! its state file (or S3 object) along with it. The daemon never destroys: what a removed stack created stays, with its state, until
//! someone runs `jaam destroy` on it (as Flux and Argo CD do without
//! pruning). A stack whose specs do not load is listed in `/status` with the
//! error and retried at its next change; the other stacks go on.
//!
//! # Work
//! `--workers N` (default 4) reconciles run at once, each of a different
//! stack (the queue never hands out a stack that is being reconciled). A
//! stack's failures are retried with its own backoff, so they never hold up
//! another stack's deploys beyond taking one worker while they run.
//!
//! # Resyncs
//! Each stack has its own timer. The first resync runs at start (gap
//! filling); the next comes at a random point between half a period and a
//! period and a half later, and then every period (±10 %): a fleet's
//! resyncs spread over the period rather than all arriving at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use super::webhook::SignatureError;
use super::{Daemon, Shared};
use crate::cli::{DaemonArgs, Global};
use crate::queue::Request;

/// Where the stacks come from.
pub(crate) enum Layout {
    /// `--specs` (and `--state`, `--stack`): one stack.
    One(Global),
    /// `--stacks DIR`: a stack per subdirectory; `--state` is a template.
    Dir { dir: PathBuf, base: Global },
}

/// How many stacks are opened at once at start.
const OPENING: usize = 16;

/// What `--state` holds in place of the stack's name.
const STACK: &str = "{stack}";

impl Layout {
    /// The layout the command line asks for.
    ///
    /// # Errors
    /// `--stacks` with a `--state` that has no `{stack}`, or a DIR that is
    /// not a directory.
    pub(crate) fn new(global: &Global, args: &DaemonArgs) -> anyhow::Result<Self> {
        let Some(dir) = &args.stacks else {
            return Ok(Self::One(global.clone()));
        };
        anyhow::ensure!(
            dir.is_dir(),
            "--stacks `{}` is not a directory",
            dir.display()
        );
        // The watcher reports absolute paths: a relative DIR (`--stacks
        // fleet`) is made absolute, or no event would match a stack.
        let dir = &dir
            .canonicalize()
            .with_context(|| format!("cannot resolve --stacks `{}`", dir.display()))?;
        anyhow::ensure!(
            global.state.to_string_lossy().contains(STACK),
            "with --stacks, --state must hold `{STACK}` (each stack has its own state)\n\n\
             hint: --state 'state/{STACK}.json' or --state 's3://BUCKET/jaam/{STACK}.json'"
        );
        anyhow::ensure!(
            global.stack.is_none(),
            "--stack names one stack; with --stacks each stack is named by its directory"
        );
        Ok(Self::Dir {
            dir: dir.clone(),
            base: global.clone(),
        })
    }

    /// How many stacks may wait in the queue at once. The queue holds one
    /// entry per stack, so it is bounded by the stacks a daemon keeps; a
    /// directory's stacks may all be due at once (a resync each, or a spec
    /// change to all), including stacks that appear after start.
    pub(crate) fn queue_capacity(&self) -> usize {
        match self {
            Self::One(_) => 64,
            Self::Dir { .. } => usize::MAX,
        }
    }

    /// Where seen deliveries are remembered: `--deliveries`, else beside the
    /// local state (`<state>.deliveries`; for a fleet, `jaam.deliveries` in
    /// the state template's directory), else only in memory.
    pub(crate) fn deliveries_file(&self, args: &DaemonArgs) -> Option<PathBuf> {
        if let Some(file) = &args.deliveries {
            return Some(file.clone());
        }
        let state = match self {
            Self::One(global) | Self::Dir { base: global, .. } => global.state.to_string_lossy(),
        };
        if state.starts_with("s3://") {
            return None;
        }
        Some(match self {
            Self::One(_) => PathBuf::from(format!("{state}.deliveries")),
            Self::Dir { base, .. } => base
                .state
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join("jaam.deliveries"),
        })
    }

    /// The global options of stack `name` of a directory.
    fn global(&self, name: &str) -> Global {
        match self {
            Self::One(global) => global.clone(),
            Self::Dir { dir, base } => Global {
                specs: dir.join(name),
                state: PathBuf::from(base.state.to_string_lossy().replace(STACK, name)),
                stack: Some(name.to_owned()),
                ..base.clone()
            },
        }
    }
}

/// Where the stacks' S3 state lives, for watching their leases: the bucket,
/// the key prefix to list, and the stack a state key belongs to.
struct LeaseKeys {
    bucket: String,
    prefix: String,
    suffix: String,
    /// One stack: its name (the key is `prefix` itself).
    one: Option<String>,
}

impl LeaseKeys {
    fn new(layout: &Layout, one: Option<&str>) -> Option<Self> {
        let (global, one) = match layout {
            Layout::One(global) => (global, Some(one?.to_owned())),
            Layout::Dir { base, .. } => (base, None),
        };
        let (bucket, key) =
            jaam_core::state::s3::S3Store::parse_url(&global.state.to_string_lossy())?;
        let (prefix, suffix) = match key.split_once(STACK) {
            Some((prefix, suffix)) => (prefix.to_owned(), suffix.to_owned()),
            None => (key, String::new()),
        };
        Some(Self {
            bucket,
            prefix,
            suffix,
            one,
        })
    }

    /// The stack whose state is at `key`.
    fn stack(&self, key: &str) -> Option<String> {
        if let Some(one) = &self.one {
            return (key == self.prefix).then(|| one.clone());
        }
        let name = key.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
    }
}

/// The stacks of DIR: its subdirectories holding at least one spec file.
fn stack_dirs(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| !name.starts_with('.') && has_specs(&dir.join(name)))
        .collect()
}

/// Whether `dir` holds a spec file `jaam_core::spec::load` would read.
fn has_specs(dir: &Path) -> bool {
    jaam_core::spec::spec_files(dir).is_ok_and(|files| !files.is_empty())
}

/// The daemon's stacks.
pub(crate) struct Fleet {
    shared: Arc<Shared>,
    layout: Layout,
    stacks: RwLock<BTreeMap<String, Arc<Daemon>>>,
    /// Stacks of a directory whose specs do not load, with why (`/status`).
    broken: Mutex<BTreeMap<String, String>>,
    /// Stack directories with a change waiting out the debounce.
    settling: Mutex<BTreeSet<String>>,
}

/// The fleet's shared parts, as a stack's daemon sees them.
impl std::ops::Deref for Fleet {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Fleet {
    /// Opens every stack and starts their resync timers.
    ///
    /// # Errors
    /// With one stack, its specs do not load (a daemon that cannot read them
    /// says so at start). A directory's broken stacks are logged and listed
    /// in `/status` instead: one customer's typo never stops the rest.
    pub(crate) async fn open(layout: Layout, shared: Arc<Shared>) -> anyhow::Result<Arc<Self>> {
        let names: Vec<String> = match &layout {
            Layout::One(_) => Vec::new(),
            Layout::Dir { dir, .. } => stack_dirs(dir).into_iter().collect(),
        };
        let fleet = Arc::new(Self {
            shared,
            layout,
            stacks: RwLock::default(),
            broken: Mutex::default(),
            settling: Mutex::default(),
        });
        if let Layout::One(global) = &fleet.layout {
            let daemon = Daemon::open(Arc::clone(&fleet.shared), global.clone(), false).await?;
            fleet.insert(daemon);
        }
        // Sixteen at once: each reads its state (an S3 GET with S3 state),
        // and the daemon answers no delivery before they are all open.
        futures::StreamExt::for_each_concurrent(futures::stream::iter(names), OPENING, |name| {
            let fleet = Arc::clone(&fleet);
            async move { fleet.add(&name).await }
        })
        .await;
        Ok(fleet)
    }

    /// Opens stack `name` of the directory and starts keeping it; a stack
    /// that does not load is noted as broken.
    async fn add(&self, name: &str) {
        let global = self.layout.global(name);
        let opened = async {
            // A template's directory (`state/` of `state/{stack}.json`) is
            // made with the first stack.
            let state = global.state.to_string_lossy();
            if let Some(parent) = global
                .state
                .parent()
                .filter(|_| !state.starts_with("s3://"))
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("cannot make the state directory `{}`", parent.display())
                })?;
            }
            Daemon::open(Arc::clone(&self.shared), global, true).await
        };
        match opened.await {
            Ok(daemon) => {
                self.broken.lock().expect("broken").remove(name);
                tracing::info!(stack = name, "keeping a new stack");
                self.insert(daemon);
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(stack = name, %error, "the stack's specs do not load; it is not kept until they change");
                self.broken
                    .lock()
                    .expect("broken")
                    .insert(name.to_owned(), error);
            }
        }
    }

    fn insert(&self, daemon: Arc<Daemon>) {
        let timer = tokio::spawn(super::resync(Arc::clone(&daemon))).abort_handle();
        *daemon.timer.lock().expect("timer") = Some(timer);
        let old = self
            .stacks
            .write()
            .expect("stacks")
            .insert(daemon.stack.clone(), daemon);
        if let Some(old) = old {
            old.stop_timer();
        }
    }

    /// Stops keeping stack `name` (its resources and state stay).
    fn remove(&self, name: &str) {
        self.broken.lock().expect("broken").remove(name);
        if let Some(daemon) = self.stacks.write().expect("stacks").remove(name) {
            daemon.stop_timer();
            tracing::warn!(
                stack = name,
                "the stack's directory is gone: no longer kept (nothing is destroyed)"
            );
        }
    }

    /// With S3 state: watches the stacks' leases and reconciles a stack at
    /// once when its lease lapses without being released — another daemon
    /// (or CLI) died holding it, maybe mid-deploy — rather than at its next
    /// resync. Checked every third of `--lease-ttl` (at least every second);
    /// see [`jaam_core::state::s3::LeaseWatch`] for the cost.
    pub(crate) fn watch_leases(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let one = self.stacks().first().map(|daemon| daemon.stack.clone());
        let keys = LeaseKeys::new(&self.layout, one.as_deref())?;
        let ttl = match &self.layout {
            Layout::One(global) | Layout::Dir { base: global, .. } => global.lease_ttl,
        };
        let fleet = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut watch =
                jaam_core::state::s3::LeaseWatch::new(&fleet.sdk, &keys.bucket, &keys.prefix, ttl);
            let every = (ttl / 3).max(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = fleet.intake.cancelled() => return,
                }
                let abandoned = match watch.check().await {
                    Ok(abandoned) => abandoned,
                    Err(error) => {
                        tracing::warn!(%error, "cannot look at the stacks' leases");
                        continue;
                    }
                };
                for (key, lease) in abandoned {
                    let Some(daemon) = keys.stack(&key).and_then(|name| fleet.stack(&name)) else {
                        continue;
                    };
                    tracing::warn!(
                        stack = %daemon.stack,
                        holder = %lease.holder,
                        "a lease lapsed without being released: taking the stack over"
                    );
                    let mut request = Request::default();
                    request.reasons.insert(super::LEASE_LAPSED);
                    let _ = daemon.schedule(Instant::now(), request);
                }
            }
        }))
    }

    /// Stops every resync timer (shutdown).
    pub(crate) fn stop_timers(&self) {
        for daemon in self.stacks() {
            daemon.stop_timer();
        }
    }

    /// Every stack kept, by name.
    pub(crate) fn stacks(&self) -> Vec<Arc<Daemon>> {
        self.stacks
            .read()
            .expect("stacks")
            .values()
            .cloned()
            .collect()
    }

    /// Stack `name`.
    pub(crate) fn stack(&self, name: &str) -> Option<Arc<Daemon>> {
        self.stacks.read().expect("stacks").get(name).cloned()
    }

    /// The stack that keeps site `name` (the first by stack name, should two
    /// stacks name a site alike).
    pub(crate) fn site(&self, name: &str) -> Option<Arc<Daemon>> {
        self.stacks()
            .into_iter()
            .find(|daemon| daemon.keeps_site(name))
    }

    /// Checks a delivery against the secrets of the webhooks of the
    /// repository it names, in whichever stacks have one (see
    /// [`super::webhook::Routes::authenticate`]): a secret still never
    /// authenticates a delivery for another repository.
    pub(crate) fn authenticate(
        &self,
        signature: &[u8; 32],
        hook_id: Option<&str>,
        repo: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let mut outcome = Err(SignatureError::UnknownRepository);
        for daemon in self.stacks() {
            let routes = daemon.routes.read().expect("routes");
            match routes.authenticate(signature, hook_id, repo, body) {
                Ok(()) => return Ok(()),
                Err(SignatureError::UnknownRepository) => {}
                Err(error) => outcome = Err(error),
            }
        }
        outcome
    }

    /// The broken stacks with why (`/status`).
    pub(crate) fn broken(&self) -> BTreeMap<String, String> {
        self.broken.lock().expect("broken").clone()
    }

    /// What the logs and the dashboard call the daemon's stacks.
    pub(crate) fn label(&self) -> String {
        let stacks = self.stacks.read().expect("stacks");
        match (&self.layout, stacks.keys().next()) {
            (Layout::One(_), Some(name)) => name.clone(),
            _ => format!(
                "{} stack{}",
                stacks.len(),
                if stacks.len() == 1 { "" } else { "s" }
            ),
        }
    }

    /// Watches the specs; the watcher stops when the returned handle is
    /// dropped. One stack: a change schedules it `--debounce` later. A
    /// directory: a change to a stack's directory is looked at once it has
    /// been quiet for `--debounce`, and adds, reloads or drops the stack.
    pub(crate) fn watch(self: &Arc<Self>) -> anyhow::Result<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let handle = tokio::runtime::Handle::current();
        let (target, dir) = match &self.layout {
            Layout::One(global) => (global.specs.clone(), None),
            Layout::Dir { dir, .. } => (dir.clone(), Some(dir.clone())),
        };
        let fleet = Arc::clone(self);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, notify::EventKind::Access(_)) || fleet.intake.is_cancelled()
                {
                    return;
                }
                let is_spec = |path: &PathBuf| jaam_core::spec::is_spec_file(path);
                match &dir {
                    None => {
                        if event.paths.iter().any(is_spec) {
                            let _guard = handle.enter();
                            fleet.spec_changed();
                        }
                    }
                    Some(dir) => {
                        for path in &event.paths {
                            let Some(name) = stack_of(dir, path) else {
                                continue;
                            };
                            // A spec file, or a stack directory made or removed.
                            if is_spec(path) || path.parent() == Some(dir.as_path()) {
                                let _guard = handle.enter();
                                fleet.settle(name);
                            }
                        }
                    }
                }
            })?;
        watcher.watch(&target, notify::RecursiveMode::Recursive)?;
        Ok(watcher)
    }

    /// One stack's specs changed: reconcile it `--debounce` from now.
    fn spec_changed(&self) {
        for daemon in self.stacks() {
            daemon.spec_changed(Instant::now() + self.args.debounce);
        }
    }

    /// Looks at stack directory `name` once no change has come for
    /// `--debounce`.
    fn settle(self: &Arc<Self>, name: String) {
        if !self.settling.lock().expect("settling").insert(name.clone()) {
            return;
        }
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(fleet.args.debounce).await;
            fleet.settling.lock().expect("settling").remove(&name);
            fleet.rescan(&name).await;
        });
    }

    /// Adds, reloads or drops stack `name` as its directory now stands.
    async fn rescan(&self, name: &str) {
        let Layout::Dir { dir, .. } = &self.layout else {
            return;
        };
        let present = has_specs(&dir.join(name));
        match (self.stack(name), present) {
            (Some(daemon), true) => daemon.spec_changed(Instant::now()),
            (Some(_), false) => self.remove(name),
            (None, true) => self.add(name).await,
            (None, false) => {
                self.broken.lock().expect("broken").remove(name);
            }
        }
    }
}

/// The stack directory (DIR's child) `path` is in.
fn stack_of(dir: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(dir).ok()?;
    let first = relative.components().next()?;
    let name = first.as_os_str().to_str()?;
    (!name.starts_with('.')).then(|| name.to_owned())
}

impl Daemon {
    /// New specs: parked revisions may go again, and the stack is
    /// reconciled at `due`.
    fn spec_changed(&self, due: Instant) {
        self.parking.clear();
        let mut request = Request::default();
        request.reasons.insert("spec change");
        if self.schedule(due, request).is_err() {
            tracing::warn!(stack = %self.stack, "queue full: dropped a spec change (the next resync catches it)");
        }
    }

    fn stop_timer(&self) {
        if let Some(timer) = self.timer.lock().expect("timer").take() {
            timer.abort();
        }
    }
}

/// How long after the first resync the second comes: anywhere from half a
/// period to a period and a half, so a fleet started at once spreads out.
pub(super) fn first_gap(period: Duration) -> Duration {
    period.mul_f64(0.5 + rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_should_be_the_subdirectories_with_specs() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("blog/site.yaml", "x: 1"),
            ("shop/nested/site.yml", "x: 1"),
            ("empty/README.md", "no specs"),
            (".hidden/site.yaml", "x: 1"),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::write(dir.path().join("loose.yaml"), "x: 1").unwrap();
        let names: Vec<String> = stack_dirs(dir.path()).into_iter().collect();
        assert_eq!(names, ["blog", "shop"]);
        assert_eq!(
            stack_of(dir.path(), &dir.path().join("blog/site.yaml")).as_deref(),
            Some("blog")
        );
        assert_eq!(
            stack_of(dir.path(), &dir.path().join(".hidden/x.yaml")),
            None
        );
        assert_eq!(
            stack_of(Path::new("/elsewhere"), &dir.path().join("blog")),
            None
        );
    }

    #[test]
    fn a_relative_stacks_directory_should_be_made_absolute_for_the_watcher() {
        // A directory under the working directory, named relatively.
        let fleet = tempfile::tempdir_in(".").unwrap();
        let relative = fleet
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let args = {
            use clap::Parser as _;
            let cli = crate::cli::Cli::parse_from([
                "jaam",
                "daemon",
                "--stacks",
                &relative,
                "--state",
                "state/{stack}.json",
            ]);
            match cli.command {
                crate::cli::Command::Daemon(args) => args,
                _ => unreachable!("a daemon command"),
            }
        };
        let global = Global {
            state: "state/{stack}.json".into(),
            ..test_global()
        };
        let Ok(Layout::Dir { dir: made, .. }) = Layout::new(&global, &args) else {
            panic!("a directory layout");
        };
        assert!(made.is_absolute(), "{}", made.display());
        assert_eq!(
            stack_of(
                &made,
                &fleet.path().canonicalize().unwrap().join("blog/site.yaml")
            )
            .as_deref(),
            Some("blog")
        );
        let no_template = Global {
            state: "jaam.state.json".into(),
            ..test_global()
        };
        let refused = Layout::new(&no_template, &args).err().unwrap().to_string();
        assert!(refused.contains("{stack}"), "{refused}");
    }

    #[test]
    fn lease_keys_should_map_state_keys_to_stacks() {
        let dir = Global {
            state: "s3://bucket/jaam/{stack}.json".into(),
            ..test_global()
        };
        let keys = LeaseKeys::new(
            &Layout::Dir {
                dir: "fleet".into(),
                base: dir,
            },
            None,
        )
        .unwrap();
        assert_eq!(keys.prefix, "jaam/");
        assert_eq!(keys.stack("jaam/blog.json").as_deref(), Some("blog"));
        assert_eq!(keys.stack("jaam/blog.json.history"), None);
        assert_eq!(keys.stack("jaam/x/blog.json"), None);
        let one = Global {
            state: "s3://bucket/blog.state.json".into(),
            ..test_global()
        };
        let keys = LeaseKeys::new(&Layout::One(one), Some("blog")).unwrap();
        assert_eq!(keys.stack("blog.state.json").as_deref(), Some("blog"));
        assert_eq!(keys.stack("other.json"), None);
        let local = Global {
            state: "state/{stack}.json".into(),
            ..test_global()
        };
        assert!(LeaseKeys::new(&Layout::One(local), Some("x")).is_none());
    }

    fn test_global() -> Global {
        use clap::Parser as _;
        crate::cli::Cli::parse_from(["jaam", "validate"]).global
    }

    #[test]
    fn the_second_resync_should_fall_within_half_to_one_and_a_half_periods() {
        let period = Duration::from_secs(600);
        let gaps: Vec<Duration> = (0..200).map(|_| first_gap(period)).collect();
        assert!(gaps.iter().all(|g| *g >= period / 2 && *g < period * 3 / 2));
        let early = gaps.iter().filter(|g| **g < period).count();
        assert!(
            (40..160).contains(&early),
            "spread over the window: {early} of 200 before one period"
        );
    }
}
