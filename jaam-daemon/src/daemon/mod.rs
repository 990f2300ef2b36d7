//! `jaam daemon`: keeps a stack true without anyone running `apply`.
//!
//! # Sources, one queue
//! Every trigger schedules the stack on one work queue ([`crate::queue`]):
//! - the **spec watcher** (`notify`): a change under `--specs` schedules a
//!   reconcile `--debounce` later, so an editor's burst of events runs once;
//! - the **webhook receiver** (`POST /hooks/github`, see [`webhook`]): a
//!   delivery signed with the secret of its own repository's webhook, a
//!   `push` to a site's branch or a merged pull request into it, schedules a
//!   reconcile of that site (the handler only enqueues, so it answers in
//!   microseconds). The delivery is a trigger, not an authority: the commit
//!   deployed is the branch head the GitHub API reports when the reconcile
//!   runs. The first push after a quiet `--push-window` (1 s) runs at once;
//!   pushes within the window wait for its end and merge, so a burst of 100
//!   pushes in a second is two reconciles, ending on the branch head;
//! - the **resync timer** (`--resync`, default 10 min, ±10 % jitter; the
//!   second resync is spread over a period, see [`fleet`]): refreshes
//!   and, per the stack's `drift` policy, applies the correction (`heal`) or
//!   only reports it (`report`). Like every reconcile it reads each site's
//!   branch head through the GitHub API — that is the **gap filling**: a
//!   merge missed while the daemon was down is deployed by the first
//!   reconcile after start (which is a resync) or the next one.
//!
//! # Reconcile
//! Load the specs from disk, take the stack's state lock (the same lock the
//! CLI takes: the CLI and the daemon never apply one stack at once; with S3
//! state it is the expiring lease), plan, and apply when there are changes.
//! A lock held elsewhere (a CLI's apply, another daemon's reconcile) is
//! tried once: the stack goes back to the queue for a second and the worker
//! takes other work; after `--lock-wait` of refusals it counts as a failure.
//! A failure is retried by the queue with exponential backoff and jitter; a
//! retry keeps the reasons of what failed (plus `retry`), so a failed push is
//! retried as a deploy planned from state, and a failed resync as a resync.
//! A revision whose deploy fails `--max-failures` times in a row (5) is
//! parked ([`parking`]): not retried, and resyncs keep its sites on what they
//! serve, until a new push, a spec change or a manual apply; `/status` lists
//! it. A rate-limited service's `Retry-After` delays the retry to then.
//! A reconcile asked for only by pushes and merges plans just the pushed
//! sites' instances from state (`--target`, no refresh): the deploy starts in
//! milliseconds, and the next resync refreshes everything.
//!
//! # HTTP
//! `GET /healthz`, `GET /metrics` (Prometheus), `GET /status` (JSON), `GET
//! /sites/{name}/logs` (server-sent events of the site's log group: one
//! CloudWatch poller per site whoever follows it, at most 32 streams; see
//! [`logs`]). With a token (`JAAM_DAEMON_TOKEN` or `--read-token-file`; never
//! on the command line) the last three want `Authorization: Bearer <token>`,
//! compared by digest in constant time. Without a token the daemon refuses to
//! listen beyond loopback unless `--public-read` says the read side is public
//! (with a token and `--public-read`, reads are open and actions still need
//! the token).
//!
//! Each deploy is also a GitHub deployment with its statuses
//! ([`deployments`]).
//!
//! `GET /` is the dashboard ([`dashboard`]): the sites, their deploy
//! history, live build logs, and buttons to deploy, roll back and apply
//! drift (which always need the token).
//!
//! # Lifecycle
//! SIGTERM or SIGINT stops intake (the HTTP server, watcher and timer), lets
//! an in-flight reconcile finish for up to `--shutdown-grace` (then cancels
//! it: in-flight cloud calls complete and state is saved), and exits 0.
//!
//! # Decisions
//! - A daemon keeps the one stack `--specs`/`--state`/`--stack` name (as
//!   every other command does), or with `--stacks DIR` a stack per
//!   subdirectory of DIR, `--workers` of them reconciled at once ([`fleet`]).
//!   Everything below holds per stack; the queue, the HTTP side and the
//!   delivery memory are shared.
//! - A reconcile triggered by a push, a merge or a spec change applies
//!   whatever the plan holds; only resyncs obey `report`.

mod dashboard;
mod deployments;
mod fleet;
mod http;
mod logs;
mod metrics;
mod parking;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use jaam_core::spec::{Config, DriftPolicy};
use jaam_core::state::State;
use jaam_core::{Engine, ResourceAddr, Secret, Value};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{DaemonArgs, Global};
use crate::queue::{self, Queue, Request};
use metrics::Metrics;
use webhook::{Deliveries, KnownHook, Routes};

/// The reason a failed reconcile's retry adds to the reasons it keeps.
const RETRY: &str = "retry";

/// The reason of a reconcile that takes over a stack whose lease lapsed
/// unreleased (its holder died): a full reconcile that, like a resync,
/// obeys `drift: report`.
const LEASE_LAPSED: &str = "lease lapsed";

/// What asks to deploy sites, not to reconcile the stack: a push, a merge,
/// the dashboard's Deploy latest. Such a reconcile plans only those sites'
/// instances (it never applies drift a `report` stack holds back).
const DEPLOY_REASONS: [&str; 4] = ["push", "merged pull request", "pull request", "deploy"];

/// Webhook bodies read and checked at once; more concurrent deliveries get
/// 503 (GitHub retries), so unauthenticated senders cannot hold the memory
/// of many 25 MB bodies.
const MAX_BODIES: usize = 8;

/// What `/status` says about the stack.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct StackStatus {
    pub(crate) stack: String,
    pub(crate) last_reconcile: Option<DateTime<Utc>>,
    pub(crate) reasons: Vec<String>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<String>,
    /// The revision each site's instance serves, per state.
    pub(crate) revisions: BTreeMap<String, String>,
    /// The pull request previews each site serves, per state: number →
    /// head and URL (sites with previews only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) previews: BTreeMap<String, BTreeMap<u64, serde_json::Value>>,
    /// Addresses a `report` resync found out of line.
    pub(crate) drift: Vec<String>,
    pub(crate) next_resync: Option<DateTime<Utc>>,
    pub(crate) reconciles: u64,
}

/// What every stack of one daemon shares: the HTTP side's limits and
/// memory of deliveries, the work queue its workers take stacks from, the
/// metrics, and the AWS and GitHub clients that are not a stack's own.
pub(crate) struct Shared {
    args: DaemonArgs,
    /// Keyed by stack: one stack is never reconciled twice at once.
    queue: Arc<Queue<String, Request>>,
    metrics: Metrics,
    deliveries: Mutex<Deliveries>,
    /// Webhook bodies being read or checked at once (beyond: 503).
    bodies: tokio::sync::Semaphore,
    /// GitHub, for deployment statuses (see [`deployments`]).
    github: jaam_core::providers::github::Api,
    parameters: jaam_core::providers::aws::parameters::Parameters,
    /// Stops intake (HTTP, watcher, timers).
    intake: CancellationToken,
    /// The token the read endpoints want, if any (see [`read_token`]).
    read_token: Option<Secret>,
    /// Shared log pollers and the stream cap.
    logs: logs::LogHub,
    sdk: jaam_core::providers::aws::SdkConfig,
    /// Built once; each stack's registry shares them.
    providers: jaam_core::providers::Providers,
}

/// One stack the daemon keeps: its specs, state, routes and status.
pub(crate) struct Daemon {
    shared: Arc<Shared>,
    global: Global,
    engine: Engine,
    stack: String,
    status: Mutex<StackStatus>,
    /// Which deliveries are accepted (by their repository's webhook secrets)
    /// and which sites they deploy.
    routes: RwLock<Routes>,
    /// Generated webhook secrets read from Parameter Store, by (name, hook id).
    stored_secrets: Mutex<HashMap<(String, String), Secret>>,
    /// When the last failed reconcile's service asked to be tried again
    /// (taken by the worker when it schedules the retry).
    retry_after: Mutex<Option<DateTime<Utc>>>,
    /// Revisions that keep failing (see [`parking`]).
    parking: parking::Parking,
    /// Set by a reconcile whose every failure parked its revision: no retry.
    all_parked: std::sync::atomic::AtomicBool,
    /// Until when pushes wait for the current push window to close.
    push_window: Mutex<Instant>,
    /// The stack's resync timer (aborted when the stack goes away).
    timer: Mutex<Option<tokio::task::AbortHandle>>,
    /// Since when its reconciles have found the state locked elsewhere.
    busy_since: Mutex<Option<Instant>>,
}

/// What became of a reconcile the worker ran.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    /// It ran (and succeeded or failed).
    Done(Result<(), String>),
    /// It could not start: another process holds the stack's lock. The
    /// stack is handed back to the queue for [`BUSY_RETRY`], so a held lock
    /// never holds a worker (another daemon's apply, a CLI's), until
    /// `--lock-wait` has passed; then it fails like any reconcile.
    Busy,
}

/// How soon a stack whose lock was held is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// A stack's daemon uses the fleet's shared parts as its own.
impl std::ops::Deref for Daemon {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

pub(crate) async fn run(global: &Global, args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let sdk = jaam_core::providers::aws::load_config().await;
    let read_token = read_token(args)?;
    let layout = fleet::Layout::new(global, args)?;
    let providers = jaam_core::providers::Providers::new(&sdk);
    let shared = Arc::new(Shared {
        args: args.clone(),
        queue: Queue::new(queue::Config {
            capacity: layout.queue_capacity(),
            retry: queue::RETRY,
        }),
        metrics: Metrics::default(),
        // Ids and body hashes: the newest 10,000 deliveries.
        deliveries: Mutex::new(Deliveries::load(layout.deliveries_file(args), 20_000)),
        bodies: tokio::sync::Semaphore::new(MAX_BODIES),
        github: providers.github().clone(),
        parameters: jaam_core::providers::aws::parameters::Parameters::new(&sdk, None),
        intake: CancellationToken::new(),
        read_token,
        logs: logs::LogHub::new(jaam_core::providers::aws::sites::Logs::new(&sdk)),
        providers,
        sdk,
    });
    let fleet = fleet::Fleet::open(layout, shared).await?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        stacks = %fleet.label(),
        workers = args.workers,
        "jaam daemon started"
    );
    let server = tokio::spawn(http::serve(Arc::clone(&fleet), listener));
    let watcher = fleet.watch()?;
    let leases = fleet.watch_leases();
    let shutdown = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.workers.max(1) {
        workers.spawn(work(Arc::clone(&fleet), shutdown.clone()));
    }

    wait_for_signal().await;
    tracing::info!("stopping: no new work; letting running reconciles finish");
    fleet.intake.cancel();
    drop(watcher);
    if let Some(leases) = leases {
        leases.abort();
    }
    fleet.stop_timers();
    let _ = server.await;
    // Cancelling the applies after the grace period: started calls finish, state is saved.
    let grace = tokio::time::sleep(args.shutdown_grace);
    tokio::pin!(grace);
    // Dropping a JoinSet aborts its tasks: it is drained, never dropped, so
    // a cancelled apply still saves its state.
    let all_done = async { while workers.join_next().await.is_some() {} };
    tokio::pin!(all_done);
    tokio::select! {
        () = &mut all_done => {}
        () = &mut grace => {
            tracing::warn!("shutdown grace period over: cancelling the running applies");
            shutdown.cancel();
            all_done.await;
        }
    }
    tracing::info!("jaam daemon stopped");
    crate::commands::success()
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

impl Daemon {
    /// Opens the stack `global` names and learns its routes; its specs must
    /// load. A stack of a directory (`named_by_dir`) is named by it, and
    /// specs naming another stack are refused.
    async fn open(
        shared: Arc<Shared>,
        global: Global,
        named_by_dir: bool,
    ) -> anyhow::Result<Arc<Self>> {
        // Branch heads come from the GitHub API when a reconcile runs: a
        // delivery only says which sites to look at (see `webhook`).
        // A revision that keeps failing is parked: the resolver then answers
        // what serves (see `parking`).
        let parking = parking::Parking::new(shared.args.max_failures);
        let registry = shared.providers.registry(|heads| parking.wrap(heads));
        let config = crate::commands::load_specs_with(&global, &registry)?;
        let stack = crate::commands::stack_name(&global, Some(&config));
        if named_by_dir && let Some(named) = &config.stack().name {
            anyhow::ensure!(
                *named == stack,
                "the specs in `{}` name stack `{named}`, but a stack of --stacks is named by its directory (`{stack}`)\n\n\
                 hint: rename the directory to `{named}`, or set `stack: {{name: {stack}}}`",
                global.specs.display()
            );
        }
        let engine = crate::commands::engine(&global, registry, stack.clone())
            .await?
            // A reconcile tries the lock once and, when it is held, hands
            // the stack back (see `Ran::Busy`); a rollback waits for it.
            .with_lock_timeout(Duration::ZERO);
        let daemon = Arc::new(Self {
            shared,
            global: Global {
                stack: Some(stack.clone()),
                no_color: true,
                full: false,
                ..global
            },
            engine,
            stack: stack.clone(),
            status: Mutex::new(StackStatus {
                stack,
                ..StackStatus::default()
            }),
            routes: RwLock::default(),
            stored_secrets: Mutex::default(),
            retry_after: Mutex::default(),
            parking,
            all_parked: std::sync::atomic::AtomicBool::new(false),
            push_window: Mutex::new(Instant::now()),
            timer: Mutex::default(),
            busy_since: Mutex::default(),
        });
        let state = daemon.engine.state().await.ok().flatten();
        daemon.index(&config, state.as_ref()).await;
        Ok(daemon)
    }

    /// Whether site `name` is one of this stack's.
    fn keeps_site(&self, name: &str) -> bool {
        self.routes.read().expect("routes").has_site(name)
            || self
                .status
                .lock()
                .expect("status")
                .revisions
                .contains_key(name)
    }

    /// Counts the apply's failed and succeeded site deploys per revision
    /// (see [`parking`]); notes when every failure is a parked revision.
    fn park(&self, plan: &jaam_core::Plan, report: &jaam_core::apply::Report) {
        let routes = self.routes.read().expect("routes").all_sites();
        let site_of = |addr: &ResourceAddr| -> Option<(String, &(String, String))> {
            let site = addr.composite()?;
            (addr.kind() == "instance" && site.kind() == "site")
                .then(|| site.name().to_owned())
                .and_then(|name| routes.get(&name).map(|route| (name, route)))
        };
        let planned = |addr: &ResourceAddr| {
            plan.changes
                .iter()
                .find(|change| &change.addr == addr)
                .and_then(|change| change.after.as_ref()?.get("revision")?.as_str())
                .map(str::to_owned)
        };
        let recorded = |addr: &ResourceAddr| {
            report
                .state
                .resources
                .get(addr)
                .and_then(|r| r.attributes.get("revision")?.as_str())
                .map(str::to_owned)
        };
        for addr in &report.applied {
            if let (Some((_, (repo, branch))), Some(revision)) = (site_of(addr), recorded(addr)) {
                self.parking.succeeded(repo, branch, &revision);
            }
        }
        let mut all_parked = !report.failed.is_empty();
        for failure in &report.failed {
            let addr = failure.addr();
            // The revision deployed and a preview after it failed: the
            // revision is not the one to park (a preview's head that failed
            // is not built again within the hour: the deploy script).
            if let (Some((_, (repo, branch))), Some(revision)) = (site_of(addr), planned(addr))
                && recorded(addr).as_deref() == Some(revision.as_str())
                // (The first line is jaam's own; a build's output follows.)
                && std::error::Error::source(failure).is_some_and(|source| {
                    source
                        .to_string()
                        .lines()
                        .next()
                        .is_some_and(|first| first.contains("previews failed: "))
                })
            {
                self.parking.succeeded(repo, branch, &revision);
                all_parked = false;
                continue;
            }
            let parked = match (site_of(addr), planned(addr)) {
                (Some((_, (repo, branch))), Some(revision)) => {
                    let error = std::error::Error::source(failure)
                        .map_or_else(|| failure.to_string(), ToString::to_string);
                    self.parking
                        .failed(repo, branch, &revision, recorded(addr), &error)
                }
                _ => false,
            };
            all_parked &= parked;
        }
        if all_parked {
            self.all_parked
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Rolls `site` back to its previous release (the deploy script's
    /// `rollback` over SSM) under the stack's lock, so never during a
    /// reconcile, and records it in the deploy history.
    async fn rollback(&self, site: &ResourceAddr) -> Result<String, String> {
        let session = self
            .lock_waiting("jaam daemon: rollback")
            .await
            .map_err(|e| e.to_string())?;
        let Some(state) = session.state().cloned() else {
            let _ = session.release().await;
            return Err("nothing applied yet".to_owned());
        };
        let (outcome, deployment) =
            jaam_core::providers::aws::sites::rollback_recorded(&self.sdk, &state, site).await;
        if let Some(deployment) = deployment
            && let Err(error) = session.record_deployments(&[deployment]).await
        {
            tracing::warn!(%error, "the deploy history was not written");
        }
        session.release().await.map_err(|e| e.to_string())?;
        self.record_revisions(&state);
        outcome.map_err(|e| e.to_string())
    }

    fn schedule(&self, due: Instant, request: Request) -> Result<(), queue::Full> {
        self.queue.schedule(self.stack.clone(), due, request)
    }

    /// When a push arriving now should run: at once after a quiet window,
    /// else when the current window closes (pushes meanwhile merge into one
    /// reconcile, the latest revision winning).
    fn push_due(&self) -> Instant {
        let now = Instant::now();
        let mut window = self.push_window.lock().expect("push window");
        if now >= *window {
            *window = now + self.args.push_window;
            now
        } else {
            *window
        }
    }

    /// Learns the sites and webhook secrets of `config` (generated secrets'
    /// Parameter Store names come from `state`; each is read once per hook).
    async fn index(&self, config: &Config, state: Option<&State>) {
        let mut routes = Routes::default();
        let literal = |resource: &jaam_core::spec::ResourceSpec, name: &str| {
            resource
                .args
                .get(name)
                .map(|expr| expr.evaluate(&|_, _| None, &|name| std::env::var(name).ok()))
                .and_then(|value| value.as_str().map(str::to_owned))
        };
        for (addr, resource) in config.resources() {
            match addr.kind() {
                "instance" => {
                    let Some(revision) = literal(resource, "revision") else {
                        continue;
                    };
                    if let Some((repo, branch)) =
                        jaam_core::providers::aws::ec2::parse_branch_head(&revision)
                    {
                        let site = jaam_core::history::site_of(addr);
                        let previews = resource
                            .args
                            .get("previews")
                            .map(|expr| expr.evaluate(&|_, _| None, &|_| None))
                            .is_some_and(|value| {
                                jaam_core::spec::site::PreviewSource::from_value(&value).is_some()
                            });
                        if previews {
                            routes.add_previews(&site);
                        }
                        routes.add_site(repo, branch, site);
                    }
                }
                "webhook" => {
                    let Some(repo) = literal(resource, "repo") else {
                        continue;
                    };
                    let recorded = state.and_then(|state| state.resources.get(addr));
                    let id = recorded.map(|r| r.id.clone());
                    if let Some(secret) = literal(resource, "secret") {
                        routes.add_hook(
                            &repo,
                            KnownHook {
                                id,
                                secret: Secret::new(secret),
                            },
                        );
                    } else if let Some(secret) = self.generated_secret(recorded).await {
                        routes.add_hook(&repo, KnownHook { id, secret });
                    }
                }
                _ => {}
            }
        }
        if routes.has_sites_without_hooks() {
            tracing::warn!(
                "a site's repository has no webhook secret known yet: its deliveries are refused until it has"
            );
        }
        *self.routes.write().expect("routes") = routes;
    }

    /// A generated webhook secret: its Parameter Store name is in state. A
    /// hook made again gets a new secret, so the cache is keyed by the hook too.
    async fn generated_secret(
        &self,
        recorded: Option<&jaam_core::state::ResourceState>,
    ) -> Option<Secret> {
        let recorded = recorded?;
        let name = recorded
            .attributes
            .get("secret_parameter")
            .and_then(Value::as_str)?
            .to_owned();
        let key = (name.clone(), recorded.id.clone());
        if let Some(secret) = self.stored_secrets.lock().expect("secrets").get(&key) {
            return Some(secret.clone());
        }
        match self.parameters.get(&name).await {
            Ok(Some(secret)) => {
                self.stored_secrets
                    .lock()
                    .expect("secrets")
                    .insert(key, secret.clone());
                Some(secret)
            }
            Ok(None) => {
                tracing::warn!(parameter = %name, "webhook secret parameter is missing");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read a webhook secret");
                None
            }
        }
    }

    /// Notes the revision each site's instance serves, per `state`.
    fn record_revisions(&self, state: &State) {
        let revisions = state
            .resources
            .iter()
            .filter(|(addr, _)| addr.kind() == "instance")
            .filter_map(|(addr, resource)| {
                let revision = resource.attributes.get("revision")?.as_str()?.to_owned();
                let site = jaam_core::history::site_of(addr);
                Some((site, revision))
            })
            .collect();
        let previews = state
            .resources
            .iter()
            .filter(|(addr, _)| addr.kind() == "instance")
            .filter_map(|(addr, resource)| {
                let previews = resource.attributes.get("previews")?;
                let served = jaam_core::providers::aws::ec2::previews_of(Some(previews))
                    .into_iter()
                    .map(|(number, preview)| {
                        (
                            number,
                            serde_json::json!({"head": preview.head, "url": preview.url}),
                        )
                    })
                    .collect();
                Some((jaam_core::history::site_of(addr), served))
            })
            .collect();
        let mut status = self.status.lock().expect("status");
        status.revisions = revisions;
        status.previews = previews;
    }

    /// One reconcile: specs from disk, the lock, plan, and apply unless the
    /// policy says report.
    async fn reconcile(&self, request: &Request, cancel: &CancellationToken) -> Ran {
        let started = Utc::now();
        let reasons: Vec<String> = request.reasons.iter().map(|r| (*r).to_owned()).collect();
        tracing::info!(stack = %self.stack, ?reasons, "reconcile started");
        let outcome = match self.reconcile_inner(request, cancel).await {
            Err(Failure::Busy) => return Ran::Busy,
            Err(Failure::Failed(error)) => Err(error),
            Ok(result) => Ok(result),
        };
        let mut status = self.status.lock().expect("status");
        status.last_reconcile = Some(started);
        status.reasons = reasons;
        status.reconciles += 1;
        match &outcome {
            Ok(result) => {
                status.result = Some((*result).to_owned());
                status.error = None;
                self.metrics.reconcile(result);
                tracing::info!(stack = %self.stack, result, "reconcile finished");
            }
            Err(error) => {
                status.result = Some("failed".into());
                status.error = Some(error.clone());
                self.metrics.reconcile("failed");
                tracing::warn!(stack = %self.stack, %error, "reconcile failed; retrying with backoff");
            }
        }
        Ran::Done(outcome.map(|_| ()))
    }

    /// The stack's lock, tried once. Held elsewhere: [`Failure::Busy`] until
    /// `--lock-wait` has passed since the first refusal, then the error.
    async fn try_lock(&self) -> Result<jaam_core::Session<'_>, Failure> {
        match self.engine.lock("jaam daemon").await {
            Ok(session) => {
                *self.busy_since.lock().expect("busy") = None;
                Ok(session)
            }
            Err(jaam_core::Error::State(jaam_core::state::Error::Locked { holder, .. })) => {
                let mut since = self.busy_since.lock().expect("busy");
                let first = *since.get_or_insert_with(Instant::now);
                if first.elapsed() < self.args.lock_wait {
                    tracing::info!(stack = %self.stack, %holder, "the stack is locked elsewhere; trying again shortly");
                    return Err(Failure::Busy);
                }
                *since = None;
                Err(Failure::Failed(format!(
                    "{} (waited {:?}, --lock-wait)",
                    jaam_core::state::Error::Locked {
                        holder,
                        lapses: None
                    },
                    self.args.lock_wait
                )))
            }
            Err(error) => Err(Failure::Failed(error.to_string())),
        }
    }

    /// The stack's lock, waiting up to `--lock-wait` for it (a rollback).
    async fn lock_waiting(
        &self,
        command: &str,
    ) -> Result<jaam_core::Session<'_>, jaam_core::Error> {
        let deadline = Instant::now() + self.args.lock_wait;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.engine.lock(command).await {
                Err(jaam_core::Error::State(jaam_core::state::Error::Locked { .. }))
                    if Instant::now() + delay < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BUSY_RETRY);
                }
                outcome => return outcome,
            }
        }
    }

    async fn reconcile_inner(
        &self,
        request: &Request,
        cancel: &CancellationToken,
    ) -> Result<&'static str, Failure> {
        // A retry keeps the reasons of what failed (plus `retry`): a failed
        // push is retried as a deploy, a failed resync as a resync.
        let resync_only = request
            .reasons
            .iter()
            .all(|r| *r == "resync" || *r == LEASE_LAPSED || *r == RETRY);
        let mut stages = Stages::start();
        let config = crate::commands::load_specs_with(&self.global, self.engine.registry())
            .map_err(|e| Failure::Failed(format!("{e:#}")))?;
        stages.mark("specs");
        // A push or a merge touches only its sites' instances: plan just those
        // from state (no refresh; the resync refreshes everything), so a deploy
        // starts within milliseconds of the delivery.
        let deploy_only = !request.revisions.is_empty()
            && request
                .reasons
                .iter()
                .all(|r| DEPLOY_REASONS.contains(r) || *r == RETRY);
        let options = if deploy_only {
            jaam_core::plan::Options {
                refresh: false,
                targets: request
                    .revisions
                    .keys()
                    .filter_map(|site| {
                        let addr: ResourceAddr = format!("site.{site}.instance")
                            .parse()
                            .or_else(|_| site.parse())
                            .ok()?;
                        config.resources().contains_key(&addr).then_some(addr)
                    })
                    .collect(),
                destroy: false,
                replace: Vec::new(),
            }
        } else {
            jaam_core::plan::Options::default()
        };
        let mut session = self.try_lock().await?;
        stages.mark("lock");
        self.index(&config, session.state()).await;
        if let Some(state) = session.state() {
            self.record_revisions(state);
        }
        let outcome = async {
            let plan = session
                .plan(&config, &options)
                .await
                .map_err(|e| e.to_string())?;
            stages.mark("plan");
            if !plan.has_changes() {
                self.status.lock().expect("status").drift.clear();
                return Ok("no_changes");
            }
            let changed: Vec<String> = plan
                .changes
                .iter()
                .filter(|c| c.action.is_change())
                .map(|c| c.addr.to_string())
                .collect();
            if resync_only && config.stack().drift == DriftPolicy::Report {
                tracing::warn!(stack = %self.stack, ?changed, "drift found; policy is report, not applying");
                self.status.lock().expect("status").drift = changed;
                return Ok("drift_reported");
            }
            let (started, took) = (Utc::now(), std::time::Instant::now());
            let routes = self.routes.read().expect("routes").all_sites();
            let apply_options = Default::default();
            // GitHub hears of the deploys while they start, not before: its
            // calls stay off the path from a push to the deploy command.
            let (on_github, report) = tokio::join!(
                deployments::start(
                    &self.github,
                    &plan,
                    &config,
                    &routes,
                    self.args.public_url.as_deref(),
                ),
                session.apply(&plan, &apply_options, None, cancel.clone()),
            );
            stages.mark("apply");
            let report = report.map_err(|e| e.to_string())?;
            deployments::finish(&self.github, &on_github, &report).await;
            deployments::retire(&self.github, &plan, &routes, &report).await;
            self.metrics.apply(took.elapsed());
            let deployments = jaam_core::history::from_apply(
                &plan,
                &report,
                &request.trigger(),
                started,
                took.elapsed(),
            );
            if let Err(error) = session.record_deployments(&deployments).await {
                tracing::warn!(%error, "the deploy history was not written");
            }
            self.record_revisions(&report.state);
            self.park(&plan, &report);
            self.status.lock().expect("status").drift.clear();
            if report.succeeded() {
                Ok("applied")
            } else {
                if let Some(at) = report.retry_after() {
                    tracing::warn!(stack = %self.stack, retry_after = %at, "a service asked not to be retried before then");
                    *self.retry_after.lock().expect("retry_after") = Some(at);
                }
                // Each failure with its cause (the tail of a failed build).
                let errors: Vec<String> = report
                    .failed
                    .iter()
                    .map(|failure| match std::error::Error::source(failure) {
                        Some(source) => format!("{failure}: {source}"),
                        None => failure.to_string(),
                    })
                    .collect();
                Err(if errors.is_empty() {
                    "the apply was interrupted".to_owned()
                } else {
                    errors.join("; ")
                })
            }
        }
        .await;
        session
            .release()
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        stages.mark("release");
        tracing::info!(
            stack = %self.stack,
            deploy_only,
            stages = %stages,
            "reconcile stages (milliseconds each)"
        );
        outcome.map_err(Failure::Failed)
    }
}

/// Why a reconcile did not succeed.
enum Failure {
    /// The lock is held elsewhere (see [`Ran::Busy`]).
    Busy,
    /// It failed.
    Failed(String),
}

/// How long each stage of a reconcile took, for the log: where a push's
/// time goes on its way to the deploy command (`scripts/bench-daemon`
/// prints their medians).
struct Stages {
    last: Instant,
    took: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn start() -> Self {
        Self {
            last: Instant::now(),
            took: Vec::new(),
        }
    }

    /// Ends stage `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.took.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, took)) in self.took.iter().enumerate() {
            let gap = if i == 0 { "" } else { " " };
            write!(f, "{gap}{name}={:.2}", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// A worker: takes the next stack due (never one another worker holds)
/// and reconciles it, until shutdown. `--workers` of them run at once.
async fn work(fleet: Arc<fleet::Fleet>, shutdown: CancellationToken) {
    loop {
        let (stack, request) = tokio::select! {
            next = fleet.queue.next() => next,
            () = fleet.intake.cancelled() => return,
        };
        let Some(daemon) = fleet.stack(&stack) else {
            // The stack's directory went away while it waited.
            fleet.queue.done(&stack, true, Request::default(), None);
            continue;
        };
        let result = match daemon.reconcile(&request, &shutdown).await {
            Ran::Done(result) => result,
            Ran::Busy => {
                fleet
                    .queue
                    .requeue(&stack, Instant::now() + BUSY_RETRY, request);
                continue;
            }
        };
        let mut retry = request.clone();
        retry.reasons.insert(RETRY);
        // A service that said when to try again (an ACME rate limit) is
        // not asked before then.
        let not_before = daemon
            .retry_after
            .lock()
            .expect("retry_after")
            .take()
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .map(|wait| Instant::now() + wait);
        // Every failure parked its revision: nothing to retry.
        let parked = daemon
            .all_parked
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        fleet
            .queue
            .done(&stack, result.is_ok() || parked, retry, not_before);
        if fleet.intake.is_cancelled() {
            return;
        }
    }
}

/// A stack's resync timer: the first resync at start (gap filling), the
/// second at a random point of the next period ([`fleet::first_gap`]), then
/// every period ±10 %.
async fn resync(daemon: Arc<Daemon>) {
    let period = daemon.args.resync;
    let mut wait = Duration::ZERO;
    let mut first = true;
    loop {
        tokio::time::sleep(wait).await;
        let mut request = Request::default();
        request.reasons.insert("resync");
        let _ = daemon.schedule(Instant::now(), request);
        wait = if first {
            fleet::first_gap(period)
        } else {
            period.mul_f64((rand::random::<f64>() - 0.5).mul_add(0.2, 1.0))
        };
        first = false;
        daemon.status.lock().expect("status").next_resync = chrono::Duration::from_std(wait)
            .ok()
            .map(|w| Utc::now() + w);
    }
}

/// The read endpoints' token: `JAAM_DAEMON_TOKEN` or `--read-token-file`.
/// Without one, listening beyond loopback needs `--public-read`.
///
/// # Errors
/// The file cannot be read or is empty; or the address is not loopback and
/// neither a token nor `--public-read` is given.
fn read_token(args: &DaemonArgs) -> anyhow::Result<Option<Secret>> {
    let token = match (&args.read_token_file, std::env::var("JAAM_DAEMON_TOKEN")) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the token file `{}`", file.display()))?;
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty(),
                "the token file `{}` is empty",
                file.display()
            );
            Some(Secret::new(token))
        }
        (None, Ok(token)) if !token.trim().is_empty() => Some(Secret::new(token.trim())),
        (None, _) => None,
    };
    let loopback = args
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|address| address.ip().is_loopback())
        || args.listen.starts_with("localhost:");
    anyhow::ensure!(
        token.is_some() || loopback || args.public_read,
        "refusing to serve /status, /metrics and build logs on `{}` without a token\n\n\
         hint: set JAAM_DAEMON_TOKEN (or --read-token-file FILE), or pass --public-read to serve them to anyone",
        args.listen
    );
    Ok(token)
}

/// The addresses of a site's resources (for `/sites/{name}/logs`).
fn site_addr(name: &str) -> Option<ResourceAddr> {
    format!("site.{name}").parse().ok()
}
