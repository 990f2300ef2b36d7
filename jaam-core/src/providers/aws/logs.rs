//! `log_group`: a CloudWatch Logs log group.
//!
//! Arguments: `name` (required; a new name **replaces** the group, new one first,
//! since two names can coexist), `retention_days` (one of the values CloudWatch
//! accepts, checked when specs load because moto accepts anything; unset means
//! never expire; **updates in place**), `tags` (user tags; **update in place**).
//! Computed: `arn` (the `log-group:NAME` form, without `:*`). The cloud id is the
//! name.
//!
//! Every group jaam creates carries `jaam:stack`, `jaam:address` and `jaam:intent`
//! tags, written by the CreateLogGroup call itself, so a group created by an
//! interrupted apply is found again and adopted (the kind is adoptable). An
//! update re-writes `jaam:stack`/`jaam:address`, so an imported group becomes
//! owned at its first update.
//!
//! # Refresh cost
//! One refresh is: DescribeLogGroups pages (50 groups each) under the longest
//! common name prefix of the targets, plus GetResources pages (100 each) of the
//! Resource Groups Tagging API filtered on `jaam:stack` for the tags. Groups that
//! carry no ownership tags (imported, never updated) cost one ListTagsForResource
//! each. 500 owned groups: 10 + 5 = 15 calls.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_resourcegroupstagging::Client as TaggingClient;
use aws_sdk_resourcegroupstagging::types::TagFilter;

use super::{CallCounter, classify, string_map};
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result,
};
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// The retention values CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: [i64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

fn check_retention(value: &Value) -> Result<(), String> {
    match value.as_int() {
        Some(days) if RETENTION_DAYS.contains(&days) => Ok(()),
        _ => Err(format!(
            "{} is not a retention CloudWatch Logs accepts; use one of {}",
            value.render(),
            RETENTION_DAYS.map(|d| d.to_string()).join(", ")
        )),
    }
}

/// The `log_group` schema.
pub fn schema() -> Schema {
    Schema {
        kind: "log_group",
        attributes: vec![
            Attribute::required("name", Type::String).force_new(),
            Attribute::optional("retention_days", Type::Int).checked(check_retention),
            Attribute::optional("tags", Type::Map(Box::new(Type::String)))
                .default_value(Value::Map(BTreeMap::new())),
            Attribute::computed("arn", Type::String),
        ],
        replace_order: ReplaceOrder::CreateThenDelete,
        adoptable: true,
        in_flight_grace: std::time::Duration::ZERO,
    }
}

/// The CloudWatch Logs provider.
#[derive(Debug)]
pub struct LogGroups {
    logs: LogsClient,
    tagging: TaggingClient,
    schema: Schema,
}

struct Group {
    arn: String,
    retention: Option<i32>,
}

fn user_tags(tags: &BTreeMap<String, String>) -> Value {
    Value::Map(
        tags.iter()
            .filter(|(key, _)| !key.starts_with("jaam:"))
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect(),
    )
}

fn name_of(attributes: &Attrs) -> Result<&str> {
    attributes
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::new(ErrorKind::Invalid, "log group has no name"))
}

fn common_prefix<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut prefix: Option<&str> = None;
    for name in names {
        prefix = Some(match prefix {
            None => name,
            Some(current) => {
                let shared = current
                    .char_indices()
                    .zip(name.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last();
                shared.map_or("", |((index, c), _)| &current[..index + c.len_utf8()])
            }
        });
    }
    prefix.unwrap_or_default().to_owned()
}

fn name_from_arn(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":log-group:")?;
    Some(rest.strip_suffix(":*").unwrap_or(rest))
}

impl LogGroups {
    /// A provider using `config`; `counter` counts every HTTP attempt (tests).
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        let logs = super::instrumented!(
            aws_sdk_cloudwatchlogs::config::Builder::from(config),
            counter.clone()
        );
        let tagging = super::instrumented!(
            aws_sdk_resourcegroupstagging::config::Builder::from(config),
            counter
        );
        Self {
            logs: LogsClient::from_conf(logs.build()),
            tagging: TaggingClient::from_conf(tagging.build()),
            schema: schema(),
        }
    }

    async fn describe(&self, prefix: &str) -> Result<HashMap<String, Group>> {
        let mut groups = HashMap::new();
        let mut pages = self
            .logs
            .describe_log_groups()
            .set_log_group_name_prefix((!prefix.is_empty()).then(|| prefix.to_owned()))
            .limit(50)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("DescribeLogGroups", e))?;
            for group in page.log_groups() {
                let Some(name) = group.log_group_name() else {
                    continue;
                };
                let arn = group
                    .log_group_arn()
                    .map(str::to_owned)
                    .or_else(|| group.arn().map(|arn| arn.trim_end_matches(":*").to_owned()))
                    .unwrap_or_default();
                groups.insert(
                    name.to_owned(),
                    Group {
                        arn,
                        retention: group.retention_in_days(),
                    },
                );
            }
        }
        Ok(groups)
    }

    /// Tags of every log group owned by `stack`, by ARN, in pages of 100.
    async fn owned_tags(&self, stack: &str) -> Result<HashMap<String, BTreeMap<String, String>>> {
        let mut out = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .tagging
                .get_resources()
                .resource_type_filters("logs")
                .tag_filters(
                    TagFilter::builder()
                        .key(Owner::STACK_TAG)
                        .values(stack)
                        .build(),
                )
                .resources_per_page(100)
                .tags_per_page(500)
                .set_pagination_token(token.take())
                .send()
                .await
                .map_err(|e| classify("GetResources", e))?;
            for mapping in page.resource_tag_mapping_list() {
                let Some(arn) = mapping.resource_arn() else {
                    continue;
                };
                let tags = mapping
                    .tags()
                    .iter()
                    .map(|tag| (tag.key().to_owned(), tag.value().to_owned()))
                    .collect();
                out.insert(arn.trim_end_matches(":*").to_owned(), tags);
            }
            match page.pagination_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn tags_of(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        let answer = self
            .logs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| classify("ListTagsForResource", e))?;
        Ok(answer
            .tags()
            .map(|tags| tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn observed(name: &str, group: &Group, tags: &BTreeMap<String, String>) -> Observed {
        let mut attributes = Attrs::new();
        attributes.insert("name".into(), Value::String(name.to_owned()));
        attributes.insert(
            "retention_days".into(),
            group
                .retention
                .map_or(Value::Null, |days| Value::Int(days.into())),
        );
        attributes.insert("tags".into(), user_tags(tags));
        attributes.insert("arn".into(), Value::String(group.arn.clone()));
        Observed {
            id: name.to_owned(),
            attributes,
            owner: Owner::from_tags(tags),
            due: None,
        }
    }

    async fn set_retention(&self, name: &str, retention: Option<i64>) -> Result<()> {
        match retention {
            Some(days) => {
                let days = i32::try_from(days)
                    .map_err(|_| ProviderError::new(ErrorKind::Invalid, "retention too large"))?;
                self.logs
                    .put_retention_policy()
                    .log_group_name(name)
                    .retention_in_days(days)
                    .send()
                    .await
                    .map_err(|e| classify("PutRetentionPolicy", e))?;
            }
            None => {
                self.logs
                    .delete_retention_policy()
                    .log_group_name(name)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteRetentionPolicy", e))?;
            }
        }
        Ok(())
    }

    async fn find(&self, name: &str) -> Result<Option<Observed>> {
        let groups = self.describe(name).await?;
        let Some(group) = groups.get(name) else {
            return Ok(None);
        };
        let tags = self.tags_of(&group.arn).await?;
        Ok(Some(Self::observed(name, group, &tags)))
    }
}

#[async_trait]
impl Provider for LogGroups {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        let names: Vec<Option<&str>> = targets
            .iter()
            .map(|target| {
                target
                    .id
                    .or_else(|| target.attributes.get("name").and_then(Value::as_str))
            })
            .collect();
        if names.iter().all(Option::is_none) {
            return Ok(vec![None; targets.len()]);
        }
        let prefix = common_prefix(names.iter().flatten().copied());
        let groups = self.describe(&prefix).await?;
        let wanted = names
            .iter()
            .flatten()
            .any(|name| groups.contains_key(*name));
        let mut tags = if wanted {
            self.owned_tags(&context.stack).await?
        } else {
            HashMap::new()
        };
        let mut out = Vec::with_capacity(targets.len());
        for name in names {
            let Some(group) = name.and_then(|name| groups.get(name).map(|group| (name, group)))
            else {
                out.push(None);
                continue;
            };
            let (name, group) = group;
            if !tags.contains_key(&group.arn) {
                // Not owned by this stack (imported, or someone else's): read its tags directly.
                let found = self.tags_of(&group.arn).await?;
                tags.insert(group.arn.clone(), found);
            }
            out.push(Some(Self::observed(name, group, &tags[&group.arn])));
        }
        Ok(out)
    }

    async fn create(
        &self,
        _context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let name = name_of(attributes)?;
        let mut tags: HashMap<String, String> =
            string_map(attributes.get("tags")).into_iter().collect();
        tags.extend(owner.tags());
        match self
            .logs
            .create_log_group()
            .log_group_name(name)
            .set_tags(Some(tags.clone()))
            .send()
            .await
        {
            Ok(_) => {}
            Err(error) => {
                let error = classify("CreateLogGroup", error);
                if error.kind == ErrorKind::AlreadyExists {
                    return Err(ProviderError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "log group `{name}` already exists and is not managed by this stack (import it with `jaam import`)"
                        ),
                    ));
                }
                return Err(error);
            }
        }
        if let Some(days) = attributes.get("retention_days").and_then(Value::as_int) {
            self.set_retention(name, Some(days)).await?;
        }
        // The ARN is the cloud's to assign: read it back (the tags are the ones just written).
        let groups = self.describe(name).await?;
        let group = groups.get(name).ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Transient,
                format!("log group `{name}` not visible after create"),
            )
        })?;
        Ok(Self::observed(name, group, &tags.into_iter().collect()))
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
        let arn = prior
            .get("arn")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if changed.iter().any(|c| c == "retention_days") {
            self.set_retention(id, attributes.get("retention_days").and_then(Value::as_int))
                .await?;
        }
        let mut tags: HashMap<String, String> = HashMap::new();
        if changed.iter().any(|c| c == "tags") {
            let old = string_map(prior.get("tags"));
            let new = string_map(attributes.get("tags"));
            let removed: Vec<String> = old
                .keys()
                .filter(|key| !new.contains_key(*key))
                .cloned()
                .collect();
            if !removed.is_empty() {
                self.logs
                    .untag_resource()
                    .resource_arn(&arn)
                    .set_tag_keys(Some(removed))
                    .send()
                    .await
                    .map_err(|e| classify("UntagResource", e))?;
            }
            tags.extend(new);
        }
        // Always (re)write ownership, so an imported group becomes owned.
        tags.extend(owner.tags());
        self.logs
            .tag_resource()
            .resource_arn(&arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| classify("TagResource", e))?;
        let mut next = attributes.clone();
        next.insert("arn".into(), Value::String(arn));
        Ok(Observed {
            id: id.to_owned(),
            attributes: next,
            owner: None,
            due: None,
        })
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        let deleted = self.logs.delete_log_group().log_group_name(id).send().await;
        super::gone_is_fine("DeleteLogGroup", deleted).map(|_| ())
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        self.find(id).await?.ok_or_else(|| {
            ProviderError::new(
                ErrorKind::NotFound,
                format!("log group `{id}` does not exist"),
            )
        })
    }

    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>> {
        let owned = self.owned_tags(&context.stack).await?;
        Ok(owned
            .into_iter()
            .filter_map(|(arn, tags)| {
                let name = name_from_arn(&arn)?.to_owned();
                let group = Group {
                    arn: arn.clone(),
                    retention: None,
                };
                Some(Self::observed(&name, &group, &tags))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_should_cover_every_name() {
        assert_eq!(
            common_prefix(["/jaam/a/build", "/jaam/b/build"].into_iter()),
            "/jaam/"
        );
        assert_eq!(common_prefix(["/x"].into_iter()), "/x");
        assert_eq!(common_prefix(["a", "b"].into_iter()), "");
    }

    #[test]
    fn retention_check_should_reject_values_cloudwatch_refuses() {
        assert!(check_retention(&Value::Int(14)).is_ok());
        assert!(check_retention(&Value::Int(13)).unwrap_err().contains("14"));
    }

    #[test]
    fn name_should_be_read_from_either_arn_form() {
        assert_eq!(
            name_from_arn("arn:aws:logs:us-east-1:1:log-group:/a/b:*"),
            Some("/a/b")
        );
        assert_eq!(
            name_from_arn("arn:aws:logs:us-east-1:1:log-group:/a/b"),
            Some("/a/b")
        );
    }
}
