//! `jaam`: plan, apply and keep YAML-declared infrastructure true.
//!
//! # Exit codes
//! - 0: success (for `plan --detailed-exitcode`: no changes)
//! - 1: an error: bad input, a failed resource, a held lock, a stale plan
//! - 2: `plan --detailed-exitcode` found changes

mod cli;
mod commands;
mod daemon;
mod queue;
mod view;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

// mimalloc: the engine allocates per resource; glibc's malloc was a third of
// the profile of a 10,000-resource plan.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args())) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The daemon reports what it does; commands only warn (their output is the
    // report). The AWS SDK's own warnings (IMDS probes for a region or
    // credentials off EC2) are noise to a user: shown only when JAAM_LOG asks.
    let default_filter = match cli.command {
        Command::Daemon(_) => {
            "warn,jaam=info,jaam_core=info,aws_config=error,aws_smithy_runtime=error"
        }
        _ => "warn,aws_config=error,aws_smithy_runtime=error",
    };
    init_tracing(&cli.global, default_filter);
    // Several TLS stacks meet in one process (AWS SDK, ACME, GitHub): pick one
    // crypto provider for all of them.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A daemon takes `{stack}` in `--state` as its fleet's template; every
    // other command works on one stack's state.
    let global = &match cli.command {
        Command::Daemon(_) => cli.global.clone(),
        _ => commands::with_stack_state(&cli.global)?,
    };
    match &cli.command {
        Command::Validate => commands::validate::run(global).await,
        Command::Plan(args) => commands::plan::run(global, args).await,
        Command::Apply(args) => {
            let request = commands::apply::Request {
                plan_file: args.plan_file.as_deref(),
                selection: &args.selection,
                run: args.run,
                destroy: false,
            };
            commands::apply::run(global, request).await
        }
        Command::Destroy(args) => {
            let request = commands::apply::Request {
                plan_file: None,
                selection: &args.selection,
                run: args.run,
                destroy: true,
            };
            commands::apply::run(global, request).await
        }
        Command::Show(args) => commands::show::run(global, args).await,
        Command::Graph => commands::graph::run(global).await,
        Command::Import(args) => commands::import::run(global, args).await,
        Command::State(command) => commands::state::run(global, command).await,
        Command::Output(args) => commands::output::run(global, args).await,
        Command::Gc(args) => commands::gc::run(global, args).await,
        Command::ForceUnlock(args) => commands::unlock::run(global, args).await,
        Command::Logs(args) => commands::sites::logs(global, args).await,
        Command::Rollback(args) => commands::sites::rollback(global, args).await,
        Command::Daemon(args) => daemon::run(global, args).await,
        Command::Init(args) => commands::init::run(global, args).await,
        Command::Deployments(args) => commands::sites::deployments(global, args).await,
        Command::Previews(args) => commands::sites::previews(global, args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(*shell, &mut Cli::command(), "jaam", &mut std::io::stdout());
            commands::success()
        }
    }
}

/// Logs on stderr; coloured only on a terminal (a log file or the journal
/// gets plain text), never with `--no-color` or `NO_COLOR`.
fn init_tracing(global: &cli::Global, default_filter: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("JAAM_LOG")
        .unwrap_or_else(|_| default_filter.into());
    let colour = std::io::stderr().is_terminal()
        && !global.no_color
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if global.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A spec error: every diagnostic, or why the specs could not be read and
/// what to do about a missing directory.
fn report_spec(error: &jaam_core::spec::Error) {
    match error {
        jaam_core::spec::Error::Read { path, source } => {
            eprintln!("error: {error}: {source}");
            if source.kind() == std::io::ErrorKind::NotFound {
                eprintln!(
                    "\nhint: there is no `{}` here: run jaam in the directory that holds your specs, \
                     or pass `--specs DIR` (or set JAAM_SPECS); a spec is YAML whose top-level keys \
                     are addresses such as `site.blog` (see the README)",
                    path.display()
                );
            }
        }
        jaam_core::spec::Error::Invalid(_) => eprintln!("error: {error}"),
    }
}

/// Prints an error with its causes, and a hint where one helps.
fn report(error: &anyhow::Error) {
    let spec = match error.downcast_ref::<jaam_core::Error>() {
        Some(jaam_core::Error::Spec(spec)) => Some(spec),
        _ => error.downcast_ref::<jaam_core::spec::Error>(),
    };
    if let Some(spec) = spec {
        report_spec(spec);
        return;
    }
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    eprintln!("error: {text}");
    let hint = error.chain().find_map(|cause| {
        use jaam_core::{apply, state};
        let state_error = cause.downcast_ref::<state::Error>().or_else(|| {
            match cause.downcast_ref::<jaam_core::Error>() {
                Some(jaam_core::Error::State(e)) => Some(e),
                _ => None,
            }
        });
        let stale = |e: &apply::Error| matches!(e, apply::Error::Stale { .. });
        let is_stale = cause.downcast_ref::<apply::Error>().is_some_and(stale)
            || matches!(cause.downcast_ref::<jaam_core::Error>(), Some(jaam_core::Error::Apply(e)) if stale(e));
        match state_error {
            Some(state::Error::Locked { lapses: None, .. }) => Some(
                "wait for it to finish, or pass `--lock-timeout 5m`; the lock is released automatically if that process dies"
                    .to_owned(),
            ),
            Some(state::Error::Locked {
                lapses: Some(lapses),
                holder,
            }) => Some(format!(
                "wait for it to finish, or pass `--lock-timeout 5m`; if that process died, its lease lapses by itself \
                 at {} (it is renewed while the process runs); `jaam force-unlock {}` breaks it now",
                lapses.format("%Y-%m-%dT%H:%M:%SZ"),
                holder.id
            )),
            _ if is_stale => Some(
                "the state changed since the plan was made: run `jaam plan --out FILE` again and review it"
                    .to_owned(),
            ),
            _ => None,
        }
    });
    if let Some(hint) = hint {
        eprintln!("\nhint: {hint}");
    }
}
