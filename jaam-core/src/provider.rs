//! The `Provider` trait every resource kind implements, and the registry of kinds.
//!
//! A provider speaks to one cloud API for one kind. It never sees the graph or the
//! state file: the engine hands it resolved arguments and takes back what the cloud
//! reports. Its errors carry no address; the engine wraps them once with the
//! address they concern.
//!
//! # Guarantees a provider gives
//! - `refresh` answers for many resources in batched calls (one paginated list per
//!   kind, per zone or per repository), never one call per resource.
//! - `create` writes the ownership tags in the same call that creates the resource
//!   where the API allows it, so a resource created by an interrupted apply can be
//!   found again ([`Observed::owner`]).
//! - `delete` of a resource that is already gone succeeds.
//! - Waits for the cloud poll with [`crate::backoff`], never a fixed sleep.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::addr::ResourceAddr;
use crate::schema::Schema;
use crate::value::Attrs;

/// What a provider reports about one resource in the cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The cloud's id (a log group's name, an instance id, …).
    pub id: String,
    /// Arguments and computed attributes as the cloud has them. Ownership tags are
    /// not part of `tags`; they are reported in `owner`.
    pub attributes: Attrs,
    /// The ownership tags, when the resource carries them.
    pub owner: Option<Owner>,
    /// Why the resource needs an in-place update although its arguments match
    /// (a certificate inside its renewal window: "expires in 12 days"). The plan
    /// shows an update with this reason and the provider's `update` is called
    /// with no changed arguments.
    pub due: Option<String>,
}

/// The ownership tags jaam writes on every taggable resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `jaam:stack`.
    pub stack: String,
    /// `jaam:address`.
    pub addr: String,
    /// `jaam:intent`: the journal intent that created it.
    pub intent: Option<String>,
}

impl Owner {
    /// The tag keys.
    pub const STACK_TAG: &'static str = "jaam:stack";
    /// The address tag key.
    pub const ADDRESS_TAG: &'static str = "jaam:address";
    /// The intent tag key.
    pub const INTENT_TAG: &'static str = "jaam:intent";

    /// Reads ownership from a tag map, when the stack and address tags are present.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            stack: tags.get(Self::STACK_TAG)?.clone(),
            addr: tags.get(Self::ADDRESS_TAG)?.clone(),
            intent: tags.get(Self::INTENT_TAG).cloned(),
        })
    }

    /// The ownership tags as key/value pairs.
    pub fn tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![
            (Self::STACK_TAG.to_owned(), self.stack.clone()),
            (Self::ADDRESS_TAG.to_owned(), self.addr.clone()),
        ];
        if let Some(intent) = &self.intent {
            tags.push((Self::INTENT_TAG.to_owned(), intent.clone()));
        }
        tags
    }
}

/// One resource to look up in a refresh.
#[derive(Clone, Copy, Debug)]
pub struct RefreshTarget<'a> {
    /// The resource.
    pub addr: &'a ResourceAddr,
    /// The recorded id, or `None` to look it up by natural key (adoption after a
    /// crash, or a create whose outcome never reached the journal).
    pub id: Option<&'a str>,
    /// The recorded or desired attributes (for natural keys such as a log group name).
    pub attributes: &'a Attrs,
}

/// What the engine passes to every provider call.
#[derive(Clone, Debug)]
pub struct Context {
    /// The stack name, written into `jaam:stack`.
    pub stack: String,
}

/// What went wrong in a provider call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The resource does not exist.
    NotFound,
    /// A resource with that natural key exists already.
    AlreadyExists,
    /// The cloud rejected the arguments.
    Invalid,
    /// Throttled or a 5xx after the SDK's own retries: worth another try later.
    Transient,
    /// Credentials or permissions.
    Denied,
    /// Anything else.
    Other,
}

/// An error from a provider. It carries no address: the engine adds it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// What failed, lowercase.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// A create that made the resource but failed a later step (an instance
    /// running whose first deploy failed): what exists, so state records it
    /// instead of losing it. The apply still fails.
    pub partial: Option<Box<Observed>>,
    /// When the service asked not to be tried again before (an ACME
    /// `rateLimited` problem's `Retry-After`): the daemon waits until then.
    pub retry_after: Option<chrono::DateTime<chrono::Utc>>,
}

impl ProviderError {
    /// A new error without a source.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
            partial: None,
            retry_after: None,
        }
    }

    /// Records what a failed create did make (see [`ProviderError::partial`]).
    #[must_use]
    pub fn with_partial(mut self, observed: Observed) -> Self {
        self.partial = Some(Box::new(observed));
        self
    }

    /// Records when the service said to try again (see
    /// [`ProviderError::retry_after`]).
    #[must_use]
    pub fn with_retry_after(mut self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.retry_after = Some(at);
        self
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether another try later may succeed (the daemon retries these).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// Provider result type.
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// A resource kind's link to its cloud API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The kind's schema.
    fn schema(&self) -> &Schema;

    /// Looks up many resources in batched calls. The answer has one entry per
    /// target, in order: `None` when the resource does not exist.
    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>>;

    /// Creates a resource with `attributes` (resolved arguments), tagging it with `owner`.
    async fn create(
        &self,
        context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed>;

    /// Updates `id` in place from `prior` to `attributes`; `changed` names the
    /// arguments that differ. `owner` carries the ownership tags to (re)write.
    async fn update(
        &self,
        context: &Context,
        owner: &Owner,
        id: &str,
        prior: &Attrs,
        attributes: &Attrs,
        changed: &[String],
    ) -> Result<Observed>;

    /// Deletes `id`. Deleting a resource that is already gone succeeds.
    async fn delete(&self, context: &Context, id: &str, prior: &Attrs) -> Result<()>;

    /// Reads one existing resource by its cloud id, for `jaam import`.
    async fn import(&self, context: &Context, id: &str) -> Result<Observed>;

    /// Every resource of this kind that carries `stack`'s ownership tags, for `jaam gc`.
    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>>;

    /// Resolves indirections in desired arguments at plan time, in one batch for
    /// every desired resource of the kind (an AMI given as an SSM parameter path
    /// becomes an image id). Returns rewrite rules: in argument `.0`, the value
    /// `.1` becomes `.2`. The default resolves nothing.
    async fn prepare(&self, _context: &Context, _desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        Ok(Vec::new())
    }

    /// Whether [`Provider::prepare`] does anything; when false the planner skips
    /// evaluating every desired resource for it.
    fn prepares(&self) -> bool {
        false
    }
}

/// A plan-time rewrite of one argument value (see [`Provider::prepare`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    /// The argument.
    pub attribute: String,
    /// The value as written.
    pub from: crate::value::Value,
    /// The value to plan with.
    pub to: crate::value::Value,
    /// An existing resource keeps the value it has (a moving target such as
    /// the latest AMI must not replace what runs); the plan notes the newer
    /// value, and `--replace ADDR` takes it.
    pub keep: bool,
    /// Why the value could not be resolved (a branch head GitHub would not
    /// give): an existing resource keeps its value, a new one plans with
    /// `to` (a branch head: the value as written, which fails its own apply
    /// only), and the plan says why either way.
    pub unresolved: Option<String>,
}

/// The kinds jaam knows, each with its provider.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<&'static str, Arc<dyn Provider>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `provider` for its schema's kind (replacing any earlier one).
    pub fn register(&mut self, provider: Arc<dyn Provider>) -> &mut Self {
        self.providers.insert(provider.schema().kind, provider);
        self
    }

    /// The provider of `kind`.
    pub fn provider(&self, kind: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(kind)
    }

    /// The schema of `kind`.
    pub fn schema(&self, kind: &str) -> Option<&Schema> {
        self.providers.get(kind).map(|provider| provider.schema())
    }

    /// Every registered kind, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.providers.keys().copied()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.providers.keys()).finish()
    }
}
