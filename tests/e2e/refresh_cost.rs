//! Refresh is batched: 500 log groups cost at most 15 API calls, counted by an
//! SDK interceptor on every HTTP attempt.

use std::sync::Arc;

use jaam_core::providers::aws::{CallCounter, logs::LogGroups};
use jaam_core::state::LocalStore;
use jaam_core::{Engine, Registry, plan};
use jaam_tests::{aws_config, unique};
use tokio_util::sync::CancellationToken;

/// An engine over a temporary local state, with `text` loaded and applied.
async fn applied(
    registry: Registry,
    stack: &str,
    text: String,
) -> (Engine, jaam_core::spec::Config, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        registry,
        LocalStore::new(directory.path().join("state.json")),
        stack,
    );
    let specs =
        jaam_core::spec::load_sources(&[("specs.yaml".into(), text)], engine.registry(), &|_| None)
            .unwrap();
    run(&engine, &specs, &plan::Options::default()).await;
    (engine, specs, directory)
}

/// Applies `text`, then counts the calls of one no-change plan (refresh);
/// destroys what it made when `clean_up`. Returns the count.
async fn refresh_calls(
    registry: Registry,
    counter: &CallCounter,
    stack: &str,
    text: String,
    resources: usize,
    clean_up: bool,
) -> usize {
    let (engine, specs, _directory) = applied(registry, stack, text).await;
    counter.reset();
    let plan = engine
        .plan(&specs, &plan::Options::default())
        .await
        .unwrap();
    let calls = counter.count();
    assert!(
        !plan.has_changes(),
        "{}",
        jaam_core::plan::render::text(&plan, Default::default())
    );
    assert_eq!(plan.changes.len(), resources);
    if clean_up {
        // The shared emulator stays small.
        destroy(&engine, &specs).await;
    }
    calls
}

/// Destroys what `specs` made.
async fn destroy(engine: &Engine, specs: &jaam_core::spec::Config) {
    let options = plan::Options {
        destroy: true,
        ..Default::default()
    };
    run(engine, specs, &options).await;
}

/// Plans and applies under the lock; every change must succeed.
async fn run(engine: &Engine, specs: &jaam_core::spec::Config, options: &plan::Options) {
    let mut session = engine.lock("test").await.unwrap();
    let plan = session.plan(specs, options).await.unwrap();
    let report = session
        .apply(&plan, &Default::default(), None, CancellationToken::new())
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.failed);
    session.release().await.unwrap();
}

#[tokio::test]
async fn refresh_of_500_log_groups_should_cost_at_most_15_calls() {
    let config = aws_config().await;
    let _exclusive = jaam_tests::MOTO.write().await;
    let counter = CallCounter::new();
    let mut registry = Registry::new();
    registry.register(Arc::new(LogGroups::new(&config, Some(counter.clone()))));
    let stack = unique("refresh");
    let text: String = (0..500)
        .map(|n| {
            format!("log_group.g{n}:\n  name: /jaam-test/{stack}/g{n:03}\n  retention_days: 30\n")
        })
        .collect();
    let (engine, specs, _directory) = applied(registry, &stack, text).await;

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

#[tokio::test]
async fn refresh_of_200_instances_and_200_records_should_cost_at_most_6_calls() {
    use jaam_core::providers::aws::{ec2::Instances, route53::Records};
    let config = aws_config().await;
    let _exclusive = jaam_tests::MOTO.write().await;
    let counter = CallCounter::new();
    let mut registry = Registry::new();
    registry.register(Arc::new(Instances::new(&config, Some(counter.clone()))));
    registry.register(Arc::new(Records::new(&config, Some(counter.clone()))));
    let stack = unique("fleet");
    let domain = format!("{stack}.test");
    jaam_tests::hosted_zone(&domain).await;
    let text: String = (0..200)
        .map(|n| {
            format!(
                "instance.i{n}:\n  ami: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\n  instance_type: t3.micro\n\
                 record.r{n}:\n  zone: {domain}\n  name: r{n}.{domain}\n  type: A\n  values: [\"${{instance.i{n}.public_ip}}\"]\n"
            )
        })
        .collect();
    let calls = refresh_calls(registry, &counter, &stack, text, 400, true).await;
    println!("refresh of 200 instances and 200 records: {calls} API calls");
    assert!(calls <= 6, "refresh made {calls} calls");
}

#[tokio::test]
async fn refresh_of_100_security_groups_should_cost_at_most_2_calls() {
    use jaam_core::providers::aws::security_groups::SecurityGroups;
    let config = aws_config().await;
    let _exclusive = jaam_tests::MOTO.write().await;
    let counter = CallCounter::new();
    let mut registry = Registry::new();
    registry.register(Arc::new(SecurityGroups::new(
        &config,
        Some(counter.clone()),
    )));
    let stack = unique("sgs");
    let text: String = (0..100)
        .map(|n| {
            format!(
                "security_group.g{n}:\n  name: {stack}-g{n}\n  ingress: [\"tcp 443 0.0.0.0/0\", \"tcp {port} 10.0.0.0/8\"]\n",
                port = 8000 + n
            )
        })
        .collect();
    let calls = refresh_calls(registry, &counter, &stack, text, 100, true).await;
    // One DescribeSecurityGroups page, and one DescribeVpcs for the default VPC check.
    println!("refresh of 100 security groups: {calls} API calls");
    assert!(calls <= 2, "refresh made {calls} calls");
}

#[tokio::test]
async fn refresh_of_100_roles_should_cost_one_call() {
    use jaam_core::providers::aws::iam::Roles;
    let config = aws_config().await;
    let _exclusive = jaam_tests::MOTO.write().await;
    let counter = CallCounter::new();
    let mut registry = Registry::new();
    registry.register(Arc::new(Roles::new(&config, Some(counter.clone()))));
    let stack = unique("roles");
    let text: String = (0..100)
        .map(|n| {
            format!(
                "iam_role.r{n}:\n  name: {stack}-r{n}\n  managed_policy_arns: [arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore]\n  \
                 inline_policies:\n    logs:\n      Version: \"2012-10-17\"\n      Statement:\n        - Effect: Allow\n          \
                 Action: logs:PutLogEvents\n          Resource: \"*\"\n"
            )
        })
        .collect();
    let calls = refresh_calls(registry, &counter, &stack, text, 100, true).await;
    println!("refresh of 100 roles with their profiles and policies: {calls} API calls");
    assert!(calls <= 1, "refresh made {calls} calls");
}

/// Issue 14 (where a push's time goes): the daemon plans at every push, and
/// that plan (from state, no refresh) made an AWS call for the latest AMI
/// behind its parameter and one for the default VPC before the deploy
/// command. A long-running process remembers both (10 minutes), so its next
/// plans make no call at all.
#[tokio::test]
async fn plans_of_one_process_should_read_the_ami_and_default_vpc_once() {
    use jaam_core::providers::aws::{ec2::Instances, security_groups::SecurityGroups};
    let config = aws_config().await;
    let _moto = jaam_tests::MOTO.read().await;
    let counter = CallCounter::new();
    let mut registry = Registry::new();
    registry.register(Arc::new(Instances::new(&config, Some(counter.clone()))));
    registry.register(Arc::new(SecurityGroups::new(
        &config,
        Some(counter.clone()),
    )));
    let stack = unique("remember");
    let text = format!(
        "security_group.web:\n  name: {stack}-web\n  ingress: [\"tcp 443 0.0.0.0/0\"]\n\
         instance.web:\n  ami: /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\n  \
         instance_type: t3.micro\n  security_group_ids: [\"${{security_group.web.id}}\"]\n"
    );
    let (engine, specs, _directory) = applied(registry, &stack, text).await;
    counter.reset();
    let options = plan::Options {
        refresh: false,
        ..Default::default()
    };
    let plan = engine.plan(&specs, &options).await.unwrap();
    assert!(!plan.has_changes());
    assert_eq!(
        counter.count(),
        0,
        "a plan from state by the same process calls nothing"
    );
    destroy(&engine, &specs).await;
}
