//! `jaam output`: recorded attributes as JSON, or one raw value with `ADDR.ATTR`.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use jaam_core::{ResourceAddr, Value};

use crate::cli::{Global, OutputArgs};

pub(crate) async fn run(global: &Global, args: &OutputArgs) -> anyhow::Result<ExitCode> {
    let state = super::store(global)
        .await?
        .load()
        .await?
        .unwrap_or_else(|| jaam_core::state::State::new("default"));
    let with_id = |resource: &jaam_core::state::ResourceState| {
        let mut attributes = resource.attributes.clone();
        attributes.insert("id".into(), Value::String(resource.id.clone()));
        Value::Map(attributes)
    };
    let Some(name) = &args.name else {
        let all: serde_json::Map<String, serde_json::Value> = state
            .resources
            .iter()
            .map(|(addr, r)| (addr.to_string(), with_id(r).to_json()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return super::success();
    };
    if let Ok(addr) = name.parse::<ResourceAddr>()
        && let Some(resource) = state.resources.get(&addr)
    {
        println!(
            "{}",
            serde_json::to_string_pretty(&with_id(resource).to_json())?
        );
        return super::success();
    }
    let (address, attribute) = name
        .rsplit_once('.')
        .ok_or_else(|| anyhow!("`{name}` is not `ADDR` or `ADDR.ATTR`"))?;
    let addr: ResourceAddr = address
        .parse()
        .with_context(|| format!("`{name}` is not `ADDR` or `ADDR.ATTR`"))?;
    let resource = state
        .resources
        .get(&addr)
        .ok_or_else(|| anyhow!("`{addr}` is not in state"))?;
    let value = match with_id(resource) {
        Value::Map(mut map) => map
            .remove(attribute)
            .ok_or_else(|| anyhow!("`{addr}` has no attribute `{attribute}`"))?,
        _ => unreachable!("with_id returns a map"),
    };
    match value {
        Value::String(text) => println!("{text}"),
        other => println!("{}", serde_json::to_string_pretty(&other.to_json())?),
    }
    super::success()
}
