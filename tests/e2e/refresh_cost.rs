//! Refresh is batched: 500 log groups cost at most 15 API calls, counted by an
//! SDK interceptor on every HTTP attempt.

use std::sync::Arc;

use jaam_core::providers::aws::{CallCounter, logs::LogGroups};
use jaam_core::state::LocalStore;
use jaam_core::{Engine, Registry, plan};
use jaam_tests::{aws_config, unique};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn refresh_of_500_log_groups_should_cost_at_most_15_calls() {
    let config = aws_config().await;
    let _exclusive = jaam_tests::MOTO.write().await;
    let counter = CallCounter::new();
    let mut registry = Registry::new();
    registry.register(Arc::new(LogGroups::new(&config, Some(counter.clone()))));
    let stack = unique("refresh");
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        registry,
        LocalStore::new(directory.path().join("state.json")),
        stack.clone(),
    );
    let text: String = (0..500)
        .map(|n| {
            format!("log_group.g{n}:\n  name: /jaam-test/{stack}/g{n:03}\n  retention_days: 30\n")
        })
        .collect();
    let specs =
        jaam_core::spec::load_sources(&[("refresh.yaml".into(), text)], engine.registry(), &|_| {
            None
        })
        .unwrap();

    let mut session = engine.lock("test").await.unwrap();
    let plan = session
        .plan(&specs, &plan::Options::default())
        .await
        .unwrap();
    let report = session
        .apply(&plan, &Default::default(), None, CancellationToken::new())
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.failed);
    session.release().await.unwrap();

    counter.reset();
    let plan = engine
        .plan(&specs, &plan::Options::default())
        .await
        .unwrap();
    let calls = counter.count();
    assert!(!plan.has_changes());
    assert_eq!(plan.changes.len(), 500);
    println!("refresh of 500 log groups: {calls} API calls");
    assert!(calls <= 15, "refresh made {calls} calls");
}
