//! `iam_role`: an IAM role, and the instance profile of the same name that
//! lets EC2 instances use it.
//!
//! ```yaml
//! iam_role.web:
//!   name: web
//!   managed_policy_arns: [arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore]
//!   inline_policies:
//!     logs:
//!       Version: "2012-10-17"
//!       Statement:
//!         - Effect: Allow
//!           Action: [logs:CreateLogStream, logs:PutLogEvents]
//!           Resource: arn:aws:logs:*:*:log-group:/jaam/sites/blog.example.com:*
//! ```
//!
//! One kind, not two: an instance profile holds exactly one role, and every
//! role jaam makes for instances needs one, so they are created, refreshed and
//! deleted together (`instance_profile: false` makes a role alone).
//!
//! Arguments, and what a change does:
//! - `name` (required), `instance_profile` (default true): **replace**.
//! - `assume_role_policy`: the trust policy as a YAML map (default: EC2 may
//!   assume it); **in place** (UpdateAssumeRolePolicy).
//! - `managed_policy_arns`: **in place** (attach what is new, then detach what
//!   is gone).
//! - `inline_policies`: policy name → document (a YAML map); **in place**
//!   (PutRolePolicy, DeleteRolePolicy).
//! - `tags`: **in place**.
//!
//! Computed: `arn`, `instance_profile_name` (what an instance's
//! `iam_instance_profile` takes), `instance_profile_arn`. The cloud id is the
//! role name.
//!
//! # Ownership, refresh cost, consistency
//! CreateRole writes the ownership tags itself, so a role made by an
//! interrupted apply is found and adopted. One refresh is
//! GetAccountAuthorizationDetails filtered to roles: one paginated call returns
//! every role with its trust policy, attached and inline policies, instance
//! profiles and tags (100 roles: 1 call; the pages hold up to 1,000). IAM is
//! eventually consistent: an instance launched right after its profile was
//! made may be refused for a few seconds (the `instance` kind retries that).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_iam::Client as IamClient;
use aws_sdk_iam::types::{EntityType, RoleDetail, Tag};

use super::{CallCounter, classify, gone_is_fine, string_map};
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result,
};
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// The trust policy that lets EC2 instances assume a role.
pub fn ec2_trust_policy() -> Value {
    Value::from_json(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    }))
}

/// The `iam_role` schema.
pub fn schema() -> Schema {
    Schema {
        kind: "iam_role",
        attributes: vec![
            Attribute::required("name", Type::String).force_new(),
            Attribute::optional("instance_profile", Type::Bool)
                .default_value(true)
                .force_new(),
            Attribute::optional("assume_role_policy", Type::Document)
                .default_value(ec2_trust_policy()),
            Attribute::optional("managed_policy_arns", Type::List(Box::new(Type::String)))
                .default_value(Value::List(Vec::new())),
            Attribute::optional("inline_policies", Type::Map(Box::new(Type::Document)))
                .default_value(Value::Map(BTreeMap::new())),
            Attribute::optional("tags", Type::Map(Box::new(Type::String)))
                .default_value(Value::Map(BTreeMap::new())),
            Attribute::computed("arn", Type::String),
            Attribute::computed("instance_profile_name", Type::String),
            Attribute::computed("instance_profile_arn", Type::String),
        ],
        // A role's name is unique: the old one goes first.
        replace_order: ReplaceOrder::DeleteThenCreate,
        adoptable: true,
        in_flight_grace: std::time::Duration::ZERO,
    }
}

/// Decodes the URL-encoded JSON IAM returns policy documents as.
fn decode_document(text: &str) -> Value {
    let mut bytes = Vec::with_capacity(text.len());
    let raw = text.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let Some(byte) = raw
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            bytes.push(byte);
            i += 3;
            continue;
        }
        bytes.push(raw[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&bytes);
    serde_json::from_str(&decoded)
        .or_else(|_| serde_json::from_str(text))
        .map_or_else(|_| Value::String(text.to_owned()), Value::from_json)
}

fn document_json(value: Option<&Value>) -> String {
    value.map_or_else(|| "{}".to_owned(), |v| v.to_json().to_string())
}

fn tags_of(role: &RoleDetail) -> BTreeMap<String, String> {
    role.tags()
        .iter()
        .map(|tag| (tag.key().to_owned(), tag.value().to_owned()))
        .collect()
}

fn observe(role: &RoleDetail) -> Observed {
    let tags = tags_of(role);
    let name = role.role_name().unwrap_or_default().to_owned();
    let profile = role
        .instance_profile_list()
        .iter()
        .find(|p| p.instance_profile_name() == name);
    let mut attributes = Attrs::new();
    attributes.insert("name".into(), Value::String(name.clone()));
    attributes.insert("instance_profile".into(), Value::Bool(profile.is_some()));
    attributes.insert(
        "assume_role_policy".into(),
        role.assume_role_policy_document()
            .map_or(Value::Null, decode_document),
    );
    let mut arns: Vec<Value> = role
        .attached_managed_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .map(Value::from)
        .collect();
    arns.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    attributes.insert("managed_policy_arns".into(), Value::List(arns));
    attributes.insert(
        "inline_policies".into(),
        Value::Map(
            role.role_policy_list()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.policy_name()?.to_owned(),
                        decode_document(p.policy_document()?),
                    ))
                })
                .collect(),
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
    attributes.insert("arn".into(), role.arn().map_or(Value::Null, Value::from));
    attributes.insert(
        "instance_profile_name".into(),
        profile.map_or(Value::Null, |p| Value::from(p.instance_profile_name())),
    );
    attributes.insert(
        "instance_profile_arn".into(),
        profile.map_or(Value::Null, |p| Value::from(p.arn())),
    );
    Observed {
        id: name,
        attributes,
        owner: Owner::from_tags(&tags),
        due: None,
    }
}

/// The IAM role provider.
#[derive(Debug)]
pub struct Roles {
    iam: IamClient,
    schema: Schema,
}

fn sorted_arns(value: Option<&Value>) -> Vec<String> {
    let mut arns = crate::value::string_list(value);
    arns.sort();
    arns
}

fn policies(value: Option<&Value>) -> BTreeMap<String, Value> {
    match value {
        Some(Value::Map(map)) => map.clone(),
        _ => BTreeMap::new(),
    }
}

impl Roles {
    /// A provider using `config`, counting calls with `counter` when given.
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        let builder = super::instrumented!(aws_sdk_iam::config::Builder::from(config), counter);
        Self {
            iam: IamClient::from_conf(builder.build()),
            schema: schema(),
        }
    }

    /// Every role in the account, with its policies, profiles and tags.
    async fn all(&self) -> Result<Vec<RoleDetail>> {
        let mut out = Vec::new();
        let mut pages = self
            .iam
            .get_account_authorization_details()
            .filter(EntityType::Role)
            .max_items(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("GetAccountAuthorizationDetails", e))?;
            out.extend(page.role_detail_list().iter().cloned());
        }
        Ok(out)
    }

    async fn one(&self, name: &str) -> Result<Observed> {
        self.all()
            .await?
            .iter()
            .find(|role| role.role_name() == Some(name))
            .map(observe)
            .ok_or_else(|| {
                ProviderError::new(ErrorKind::NotFound, format!("role `{name}` not found"))
            })
    }

    /// Makes the policies of role `name` what `attributes` say, from `prior`.
    async fn converge(&self, name: &str, prior: &Attrs, attributes: &Attrs) -> Result<()> {
        let (old, new) = (
            sorted_arns(prior.get("managed_policy_arns")),
            sorted_arns(attributes.get("managed_policy_arns")),
        );
        for arn in new.iter().filter(|arn| !old.contains(arn)) {
            self.iam
                .attach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map_err(|e| classify("AttachRolePolicy", e))?;
        }
        for arn in old.iter().filter(|arn| !new.contains(arn)) {
            let detached = self
                .iam
                .detach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await;
            gone_is_fine("DetachRolePolicy", detached)?;
        }
        let (old, new) = (
            policies(prior.get("inline_policies")),
            policies(attributes.get("inline_policies")),
        );
        for (policy, document) in &new {
            if old.get(policy) != Some(document) {
                self.iam
                    .put_role_policy()
                    .role_name(name)
                    .policy_name(policy)
                    .policy_document(document.to_json().to_string())
                    .send()
                    .await
                    .map_err(|e| classify("PutRolePolicy", e))?;
            }
        }
        for policy in old.keys().filter(|policy| !new.contains_key(*policy)) {
            let deleted = self
                .iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await;
            gone_is_fine("DeleteRolePolicy", deleted)?;
        }
        Ok(())
    }

    fn tags(attributes: &Attrs, owner: &Owner) -> Vec<Tag> {
        string_map(attributes.get("tags"))
            .into_iter()
            .chain(owner.tags())
            .filter_map(|(key, value)| Tag::builder().key(key).value(value).build().ok())
            .collect()
    }
}

#[async_trait]
impl Provider for Roles {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        let all = self.all().await?;
        Ok(targets
            .iter()
            .map(|target| {
                let role = match target.id {
                    Some(id) => all.iter().find(|r| r.role_name() == Some(id)),
                    None => {
                        let addr = target.addr.to_string();
                        all.iter().find(|r| {
                            let tags = tags_of(r);
                            tags.get(Owner::ADDRESS_TAG) == Some(&addr)
                                && tags.get(Owner::STACK_TAG) == Some(&context.stack)
                        })
                    }
                };
                role.map(observe)
            })
            .collect())
    }

    async fn create(
        &self,
        _context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let name = super::text_arg(attributes, "name").to_owned();
        self.iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(document_json(attributes.get("assume_role_policy")))
            .set_tags(Some(Self::tags(attributes, owner)))
            .send()
            .await
            .map_err(|e| classify("CreateRole", e))?;
        let rest = async {
            self.converge(&name, &Attrs::new(), attributes).await?;
            if attributes.get("instance_profile") != Some(&Value::Bool(false)) {
                self.iam
                    .create_instance_profile()
                    .instance_profile_name(&name)
                    .set_tags(Some(Self::tags(attributes, owner)))
                    .send()
                    .await
                    .map_err(|e| classify("CreateInstanceProfile", e))?;
                self.iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(&name)
                    .role_name(&name)
                    .send()
                    .await
                    .map_err(|e| classify("AddRoleToInstanceProfile", e))?;
            }
            Ok::<_, ProviderError>(())
        };
        // The role exists whatever the rest does: a failure here is recorded.
        if let Err(error) = rest.await {
            return Err(match self.one(&name).await {
                Ok(partial) => error.with_partial(partial),
                Err(_) => error,
            });
        }
        self.one(&name).await
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
        if changed.iter().any(|c| c == "assume_role_policy") {
            self.iam
                .update_assume_role_policy()
                .role_name(id)
                .policy_document(document_json(attributes.get("assume_role_policy")))
                .send()
                .await
                .map_err(|e| classify("UpdateAssumeRolePolicy", e))?;
        }
        self.converge(id, prior, attributes).await?;
        let old = string_map(prior.get("tags"));
        let new = string_map(attributes.get("tags"));
        let removed: Vec<String> = old
            .keys()
            .filter(|key| !new.contains_key(*key))
            .cloned()
            .collect();
        if !removed.is_empty() {
            self.iam
                .untag_role()
                .role_name(id)
                .set_tag_keys(Some(removed))
                .send()
                .await
                .map_err(|e| classify("UntagRole", e))?;
        }
        self.iam
            .tag_role()
            .role_name(id)
            .set_tags(Some(Self::tags(attributes, owner)))
            .send()
            .await
            .map_err(|e| classify("TagRole", e))?;
        self.one(id).await
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        let current = match self.one(id).await {
            Ok(current) => current.attributes,
            Err(error) if error.kind == ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        if let Some(profile) = current.get("instance_profile_name").and_then(Value::as_str) {
            let _ = self
                .iam
                .remove_role_from_instance_profile()
                .instance_profile_name(profile)
                .role_name(id)
                .send()
                .await;
            let deleted = self
                .iam
                .delete_instance_profile()
                .instance_profile_name(profile)
                .send()
                .await;
            gone_is_fine("DeleteInstanceProfile", deleted)?;
        }
        let empty = Attrs::from([
            ("managed_policy_arns".to_owned(), Value::List(Vec::new())),
            ("inline_policies".to_owned(), Value::Map(BTreeMap::new())),
        ]);
        self.converge(id, &current, &empty).await?;
        let deleted = self.iam.delete_role().role_name(id).send().await;
        gone_is_fine("DeleteRole", deleted).map(|_| ())
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        self.one(id).await
    }

    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>> {
        Ok(self
            .all()
            .await?
            .iter()
            .filter(|role| tags_of(role).get(Owner::STACK_TAG) == Some(&context.stack))
            .map(observe)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_should_be_read_url_encoded_or_plain() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            super::decode_document(plain),
            super::decode_document(encoded)
        );
        assert_eq!(
            super::decode_document(encoded).to_json()["Version"],
            "2012-10-17"
        );
    }
}
