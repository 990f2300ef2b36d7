//! An in-process fake provider for engine tests and benchmarks.
//!
//! It keeps its "cloud" in memory, counts and records every call, can add
//! latency per operation, and takes closure hooks to inject failures. It is never
//! the only test of a real provider: those run against emulators.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result,
};
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// A call the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A batched refresh of this many targets.
    Refresh(usize),
    /// A create of this `name`.
    Create(String),
    /// An update of this id.
    Update(String),
    /// A delete of this id.
    Delete(String),
}

/// A hook deciding whether an operation on the resource named `name` fails.
pub type Hook = Box<dyn Fn(&str) -> Option<ProviderError> + Send + Sync>;

/// The fake provider. Its schema: `name` (required, forces replacement; the
/// natural key), `value` (string), `size` (integer), `tags` (map); computed `id`.
pub struct FakeProvider {
    schema: Schema,
    cloud: Mutex<BTreeMap<String, (Attrs, Owner)>>,
    calls: Mutex<Vec<Call>>,
    next_id: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    latency: Duration,
    record_calls: bool,
    due: Mutex<BTreeMap<String, String>>,
    /// Called before every create; a `Some` error fails it.
    pub on_create: Option<Hook>,
    /// Called before every update with the resource's name; a `Some` error fails it.
    pub on_update: Option<Hook>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("kind", &self.schema.kind)
            .finish()
    }
}

impl FakeProvider {
    /// A fake for `kind` with no latency.
    pub fn new(kind: &'static str) -> Self {
        Self {
            schema: Schema {
                kind,
                attributes: vec![
                    Attribute::required("name", Type::String).force_new(),
                    Attribute::optional("value", Type::String),
                    Attribute::optional("size", Type::Int),
                    Attribute::optional("secret", Type::String).sensitive(),
                    Attribute::optional("tags", Type::Map(Box::new(Type::String))),
                    Attribute::computed("id", Type::String),
                ],
                replace_order: ReplaceOrder::CreateThenDelete,
                adoptable: true,
                in_flight_grace: std::time::Duration::ZERO,
            },
            cloud: Mutex::default(),
            calls: Mutex::default(),
            next_id: AtomicU64::new(1),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            latency: Duration::ZERO,
            record_calls: true,
            on_create: None,
            on_update: None,
            due: Mutex::default(),
        }
    }

    /// A fake with another kind's schema (to load specs that use real kinds).
    pub fn with_schema(schema: Schema) -> Self {
        Self {
            schema,
            ..Self::new("fake")
        }
    }

    /// Adds `latency` to every create, update and delete.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Makes updates fail when `hook` says so.
    #[must_use]
    pub fn with_update_hook(mut self, hook: Hook) -> Self {
        self.on_update = Some(hook);
        self
    }

    /// Declares that creates may land late (see [`Schema::in_flight_grace`]).
    #[must_use]
    pub fn with_in_flight_grace(mut self, grace: Duration) -> Self {
        self.schema.in_flight_grace = grace;
        self
    }

    /// Stops recording calls (benchmarks with many resources).
    #[must_use]
    pub fn without_call_log(mut self) -> Self {
        self.record_calls = false;
        self
    }

    /// Makes creates fail when `hook` says so.
    #[must_use]
    pub fn with_create_hook(mut self, hook: Hook) -> Self {
        self.on_create = Some(hook);
        self
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls mutex").clone()
    }

    /// The resources in the fake cloud, by id.
    pub fn cloud(&self) -> BTreeMap<String, Attrs> {
        self.cloud
            .lock()
            .expect("cloud mutex")
            .iter()
            .map(|(id, (attrs, _))| (id.clone(), attrs.clone()))
            .collect()
    }

    /// Changes a resource behind jaam's back (drift).
    pub fn tamper(&self, id: &str, name: &str, value: Value) {
        if let Some((attrs, _)) = self.cloud.lock().expect("cloud mutex").get_mut(id) {
            attrs.insert(name.to_owned(), value);
        }
    }

    /// Makes refresh report `id` as due for an update (like a certificate
    /// inside its renewal window) until the next update of it.
    pub fn set_due(&self, id: &str, reason: &str) {
        self.due
            .lock()
            .expect("due mutex")
            .insert(id.to_owned(), reason.to_owned());
    }

    /// Deletes a resource behind jaam's back.
    pub fn remove(&self, id: &str) {
        self.cloud.lock().expect("cloud mutex").remove(id);
    }

    fn log(&self, call: Call) {
        if self.record_calls {
            self.calls.lock().expect("calls mutex").push(call);
        }
    }

    /// The most operations that were ever in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    async fn delay(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn observed(id: &str, attrs: &Attrs, owner: &Owner) -> Observed {
        Observed {
            id: id.to_owned(),
            attributes: attrs.clone(),
            owner: Some(owner.clone()),
            due: None,
        }
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    async fn refresh(
        &self,
        _context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        self.log(Call::Refresh(targets.len()));
        let cloud = self.cloud.lock().expect("cloud mutex");
        let due = self.due.lock().expect("due mutex");
        Ok(targets
            .iter()
            .map(|target| match target.id {
                Some(id) => cloud.get(id).map(|(attrs, owner)| Observed {
                    due: due.get(id).cloned(),
                    ..Self::observed(id, attrs, owner)
                }),
                None => {
                    let name = target.attributes.get("name");
                    cloud
                        .iter()
                        .find(|(_, (attrs, _))| attrs.get("name") == name)
                        .map(|(id, (attrs, owner))| Self::observed(id, attrs, owner))
                }
            })
            .collect())
    }

    async fn create(
        &self,
        _context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let name = attributes
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.record_calls {
            self.log(Call::Create(name.to_owned()));
        }
        self.delay().await;
        if let Some(error) = self.on_create.as_ref().and_then(|hook| hook(name)) {
            return Err(error);
        }
        let id = format!(
            "{}-{}",
            self.schema.kind,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut attrs = attributes.clone();
        attrs.insert("id".into(), Value::String(id.clone()));
        self.cloud
            .lock()
            .expect("cloud mutex")
            .insert(id.clone(), (attrs.clone(), owner.clone()));
        // The engine reads ownership from refresh, not from a create's answer.
        Ok(Observed {
            id,
            attributes: attrs,
            owner: None,
            due: None,
        })
    }

    async fn update(
        &self,
        _context: &Context,
        _owner: &Owner,
        id: &str,
        _prior: &Attrs,
        attributes: &Attrs,
        _changed: &[String],
    ) -> Result<Observed> {
        self.log(Call::Update(id.to_owned()));
        self.due.lock().expect("due mutex").remove(id);
        self.delay().await;
        let name = attributes
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(error) = self.on_update.as_ref().and_then(|hook| hook(name)) {
            return Err(error);
        }
        let mut cloud = self.cloud.lock().expect("cloud mutex");
        let (attrs, owner) = cloud.get_mut(id).ok_or_else(|| {
            ProviderError::new(ErrorKind::NotFound, format!("no resource `{id}`"))
        })?;
        let mut next = attributes.clone();
        next.insert("id".into(), Value::String(id.to_owned()));
        *attrs = next;
        Ok(Self::observed(id, attrs, owner))
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        self.log(Call::Delete(id.to_owned()));
        self.delay().await;
        self.cloud.lock().expect("cloud mutex").remove(id);
        Ok(())
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        let cloud = self.cloud.lock().expect("cloud mutex");
        let (attrs, owner) = cloud.get(id).ok_or_else(|| {
            ProviderError::new(ErrorKind::NotFound, format!("no resource `{id}`"))
        })?;
        Ok(Self::observed(id, attrs, owner))
    }

    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>> {
        let cloud = self.cloud.lock().expect("cloud mutex");
        Ok(cloud
            .iter()
            .filter(|(_, (_, owner))| owner.stack == context.stack)
            .map(|(id, (attrs, owner))| Self::observed(id, attrs, owner))
            .collect())
    }
}

/// A registry holding one fake provider per kind name.
pub fn registry(fakes: &[Arc<FakeProvider>]) -> crate::provider::Registry {
    let mut registry = crate::provider::Registry::new();
    for fake in fakes {
        registry.register(Arc::clone(fake) as Arc<dyn Provider>);
    }
    registry
}
