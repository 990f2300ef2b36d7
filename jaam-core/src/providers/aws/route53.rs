//! `record`: a Route53 resource record set.
//!
//! Arguments: `zone` (a domain name such as `example.com` — its public hosted
//! zone: a private zone of the same name is skipped, as split-horizon setups
//! have one — or a hosted zone id, which plan time turns into the zone's
//! domain so that state always holds the name), `name`, `type` (A, AAAA, CNAME or TXT) — changing any of these
//! **replaces** the record (delete first: the new one may reuse the name) — and
//! `ttl` (default 300) and `values` — these **update in place** with UPSERT.
//! Computed: `zone_id`, `fqdn`. The cloud id is `ZONEID/name/type`, the form
//! `jaam import record.www ZONEID/name/type` takes.
//!
//! TXT values are written quoted (`"…"`, with `"` and `\` escaped, and split into
//! 255-character strings) and read back unquoted, so specs hold plain text.
//!
//! # Crash safety
//! Records cannot carry tags. They are identified by their natural key (zone,
//! name, type), and a create is an UPSERT, so a create interrupted by a crash is
//! simply made again, without a duplicate. A record that exists outside jaam is
//! taken over the same way; the plan says so. Because nothing in the cloud
//! says a record is jaam's, a create's intent is journaled durably before the
//! call: after a crash the pending intent is jaam's evidence, so a record
//! found under it is adopted (and a `destroy` deletes it) even when the run
//! that made it never recorded it. A change still in flight at the crash is
//! waited for up to 10 s (`in_flight_grace`) before the intent is dropped.
//!
//! # Refresh cost
//! One ListResourceRecordSets sweep (300 per page) per hosted zone, however
//! many records jaam manages in it. Zone names resolve once per provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_route53::Client as Route53Client;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};

use super::{CallCounter, classify};
use crate::backoff::{self, Backoff};
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result, Rewrite,
};
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// DNS changes reach INSYNC in ~60 s on real AWS; moto is instant.
const INSYNC: Backoff = Backoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(10),
    deadline: Duration::from_secs(600),
};

/// The record types jaam manages.
pub const TYPES: [&str; 4] = ["A", "AAAA", "CNAME", "TXT"];

fn check_type(value: &Value) -> Result<(), String> {
    crate::schema::one_of(value, &TYPES, "a record type jaam manages")
}

fn check_ttl(value: &Value) -> Result<(), String> {
    match value.as_int() {
        Some(ttl) if (0..=2_147_483_647).contains(&ttl) => Ok(()),
        _ => Err(format!("{} is not a TTL in seconds", value.render())),
    }
}

/// The `record` schema.
pub fn schema() -> Schema {
    Schema {
        kind: "record",
        attributes: vec![
            Attribute::required("zone", Type::String).force_new(),
            Attribute::required("name", Type::String).force_new(),
            Attribute::required("type", Type::String)
                .force_new()
                .checked(check_type),
            Attribute::optional("ttl", Type::Int)
                .default_value(300)
                .checked(check_ttl),
            Attribute::required("values", Type::List(Box::new(Type::String))),
            Attribute::computed("zone_id", Type::String),
            Attribute::computed("fqdn", Type::String),
        ],
        replace_order: ReplaceOrder::DeleteThenCreate,
        // Records carry no ownership tags: a create's intent is made durable
        // before the call, so an interrupted create is known (and a destroy
        // after a crash finds and deletes it). A change sent just before a
        // crash can land after the next run's refresh: that run looks again
        // for up to 10 s before it concludes the create never happened.
        adoptable: false,
        in_flight_grace: std::time::Duration::from_secs(10),
    }
}

/// `name` as Route53 stores it: lowercase, with the trailing dot.
pub(crate) fn fqdn(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    }
}

/// Route53's escapes for characters outside `[a-z0-9-.]` (`\052` is `*`).
fn unescape(name: &str) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest
            .get(index + 1..index + 4)
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[index + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A TXT value as Route53 wants it: quoted strings of at most 255 characters.
pub fn quote_txt(value: &str) -> String {
    let escaped: Vec<String> = value
        .chars()
        .collect::<Vec<_>>()
        .chunks(255)
        .map(|chunk| {
            let text: String = chunk.iter().collect();
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect();
    if escaped.is_empty() {
        "\"\"".to_owned()
    } else {
        escaped.join(" ")
    }
}

/// The inverse of [`quote_txt`]: concatenates the quoted strings.
pub fn unquote_txt(value: &str) -> String {
    let value = value.trim();
    if !value.starts_with('"') {
        return value.to_owned();
    }
    let mut out = String::new();
    let mut chars = value.chars();
    let mut inside = false;
    while let Some(c) = chars.next() {
        match (c, inside) {
            ('"', _) => inside = !inside,
            ('\\', true) => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            (c, true) => out.push(c),
            (_, false) => {}
        }
    }
    out
}

/// The zone id, when `zone` is written as one (`Z…`, `/hostedzone/Z…`): a
/// domain always has a dot, an id never does.
fn zone_id_form(zone: &str) -> Option<String> {
    let bare = zone
        .trim_start_matches("/hostedzone/")
        .trim_end_matches('.');
    (!bare.is_empty() && !bare.contains('.')).then(|| bare.to_owned())
}

struct Found {
    ttl: Option<i64>,
    values: Vec<String>,
}

/// The Route53 provider.
#[derive(Debug)]
pub struct Records {
    client: Route53Client,
    schema: Schema,
    /// Zone domain (with trailing dot) → zone id. Guarded by its own mutex,
    /// never held across an await.
    zones: Mutex<HashMap<String, String>>,
}

impl Records {
    /// A provider using `config`; `counter` counts every HTTP attempt (tests).
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        let builder = super::instrumented!(aws_sdk_route53::config::Builder::from(config), counter);
        Self {
            client: Route53Client::from_conf(builder.build()),
            schema: schema(),
            zones: Mutex::default(),
        }
    }

    /// The domain of a hosted zone given by domain (checked to exist) or by id.
    ///
    /// # Errors
    /// No such zone, or a failed call.
    pub(crate) async fn zone_domain(&self, zone: &str) -> Result<String> {
        let Some(id) = zone_id_form(zone) else {
            self.zone_id(zone).await?;
            return Ok(fqdn(zone));
        };
        let answer = self
            .client
            .get_hosted_zone()
            .id(&id)
            .send()
            .await
            .map_err(|e| classify("GetHostedZone", e))?;
        answer
            .hosted_zone()
            .map(|hosted| fqdn(hosted.name()))
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::Invalid,
                    format!("no Route53 hosted zone `{zone}`"),
                )
            })
    }

    /// The hosted zone id of a domain (or of an id, which is returned as is).
    pub(crate) async fn zone_id(&self, zone: &str) -> Result<String> {
        if let Some(id) = zone_id_form(zone) {
            return Ok(id);
        }
        let domain = fqdn(zone);
        if let Some(id) = self.zones.lock().expect("zones mutex").get(&domain) {
            return Ok(id.clone());
        }
        let answer = self
            .client
            .list_hosted_zones_by_name()
            .dns_name(&domain)
            .send()
            .await
            .map_err(|e| classify("ListHostedZonesByName", e))?;
        // A private zone of the same name (split-horizon DNS) is not where
        // public records and ACME challenges go: only the public one is
        // looked up by name (a private zone can still be named by its id).
        let named: Vec<_> = answer
            .hosted_zones()
            .iter()
            .filter(|hosted| fqdn(hosted.name()) == domain)
            .collect();
        let id = named
            .iter()
            .find(|hosted| !hosted.config().is_some_and(|config| config.private_zone()))
            .map(|hosted| hosted.id().trim_start_matches("/hostedzone/").to_owned())
            .ok_or_else(|| {
                let message = if named.is_empty() {
                    format!("no Route53 hosted zone for `{zone}`")
                } else {
                    format!(
                        "`{zone}` has only a private Route53 hosted zone; jaam looks up public zones by name \
                         (give the zone id to use the private one)"
                    )
                };
                ProviderError::new(ErrorKind::Invalid, message)
            })?;
        self.zones
            .lock()
            .expect("zones mutex")
            .insert(domain, id.clone());
        Ok(id)
    }

    /// The domain of a zone id.
    async fn zone_name(&self, id: &str) -> Result<String> {
        let answer = self
            .client
            .get_hosted_zone()
            .id(id)
            .send()
            .await
            .map_err(|e| classify("GetHostedZone", e))?;
        let name = answer
            .hosted_zone()
            .map(|zone| zone.name().trim_end_matches('.').to_owned())
            .unwrap_or_default();
        self.zones
            .lock()
            .expect("zones mutex")
            .insert(fqdn(&name), id.to_owned());
        Ok(name)
    }

    /// Every record set of a zone, by (fqdn, type): one paginated sweep.
    async fn sweep(&self, zone_id: &str) -> Result<HashMap<(String, String), Found>> {
        let mut out = HashMap::new();
        let mut start: Option<(String, RrType)> = None;
        loop {
            let mut request = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone_id)
                .max_items(300);
            if let Some((name, kind)) = start.take() {
                request = request.start_record_name(name).start_record_type(kind);
            }
            let page = request
                .send()
                .await
                .map_err(|e| classify("ListResourceRecordSets", e))?;
            for set in page.resource_record_sets() {
                let kind = set.r#type().as_str().to_owned();
                let values = set
                    .resource_records()
                    .iter()
                    .map(|record| {
                        if kind == "TXT" {
                            unquote_txt(record.value())
                        } else {
                            record.value().to_owned()
                        }
                    })
                    .collect();
                out.insert(
                    (fqdn(&unescape(set.name())), kind),
                    Found {
                        ttl: set.ttl(),
                        values,
                    },
                );
            }
            match (
                page.is_truncated(),
                page.next_record_name(),
                page.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => start = Some((name.to_owned(), kind.clone())),
                _ => break,
            }
        }
        Ok(out)
    }

    fn observed(zone: &str, zone_id: &str, name: &str, kind: &str, found: &Found) -> Observed {
        let mut attributes = Attrs::new();
        attributes.insert("zone".into(), Value::String(zone.to_owned()));
        attributes.insert("name".into(), Value::String(name.to_owned()));
        attributes.insert("type".into(), Value::String(kind.to_owned()));
        attributes.insert("ttl".into(), found.ttl.map_or(Value::Null, Value::Int));
        attributes.insert(
            "values".into(),
            Value::List(
                found
                    .values
                    .iter()
                    .map(|v| Value::String(v.clone()))
                    .collect(),
            ),
        );
        attributes.insert("zone_id".into(), Value::String(zone_id.to_owned()));
        attributes.insert("fqdn".into(), Value::String(fqdn(name)));
        Observed {
            id: format!("{zone_id}/{}/{kind}", name.trim_end_matches('.')),
            attributes,
            owner: None,
            due: None,
        }
    }

    /// Sends one change and waits for it to be INSYNC.
    pub(crate) async fn change(
        &self,
        zone_id: &str,
        action: ChangeAction,
        attributes: &Attrs,
    ) -> Result<()> {
        let name = attributes
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = attributes
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ttl = attributes.get("ttl").and_then(Value::as_int).unwrap_or(300);
        let invalid = |e: aws_smithy_types::error::operation::BuildError| {
            ProviderError::new(ErrorKind::Invalid, e.to_string())
        };
        let records = match attributes.get("values") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|value| {
                    let value = if kind == "TXT" {
                        quote_txt(value)
                    } else {
                        value.to_owned()
                    };
                    ResourceRecord::builder()
                        .value(value)
                        .build()
                        .map_err(invalid)
                })
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        let set = ResourceRecordSet::builder()
            .name(fqdn(name))
            .r#type(RrType::from(kind))
            .ttl(ttl)
            .set_resource_records(Some(records))
            .build()
            .map_err(invalid)?;
        let batch = ChangeBatch::builder()
            .changes(
                Change::builder()
                    .action(action)
                    .resource_record_set(set)
                    .build()
                    .map_err(invalid)?,
            )
            .build()
            .map_err(invalid)?;
        let answer = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| classify("ChangeResourceRecordSets", e))?;
        let change_id = answer
            .change_info()
            .map(|info| info.id().to_owned())
            .unwrap_or_default();
        wait_insync(INSYNC, || async {
            let answer = self
                .client
                .get_change()
                .id(&change_id)
                .send()
                .await
                .map_err(|e| classify("GetChange", e))?;
            Ok(answer.change_info().map(|info| info.status().clone()))
        })
        .await
    }
}

/// Polls a change's status until INSYNC, with backoff under a deadline.
///
/// # Errors
/// The status call's error, or a transient error when the deadline passes.
pub async fn wait_insync<F, Fut>(backoff: Backoff, mut status: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<ChangeStatus>>>,
{
    let outcome =
        backoff::poll(backoff, || {
            let next = status();
            async move {
                Ok::<_, ProviderError>((next.await? == Some(ChangeStatus::Insync)).then_some(()))
            }
        })
        .await;
    super::waited(outcome, || "DNS change not INSYNC".to_owned())
}

#[async_trait]
impl Provider for Records {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn prepares(&self) -> bool {
        true
    }

    /// Zones given by id become their names; zones given by name must exist
    /// — said at plan time (a destroy desires nothing, so a zone already gone
    /// does not stop it).
    async fn prepare(&self, _context: &Context, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        for zone in desired
            .iter()
            .filter_map(|attrs| attrs.get("zone").and_then(Value::as_str))
            .filter(|zone| zone_id_form(zone).is_none())
        {
            self.zone_id(zone).await?;
        }
        let mut ids: Vec<String> = desired
            .iter()
            .filter_map(|attrs| attrs.get("zone").and_then(Value::as_str))
            .filter(|zone| zone_id_form(zone).is_some())
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids.dedup();
        let mut out = Vec::new();
        for written in ids {
            let id = zone_id_form(&written).unwrap_or_default();
            let name = self.zone_name(&id).await?;
            out.push(Rewrite {
                attribute: "zone".into(),
                from: Value::String(written),
                to: Value::String(name),
                keep: false,
                unresolved: None,
            });
        }
        Ok(out)
    }

    async fn refresh(
        &self,
        _context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        // Resolve each target's zone (recorded zone_id, else the zone name, cached).
        let mut zone_ids = Vec::with_capacity(targets.len());
        for target in targets {
            let recorded = target
                .attributes
                .get("zone_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let zone = target
                .attributes
                .get("zone")
                .and_then(Value::as_str)
                .unwrap_or_default();
            zone_ids.push(match recorded {
                Some(id) => Some(id),
                None => match self.zone_id(zone).await {
                    Ok(id) => Some(id),
                    // A record jaam never recorded, in a zone that does not
                    // exist, does not exist either (a destroy's lookup must
                    // not fail on it; a create reports the zone itself).
                    Err(error) if target.id.is_none() && error.kind == ErrorKind::Invalid => None,
                    Err(error) => return Err(error),
                },
            });
        }
        let mut sweeps: BTreeMap<String, HashMap<(String, String), Found>> = BTreeMap::new();
        for zone_id in zone_ids.iter().flatten() {
            if !sweeps.contains_key(zone_id) {
                let found = self.sweep(zone_id).await?;
                sweeps.insert(zone_id.clone(), found);
            }
        }
        Ok(targets
            .iter()
            .zip(&zone_ids)
            .map(|(target, zone_id)| {
                let zone_id = zone_id.as_ref()?;
                let name = target.attributes.get("name").and_then(Value::as_str)?;
                let kind = target.attributes.get("type").and_then(Value::as_str)?;
                let zone = target
                    .attributes
                    .get("zone")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let found = sweeps.get(zone_id)?.get(&(fqdn(name), kind.to_owned()))?;
                Some(Self::observed(zone, zone_id, name, kind, found))
            })
            .collect())
    }

    async fn create(
        &self,
        _context: &Context,
        _owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let zone = attributes
            .get("zone")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let zone_id = self.zone_id(zone).await?;
        self.change(&zone_id, ChangeAction::Upsert, attributes)
            .await?;
        Ok(Self::written(zone, &zone_id, attributes))
    }

    async fn update(
        &self,
        _context: &Context,
        _owner: &Owner,
        _id: &str,
        prior: &Attrs,
        attributes: &Attrs,
        _changed: &[String],
    ) -> Result<Observed> {
        let zone = attributes
            .get("zone")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let zone_id = match prior.get("zone_id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => self.zone_id(zone).await?,
        };
        self.change(&zone_id, ChangeAction::Upsert, attributes)
            .await?;
        Ok(Self::written(zone, &zone_id, attributes))
    }

    async fn delete(&self, _context: &Context, id: &str, prior: &Attrs) -> Result<()> {
        let zone_id = match prior.get("zone_id").and_then(Value::as_str) {
            Some(zone_id) => zone_id.to_owned(),
            None => id.split('/').next().unwrap_or_default().to_owned(),
        };
        // DELETE must name the record set exactly as it is: `prior` is what refresh saw.
        match self.change(&zone_id, ChangeAction::Delete, prior).await {
            Ok(()) => Ok(()),
            Err(error)
                if error.kind == ErrorKind::NotFound || error.message.contains("not found") =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        let mut parts = id.splitn(3, '/');
        let (Some(zone_id), Some(name), Some(kind)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ProviderError::new(
                ErrorKind::Invalid,
                format!("`{id}` is not ZONEID/name/type"),
            ));
        };
        let zone = self.zone_name(zone_id).await?;
        let found = self.sweep(zone_id).await?;
        let record = found.get(&(fqdn(name), kind.to_owned())).ok_or_else(|| {
            ProviderError::new(
                ErrorKind::NotFound,
                format!("no {kind} record `{name}` in zone `{zone_id}`"),
            )
        })?;
        Ok(Self::observed(
            &zone,
            zone_id,
            name.trim_end_matches('.'),
            kind,
            record,
        ))
    }

    async fn list_owned(&self, _context: &Context) -> Result<Vec<Observed>> {
        // Records carry no tags: ownership cannot be told from the cloud.
        Ok(Vec::new())
    }
}

impl Records {
    fn written(zone: &str, zone_id: &str, attributes: &Attrs) -> Observed {
        let name = attributes
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = attributes
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values = crate::value::string_list(attributes.get("values"));
        let found = Found {
            ttl: attributes.get("ttl").and_then(Value::as_int),
            values,
        };
        Self::observed(zone, zone_id, name, kind, &found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_values_should_round_trip_through_quoting() {
        for value in [
            "hello world",
            "with \"quotes\" and \\ slash",
            "",
            &"x".repeat(600),
        ] {
            let quoted = quote_txt(value);
            assert!(quoted.starts_with('"'));
            assert_eq!(unquote_txt(&quoted), value);
        }
        assert_eq!(
            quote_txt(&"y".repeat(300)).matches('"').count(),
            4,
            "split at 255 characters"
        );
        assert_eq!(unquote_txt("plain"), "plain");
    }

    #[test]
    fn names_should_compare_as_route53_stores_them() {
        assert_eq!(fqdn("Blog.Example.com"), "blog.example.com.");
        assert_eq!(fqdn("blog.example.com."), "blog.example.com.");
        assert_eq!(unescape("\\052.example.com."), "*.example.com.");
        assert_eq!(zone_id_form("/hostedzone/Z123ABC"), Some("Z123ABC".into()));
        assert_eq!(zone_id_form("example.com"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_should_poll_until_insync() {
        let mut answers = vec![
            ChangeStatus::Pending,
            ChangeStatus::Pending,
            ChangeStatus::Pending,
            ChangeStatus::Insync,
        ]
        .into_iter();
        let mut calls = 0;
        wait_insync(INSYNC, || {
            calls += 1;
            let next = answers.next();
            async move { Ok(next) }
        })
        .await
        .unwrap();
        assert_eq!(calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_should_give_up_at_its_deadline() {
        let short = Backoff {
            deadline: Duration::from_secs(5),
            ..INSYNC
        };
        let error = wait_insync(short, || async { Ok(Some(ChangeStatus::Pending)) })
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Transient);
    }
}
