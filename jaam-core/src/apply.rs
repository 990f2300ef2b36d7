//! Applying a plan: a bounded-parallel walk of the change graph, journaled.
//!
//! # Ordering
//! 1. A create, update or replacement starts once every resource it depends on
//!    has finished (and is durable in the journal).
//! 2. A delete starts once every resource that depended on it (as recorded) has
//!    been deleted or replaced: destroy walks the graph in reverse.
//! 3. A replacement is one node: `CreateThenDelete` creates the new resource and
//!    then deletes the old one; `DeleteThenCreate` the other way round.
//!
//! # Guarantees
//! - At most `parallelism` cloud operations run at once (a semaphore). The
//!   permit is held for the provider call only; waiting for the journal's fsync
//!   happens outside it, so durability costs no cloud throughput.
//! - Before a create call an intent is journaled; for kinds whose resources can
//!   be found again by ownership tags or natural key ([`Schema::adoptable`]) the
//!   intent rides along with the next group commit instead of waiting for its own.
//! - An outcome is durable before the resource counts as done and before any
//!   dependent starts.
//! - A failure skips its dependents (reported as skipped because of the root
//!   cause) and lets independent branches finish. Whatever happened is in the
//!   new state snapshot, which is written even when some resources failed.
//!
//! # Cancellation
//! Cancelling the token stops launching new operations; operations in flight
//! finish and are journaled, and the state is saved. Resources never started
//! are reported as [`Event::NotStarted`].
//!
//! [`Schema::adoptable`]: crate::schema::Schema::adoptable

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesUnordered, StreamExt};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::addr::ResourceAddr;
use crate::plan::{Action, Plan, ResourceChange};
use crate::provider::{Context, Owner, ProviderError, Registry};
use crate::schema::{ReplaceOrder, Schema};
use crate::spec::Template;
use crate::state::{
    Journal, Operation, Outcome, PendingIntent, Record, ResourceState, State, StateMeta,
    StateStore, fold,
};
use crate::value::{Attrs, Value};

/// Apply options.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many cloud operations may run at once (default 10).
    pub parallelism: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { parallelism: 10 }
    }
}

/// What happened to one resource, in order of occurrence.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An operation started.
    Started {
        /// The resource.
        addr: ResourceAddr,
        /// `create`, `update`, `replace` or `delete`.
        action: String,
    },
    /// An operation finished and is durable.
    Finished {
        /// The resource.
        addr: ResourceAddr,
        /// `create`, `update`, `replace` or `delete`.
        action: String,
        /// The cloud id (none after a delete).
        id: Option<String>,
        /// How long it took.
        #[serde(with = "duration_millis")]
        elapsed: Duration,
    },
    /// An operation failed.
    Failed {
        /// The resource.
        addr: ResourceAddr,
        /// The error with its causes.
        message: String,
    },
    /// Not attempted because a dependency failed.
    Skipped {
        /// The resource.
        addr: ResourceAddr,
        /// The root cause.
        because: ResourceAddr,
    },
    /// Not attempted because the apply was cancelled.
    NotStarted {
        /// The resource.
        addr: ResourceAddr,
    },
    /// The new state snapshot was written.
    StateSaved {
        /// Its serial.
        serial: u64,
    },
}

mod duration_millis {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// An [`Event`] with its sequence number (from 1, gap-free per apply).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sequenced {
    /// The sequence number.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Errors of one resource during apply.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The provider call failed.
    #[error("`{addr}`: {operation} failed")]
    Provider {
        /// The resource.
        addr: ResourceAddr,
        /// What was attempted.
        operation: &'static str,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
    /// A reference could still not be resolved at apply time.
    #[error("`{addr}`: `{template}` could not be resolved")]
    Unresolved {
        /// The resource.
        addr: ResourceAddr,
        /// The template.
        template: String,
    },
    /// The journal failed; nothing more is attempted.
    #[error("`{addr}`: journal write failed")]
    Journal {
        /// The resource.
        addr: ResourceAddr,
        /// The state error.
        #[source]
        source: Box<crate::state::Error>,
    },
}

impl ResourceError {
    /// The resource concerned.
    pub fn addr(&self) -> &ResourceAddr {
        match self {
            ResourceError::Provider { addr, .. }
            | ResourceError::Unresolved { addr, .. }
            | ResourceError::Journal { addr, .. } => addr,
        }
    }

    /// Whether a later retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ResourceError::Provider { source, .. } if source.is_retryable())
    }
}

/// Errors that stop an apply before or after the walk.
///
/// [`Error::Stale`] is not retryable: plan again. [`Error::State`] is retryable
/// when it is a lock held by someone else.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan was made against another state.
    #[error("plan is stale: it was made against {}, but the state is now {}", describe(.planned), describe(.found))]
    Stale {
        /// The state the plan expected.
        planned: Option<StateMeta>,
        /// The state found.
        found: Option<StateMeta>,
    },
    /// The state store failed.
    #[error("state store failed")]
    State(#[from] crate::state::Error),
}

fn describe(meta: &Option<StateMeta>) -> String {
    match meta {
        Some(meta) => format!("lineage {} serial {}", meta.lineage, meta.serial),
        None => "no state".to_owned(),
    }
}

/// Apply result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an apply did.
#[derive(Debug)]
pub struct Report {
    /// The state now saved.
    pub state: State,
    /// Resources changed successfully.
    pub applied: Vec<ResourceAddr>,
    /// Resources that failed, with why.
    pub failed: Vec<ResourceError>,
    /// Resources skipped, with the root cause.
    pub skipped: Vec<(ResourceAddr, ResourceAddr)>,
    /// Resources not started because of cancellation.
    pub not_started: Vec<ResourceAddr>,
    /// How many journal group commits (fsyncs) the apply made.
    pub journal_commits: u64,
}

impl Report {
    /// Whether everything planned was applied.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.not_started.is_empty()
    }

    /// The latest time a failed resource's service asked not to be tried
    /// again before (an ACME `Retry-After`), if any did.
    pub fn retry_after(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.failed
            .iter()
            .filter_map(|failure| match failure {
                ResourceError::Provider { source, .. } => source.retry_after,
                _ => None,
            })
            .max()
    }
}

struct Emitter {
    sender: Option<mpsc::UnboundedSender<Sequenced>>,
    seq: AtomicU64,
}

impl Emitter {
    /// Emits the event `make` builds, building it only when someone listens.
    fn emit(&self, make: impl FnOnce() -> Event) {
        if self.sender.is_none() && !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let event = make();
        tracing::debug!(?event, "apply event");
        if let Some(sender) = &self.sender {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = sender.send(Sequenced { seq, event });
        }
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::NoOp => "no-op",
        Action::Create => "create",
        Action::Update { .. } => "update",
        Action::Replace { .. } => "replace",
        Action::Delete => "delete",
    }
}

/// Everything a node's operation needs, borrowed by every operation in flight.
struct Shared<'a> {
    /// The salt of secret fingerprints: the stack's lineage.
    salt: String,
    registry: &'a Registry,
    context: &'a Context,
    journal: Journal,
    semaphore: Semaphore,
    emitter: Emitter,
    /// The state being built: every journaled record is folded in, so it also
    /// answers references to resources finished earlier in this apply.
    /// Guarded by its own mutex; never held across an await.
    state: Mutex<State>,
}

impl Shared<'_> {
    fn journal_lazy(&self, record: Record) {
        self.journal.record(&record);
        fold(&mut self.state.lock().expect("state mutex"), [record]);
    }

    async fn journal_durable(&self, record: Record) -> crate::state::Result<()> {
        let durable = self.journal.record_durable(&record);
        fold(&mut self.state.lock().expect("state mutex"), [record]);
        durable.await
    }
}

/// Applies `plan`. The caller holds the stack's lock and passes the state it
/// loaded under that lock (`None` for a new stack).
///
/// # Errors
/// [`Error::Stale`] when `current` is not the state the plan was made against;
/// [`Error::State`] when the journal or the final snapshot cannot be written.
/// Per-resource failures are not errors: they are in [`Report::failed`].
#[expect(
    clippy::too_many_arguments,
    reason = "the low-level entry point; `Session::apply` is the ergonomic one"
)]
pub async fn apply(
    registry: &Registry,
    context: &Context,
    store: &dyn StateStore,
    current: Option<State>,
    plan: &Plan,
    options: &Options,
    events: Option<mpsc::UnboundedSender<Sequenced>>,
    cancel: CancellationToken,
) -> Result<Report> {
    let found = current.as_ref().map(State::meta);
    if found != plan.prior {
        return Err(Error::Stale {
            planned: plan.prior,
            found,
        });
    }
    let base = current.unwrap_or_else(|| State {
        lineage: plan.lineage,
        serial: 0,
        stack: plan.stack.clone(),
        resources: BTreeMap::new(),
        pending: Vec::new(),
        lease_generation: None,
        deposed: Vec::new(),
    });
    let sink = store.open_journal(base.meta(), &base.stack).await?;
    let base_serial = base.serial;
    // Refreshed or adopted resources that need no cloud call still update state.
    let mut refreshed = Vec::new();
    for change in plan.changes.iter().filter(|c| c.action == Action::NoOp) {
        let (Some(id), Some(before)) = (&change.id, &change.before) else {
            continue;
        };
        let unchanged = base.resources.get(&change.addr).is_some_and(|recorded| {
            recorded.id == *id
                && recorded.attributes == *before
                && recorded.dependencies == change.dependencies
        });
        if !unchanged {
            let resource = ResourceState {
                kind: change.kind.clone(),
                id: id.clone(),
                attributes: before.clone(),
                dependencies: change.dependencies.clone(),
            };
            refreshed.push(Record::Outcome {
                intent: Uuid::new_v4(),
                addr: change.addr.clone(),
                result: Outcome::Written { resource },
            });
        }
    }
    let shared = Shared {
        salt: base.lineage.to_string(),
        registry,
        context,
        journal: Journal::start(sink),
        semaphore: Semaphore::new(options.parallelism.max(1)),
        emitter: Emitter {
            sender: events,
            seq: AtomicU64::new(0),
        },
        state: Mutex::new(base),
    };
    for record in refreshed {
        shared.journal_lazy(record);
    }

    let walk = walk(&shared, plan, cancel).await;
    let Shared {
        journal,
        state,
        emitter,
        ..
    } = shared;
    let journal_commits = journal.close().await?;
    let mut state = state.into_inner().expect("state mutex");
    state
        .pending
        .retain(|pending| !plan.resolved_intents.contains(&pending.intent));
    state.serial = base_serial + 1;
    store.persist(&state).await?;
    emitter.emit(|| Event::StateSaved {
        serial: state.serial,
    });
    Ok(Report {
        state,
        applied: walk.applied,
        failed: walk.failed,
        skipped: walk.skipped,
        not_started: walk.not_started,
        journal_commits: journal_commits + 1,
    })
}

/// Which part of a change a walk node performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The whole change (for a create-then-delete replacement: the create).
    Whole,
    /// The delete of the object a create-then-delete replacement replaced.
    Deposed,
}

#[derive(Default)]
struct Walk {
    applied: Vec<ResourceAddr>,
    failed: Vec<ResourceError>,
    skipped: Vec<(ResourceAddr, ResourceAddr)>,
    not_started: Vec<ResourceAddr>,
}

async fn walk(shared: &Shared<'_>, plan: &Plan, cancel: CancellationToken) -> Walk {
    // Nodes by index; edges as index lists (the walk is hot for large plans).
    // A create-then-delete replacement is two nodes: the create, and the delete of
    // the replaced ("deposed") object, which waits until every dependent has
    // switched to the new one (a record follows the new instance before the old
    // instance goes).
    let mut nodes: Vec<(&ResourceChange, Phase)> = plan
        .changes
        .iter()
        .filter(|c| c.action.is_change())
        .map(|c| (c, Phase::Whole))
        .collect();
    let index: HashMap<&ResourceAddr, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (c, _))| (&c.addr, i))
        .collect();
    let wholes = nodes.len();
    for node in 0..wholes {
        if matches!(
            nodes[node].0.action,
            Action::Replace {
                order: ReplaceOrder::CreateThenDelete,
                ..
            }
        ) {
            nodes.push((nodes[node].0, Phase::Deposed));
        }
    }
    // Objects deposed by an earlier apply: deleted now, with nothing to wait for.
    let leftovers = nodes.len();
    nodes.extend(plan.deposed.iter().map(|change| (change, Phase::Deposed)));
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut remaining: Vec<usize> = vec![0; nodes.len()];
    let mut edge = |before: usize, after: usize, dependents: &mut Vec<Vec<usize>>| {
        dependents[before].push(after);
        remaining[after] += 1;
    };
    for node in 0..wholes {
        let change = nodes[node].0;
        for dependency in &change.dependencies {
            let Some(&target) = index.get(dependency) else {
                continue;
            };
            if change.action == Action::Delete {
                // Reverse edge: a dependency is removed after its dependent.
                if matches!(
                    nodes[target].0.action,
                    Action::Delete | Action::Replace { .. }
                ) {
                    edge(node, target, &mut dependents);
                }
            } else if nodes[target].0.action != Action::Delete {
                edge(target, node, &mut dependents);
            }
        }
    }
    for deposed in wholes..leftovers {
        let whole = index[&nodes[deposed].0.addr];
        let switching: Vec<usize> = dependents[whole].clone();
        edge(whole, deposed, &mut dependents);
        for dependent in switching {
            edge(dependent, deposed, &mut dependents);
        }
    }
    let mut ready: VecDeque<usize> = (0..nodes.len()).filter(|&n| remaining[n] == 0).collect();
    let mut settled = vec![false; nodes.len()];
    let mut running = FuturesUnordered::new();
    let mut report = Walk::default();

    loop {
        while !cancel.is_cancelled()
            && let Some(node) = ready.pop_front()
        {
            let (change, phase) = nodes[node];
            let cancel = &cancel;
            running.push(async move { (node, run_node(shared, change, phase, cancel).await) });
        }
        let Some((node, result)) = running.next().await else {
            break;
        };
        let (change, phase) = nodes[node];
        let addr = &change.addr;
        match result {
            // Cancelled while waiting for a permit: reported as not started below.
            Ok(false) => {}
            Ok(true) => {
                settled[node] = true;
                if phase == Phase::Whole {
                    report.applied.push(addr.clone());
                }
                for &dependent in &dependents[node] {
                    remaining[dependent] -= 1;
                    if remaining[dependent] == 0 && !settled[dependent] {
                        ready.push_back(dependent);
                    }
                }
            }
            Err(error) => {
                settled[node] = true;
                shared.emitter.emit(|| Event::Failed {
                    addr: addr.clone(),
                    message: error_chain(&error),
                });
                report.failed.push(error);
                // Skip everything downstream of the failure.
                let mut pending: Vec<usize> = dependents[node].clone();
                while let Some(next) = pending.pop() {
                    if !settled[next] {
                        settled[next] = true;
                        pending.extend(&dependents[next]);
                        // A replaced object that is not deleted stays as it is,
                        // serving; it is not a resource of its own to report.
                        let (skipped, phase) = nodes[next];
                        if phase == Phase::Deposed {
                            continue;
                        }
                        shared.emitter.emit(|| Event::Skipped {
                            addr: skipped.addr.clone(),
                            because: addr.clone(),
                        });
                        report.skipped.push((skipped.addr.clone(), addr.clone()));
                    }
                }
            }
        }
    }
    for (node, (change, phase)) in nodes.iter().enumerate() {
        if !settled[node] && *phase == Phase::Whole {
            shared.emitter.emit(|| Event::NotStarted {
                addr: change.addr.clone(),
            });
            report.not_started.push(change.addr.clone());
        }
    }
    report
}

/// The error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Resolves unknowns in `after` against what exists now and keeps only arguments.
fn resolve(
    shared: &Shared<'_>,
    change: &ResourceChange,
    schema: &Schema,
) -> std::result::Result<Attrs, ResourceError> {
    let after = change.after.as_ref();
    let has_unknown = after.is_some_and(|after| after.values().any(Value::has_unknown_template));
    let state;
    let lookup_state = if has_unknown {
        state = Some(shared.state.lock().expect("state mutex"));
        state.as_deref()
    } else {
        None
    };
    let lookup = |addr: &ResourceAddr, attribute: &str| {
        let resource = lookup_state?.resources.get(addr)?;
        Some(
            resource
                .attributes
                .get(attribute)
                .cloned()
                .unwrap_or(Value::Null),
        )
    };
    let env = |name: &str| std::env::var(name).ok();
    let mut out = Attrs::new();
    for attribute in schema.arguments() {
        let value = after
            .and_then(|after| after.get(attribute.name))
            .cloned()
            .unwrap_or(Value::Null);
        let value = if has_unknown {
            resolve_value(value, &lookup, &env)
        } else {
            value
        };
        if let Some(template) = find_unknown(&value) {
            return Err(ResourceError::Unresolved {
                addr: change.addr.clone(),
                template,
            });
        }
        out.insert(attribute.name.to_owned(), value);
    }
    Ok(out)
}

fn resolve_value(
    value: Value,
    lookup: &dyn Fn(&ResourceAddr, &str) -> Option<Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Value {
    match value {
        Value::Unknown(source) => match Template::parse(&source) {
            Ok(template) => template.evaluate(lookup, env),
            Err(_) => Value::Unknown(source),
        },
        Value::List(items) => Value::List(
            items
                .into_iter()
                .map(|v| resolve_value(v, lookup, env))
                .collect(),
        ),
        Value::Map(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| (k, resolve_value(v, lookup, env)))
                .collect(),
        ),
        other => other,
    }
}

fn find_unknown(value: &Value) -> Option<String> {
    match value {
        Value::Unknown(source) => Some(source.clone()),
        Value::List(items) => items.iter().find_map(find_unknown),
        Value::Map(map) => map.values().find_map(find_unknown),
        _ => None,
    }
}

/// Runs one node; `Ok(false)` when the apply was cancelled before its cloud call.
async fn run_node(
    shared: &Shared<'_>,
    change: &ResourceChange,
    phase: Phase,
    cancel: &CancellationToken,
) -> std::result::Result<bool, ResourceError> {
    let addr = &change.addr;
    let provider = Arc::clone(
        shared
            .registry
            .provider(addr.kind())
            .expect("planned kinds are registered"),
    );
    let schema = provider.schema();
    let started = Instant::now();
    if phase == Phase::Deposed {
        return delete_deposed(shared, provider.as_ref(), change, cancel).await;
    }
    let action = action_name(&change.action);
    let journal_error = |source: crate::state::Error| ResourceError::Journal {
        addr: addr.clone(),
        source: Box::new(source),
    };
    let provider_error = |operation, source| ResourceError::Provider {
        addr: addr.clone(),
        operation,
        source,
    };
    let attributes = if change.action == Action::Delete {
        Attrs::new()
    } else {
        resolve(shared, change, schema)?
    };

    let Some(permit) = begin(shared, addr, action, cancel).await else {
        return Ok(false);
    };
    let mut finals: Vec<Record> = Vec::new();
    let mut outcome_id: Option<String> = None;

    let result: std::result::Result<(), ResourceError> = async {
        match &change.action {
            Action::NoOp => Ok(()),
            Action::Update { changed } => {
                let intent = Uuid::new_v4();
                shared.journal_lazy(Record::Intent(PendingIntent {
                    intent,
                    addr: addr.clone(),
                    operation: Operation::Update,
                    attributes: Attrs::new(),
                }));
                let id = change.id.clone().unwrap_or_default();
                let prior = change.before.clone().unwrap_or_default();
                let owner = Owner {
                    stack: shared.context.stack.clone(),
                    addr: addr.to_string(),
                    intent: None,
                };
                match provider
                    .update(shared.context, &owner, &id, &prior, &attributes, changed)
                    .await
                {
                    Ok(observed) => {
                        outcome_id = Some(observed.id.clone());
                        finals.push(written(
                            shared,
                            schema,
                            intent,
                            change,
                            observed.id,
                            observed.attributes,
                        ));
                        Ok(())
                    }
                    Err(mut source) => {
                        // Partly done (a deploy whose previews failed):
                        // record what now is, and fail.
                        finals.push(match source.partial.take() {
                            Some(partial) => written(
                                shared,
                                schema,
                                intent,
                                change,
                                partial.id,
                                partial.attributes,
                            ),
                            None => failed(intent, addr, &source),
                        });
                        Err(provider_error("update", source))
                    }
                }
            }
            Action::Delete => {
                let (intent, result) = delete_old(shared, provider.as_ref(), change).await;
                match result {
                    Ok(()) => {
                        finals.push(Record::Outcome {
                            intent,
                            addr: addr.clone(),
                            result: Outcome::Removed,
                        });
                        Ok(())
                    }
                    Err(source) => {
                        finals.push(failed(intent, addr, &source));
                        Err(provider_error("delete", source))
                    }
                }
            }
            Action::Create | Action::Replace { .. } => {
                let order = match &change.action {
                    Action::Replace { order, .. } => Some(*order),
                    _ => None,
                };
                if order == Some(ReplaceOrder::DeleteThenCreate) {
                    let (intent, result) = delete_old(shared, provider.as_ref(), change).await;
                    match result {
                        Ok(()) => shared
                            .journal_durable(Record::Outcome {
                                intent,
                                addr: addr.clone(),
                                result: Outcome::Removed,
                            })
                            .await
                            .map_err(journal_error)?,
                        Err(source) => {
                            finals.push(failed(intent, addr, &source));
                            return Err(provider_error("delete", source));
                        }
                    }
                }
                let intent = Uuid::new_v4();
                let record = Record::Intent(PendingIntent {
                    intent,
                    addr: addr.clone(),
                    operation: Operation::Create,
                    attributes: {
                        let mut sealed = attributes.clone();
                        schema.seal(&shared.salt, &mut sealed);
                        sealed
                    },
                });
                if schema.adoptable && schema.in_flight_grace.is_zero() {
                    shared.journal_lazy(record);
                } else {
                    shared
                        .journal_durable(record)
                        .await
                        .map_err(journal_error)?;
                }
                let owner = Owner {
                    stack: shared.context.stack.clone(),
                    addr: addr.to_string(),
                    intent: Some(intent.to_string()),
                };
                let observed = match provider.create(shared.context, &owner, &attributes).await {
                    Ok(observed) => observed,
                    Err(mut source) => {
                        // Made but not finished: record what exists, and fail.
                        let record = match source.partial.take() {
                            Some(partial) => Record::Outcome {
                                intent,
                                addr: addr.clone(),
                                result: Outcome::Written {
                                    resource: sealed(
                                        shared,
                                        schema,
                                        change,
                                        partial.id,
                                        partial.attributes,
                                    ),
                                },
                            },
                            None => failed(intent, addr, &source),
                        };
                        finals.push(record);
                        return Err(provider_error("create", source));
                    }
                };
                outcome_id = Some(observed.id.clone());
                let resource = sealed(shared, schema, change, observed.id, observed.attributes);
                // A create-then-delete replacement deletes the old object in its own
                // `Phase::Deposed` node, once dependents have switched; until then
                // state keeps it as deposed.
                let result = match (order, &change.id) {
                    (Some(ReplaceOrder::CreateThenDelete), Some(old_id)) => Outcome::Replaced {
                        resource,
                        deposed: ResourceState {
                            kind: change.kind.clone(),
                            id: old_id.clone(),
                            attributes: change.before.clone().unwrap_or_default(),
                            dependencies: change.dependencies.clone(),
                        },
                    },
                    _ => Outcome::Written { resource },
                };
                finals.push(Record::Outcome {
                    intent,
                    addr: addr.clone(),
                    result,
                });
                Ok(())
            }
        }
    }
    .await;
    drop(permit);

    // Durability, then "done".
    let last = finals.pop();
    for record in finals {
        shared.journal_lazy(record);
    }
    if let Some(record) = last {
        shared
            .journal_durable(record)
            .await
            .map_err(journal_error)?;
    }
    if result.is_ok() {
        shared.emitter.emit(|| Event::Finished {
            addr: addr.clone(),
            action: action.to_owned(),
            id: outcome_id,
            elapsed: started.elapsed(),
        });
    }
    result.map(|()| true)
}

/// A resource's record as it exists now, with its secrets sealed.
fn sealed(
    shared: &Shared<'_>,
    schema: &Schema,
    change: &ResourceChange,
    id: String,
    mut attributes: Attrs,
) -> ResourceState {
    schema.seal(&shared.salt, &mut attributes);
    ResourceState {
        kind: change.kind.clone(),
        id,
        attributes,
        dependencies: change.dependencies.clone(),
    }
}

/// The outcome record of a resource that exists.
fn written(
    shared: &Shared<'_>,
    schema: &Schema,
    intent: Uuid,
    change: &ResourceChange,
    id: String,
    attributes: Attrs,
) -> Record {
    let resource = sealed(shared, schema, change, id, attributes);
    Record::Outcome {
        intent,
        addr: change.addr.clone(),
        result: Outcome::Written { resource },
    }
}

fn failed(intent: Uuid, addr: &ResourceAddr, error: &ProviderError) -> Record {
    Record::Outcome {
        intent,
        addr: addr.clone(),
        result: Outcome::Failed {
            message: error_chain(error),
        },
    }
}

/// Waits for a cloud-call permit, then — unless the apply was cancelled meanwhile
/// (every node is queued at once, so cancellation is honoured here) — reports the
/// operation started.
async fn begin<'a>(
    shared: &'a Shared<'_>,
    addr: &ResourceAddr,
    action: &str,
    cancel: &CancellationToken,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    let permit = shared
        .semaphore
        .acquire()
        .await
        .expect("semaphore never closed");
    if cancel.is_cancelled() {
        return None;
    }
    shared.emitter.emit(|| Event::Started {
        addr: addr.clone(),
        action: action.to_owned(),
    });
    Some(permit)
}

/// Deletes the object a create-then-delete replacement replaced; state keeps the new one.
async fn delete_deposed(
    shared: &Shared<'_>,
    provider: &dyn crate::provider::Provider,
    change: &ResourceChange,
    cancel: &CancellationToken,
) -> std::result::Result<bool, ResourceError> {
    let addr = &change.addr;
    let Some(_permit) = begin(shared, addr, "delete", cancel).await else {
        return Ok(false);
    };
    let started = Instant::now();
    let (intent, result) = delete_old(shared, provider, change).await;
    let record = match &result {
        Ok(()) => Record::Outcome {
            intent,
            addr: addr.clone(),
            result: Outcome::DeposedRemoved {
                id: change.id.clone().unwrap_or_default(),
            },
        },
        Err(source) => failed(intent, addr, source),
    };
    shared
        .journal_durable(record)
        .await
        .map_err(|source| ResourceError::Journal {
            addr: addr.clone(),
            source: Box::new(source),
        })?;
    match result {
        Ok(()) => {
            shared.emitter.emit(|| Event::Finished {
                addr: addr.clone(),
                action: "delete".to_owned(),
                id: None,
                elapsed: started.elapsed(),
            });
            Ok(true)
        }
        Err(source) => Err(ResourceError::Provider {
            addr: addr.clone(),
            operation: "delete of the replaced object",
            source,
        }),
    }
}

/// Journals a delete intent and deletes the resource's current cloud object.
async fn delete_old(
    shared: &Shared<'_>,
    provider: &dyn crate::provider::Provider,
    change: &ResourceChange,
) -> (Uuid, std::result::Result<(), ProviderError>) {
    let intent = Uuid::new_v4();
    shared.journal_lazy(Record::Intent(PendingIntent {
        intent,
        addr: change.addr.clone(),
        operation: Operation::Delete,
        attributes: Attrs::new(),
    }));
    let id = change.id.clone().unwrap_or_default();
    let prior = change.before.clone().unwrap_or_default();
    (intent, provider.delete(shared.context, &id, &prior).await)
}
