//! `instance`: an EC2 instance.
//!
//! Arguments, and what a change does:
//! - `ami` (required): an image id, or an SSM public parameter path such as
//!   `/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`,
//!   resolved to an image id at plan time (one batched GetParameters per plan).
//!   Another image written in the spec **replaces**; the parameter moving to a
//!   newer AMI is only a plan note (`--replace` forces the replacement).
//! - `instance_type` (required): **in place** by stop → modify → start. The
//!   start gives a new public IP: such a plan shows `public_ip` and
//!   `public_dns` as `(known after apply)`, so dependents (a site's record)
//!   follow in the same apply.
//! - `subnet_id` (optional; AWS picks when unset): **replaces**.
//! - `security_group_ids` (optional; AWS picks when unset): **in place**.
//! - `key_name`, `iam_instance_profile` (by name), `user_data`, `root_volume_gb`
//!   (AWS's default when unset): **replace**. With
//!   `user_data_replace_on_change: false` (Terraform's argument of that
//!   name; a `site` sets it, its user data only bootstraps) an existing
//!   instance keeps the user data it booted with: a new one is a plan note,
//!   and `--replace` takes it.
//! - `tags`: **in place**.
//! - `revision` (optional): a git commit id (hexadecimal) the instance should serve. At create
//!   (once running) and whenever it changes, **in place**, apply runs
//!   `deploy_command REVISION` (default `/opt/jaam/bin/deploy`, which a
//!   `site`'s user data installs) over SSM Run Command and waits for it; a
//!   failed deploy fails the apply with the tail of its output (the build log)
//!   and leaves the recorded revision as it was. The command first waits for
//!   the boot script ([`boot_wait`]: `cloud-init status --wait`), so the first
//!   deploy never races the user data that installs the deploy command, and a
//!   failed boot script fails it with cloud-init's errors. An instance without
//!   `iam_instance_profile` fails the deploy at once (the SSM agent cannot
//!   register without one); one that does not register in time fails naming
//!   its profile. A revision written as
//!   `github:owner/repo@branch` is resolved to the branch head at plan time
//!   (through the resolver given with [`Instances::with_heads`]), so a plan
//!   shows the commit it will deploy.
//! - `previews` (optional): the pull request previews the instance serves
//!   beside its revision, as a site writes it — which repository's open pull
//!   requests into which branch, how many at most, whether forks and secrets
//!   are allowed ([`crate::spec::site::PreviewSource`]) — resolved at plan
//!   time, like a branch head, to the previews themselves: pull request
//!   number → `{head: COMMIT, secrets: BOOL, url}`, the newest `max` open pull
//!   requests (forks dropped unless allowed, and never given secrets),
//!   listed through the resolver given with [`Instances::with_pulls`]. So a
//!   plan shows each preview that opens, moves or closes as a change of
//!   this argument, and state records exactly the previews that serve.
//!   **In place**: after the revision's deploy, in the same SSM command,
//!   `deploy_command previews N=COMMIT[+secrets]...` serves exactly those
//!   and removes the others; its report says which serve. A preview that
//!   fails to build fails the apply naming it, and state records the
//!   previews that do serve (so the next apply tries the failed one again).
//!   A listing that fails keeps the recorded previews, and a new instance
//!   starts with none (a plan note either way): production never waits on
//!   the listing (a token without "Pull requests: read", an outage).
//! - `deploy_command`: **in place**, used by the next deploy.
//! - `files` (absolute path → content) and `files_command` (run after they
//!   changed): written on the running instance over SSM, **in place**, in
//!   the same command as the deploy and before it (see [`super::files`]);
//!   a change of either also runs the deploy command for the recorded
//!   revision, which decides whether that needs a new release (a `site`'s
//!   does when its env file changed). Like `user_data`, kept as recorded by
//!   refresh.
//!
//! Computed: `id`, `public_ip`, `private_ip`, `public_dns`, `state`.
//!
//! # Crash safety
//! RunInstances writes the ownership tags (`jaam:stack`, `jaam:address`,
//! `jaam:intent`) in the same call through TagSpecifications and passes the
//! journal intent as ClientToken. Real AWS deduplicates on the token; moto does
//! not, so the guarantee rests on the tags: after a crash, refresh finds the
//! instance by `jaam:address` and the engine adopts it (the kind is adoptable).
//!
//! # Refresh cost
//! One paginated DescribeInstances filtered on `tag:jaam:stack` (1,000 per page)
//! covers every instance jaam created for the stack; recorded instances without
//! the tag (imported) cost one more DescribeInstances by id for all of them.
//! DescribeInstances does not return user data or volume sizes: those are kept
//! as recorded, so a change to them made outside jaam is not seen as drift.
//! Instances still `pending` are waited for (backoff, deadline) so a refresh
//! never records a half-started instance.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::Client as Ec2Client;
use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification,
    Instance, InstanceStateName, InstanceType, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ssm::Client as SsmClient;

use super::{CallCounter, classify, string_map, waited};
use crate::backoff::{self, Backoff};
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result, Rewrite,
};
use crate::schema::{Attribute, Mode, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// How long an instance may take to reach a state (real AWS: ~30 s to run).
const WAIT: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(10),
    deadline: Duration::from_secs(900),
};

/// Where a `site`'s user data installs its deploy script.
pub const DEPLOY_COMMAND: &str = "/opt/jaam/bin/deploy";

/// The most user data EC2 takes, in bytes before base64 (moto takes more).
pub const MAX_USER_DATA: usize = 16_384;

/// User data within EC2's limit.
pub fn check_user_data(value: &Value) -> std::result::Result<(), String> {
    match value.as_str() {
        Some(text) if text.len() > MAX_USER_DATA => Err(format!(
            "user data is {} bytes; EC2 accepts at most {MAX_USER_DATA} (before base64)",
            text.len()
        )),
        _ => Ok(()),
    }
}

/// The prefix of a revision to resolve to a branch head at plan time.
pub use crate::spec::site::BRANCH_HEAD;

/// Resolves `(owner/repo, branch)` to the branch's head commit.
pub type HeadResolver = std::sync::Arc<
    dyn Fn(String, String) -> futures::future::BoxFuture<'static, Result<String>> + Send + Sync,
>;

/// One open pull request, as [`PullsResolver`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    /// Its number.
    pub number: u64,
    /// Its head commit.
    pub head: String,
    /// Whether its head is in another repository (a fork).
    pub fork: bool,
}

/// Lists the open pull requests of `(owner/repo, base branch)`.
pub type PullsResolver = std::sync::Arc<
    dyn Fn(String, String) -> futures::future::BoxFuture<'static, Result<Vec<Pull>>> + Send + Sync,
>;

/// One preview as state records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The pull request's head commit.
    pub head: String,
    /// Whether it reads the site's secrets.
    pub secrets: bool,
    /// Where it serves.
    pub url: String,
}

impl Preview {
    fn to_value(&self) -> Value {
        Value::Map(BTreeMap::from([
            ("head".to_owned(), Value::String(self.head.clone())),
            ("secrets".to_owned(), Value::Bool(self.secrets)),
            ("url".to_owned(), Value::String(self.url.clone())),
        ]))
    }
}

/// The previews `source` asks for among `open`: the newest `max` pull
/// requests (by number), forks only when allowed and then never with
/// secrets; as the `previews` value state records.
pub fn wanted_previews(source: &crate::spec::site::PreviewSource, open: &[Pull]) -> Value {
    let mut pulls: Vec<&Pull> = open
        .iter()
        .filter(|pull| source.forks || !pull.fork)
        .filter(|pull| crate::spec::site::checks::is_commit(&pull.head))
        .collect();
    pulls.sort_by_key(|pull| std::cmp::Reverse(pull.number));
    pulls.truncate(usize::try_from(source.max.max(0)).unwrap_or(0));
    Value::Map(
        pulls
            .into_iter()
            .map(|pull| {
                let preview = Preview {
                    head: pull.head.clone(),
                    secrets: source.secrets && !pull.fork,
                    url: source.url.replace("{number}", &pull.number.to_string()),
                };
                (pull.number.to_string(), preview.to_value())
            })
            .collect(),
    )
}

/// The previews a resolved `previews` value holds, by pull request number.
pub fn previews_of(value: Option<&Value>) -> BTreeMap<u64, Preview> {
    let Some(Value::Map(map)) = value else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(number, preview)| {
            let number = number.parse().ok()?;
            let Value::Map(preview) = preview else {
                return None;
            };
            let text = |name: &str| preview.get(name).and_then(Value::as_str).map(str::to_owned);
            Some((
                number,
                Preview {
                    head: text("head")?,
                    secrets: preview.get("secrets") == Some(&Value::Bool(true)),
                    url: text("url").unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// A converge that failed.
struct Unconverged {
    error: ProviderError,
    /// What the previews step reported serving, when it ran (the revision
    /// deployed before it; a preview failed).
    serving: Option<Value>,
}

impl From<ProviderError> for Unconverged {
    fn from(error: ProviderError) -> Self {
        Self {
            error,
            serving: None,
        }
    }
}

/// `observed` after a converge that came out as `converged`: the previews
/// that serve recorded. A previews step that failed after the revision
/// deployed is a failure with `observed` as its partial outcome (state
/// records the revision and the previews that serve); any other failure
/// is the error alone.
fn settle(
    converged: std::result::Result<Option<Value>, Unconverged>,
    mut observed: Observed,
) -> Result<Observed> {
    match converged {
        Ok(serving) => {
            if let Some(serving) = serving {
                observed.attributes.insert("previews".into(), serving);
            }
            Ok(observed)
        }
        Err(Unconverged {
            error,
            serving: Some(serving),
        }) => {
            observed.attributes.insert("previews".into(), serving);
            Err(error.with_partial(observed))
        }
        Err(Unconverged { error, .. }) => Err(error),
    }
}

/// A converge that failed before its previews step (the revision's deploy,
/// the files) as the error it is, at once (`Err`); anything else to
/// [`settle`] once the instance is read (`Ok`).
#[allow(clippy::type_complexity)]
fn failed_deploy(
    converged: std::result::Result<Option<Value>, Unconverged>,
) -> Result<std::result::Result<Option<Value>, Unconverged>> {
    match converged {
        Err(Unconverged {
            error,
            serving: None,
        }) => Err(error),
        other => Ok(other),
    }
}

/// The previews the deploy script's report says serve (`MARK N serving
/// SHA` lines), as `wanted` has them (a preview still serving an older
/// commit reads no secrets as far as state knows).
fn serving_previews(report: &str, mark: &str, wanted: &BTreeMap<u64, Preview>) -> Value {
    Value::Map(
        report
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == mark).then_some(())?;
                let number: u64 = words.next()?.parse().ok()?;
                (words.next()? == "serving").then_some(())?;
                let head = words.next()?.to_owned();
                let known = wanted.get(&number);
                let preview = Preview {
                    secrets: known.is_some_and(|w| w.head == head && w.secrets),
                    url: known.map(|w| w.url.clone()).unwrap_or_default(),
                    head,
                };
                Some((number.to_string(), preview.to_value()))
            })
            .collect(),
    )
}

/// Splits `github:owner/repo@branch`.
pub fn parse_branch_head(revision: &str) -> Option<(&str, &str)> {
    revision.strip_prefix(BRANCH_HEAD)?.split_once('@')
}

/// The tags an EC2 resource carries: the user's, then jaam's ownership tags.
pub(crate) fn ec2_tags(attributes: &Attrs, owner: &Owner) -> Vec<Tag> {
    string_map(attributes.get("tags"))
        .into_iter()
        .chain(owner.tags())
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect()
}

/// Rewrites EC2 resource `id`'s tags: drops the user tags no longer wanted
/// (when `tags` is among `changed`), then writes the user's and the ownership
/// tags (so an imported resource becomes owned at its first update).
pub(crate) async fn retag(
    ec2: &Ec2Client,
    id: &str,
    owner: &Owner,
    prior: &Attrs,
    attributes: &Attrs,
    changed: &[String],
) -> Result<()> {
    if changed.iter().any(|c| c == "tags") {
        let new = string_map(attributes.get("tags"));
        let removed: Vec<Tag> = string_map(prior.get("tags"))
            .keys()
            .filter(|key| !new.contains_key(*key))
            .map(|key| Tag::builder().key(key).build())
            .collect();
        if !removed.is_empty() {
            ec2.delete_tags()
                .resources(id)
                .set_tags(Some(removed))
                .send()
                .await
                .map_err(|e| classify("DeleteTags", e))?;
        }
    }
    ec2.create_tags()
        .resources(id)
        .set_tags(Some(ec2_tags(attributes, owner)))
        .send()
        .await
        .map_err(|e| classify("CreateTags", e))?;
    Ok(())
}

/// How long a launch waits for a new instance profile to become usable.
const PROFILE_PROPAGATION: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(5),
    deadline: Duration::from_secs(60),
};

/// How long a deploy waits for the instance's boot script (user data).
pub const BOOT_SCRIPT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(900);

/// The lines a deploy runs first: wait until cloud-init has run the user data
/// (which installs the deploy command), and fail with its errors and the end
/// of its output when it failed or did not finish in
/// [`BOOT_SCRIPT_DEADLINE`]. Exit status 2 is cloud-init's "degraded" (23.4
/// and later: recoverable warnings, the boot script ran), not a failure.
/// Without cloud-init (an image that has none) there is nothing to wait for.
pub fn boot_wait() -> Vec<String> {
    let seconds = BOOT_SCRIPT_DEADLINE.as_secs();
    vec![
        "if command -v cloud-init >/dev/null 2>&1; then".to_owned(),
        format!("  timeout {seconds} cloud-init status --wait >/dev/null 2>&1; jaam_boot=$?"),
        "  if [ \"$jaam_boot\" -ne 0 ] && [ \"$jaam_boot\" -ne 2 ]; then".to_owned(),
        format!(
            "    if [ \"$jaam_boot\" -eq 124 ]; then echo \"jaam: the instance's boot script (user data) did not finish in {seconds}s\" >&2; \
             else echo \"jaam: the instance's boot script (user data) failed:\" >&2; cloud-init status --long >&2 || true; fi"
        ),
        "    echo '--- the end of /var/log/cloud-init-output.log:' >&2".to_owned(),
        "    tail -n 25 /var/log/cloud-init-output.log | cut -c 1-200 >&2 || true".to_owned(),
        "    exit 1".to_owned(),
        "  fi".to_owned(),
        "fi".to_owned(),
    ]
}

/// The `instance` schema.
pub fn schema() -> Schema {
    let string_list = || Type::List(Box::new(Type::String));
    Schema {
        kind: "instance",
        attributes: vec![
            Attribute::required("ami", Type::String).force_new(),
            Attribute::required("instance_type", Type::String),
            Attribute {
                mode: Mode::OptionalComputed,
                ..Attribute::optional("subnet_id", Type::String).force_new()
            },
            Attribute {
                mode: Mode::OptionalComputed,
                ..Attribute::optional("security_group_ids", string_list())
            },
            Attribute::optional("key_name", Type::String).force_new(),
            Attribute::optional("iam_instance_profile", Type::String).force_new(),
            Attribute::optional("user_data", Type::String)
                .force_new()
                .checked(check_user_data),
            Attribute::optional("user_data_replace_on_change", Type::Bool).default_value(true),
            Attribute {
                mode: Mode::OptionalComputed,
                ..Attribute::optional("root_volume_gb", Type::Int).force_new()
            },
            Attribute::optional("tags", Type::Map(Box::new(Type::String)))
                .default_value(Value::Map(BTreeMap::new())),
            Attribute::optional("revision", Type::String),
            Attribute::optional("previews", Type::Document),
            Attribute::optional("deploy_command", Type::String).default_value(DEPLOY_COMMAND),
            Attribute::optional("files", Type::Map(Box::new(Type::String)))
                .checked(super::files::check),
            Attribute::optional("files_command", Type::String),
            Attribute::computed("id", Type::String),
            // A stop/start (an `instance_type` change) gives a new public IP.
            Attribute::computed("public_ip", Type::String).changes_with(&["instance_type"]),
            Attribute::computed("private_ip", Type::String),
            Attribute::computed("public_dns", Type::String).changes_with(&["instance_type"]),
            Attribute::computed("state", Type::String),
        ],
        // The new instance serves (and its record follows it) before the old one goes.
        replace_order: ReplaceOrder::CreateThenDelete,
        adoptable: true,
        // RunInstances is not idempotent on a new client token: wait out a
        // launch the crashed run may still have in flight.
        in_flight_grace: Duration::from_secs(10),
    }
}

/// The arguments an SSM command on the instance brings about (no EC2 call).
const CONVERGED: [&str; 5] = [
    "revision",
    "previews",
    "deploy_command",
    "files",
    "files_command",
];

/// The EC2 provider. Clones share its clients and what it remembers.
#[derive(Clone)]
pub struct Instances {
    ec2: Ec2Client,
    ssm: SsmClient,
    schema: Schema,
    heads: Option<HeadResolver>,
    pulls: Option<PullsResolver>,
    /// The images behind AMI parameters, once read (see [`super::REMEMBER`]).
    amis: super::Remembered,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").finish_non_exhaustive()
    }
}

fn text(attributes: &Attrs, name: &str) -> Option<String> {
    attributes
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn tags_of(instance: &Instance) -> BTreeMap<String, String> {
    instance
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
        .collect()
}

fn is_gone(instance: &Instance) -> bool {
    matches!(
        instance.state().and_then(|state| state.name()),
        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
    )
}

fn state_name(instance: &Instance) -> &str {
    instance
        .state()
        .and_then(|state| state.name())
        .map_or("unknown", InstanceStateName::as_str)
}

fn optional(value: Option<&str>) -> Value {
    value
        .filter(|text| !text.is_empty())
        .map_or(Value::Null, |text| Value::String(text.to_owned()))
}

/// What the cloud reports, plus what DescribeInstances cannot (`user_data`,
/// `root_volume_gb`), taken from `known`.
fn observe(instance: &Instance, known: &Attrs) -> Observed {
    let tags = tags_of(instance);
    let mut groups: Vec<Value> = instance
        .security_groups()
        .iter()
        .filter_map(|group| group.group_id())
        .map(Value::from)
        .collect();
    groups.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    let profile = instance
        .iam_instance_profile()
        .and_then(|profile| profile.arn())
        .and_then(|arn| arn.rsplit('/').next())
        .map(str::to_owned);
    let id = instance.instance_id().unwrap_or_default().to_owned();
    let mut attributes = Attrs::new();
    attributes.insert("ami".into(), optional(instance.image_id()));
    attributes.insert(
        "instance_type".into(),
        optional(instance.instance_type().map(InstanceType::as_str)),
    );
    attributes.insert("subnet_id".into(), optional(instance.subnet_id()));
    attributes.insert("security_group_ids".into(), Value::List(groups));
    attributes.insert("key_name".into(), optional(instance.key_name()));
    attributes.insert(
        "iam_instance_profile".into(),
        profile.map_or(Value::Null, Value::String),
    );
    attributes.insert(
        "user_data".into(),
        known.get("user_data").cloned().unwrap_or(Value::Null),
    );
    // Neither can be read from EC2: kept as recorded.
    for name in [
        "root_volume_gb",
        "user_data_replace_on_change",
        "revision",
        "previews",
        "deploy_command",
        "files",
        "files_command",
    ] {
        attributes.insert(name.into(), known.get(name).cloned().unwrap_or(Value::Null));
    }
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
    attributes.insert("public_ip".into(), optional(instance.public_ip_address()));
    attributes.insert("private_ip".into(), optional(instance.private_ip_address()));
    attributes.insert("public_dns".into(), optional(instance.public_dns_name()));
    attributes.insert(
        "state".into(),
        Value::String(state_name(instance).to_owned()),
    );
    Observed {
        id,
        attributes,
        owner: Owner::from_tags(&tags),
        due: None,
    }
}

impl Instances {
    /// A provider using `config`; `counter` counts every HTTP attempt (tests).
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        let ec2 = super::instrumented!(aws_sdk_ec2::config::Builder::from(config), counter.clone());
        let ssm = super::instrumented!(aws_sdk_ssm::config::Builder::from(config), counter);
        Self {
            ec2: Ec2Client::from_conf(ec2.build()),
            ssm: SsmClient::from_conf(ssm.build()),
            schema: schema(),
            heads: None,
            pulls: None,
            amis: super::Remembered::default(),
        }
    }

    /// Resolves `github:owner/repo@branch` revisions with `heads`.
    #[must_use]
    pub fn with_heads(mut self, heads: HeadResolver) -> Self {
        self.heads = Some(heads);
        self
    }

    /// Resolves `previews` with `pulls` (open pull requests).
    #[must_use]
    pub fn with_pulls(mut self, pulls: PullsResolver) -> Self {
        self.pulls = Some(pulls);
        self
    }

    /// Brings `id` to `attributes`' files and revision in one SSM command:
    /// the wait for the boot script, the files (when their version is not
    /// the instance's), then the deploy command (when there is a revision).
    /// Nothing to do without either.
    ///
    /// With `previews` (or when they changed: `previews_changed`), the
    /// deploy command's `previews` step follows; the previews it reports
    /// serving are returned (none when previews are off).
    async fn converge(
        &self,
        id: &str,
        attributes: &Attrs,
        previews_changed: bool,
    ) -> std::result::Result<Option<Value>, Unconverged> {
        let revision = text(attributes, "revision");
        let files = crate::value::string_map(attributes.get("files"));
        let previews = attributes.get("previews").filter(|v| !v.is_null());
        if let Some(source) = previews.and_then(crate::spec::site::PreviewSource::from_value) {
            return Err(Unconverged::from(ProviderError::new(
                ErrorKind::Transient,
                format!(
                    "no previews served: the pull requests of `{}@{}` could not be listed when planning",
                    source.repo, source.base
                ),
            )));
        }
        let wanted = previews_of(previews);
        let previews_step = previews.is_some() || previews_changed;
        if revision.is_none() && files.is_empty() && !previews_step {
            return Ok(None);
        }
        let what = match &revision {
            Some(revision) => format!("deploy of {revision}"),
            None => "writing the instance's files".to_owned(),
        };
        // Only a commit id reaches the instance's command line: a branch name
        // would deploy whatever the branch holds when the command runs, and a
        // word such as `rollback` is a command of the deploy script.
        if let Some(revision) = &revision
            && revision.starts_with(BRANCH_HEAD)
        {
            return Err(Unconverged::from(ProviderError::new(
                ErrorKind::Transient,
                format!(
                    "nothing deployed: the head of `{}` could not be read when planning (see the plan's note)",
                    revision.trim_start_matches(BRANCH_HEAD)
                ),
            )));
        }
        if let Some(revision) = &revision
            && !crate::spec::site::checks::is_commit(revision)
        {
            return Err(Unconverged::from(ProviderError::new(
                ErrorKind::Invalid,
                format!("revision `{revision}` is not a commit id (7 to 64 hexadecimal digits)"),
            )));
        }
        // Without an instance profile the SSM agent never registers: say so
        // now, not after the registration deadline.
        let Some(profile) = text(attributes, "iam_instance_profile") else {
            return Err(Unconverged::from(ProviderError::new(
                ErrorKind::Invalid,
                format!(
                    "{what} failed: instance `{id}` has no instance profile (`iam_instance_profile`), so \
                     the SSM agent cannot register and jaam cannot run commands on it; set one whose role allows \
                     the SSM core actions (AmazonSSMManagedInstanceCore)"
                ),
            )));
        };
        let mut script = boot_wait();
        if !files.is_empty() {
            script.extend(super::files::delivery(
                &files,
                text(attributes, "files_command").as_deref(),
            ));
        }
        let command =
            text(attributes, "deploy_command").unwrap_or_else(|| DEPLOY_COMMAND.to_owned());
        let comment = match &revision {
            Some(revision) => {
                tracing::info!(instance = id, %revision, "deploying");
                script.push(if previews_step {
                    format!("{command} {revision} || exit $?")
                } else {
                    format!("exec {command} {revision}")
                });
                format!("jaam: deploy {revision}")
            }
            None => "jaam: files".to_owned(),
        };
        // The previews step's report lines start with a mark made for this
        // command alone, handed over in the environment (which a build
        // never sees, and no other user can read): a build's output, which
        // a failure's report quotes, cannot pass for them.
        let mark = format!("jaam-preview-{}", uuid::Uuid::new_v4().simple());
        if previews_step {
            // (`export`, a builtin: no process shows the mark in its argv.)
            script.push(format!("export JAAM_PREVIEW_REPORT={mark}"));
            let mut line = format!("exec {command} previews");
            for (number, Preview { head, secrets, .. }) in &wanted {
                if !crate::spec::site::checks::is_commit(head) {
                    return Err(Unconverged::from(ProviderError::new(
                        ErrorKind::Invalid,
                        format!("preview #{number}: `{head}` is not a commit id"),
                    )));
                }
                let _ = write!(
                    line,
                    " {number}={head}{}",
                    if *secrets { "+secrets" } else { "" }
                );
            }
            tracing::info!(instance = id, previews = wanted.len(), "serving previews");
            script.push(line);
        }
        let sent = super::ssm::send_command(
            &self.ssm,
            &[id.to_owned()],
            &comment,
            script,
            super::ssm::DEPLOY,
        )
        .await;
        match sent {
            // Previews turned off (the step removed them all): nothing to
            // record, as the spec says none.
            Ok(outputs) => Ok(previews.is_some().then(|| {
                serving_previews(outputs.first().map_or("", String::as_str), &mark, &wanted)
            })),
            Err(error) => {
                let hint = if error.message.contains(super::ssm::NOT_REGISTERED) {
                    format!(" (check instance profile `{profile}`)")
                } else {
                    String::new()
                };
                // The previews step reported: the revision deployed before
                // it, and a preview failed.
                let ran = error.message.contains(&mark);
                let serving = ran.then(|| serving_previews(&error.message, &mark, &wanted));
                let what = if ran { "previews" } else { what.as_str() };
                let message = error.message.replace(&mark, "jaam-preview");
                Err(Unconverged {
                    error: ProviderError {
                        message: format!("{what} failed: {message}{hint}"),
                        ..error
                    },
                    serving,
                })
            }
        }
    }

    /// Every instance matching `filter`, through all pages (1,000 per page).
    async fn describe_where(&self, filter: Filter) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(filter)
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("DescribeInstances", e))?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .cloned(),
            );
        }
        Ok(out)
    }

    /// Every live instance carrying `stack`'s tag (one paginated call).
    async fn describe_stack(&self, stack: &str) -> Result<Vec<Instance>> {
        let filter = Filter::builder()
            .name(format!("tag:{}", Owner::STACK_TAG))
            .values(stack)
            .build();
        let mut out = self.describe_where(filter).await?;
        out.retain(|instance| !is_gone(instance));
        Ok(out)
    }

    /// Instances by id, in one call; unknown ids are simply absent.
    async fn describe_ids(&self, ids: &[String]) -> Result<Vec<Instance>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await;
        match answer {
            Ok(answer) => Ok(answer
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .cloned()
                .collect()),
            Err(error) => {
                let error = classify("DescribeInstances", error);
                if error.kind != ErrorKind::NotFound {
                    return Err(error);
                }
                // One unknown id fails the whole call: fall back to asking by filter.
                self.describe_where(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(ids.to_vec()))
                        .build(),
                )
                .await
            }
        }
    }

    /// Waits until every one of `ids` is in `wanted` (or gone, when `wanted` is terminated).
    async fn wait_for(&self, ids: &[String], wanted: InstanceStateName) -> Result<Vec<Instance>> {
        let outcome = backoff::poll(WAIT, || async {
            let found = self.describe_ids(ids).await?;
            let done = ids.iter().all(|id| {
                let instance = found.iter().find(|i| i.instance_id() == Some(id.as_str()));
                match (&wanted, instance) {
                    (InstanceStateName::Terminated, None) => true,
                    (_, Some(instance)) => instance.state().and_then(|s| s.name()) == Some(&wanted),
                    _ => false,
                }
            });
            Ok::<_, ProviderError>(done.then_some(found))
        })
        .await;
        waited(outcome, || {
            format!("instances {ids:?} did not reach `{}`", wanted.as_str())
        })
    }

    /// Branch heads for `github:owner/repo@branch` revisions: one call per
    /// branch, eight at once. A branch whose head cannot be read is not an
    /// error of the plan: its rewrite says why ([`Rewrite::unresolved`]), so
    /// only the sites of that branch stay as they are.
    async fn resolve_heads(&self, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        use futures::StreamExt as _;
        let mut wanted: Vec<String> = desired
            .iter()
            .filter_map(|attrs| text(attrs, "revision"))
            .filter(|revision| revision.starts_with(BRANCH_HEAD))
            .collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let heads = self.heads.as_ref().ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Invalid,
                format!(
                    "cannot resolve `{}`: this build has no GitHub client",
                    wanted[0]
                ),
            )
        })?;
        let resolve = |revision: String| async move {
            let outcome = match parse_branch_head(&revision) {
                None => Err(ProviderError::new(
                    ErrorKind::Invalid,
                    format!("`{revision}` is not github:owner/repo@branch"),
                )),
                Some((repo, branch)) => match heads(repo.to_owned(), branch.to_owned()).await {
                    Ok(sha) if crate::spec::site::checks::is_commit(&sha) => Ok(sha),
                    Ok(sha) => Err(ProviderError::new(
                        ErrorKind::Invalid,
                        format!("the head of `{repo}@{branch}` is not a commit id: `{sha}`"),
                    )),
                    Err(error) => Err(error),
                },
            };
            (revision, outcome)
        };
        let answers: Vec<(String, Result<String>)> = futures::stream::iter(wanted)
            .map(resolve)
            .buffer_unordered(8)
            .collect()
            .await;
        Ok(answers
            .into_iter()
            .map(|(revision, outcome)| match outcome {
                Ok(sha) => Rewrite {
                    attribute: "revision".into(),
                    from: Value::String(revision),
                    to: Value::String(sha),
                    keep: false,
                    unresolved: None,
                },
                Err(error) => {
                    tracing::warn!(%revision, %error, "a branch head could not be read");
                    Rewrite {
                        attribute: "revision".into(),
                        from: Value::String(revision.clone()),
                        to: Value::String(revision.clone()),
                        keep: true,
                        unresolved: Some(format!(
                            "the head of `{}` could not be read: {}",
                            revision.trim_start_matches(BRANCH_HEAD),
                            error.message
                        )),
                    }
                }
            })
            .collect())
    }

    /// The previews each `previews` source asks for: one listing of open
    /// pull requests per (repository, base), eight at once. A listing that
    /// fails is not an error of the plan: an existing instance keeps its
    /// previews (the rewrite says why), a new one starts with none.
    async fn resolve_previews(&self, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        use crate::spec::site::PreviewSource;
        use futures::StreamExt as _;
        let mut sources: Vec<(Value, PreviewSource)> = Vec::new();
        for value in desired.iter().filter_map(|attrs| attrs.get("previews")) {
            if let Some(source) = PreviewSource::from_value(value)
                && !sources.iter().any(|(seen, _)| seen == value)
            {
                sources.push((value.clone(), source));
            }
        }
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let pulls = self.pulls.as_ref().ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Invalid,
                format!(
                    "cannot list the pull requests of `{}`: this build has no GitHub client",
                    sources[0].1.repo
                ),
            )
        })?;
        let mut bases: Vec<(String, String)> = sources
            .iter()
            .map(|(_, source)| (source.repo.clone(), source.base.clone()))
            .collect();
        bases.sort();
        bases.dedup();
        let listed: HashMap<(String, String), Result<Vec<Pull>>> = futures::stream::iter(bases)
            .map(|(repo, base)| async move {
                let open = pulls(repo.clone(), base.clone()).await;
                ((repo, base), open)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        Ok(sources
            .into_iter()
            .map(|(value, source)| {
                match &listed[&(source.repo.clone(), source.base.clone())] {
                    Ok(open) => Rewrite {
                        attribute: "previews".into(),
                        from: value,
                        to: wanted_previews(&source, open),
                        keep: false,
                        unresolved: None,
                    },
                    Err(error) => {
                        tracing::warn!(repo = source.repo, base = source.base, %error, "open pull requests could not be listed");
                        Rewrite {
                            attribute: "previews".into(),
                            from: value,
                            to: Value::Map(BTreeMap::new()),
                            keep: true,
                            unresolved: Some(format!(
                                "the open pull requests of `{}@{}` could not be listed: {}",
                                source.repo, source.base, error.message
                            )),
                        }
                    }
                }
            })
            .collect())
    }

    /// The image behind each AMI parameter: remembered for
    /// [`super::REMEMBER`] (a daemon plans at every push; the latest image
    /// changes a few times a month), read ten at a time otherwise.
    async fn resolve_amis(&self, paths: Vec<String>) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        let paths: Vec<String> = paths
            .into_iter()
            .filter(|path| match self.amis.get(path) {
                Some(ami) => {
                    out.insert(path.clone(), ami);
                    false
                }
                None => true,
            })
            .collect();
        for chunk in paths.chunks(10) {
            let answer = self
                .ssm
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| classify("GetParameters", e))?;
            for parameter in answer.parameters() {
                if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                    self.amis.put(name, value);
                    out.insert(name.to_owned(), value.to_owned());
                }
            }
            if let Some(missing) = answer.invalid_parameters().first() {
                return Err(ProviderError::new(
                    ErrorKind::Invalid,
                    format!("AMI parameter `{missing}` does not exist"),
                ));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Provider for Instances {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn prepares(&self) -> bool {
        true
    }

    async fn prepare(&self, _context: &Context, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        let (heads, previews) =
            tokio::join!(self.resolve_heads(desired), self.resolve_previews(desired));
        let mut rewrites = heads?;
        rewrites.extend(previews?);
        // A boot script that only bootstraps: an existing instance keeps the
        // one it booted with (a plan note; `--replace` takes the new one).
        rewrites.extend(
            desired
                .iter()
                .filter(|attrs| {
                    attrs.get("user_data_replace_on_change") == Some(&Value::Bool(false))
                })
                .filter_map(|attrs| attrs.get("user_data").filter(|v| !v.is_null()))
                .map(|user_data| Rewrite {
                    attribute: "user_data".into(),
                    from: user_data.clone(),
                    to: user_data.clone(),
                    keep: true,
                    unresolved: None,
                }),
        );
        let mut paths: Vec<String> = desired
            .iter()
            .filter_map(|attrs| text(attrs, "ami"))
            .filter(|ami| ami.starts_with('/'))
            .collect();
        paths.sort();
        paths.dedup();
        if paths.is_empty() {
            return Ok(rewrites);
        }
        let resolved = self.resolve_amis(paths).await?;
        // An instance keeps the image it was created from: a newer image
        // behind the parameter is a note in the plan, never a replacement.
        rewrites.extend(resolved.into_iter().map(|(path, ami)| Rewrite {
            attribute: "ami".into(),
            from: Value::String(path),
            to: Value::String(ami),
            keep: true,
            unresolved: None,
        }));
        Ok(rewrites)
    }

    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        let mut owned = self.describe_stack(&context.stack).await?;
        // Recorded instances that do not carry the stack tag (imported): by id, in one call.
        let missing: Vec<String> = targets
            .iter()
            .filter_map(|t| t.id)
            .filter(|id| !owned.iter().any(|i| i.instance_id() == Some(*id)))
            .map(str::to_owned)
            .collect();
        owned.extend(
            self.describe_ids(&missing)
                .await?
                .into_iter()
                .filter(|i| !is_gone(i)),
        );
        // Never record a half-started instance: wait for pending ones.
        let pending: Vec<String> = owned
            .iter()
            .filter(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Pending))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if !pending.is_empty() {
            let running = self.wait_for(&pending, InstanceStateName::Running).await?;
            owned.retain(|i| {
                !i.instance_id()
                    .is_some_and(|id| pending.iter().any(|p| p == id))
            });
            owned.extend(running);
        }
        Ok(targets
            .iter()
            .map(|target| {
                super::pick(&owned, target, Instance::instance_id, tags_of)
                    .map(|instance| observe(instance, target.attributes))
            })
            .collect())
    }

    async fn create(
        &self,
        _context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let ami = text(attributes, "ami")
            .ok_or_else(|| ProviderError::new(ErrorKind::Invalid, "no ami"))?;
        let instance_type = text(attributes, "instance_type").unwrap_or_default();
        let mut tags = ec2_tags(attributes, owner);
        tags.sort_by(|a, b| a.key().cmp(&b.key()));
        let groups = match attributes.get("security_group_ids") {
            Some(Value::List(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => None,
        };
        let mut request = self
            .ec2
            .run_instances()
            .image_id(ami)
            .instance_type(InstanceType::from(instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(text(attributes, "subnet_id"))
            .set_security_group_ids(groups)
            .set_key_name(text(attributes, "key_name"))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            )
            .set_client_token(owner.intent.clone());
        if let Some(profile) = text(attributes, "iam_instance_profile") {
            request = request.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        if let Some(user_data) = text(attributes, "user_data") {
            request = request.user_data(aws_smithy_types::base64::encode(user_data));
        }
        if let Some(size) = attributes.get("root_volume_gb").and_then(Value::as_int) {
            let size = i32::try_from(size)
                .map_err(|_| ProviderError::new(ErrorKind::Invalid, "root_volume_gb too large"))?;
            request = request.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(size)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        // IAM is eventually consistent: a profile made moments ago (a site's
        // own) may be refused for a few seconds. The client token makes the
        // retry idempotent.
        let sent = backoff::poll(PROFILE_PROPAGATION, || async {
            match request.clone().send().await {
                Ok(answer) => Ok(Some(answer)),
                Err(error) => {
                    let error = classify("RunInstances", error);
                    if error.message.contains("Invalid IAM Instance Profile") {
                        Ok(None)
                    } else {
                        Err(error)
                    }
                }
            }
        })
        .await;
        let answer = waited(sent, || {
            "RunInstances: the instance profile is still not usable (Invalid IAM Instance Profile)"
                .to_owned()
        })?;
        let id = answer
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| {
                ProviderError::new(ErrorKind::Other, "RunInstances returned no instance")
            })?
            .to_owned();
        let running = self
            .wait_for(std::slice::from_ref(&id), InstanceStateName::Running)
            .await?;
        let instance = running
            .iter()
            .find(|i| i.instance_id() == Some(id.as_str()))
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::Transient,
                    format!("instance `{id}` not visible after launch"),
                )
            })?;
        let observed = observe(instance, attributes);
        // The instance exists whatever the deploy does: a failed first deploy
        // is recorded with no revision (and no previews), so the next apply
        // deploys again.
        let converged = self.converge(&id, attributes, false).await;
        settle(converged, observed.clone()).map_err(|error| {
            let partial = error.partial.clone().map(|p| *p).unwrap_or_else(|| {
                let mut partial = observed;
                partial.attributes.insert("revision".into(), Value::Null);
                partial.attributes.insert("previews".into(), Value::Null);
                partial
            });
            ProviderError {
                message: format!("instance `{id}` is running, but its {}", error.message),
                ..error
            }
            .with_partial(partial)
        })
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
        let ids = [id.to_owned()];
        let previews_changed = changed.iter().any(|c| c == "previews");
        // A new revision or new files only: one command, then read the
        // instance once.
        let settings_only = |c: &String| c == "user_data_replace_on_change";
        if !changed.is_empty()
            && changed
                .iter()
                .all(|c| CONVERGED.contains(&c.as_str()) || settings_only(c))
        {
            let converged = if changed.iter().any(|c| CONVERGED.contains(&c.as_str())) {
                failed_deploy(self.converge(id, attributes, previews_changed).await)?
            } else {
                Ok(None)
            };
            let found = self.describe_ids(&ids).await?;
            let instance = found
                .iter()
                .find(|i| i.instance_id() == Some(id) && !is_gone(i))
                .ok_or_else(|| {
                    ProviderError::new(ErrorKind::NotFound, format!("instance `{id}` disappeared"))
                })?;
            return settle(converged, observe(instance, attributes));
        }
        // Tags (and ownership, so an imported instance becomes owned).
        retag(&self.ec2, id, owner, prior, attributes, changed).await?;
        if changed.iter().any(|c| c == "security_group_ids")
            && let Some(Value::List(items)) = attributes.get("security_group_ids")
        {
            let groups: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            self.ec2
                .modify_instance_attribute()
                .instance_id(id)
                .set_groups(Some(groups))
                .send()
                .await
                .map_err(|e| classify("ModifyInstanceAttribute", e))?;
        }
        if changed.iter().any(|c| c == "instance_type") {
            let instance_type = text(attributes, "instance_type").unwrap_or_default();
            self.ec2
                .stop_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| classify("StopInstances", e))?;
            self.wait_for(&ids, InstanceStateName::Stopped).await?;
            self.ec2
                .modify_instance_attribute()
                .instance_id(id)
                .instance_type(AttributeValue::builder().value(instance_type).build())
                .send()
                .await
                .map_err(|e| classify("ModifyInstanceAttribute", e))?;
            self.ec2
                .start_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(|e| classify("StartInstances", e))?;
        }
        let found = self.wait_for(&ids, InstanceStateName::Running).await?;
        let instance = found
            .iter()
            .find(|i| i.instance_id() == Some(id))
            .ok_or_else(|| {
                ProviderError::new(ErrorKind::NotFound, format!("instance `{id}` disappeared"))
            })?;
        let converged = if changed
            .iter()
            .any(|c| c == "instance_type" || CONVERGED.contains(&c.as_str()))
        {
            failed_deploy(self.converge(id, attributes, previews_changed).await)?
        } else {
            Ok(None)
        };
        settle(converged, observe(instance, attributes))
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        let terminated = self.ec2.terminate_instances().instance_ids(id).send().await;
        if !super::gone_is_fine("TerminateInstances", terminated)? {
            return Ok(());
        }
        // Terminated instances stay listed for a while: wait for the state, not absence.
        let outcome = backoff::poll(WAIT, || async {
            let found = self.describe_ids(&[id.to_owned()]).await?;
            Ok::<_, ProviderError>(found.iter().all(is_gone).then_some(()))
        })
        .await;
        waited(outcome, || format!("instance `{id}` not terminated"))
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        let found = self.describe_ids(&[id.to_owned()]).await?;
        let instance = found
            .iter()
            .find(|i| i.instance_id() == Some(id) && !is_gone(i))
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::NotFound,
                    format!("instance `{id}` does not exist"),
                )
            })?;
        // What refresh cannot see, read once here (one resource: per-resource calls are fine).
        let mut known = Attrs::new();
        let user_data = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| classify("DescribeInstanceAttribute", e))?;
        if let Some(encoded) = user_data.user_data().and_then(|value| value.value()) {
            let bytes = aws_smithy_types::base64::decode(encoded).map_err(|e| {
                ProviderError::new(ErrorKind::Other, format!("user data is not base64: {e}"))
            })?;
            known.insert(
                "user_data".into(),
                Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            );
        }
        let root = instance.root_device_name().unwrap_or("/dev/xvda");
        let volume = instance
            .block_device_mappings()
            .iter()
            .find(|mapping| mapping.device_name() == Some(root))
            .and_then(|mapping| mapping.ebs())
            .and_then(|ebs| ebs.volume_id());
        if let Some(volume) = volume {
            let answer = self
                .ec2
                .describe_volumes()
                .volume_ids(volume)
                .send()
                .await
                .map_err(|e| classify("DescribeVolumes", e))?;
            if let Some(size) = answer.volumes().first().and_then(|v| v.size()) {
                known.insert("root_volume_gb".into(), Value::Int(size.into()));
            }
        }
        Ok(observe(instance, &known))
    }

    async fn list_owned(&self, context: &Context) -> Result<Vec<Observed>> {
        Ok(self
            .describe_stack(&context.stack)
            .await?
            .iter()
            .map(|i| observe(i, &Attrs::new()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(number: u64, head: &str, fork: bool) -> Pull {
        Pull {
            number,
            head: head.to_owned(),
            fork,
        }
    }

    fn preview(head: &str, secrets: bool, number: u64) -> Preview {
        Preview {
            head: head.to_owned(),
            secrets,
            url: format!("https://pr-{number}.blog.example.com"),
        }
    }

    #[test]
    fn previews_should_keep_the_newest_and_give_forks_no_secrets() {
        let source = |forks: bool| crate::spec::site::PreviewSource {
            repo: "acme/blog".into(),
            base: "main".into(),
            max: 2,
            forks,
            secrets: true,
            url: "https://pr-{number}.blog.example.com".into(),
        };
        let open = [
            pull(7, &"a".repeat(40), false),
            pull(9, &"b".repeat(40), true),
            pull(8, &"c".repeat(40), false),
            pull(10, "not-a-commit", false),
        ];
        let wanted = previews_of(Some(&wanted_previews(&source(false), &open)));
        assert_eq!(
            wanted,
            BTreeMap::from([
                (7, preview(&"a".repeat(40), true, 7)),
                (8, preview(&"c".repeat(40), true, 8)),
            ]),
            "forks left out; the newest two of the rest"
        );
        let wanted = previews_of(Some(&wanted_previews(&source(true), &open)));
        assert_eq!(
            wanted,
            BTreeMap::from([
                (8, preview(&"c".repeat(40), true, 8)),
                (9, preview(&"b".repeat(40), false, 9)),
            ]),
            "a fork's preview never reads secrets"
        );
    }

    #[test]
    fn the_preview_report_should_say_what_serves() {
        let wanted = BTreeMap::from([
            (7, preview(&"a".repeat(40), true, 7)),
            (8, preview(&"c".repeat(40), false, 8)),
        ]);
        // A build's output quoting report lines without this command's
        // mark counts for nothing.
        let report = format!(
            "2026-11-29T12:00:00Z [blog] preview #8: deploy {c}\njaam-preview 9 serving {c}\n\
             jaam-preview-forged 9 serving {c}\njaam-preview-m1 8 failed {c}\n\
             jaam-preview-m1 7 serving {a}\njaam-preview-m1 8 serving {old}\nerror: preview build failed",
            a = "a".repeat(40),
            c = "c".repeat(40),
            old = "d".repeat(40),
        );
        assert_eq!(
            previews_of(Some(&serving_previews(&report, "jaam-preview-m1", &wanted))),
            BTreeMap::from([
                (7, preview(&"a".repeat(40), true, 7)),
                (8, preview(&"d".repeat(40), false, 8)),
            ]),
        );
    }

    #[test]
    fn schema_should_replace_on_image_and_update_type_in_place() {
        let schema = schema();
        assert!(schema.attribute("ami").unwrap().force_new);
        assert!(schema.attribute("user_data").unwrap().force_new);
        assert!(!schema.attribute("instance_type").unwrap().force_new);
        assert!(!schema.attribute("tags").unwrap().force_new);
    }
}
