//! `security_group`: an EC2 security group.
//!
//! ```yaml
//! security_group.web:
//!   name: web
//!   ingress: ["tcp 80 0.0.0.0/0", "tcp 443 0.0.0.0/0", "tcp 443 ::/0"]
//! ```
//!
//! Arguments, and what a change does:
//! - `name` (required), `description` (default `managed by jaam`): **replace**
//!   (EC2 cannot rename a group or change its description). The new group is
//!   made first, so the name must differ meanwhile: jaam plans the
//!   replacement create-then-delete, and a same-name replacement fails with
//!   EC2's duplicate-name error, naming the group.
//! - `vpc_id`: the VPC; unset means the region's default VPC. **Replaces**.
//!   A plan fails when it is unset and the region has no default VPC.
//! - `ingress`, `egress`: rules, **in place** (authorize what is new, revoke
//!   what is gone; nothing else is touched, so traffic on an unchanged rule is
//!   never interrupted). `egress` defaults to `["all all 0.0.0.0/0"]`, what EC2
//!   gives a new group.
//! - `tags`: **in place**.
//!
//! Computed: `id` (`sg-…`, also the cloud id).
//!
//! # Rules
//! A rule is one string, `PROTOCOL PORTS SOURCE`: `tcp`, `udp`, `icmp` or
//! `all`; a port, a range `FROM-TO` or `all`; an IPv4 or IPv6 CIDR. One rule
//! per CIDR keeps a plan's diff to the rule that changes (Terraform's
//! `cidr_blocks` lists make one address change look like a whole rule's). The
//! spelling is checked when specs load and must be the canonical one (`tcp
//! 443 0.0.0.0/0`, lowercase, a single port written once), so what the cloud
//! reports compares equal to what was written; rules are reported in the
//! order written, then any extra ones sorted.
//!
//! # Ownership and refresh cost
//! CreateSecurityGroup writes the ownership tags itself (TagSpecifications),
//! so a group made by an interrupted apply is found and adopted. One refresh is
//! one paginated DescribeSecurityGroups filtered on `tag:jaam:stack` (1,000 a
//! page), plus one filtered on `group-id` for recorded groups without the tag
//! (imported): 100 groups cost 1 call.
//!
//! # Deleting
//! A group still attached to an instance that is shutting down cannot be
//! deleted yet (`DependencyViolation`): the delete is retried with backoff for
//! up to five minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::Client as Ec2Client;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup, TagSpecification,
};

use super::{CallCounter, classify, waited};
use crate::backoff::{self, Backoff};
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result, Rewrite,
};
use crate::schema::{Attribute, Mode, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// The egress EC2 gives every new group.
pub const DEFAULT_EGRESS: &str = "all all 0.0.0.0/0";

/// How long a delete waits for the group's last user to go.
const DELETE: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(10),
    deadline: Duration::from_secs(300),
};

/// One rule: protocol (`-1` for all), port range, source CIDR.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// EC2's protocol name or `-1`.
    pub protocol: String,
    /// First port (`-1`: all).
    pub from: i32,
    /// Last port.
    pub to: i32,
    /// IPv4 or IPv6 CIDR.
    pub cidr: String,
}

impl Rule {
    /// Parses `PROTOCOL PORTS SOURCE`.
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let words: Vec<&str> = text.split(' ').collect();
        let [protocol, ports, cidr] = words.as_slice() else {
            return Err(format!(
                "`{text}` is not a rule: write PROTOCOL PORTS SOURCE, e.g. `tcp 443 0.0.0.0/0`"
            ));
        };
        let protocol = match *protocol {
            "tcp" | "udp" | "icmp" => (*protocol).to_owned(),
            "all" => "-1".to_owned(),
            other => {
                return Err(format!(
                    "`{text}`: protocol `{other}` is not one of tcp, udp, icmp, all"
                ));
            }
        };
        let port = |p: &str| {
            p.parse::<i32>()
                .ok()
                .filter(|n| (0..=65535).contains(n))
                .ok_or_else(|| format!("`{text}`: `{p}` is not a port (0 to 65535)"))
        };
        let (from, to) = match *ports {
            "all" => (-1, -1),
            range => match range.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(range)?, port(range)?),
            },
        };
        if from > to {
            return Err(format!("`{text}`: the port range is backwards"));
        }
        if protocol == "-1" && from != -1 {
            return Err(format!("`{text}`: protocol `all` takes ports `all`"));
        }
        if !crate::spec::site::checks::is_cidr(cidr) {
            return Err(format!(
                "`{text}`: `{cidr}` is not a CIDR such as 0.0.0.0/0 or ::/0"
            ));
        }
        let rule = Self {
            protocol,
            from,
            to,
            cidr: (*cidr).to_owned(),
        };
        if rule.render() != text {
            return Err(format!("write `{text}` as `{}`", rule.render()));
        }
        Ok(rule)
    }

    /// The canonical text.
    pub fn render(&self) -> String {
        let protocol = if self.protocol == "-1" {
            "all"
        } else {
            &self.protocol
        };
        let ports = if self.from == -1 && self.to == -1 {
            "all".to_owned()
        } else if self.from == self.to {
            self.from.to_string()
        } else {
            format!("{}-{}", self.from, self.to)
        };
        format!("{protocol} {ports} {}", self.cidr)
    }

    fn permission(&self) -> IpPermission {
        let mut permission = IpPermission::builder().ip_protocol(&self.protocol);
        if self.protocol != "-1" {
            permission = permission.from_port(self.from).to_port(self.to);
        }
        if self.cidr.contains(':') {
            permission.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(&self.cidr).build())
        } else {
            permission.ip_ranges(IpRange::builder().cidr_ip(&self.cidr).build())
        }
        .build()
    }
}

fn check_rules(value: &Value) -> std::result::Result<(), String> {
    let Value::List(items) = value else {
        return Ok(());
    };
    for item in items {
        if let Some(text) = item.as_str() {
            Rule::parse(text)?;
        }
    }
    Ok(())
}

fn rules(value: Option<&Value>) -> Vec<Rule> {
    match value {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|text| Rule::parse(text).ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn observed_rules(permissions: &[IpPermission]) -> Vec<Rule> {
    let mut out = Vec::new();
    for permission in permissions {
        let protocol = permission.ip_protocol().unwrap_or("-1").to_owned();
        let (from, to) = if protocol == "-1" {
            (-1, -1)
        } else {
            (
                permission.from_port().unwrap_or(-1),
                permission.to_port().unwrap_or(-1),
            )
        };
        let cidrs = permission
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .chain(
                permission
                    .ipv6_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ipv6()),
            );
        for cidr in cidrs {
            out.push(Rule {
                protocol: protocol.clone(),
                from,
                to,
                cidr: cidr.to_owned(),
            });
        }
    }
    out
}

/// The rules `found` in the order written, as a list of their texts.
fn rules_value(found: Vec<Rule>, written: &[Rule]) -> Value {
    Value::List(
        super::in_written_order(found, written)
            .iter()
            .map(|rule| Value::String(rule.render()))
            .collect(),
    )
}

/// The `security_group` schema.
pub fn schema() -> Schema {
    let rules = || Type::List(Box::new(Type::String));
    Schema {
        kind: "security_group",
        attributes: vec![
            Attribute::required("name", Type::String).force_new(),
            Attribute::optional("description", Type::String)
                .default_value("managed by jaam")
                .force_new(),
            Attribute {
                mode: Mode::OptionalComputed,
                ..Attribute::optional("vpc_id", Type::String).force_new()
            },
            Attribute::optional("ingress", rules())
                .default_value(Value::List(Vec::new()))
                .checked(check_rules),
            Attribute::optional("egress", rules())
                .default_value(Value::List(vec![Value::from(DEFAULT_EGRESS)]))
                .checked(check_rules),
            Attribute::optional("tags", Type::Map(Box::new(Type::String)))
                .default_value(Value::Map(BTreeMap::new())),
            Attribute::computed("id", Type::String),
        ],
        replace_order: ReplaceOrder::CreateThenDelete,
        adoptable: true,
        in_flight_grace: Duration::ZERO,
    }
}

/// The security group provider.
#[derive(Debug)]
pub struct SecurityGroups {
    ec2: Ec2Client,
    schema: Schema,
    /// The region's default VPC, once read (see [`super::REMEMBER`]).
    remembered: super::Remembered,
}

fn tags_of(group: &SecurityGroup) -> BTreeMap<String, String> {
    group
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
        .collect()
}

fn observe(group: &SecurityGroup, known: &Attrs) -> Observed {
    let tags = tags_of(group);
    let id = group.group_id().unwrap_or_default().to_owned();
    let mut attributes = Attrs::new();
    let text = |value: Option<&str>| value.map_or(Value::Null, Value::from);
    attributes.insert("name".into(), text(group.group_name()));
    attributes.insert("description".into(), text(group.description()));
    attributes.insert("vpc_id".into(), text(group.vpc_id()));
    attributes.insert(
        "ingress".into(),
        rules_value(
            observed_rules(group.ip_permissions()),
            &rules(known.get("ingress")),
        ),
    );
    attributes.insert(
        "egress".into(),
        rules_value(
            observed_rules(group.ip_permissions_egress()),
            &rules(known.get("egress")),
        ),
    );
    attributes.insert(
        "tags".into(),
        Value::Map(
            tags.iter()
                .filter(|(key, _)| !key.starts_with("jaam:"))
                .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                .collect(),
        ),
    );
    attributes.insert("id".into(), Value::String(id.clone()));
    Observed {
        id,
        attributes,
        owner: Owner::from_tags(&tags),
        due: None,
    }
}

impl SecurityGroups {
    /// A provider using `config`, counting calls with `counter` when given.
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        let builder = super::instrumented!(aws_sdk_ec2::config::Builder::from(config), counter);
        Self {
            ec2: Ec2Client::from_conf(builder.build()),
            schema: schema(),
            remembered: super::Remembered::default(),
        }
    }

    async fn describe(&self, filter: Filter) -> Result<Vec<SecurityGroup>> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_security_groups()
            .filters(filter)
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("DescribeSecurityGroups", e))?;
            out.extend(page.security_groups().iter().cloned());
        }
        Ok(out)
    }

    async fn describe_stack(&self, stack: &str) -> Result<Vec<SecurityGroup>> {
        self.describe(
            Filter::builder()
                .name(format!("tag:{}", Owner::STACK_TAG))
                .values(stack)
                .build(),
        )
        .await
    }

    async fn describe_ids(&self, ids: &[String]) -> Result<Vec<SecurityGroup>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A filter (not GroupIds) so one missing group does not fail the call.
        self.describe(
            Filter::builder()
                .name("group-id")
                .set_values(Some(ids.to_vec()))
                .build(),
        )
        .await
    }

    async fn one(&self, id: &str) -> Result<SecurityGroup> {
        self.describe_ids(&[id.to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::NotFound,
                    format!("security group `{id}` not found"),
                )
            })
    }

    /// The region's default VPC (remembered for [`super::REMEMBER`]: a
    /// daemon's every plan checks it).
    async fn default_vpc(&self) -> Result<String> {
        if let Some(vpc) = self.remembered.get("default-vpc") {
            return Ok(vpc);
        }
        let vpc = self.read_default_vpc().await?;
        self.remembered.put("default-vpc", &vpc);
        Ok(vpc)
    }

    async fn read_default_vpc(&self) -> Result<String> {
        let answer = self
            .ec2
            .describe_vpcs()
            .filters(Filter::builder().name("is-default").values("true").build())
            .send()
            .await
            .map_err(|e| classify("DescribeVpcs", e))?;
        answer
            .vpcs()
            .first()
            .and_then(|vpc| vpc.vpc_id())
            .map(str::to_owned)
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::Invalid,
                    "this region has no default VPC: set `vpc_id` (and a `subnet_id` in it for instances)",
                )
            })
    }

    /// Authorizes what `desired` has and `current` lacks, then revokes what
    /// `current` has and `desired` lacks (new rules first: no gap).
    async fn reconcile(
        &self,
        id: &str,
        egress: bool,
        current: &[Rule],
        desired: &[Rule],
    ) -> Result<()> {
        let add: Vec<IpPermission> = desired
            .iter()
            .filter(|rule| !current.contains(rule))
            .map(Rule::permission)
            .collect();
        let remove: Vec<IpPermission> = current
            .iter()
            .filter(|rule| !desired.contains(rule))
            .map(Rule::permission)
            .collect();
        if !add.is_empty() {
            if egress {
                self.ec2
                    .authorize_security_group_egress()
                    .group_id(id)
                    .set_ip_permissions(Some(add))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("AuthorizeSecurityGroupEgress", e))?;
            } else {
                self.ec2
                    .authorize_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(add))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("AuthorizeSecurityGroupIngress", e))?;
            }
        }
        if !remove.is_empty() {
            if egress {
                self.ec2
                    .revoke_security_group_egress()
                    .group_id(id)
                    .set_ip_permissions(Some(remove))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("RevokeSecurityGroupEgress", e))?;
            } else {
                self.ec2
                    .revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(remove))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("RevokeSecurityGroupIngress", e))?;
            }
        }
        Ok(())
    }

    /// Makes `id`'s rules what `attributes` say, then reads it back.
    async fn converge(&self, id: &str, attributes: &Attrs) -> Result<Observed> {
        let group = self.one(id).await?;
        self.reconcile(
            id,
            false,
            &observed_rules(group.ip_permissions()),
            &rules(attributes.get("ingress")),
        )
        .await?;
        self.reconcile(
            id,
            true,
            &observed_rules(group.ip_permissions_egress()),
            &rules(attributes.get("egress")),
        )
        .await?;
        Ok(observe(&self.one(id).await?, attributes))
    }
}

#[async_trait]
impl Provider for SecurityGroups {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn prepares(&self) -> bool {
        true
    }

    /// Fails the plan when a group without `vpc_id` has no default VPC to go to.
    async fn prepare(&self, _context: &Context, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        let homeless: Vec<String> = desired
            .iter()
            .filter(|attrs| attrs.get("vpc_id").is_none_or(Value::is_null))
            .map(|attrs| format!("`{}`", super::text_arg(attrs, "name")))
            .collect();
        if !homeless.is_empty()
            && let Err(error) = self.default_vpc().await
        {
            return Err(ProviderError {
                message: format!("security group {}: {}", homeless.join(", "), error.message),
                ..error
            });
        }
        Ok(Vec::new())
    }

    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        let mut found = self.describe_stack(&context.stack).await?;
        let missing: Vec<String> = targets
            .iter()
            .filter_map(|t| t.id)
            .filter(|id| !found.iter().any(|g| g.group_id() == Some(*id)))
            .map(str::to_owned)
            .collect();
        found.extend(self.describe_ids(&missing).await?);
        Ok(targets
            .iter()
            .map(|target| {
                super::pick(&found, target, SecurityGroup::group_id, tags_of)
                    .map(|group| observe(group, target.attributes))
            })
            .collect())
    }

    async fn create(
        &self,
        _context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let name = super::text_arg(attributes, "name");
        let vpc = match attributes.get("vpc_id").and_then(Value::as_str) {
            Some(vpc) => vpc.to_owned(),
            None => self.default_vpc().await?,
        };
        let tags = super::ec2::ec2_tags(attributes, owner);
        let answer = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description(
                attributes
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("managed by jaam"),
            )
            .vpc_id(&vpc)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("CreateSecurityGroup", e))?;
        let id = answer.group_id().unwrap_or_default().to_owned();
        // The group exists whatever the rules do: a failure here is recorded.
        match self.converge(&id, attributes).await {
            Ok(observed) => Ok(observed),
            Err(error) => {
                let partial = self.one(&id).await.map(|g| observe(&g, attributes));
                match partial {
                    Ok(partial) => Err(error.with_partial(partial)),
                    Err(_) => Err(error),
                }
            }
        }
    }

    async fn update(
        &self,
        _context: &Context,
        owner: &Owner,
        id: &str,
        prior: &Attrs,
        attributes: &Attrs,
        changed: &[String],
    ) -> Result<Observed> {
        super::ec2::retag(&self.ec2, id, owner, prior, attributes, changed).await?;
        self.converge(id, attributes).await
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        let outcome = backoff::poll(DELETE, || async {
            match self.ec2.delete_security_group().group_id(id).send().await {
                Ok(_) => Ok(Some(())),
                Err(error) => {
                    let error = classify("DeleteSecurityGroup", error);
                    if error.kind == ErrorKind::NotFound {
                        Ok(Some(()))
                    } else if error.message.contains("DependencyViolation") {
                        // An instance that uses it is still shutting down.
                        Ok(None)
                    } else {
                        Err(error)
                    }
                }
            }
        })
        .await;
        waited(outcome, || {
            format!("security group `{id}` is still in use (DependencyViolation)")
        })
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        Ok(observe(&self.one(id).await?, &Attrs::new()))
    }

    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>> {
        Ok(self
            .describe_stack(&context.stack)
            .await?
            .iter()
            .map(|g| observe(g, &Attrs::new()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn rules_should_parse_only_their_canonical_spelling() {
        for text in [
            "tcp 443 0.0.0.0/0",
            "tcp 8000-8100 10.0.0.0/8",
            "all all ::/0",
            "udp 53 192.168.0.0/16",
        ] {
            assert_eq!(Rule::parse(text).map(|r| r.render()), Ok(text.to_owned()));
        }
        assert!(
            Rule::parse("TCP 443 0.0.0.0/0")
                .unwrap_err()
                .contains("protocol")
        );
        assert!(
            Rule::parse("tcp 443-443 0.0.0.0/0")
                .unwrap_err()
                .contains("write")
        );
        assert!(
            Rule::parse("tcp 70000 0.0.0.0/0")
                .unwrap_err()
                .contains("port")
        );
        assert!(Rule::parse("tcp 443 0.0.0.0").unwrap_err().contains("CIDR"));
        assert!(Rule::parse("all 80 0.0.0.0/0").unwrap_err().contains("all"));
        assert!(
            Rule::parse("tcp 443")
                .unwrap_err()
                .contains("PROTOCOL PORTS SOURCE")
        );
    }
}
