//! Computing a plan: refresh, drift, then a per-address diff in dependency order.
//!
//! # Phases, in order
//! 1. **Refresh**: one batched [`Provider::refresh`](crate::provider::Provider::refresh)
//!    per kind, all kinds concurrently. Targets are every recorded resource (by id),
//!    plus every desired-but-unrecorded resource and every interrupted create
//!    (by natural key): a resource that carries this stack's ownership tags for
//!    that address is *adopted* instead of created twice.
//! 2. **Drift**: recorded vs observed, before any desired value is looked at, so
//!    the user sees what changed outside jaam separately from what jaam will do.
//! 3. **Diff**: desired resources in topological order, so that a reference can
//!    read its dependency's planned value (known, or unknown until apply).
//! 4. **Deletes**: recorded resources no longer desired (all of them for destroy),
//!    and resources of the specs that an interrupted apply created but state
//!    never learned of (found in step 1 by ownership tags or natural key).
//! 5. **Targets**: with `--target`, only the targets and their dependencies stay.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::try_join_all;

use super::{Action, Error, FORMAT_VERSION, Plan, ResourceChange, Result};
use crate::addr::ResourceAddr;
use crate::provider::{Context, Observed, RefreshTarget, Registry, Rewrite};
use crate::schema::{Mode, Schema};
use crate::spec::{Config, evaluate_args};
use crate::state::{Operation, State};
use crate::value::{Attrs, Value};

/// Plan options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Refresh through the providers (`--refresh=false` trusts the state).
    pub refresh: bool,
    /// Limit the plan to these resources and their dependencies.
    pub targets: Vec<ResourceAddr>,
    /// Plan the destruction of everything recorded.
    pub destroy: bool,
    /// Replace these resources although nothing forces it (`--replace`,
    /// Terraform's `-replace`); they also take values others keep (a newer
    /// AMI).
    pub replace: Vec<ResourceAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            refresh: true,
            targets: Vec::new(),
            destroy: false,
            replace: Vec::new(),
        }
    }
}

/// What an address currently is: refreshed, or recorded without refresh.
#[derive(Clone, Copy)]
struct Current<'a> {
    id: &'a str,
    attributes: &'a Attrs,
}

/// Computes the plan for `config` against `state` (or a new stack when `None`).
///
/// # Errors
/// [`Error::Refresh`] when a provider's refresh fails; [`Error::UnknownKind`] when
/// state names a kind without provider; [`Error::UnknownTarget`] for a bad target.
pub async fn compute(
    registry: &Registry,
    context: &Context,
    config: &Config,
    state: Option<&State>,
    options: &Options,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Plan> {
    let empty = State::new(context.stack.clone());
    let recorded = state.unwrap_or(&empty);
    let desired: BTreeMap<&ResourceAddr, _> = if options.destroy {
        BTreeMap::new()
    } else {
        config.resources().iter().collect()
    };

    for target in options.targets.iter().chain(&options.replace) {
        if !config.resources().contains_key(target) && !recorded.resources.contains_key(target) {
            return Err(Error::UnknownTarget {
                addr: target.clone(),
            });
        }
    }
    for addr in recorded.resources.keys() {
        if registry.provider(addr.kind()).is_none() {
            return Err(Error::UnknownKind { addr: addr.clone() });
        }
    }

    // 1. Refresh.
    let mut lookups: BTreeMap<&ResourceAddr, Attrs> = BTreeMap::new();
    if options.refresh {
        for pending in recorded
            .pending
            .iter()
            .filter(|p| p.operation == Operation::Create)
        {
            if !recorded.resources.contains_key(&pending.addr) {
                lookups.insert(&pending.addr, pending.attributes.clone());
            }
        }
        // Declared but unrecorded resources are looked up by ownership tags
        // or natural key. For a destroy too: a create whose intent died with a
        // crash (intents of adoptable kinds are journaled lazily) is found and
        // deleted, so a destroy leaves nothing of the specs behind.
        for (addr, resource) in config.resources() {
            if !recorded.resources.contains_key(addr) && !lookups.contains_key(addr) {
                let schema = registry
                    .schema(addr.kind())
                    .expect("specs only hold known kinds");
                lookups.insert(
                    addr,
                    evaluate_args(resource, schema, &|_, _| None, &|name| env(name)),
                );
            }
        }
    }
    let mut targets: BTreeMap<&str, Vec<RefreshTarget<'_>>> = BTreeMap::new();
    if options.refresh {
        for (addr, resource) in &recorded.resources {
            targets.entry(addr.kind()).or_default().push(RefreshTarget {
                addr,
                id: Some(&resource.id),
                attributes: &resource.attributes,
            });
        }
        for (addr, attributes) in &lookups {
            targets.entry(addr.kind()).or_default().push(RefreshTarget {
                addr,
                id: None,
                attributes,
            });
        }
    }
    let answers = try_join_all(targets.iter().map(|(kind, targets)| async move {
        let provider = registry.provider(kind).ok_or_else(|| Error::UnknownKind {
            addr: targets[0].addr.clone(),
        })?;
        let observed =
            provider
                .refresh(context, targets)
                .await
                .map_err(|source| Error::Refresh {
                    kind: (*kind).to_owned(),
                    source,
                })?;
        Ok::<_, Error>(
            targets
                .iter()
                .map(|t| t.addr)
                .zip(observed)
                .collect::<Vec<_>>(),
        )
    }))
    .await?;
    let mut observed: BTreeMap<&ResourceAddr, Option<Observed>> =
        answers.into_iter().flatten().collect();

    // Interrupted creates: a launch sent just before a crash may land only now.
    // For kinds that ask for it, look again with backoff before planning a create.
    let waiting: Vec<&ResourceAddr> = recorded
        .pending
        .iter()
        .filter(|pending| pending.operation == Operation::Create)
        .map(|pending| &pending.addr)
        .filter(|addr| matches!(observed.get(addr), Some(None)))
        .filter(|addr| {
            registry
                .schema(addr.kind())
                .is_some_and(|schema| !schema.in_flight_grace.is_zero())
        })
        .collect();
    if !waiting.is_empty() {
        let grace = waiting
            .iter()
            .filter_map(|addr| {
                registry
                    .schema(addr.kind())
                    .map(|schema| schema.in_flight_grace)
            })
            .max()
            .unwrap_or_default();
        let settle = crate::backoff::Backoff {
            initial: std::time::Duration::from_millis(250),
            max: std::time::Duration::from_secs(3),
            deadline: grace,
        };
        let started = tokio::time::Instant::now();
        let mut missing = waiting;
        let mut attempt = 0;
        loop {
            let delay = settle.delay(attempt);
            attempt += 1;
            if started.elapsed() + delay > grace {
                // Not there after the grace period: it never launched; plan the create.
                break;
            }
            tokio::time::sleep(delay).await;
            for (kind, targets) in &targets {
                let wanted: Vec<RefreshTarget<'_>> = targets
                    .iter()
                    .filter(|t| missing.contains(&t.addr))
                    .copied()
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let provider = registry
                    .provider(kind)
                    .expect("refreshed kinds are registered");
                let answers =
                    provider
                        .refresh(context, &wanted)
                        .await
                        .map_err(|source| Error::Refresh {
                            kind: (*kind).to_owned(),
                            source,
                        })?;
                for (target, answer) in wanted.iter().zip(answers) {
                    if answer.is_some() {
                        missing.retain(|addr| *addr != target.addr);
                        observed.insert(target.addr, answer);
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
        }
    }

    // Secrets are compared and kept only as fingerprints.
    let salt = recorded.lineage.to_string();
    for (addr, found) in &mut observed {
        if let (Some(found), Some(schema)) = (found.as_mut(), registry.schema(addr.kind())) {
            schema.seal(&salt, &mut found.attributes);
        }
    }

    // 2. Drift, and what each address currently is.
    let mut drift = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut current: BTreeMap<&ResourceAddr, Current<'_>> = BTreeMap::new();
    for (addr, resource) in &recorded.resources {
        match observed.get(addr) {
            None => {
                current.insert(
                    addr,
                    Current {
                        id: &resource.id,
                        attributes: &resource.attributes,
                    },
                );
            }
            Some(None) => drift.push(ResourceChange {
                addr: addr.clone(),
                kind: resource.kind.clone(),
                action: Action::Delete,
                id: Some(resource.id.clone()),
                before: Some(resource.attributes.clone()),
                after: None,
                dependencies: resource.dependencies.clone(),
                sensitive: sensitive_names(registry.schema(addr.kind()).expect("checked above")),
                reason: Some("deleted outside jaam".into()),
            }),
            Some(Some(found)) => {
                if found.attributes != resource.attributes {
                    drift.push(ResourceChange {
                        addr: addr.clone(),
                        kind: resource.kind.clone(),
                        action: Action::Update {
                            changed: changed_attributes(&resource.attributes, &found.attributes),
                        },
                        id: Some(found.id.clone()),
                        before: Some(resource.attributes.clone()),
                        after: Some(found.attributes.clone()),
                        dependencies: resource.dependencies.clone(),
                        sensitive: sensitive_names(
                            registry.schema(addr.kind()).expect("checked above"),
                        ),
                        reason: Some("changed outside jaam".into()),
                    });
                }
                current.insert(
                    addr,
                    Current {
                        id: &found.id,
                        attributes: &found.attributes,
                    },
                );
            }
        }
    }
    let mut resolved_intents: Vec<uuid::Uuid> = recorded
        .pending
        .iter()
        .map(|pending| pending.intent)
        .collect();
    resolved_intents.sort();
    // A durable create intent is jaam's own evidence for kinds the cloud
    // cannot tag (Route53 records): what is found under its natural key was
    // made by the interrupted create.
    let intended: BTreeSet<&ResourceAddr> = recorded
        .pending
        .iter()
        .filter(|pending| pending.operation == Operation::Create)
        .map(|pending| &pending.addr)
        .collect();
    for (addr, found) in &observed {
        let Some(found) = found else { continue };
        if recorded.resources.contains_key(*addr) {
            continue;
        }
        let owned = match &found.owner {
            Some(owner) => owner.stack == context.stack && owner.addr == addr.to_string(),
            None => intended.contains(*addr),
        };
        if !owned {
            continue;
        }
        drift.push(ResourceChange {
            addr: (*addr).clone(),
            kind: addr.kind().to_owned(),
            action: Action::Create,
            id: Some(found.id.clone()),
            before: None,
            after: Some(found.attributes.clone()),
            dependencies: Vec::new(),
            sensitive: sensitive_names(
                registry
                    .schema(addr.kind())
                    .expect("refreshed kinds are registered"),
            ),
            reason: Some("created by an interrupted apply; adopted into state".into()),
        });
        current.insert(
            addr,
            Current {
                id: &found.id,
                attributes: &found.attributes,
            },
        );
    }

    // 3a. Plan-time resolution (AMI parameter paths, branch heads …),
    // batched per kind; with targets, for the targets and what they depend
    // on only (a push's plan reads only the pushed sites' branch heads).
    let scope: Option<BTreeSet<ResourceAddr>> = (!options.targets.is_empty()).then(|| {
        let mut scope = config.graph().with_dependencies(&options.targets);
        scope.extend(options.targets.iter().cloned());
        scope
    });
    let mut by_kind: BTreeMap<&str, Vec<Attrs>> = BTreeMap::new();
    for (addr, resource) in &desired {
        if scope.as_ref().is_some_and(|scope| !scope.contains(*addr)) {
            continue;
        }
        let provider = registry
            .provider(addr.kind())
            .expect("specs only hold known kinds");
        if !provider.prepares() {
            continue;
        }
        let schema = provider.schema();
        by_kind.entry(addr.kind()).or_default().push(evaluate_args(
            resource,
            schema,
            &|_, _| None,
            &|name| env(name),
        ));
    }
    let rewrites: BTreeMap<&str, Vec<Rewrite>> =
        try_join_all(by_kind.iter().map(|(kind, desired)| async move {
            let provider = registry
                .provider(kind)
                .expect("specs only hold known kinds");
            let refs: Vec<&Attrs> = desired.iter().collect();
            let rules =
                provider
                    .prepare(context, &refs)
                    .await
                    .map_err(|source| Error::Refresh {
                        kind: (*kind).to_owned(),
                        source,
                    })?;
            Ok::<_, Error>((*kind, rules))
        }))
        .await?
        .into_iter()
        .collect();

    // 3. Desired resources in dependency order. A reference reads the planned
    // `after` of its dependency's change (known, or unknown until apply).
    let graph = config.graph();
    let order = graph
        .topological_order()
        .expect("specs are validated acyclic");
    let mut changes: BTreeMap<ResourceAddr, ResourceChange> = BTreeMap::new();
    for addr in order {
        let Some(resource) = desired.get(&addr) else {
            continue;
        };
        let schema = registry
            .schema(addr.kind())
            .expect("specs only hold known kinds");
        let lookup = |target: &ResourceAddr, attribute: &str| -> Option<Value> {
            let after = changes.get(target)?.after.as_ref()?;
            Some(after.get(attribute).cloned().unwrap_or(Value::Null))
        };
        let mut after = evaluate_args(resource, schema, &lookup, &|name| env(name));
        let existing = current.get(&addr).copied();
        let replacing = options.replace.contains(&addr);
        for rule in rewrites.get(addr.kind()).into_iter().flatten() {
            if let Some(value) = after.get_mut(&rule.attribute)
                && *value == rule.from
            {
                let kept = existing
                    .filter(|_| rule.keep && !replacing)
                    .and_then(|existing| existing.attributes.get(&rule.attribute))
                    .filter(|kept| !kept.is_null());
                match kept {
                    Some(kept) if rule.unresolved.is_some() => {
                        notes.push(format!(
                            "`{addr}` keeps {} = {}: {}",
                            rule.attribute,
                            brief(kept),
                            rule.unresolved.as_deref().unwrap_or_default(),
                        ));
                        *value = kept.clone();
                    }
                    Some(kept) if *kept != rule.to => {
                        let from = if rule.from == rule.to {
                            String::new()
                        } else {
                            format!(" (from {})", brief(&rule.from))
                        };
                        notes.push(format!(
                            "`{addr}` keeps {} = {}; newer: {}{from} — replace with \
                             `jaam apply --replace {addr}`",
                            rule.attribute,
                            brief(kept),
                            brief(&rule.to),
                        ));
                        *value = kept.clone();
                    }
                    _ => {
                        // Nothing to keep (a new resource): it plans with
                        // `to`, and the plan says why it is not resolved.
                        if let Some(why) = &rule.unresolved {
                            notes.push(format!(
                                "`{addr}` plans {} = {}: {why}",
                                rule.attribute,
                                brief(&rule.to),
                            ));
                        }
                        *value = rule.to.clone();
                    }
                }
            }
        }
        // A provider may ask for an update although the arguments match (renewal).
        let due = existing
            .and(observed.get(&addr))
            .and_then(|found| found.as_ref()?.due.clone());
        let action = match existing {
            None => Action::Create,
            Some(existing) => match diff_arguments(schema, &salt, existing.attributes, &after) {
                Action::NoOp | Action::Update { .. } if replacing => {
                    let changed = changed_attributes(existing.attributes, &after)
                        .into_iter()
                        .filter(|name| schema.attribute(name).is_some_and(|a| a.is_argument()))
                        .collect();
                    Action::Replace {
                        order: schema.replace_order,
                        changed,
                        forcing: Vec::new(),
                    }
                }
                Action::NoOp if due.is_some() => Action::Update {
                    changed: Vec::new(),
                },
                action => action,
            },
        };
        let keeps_identity = matches!(action, Action::NoOp | Action::Update { .. });
        // What dependents may read: computed attributes survive an in-place update
        // (unless it changes them: `changes_with`) and are unknown for anything
        // created.
        for attribute in schema.attributes.iter().filter(|a| !a.is_argument()) {
            // A due update (a renewal) keeps the identity: dependents read the
            // values they had, and catch up with a later plan if one changed.
            let updated = match &action {
                Action::Update { changed } => changed
                    .iter()
                    .any(|name| attribute.changes_with.contains(&name.as_str())),
                _ => false,
            };
            let value = match existing.filter(|_| keeps_identity && !updated) {
                Some(existing) => existing
                    .attributes
                    .get(attribute.name)
                    .cloned()
                    .unwrap_or(Value::Null),
                None => Value::Unknown(String::new()),
            };
            after.insert(attribute.name.to_owned(), value);
        }
        if let Some(existing) = existing.filter(|_| keeps_identity) {
            for attribute in schema
                .arguments()
                .filter(|a| a.mode == Mode::OptionalComputed)
            {
                if after.get(attribute.name).is_none_or(Value::is_null) {
                    let value = existing
                        .attributes
                        .get(attribute.name)
                        .cloned()
                        .unwrap_or(Value::Null);
                    after.insert(attribute.name.to_owned(), value);
                }
            }
        }
        let reason = if existing.is_none() && recorded.resources.contains_key(&addr) {
            Some("deleted outside jaam".to_owned())
        } else if matches!(action, Action::Update { .. }) {
            due
        } else if replacing && matches!(action, Action::Replace { .. }) {
            Some("replacement requested with --replace".to_owned())
        } else {
            None
        };
        let change = ResourceChange {
            addr: addr.clone(),
            kind: addr.kind().to_owned(),
            action,
            id: existing.map(|existing| existing.id.to_owned()),
            before: existing.map(|existing| existing.attributes.clone()),
            after: Some(after),
            dependencies: graph.dependencies(&addr),
            sensitive: sensitive_names(schema),
            reason,
        };
        changes.insert(addr, change);
    }

    // 4. Deletes.
    for (addr, resource) in &recorded.resources {
        if desired.contains_key(addr) {
            continue;
        }
        let schema = registry.schema(addr.kind()).expect("checked above");
        let gone = matches!(observed.get(addr), Some(None));
        let existing = current.get(addr);
        changes.insert(
            addr.clone(),
            ResourceChange {
                addr: addr.clone(),
                kind: resource.kind.clone(),
                action: Action::Delete,
                id: Some(
                    existing.map_or_else(|| resource.id.clone(), |existing| existing.id.to_owned()),
                ),
                before: Some(existing.map_or_else(
                    || resource.attributes.clone(),
                    |existing| existing.attributes.clone(),
                )),
                after: None,
                dependencies: resource.dependencies.clone(),
                sensitive: sensitive_names(schema),
                reason: Some(if gone {
                    "already deleted outside jaam; only removed from state".to_owned()
                } else if options.destroy {
                    "destroy".to_owned()
                } else {
                    "no longer in the specs".to_owned()
                }),
            },
        );
    }
    // Resources adopted but no longer desired are deleted too.
    for change in &drift {
        if change.action == Action::Create
            && !desired.contains_key(&change.addr)
            && !changes.contains_key(&change.addr)
        {
            let mut delete = change.clone();
            delete.action = Action::Delete;
            delete.before = change.after.clone();
            delete.after = None;
            delete.reason = Some("created by an interrupted apply, no longer in the specs".into());
            changes.insert(change.addr.clone(), delete);
        }
    }

    // 5. Targets.
    if !options.targets.is_empty() {
        let mut scope: BTreeSet<ResourceAddr> = graph.with_dependencies(&options.targets);
        scope.extend(options.targets.iter().cloned());
        changes.retain(|addr, _| scope.contains(addr));
        drift.retain(|change| scope.contains(&change.addr));
    }

    // 6. Deposed objects of earlier replacements: delete them now.
    let deposed = recorded
        .deposed
        .iter()
        .filter(|deposed| options.targets.is_empty() || options.targets.contains(&deposed.addr))
        .map(|deposed| ResourceChange {
            addr: deposed.addr.clone(),
            kind: deposed.resource.kind.clone(),
            action: Action::Delete,
            id: Some(deposed.resource.id.clone()),
            before: Some(deposed.resource.attributes.clone()),
            after: None,
            dependencies: Vec::new(),
            sensitive: registry
                .schema(deposed.addr.kind())
                .map(sensitive_names)
                .unwrap_or_default(),
            reason: Some(format!(
                "deposed object `{}` left by an interrupted replacement",
                deposed.resource.id
            )),
        })
        .collect();

    drift.sort_by(|a, b| a.addr.cmp(&b.addr));
    Ok(Plan {
        deposed,
        format_version: FORMAT_VERSION,
        stack: context.stack.clone(),
        prior: state.map(State::meta),
        lineage: recorded.lineage,
        destroy: options.destroy,
        drift,
        changes: changes.into_values().collect(),
        resolved_intents,
        notes,
    })
}

fn sensitive_names(schema: &Schema) -> Vec<String> {
    schema
        .attributes
        .iter()
        .filter(|a| a.sensitive)
        .map(|a| a.name.to_owned())
        .collect()
}

/// The attribute names whose values differ between two attribute maps.
pub fn changed_attributes(before: &Attrs, after: &Attrs) -> Vec<String> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| {
            before.get(*name).unwrap_or(&Value::Null) != after.get(*name).unwrap_or(&Value::Null)
        })
        .cloned()
        .collect()
}

/// Compares desired arguments with what exists, by the kind's schema.
fn diff_arguments(schema: &Schema, salt: &str, current: &Attrs, desired: &Attrs) -> Action {
    let mut changed = Vec::new();
    let mut forcing = Vec::new();
    for attribute in schema.arguments() {
        let want = desired.get(attribute.name).unwrap_or(&Value::Null);
        // State holds only a secret's fingerprint: compare fingerprints.
        let sealed;
        let want = if attribute.sensitive {
            sealed = crate::schema::seal_value(salt, want);
            &sealed
        } else {
            want
        };
        let have = current.get(attribute.name).unwrap_or(&Value::Null);
        if want.is_null() && attribute.mode == Mode::OptionalComputed {
            continue;
        }
        if want != have {
            changed.push(attribute.name.to_owned());
            if attribute.force_new {
                forcing.push(attribute.name.to_owned());
            }
        }
    }
    changed.sort();
    forcing.sort();
    if !forcing.is_empty() {
        Action::Replace {
            order: schema.replace_order,
            changed,
            forcing,
        }
    } else if !changed.is_empty() {
        Action::Update { changed }
    } else {
        Action::NoOp
    }
}

/// A value for a one-line note: multi-line text as its size and digest.
fn brief(value: &Value) -> String {
    match value {
        Value::String(text) if text.contains('\n') => {
            use sha2::Digest as _;
            let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
            format!("({} bytes, sha256 {}…)", text.len(), &digest[..12])
        }
        _ => value.render(),
    }
}
