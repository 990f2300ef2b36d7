//! `jaam show`: the recorded state, or a saved plan.

use std::process::ExitCode;

use jaam_core::state::StateFile;

use crate::cli::{Global, ShowArgs};

pub(crate) async fn run(global: &Global, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.plan_file {
        let plan = super::read_plan(path)?;
        super::print_plan(global, &plan, args.json)?;
        return super::success();
    }
    let Some(state) = super::store(global).await?.load().await? else {
        println!("No state.");
        return super::success();
    };
    if args.json {
        print!("{}", StateFile::render(&state));
        return super::success();
    }
    for (addr, resource) in &state.resources {
        println!("# {addr}:");
        println!("{addr} {{");
        let width = resource
            .attributes
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0);
        println!("    {:<width$} = {:?}", "id", resource.id);
        // State holds sensitive values sealed (fingerprints), never in clear.
        let generated = addr.composite().is_some();
        for (name, value) in &resource.attributes {
            print!(
                "{}",
                jaam_core::plan::render::attribute(
                    "    ",
                    name,
                    width,
                    value,
                    false,
                    generated,
                    global.full
                )
            );
        }
        println!("}}\n");
    }
    if !state.pending.is_empty() {
        println!(
            "{} interrupted operation(s) will be resolved by the next plan.",
            state.pending.len()
        );
    }
    super::success()
}
