//! `site`: one spec that deploys a GitHub repository, expanded like a module.
//!
//! ```yaml
//! site.blog:
//!   repo: acme/blog
//!   framework: auto          # the default; or nextjs | static | node
//!   domain: blog.example.com
//!   zone: example.com
//!   webhook_url: https://jaam.example.com/hooks/github
//! ```
//!
//! expands, when the specs load, into seven primitives whose addresses are the
//! site's plus their kind:
//!
//! | address | kind | what |
//! |---|---|---|
//! | `site.blog.log_group` | `log_group` | `/jaam/sites/<domain>`: build and app logs |
//! | `site.blog.iam_role` | `iam_role` | `jaam-site-<domain>` and its instance profile: the SSM core actions, its own log group, certificate, secrets and token parameters only (unless the site names `iam_instance_profile`) |
//! | `site.blog.security_group` | `security_group` | `jaam-site-<domain>`: 80 and 443 open to the world, 22 only from `ssh_from` (unless the site names `security_group_ids`) |
//! | `site.blog.instance` | `instance` | builds and serves the app; its user data is a small bootstrap (node, nginx, git, the CloudWatch agent, the site's user); its `files` — deploy script, env file, nginx, units, agent configuration — arrive over SSM and change in place; `revision` is the commit it serves |
//! | `site.blog.record` | `record` | `A <domain>` → the instance's public IP |
//! | `site.blog.certificate` | `certificate` | for `<domain>`, installed on the instance (with `https`, the default) |
//! | `site.blog.webhook` | `webhook` | push and pull_request deliveries to `webhook_url` (when set) |
//!
//! `jaam plan` and `jaam graph` show the expansion.
//!
//! # Arguments
//! Site arguments may read `${env.NAME}` but not other resources (they shape
//! the generated user data and files, which are fixed when the specs load).
//! - `repo` (`owner/name`), `branch` (default `main`), `repo_url` (the clone
//!   URL; default `https://github.com/<repo>.git`; `https://…` or
//!   `git@host:path`, never with credentials in it).
//! - `repo_token`: for a private repository, the name of an SSM SecureString
//!   parameter holding a token that may read it (a fine-grained token with
//!   "Contents: read", or a deploy token). The deploy script reads it on the
//!   instance at fetch time and gives it to git as an `http.extraHeader`
//!   through the environment of the fetch alone: it is never in argv, user
//!   data, state, plan output or the build log. The instance profile needs
//!   `ssm:GetParameter` on it.
//! - `framework`: `auto` (the default), `nextjs` (`npm start` behind nginx),
//!   `static` (the build output served by nginx with a fallback to
//!   `index.html` for client-side routes) or `node` (your `start` command
//!   behind nginx).
//!
//!   `auto` is decided for each commit from its `package.json` ([`detect`]):
//!   `next` → nextjs; `vite` → static from `dist`; `react-scripts` → static
//!   from `build`; a `start` script → node; no `package.json` → its files
//!   served as they are; otherwise static from `dist`. **Decision:** the
//!   instance detects it when it builds (the deploy script runs the same
//!   rules, rendered into it as JSON): what is built is always what the
//!   commit says, with any Git host, at no cost per plan. `jaam plan` and
//!   `jaam apply` show it as a note for each site deploying a new revision,
//!   reading that commit's `package.json` through the GitHub API (one call
//!   per changed site; none for unchanged ones; a failed read is a note),
//!   and the build log says which rule matched. Commands the spec names win
//!   over the detected framework's. The daemon does not add the note (no
//!   extra GitHub call on a push's path). Each release records what it was
//!   built as, and nginx serves it accordingly (`serve.conf`: static files
//!   through the `www` link, or the app through its upstream), so a
//!   repository that changes framework, or a rollback across the change, is
//!   served right.
//! - `install`, `build`, `start`: shell commands, with per-framework defaults
//!   ([`Framework::defaults`]); `output_dir` (static; default the
//!   framework's: `dist`, with `auto` the detected one);
//!   `node_version` (default 20); `port` (server apps; the deploy script uses
//!   it and the next one, alternately, for zero-downtime switches).
//! - `env`: plain variables, written to the instance's env file (visible in
//!   user data and state: nothing secret, so `${env.…}` is refused there).
//!   `secrets`: variable → SSM Parameter Store name; the deploy script reads
//!   them on the instance at deploy time, so their values are never in user
//!   data or state. (A secret taken from jaam's own environment would need a
//!   resource that writes it to Parameter Store first; that is left for later.)
//! - `domain`, `zone`, `https` (default true), `acme_directory`, `contact_email`.
//! - `certificate`: `own` (default: `site.NAME.certificate` for `domain`) or
//!   `wildcard`: the sites of one zone that say so share one certificate,
//!   `certificate.wildcard-<zone>` for `*.<zone>` and `<zone>`, issued once
//!   and installed on each of their instances. It keeps a busy domain under
//!   the CA's limits (Let's Encrypt: 50 certificates per registered domain
//!   per week) and serves any host of the zone. The sharing sites must agree
//!   on `acme_directory` and `contact_email`.
//! - `instance_type` (default `t3.micro`), `ami` (default the latest Amazon
//!   Linux 2023 through its SSM public parameter), `subnet_id`,
//!   `security_group_ids` (default: the site's own group, above; `vpc_id`
//!   puts it in another VPC than the default one, with a `subnet_id` there;
//!   `ssh_from: [CIDR, …]` opens port 22 to those sources only), `key_name`,
//!   `iam_instance_profile` (default: the site's own role, above; one named
//!   here needs SSM managed-instance permissions, `ssm:GetParameter` on the
//!   site's secrets and certificate, and CloudWatch Logs writes).
//! - `revision`: the commit to serve; by default the branch head at plan time,
//!   read through the GitHub API. A new revision is an in-place update of
//!   `site.blog.instance` that runs the deploy script over SSM.
//! - `webhook_url`, `webhook_secret` (sensitive; when unset jaam generates
//!   one into Parameter Store), `log_retention_days` (default 14),
//!   `keep_releases` (default 5).
//! - `previews`: pull request previews (below), e.g. `{enabled: true}`.
//!
//! # Previews
//! `previews: {enabled: true, domain: "pr-{number}.{domain}", max: 5,
//! forks: false, secrets: false}` (the defaults but `enabled`) serves every
//! open pull request into the site's branch at its own host, as Vercel and
//! Netlify do. **Decisions:**
//! - *What is a preview, in plan and state?* Not a resource of its own: the
//!   set of previews is derived from GitHub (as Argo CD's pull-request
//!   generator derives applications), so it is the `previews` argument of
//!   `site.NAME.instance`, resolved at plan time like the branch head — one
//!   conditional listing of open pull requests per repository and base —
//!   to pull request number → `{head, secrets, url}`. A preview that opens,
//!   moves or closes is an in-place update of the instance in `jaam plan`
//!   (`~ previews`), applied in the same SSM command as the revision's
//!   deploy (`deploy previews N=SHA...`, which serves exactly that set), and
//!   recorded through the journal like any change: state records the
//!   previews that serve (a failed preview build fails the apply naming the
//!   pull request, while the revision and the other previews are recorded as
//!   deployed), and an interrupted apply leaves the instance at most one
//!   idempotent command ahead of state, which the next apply brings back.
//! - *Which pull requests?* Open ones whose base is the site's branch: the
//!   newest `max` (by number; an older one is evicted when a newer opens).
//!   A fork's pull request (head in another repository) is not built unless
//!   `forks: true`, and then never with secrets.
//! - *How served?* Each preview is a release of the pull request's head
//!   (fetched from `refs/pull/N/head`, where GitHub keeps a fork's commits
//!   too) built on the site's instance — no new instance — with the site's
//!   `env` but, unless `secrets: true`, never its `secrets` (its build and
//!   its app never read them, and its release is never production's). A
//!   preview builds and runs as a system user of its own,
//!   `jaam-<name>-pr` ([`Site::preview_user`], made on first use), not the
//!   site's: otherwise a pull request's build could read the production
//!   app's secrets from `/proc/PID/environ` or change its releases (the
//!   hard-linked `node_modules` it starts from stay production's files,
//!   read-only to it). nftables keeps that user from the instance metadata
//!   service (the role's credentials read the site's secrets); the rule is
//!   set before every preview build and preview app start, so it is back
//!   after a reboot, and nftables is installed on first use if missing. nginx
//!   serves it from a server block of its own: static files from its own
//!   `current` link, or a server app on a port of its own (`port + 2` and
//!   up, one per preview; a new head restarts it there, so a preview — never
//!   production — may drop requests for a moment while it switches). The
//!   hosts share the wildcard record `record.previews-NAME` (`*.` + the
//!   pattern after its first label) and the site's own certificate, which
//!   names that wildcard too (DNS-01). A site sharing its zone's wildcard
//!   certificate cannot have previews (that certificate covers one label
//!   below the zone only): the loader says so.
//! - *When?* The daemon reconciles a site's previews on `pull_request`
//!   events (opened, synchronize, reopened, closed, edited) as it deploys a
//!   push — planning only the site's instance, at once — and every resync
//!   lists the open pull requests again, so a preview whose event was missed
//!   (the daemon was down) appears at the next resync or restart.
//! - Closing or merging the pull request removes its server block, its app
//!   and its directory; its release goes at the next prune.
//! - Each preview deploy is a GitHub deployment, environment
//!   `preview/pr-N`, with the preview's URL (daemon; see
//!   `jaam-daemon`'s `deployments`). `jaam previews site.NAME` lists them:
//!   number, head, state (`serving`, and against GitHub's open pull
//!   requests `pending`, `outdated` or `closing`) and URL.
//!
//! # On the instance
//! Everything lives under `/srv/jaam/<site>`: `repo.git` (a bare mirror),
//! `releases/<sha>-<key>` (one build each), `current` (a symlink to the release
//! being served, switched with one rename), `logs/build.log` and
//! `logs/app.log` (shipped to the log group as streams `build` and `app`).
//! `/opt/jaam/bin/deploy REVISION | rollback | current` is the deploy script
//! ([`deploy_script`]); a deploy waits for the user data to have finished
//! first.
//!
//! The user data ([`user_data`], under 4 KB) only bootstraps: packages, the
//! directories, the site's user, nginx started. The site's [`files`] are the
//! `instance`'s `files` argument: written over SSM in the deploy's own
//! command when their version (a content hash) is not the instance's, then
//! [`configure_script`] puts them to work (systemd, nginx, the log agent).
//! So an `env` edit, or a jaam release with a new deploy script, is an
//! update in place of `site.NAME.instance` (`~ files`, with a line diff in
//! the plan); the same instance redeploys its revision, and the deploy
//! script builds a new release when the env changed (a release is named by
//! its commit and a key of its env and commands). A changed bootstrap
//! (`node_version`, or a jaam upgrade) does not replace a running instance
//! either (`user_data_replace_on_change: false`): the plan notes it and
//! `jaam apply --replace site.NAME.instance` takes it.
//!
//! Builds keep a cache: npm's download cache lives in the site user's home
//! (`/srv/jaam/<site>/home/.npm`) across deploys; a release whose
//! `package.json` and `package-lock.json` are the serving release's starts
//! from a hard-linked copy of its `node_modules` (no install at all), and
//! the serving release's `.next/cache` is copied over (Turbopack's
//! persistent cache and TypeScript's `.tsbuildinfo`), as is the
//! `node_modules/.cache` of reused `node_modules` (where babel-loader or
//! eslint keep theirs): copies, never hard links, since tools rewrite their
//! caches in place, and reflinks where the filesystem has them, as Amazon
//! Linux 2023's XFS does. Only the serving release keeps these caches: the
//! releases kept for a rollback drop theirs at the prune, so a webpack
//! cache of hundreds of megabytes is on disk once, not once per release. If a build on the cached `node_modules`
//! or the carried-over `.next/cache` fails, it runs once more after a clean
//! install and without the `.next/cache`, so a corrupt or partial cache
//! never fails a deploy (a broken build then costs two builds); the build
//! log says which path ran.
//!
//! Builds fit the instance: the bootstrap adds 2 GiB of swap where memory
//! is under 2 GiB ([`swap_script`]), the build's Node heap is three quarters
//! of memory and swap (`NODE_OPTIONS=--max-old-space-size`, unless the env
//! sets it), and a build killed for memory (SIGKILL) fails saying so and
//! naming a bigger `instance_type`.
//!
//! A server app runs as the unit `jaam-site-<name>@<port>`; the serving
//! one is enabled, so it comes back with nginx after a reboot or stop/start.
//! nginx serves HTTP until the certificate is installed;
//! the certificate's install hook then enables HTTPS and redirects HTTP to it.
//!
//! # Privileges
//! The site's own code — `install`, `build` and the app server — runs as the
//! site's system user `jaam-<name>` ([`Site::user`], made by the user data,
//! home `/srv/jaam/<site>/home` for npm's cache). Root only fetches the
//! repository (with `repo_token`, which the build never sees), switches the
//! `current` symlink or nginx's upstream, reloads nginx and (re)starts units.
//! Releases are owned by the site's user (a server app may write its own
//! caches); the deploy script, nginx configuration, env files (0600) and TLS
//! keys (0600 in a 0700 directory; nginx's master reads them as root) are
//! root's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub mod checks;

use super::{Expr, ExprKind, Location, ResourceSpec, Template};
use crate::addr::ResourceAddr;
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Value};

/// The prefix of a revision resolved to a branch head at plan time
/// (`github:owner/repo@branch`; see the `instance` kind).
pub const BRANCH_HEAD: &str = "github:";

/// The AMI a site runs on unless it says otherwise.
pub const DEFAULT_AMI: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

/// The kinds of app a site builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framework {
    /// Detected for each commit from its `package.json` ([`detect`]), on the
    /// instance when it builds.
    Auto,
    /// Next.js, server-rendered: `npm start` behind nginx.
    Nextjs,
    /// A static build output served by nginx.
    Static,
    /// A Node server started with the site's `start` command.
    Node,
}

/// The commands a framework builds and starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commands {
    /// Dependencies.
    pub install: String,
    /// The build.
    pub build: String,
    /// The server (empty for static sites).
    pub start: String,
    /// What nginx serves of a static build (unused by server apps).
    pub output_dir: String,
}

const NPM_INSTALL: &str = "if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi";

/// The frameworks a site may name, in the order the docs list them.
pub const FRAMEWORKS: [Framework; 4] = [
    Framework::Auto,
    Framework::Nextjs,
    Framework::Static,
    Framework::Node,
];

impl Framework {
    /// The framework named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        FRAMEWORKS.into_iter().find(|f| f.name() == name)
    }

    /// Its name in specs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Nextjs => "nextjs",
            Self::Static => "static",
            Self::Node => "node",
        }
    }

    /// Whether the app is a server behind nginx (not static files; `auto`
    /// is known per commit only).
    pub fn is_server(self) -> bool {
        matches!(self, Self::Nextjs | Self::Node)
    }

    /// The default commands (`auto`: those of what it detects).
    pub fn defaults(self) -> Commands {
        let install = NPM_INSTALL.to_owned();
        match self {
            Self::Nextjs => Commands {
                install,
                build: "npm run build".into(),
                start: "npm start -- -p \"$PORT\"".into(),
                output_dir: ".next".into(),
            },
            Self::Static | Self::Auto => Commands {
                install,
                build: "npm run build".into(),
                start: String::new(),
                output_dir: "dist".into(),
            },
            Self::Node => Commands {
                install,
                build: "if grep -q '\"build\"' package.json; then npm run build; fi".into(),
                start: "npm start".into(),
                output_dir: "dist".into(),
            },
        }
    }
}

/// What `framework: auto` chose for a commit, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// The framework built and served.
    pub framework: Framework,
    /// A static build's output directory, when the rule says (Vite: `dist`).
    pub output_dir: Option<&'static str>,
    /// Which rule matched, for the plan and the build log.
    pub reason: String,
    /// Whether there is a `package.json` at all (none: the files are served
    /// as they are, with no install or build).
    pub package: bool,
}

/// One rule of [`detect`]: a dependency (or devDependency) or an npm script
/// that `package.json` names.
struct Rule {
    dependency: bool,
    name: &'static str,
    framework: Framework,
    output_dir: Option<&'static str>,
}

/// `framework: auto`'s rules, first match wins (Vercel's and Netlify's
/// order: a framework dependency before a bare `start` script).
const RULES: [Rule; 4] = [
    Rule {
        dependency: true,
        name: "next",
        framework: Framework::Nextjs,
        output_dir: None,
    },
    Rule {
        dependency: true,
        name: "vite",
        framework: Framework::Static,
        output_dir: Some("dist"),
    },
    Rule {
        dependency: true,
        name: "react-scripts",
        framework: Framework::Static,
        output_dir: Some("build"),
    },
    Rule {
        dependency: false,
        name: "start",
        framework: Framework::Node,
        output_dir: None,
    },
];

impl Rule {
    fn reason(&self) -> String {
        if self.dependency {
            format!("`{}` is a dependency in package.json", self.name)
        } else {
            format!("package.json has a `{}` script", self.name)
        }
    }
}

const NO_PACKAGE: &str = "no package.json: the repository's files are served as they are";
const NO_MATCH: &str = "no framework dependency and no start script in package.json";
const NOT_JSON: &str = "package.json is not JSON";

/// What `framework: auto` builds for a commit whose `package.json` is
/// `package_json` (`None`: the commit has none). The instance runs the
/// same rules on the commit it builds (the deploy script embeds
/// [`RULES`] as JSON), so the plan's note and the build agree.
pub fn detect(package_json: Option<&str>) -> Detected {
    let fallback = |reason: &str, package: bool| Detected {
        framework: Framework::Static,
        output_dir: None,
        reason: reason.to_owned(),
        package,
    };
    let Some(text) = package_json else {
        return Detected {
            output_dir: Some("."),
            ..fallback(NO_PACKAGE, false)
        };
    };
    let Ok(package) = serde_json::from_str::<serde_json::Value>(text) else {
        return fallback(NOT_JSON, true);
    };
    let names = |section: &str, name: &str| {
        package
            .get(section)
            .and_then(serde_json::Value::as_object)
            .is_some_and(|entries| entries.contains_key(name))
    };
    RULES
        .iter()
        .find(|rule| {
            if rule.dependency {
                names("dependencies", rule.name) || names("devDependencies", rule.name)
            } else {
                names("scripts", rule.name)
            }
        })
        .map_or_else(
            || fallback(NO_MATCH, true),
            |rule| Detected {
                framework: rule.framework,
                output_dir: rule.output_dir,
                reason: rule.reason(),
                package: true,
            },
        )
}

/// The instance's side of [`detect`]: a node program reading `package.json`
/// in its working directory, given [`detection_json`].
pub const DETECT_JS: &str = include_str!("detect.js");

/// The plan's notes of what `framework: auto` builds: for each site
/// instance of `plan` that deploys a new revision of a `github:` branch
/// with `framework: auto`, `read(repo, sha)` gives the commit's
/// `package.json` (`None`: it has none) and [`detect`] says what the
/// instance will build, e.g. "`site.blog.instance`: framework auto →
/// nextjs at 8a0f3bf (`next` is a dependency in package.json)". Reads run
/// eight at once, only for revisions that change (an unchanged site costs no
/// request); one that fails is a note saying so, never a failed plan (the
/// instance detects it when it builds, by the same rules).
pub async fn framework_notes<F, Fut>(
    config: &super::Config,
    plan: &crate::plan::Plan,
    read: F,
) -> Vec<String>
where
    F: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, String>>,
{
    use futures::StreamExt as _;
    let literal = |expr: &Expr| expr.evaluate(&|_, _| None, &|_| None);
    let wanted: Vec<(String, String, String)> = plan
        .changes
        .iter()
        .filter(|change| change.kind == "instance" && change.action.is_change())
        .filter_map(|change| {
            let after = change.after.as_ref()?;
            let sha = after.get("revision")?.as_str()?;
            let before = change.before.as_ref().and_then(|b| b.get("revision"));
            if !checks::is_commit(sha) || before.and_then(Value::as_str) == Some(sha) {
                return None;
            }
            let Some(Value::Map(files)) = after.get("files") else {
                return None;
            };
            let deploy = files.get(&format!("{BIN}/deploy"))?.as_str()?;
            if !deploy.contains("\nFRAMEWORK=auto\n") {
                return None;
            }
            let written = literal(config.resources().get(&change.addr)?.args.get("revision")?);
            let (repo, _) = written
                .as_str()?
                .strip_prefix(BRANCH_HEAD)?
                .split_once('@')?;
            Some((change.addr.to_string(), repo.to_owned(), sha.to_owned()))
        })
        .collect();
    let read = &read;
    futures::stream::iter(wanted)
        .map(|(addr, repo, sha)| async move {
            let short = &sha[..7];
            match read(repo, sha.clone()).await {
                Ok(package) => {
                    let detected = detect(package.as_deref());
                    format!(
                        "`{addr}`: framework auto → {} at {short} ({})",
                        detected.framework.name(),
                        detected.reason
                    )
                }
                Err(error) => format!(
                    "`{addr}`: framework auto: package.json at {short} could not be read ({error}); \
                     the instance detects the framework when it builds"
                ),
            }
        })
        .buffered(8)
        .collect()
        .await
}

/// [`RULES`] and the fallbacks as the JSON the deploy script's detector reads.
pub fn detection_json() -> String {
    let rules: Vec<serde_json::Value> = RULES
        .iter()
        .map(|rule| {
            serde_json::json!({
                "section": if rule.dependency { "dependencies" } else { "scripts" },
                "name": rule.name,
                "framework": rule.framework.name(),
                "output_dir": rule.output_dir.unwrap_or_default(),
                "reason": rule.reason(),
            })
        })
        .collect();
    serde_json::json!({
        "rules": rules,
        "missing": NO_PACKAGE,
        "invalid": NOT_JSON,
        "none": NO_MATCH,
    })
    .to_string()
}

fn check_certificate(value: &Value) -> Result<(), String> {
    crate::schema::one_of(value, &["own", "wildcard"], "a certificate mode")
}

/// The address of the wildcard record of site `name`'s previews.
pub fn previews_record(name: &str) -> ResourceAddr {
    ResourceAddr::new("record", format!("previews-{name}"))
        .expect("a site name makes valid addresses")
}

/// The address of the wildcard certificate the sites of `zone` share
/// (`certificate: wildcard`): `certificate.wildcard-<zone with dashes>`.
pub fn wildcard_certificate(zone: &str) -> ResourceAddr {
    format!(
        "certificate.wildcard-{}",
        zone.trim_end_matches('.').replace('.', "-")
    )
    .parse()
    .expect("a checked zone makes a valid address")
}

fn check_framework(value: &Value) -> Result<(), String> {
    let names: Vec<&str> = FRAMEWORKS.iter().map(|f| f.name()).collect();
    crate::schema::one_of(value, &names, "a framework jaam builds")
}

/// The instance's `previews` as a site writes it: which pull requests to
/// serve, listed at plan time (the `instance` kind resolves it to the
/// previews themselves: see its docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewSource {
    /// `owner/name`.
    pub repo: String,
    /// The base branch of the pull requests.
    pub base: String,
    /// The most previews: the newest pull requests win.
    pub max: i64,
    /// Whether pull requests from forks are served.
    pub forks: bool,
    /// Whether previews (never a fork's) read the site's secrets.
    pub secrets: bool,
    /// A preview's URL, with `{number}`.
    pub url: String,
}

impl PreviewSource {
    /// As the instance's argument.
    pub fn to_value(&self) -> Value {
        Value::Map(BTreeMap::from([
            (
                "pulls_of".to_owned(),
                Value::String(format!("{}@{}", self.repo, self.base)),
            ),
            ("max".to_owned(), Value::Int(self.max)),
            ("forks".to_owned(), Value::Bool(self.forks)),
            ("secrets".to_owned(), Value::Bool(self.secrets)),
            ("url".to_owned(), Value::String(self.url.clone())),
        ]))
    }

    /// Reads [`PreviewSource::to_value`]'s map; `None` for anything else
    /// (resolved previews).
    pub fn from_value(value: &Value) -> Option<Self> {
        let Value::Map(map) = value else { return None };
        let (repo, base) = map.get("pulls_of")?.as_str()?.split_once('@')?;
        let flag = |name: &str| map.get(name) == Some(&Value::Bool(true));
        Some(Self {
            repo: repo.to_owned(),
            base: base.to_owned(),
            max: map.get("max").and_then(Value::as_int).unwrap_or(5),
            forks: flag("forks"),
            secrets: flag("secrets"),
            url: map
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

fn preview_source(site: &Site, previews: &Previews) -> Value {
    PreviewSource {
        repo: site.repo.clone(),
        base: site.branch.clone(),
        max: previews.max,
        forks: previews.forks,
        secrets: previews.secrets,
        url: format!(
            "{}://{}",
            if site.https { "https" } else { "http" },
            previews.pattern
        ),
    }
    .to_value()
}

/// The `site` schema (a composite: checked like a kind, then expanded).
pub fn schema() -> Schema {
    let strings = || Type::List(Box::new(Type::String));
    let string_map = || Type::Map(Box::new(Type::String));
    Schema {
        kind: "site",
        attributes: vec![
            Attribute::required("repo", Type::String).checked(checks::repo),
            Attribute::optional("branch", Type::String)
                .default_value("main")
                .checked(checks::branch),
            Attribute::optional("repo_url", Type::String).checked(checks::repo_url),
            Attribute::optional("repo_token", Type::String).checked(checks::parameter),
            Attribute::optional("framework", Type::String)
                .default_value("auto")
                .checked(check_framework),
            Attribute::optional("install", Type::String).checked(checks::one_line),
            Attribute::optional("build", Type::String).checked(checks::one_line),
            Attribute::optional("start", Type::String).checked(checks::one_line),
            Attribute::optional("output_dir", Type::String).checked(checks::output_dir),
            Attribute::optional("node_version", Type::String)
                .default_value("20")
                .checked(checks::node_version),
            Attribute::optional("port", Type::Int)
                .default_value(3000)
                .checked(checks::port),
            Attribute::optional("env", string_map())
                .default_value(Value::Map(BTreeMap::new()))
                .checked(checks::env),
            Attribute::optional("secrets", string_map())
                .default_value(Value::Map(BTreeMap::new()))
                .checked(checks::secrets),
            Attribute::required("domain", Type::String).checked(checks::domain),
            Attribute::required("zone", Type::String).checked(checks::domain),
            Attribute::optional("https", Type::Bool).default_value(true),
            Attribute::optional("certificate", Type::String)
                .default_value("own")
                .checked(check_certificate),
            Attribute::optional("acme_directory", Type::String),
            Attribute::optional("contact_email", Type::String),
            Attribute::optional("instance_type", Type::String).default_value("t3.micro"),
            Attribute::optional("ami", Type::String).default_value(DEFAULT_AMI),
            Attribute::optional("subnet_id", Type::String),
            Attribute::optional("security_group_ids", strings()),
            Attribute::optional("vpc_id", Type::String),
            Attribute::optional("ssh_from", strings()).checked(checks::cidrs),
            Attribute::optional("key_name", Type::String),
            Attribute::optional("iam_instance_profile", Type::String),
            Attribute::optional("revision", Type::String).checked(checks::revision),
            Attribute::optional("webhook_url", Type::String),
            Attribute::optional("webhook_secret", Type::String)
                .sensitive()
                .checked(checks::webhook_secret),
            Attribute::optional("log_retention_days", Type::Int).default_value(14),
            Attribute::optional("keep_releases", Type::Int)
                .default_value(5)
                .checked(checks::keep_releases),
            Attribute::optional("previews", Type::Document).checked(checks::previews),
        ],
        replace_order: ReplaceOrder::CreateThenDelete,
        adoptable: false,
        in_flight_grace: std::time::Duration::ZERO,
    }
}

/// A site's arguments, evaluated (defaults applied).
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The site's name (`blog` in `site.blog`).
    pub name: String,
    /// `owner/name`.
    pub repo: String,
    /// The branch deployed.
    pub branch: String,
    /// The clone URL.
    pub repo_url: String,
    /// The SSM parameter holding a token for a private repository.
    pub repo_token: Option<String>,
    /// The framework (`Auto`: detected per commit on the instance).
    pub framework: Framework,
    /// Install, build and start commands and the static output directory:
    /// the spec's, else the framework's defaults (with `auto`, those not in
    /// [`Site::named`] are the detected framework's, on the instance).
    pub commands: Commands,
    /// Which of `install`, `build`, `start` and `output_dir` the spec names.
    pub named: Vec<&'static str>,
    /// Node's major version.
    pub node_version: String,
    /// The first of the two ports a server app alternates between.
    pub port: i64,
    /// Plain environment variables.
    pub env: BTreeMap<String, String>,
    /// Environment variables read from SSM Parameter Store on the instance.
    pub secrets: BTreeMap<String, String>,
    /// The served domain.
    pub domain: String,
    /// The Route53 zone.
    pub zone: String,
    /// Whether the site gets a certificate.
    pub https: bool,
    /// Whether it shares its zone's wildcard certificate instead of its own.
    pub wildcard: bool,
    /// Releases kept on the instance.
    pub keep_releases: i64,
    /// Preview deployments of pull requests, when enabled.
    pub previews: Option<Previews>,
}

/// A site's `previews` (see the module docs, "Previews").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previews {
    /// The preview domain with `{number}` (`{domain}` already filled in).
    pub pattern: String,
    /// The most previews kept: the newest pull requests win.
    pub max: i64,
    /// Whether pull requests from forks are built (never with secrets).
    pub forks: bool,
    /// Whether previews get the site's `secrets`.
    pub secrets: bool,
}

impl Previews {
    /// The default domain pattern.
    pub const PATTERN: &'static str = "pr-{number}.{domain}";

    /// Reads `previews` of a site serving `domain`; `None` unless enabled.
    pub fn from_value(value: Option<&Value>, domain: &str) -> Option<Self> {
        let Some(Value::Map(map)) = value else {
            return None;
        };
        let flag = |name: &str, default: bool| match map.get(name) {
            Some(Value::Bool(on)) => *on,
            _ => default,
        };
        if !flag("enabled", false) {
            return None;
        }
        let pattern = map
            .get("domain")
            .and_then(Value::as_str)
            .unwrap_or(Self::PATTERN)
            .replace("{domain}", domain);
        Some(Self {
            pattern,
            max: map.get("max").and_then(Value::as_int).unwrap_or(5),
            forks: flag("forks", false),
            secrets: flag("secrets", false),
        })
    }

    /// The domain of pull request `number`'s preview.
    pub fn host(&self, number: u64) -> String {
        self.pattern.replace("{number}", &number.to_string())
    }

    /// The wildcard name every preview falls under (`*.blog.example.com`):
    /// the record's and the certificate's.
    pub fn wildcard(&self) -> String {
        let rest = self.pattern.split_once('.').map_or("", |(_, rest)| rest);
        format!("*.{rest}")
    }
}

fn text(attrs: &Attrs, name: &str) -> Option<String> {
    attrs.get(name).and_then(Value::as_str).map(str::to_owned)
}

impl Site {
    /// Reads a site from its evaluated arguments.
    pub fn from_attrs(name: &str, attrs: &Attrs) -> Self {
        let repo = text(attrs, "repo").unwrap_or_default();
        let framework = text(attrs, "framework")
            .and_then(|f| Framework::parse(&f))
            .unwrap_or(Framework::Auto);
        let defaults = framework.defaults();
        let named: Vec<&'static str> = ["install", "build", "start", "output_dir"]
            .into_iter()
            .filter(|name| attrs.get(*name).is_some_and(|value| !value.is_null()))
            .collect();
        Self {
            name: name.to_owned(),
            branch: text(attrs, "branch").unwrap_or_else(|| "main".into()),
            repo_url: text(attrs, "repo_url")
                .unwrap_or_else(|| format!("https://github.com/{repo}.git")),
            repo_token: text(attrs, "repo_token"),
            repo,
            framework,
            commands: Commands {
                install: text(attrs, "install").unwrap_or(defaults.install),
                build: text(attrs, "build").unwrap_or(defaults.build),
                start: text(attrs, "start").unwrap_or(defaults.start),
                output_dir: text(attrs, "output_dir").unwrap_or(defaults.output_dir),
            },
            named,
            node_version: text(attrs, "node_version").unwrap_or_else(|| "20".into()),
            port: attrs.get("port").and_then(Value::as_int).unwrap_or(3000),
            env: crate::value::string_map(attrs.get("env")),
            secrets: crate::value::string_map(attrs.get("secrets")),
            domain: text(attrs, "domain").unwrap_or_default(),
            zone: text(attrs, "zone").unwrap_or_default(),
            https: attrs.get("https") != Some(&Value::Bool(false)),
            wildcard: text(attrs, "certificate").as_deref() == Some("wildcard"),
            keep_releases: attrs
                .get("keep_releases")
                .and_then(Value::as_int)
                .unwrap_or(5),
            previews: Previews::from_value(
                attrs.get("previews"),
                text(attrs, "domain").as_deref().unwrap_or_default(),
            ),
        }
    }

    /// Where the site lives on its instance.
    pub fn root(&self) -> String {
        format!("/srv/jaam/{}", self.name)
    }

    /// The system user its install, build and app server run as:
    /// `jaam-<name>` (lowercase; a hash when that would be too long for
    /// `useradd`).
    pub fn user(&self) -> String {
        self.user_with("")
    }

    /// The system user its previews build and run as: `jaam-<name>-pr`, not
    /// the site's, so a pull request's code can neither read the production
    /// app's environment (`/proc/PID/environ`) nor change its releases.
    pub fn preview_user(&self) -> String {
        self.user_with("-pr")
    }

    /// `jaam-<name><suffix>`, within `useradd`'s 32 characters.
    fn user_with(&self, suffix: &str) -> String {
        let name: String = self
            .name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        if name.len() + suffix.len() <= 27 {
            format!("jaam-{name}{suffix}")
        } else {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(self.name.as_bytes());
            format!("jaam-{}{suffix}", &hex::encode(digest)[..12])
        }
    }

    /// The name of its own IAM role, instance profile and security group:
    /// `jaam-site-<domain>` (a hash when that is over IAM's 64 characters).
    pub fn aws_name(&self) -> String {
        let name = format!("jaam-site-{}", self.domain);
        if name.len() <= 64 {
            name
        } else {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(self.domain.as_bytes());
            format!("jaam-site-{}", &hex::encode(digest)[..16])
        }
    }

    /// The log group of its build and app logs.
    pub fn log_group(&self) -> String {
        format!("/jaam/sites/{}", self.domain)
    }

    /// The directory its certificate files are installed in (see the
    /// `certificate` kind: `/etc/jaam/tls/<name>` for `site.<name>.certificate`).
    pub fn tls_dir(&self) -> String {
        format!("/etc/jaam/tls/{}", self.certificate().name())
    }

    /// The certificate it serves: its own (`site.<name>.certificate`) or its
    /// zone's shared wildcard one ([`wildcard_certificate`]).
    pub fn certificate(&self) -> ResourceAddr {
        if self.wildcard {
            wildcard_certificate(&self.zone)
        } else {
            format!("site.{}.certificate", self.name)
                .parse()
                .expect("a site name makes valid addresses")
        }
    }
}

/// Quotes `text` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The deploy script for `site`, rooted at `root` (`Site::root` on instances).
pub fn deploy_script(site: &Site, root: &str) -> String {
    // An explicit framework's commands are resolved here; `auto` leaves
    // those the spec does not name to the framework detected per commit.
    let named = if site.framework == Framework::Auto {
        site.named.join(" ")
    } else {
        "install build start output_dir".to_owned()
    };
    include_str!("deploy.sh")
        .replace("@@NAME@@", &shell_quote(&site.name))
        .replace("@@USER@@", &site.user())
        .replace("@@PREVIEW_USER@@", &site.preview_user())
        .replace("@@ROOT@@", &shell_quote(root))
        .replace("@@REPO_URL@@", &shell_quote(&site.repo_url))
        .replace(
            "@@REPO_TOKEN@@",
            &shell_quote(site.repo_token.as_deref().unwrap_or_default()),
        )
        .replace("@@FRAMEWORK@@", site.framework.name())
        .replace("@@NAMED@@", &shell_quote(&named))
        .replace("@@INSTALL@@", &shell_quote(&site.commands.install))
        .replace("@@BUILD@@", &shell_quote(&site.commands.build))
        .replace("@@START@@", &shell_quote(&site.commands.start))
        .replace("@@OUTPUT_DIR@@", &shell_quote(&site.commands.output_dir))
        .replace("@@FRAMEWORK_DEFAULTS@@", &framework_defaults())
        .replace("@@DETECTION@@", &shell_quote(&detection_json()))
        .replace("@@DETECT_JS@@", &shell_quote(DETECT_JS))
        .replace("@@PORT_A@@", &site.port.to_string())
        .replace("@@PORT_B@@", &(site.port + 1).to_string())
        .replace("@@KEEP@@", &site.keep_releases.max(1).to_string())
        .replace(
            "@@PREVIEW_HOST@@",
            &shell_quote(site.previews.as_ref().map_or("", |p| p.pattern.as_str())),
        )
        .replace("@@PREVIEW_PORT@@", &(site.port + 2).to_string())
        .replace(
            "@@PREVIEW_MAX@@",
            &site.previews.as_ref().map_or(0, |p| p.max).to_string(),
        )
}

/// The deploy script's `framework_defaults FRAMEWORK`: sets `D_INSTALL`,
/// `D_BUILD`, `D_START` and `D_OUTPUT_DIR` from [`Framework::defaults`].
fn framework_defaults() -> String {
    // The commands run later through `bash -c`: their `$` expand then.
    let mut out =
        String::from("# shellcheck disable=SC2016\nframework_defaults() {\n  case \"$1\" in\n");
    for framework in [Framework::Nextjs, Framework::Static, Framework::Node] {
        let d = framework.defaults();
        let _ = write!(
            out,
            "    {name})\n      D_INSTALL={install}\n      D_BUILD={build}\n      D_START={start}\n      \
             D_OUTPUT_DIR={output}\n      ;;\n",
            name = framework.name(),
            install = shell_quote(&d.install),
            build = shell_quote(&d.build),
            start = shell_quote(&d.start),
            output = shell_quote(&d.output_dir),
        );
    }
    out.push_str("    *) fail \"unknown framework $1\" ;;\n  esac\n}");
    out
}

/// Where nginx listens and finds the site (instances: port 80 and `Site::root`).
#[derive(Clone, Debug)]
pub struct NginxLayout {
    /// `listen` of the plain-HTTP server.
    pub listen: String,
    /// The site's root directory.
    pub root: String,
}

fn ident(name: &str) -> String {
    name.replace('-', "_")
}

/// How nginx serves a release of `site`: its static files (through the
/// `www` link, `current/<output_dir>`), or its server app through the
/// site's upstream. The deploy script puts the one that fits the release it
/// switches to at `<root>/serve.conf` (with `auto`, that changes with the
/// commit); both server blocks include it.
pub fn serve_conf(site: &Site, root: &str, server: bool) -> String {
    if server {
        format!(
            "# jaam site {name}: a server app (generated by jaam; do not edit)\nlocation / {{\n    \
             proxy_pass http://jaam_site_{id};\n    proxy_http_version 1.1;\n    proxy_set_header Host $host;\n    \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    \
             proxy_set_header X-Forwarded-Proto $scheme;\n    proxy_next_upstream error timeout;\n}}\n",
            name = site.name,
            id = ident(&site.name)
        )
    } else {
        format!(
            "# jaam site {name}: static files (generated by jaam; do not edit)\nroot {root}/www;\n\
             index index.html;\nlocation / {{\n    try_files $uri $uri/ /index.html;\n}}\n",
            name = site.name,
        )
    }
}

fn upstream(site: &Site, root: &str) -> String {
    format!(
        "upstream jaam_site_{} {{\n    include {root}/upstream.conf;\n}}\n\n",
        ident(&site.name)
    )
}

/// The nginx configuration that serves `site` over plain HTTP.
pub fn nginx_conf(site: &Site, layout: &NginxLayout) -> String {
    format!(
        "# jaam site {name} (generated by jaam; do not edit)\n{upstream}server {{\n    listen {listen};\n    \
         server_name {domain};\n    include {root}/serve.conf;\n}}\n{previews}",
        name = site.name,
        upstream = upstream(site, &layout.root),
        listen = layout.listen,
        domain = site.domain,
        root = layout.root,
        previews = preview_include(site, &layout.root, "http"),
    )
}

/// The previews' server blocks the deploy script writes (none without
/// previews).
fn preview_include(site: &Site, root: &str, scheme: &str) -> String {
    if site.previews.is_some() {
        format!("\n# pull request previews\ninclude {root}/previews.d/{scheme}/*.conf;\n")
    } else {
        String::new()
    }
}

/// The templates of a preview's files, by name under the site's root: its
/// server blocks (HTTP, and HTTPS once the certificate is installed) and
/// what it serves (static files or its app). The deploy script fills in
/// `@@N@@` (the pull request), `@@HOST@@`, `@@DIR@@` and `@@PORT@@`.
pub fn preview_templates(site: &Site, layout: &NginxLayout) -> Vec<(&'static str, String)> {
    let head = |what: &str| {
        format!(
            "# jaam site {name}: {what} of the preview of pull request #@@N@@ (generated by jaam; do not edit)\n",
            name = site.name
        )
    };
    vec![
        (
            "preview-http.conf",
            format!(
                "{head}server {{\n    listen {listen};\n    server_name @@HOST@@;\n    include @@DIR@@/serve.conf;\n}}",
                head = head("the server block"),
                listen = layout.listen,
            ),
        ),
        (
            "preview-https.conf",
            format!(
                "{head}server {{\n    listen {listen};\n    server_name @@HOST@@;\n    location / {{\n        \
                 return 301 https://$host$request_uri;\n    }}\n}}\n\nserver {{\n    listen 443 ssl;\n    \
                 server_name @@HOST@@;\n    ssl_certificate {tls}/fullchain.pem;\n    \
                 ssl_certificate_key {tls}/privkey.pem;\n    include @@DIR@@/serve.conf;\n}}",
                head = head("the server blocks"),
                listen = layout.listen,
                tls = site.tls_dir(),
            ),
        ),
        (
            "preview-serve-static.conf",
            format!(
                "{head}root @@DIR@@/www;\nindex index.html;\nlocation / {{\n    try_files $uri $uri/ /index.html;\n}}",
                head = head("static files"),
            ),
        ),
        (
            "preview-serve-server.conf",
            format!(
                "{head}location / {{\n    proxy_pass http://127.0.0.1:@@PORT@@;\n    proxy_http_version 1.1;\n    \
                 proxy_set_header Host $host;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    \
                 proxy_set_header X-Forwarded-Proto $scheme;\n}}",
                head = head("the app"),
            ),
        ),
    ]
}

/// The nginx configuration once the certificate is installed: HTTPS, and
/// HTTP redirected to it.
pub fn nginx_https_conf(site: &Site, layout: &NginxLayout) -> String {
    format!(
        "# jaam site {name}, with HTTPS (generated by jaam; do not edit)\n{upstream}server {{\n    listen {listen};\n    \
         server_name {domain};\n    location / {{\n        return 301 https://$host$request_uri;\n    }}\n}}\n\n\
         server {{\n    listen 443 ssl;\n    server_name {domain};\n    \
         ssl_certificate {tls}/fullchain.pem;\n    ssl_certificate_key {tls}/privkey.pem;\n    \
         include {root}/serve.conf;\n}}\n{previews}",
        name = site.name,
        upstream = upstream(site, &layout.root),
        listen = layout.listen,
        domain = site.domain,
        tls = site.tls_dir(),
        root = layout.root,
        previews = preview_include(site, &layout.root, "https"),
    )
}

/// The CloudWatch agent configuration shipping the site's logs.
pub fn cloudwatch_agent_config(site: &Site) -> String {
    let root = site.root();
    let group = site.log_group();
    serde_json::to_string_pretty(&serde_json::json!({
        "logs": {"logs_collected": {"files": {"collect_list": [
            {"file_path": format!("{root}/logs/build.log"), "log_group_name": group, "log_stream_name": "build"},
            {"file_path": format!("{root}/logs/app.log"), "log_group_name": group, "log_stream_name": "app"},
        ]}}}
    }))
    .expect("static JSON")
}

/// The script the deploy script runs first: reads the site's `secrets` from
/// SSM Parameter Store into a 0600 env file on the instance.
///
/// # Guarantees
/// Every read is checked on its own (a failing command substitution inside
/// an argument does not stop a `set -e` script): when one parameter cannot be
/// read, the script names it, leaves the env file the running release uses as
/// it was, and exits non-zero, which fails the deploy.
pub fn fetch_secrets_script(site: &Site) -> String {
    let mut out = format!(
        "#!/bin/bash\n# jaam site {name}: secrets from SSM Parameter Store (generated by jaam; do not edit)\n\
         set -euo pipefail\numask 077\nROOT=\"${{JAAM_SITE_ROOT:-{root}}}\"\n\
         NEW=\"$ROOT/env.secrets.new\"\ntrap 'rm -f \"$NEW\"' EXIT\n: >\"$NEW\"\n\n\
         # Appends NAME=value for parameter $2, or fails naming it.\n\
         read_secret() {{\n  local value\n  \
         if ! value=$(aws ssm get-parameter --with-decryption --name \"$2\" \\\n      \
         --query Parameter.Value --output text); then\n    \
         echo \"jaam: cannot read secret $1 from SSM parameter $2; the running release keeps its environment\" >&2\n    \
         exit 1\n  fi\n  printf '%s=%q\\n' \"$1\" \"$value\" >>\"$NEW\"\n}}\n\n",
        name = site.name,
        root = site.root(),
    );
    for (name, parameter) in &site.secrets {
        let _ = writeln!(
            out,
            "read_secret {name} {parameter}",
            name = shell_quote(name),
            parameter = shell_quote(parameter)
        );
    }
    out.push_str("mv \"$NEW\" \"$ROOT/env.secrets\"\n");
    out
}

/// The certificate's install hook: switches nginx to HTTPS.
pub fn on_install_script(site: &Site) -> String {
    format!(
        "#!/bin/bash\n# jaam site {name}: the certificate is installed; serve HTTPS (generated by jaam)\n\
         set -euo pipefail\ncp {root}/nginx-https.conf /etc/nginx/conf.d/jaam-{name}.conf\nnginx -t\n\
         systemctl reload nginx\n",
        name = site.name,
        root = site.root()
    )
}

/// Every script jaam generates for `site`, by name, for linting.
pub fn scripts(site: &Site) -> Vec<(&'static str, String)> {
    vec![
        ("user-data", user_data(site)),
        ("deploy", deploy_script(site, &site.root())),
        ("fetch-secrets", fetch_secrets_script(site)),
        ("on-install", on_install_script(site)),
        ("configure", configure_script(site)),
    ]
}

/// Where the site's files go (see [`files`]).
const BIN: &str = "/opt/jaam/bin";

/// The command the instance runs after the site's files changed.
pub fn configure_command() -> String {
    format!("{BIN}/configure")
}

/// The env file: one `NAME='value'` line per `env` entry.
pub fn env_file(site: &Site) -> String {
    let mut env = String::new();
    for (name, value) in &site.env {
        let _ = writeln!(env, "{name}={}", shell_quote(value));
    }
    env
}

/// The systemd unit template of a server app (`jaam-site-<name>@<port>`).
pub fn app_unit(site: &Site) -> String {
    format!(
        "[Unit]\nDescription=jaam site {name} on port %i\nAfter=network.target\n\n[Service]\n\
         ExecStart={BIN}/deploy run %i\nRestart=on-failure\nStandardOutput=append:{root}/logs/app.log\n\
         StandardError=append:{root}/logs/app.log\n\n[Install]\nWantedBy=multi-user.target\n",
        name = site.name,
        root = site.root(),
    )
}

/// Run after the site's files changed ([`configure_command`]): systemd
/// re-reads the unit, nginx takes the configuration that fits (HTTPS once
/// the certificate is installed) and reloads, the log agent re-reads its
/// configuration. The running app keeps its process until the next deploy
/// switches releases.
pub fn configure_script(site: &Site) -> String {
    let root = site.root();
    format!(
        "#!/bin/bash\n# jaam site {name}: puts its delivered files to work (generated by jaam; do not edit)\n\
         set -euo pipefail\nsystemctl daemon-reload\n\
         if [ ! -f {root}/upstream.conf ]; then\n  printf 'server 127.0.0.1:%s;\\n' {port} >{root}/upstream.conf\nfi\n\
         # Before the first deploy (or from a jaam that had no serve.conf): what the\n\
         # framework serves; the deploy script sets it for each release it switches to.\n\
         if [ ! -f {root}/serve.conf ]; then\n  cp {root}/serve-{mode}.conf {root}/serve.conf\nfi\n\
         if [ ! -L {root}/www ]; then\n  ln -sfn current/{output} {root}/www\nfi\n\
         {previews}\
         if [ -f {tls}/fullchain.pem ]; then\n  cp {root}/nginx-https.conf /etc/nginx/conf.d/jaam-{name}.conf\n\
         else\n  cp {root}/nginx.conf /etc/nginx/conf.d/jaam-{name}.conf\nfi\nnginx -t\n\
         if systemctl is-active --quiet nginx; then\n  systemctl reload nginx\nelse\n  systemctl enable --now --quiet nginx\nfi\n\
         /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 \\\n  \
         -c file:/opt/aws/amazon-cloudwatch-agent/etc/jaam-{name}.json -s\n",
        name = site.name,
        port = site.port,
        tls = site.tls_dir(),
        mode = if site.framework.is_server() {
            "server"
        } else {
            "static"
        },
        output = shell_quote(&site.commands.output_dir),
        previews = if site.previews.is_some() {
            format!("mkdir -p {root}/previews.d/http {root}/previews.d/https\n")
        } else {
            String::new()
        },
    )
}

/// The site's files on its instance, by path: the deploy and secrets
/// scripts, the env file, the app's unit, nginx's two configurations, the
/// certificate's install hook, the log agent's configuration and the
/// [`configure_script`]. Delivered over SSM (the `instance` kind's
/// `files`), so a change of any — an `env` edit, a new jaam — is an update
/// in place, never a new instance.
pub fn files(site: &Site) -> BTreeMap<String, String> {
    let root = site.root();
    let layout = NginxLayout {
        listen: "80".into(),
        root: root.clone(),
    };
    let name = &site.name;
    let mut files = BTreeMap::from([
        (format!("{BIN}/deploy"), deploy_script(site, &root)),
        (format!("{BIN}/fetch-secrets"), fetch_secrets_script(site)),
        (format!("{BIN}/configure"), configure_script(site)),
        (format!("{root}/env"), env_file(site)),
        (
            format!("/etc/systemd/system/jaam-site-{name}@.service"),
            app_unit(site),
        ),
        (format!("{root}/nginx.conf"), nginx_conf(site, &layout)),
        (
            format!("{root}/serve-static.conf"),
            serve_conf(site, &root, false),
        ),
        (
            format!("{root}/serve-server.conf"),
            serve_conf(site, &root, true),
        ),
        (
            format!("{root}/nginx-https.conf"),
            nginx_https_conf(site, &layout),
        ),
        (
            format!("{}/on-install", site.tls_dir()),
            on_install_script(site),
        ),
        (
            format!("/opt/aws/amazon-cloudwatch-agent/etc/jaam-{name}.json"),
            cloudwatch_agent_config(site) + "\n",
        ),
    ]);
    if site.previews.is_some() {
        for (file, text) in preview_templates(site, &layout) {
            files.insert(format!("{root}/{file}"), text + "\n");
        }
    }
    files
}

/// The bootstrap's swap: 2 GiB at `swapfile` (recorded in `fstab`) when the
/// instance has less than 2 GiB of memory and no swap yet, so a build does
/// not die for memory on a t3.micro. `JAAM_MEMINFO` reads another meminfo
/// (tests).
pub fn swap_script(swapfile: &str, fstab: &str) -> String {
    format!(
        "# Builds need memory: 2 GiB of swap where there is less than 2 GiB.\n\
         if [ \"$(awk '/^MemTotal:/ {{print $2}}' \"${{JAAM_MEMINFO:-/proc/meminfo}}\")\" -lt 2000000 ] &&\n  \
         [ -z \"$(swapon --show=NAME --noheadings)\" ]; then\n  \
         if fallocate -l 2G {swapfile} && chmod 0600 {swapfile} && mkswap {swapfile} && swapon {swapfile}; then\n    \
         echo '{swapfile} none swap sw 0 0' >>{fstab}\n  \
         else\n    echo 'jaam: could not add swap; builds have the memory there is' >&2\n  fi\nfi\n"
    )
}

/// The instance's user data: a small bootstrap that installs the packages
/// (node, nginx, git, the CloudWatch agent), makes the site's directories
/// and system user and starts nginx. Everything that names the app — the
/// scripts, the env file, nginx's server block — is in [`files`].
pub fn user_data(site: &Site) -> String {
    format!(
        r#"#!/bin/bash
# jaam site {name}: instance bootstrap (generated by jaam; do not edit).
# The site's files (deploy script, env, nginx, units) arrive over SSM.
set -euo pipefail

dnf install -y nginx git tar amazon-cloudwatch-agent "nodejs{node}" "nodejs{node}-npm" ||
  dnf install -y nginx git tar amazon-cloudwatch-agent nodejs npm
for tool in node npm npx; do
  if [ -x "/usr/bin/$tool-{node}" ]; then ln -sf "/usr/bin/$tool-{node}" "/usr/local/bin/$tool"; fi
done

install -d -m 0755 {root} {root}/logs {root}/releases {root}/run {bin} {tls}
# The site's code runs as its own system user, never as root.
id -u {user} >/dev/null 2>&1 ||
  useradd --system --home-dir {root}/home --no-create-home --shell /sbin/nologin {user}
install -d -m 0750 -o {user} -g {user} {root}/home

{swap}
systemctl enable --now nginx
"#,
        swap = swap_script("/swapfile", "/etc/fstab"),
        name = site.name,
        node = shell_quote(&site.node_version),
        root = site.root(),
        bin = BIN,
        tls = site.tls_dir(),
        user = site.user(),
    )
}

/// The AWS managed policy with the SSM core actions (the agent registers,
/// takes commands and reports).
pub const SSM_CORE_POLICY: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";

/// The SSM parameter ARN of `name` in any region and account.
fn parameter_arn(name: &str) -> String {
    format!("arn:aws:ssm:*:*:parameter/{}", name.trim_start_matches('/'))
}

/// The least privilege of a site's instance beside the SSM core actions:
/// writing its own log group's streams, reading its own certificate,
/// secrets and repository token (and decrypting them with the default key,
/// through SSM only).
pub fn site_policy(site: &Site) -> Value {
    let group = site.log_group();
    // `{{jaam:stack}}`: the `iam_role` kind puts the stack's name there.
    let mut parameters = vec![parameter_arn(&format!(
        "jaam/{}/{}/*",
        crate::spec::STACK_MARKER,
        site.certificate()
    ))];
    parameters.extend(site.secrets.values().map(|name| parameter_arn(name)));
    if let Some(token) = &site.repo_token {
        parameters.push(parameter_arn(token));
    }
    Value::from_json(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [
                    format!("arn:aws:logs:*:*:log-group:{group}"),
                    format!("arn:aws:logs:*:*:log-group:{group}:*"),
                ],
            },
            {
                "Sid": "Parameters",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameters"],
                "Resource": parameters,
            },
            {
                "Sid": "DecryptThroughSsm",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringLike": {"kms:ViaService": "ssm.*.amazonaws.com"}},
            },
        ],
    }))
}

/// `{site: NAME}`: the tag on everything a site makes.
fn site_tags(site: &Site, location: &Location) -> Expr {
    literal(
        Value::Map(BTreeMap::from([(
            "site".to_owned(),
            Value::from(site.name.as_str()),
        )])),
        location,
    )
}

fn literal(value: impl Into<Value>, location: &Location) -> Expr {
    Expr {
        kind: ExprKind::Literal(value.into()),
        location: location.clone(),
    }
}

fn template(text: &str, location: &Location) -> Expr {
    Expr {
        kind: ExprKind::Template(Template::parse(text).expect("generated templates parse")),
        location: location.clone(),
    }
}

fn strings(items: &[&str]) -> Value {
    Value::List(items.iter().map(|item| Value::from(*item)).collect())
}

/// The primitives `site.<name>` expands into. `attrs` are its evaluated
/// arguments; `exprs` its arguments as written (sensitive ones are passed on
/// as written, so their values stay out of the generated specs).
pub fn expand(
    addr: &ResourceAddr,
    attrs: &Attrs,
    exprs: &BTreeMap<String, Expr>,
    location: &Location,
) -> Vec<ResourceSpec> {
    let site = Site::from_attrs(addr.name(), attrs);
    let at = |kind: &str| -> ResourceAddr {
        format!("{addr}.{kind}")
            .parse()
            .expect("a site name makes valid addresses")
    };
    let passthrough = |out: &mut BTreeMap<String, Expr>, from: &str, to: &str| {
        if let Some(value) = attrs.get(from).filter(|v| !v.is_null()) {
            out.insert(to.to_owned(), literal(value.clone(), location));
        }
    };
    let spec =
        |kind: &str, args: BTreeMap<String, Expr>, depends_on: Vec<ResourceAddr>| ResourceSpec {
            addr: at(kind),
            args,
            depends_on,
            location: location.clone(),
        };
    let mut out = Vec::new();

    let mut logs = BTreeMap::new();
    logs.insert("name".into(), literal(site.log_group(), location));
    passthrough(&mut logs, "log_retention_days", "retention_days");
    logs.insert("tags".into(), site_tags(&site, location));
    out.push(spec("log_group", logs, Vec::new()));

    // Its own security group unless it names groups: HTTP and HTTPS from
    // anywhere, SSH only from `ssh_from`.
    let own_group = attrs.get("security_group_ids").is_none_or(Value::is_null);
    if own_group {
        let mut group = BTreeMap::new();
        group.insert("name".into(), literal(site.aws_name(), location));
        group.insert(
            "description".into(),
            literal(format!("jaam site {}: HTTP and HTTPS", site.name), location),
        );
        passthrough(&mut group, "vpc_id", "vpc_id");
        let mut ingress: Vec<Value> = ["80", "443"]
            .iter()
            .flat_map(|port| {
                ["0.0.0.0/0", "::/0"].map(|cidr| Value::String(format!("tcp {port} {cidr}")))
            })
            .collect();
        if let Some(Value::List(sources)) = attrs.get("ssh_from") {
            ingress.extend(
                sources
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|cidr| Value::String(format!("tcp 22 {cidr}"))),
            );
        }
        group.insert("ingress".into(), literal(Value::List(ingress), location));
        group.insert("tags".into(), site_tags(&site, location));
        out.push(spec("security_group", group, Vec::new()));
    }

    // Its own role and instance profile unless it names a profile.
    let own_role = attrs.get("iam_instance_profile").is_none_or(Value::is_null);
    if own_role {
        let mut role = BTreeMap::new();
        role.insert("name".into(), literal(site.aws_name(), location));
        role.insert(
            "managed_policy_arns".into(),
            literal(strings(&[SSM_CORE_POLICY]), location),
        );
        role.insert(
            "inline_policies".into(),
            literal(
                Value::Map(BTreeMap::from([(
                    "jaam-site".to_owned(),
                    site_policy(&site),
                )])),
                location,
            ),
        );
        role.insert("tags".into(), site_tags(&site, location));
        out.push(spec("iam_role", role, Vec::new()));
    }

    let mut instance = BTreeMap::new();
    if own_role {
        instance.insert(
            "iam_instance_profile".into(),
            template(
                &format!("${{{}.instance_profile_name}}", at("iam_role")),
                location,
            ),
        );
    }
    if own_group {
        instance.insert(
            "security_group_ids".into(),
            Expr {
                kind: ExprKind::List(vec![template(
                    &format!("${{{}.id}}", at("security_group")),
                    location,
                )]),
                location: location.clone(),
            },
        );
    }
    for (from, to) in [
        ("ami", "ami"),
        ("instance_type", "instance_type"),
        ("subnet_id", "subnet_id"),
        ("security_group_ids", "security_group_ids"),
        ("key_name", "key_name"),
        ("iam_instance_profile", "iam_instance_profile"),
    ] {
        passthrough(&mut instance, from, to);
    }
    instance.insert("user_data".into(), literal(user_data(&site), location));
    instance.insert(
        "files".into(),
        literal(
            Value::Map(
                files(&site)
                    .into_iter()
                    .map(|(path, content)| (path, Value::String(content)))
                    .collect(),
            ),
            location,
        ),
    );
    instance.insert(
        "files_command".into(),
        literal(configure_command(), location),
    );
    // The bootstrap runs once: a newer one (a jaam upgrade) never replaces
    // a running instance by surprise.
    instance.insert(
        "user_data_replace_on_change".into(),
        literal(false, location),
    );
    instance.insert(
        "tags".into(),
        literal(
            Value::Map(BTreeMap::from([
                ("Name".to_owned(), Value::from(site.domain.as_str())),
                ("site".to_owned(), Value::from(site.name.as_str())),
            ])),
            location,
        ),
    );
    let revision = match exprs.get("revision") {
        Some(expr) => expr.clone(),
        None => literal(
            format!("{}{}@{}", BRANCH_HEAD, site.repo, site.branch),
            location,
        ),
    };
    instance.insert("revision".into(), revision);
    if let Some(previews) = &site.previews {
        instance.insert(
            "previews".into(),
            literal(preview_source(&site, previews), location),
        );
    }
    out.push(spec("instance", instance, vec![at("log_group")]));

    let mut record = BTreeMap::new();
    record.insert("zone".into(), literal(site.zone.as_str(), location));
    record.insert("name".into(), literal(site.domain.as_str(), location));
    record.insert("type".into(), literal("A", location));
    record.insert("ttl".into(), literal(60, location));
    record.insert(
        "values".into(),
        Expr {
            kind: ExprKind::List(vec![template(
                &format!("${{{}.public_ip}}", at("instance")),
                location,
            )]),
            location: location.clone(),
        },
    );
    out.push(spec("record", record.clone(), Vec::new()));
    // Every preview host falls under one wildcard record (and the site's
    // certificate names the wildcard too). A site expands into one resource
    // of each kind under its address, so this one is `record.previews-NAME`
    // (as a shared certificate is `certificate.wildcard-ZONE`).
    if let Some(previews) = &site.previews {
        record.insert("name".into(), literal(previews.wildcard(), location));
        out.push(ResourceSpec {
            addr: previews_record(&site.name),
            args: record,
            depends_on: Vec::new(),
            location: location.clone(),
        });
    }

    // A wildcard site's certificate is its zone's, shared (the loader makes
    // one per zone: `spec::Loader::share_wildcards`).
    if site.https && !site.wildcard {
        let mut certificate = BTreeMap::new();
        let mut domains = vec![site.domain.clone()];
        domains.extend(site.previews.as_ref().map(Previews::wildcard));
        certificate.insert(
            "domains".into(),
            literal(
                Value::List(domains.into_iter().map(Value::String).collect()),
                location,
            ),
        );
        certificate.insert("zone".into(), literal(site.zone.as_str(), location));
        passthrough(&mut certificate, "acme_directory", "acme_directory");
        passthrough(&mut certificate, "contact_email", "contact_email");
        certificate.insert(
            "install_on".into(),
            Expr {
                kind: ExprKind::List(vec![template(
                    &format!("${{{}.id}}", at("instance")),
                    location,
                )]),
                location: location.clone(),
            },
        );
        out.push(spec("certificate", certificate, Vec::new()));
    }

    if let Some(url) = attrs.get("webhook_url").and_then(Value::as_str) {
        let mut webhook = BTreeMap::new();
        webhook.insert("repo".into(), literal(site.repo.as_str(), location));
        webhook.insert("url".into(), literal(url, location));
        webhook.insert(
            "events".into(),
            literal(strings(&["push", "pull_request"]), location),
        );
        if let Some(secret) = exprs.get("webhook_secret") {
            webhook.insert("secret".into(), secret.clone());
        }
        out.push(spec("webhook", webhook, Vec::new()));
    }
    out
}

#[cfg(all(test, feature = "aws", feature = "acme", feature = "github"))]
mod tests;
