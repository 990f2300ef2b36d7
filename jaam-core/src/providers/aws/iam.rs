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
//! In a policy document, `{{jaam:stack}}` stands for the stack's name
//! (resolved at plan time), so a role can name its own stack's parameters
//! (`arn:aws:ssm:*:*:parameter/jaam/{{jaam:stack}}/…`): a site's role does.
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
//! profiles and tags (100 roles: 1 call; the pages hold up to 1,000). A create
//! or update records what it wrote instead of reading the account again; a
//! delete reads only that role's attachments (IAM refuses to delete a role
//! with anything attached). IAM is
//! eventually consistent: an instance launched right after its profile was
//! made may be refused for a few seconds (the `instance` kind retries that).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_iam::Client as IamClient;
use aws_sdk_iam::types::{EntityType, RoleDetail, Tag};

use super::{CallCounter, classify, gone_is_fine, string_map};
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result, Rewrite,
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

pub use crate::spec::STACK_MARKER;

/// `value` with every [`STACK_MARKER`] in its strings replaced by `stack`;
/// `None` when it has none.
fn with_stack(value: &Value, stack: &str) -> Option<Value> {
    match value {
        Value::String(text) if text.contains(STACK_MARKER) => {
            Some(Value::String(text.replace(STACK_MARKER, stack)))
        }
        Value::List(items) => {
            let replaced: Vec<Option<Value>> = items.iter().map(|v| with_stack(v, stack)).collect();
            replaced.iter().any(Option::is_some).then(|| {
                Value::List(
                    replaced
                        .into_iter()
                        .zip(items)
                        .map(|(new, old)| new.unwrap_or_else(|| old.clone()))
                        .collect(),
                )
            })
        }
        Value::Map(entries) => {
            let mut changed = false;
            let map = entries
                .iter()
                .map(|(key, v)| {
                    let new = with_stack(v, stack);
                    changed |= new.is_some();
                    (key.clone(), new.unwrap_or_else(|| v.clone()))
                })
                .collect();
            changed.then_some(Value::Map(map))
        }
        _ => None,
    }
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

/// Decodes the URL-encoded JSON IAM returns policy documents as (plain JSON
/// is read as it is).
fn decode_document(text: &str) -> Value {
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
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

fn observe(role: &RoleDetail, known: &Attrs) -> Observed {
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
    let arns: Vec<String> = role
        .attached_managed_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .map(str::to_owned)
        .collect();
    let arns = super::in_written_order(
        arns,
        &crate::value::string_list(known.get("managed_policy_arns")),
    );
    attributes.insert(
        "managed_policy_arns".into(),
        Value::List(arns.into_iter().map(Value::String).collect()),
    );
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

/// What a create or update wrote, as state records it: no read back (a
/// read would list every role of the account).
fn written(
    name: &str,
    arn: Value,
    profile: Option<(Value, Value)>,
    attributes: &Attrs,
    owner: &Owner,
) -> Observed {
    let mut recorded = Attrs::new();
    for argument in [
        "name",
        "instance_profile",
        "assume_role_policy",
        "managed_policy_arns",
        "inline_policies",
        "tags",
    ] {
        recorded.insert(
            argument.to_owned(),
            attributes.get(argument).cloned().unwrap_or(Value::Null),
        );
    }
    recorded.insert("instance_profile".into(), Value::Bool(profile.is_some()));
    recorded.insert("arn".into(), arn);
    let (profile_name, profile_arn) = profile.unwrap_or((Value::Null, Value::Null));
    recorded.insert("instance_profile_name".into(), profile_name);
    recorded.insert("instance_profile_arn".into(), profile_arn);
    Observed {
        id: name.to_owned(),
        attributes: recorded,
        owner: Some(owner.clone()),
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

    /// What is attached to role `name` (managed policy ARNs, inline policy
    /// names, instance profiles), read with the role's own listings; `None`
    /// when the role is gone.
    async fn attachments(&self, name: &str) -> Result<Option<(Attrs, Vec<String>)>> {
        let mut arns = Vec::new();
        let mut pages = self
            .iam
            .list_attached_role_policies()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => arns.extend(
                    page.attached_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(Value::from)),
                ),
                Err(error) => {
                    let error = classify("ListAttachedRolePolicies", error);
                    return if error.kind == ErrorKind::NotFound {
                        Ok(None)
                    } else {
                        Err(error)
                    };
                }
            }
        }
        let mut inline = BTreeMap::new();
        let mut pages = self
            .iam
            .list_role_policies()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("ListRolePolicies", e))?;
            inline.extend(
                page.policy_names()
                    .iter()
                    .map(|policy| (policy.clone(), Value::Null)),
            );
        }
        let mut profiles = Vec::new();
        let mut pages = self
            .iam
            .list_instance_profiles_for_role()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("ListInstanceProfilesForRole", e))?;
            profiles.extend(
                page.instance_profiles()
                    .iter()
                    .map(|p| p.instance_profile_name().to_owned()),
            );
        }
        let attached = Attrs::from([
            ("managed_policy_arns".to_owned(), Value::List(arns)),
            ("inline_policies".to_owned(), Value::Map(inline)),
        ]);
        Ok(Some((attached, profiles)))
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

    fn prepares(&self) -> bool {
        true
    }

    /// `{{jaam:stack}}` in a policy document is the stack's name.
    async fn prepare(&self, context: &Context, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        let mut rewrites = Vec::new();
        for attrs in desired {
            for name in ["inline_policies", "assume_role_policy"] {
                if let Some(value) = attrs.get(name)
                    && let Some(to) = with_stack(value, &context.stack)
                    && !rewrites
                        .iter()
                        .any(|r: &Rewrite| r.attribute == name && r.from == *value)
                {
                    rewrites.push(Rewrite {
                        attribute: name.to_owned(),
                        from: value.clone(),
                        to,
                        keep: false,
                        unresolved: None,
                    });
                }
            }
        }
        Ok(rewrites)
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
                role.map(|role| observe(role, target.attributes))
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
        let created = self
            .iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(document_json(attributes.get("assume_role_policy")))
            .set_tags(Some(Self::tags(attributes, owner)))
            .send()
            .await
            .map_err(|e| classify("CreateRole", e))?;
        let arn = created
            .role()
            .map_or(Value::Null, |role| Value::from(role.arn()));
        let rest = async {
            self.converge(&name, &Attrs::new(), attributes).await?;
            if attributes.get("instance_profile") == Some(&Value::Bool(false)) {
                return Ok::<_, ProviderError>(None);
            }
            let profile = self
                .iam
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
            Ok(Some((
                Value::from(name.as_str()),
                profile
                    .instance_profile()
                    .map_or(Value::Null, |p| Value::from(p.arn())),
            )))
        };
        match rest.await {
            Ok(profile) => Ok(written(&name, arn, profile, attributes, owner)),
            // The role exists whatever the rest did: it is recorded (with no
            // policies or profile claimed; the next refresh reads them).
            Err(error) => {
                let bare = Attrs::from([("name".to_owned(), Value::from(name.as_str()))]);
                Err(error.with_partial(written(&name, arn, None, &bare, owner)))
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
        let profile = prior
            .get("instance_profile_name")
            .filter(|v| !v.is_null())
            .map(|name| {
                (
                    name.clone(),
                    prior
                        .get("instance_profile_arn")
                        .cloned()
                        .unwrap_or(Value::Null),
                )
            });
        let arn = prior.get("arn").cloned().unwrap_or(Value::Null);
        Ok(written(id, arn, profile, attributes, owner))
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        // IAM deletes a role only once nothing is attached: read what is,
        // from the role's own listings (state may be stale).
        let Some((current, profiles)) = self.attachments(id).await? else {
            return Ok(());
        };
        for profile in &profiles {
            let removed = self
                .iam
                .remove_role_from_instance_profile()
                .instance_profile_name(profile)
                .role_name(id)
                .send()
                .await;
            gone_is_fine("RemoveRoleFromInstanceProfile", removed)?;
            // Its own profile goes with it; another one (made elsewhere) stays.
            if profile == id {
                let deleted = self
                    .iam
                    .delete_instance_profile()
                    .instance_profile_name(profile)
                    .send()
                    .await;
                gone_is_fine("DeleteInstanceProfile", deleted)?;
            }
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
        self.all()
            .await?
            .iter()
            .find(|role| role.role_name() == Some(id))
            .map(|role| observe(role, &Attrs::new()))
            .ok_or_else(|| {
                ProviderError::new(ErrorKind::NotFound, format!("role `{id}` not found"))
            })
    }

    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>> {
        Ok(self
            .all()
            .await?
            .iter()
            .filter(|role| tags_of(role).get(Owner::STACK_TAG) == Some(&context.stack))
            .map(|role| observe(role, &Attrs::new()))
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
