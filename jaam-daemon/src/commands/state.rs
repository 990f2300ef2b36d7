//! `jaam state list`: the managed addresses, one per line.

use std::process::ExitCode;

use crate::cli::{Global, StateCommand};

pub(crate) async fn run(global: &Global, command: &StateCommand) -> anyhow::Result<ExitCode> {
    match command {
        StateCommand::List => {
            if let Some(state) = super::store(global).await?.load().await? {
                for addr in state.resources.keys() {
                    println!("{addr}");
                }
            }
        }
    }
    super::success()
}
