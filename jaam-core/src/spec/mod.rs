//! YAML specs: load, validate, and resolve references.
//!
//! A spec is a directory of `*.yaml`/`*.yml` files (searched recursively, hidden
//! entries skipped, read in sorted order) or a single file. Every top-level key is
//! a resource address `kind.name` whose value holds the kind's arguments and the
//! reserved `depends_on`; the one reserved key without a dot, `stack`, holds stack
//! settings. Files merge; the same address twice is an error.
//!
//! # Errors
//! Loading never stops at the first mistake: every problem becomes a
//! [`Diagnostic`] naming `file:line:col` and the address, and [`load`] returns all
//! of them at once, as Terraform's diagnostics do.
//!
//! # The YAML crate
//! `serde_yaml` is archived and `serde_yml` is flagged unsound (RUSTSEC-2025-0068).
//! We parse with `saphyr-parser`, the event parser of the saphyr project (the
//! maintained, pure-Rust, YAML 1.2 successor of yaml-rust2): its events carry a
//! span for every key and value, not only for the first error, which is what
//! pointing a reference error or a duplicate address at its line needs. Arguments
//! are then checked against the kind's [`Schema`](crate::schema::Schema) and
//! converted to the provider's typed struct with serde.

mod expr;
pub mod site;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use expr::{Part, Template, TemplateError};
use yaml::{Node, NodeKind};

use crate::addr::ResourceAddr;
use crate::graph::Graph;
use crate::provider::Registry;
use crate::schema::{Mode, Schema, did_you_mean};
use crate::value::Value;

/// A place in a spec file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: Arc<Path>,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in the specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it is.
    pub location: Option<Location>,
    /// The resource it concerns.
    pub addr: Option<ResourceAddr>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if let Some(addr) = &self.addr {
            write!(f, "`{addr}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// Why specs could not be loaded.
///
/// None of these is retryable: the user must change the files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec file or directory could not be read.
    #[error("failed to read `{}`", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The specs hold one or more mistakes.
    #[error("{}", render_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (index, diagnostic) in diagnostics.iter().enumerate() {
        if index > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&diagnostic.to_string());
    }
    let count = diagnostics.len();
    out.push_str(&format!(
        "\n\n{count} error{} in specs",
        if count == 1 { "" } else { "s" }
    ));
    out
}

/// Specs result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A value written in a spec: literal data or string templates, with its location.
#[derive(Clone, Debug)]
pub struct Expr {
    /// What it holds.
    pub kind: ExprKind,
    /// Where it is written.
    pub location: Location,
}

/// The shape of an [`Expr`].
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// A literal non-string value.
    Literal(Value),
    /// A string, possibly with `${…}` references.
    Template(Template),
    /// A list.
    List(Vec<Expr>),
    /// A map.
    Map(BTreeMap<String, Expr>),
}

impl Expr {
    /// Evaluates the expression (see [`Template::evaluate`]).
    pub fn evaluate(
        &self,
        lookup: &dyn Fn(&ResourceAddr, &str) -> Option<Value>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Value {
        match &self.kind {
            ExprKind::Literal(value) => value.clone(),
            ExprKind::Template(template) => template.evaluate(lookup, env),
            ExprKind::List(items) => Value::List(
                items
                    .iter()
                    .map(|item| item.evaluate(lookup, env))
                    .collect(),
            ),
            ExprKind::Map(map) => Value::Map(
                map.iter()
                    .map(|(key, item)| (key.clone(), item.evaluate(lookup, env)))
                    .collect(),
            ),
        }
    }

    /// Every template inside, with its location.
    pub fn templates(&self) -> Vec<(&Template, &Location)> {
        let mut out = Vec::new();
        self.collect_templates(&mut out);
        out
    }

    fn collect_templates<'a>(&'a self, out: &mut Vec<(&'a Template, &'a Location)>) {
        match &self.kind {
            ExprKind::Literal(_) => {}
            ExprKind::Template(template) => out.push((template, &self.location)),
            ExprKind::List(items) => items.iter().for_each(|item| item.collect_templates(out)),
            ExprKind::Map(map) => map.values().for_each(|item| item.collect_templates(out)),
        }
    }

    /// The value with every reference unknown, for static type checks.
    fn shape(&self) -> Value {
        self.evaluate(&|_, _| Some(Value::Unknown(String::new())), &|_| {
            Some(String::new())
        })
    }
}

/// One resource as written in the specs.
#[derive(Clone, Debug)]
pub struct ResourceSpec {
    /// Its address.
    pub addr: ResourceAddr,
    /// Its arguments, checked against the kind's schema.
    pub args: BTreeMap<String, Expr>,
    /// Explicit dependencies from `depends_on`.
    pub depends_on: Vec<ResourceAddr>,
    /// Where its key is written.
    pub location: Location,
}

impl ResourceSpec {
    /// Every resource this one depends on: references and `depends_on`, sorted, once each.
    pub fn dependencies(&self) -> Vec<ResourceAddr> {
        let mut out: Vec<ResourceAddr> = self
            .args
            .values()
            .flat_map(Expr::templates)
            .flat_map(|(template, _)| {
                template
                    .resource_refs()
                    .map(|(addr, _)| addr.clone())
                    .collect::<Vec<_>>()
            })
            .chain(self.depends_on.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// What the daemon does with drift found by a periodic resync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Apply the correction.
    #[default]
    Heal,
    /// Only report it.
    Report,
}

/// Settings from the reserved `stack` key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackSettings {
    /// The stack's name (the CLI's `--stack` wins).
    pub name: Option<String>,
    /// The drift policy.
    pub drift: DriftPolicy,
}

/// What a policy document names the stack with (CloudFormation's
/// `${AWS::StackName}`; the `iam_role` kind replaces it at plan time): a
/// site's role names its own certificate's parameters, `/jaam/<stack>/…`,
/// with it.
pub const STACK_MARKER: &str = "{{jaam:stack}}";

/// Everything the specs declare. Immutable once loaded: its dependency graph is
/// built once, when [`load`] checks for cycles, and kept.
#[derive(Clone, Debug, Default)]
pub struct Config {
    stack: StackSettings,
    resources: BTreeMap<ResourceAddr, ResourceSpec>,
    graph: Graph,
}

impl Config {
    /// Stack settings.
    pub fn stack(&self) -> &StackSettings {
        &self.stack
    }

    /// Resources by address.
    pub fn resources(&self) -> &BTreeMap<ResourceAddr, ResourceSpec> {
        &self.resources
    }

    /// The dependency graph of the declared resources.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    fn build_graph(&self) -> Graph {
        let mut graph = Graph::default();
        for (addr, resource) in &self.resources {
            graph.add_node(addr.clone());
            for dependency in resource.dependencies() {
                graph.add_edge(addr.clone(), dependency);
            }
        }
        graph
    }
}

/// Loads and validates the specs at `path` (a directory or one file), reading
/// `${env.NAME}` through `env`.
///
/// # Errors
/// [`Error::Read`] when a file cannot be read; [`Error::Invalid`] with every
/// mistake found.
pub fn load(
    path: &Path,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let files = spec_files(path)?;
    let mut sources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        sources.push((file, text));
    }
    load_sources(&sources, registry, env)
}

/// Whether `path` is named as a spec file (`.yaml` or `.yml`).
pub fn is_spec_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// The spec files [`load`] reads at `path`: the file itself, or every
/// [spec file](is_spec_file) under the directory at any depth, skipping
/// names that start with `.`; sorted.
///
/// # Errors
/// [`Error::Read`] when `path` or a directory under it cannot be read.
pub fn spec_files(path: &Path) -> Result<Vec<PathBuf>> {
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: dir.clone(),
                source,
            })?;
            let entry_path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if entry_path.is_dir() {
                pending.push(entry_path);
            } else if is_spec_file(&entry_path) {
                out.push(entry_path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads specs from in-memory `(path, text)` pairs: what [`load`] does after reading files.
///
/// # Errors
/// [`Error::Invalid`] with every mistake found.
pub fn load_sources(
    sources: &[(PathBuf, String)],
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let mut loader = Loader {
        registry,
        env,
        diagnostics: Vec::new(),
        config: Config::default(),
        pending_depends: Vec::new(),
        wildcards: BTreeMap::new(),
    };
    for (path, text) in sources {
        let file: Arc<Path> = Arc::from(path.as_path());
        match yaml::parse(&file, text) {
            Ok(documents) => documents
                .into_iter()
                .for_each(|document| loader.document(document)),
            Err(error) => loader.diagnostics.push(Diagnostic {
                location: Some(error.location),
                addr: None,
                message: format!("invalid YAML: {}", error.message),
                hint: None,
            }),
        }
    }
    loader.share_wildcards();
    loader.check_references();
    if loader.diagnostics.is_empty() {
        loader.check_cycles();
    }
    if loader.diagnostics.is_empty() {
        Ok(loader.config)
    } else {
        Err(Error::Invalid(loader.diagnostics))
    }
}

struct Loader<'a> {
    registry: &'a Registry,
    env: &'a dyn Fn(&str) -> Option<String>,
    diagnostics: Vec<Diagnostic>,
    config: Config,
    /// `depends_on` entries, checked once every file is loaded.
    pending_depends: Vec<(ResourceAddr, ResourceAddr, Location)>,
    /// Sites sharing their zone's wildcard certificate, by zone: the site,
    /// its evaluated arguments and where it is written.
    wildcards: BTreeMap<String, Vec<(ResourceAddr, crate::value::Attrs, Location)>>,
}

impl Loader<'_> {
    fn error(
        &mut self,
        location: &Location,
        addr: Option<&ResourceAddr>,
        message: String,
        hint: Option<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            location: Some(location.clone()),
            addr: addr.cloned(),
            message,
            hint,
        });
    }

    fn document(&mut self, document: Node) {
        let entries = match document.kind {
            NodeKind::Null => return,
            NodeKind::Map(entries) => entries,
            _ => {
                self.error(
                    &document.location,
                    None,
                    "a spec file must be a map of resource addresses".into(),
                    None,
                );
                return;
            }
        };
        for (key, value) in entries {
            let NodeKind::String(key_text) = &key.kind else {
                self.error(
                    &key.location,
                    None,
                    "top-level keys must be resource addresses".into(),
                    None,
                );
                continue;
            };
            if key_text == "stack" {
                self.stack(value);
                continue;
            }
            match key_text.parse::<ResourceAddr>() {
                Ok(addr) => self.resource(addr, key.location, value),
                Err(error) => self.error(
                    &key.location,
                    None,
                    error.to_string(),
                    Some("top-level keys are resource addresses such as `log_group.build`, or `stack`".into()),
                ),
            }
        }
    }

    fn stack(&mut self, node: Node) {
        let NodeKind::Map(entries) = node.kind else {
            self.error(&node.location, None, "`stack` must be a map".into(), None);
            return;
        };
        for (key, value) in entries {
            let key_text = scalar_text(&key);
            match (key_text.as_str(), &value.kind) {
                ("name", NodeKind::String(name)) => self.config.stack.name = Some(name.clone()),
                ("drift", NodeKind::String(policy)) if policy == "heal" => {
                    self.config.stack.drift = DriftPolicy::Heal
                }
                ("drift", NodeKind::String(policy)) if policy == "report" => {
                    self.config.stack.drift = DriftPolicy::Report;
                }
                ("name" | "drift", _) => self.error(
                    &value.location,
                    None,
                    format!("invalid value for `stack.{key_text}`"),
                    Some("`name` is a string; `drift` is `heal` or `report`".into()),
                ),
                _ => {
                    let hint = did_you_mean(&key_text, ["name", "drift"])
                        .map(|m| format!("did you mean `{m}`?"));
                    self.error(
                        &key.location,
                        None,
                        format!("unknown stack setting `{key_text}`"),
                        hint,
                    );
                }
            }
        }
    }

    fn resource(&mut self, addr: ResourceAddr, location: Location, node: Node) {
        if addr.kind() == "site" && addr.composite().is_none() {
            self.site(addr, location, node);
            return;
        }
        if let Some(existing) = self.config.resources.get(&addr) {
            let first = existing.location.clone();
            self.error(
                &location,
                Some(&addr),
                format!("duplicate resource address, first declared at {first}"),
                Some("every address must be declared once across all spec files".into()),
            );
            return;
        }
        let Some(schema) = self.registry.schema(addr.kind()) else {
            let kinds: Vec<&str> = self.registry.kinds().chain(["site"]).collect();
            let hint = did_you_mean(addr.kind(), kinds.iter().copied()).map_or_else(
                || format!("known kinds: {}", kinds.join(", ")),
                |m| format!("did you mean `{m}`?"),
            );
            self.error(
                &location,
                Some(&addr),
                format!("unknown resource kind `{}`", addr.kind()),
                Some(hint),
            );
            return;
        };
        let schema = schema.clone();
        if let Some(spec) = self.arguments(&addr, &schema, location, node) {
            self.config.resources.insert(addr, spec);
        }
    }

    /// Expands `site.<name>` into its primitives (see [`site`]).
    fn site(&mut self, addr: ResourceAddr, location: Location, node: Node) {
        let schema = site::schema();
        let Some(spec) = self.arguments(&addr, &schema, location.clone(), node) else {
            return;
        };
        // Site arguments shape the generated user data: no references to resources.
        let mut referencing = false;
        for (template, at) in spec.args.values().flat_map(Expr::templates) {
            if let Some((target, _)) = template.resource_refs().next() {
                self.diagnostics.push(Diagnostic {
                    location: Some(at.clone()),
                    addr: Some(addr.clone()),
                    message: format!(
                        "a site's arguments may read `${{env.…}}` but not other resources (`{target}`)"
                    ),
                    hint: Some(
                        "declare what needs the reference as its own resource beside the site"
                            .into(),
                    ),
                });
                referencing = true;
            }
        }
        // These arguments are written into user data or a script on the
        // instance: a value read from jaam's environment may be a secret
        // (a token in `repo_url`, say), and would end up there, in state and
        // in plan output in clear.
        for name in site::checks::IN_USER_DATA {
            let Some(expr) = spec.args.get(*name) else {
                continue;
            };
            for (template, at) in expr.templates() {
                if template
                    .parts
                    .iter()
                    .any(|part| matches!(part, Part::Env(_)))
                {
                    self.diagnostics.push(Diagnostic {
                        location: Some(at.clone()),
                        addr: Some(addr.clone()),
                        message: format!(
                            "a site's `{name}` is written into the instance's user data, \
                             so it may not read `${{env.…}}`"
                        ),
                        hint: Some(
                            "store a secret value in SSM Parameter Store and list it under \
                             `secrets` (or `repo_token` for the repository)"
                                .into(),
                        ),
                    });
                    referencing = true;
                }
            }
        }
        if referencing {
            return;
        }
        let attrs = evaluate_args(&spec, &schema, &|_, _| None, self.env);
        let shown = site::Site::from_attrs(addr.name(), &attrs);
        // A server app's previews listen on `port + 2` and up, one each.
        if let Some(previews) = &shown.previews
            && shown.port + 1 + previews.max > 65_535
        {
            self.error(
                &location,
                Some(&addr),
                format!(
                    "`{addr}`'s previews would listen on ports {} to {}, beyond 65535",
                    shown.port + 2,
                    shown.port + 1 + previews.max
                ),
                Some("choose a lower `port` or a smaller `previews.max`".into()),
            );
            return;
        }
        if let Some(previews) = shown
            .previews
            .as_ref()
            .filter(|_| shown.https && shown.wildcard)
        {
            self.error(
                &location,
                Some(&addr),
                format!(
                    "`{addr}` has previews, whose hosts (`{}`) need a certificate of the site's own: \
                     the zone's shared wildcard certificate covers one label below the zone only",
                    previews.wildcard()
                ),
                Some("give this site `certificate: own` (it then names the previews' wildcard too)".into()),
            );
            return;
        }
        if shown.https && shown.wildcard {
            self.wildcards.entry(shown.zone.clone()).or_default().push((
                addr.clone(),
                attrs.clone(),
                location.clone(),
            ));
        }
        for mut expanded in site::expand(&addr, &attrs, &spec.args, &location) {
            if self.registry.schema(expanded.addr.kind()).is_none() {
                self.error(
                    &location,
                    Some(&addr),
                    format!(
                        "a site needs the `{}` kind, which this build of jaam does not have",
                        expanded.addr.kind()
                    ),
                    Some("build jaam-core with its default features (aws, acme, github)".into()),
                );
                return;
            }
            if let Some(existing) = self.config.resources.get(&expanded.addr) {
                let first = existing.location.clone();
                self.error(
                    &location,
                    Some(&expanded.addr),
                    format!("`{addr}` expands into an address declared at {first}"),
                    Some("remove one of them".into()),
                );
                continue;
            }
            if expanded.addr.kind() == "instance" {
                expanded.depends_on.extend(spec.depends_on.iter().cloned());
            }
            // What a site generates meets its kinds' checks like anything
            // written by hand (the generated user data must fit EC2's limit,
            // which moto does not enforce and AWS does).
            self.check_generated(&addr, &location, &expanded);
            self.config
                .resources
                .insert(expanded.addr.clone(), expanded);
        }
    }

    /// One certificate per zone for the sites that share its wildcard
    /// (`certificate: wildcard`): `*.<zone>` and `<zone>`, installed on each
    /// of their instances, at [`site::wildcard_certificate`].
    fn share_wildcards(&mut self) {
        for (zone, sites) in std::mem::take(&mut self.wildcards) {
            let addr = site::wildcard_certificate(&zone);
            let (first, first_attrs, location) = &sites[0];
            if let Some(existing) = self.config.resources.get(&addr) {
                let at = existing.location.clone();
                self.error(
                    location,
                    Some(&addr),
                    format!("`{first}` shares `{addr}`, which is also declared at {at}"),
                    Some("rename that resource, or give the site `certificate: own`".into()),
                );
                continue;
            }
            // `*.<zone>` covers one label below the zone, no deeper.
            for (site, attrs, at) in &sites {
                let domain = attrs
                    .get("domain")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let covered = domain == zone
                    || domain
                        .strip_suffix(&format!(".{zone}"))
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'));
                if !covered {
                    self.error(
                        at,
                        Some(site),
                        format!(
                            "`{site}` serves `{domain}`, which the shared certificate for `*.{zone}` does not cover \
                             (a wildcard covers one label below the zone)"
                        ),
                        Some("give this site `certificate: own`".into()),
                    );
                }
            }
            let literal = |value: Value| Expr {
                kind: ExprKind::Literal(value),
                location: location.clone(),
            };
            let mut args = BTreeMap::new();
            args.insert(
                "domains".to_owned(),
                literal(Value::List(vec![
                    Value::String(format!("*.{zone}")),
                    Value::String(zone.clone()),
                ])),
            );
            args.insert("zone".to_owned(), literal(Value::String(zone.clone())));
            for name in ["acme_directory", "contact_email"] {
                let value = first_attrs.get(name).cloned().unwrap_or(Value::Null);
                if let Some((other, _, at)) = sites
                    .iter()
                    .find(|(_, attrs, _)| attrs.get(name).cloned().unwrap_or(Value::Null) != value)
                {
                    self.error(
                        at,
                        Some(other),
                        format!("`{other}` and `{first}` share `{addr}` but not their `{name}`"),
                        Some(format!("give both the same `{name}`")),
                    );
                }
                if !value.is_null() {
                    args.insert(name.to_owned(), literal(value));
                }
            }
            let instances = sites
                .iter()
                .map(|(site, _, at)| Expr {
                    kind: ExprKind::Template(
                        Template::parse(&format!("${{{site}.instance.id}}"))
                            .expect("generated templates parse"),
                    ),
                    location: at.clone(),
                })
                .collect();
            args.insert(
                "install_on".to_owned(),
                Expr {
                    kind: ExprKind::List(instances),
                    location: location.clone(),
                },
            );
            self.config.resources.insert(
                addr.clone(),
                ResourceSpec {
                    addr,
                    args,
                    depends_on: Vec::new(),
                    location: location.clone(),
                },
            );
        }
    }

    /// Runs the known arguments of `expanded` (a resource `site` generated)
    /// through its kind's checks; mistakes are reported at the site.
    fn check_generated(
        &mut self,
        site: &ResourceAddr,
        location: &Location,
        expanded: &ResourceSpec,
    ) {
        let Some(schema) = self.registry.schema(expanded.addr.kind()) else {
            return;
        };
        let mut problems = Vec::new();
        for (name, expr) in &expanded.args {
            let known = expr.evaluate(&|_, _| Some(Value::Unknown(String::new())), self.env);
            if let Some(check) = schema.attribute(name).and_then(|a| a.check)
                && !known.has_unknown()
                && !known.is_null()
                && let Err(message) = check(&known)
            {
                problems.push((name.clone(), message));
            }
        }
        for (name, message) in problems {
            let hint = (name == "user_data")
                .then(|| "shorten or move `env` values (long ones belong in `secrets`)".to_owned());
            self.error(
                location,
                Some(site),
                format!(
                    "the generated `{name}` of `{}` is invalid: {message}",
                    expanded.addr
                ),
                hint,
            );
        }
    }

    /// Checks a resource's arguments against `schema`: `None` when it is not a map.
    fn arguments(
        &mut self,
        addr: &ResourceAddr,
        schema: &Schema,
        location: Location,
        node: Node,
    ) -> Option<ResourceSpec> {
        let addr = addr.clone();
        let entries = match node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => Vec::new(),
            _ => {
                self.error(
                    &node.location,
                    Some(&addr),
                    "a resource must be a map of arguments".into(),
                    None,
                );
                return None;
            }
        };
        let mut spec = ResourceSpec {
            addr: addr.clone(),
            args: BTreeMap::new(),
            depends_on: Vec::new(),
            location,
        };
        let mut written: Vec<String> = Vec::new();
        for (key, value) in entries {
            let name = scalar_text(&key);
            written.push(name.clone());
            if name == "depends_on" {
                spec.depends_on = self.depends_on(&addr, value);
                continue;
            }
            let Some(attribute) = schema.attribute(&name) else {
                let hint = did_you_mean(
                    &name,
                    schema.arguments().map(|a| a.name).chain(["depends_on"]),
                )
                .map(|m| format!("did you mean `{m}`?"));
                let hint = hint.or_else(|| {
                    let names: Vec<&str> = schema.arguments().map(|a| a.name).collect();
                    Some(format!("`{}` takes: {}", schema.kind, names.join(", ")))
                });
                self.error(
                    &key.location,
                    Some(&addr),
                    format!("unknown field `{name}`"),
                    hint,
                );
                continue;
            };
            if !attribute.is_argument() {
                self.error(
                    &key.location,
                    Some(&addr),
                    format!("`{name}` is computed by the cloud and cannot be set"),
                    None,
                );
                continue;
            }
            let Some(expr) = self.expr(&addr, value) else {
                continue;
            };
            let shape = expr.shape();
            if !attribute.ty.accepts(&shape) {
                self.error(
                    &expr.location,
                    Some(&addr),
                    format!(
                        "wrong type for `{name}`: expected {}, found {}",
                        attribute.ty.describe(),
                        shape.type_name()
                    ),
                    None,
                );
                continue;
            }
            // Checked with `${env.…}` read (an empty secret from the
            // environment is as wrong as an empty literal); references stay
            // unknown and skip the check until plan.
            let known = expr.evaluate(&|_, _| Some(Value::Unknown(String::new())), self.env);
            if let Some(check) = attribute.check
                && !known.has_unknown()
                && !known.is_null()
                && let Err(message) = check(&known)
            {
                self.error(
                    &expr.location,
                    Some(&addr),
                    format!("invalid value for `{name}`: {message}"),
                    None,
                );
                continue;
            }
            spec.args.insert(name, expr);
        }
        for attribute in &schema.attributes {
            // A field written but invalid was reported already; don't report it missing too.
            if attribute.mode == Mode::Required
                && !written.iter().any(|name| name == attribute.name)
            {
                let location = spec.location.clone();
                self.error(
                    &location,
                    Some(&addr),
                    format!("missing required field `{}`", attribute.name),
                    None,
                );
            }
        }
        Some(spec)
    }

    fn depends_on(&mut self, addr: &ResourceAddr, node: Node) -> Vec<ResourceAddr> {
        let NodeKind::List(items) = node.kind else {
            self.error(
                &node.location,
                Some(addr),
                "`depends_on` must be a list of resource addresses".into(),
                None,
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match &item.kind {
                NodeKind::String(text) => match text.parse::<ResourceAddr>() {
                    Ok(target) => out.push((target, item.location.clone())),
                    Err(error) => self.error(&item.location, Some(addr), error.to_string(), None),
                },
                _ => self.error(
                    &item.location,
                    Some(addr),
                    "`depends_on` entries must be addresses".into(),
                    None,
                ),
            }
        }
        // Checked once every file is loaded, in `check_references`.
        let targets = out.iter().map(|(target, _)| target.clone()).collect();
        self.pending_depends.extend(
            out.into_iter()
                .map(|(target, location)| (addr.clone(), target, location)),
        );
        targets
    }

    fn expr(&mut self, addr: &ResourceAddr, node: Node) -> Option<Expr> {
        let location = node.location.clone();
        let kind = match node.kind {
            NodeKind::Null => ExprKind::Literal(Value::Null),
            NodeKind::Bool(flag) => ExprKind::Literal(Value::Bool(flag)),
            NodeKind::Int(number) => ExprKind::Literal(Value::Int(number)),
            NodeKind::Float(number) => ExprKind::Literal(Value::Float(number)),
            NodeKind::String(text) => match Template::parse(&text) {
                Ok(template) => {
                    for part in &template.parts {
                        if let Part::Env(name) = part
                            && (self.env)(name).is_none()
                        {
                            self.error(
                                &location,
                                Some(addr),
                                format!("environment variable `{name}` is not set"),
                                Some(format!("export {name}=… before running jaam")),
                            );
                        }
                    }
                    ExprKind::Template(template)
                }
                Err(error) => {
                    self.error(&location, Some(addr), error.to_string(), None);
                    return None;
                }
            },
            NodeKind::List(items) => {
                let exprs: Vec<Option<Expr>> = items
                    .into_iter()
                    .map(|item| self.expr(addr, item))
                    .collect();
                ExprKind::List(exprs.into_iter().collect::<Option<Vec<_>>>()?)
            }
            NodeKind::Map(entries) => {
                let mut map = BTreeMap::new();
                for (key, value) in entries {
                    let name = scalar_text(&key);
                    if name.starts_with('$') {
                        self.error(
                            &key.location,
                            Some(addr),
                            format!("map keys may not start with `$`: `{name}`"),
                            None,
                        );
                        continue;
                    }
                    if let Some(expr) = self.expr(addr, value) {
                        map.insert(name, expr);
                    }
                }
                ExprKind::Map(map)
            }
        };
        Some(Expr { kind, location })
    }

    fn check_references(&mut self) {
        let mut found = Vec::new();
        for (addr, resource) in &self.config.resources {
            for (template, location) in resource.args.values().flat_map(Expr::templates) {
                for (target, attribute) in template.resource_refs() {
                    found.push((
                        addr.clone(),
                        target.clone(),
                        Some(attribute.to_owned()),
                        location.clone(),
                    ));
                }
            }
        }
        found.extend(
            std::mem::take(&mut self.pending_depends)
                .into_iter()
                .map(|(a, t, l)| (a, t, None, l)),
        );
        for (addr, target, attribute, location) in found {
            let Some(resource) = self.config.resources.get(&target) else {
                let names: Vec<String> = self
                    .config
                    .resources
                    .keys()
                    .map(ToString::to_string)
                    .collect();
                let hint = did_you_mean(&target.to_string(), names.iter().map(String::as_str))
                    .map(|m| format!("did you mean `{m}`?"));
                self.error(
                    &location,
                    Some(&addr),
                    format!("reference to undeclared resource `{target}`"),
                    hint,
                );
                continue;
            };
            let Some(attribute) = attribute else { continue };
            let Some(schema) = self.registry.schema(resource.addr.kind()) else {
                // Reported where the resource was declared or expanded.
                continue;
            };
            if schema.attribute(&attribute).is_none() {
                let hint = did_you_mean(&attribute, schema.attributes.iter().map(|a| a.name))
                    .map(|m| format!("did you mean `{m}`?"));
                self.error(
                    &location,
                    Some(&addr),
                    format!(
                        "`{target}` has no attribute `{attribute}` (kind `{}`)",
                        schema.kind
                    ),
                    hint,
                );
            }
        }
    }

    fn check_cycles(&mut self) {
        self.config.graph = self.config.build_graph();
        if let Err(cycle) = self.config.graph.topological_order() {
            let first = &cycle[0];
            let location = self.config.resources[first].location.clone();
            let path: Vec<String> = cycle
                .iter()
                .chain(std::iter::once(first))
                .map(|a| format!("`{a}`"))
                .collect();
            self.error(
                &location,
                Some(first),
                format!("dependency cycle: {}", path.join(" -> ")),
                Some("break the cycle by removing a reference or a `depends_on` entry".into()),
            );
        }
    }
}

fn scalar_text(node: &Node) -> String {
    match &node.kind {
        NodeKind::String(text) => text.clone(),
        NodeKind::Int(number) => number.to_string(),
        NodeKind::Bool(flag) => flag.to_string(),
        NodeKind::Float(number) => number.to_string(),
        NodeKind::Null => "null".to_owned(),
        NodeKind::List(_) | NodeKind::Map(_) => "(collection)".to_owned(),
    }
}

/// Evaluates a resource's arguments, applying schema defaults for unset ones.
pub fn evaluate_args(
    resource: &ResourceSpec,
    schema: &Schema,
    lookup: &dyn Fn(&ResourceAddr, &str) -> Option<Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> crate::value::Attrs {
    schema
        .arguments()
        .map(|attribute| {
            let value = resource.args.get(attribute.name).map_or_else(
                || attribute.default.clone().unwrap_or(Value::Null),
                |expr| expr.evaluate(lookup, env),
            );
            (attribute.name.to_owned(), value)
        })
        .collect()
}

#[cfg(test)]
mod generated_tests;
#[cfg(test)]
mod tests;
