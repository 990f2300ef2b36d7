//! Command-line arguments: clap structs only (low level), then validated settings.
//!
//! Terraform's single-dash long options (`-out=FILE`, `-auto-approve`,
//! `-target=ADDR`, …) are accepted as spellings of the double-dash ones, so
//! muscle memory works ([`normalize_args`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jaam_core::ResourceAddr;

/// jaam: infrastructure as code for deploying web apps from GitHub to AWS.
#[derive(Debug, Parser)]
#[command(
    name = "jaam",
    version,
    about,
    propagate_version = true,
    args_override_self = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every subcommand takes, before or after its name.
#[derive(Clone, Debug, Args)]
pub(crate) struct Global {
    /// Spec directory (or one spec file).
    #[arg(long, global = true, default_value = "specs", env = "JAAM_SPECS")]
    pub(crate) specs: PathBuf,
    /// State: a local file, or `s3://bucket/key` (shared, with an expiring lease).
    #[arg(
        long,
        global = true,
        default_value = "jaam.state.json",
        env = "JAAM_STATE"
    )]
    pub(crate) state: PathBuf,
    /// How long an S3 state lease lasts without renewal (a crashed holder's lease
    /// lapses after this long).
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    pub(crate) lease_ttl: Duration,
    /// Stack name (default: the specs' `stack.name`, else `default`).
    #[arg(long, global = true, env = "JAAM_STACK")]
    pub(crate) stack: Option<String>,
    /// How long to wait for another process's state lock, e.g. `30s`, `2m`.
    #[arg(long, global = true, default_value = "0s", value_parser = parse_duration)]
    pub(crate) lock_timeout: Duration,
    /// Never colour output (colour is used only on a terminal anyway).
    #[arg(long, global = true)]
    pub(crate) no_color: bool,
    /// Print generated values (a site's user data, scripts) in full in plans
    /// and `show`, instead of their size and digest.
    #[arg(long, global = true)]
    pub(crate) full: bool,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check the specs: syntax, kinds, fields, types, references, cycles.
    Validate,
    /// Show what apply would do.
    Plan(PlanArgs),
    /// Apply the specs (or a saved plan).
    Apply(ApplyArgs),
    /// Destroy everything the stack manages.
    Destroy(DestroyArgs),
    /// Show the state, or a saved plan.
    Show(ShowArgs),
    /// Print the dependency graph in DOT.
    Graph,
    /// Bring an existing cloud resource under management.
    Import(ImportArgs),
    /// Inspect state.
    #[command(subcommand)]
    State(StateCommand),
    /// Print recorded attributes: all, one resource's, or one value (`ADDR.ATTR`).
    Output(OutputArgs),
    /// List resources tagged as this stack's that state does not know; `--delete` removes them.
    Gc(GcArgs),
    /// Break an S3 state lease held by a process that cannot release it.
    ForceUnlock(ForceUnlockArgs),
    /// Print a site's build and app logs (or a log group's), optionally following.
    Logs(LogsArgs),
    /// Switch a site back to its previous release, at once.
    Rollback(RollbackArgs),
    /// A site's deploy history: what was deployed when, why, and did it work.
    Deployments(DeploymentsArgs),
    /// A site's pull request previews: number, head commit, URL and state.
    Previews(DeploymentsArgs),
    /// Write a starter site spec for a repository (framework detected from its package.json).
    Init(InitArgs),
    /// Print a shell completion script: `jaam completions bash > /etc/bash_completion.d/jaam`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Keep the stack true: reconcile on spec changes, GitHub pushes and merges, and a timer.
    Daemon(DaemonArgs),
}

/// `jaam daemon`.
#[derive(Clone, Debug, Args)]
pub(crate) struct DaemonArgs {
    /// Keep every stack under DIR: each subdirectory is one stack, named by
    /// it; `--state` is then a template holding `{stack}`
    /// (`state/{stack}.json`, `s3://bucket/jaam/{stack}.json`). Without it
    /// the daemon keeps the one stack `--specs` names.
    #[arg(long, value_name = "DIR", env = "JAAM_STACKS")]
    pub(crate) stacks: Option<PathBuf>,
    /// How many stacks may be reconciled at once (one stack never twice).
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: usize,
    /// Where the webhook receiver and the read endpoints listen.
    #[arg(long, default_value = "127.0.0.1:8080", env = "JAAM_DAEMON_LISTEN")]
    pub(crate) listen: String,
    /// How often to refresh and correct drift (±10 % jitter).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) resync: Duration,
    /// How long after a spec file changes to reconcile (events meanwhile merge).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub(crate) debounce: Duration,
    /// After a push is deployed at once, later pushes within this window wait
    /// for its end and merge into one reconcile.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) push_window: Duration,
    /// A file holding the token that /metrics, /status and the logs want as
    /// `Authorization: Bearer TOKEN` (or set `JAAM_DAEMON_TOKEN`; a token is
    /// never taken from the command line, where `ps` shows it).
    #[arg(long)]
    pub(crate) read_token_file: Option<PathBuf>,
    /// Serve /metrics, /status and the logs without a token on a
    /// non-loopback address (refused otherwise).
    #[arg(long)]
    pub(crate) public_read: bool,
    /// The largest webhook body accepted, in bytes (GitHub sends at most 25 MB).
    #[arg(long, default_value_t = 25 * 1024 * 1024)]
    pub(crate) max_body: usize,
    /// How long a request's headers may take to arrive.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) header_timeout: Duration,
    /// How long a webhook body may take to arrive.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) body_timeout: Duration,
    /// How long a stack whose state lock another process holds is tried
    /// again (every second, without holding a worker) before its reconcile
    /// counts as failed; and how long a rollback waits for the lock.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) lock_wait: Duration,
    /// The daemon's address as people reach it (`https://jaam.example.com`):
    /// GitHub deployment statuses link to its page of the site as their log.
    #[arg(long, env = "JAAM_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Failed deploys in a row of one revision after which it is parked: not
    /// deployed again until a new push, a spec change or a manual apply (0:
    /// never park).
    #[arg(long, default_value_t = 5)]
    pub(crate) max_failures: u32,
    /// On SIGTERM, how long a running reconcile may go on before it is cancelled.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// The file of seen delivery ids (default: the state file's path + `.deliveries`).
    #[arg(long)]
    pub(crate) deliveries: Option<PathBuf>,
}

/// `jaam deployments`.
#[derive(Debug, Args)]
pub(crate) struct DeploymentsArgs {
    /// `site.NAME`.
    pub(crate) site: ResourceAddr,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `jaam init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The repository (`owner/name`); without it the spec names a placeholder.
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// The branch deployed.
    #[arg(long, default_value = "main")]
    pub(crate) branch: String,
    /// The domain served (default `<name>.<zone>`).
    #[arg(long)]
    pub(crate) domain: Option<String>,
    /// The Route53 hosted zone (default `example.com`: change it).
    #[arg(long)]
    pub(crate) zone: Option<String>,
    /// The site's name (default: the repository's, lowercased).
    #[arg(long)]
    pub(crate) name: Option<String>,
}

/// `jaam logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// `site.NAME`, or a `log_group` address.
    pub(crate) addr: ResourceAddr,
    /// Keep printing new events until interrupted.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// How far back to start, e.g. `10m`, `2h`.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) since: Duration,
}

/// `jaam rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// `site.NAME`.
    pub(crate) site: ResourceAddr,
}

/// `jaam force-unlock`.
#[derive(Debug, Args)]
pub(crate) struct ForceUnlockArgs {
    /// The lease id, as a "state is locked" error shows it.
    pub(crate) lease_id: uuid::Uuid,
}

/// `jaam gc`.
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Delete what is found (after confirmation).
    #[arg(long)]
    pub(crate) delete: bool,
    /// Delete without asking.
    #[arg(long)]
    pub(crate) auto_approve: bool,
}

/// Plan selection options shared by plan, apply and destroy.
#[derive(Debug, Args, Clone)]
pub(crate) struct Selection {
    /// Limit to this resource and its dependencies (repeatable).
    #[arg(long = "target", value_name = "ADDR")]
    pub(crate) targets: Vec<ResourceAddr>,
    /// Refresh through the cloud first (`--refresh=false` trusts the state).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) refresh: bool,
    /// Replace this resource although nothing forces it, taking values it
    /// otherwise keeps such as a newer AMI (repeatable).
    #[arg(long = "replace", value_name = "ADDR")]
    pub(crate) replace: Vec<ResourceAddr>,
}

/// `jaam plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(crate) selection: Selection,
    /// Save the plan to FILE for `jaam apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Print the plan as JSON (schema: docs/plan-json.md).
    #[arg(long)]
    pub(crate) json: bool,
    /// Exit 0 with no changes, 2 with changes, 1 on error.
    #[arg(long)]
    pub(crate) detailed_exitcode: bool,
    /// Plan the destruction of everything.
    #[arg(long)]
    pub(crate) destroy: bool,
}

/// How apply and destroy run.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct Run {
    /// Go ahead without asking for confirmation.
    #[arg(long)]
    pub(crate) auto_approve: bool,
    /// How many operations run at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) parallelism: u16,
    /// Print progress events as JSON lines on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `jaam apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// A plan saved by `jaam plan --out`; applied without asking.
    pub(crate) plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) selection: Selection,
    #[command(flatten)]
    pub(crate) run: Run,
}

/// `jaam destroy`.
#[derive(Debug, Args)]
pub(crate) struct DestroyArgs {
    #[command(flatten)]
    pub(crate) selection: Selection,
    #[command(flatten)]
    pub(crate) run: Run,
}

/// `jaam show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// A saved plan to show instead of the state.
    pub(crate) plan_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `jaam import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The address to record it under (`log_group.build`).
    pub(crate) addr: ResourceAddr,
    /// The cloud id (a log group's name).
    pub(crate) id: String,
}

/// `jaam state …`.
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// List the managed addresses.
    List,
}

/// `jaam output`.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// `ADDR` or `ADDR.ATTR`; all resources when absent.
    pub(crate) name: Option<String>,
}

/// Parses `500ms`, `30s`, `2m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try `30s` or `2m`)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Rewrites Terraform's single-dash long options to clap's double-dash ones.
pub(crate) fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const LONG: [&str; 11] = [
        "out",
        "auto-approve",
        "target",
        "refresh",
        "detailed-exitcode",
        "parallelism",
        "json",
        "lock-timeout",
        "destroy",
        "state",
        "no-color",
    ];
    args.into_iter()
        .map(|arg| {
            let Some(rest) = arg.strip_prefix('-').filter(|rest| !rest.starts_with('-')) else {
                return arg;
            };
            let name = rest.split('=').next().unwrap_or_default();
            if LONG.contains(&name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_should_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn terraform_single_dash_options_should_be_accepted() {
        let args = normalize_args(
            [
                "jaam",
                "plan",
                "-out=p.json",
                "-target",
                "log_group.a",
                "-x",
            ]
            .map(String::from),
        );
        assert_eq!(
            args,
            [
                "jaam",
                "plan",
                "--out=p.json",
                "--target",
                "log_group.a",
                "-x"
            ]
        );
        Cli::try_parse_from(normalize_args(
            ["jaam", "apply", "-auto-approve", "--stack", "s"].map(String::from),
        ))
        .unwrap();
    }

    #[test]
    fn global_options_should_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["jaam", "plan", "--specs", "x", "--state", "y.json"]).unwrap();
        assert_eq!(cli.global.specs, PathBuf::from("x"));
        assert_eq!(cli.global.state, PathBuf::from("y.json"));
    }
}
