//! One module per subcommand; this module holds what they share.

pub(crate) mod apply;
pub(crate) mod gc;
pub(crate) mod graph;
pub(crate) mod import;
pub(crate) mod init;
pub(crate) mod output;
pub(crate) mod plan;
pub(crate) mod show;
pub(crate) mod sites;
pub(crate) mod state;
pub(crate) mod unlock;
pub(crate) mod validate;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use jaam_core::spec::Config;
use jaam_core::state::LocalStore;
use jaam_core::{Engine, Plan, Registry};

use crate::cli::Global;

/// Exit code: changes present (`plan --detailed-exitcode`).
pub(crate) const EXIT_CHANGES: u8 = 2;

/// The providers, configured from the environment. A missing region is said
/// here, once, with how to set one (the SDK's own message comes per call).
pub(crate) async fn registry() -> anyhow::Result<Registry> {
    let config = jaam_core::providers::aws::load_config().await;
    anyhow::ensure!(
        config.region().is_some(),
        "no AWS region is set\n\nhint: set AWS_REGION (for example `export AWS_REGION=us-east-1`), \
         or a `region` in the profile AWS_PROFILE names"
    );
    Ok(jaam_core::providers::registry(&config, |heads| heads))
}

/// Loads the specs, checked against the providers' schemas alone: spec
/// errors come before any cloud configuration is loaded.
pub(crate) fn load_specs(global: &Global) -> anyhow::Result<Config> {
    load_specs_with(global, &jaam_core::providers::schema_registry())
}

/// Loads the specs against `registry`'s schemas.
pub(crate) fn load_specs_with(global: &Global, registry: &Registry) -> anyhow::Result<Config> {
    Ok(jaam_core::spec::load(&global.specs, registry, &|name| {
        std::env::var(name).ok()
    })?)
}

/// The stack name: `--stack`, else the specs' `stack.name`, else the state's, else `default`.
pub(crate) fn stack_name(global: &Global, config: Option<&Config>) -> String {
    global
        .stack
        .clone()
        .or_else(|| config.and_then(|config| config.stack().name.clone()))
        .unwrap_or_else(|| "default".to_owned())
}

/// `--state` with `{stack}` (the template a fleet's daemon takes, see
/// `jaam daemon --stacks`): the stack's own state, so `jaam plan --specs
/// fleet/blog --state 'state/{stack}.json'` works on what the daemon keeps.
/// The stack is `--stack`, else the specs' `stack.name`, else the specs
/// directory's name (as the daemon names it), and the command runs under
/// that name.
///
/// # Errors
/// No name can be found (`--specs` names no directory).
pub(crate) fn with_stack_state(global: &Global) -> anyhow::Result<Global> {
    let template = global.state.to_string_lossy();
    if !template.contains("{stack}") {
        return Ok(global.clone());
    }
    let name = global
        .stack
        .clone()
        .or_else(|| {
            load_specs(global)
                .ok()
                .and_then(|config| config.stack().name.clone())
        })
        .or_else(|| {
            global
                .specs
                .canonicalize()
                .ok()?
                .file_name()?
                .to_str()
                .map(str::to_owned)
        })
        .with_context(|| format!("`--state {template}` needs a stack name: pass --stack NAME"))?;
    Ok(Global {
        state: template.replace("{stack}", &name).into(),
        stack: Some(name),
        ..global.clone()
    })
}

/// The state store `--state` names: a local file, or `s3://bucket/key`.
pub(crate) async fn store(
    global: &Global,
) -> anyhow::Result<std::sync::Arc<dyn jaam_core::state::StateStore>> {
    let text = global.state.to_string_lossy();
    if text.starts_with("s3://") {
        let (bucket, key) = jaam_core::state::s3::S3Store::parse_url(&text)
            .with_context(|| format!("`{text}` is not `s3://bucket/key`"))?;
        let config = jaam_core::providers::aws::load_config().await;
        return Ok(std::sync::Arc::new(jaam_core::state::s3::S3Store::new(
            &config,
            bucket,
            key,
            global.lease_ttl,
        )));
    }
    Ok(std::sync::Arc::new(LocalStore::new(&global.state)))
}

/// An engine over the state `--state` names.
pub(crate) async fn engine(
    global: &Global,
    registry: Registry,
    stack: String,
) -> anyhow::Result<Engine> {
    Ok(Engine::from_store(registry, store(global).await?, stack)
        .with_lock_timeout(global.lock_timeout))
}

/// Whether to colour stdout.
pub(crate) fn colour(global: &Global) -> bool {
    !global.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Reads a saved plan.
pub(crate) fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read plan file `{}`", path.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a jaam plan file", path.display()))?;
    anyhow::ensure!(
        plan.format_version == jaam_core::plan::FORMAT_VERSION,
        "plan file `{}` has format version {}, which this jaam does not know",
        path.display(),
        plan.format_version
    );
    Ok(plan)
}

/// Writes a plan file readable only by its owner: always a new 0600 file
/// renamed into place, so an existing file's looser mode or a symlink at the
/// path is replaced, never written through.
pub(crate) fn write_plan(path: &Path, plan: &Plan) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(plan)?;
    text.push(b'\n');
    jaam_core::files::write_atomically(path, &text, true)
        .with_context(|| format!("failed to write plan file `{}`", path.display()))
}

/// Prints a plan as text (coloured on a terminal) or as the documented JSON.
/// Adds to `plan` what `framework: auto` will build for each site it
/// deploys at a new revision (read through the GitHub API; see
/// [`jaam_core::spec::site::framework_notes`]). The daemon does not: its
/// push path stays free of extra GitHub calls, and the build log says what
/// was detected.
pub(crate) async fn add_framework_notes(config: &Config, plan: &mut Plan) {
    let api = jaam_core::providers::github::Api::from_env();
    let api = &api;
    let notes = jaam_core::spec::site::framework_notes(config, plan, |repo, sha| async move {
        api.file_at(&repo, "package.json", Some(&sha))
            .await
            .map_err(|error| error.message)
    })
    .await;
    plan.notes.extend(notes);
}

pub(crate) fn print_plan(global: &Global, plan: &Plan, json: bool) -> anyhow::Result<()> {
    use jaam_core::plan::render;
    if json {
        println!("{}", serde_json::to_string_pretty(&render::json(plan))?);
    } else {
        print!(
            "{}",
            render::text(
                plan,
                render::TextOptions {
                    colour: colour(global),
                    full: global.full,
                }
            )
        );
    }
    Ok(())
}

/// Exit code 0.
pub(crate) fn success() -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
