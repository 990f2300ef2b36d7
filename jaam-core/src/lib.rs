//! jaam-core: declarative infrastructure for deploying web apps from GitHub to AWS.
//!
//! The flow, as Terraform users know it:
//!
//! 1. **Desired**: [`spec::load`] reads YAML specs into a [`spec::Config`]: resources
//!    keyed by address (`log_group.build`), with references between them.
//! 2. **Graph**: references and `depends_on` become a [`graph::Graph`]; its
//!    topological order is the order of creation.
//! 3. **Plan**: [`plan::compute`] refreshes what exists through each kind's
//!    [`provider::Provider`] (one batched call per kind), reports drift, and diffs
//!    desired against observed into a [`plan::Plan`] — plain data that renders as
//!    text or JSON and can be saved and applied later.
//! 4. **Apply**: [`apply::apply`] walks the plan's graph with bounded parallelism,
//!    journaling every operation, and emits sequenced [`apply::Event`]s.
//! 5. **State**: a [`state::StateStore`] keeps one JSON document per stack, with
//!    atomic snapshots, a crash-safe journal and a lock.
//!
//! [`Engine`] ties these together; everything the `jaam` CLI does goes through it.
//! This crate never prints: it returns values and emits `tracing` events.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use jaam_core::{Engine, state::LocalStore};
//!
//! let registry = jaam_core::providers::default_registry().await;
//! let engine = Engine::new(registry, LocalStore::new("jaam.state.json"), "demo");
//! let config = engine.load_specs("specs".as_ref())?;
//! let mut session = engine.lock("embed").await?;
//! let plan = session.plan(&config, &Default::default()).await?;
//! println!("{}", jaam_core::plan::render::text(&plan, Default::default()));
//! let report = session.apply(&plan, &Default::default(), None, Default::default()).await?;
//! assert!(report.succeeded());
//! session.release().await?;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod addr;
pub mod apply;
pub mod backoff;
pub mod files;
pub mod graph;
pub mod history;
pub mod plan;
pub mod provider;
pub mod providers;
pub mod schema;
pub mod spec;
pub mod state;
pub mod testing;
pub mod value;

#[cfg(test)]
mod engine_tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use addr::ResourceAddr;
pub use plan::Plan;
pub use provider::{Context, Registry};
pub use value::{Secret, Value};

use state::{LockGuard, LockInfo, ResourceState, State, StateStore};

/// Errors of the [`Engine`] facade: each module's error, plus the address where one applies.
///
/// Retryable: [`Error::State`] with a held lock, and provider errors that say so.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The specs are invalid.
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// Applying failed before or after the walk.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] state::Error),
    /// A provider call outside apply (import, gc) failed.
    #[error("`{addr}`: {operation} failed")]
    Provider {
        /// The resource.
        addr: ResourceAddr,
        /// What was attempted.
        operation: &'static str,
        /// The provider's error.
        #[source]
        source: provider::ProviderError,
    },
    /// Listing a kind's resources (for `jaam gc`) failed.
    #[error("failed to list `{kind}` resources")]
    List {
        /// The kind.
        kind: String,
        /// The provider's error.
        #[source]
        source: provider::ProviderError,
    },
    /// The address's kind has no provider.
    #[error("unknown resource kind `{kind}`")]
    UnknownKind {
        /// The kind.
        kind: String,
    },
    /// `import` into an address that state already manages.
    #[error("`{addr}` is already managed (id `{id}`)")]
    AlreadyManaged {
        /// The resource.
        addr: ResourceAddr,
        /// Its recorded id.
        id: String,
    },
}

/// Engine result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The facade: specs, plans, applies and state for one stack.
#[derive(Clone)]
pub struct Engine {
    registry: Registry,
    store: Arc<dyn StateStore>,
    context: Context,
    lock_timeout: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stack", &self.context.stack)
            .field("store", &self.store.describe())
            .finish()
    }
}

impl Engine {
    /// An engine for `stack` with these providers and this state store.
    pub fn new(
        registry: Registry,
        store: impl StateStore + 'static,
        stack: impl Into<String>,
    ) -> Self {
        Self {
            registry,
            store: Arc::new(store),
            context: Context {
                stack: stack.into(),
            },
            lock_timeout: Duration::ZERO,
        }
    }

    /// An engine over a shared store (`Arc<dyn StateStore>`), for callers that pick
    /// the backend at run time.
    pub fn from_store(
        registry: Registry,
        store: Arc<dyn StateStore>,
        stack: impl Into<String>,
    ) -> Self {
        Self {
            registry,
            store,
            context: Context {
                stack: stack.into(),
            },
            lock_timeout: Duration::ZERO,
        }
    }

    /// How long to wait for another holder's lock (default: fail at once).
    #[must_use]
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The providers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The state store.
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    /// The stack name.
    pub fn stack(&self) -> &str {
        &self.context.stack
    }

    /// Loads specs from `path`, reading `${env.…}` from the process environment.
    ///
    /// # Errors
    /// [`Error::Spec`] with every mistake found.
    pub fn load_specs(&self, path: &Path) -> Result<spec::Config> {
        Ok(spec::load(path, &self.registry, &|name| {
            std::env::var(name).ok()
        })?)
    }

    /// The current state, without locking.
    ///
    /// # Errors
    /// [`Error::State`] when it cannot be read.
    pub async fn state(&self) -> Result<Option<State>> {
        Ok(self.store.load().await?)
    }

    /// The deploy history (oldest first; see [`history`]).
    ///
    /// # Errors
    /// [`Error::State`] when it cannot be read.
    pub async fn deployments(&self) -> Result<Vec<history::Deployment>> {
        Ok(self.store.deployments().await?)
    }

    /// Plans without taking the lock (a plan writes nothing).
    ///
    /// # Errors
    /// [`Error::State`] or [`Error::Plan`].
    pub async fn plan(&self, config: &spec::Config, options: &plan::Options) -> Result<Plan> {
        let state = self.store.load().await?;
        Ok(plan::compute(
            &self.registry,
            &self.context,
            config,
            state.as_ref(),
            options,
            &env,
        )
        .await?)
    }

    /// Resources that carry this stack's ownership tags but that state does not
    /// know: left behind by a crash, a failed replacement, or a lost state file.
    /// One `list_owned` call per kind (kinds without tags, like records, report none).
    ///
    /// # Errors
    /// [`Error::State`], or [`Error::List`] naming the kind.
    pub async fn orphans(&self) -> Result<Vec<(&'static str, provider::Observed)>> {
        let state = self.store.load().await?;
        let mut out = Vec::new();
        for kind in self.registry.kinds() {
            let provider = self
                .registry
                .provider(kind)
                .expect("listed kinds are registered");
            let owned =
                provider
                    .list_owned(&self.context)
                    .await
                    .map_err(|source| Error::Provider {
                        addr: ResourceAddr::new(kind, "*")
                            .unwrap_or_else(|_| "gc.gc".parse().expect("valid address")),
                        operation: "listing owned resources",
                        source,
                    })?;
            for observed in owned {
                let known = state.as_ref().is_some_and(|state| {
                    state
                        .resources
                        .iter()
                        .any(|(addr, resource)| addr.kind() == kind && resource.id == observed.id)
                });
                if !known {
                    out.push((kind, observed));
                }
            }
        }
        Ok(out)
    }

    /// Deletes one orphan found by [`Engine::orphans`].
    ///
    /// # Errors
    /// [`Error::Provider`].
    pub async fn delete_orphan(&self, kind: &str, orphan: &provider::Observed) -> Result<()> {
        let provider = self
            .registry
            .provider(kind)
            .ok_or_else(|| Error::UnknownKind {
                kind: kind.to_owned(),
            })?;
        let addr = orphan
            .owner
            .as_ref()
            .and_then(|owner| owner.addr.parse().ok())
            .unwrap_or_else(|| ResourceAddr::new(kind, "orphan").expect("valid address"));
        provider
            .delete(&self.context, &orphan.id, &orphan.attributes)
            .await
            .map_err(|source| Error::Provider {
                addr,
                operation: "delete",
                source,
            })
    }

    /// Takes the stack's lock for `command` and loads the state under it.
    ///
    /// # Errors
    /// [`Error::State`] ([`state::Error::Locked`] names the holder).
    pub async fn lock(&self, command: &str) -> Result<Session<'_>> {
        let guard = self
            .store
            .lock(LockInfo::current(command), self.lock_timeout)
            .await?;
        match self.store.load().await {
            Ok(state) => Ok(Session {
                engine: self,
                guard: Some(guard),
                state,
            }),
            Err(error) => {
                let _ = guard.release().await;
                Err(error.into())
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A locked stack: plan, apply and state edits happen under one lock.
pub struct Session<'a> {
    engine: &'a Engine,
    guard: Option<Box<dyn LockGuard>>,
    state: Option<State>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("engine", self.engine)
            .finish()
    }
}

impl Session<'_> {
    /// The state loaded under the lock.
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// Plans against the locked state.
    ///
    /// # Errors
    /// [`Error::Plan`].
    pub async fn plan(&self, config: &spec::Config, options: &plan::Options) -> Result<Plan> {
        let engine = self.engine;
        Ok(plan::compute(
            &engine.registry,
            &engine.context,
            config,
            self.state.as_ref(),
            options,
            &env,
        )
        .await?)
    }

    /// Applies `plan`, sending progress to `events`; cancel with `cancel`.
    ///
    /// # Errors
    /// [`Error::Apply`] when the plan is stale or state cannot be written.
    pub async fn apply(
        &mut self,
        plan: &Plan,
        options: &apply::Options,
        events: Option<mpsc::UnboundedSender<apply::Sequenced>>,
        cancel: CancellationToken,
    ) -> Result<apply::Report> {
        let engine = self.engine;
        let report = apply::apply(
            &engine.registry,
            &engine.context,
            engine.store.as_ref(),
            self.state.clone(),
            plan,
            options,
            events,
            cancel,
        )
        .await?;
        self.state = Some(report.state.clone());
        Ok(report)
    }

    /// Adds deploys and rollbacks to the stack's deploy history.
    ///
    /// # Errors
    /// [`Error::State`] when the history cannot be written.
    pub async fn record_deployments(&self, deployments: &[history::Deployment]) -> Result<()> {
        Ok(self.engine.store.record_deployments(deployments).await?)
    }

    /// Reads `id` through `addr`'s provider and records it in state as `addr`.
    ///
    /// # Errors
    /// [`Error::UnknownKind`], [`Error::AlreadyManaged`], [`Error::Provider`] or [`Error::State`].
    pub async fn import(&mut self, addr: &ResourceAddr, id: &str) -> Result<ResourceState> {
        let engine = self.engine;
        let provider = engine
            .registry
            .provider(addr.kind())
            .ok_or_else(|| Error::UnknownKind {
                kind: addr.kind().to_owned(),
            })?;
        if let Some(existing) = self
            .state
            .as_ref()
            .and_then(|state| state.resources.get(addr))
        {
            return Err(Error::AlreadyManaged {
                addr: addr.clone(),
                id: existing.id.clone(),
            });
        }
        let observed = provider
            .import(&engine.context, id)
            .await
            .map_err(|source| Error::Provider {
                addr: addr.clone(),
                operation: "import",
                source,
            })?;
        let mut state = self
            .state
            .clone()
            .unwrap_or_else(|| State::new(engine.context.stack.clone()));
        let resource = ResourceState {
            kind: addr.kind().to_owned(),
            id: observed.id,
            attributes: observed.attributes,
            dependencies: Vec::new(),
        };
        state.resources.insert(addr.clone(), resource.clone());
        state.serial += 1;
        engine.store.persist(&state).await?;
        self.state = Some(state);
        Ok(resource)
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// [`Error::State`] when the release fails.
    pub async fn release(mut self) -> Result<()> {
        if let Some(guard) = self.guard.take() {
            guard.release().await?;
        }
        Ok(())
    }
}
