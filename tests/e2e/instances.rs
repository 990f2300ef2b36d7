//! Instances and records against moto: ordering, replacement, failures, drift,
//! import, crash-exact creates, fault injection and batched refresh.

use jaam_core::state::{LocalStore, StateStore};
use jaam_tests::{Workspace, hosted_zone, moto_endpoint, stack_instances, unique, zone_records};
use rand::Rng;

const AMI: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

fn web(domain: &str, script: &str) -> String {
    format!(
        "instance.web:\n  ami: {AMI}\n  instance_type: t3.micro\n  user_data: |\n    #!/bin/bash\n    {script}\n  tags:\n    app: web\n\
         record.web:\n  zone: {domain}\n  name: web.{domain}\n  type: A\n  ttl: 60\n  values: [\"${{instance.web.public_ip}}\"]\n"
    )
}

fn position(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

#[tokio::test]
async fn record_should_follow_its_instance_through_create_replace_and_destroy() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("web"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    ws.write_specs(&web(&domain, "echo one"));

    let run = ws.jaam(&["plan"]);
    run.expect_code(0);
    let text = run.squashed();
    assert!(text.contains("+ values = [(known after apply)]"), "{text}");
    assert!(text.contains("+ public_ip = (known after apply)"), "{text}");

    let run = ws.jaam(&["apply", "--auto-approve"]);
    run.expect_code(0);
    assert!(
        position(&run.stderr, "instance.web: Creation complete")
            < position(&run.stderr, "record.web: Creating...")
    );
    let instances = stack_instances(&ws.stack).await;
    assert_eq!(instances.len(), 1);
    let ip = instances[0].2.clone().expect("a public ip");
    assert_eq!(
        zone_records(&zone).await,
        [(format!("web.{domain}"), "A".into(), vec![ip.clone()])]
    );
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // New user data: a line diff and a replacement; the record follows the new IP.
    ws.write_specs(&web(&domain, "echo two"));
    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(text.contains("+/- instance.web {"), "{text}");
    assert!(
        text.contains("~ user_data = <<-EOT # forces replacement"),
        "{text}"
    );
    assert!(
        text.contains("- echo one") && text.contains("+ echo two"),
        "{text}"
    );
    assert!(text.contains("~ record.web {"), "{text}");
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let instances = stack_instances(&ws.stack).await;
    assert_eq!(
        instances.len(),
        1,
        "the old instance is terminated: {instances:?}"
    );
    let new_ip = instances[0].2.clone().expect("a public ip");
    assert_ne!(new_ip, ip);
    assert_eq!(
        zone_records(&zone).await,
        [(format!("web.{domain}"), "A".into(), vec![new_ip])]
    );
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Destroy: the record goes before the instance.
    let run = ws.jaam(&["destroy", "--auto-approve"]);
    run.expect_code(0);
    assert!(
        position(&run.stderr, "record.web: Destruction complete")
            < position(&run.stderr, "instance.web: Destroying...")
    );
    assert!(stack_instances(&ws.stack).await.is_empty());
    assert!(zone_records(&zone).await.is_empty());
}

#[tokio::test]
async fn a_failed_branch_should_skip_its_dependents_and_let_the_others_finish() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("branch"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    let specs = format!(
        "instance.good:\n  ami: {AMI}\n  instance_type: t3.micro\n\
         instance.bad:\n  ami: {AMI}\n  instance_type: t3.micro\n  subnet_id: subnet-00000000000000000\n\
         record.good:\n  zone: {domain}\n  name: good.{domain}\n  type: A\n  values: [\"${{instance.good.public_ip}}\"]\n\
         record.bad:\n  zone: {domain}\n  name: bad.{domain}\n  type: A\n  values: [\"${{instance.bad.public_ip}}\"]\n"
    );
    ws.write_specs(&specs);
    let run = ws.jaam(&["apply", "--auto-approve"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("error: `instance.bad`: create failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("record.bad: skipped because `instance.bad` failed"),
        "{}",
        run.stderr
    );
    let state = LocalStore::new(ws.state()).load().await.unwrap().unwrap();
    let recorded: Vec<String> = state.resources.keys().map(ToString::to_string).collect();
    assert_eq!(
        recorded,
        ["instance.good", "record.good"],
        "state records exactly what exists"
    );
    assert_eq!(stack_instances(&ws.stack).await.len(), 1);
    assert_eq!(zone_records(&zone).await.len(), 1);
}

#[tokio::test]
async fn changes_made_outside_jaam_should_be_planned_back() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("drift"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    ws.write_specs(&web(&domain, "echo one"));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let (id, _, _) = stack_instances(&ws.stack).await.remove(0);

    // Terminate the instance and rewrite the record behind jaam's back.
    let ec2 = jaam_tests::ec2_client().await;
    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let route53 = jaam_tests::route53_client().await;
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let set = ResourceRecordSet::builder()
        .name(format!("web.{domain}."))
        .r#type(RrType::A)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value("192.0.2.1")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let batch = ChangeBatch::builder()
        .changes(
            Change::builder()
                .action(ChangeAction::Upsert)
                .resource_record_set(set)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    route53
        .change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(batch)
        .send()
        .await
        .unwrap();

    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(
        text.contains("# instance.web has been deleted (deleted outside jaam)"),
        "{text}"
    );
    assert!(
        text.contains("# record.web has changed (changed outside jaam)"),
        "{text}"
    );
    assert!(text.contains("\"192.0.2.1\""), "{text}");
    assert!(
        text.contains("# instance.web will be created (deleted outside jaam)"),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let instances = stack_instances(&ws.stack).await;
    assert_eq!(instances.len(), 1);
    let ip = instances[0].2.clone().unwrap();
    assert_eq!(
        zone_records(&zone).await,
        [(format!("web.{domain}"), "A".into(), vec![ip])]
    );
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
}

#[tokio::test]
async fn imported_instance_and_record_should_plan_only_real_differences() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("import"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    let ec2 = jaam_tests::ec2_client().await;
    let script = "#!/bin/bash\necho legacy\n";
    let ami = jaam_tests::ssm_parameter(AMI).await;
    let launched = ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .user_data(aws_smithy_types::base64::encode(script))
        .send()
        .await
        .unwrap();
    let id = launched.instances()[0].instance_id().unwrap().to_owned();
    let specs = format!(
        "instance.legacy:\n  ami: {AMI}\n  instance_type: t3.micro\n  user_data: |\n    #!/bin/bash\n    echo legacy\n  tags:\n    app: legacy\n\
         record.legacy:\n  zone: {zone}\n  name: legacy.{domain}\n  type: TXT\n  values: [\"v=1 legacy\"]\n"
    );
    ws.write_specs(&specs);
    ws.jaam(&["apply", "--auto-approve", "--target", "record.legacy"])
        .expect_code(0);
    // Forget the record, then import both.
    std::fs::remove_file(ws.state()).unwrap();
    ws.jaam(&["import", "instance.legacy", &id]).expect_code(0);
    ws.jaam(&[
        "import",
        "record.legacy",
        &format!("{zone}/legacy.{domain}/TXT"),
    ])
    .expect_code(0);
    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    assert!(
        text.contains("~ tags = {} -> { app = \"legacy\" }"),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    assert_eq!(
        stack_instances(&ws.stack).await.len(),
        1,
        "the update tagged the imported instance as owned"
    );
}

fn fleet(stack: &str, domain: &str, count: usize) -> String {
    (0..count)
        .map(|n| {
            format!(
                "instance.w{n}:\n  ami: {AMI}\n  instance_type: t3.micro\n  tags:\n    n: \"{n}\"\n\
                 record.w{n}:\n  zone: {domain}\n  name: w{n}.{stack}.{domain}\n  type: A\n  values: [\"${{instance.w{n}.public_ip}}\"]\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn killed_applies_should_never_create_an_instance_twice() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let domain = format!("{}.test", unique("kill"));
    let zone = hosted_zone(&domain).await;
    let mut interrupted = 0;
    for trial in 0..10 {
        let ws = Workspace::new(&unique(&format!("kill{trial}")));
        ws.write_specs(&fleet(&ws.stack, &domain, 20));
        let mut child = ws
            .command(&["apply", "--auto-approve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let records = rand::rng().random_range(1..70);
        let journal = ws.dir.path().join("jaam.state.json.journal");
        let reached = jaam_tests::kill_after_journal_records(&mut child, &journal, records).await;
        interrupted += usize::from(reached);

        let state = LocalStore::new(ws.state())
            .load()
            .await
            .expect("state loads after SIGKILL");
        if let Some(state) = state {
            state.validate().unwrap();
        }
        ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
        let instances = stack_instances(&ws.stack).await;
        assert_eq!(
            instances.len(),
            20,
            "trial {trial}: exactly 20 instances: {instances:?}"
        );
        let mut addrs: Vec<&str> = instances.iter().map(|(_, addr, _)| addr.as_str()).collect();
        addrs.dedup();
        assert_eq!(addrs.len(), 20, "trial {trial}: one instance per address");
        let ours = zone_records(&zone)
            .await
            .into_iter()
            .filter(|(name, _, _)| name.contains(&ws.stack))
            .count();
        assert_eq!(ours, 20, "trial {trial}: exactly 20 records");
        let gc = ws.jaam(&["gc"]);
        gc.expect_code(0);
        assert!(
            gc.stdout.contains("No orphans"),
            "trial {trial}: {}",
            gc.stdout
        );
        ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    }
    assert!(
        interrupted >= 8,
        "the trials must really interrupt the apply ({interrupted} of 10 did)"
    );
}

// Multi-threaded: the proxy's tasks must run while this test blocks on the `jaam` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_should_converge_through_throttling_without_duplicates() {
    let upstream = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let proxy = jaam_tests::FaultProxy::start(&upstream, 5).await;
    let ws = Workspace::new(&unique("faults"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    ws.write_specs(&fleet(&ws.stack, &domain, 10));
    let run = jaam_tests::Run::from(
        ws.command(&["apply", "--auto-approve"])
            .env("AWS_ENDPOINT_URL", &proxy.url)
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    let faults = proxy.faults.load(std::sync::atomic::Ordering::Relaxed);
    let requests = proxy.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        faults >= 10,
        "one request in five was throttled: {faults} of {requests}"
    );
    assert_eq!(
        stack_instances(&ws.stack).await.len(),
        10,
        "no duplicate instance"
    );
    assert_eq!(zone_records(&zone).await.len(), 10);
    let run = jaam_tests::Run::from(
        ws.command(&["plan", "--detailed-exitcode"])
            .env("AWS_ENDPOINT_URL", &proxy.url)
            .output()
            .unwrap(),
    );
    run.expect_code(0);
}

#[tokio::test]
async fn instance_type_should_change_in_place_by_stop_modify_start() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("resize"));
    let specs = |size: &str| {
        format!("instance.app:\n  ami: {AMI}\n  instance_type: {size}\n  tags:\n    app: resize\n")
    };
    ws.write_specs(&specs("t3.micro"));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let (id, _, _) = stack_instances(&ws.stack).await.remove(0);

    ws.write_specs(&specs("t3.small"));
    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(text.contains("~ instance.app {"), "{text}");
    assert!(
        text.contains("~ instance_type = \"t3.micro\" -> \"t3.small\""),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);

    let instances = stack_instances(&ws.stack).await;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].0, id, "the same instance, resized");
    let ec2 = jaam_tests::ec2_client().await;
    let described = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    assert_eq!(
        instance.instance_type().map(|t| t.as_str()),
        Some("t3.small")
    );
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
}

/// Issue 13 (in part): an instance keeps the image it was created from. A
/// newer image behind its AMI parameter is a note in the plan, never a
/// replacement; `--replace ADDR` takes it on request.
#[tokio::test]
async fn a_newer_image_should_be_a_note_not_a_replacement_until_asked() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("ami"));
    let parameter = format!("/jaam-test/{}/ami", ws.stack);
    let ssm = aws_sdk_ssm::Client::new(&jaam_tests::aws_config().await);
    let publish = |ami: &'static str| {
        let ssm = ssm.clone();
        let parameter = parameter.clone();
        async move {
            ssm.put_parameter()
                .name(&parameter)
                .value(ami)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .unwrap();
        }
    };
    publish("ami-0aaaaaaaaaaaaaaaa").await;
    ws.write_specs(&format!(
        "instance.web:\n  ami: {parameter}\n  instance_type: t3.micro\n"
    ));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let first = stack_instances(&ws.stack).await;
    assert_eq!(first.len(), 1);

    // AWS publishes a newer image: a note, no change (also for a daemon's heal).
    publish("ami-0bbbbbbbbbbbbbbbb").await;
    let run = ws.jaam(&["plan", "--detailed-exitcode"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "Note: `instance.web` keeps ami = \"ami-0aaaaaaaaaaaaaaaa\"; newer: \"ami-0bbbbbbbbbbbbbbbb\""
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("jaam apply --replace instance.web"),
        "{}",
        run.stdout
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(stack_instances(&ws.stack).await, first, "the same instance");

    // Asked for: replaced, on the newer image.
    let run = ws.jaam(&["plan", "--replace", "instance.web", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(
        text.contains("replacement requested with --replace"),
        "{text}"
    );
    assert!(
        text.contains("~ ami = \"ami-0aaaaaaaaaaaaaaaa\" -> \"ami-0bbbbbbbbbbbbbbbb\""),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve", "--replace", "instance.web"])
        .expect_code(0);
    let second = stack_instances(&ws.stack).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].0, first[0].0, "a new instance");
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

/// Split-horizon DNS: a private zone of the same name is never where a
/// record (or an ACME challenge) looked up by domain goes.
#[tokio::test]
async fn a_private_zone_of_the_same_name_should_be_ignored() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("private"));
    let domain = format!("{}.test", ws.stack);
    let route53 = jaam_tests::route53_client().await;
    let vpc = jaam_tests::ec2_client()
        .await
        .describe_vpcs()
        .send()
        .await
        .unwrap()
        .vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_owned();
    let private = route53
        .create_hosted_zone()
        .name(&domain)
        .caller_reference(uuid::Uuid::new_v4().to_string())
        .hosted_zone_config(
            aws_sdk_route53::types::HostedZoneConfig::builder()
                .private_zone(true)
                .build(),
        )
        .vpc(
            aws_sdk_route53::types::Vpc::builder()
                .vpc_id(vpc)
                .vpc_region(aws_sdk_route53::types::VpcRegion::UsEast1)
                .build(),
        )
        .send()
        .await
        .expect("private zone")
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned();
    ws.write_specs(&format!(
        "record.www:\n  zone: {domain}\n  name: www.{domain}\n  type: A\n  values: [\"192.0.2.10\"]\n"
    ));
    let run = ws.jaam(&["plan"]);
    run.expect_code(1);
    assert!(
        run.squashed()
            .contains("has only a private Route53 hosted zone"),
        "{}",
        run.squashed()
    );

    let public = hosted_zone(&domain).await;
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let name = format!("www.{domain}");
    assert!(
        zone_records(&public)
            .await
            .iter()
            .any(|(n, _, _)| *n == name),
        "the record is in the public zone"
    );
    assert!(
        !zone_records(&private)
            .await
            .iter()
            .any(|(n, _, _)| *n == name),
        "and not in the private one"
    );
    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}
