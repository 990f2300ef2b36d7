//! The instance emulator's own tests: boxes run user data once, keep only
//! enabled units across a stop/start, and the SSM stand-in follows SSM's
//! registration rules, statuses, timeouts and output limits.

use std::time::Duration;

use jaam_tests::boxes::cloud::{Cloud, STDERR_LIMIT, STDOUT_LIMIT};
use jaam_tests::boxes::{BoxConfig, InstanceBox};
use jaam_tests::{moto_endpoint, unique};

fn config() -> BoxConfig {
    let moto = moto_endpoint();
    let port: u16 = moto.rsplit(':').next().unwrap().parse().unwrap();
    BoxConfig {
        forwards: vec![port],
        git_base: None,
        env: vec![
            ("AWS_ENDPOINT_URL".into(), moto),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ],
        missing_packages: Vec::new(),
    }
}

const UNITS: &str = r#"#!/bin/bash
set -euo pipefail
echo run >>/srv/boots
for name in kept gone; do
  cat >/etc/systemd/system/$name.service <<UNIT
[Service]
ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 $( [ $name = kept ] && echo 8001 || echo 8002 )
StandardOutput=append:/var/log/$name.log
StandardError=append:/var/log/$name.log

[Install]
WantedBy=multi-user.target
UNIT
done
systemctl daemon-reload
systemctl enable --now kept
systemctl start gone
echo user data done
"#;

#[tokio::test(flavor = "multi_thread")]
async fn box_should_run_user_data_once_and_restart_only_enabled_units() {
    let instance_box = InstanceBox::create(&unique("i-box"), config()).await;
    let ran = instance_box
        .boot("198.51.100.7", Some(UNITS))
        .await
        .expect("the user data ran at the first boot");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("user data done"));
    let active = |unit: &'static str| {
        let instance_box = &instance_box;
        async move {
            instance_box
                .run(
                    &format!("systemctl is-active {unit}"),
                    Duration::from_secs(10),
                )
                .await
                .stdout
                .trim()
                .to_owned()
        }
    };
    assert_eq!(active("kept").await, "active");
    assert_eq!(active("gone").await, "active");
    // The box answers on its public address from the host.
    let ping = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("http://198.51.100.7:80/")
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ping.stdout),
        "000",
        "nothing listens on 80 yet"
    );

    instance_box.shutdown().await;
    assert!(!instance_box.is_running());
    let again = instance_box.boot("198.51.100.8", Some(UNITS)).await;
    assert!(again.is_none(), "user data runs once per instance");
    assert_eq!(
        std::fs::read_to_string(instance_box.host_path("/srv/boots")).unwrap(),
        "run\n"
    );
    let mut kept = String::new();
    for _ in 0..50 {
        kept = active("kept").await;
        if kept == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept, "active", "an enabled unit comes back after a restart");
    assert_eq!(
        active("gone").await,
        "inactive",
        "a unit never enabled does not"
    );
    let served = instance_box
        .run(
            "for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:8001/ && echo up && break; sleep 0.1; done",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(served.stdout.trim(), "up", "{served:?}");

    // Commands run as root, and a timeout kills the whole process group.
    let who = instance_box.run("id -u", Duration::from_secs(10)).await;
    assert_eq!(who.stdout.trim(), "0");
    let slow = instance_box
        .run("sleep 30 & sleep 30; echo never", Duration::from_secs(1))
        .await;
    assert_eq!(slow.code, None);
    assert!(!slow.stdout.contains("never"));
    instance_box.destroy().await;
}

/// The AWS configuration of a client talking to `cloud`.
async fn cloud_config(cloud: &Cloud) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&cloud.url)
        .load()
        .await
}

/// Launches one instance through `cloud` with `profile` and `user_data`.
async fn launch(cloud: &Cloud, profile: Option<&str>, user_data: &str) -> String {
    let config = cloud_config(cloud).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let mut request = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .user_data(aws_smithy_types::base64::encode(user_data));
    if let Some(profile) = profile {
        request = request.iam_instance_profile(
            aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                .name(profile)
                .build(),
        );
    }
    let answer = request.send().await.expect("RunInstances");
    answer.instances()[0].instance_id().unwrap().to_owned()
}

async fn ssm_client(cloud: &Cloud) -> aws_sdk_ssm::Client {
    let config = cloud_config(cloud).await;
    aws_sdk_ssm::Client::new(&config)
}

async fn send(ssm: &aws_sdk_ssm::Client, id: &str, script: &str, timeout: &str) -> String {
    ssm.send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(id)
        .parameters("commands", vec![script.to_owned()])
        .parameters("executionTimeout", vec![timeout.to_owned()])
        .send()
        .await
        .expect("SendCommand")
        .command()
        .and_then(|c| c.command_id())
        .unwrap()
        .to_owned()
}

/// Polls GetCommandInvocation until the status is terminal; returns every
/// status seen, in order, and the last answer.
async fn finished(
    ssm: &aws_sdk_ssm::Client,
    command: &str,
    id: &str,
) -> (
    Vec<String>,
    aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput,
) {
    let mut seen: Vec<String> = Vec::new();
    loop {
        let answer = ssm
            .get_command_invocation()
            .command_id(command)
            .instance_id(id)
            .send()
            .await
            .expect("GetCommandInvocation");
        let status = answer
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if !matches!(status.as_str(), "Pending" | "InProgress" | "Delayed") {
            return (seen, answer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssm_stand_in_should_register_after_boot_run_commands_and_cut_output_like_ssm() {
    let moto = moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let cloud = Cloud::start(&moto, config()).await;
    let profile = jaam_tests::ssm_profile().await;
    let id = launch(
        &cloud,
        Some(&profile),
        "#!/bin/bash\nsleep 2\necho booted >/srv/booted\n",
    )
    .await;
    let ssm = ssm_client(&cloud).await;

    // Not registered while the boot script runs: SendCommand is refused.
    let early = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(&id)
        .parameters("commands", vec!["true".to_owned()])
        .send()
        .await
        .expect_err("refused before registration");
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&early),
        Some("InvalidInstanceId"),
        "{early:?}"
    );
    let machine = cloud.machine(&id).expect("a box for the instance");
    jaam_tests::eventually("registration", Duration::from_secs(60), || {
        let machine = machine.clone();
        async move { machine.registered().then_some(()) }
    })
    .await;
    let listed = ssm
        .describe_instance_information()
        .send()
        .await
        .expect("DescribeInstanceInformation");
    assert!(
        listed
            .instance_information_list()
            .iter()
            .any(|i| i.instance_id() == Some(id.as_str())),
        "{listed:?}"
    );

    // Runs as root in the box, after the boot script: Pending → InProgress → Success.
    let command = send(&ssm, &id, "sleep 0.5; id -u; cat /srv/booted", "60").await;
    let (statuses, answer) = finished(&ssm, &command, &id).await;
    assert_eq!(statuses.last().map(String::as_str), Some("Success"));
    assert!(statuses.contains(&"InProgress".to_owned()), "{statuses:?}");
    assert_eq!(answer.standard_output_content(), Some("0\nbooted\n"));

    // A failure keeps its exit code; output is cut as SSM cuts it.
    let noisy = "python3 -c 'import sys; sys.stdout.write(\"o\" * 30000); sys.stderr.write(\"e\" * 10000)'; exit 3";
    let command = send(&ssm, &id, noisy, "60").await;
    let (_, answer) = finished(&ssm, &command, &id).await;
    assert_eq!(answer.status().map(|s| s.as_str()), Some("Failed"));
    assert_eq!(answer.response_code(), 3);
    assert_eq!(
        answer.standard_output_content().unwrap().len(),
        STDOUT_LIMIT
    );
    assert_eq!(answer.standard_error_content().unwrap().len(), STDERR_LIMIT);
    let invocations = ssm
        .list_command_invocations()
        .command_id(&command)
        .details(true)
        .send()
        .await
        .expect("ListCommandInvocations");
    let plugin = &invocations.command_invocations()[0].command_plugins()[0];
    assert_eq!(plugin.output().unwrap().len(), 2_500);

    // executionTimeout is honoured.
    let command = send(&ssm, &id, "sleep 30", "1").await;
    let (_, answer) = finished(&ssm, &command, &id).await;
    assert_eq!(answer.status().map(|s| s.as_str()), Some("TimedOut"));

    // User data over EC2's limit is refused, as EC2 refuses it.
    let config = cloud_config(&cloud).await;
    let refused = aws_sdk_ec2::Client::new(&config)
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .user_data(aws_smithy_types::base64::encode(format!(
            "#!/bin/bash\n#{}\n",
            "x".repeat(17_000)
        )))
        .send()
        .await
        .expect_err("17 KB of user data");
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&refused),
        Some("InvalidParameterValue"),
        "{refused:?}"
    );

    // A parameter over 4 KB: refused on the Standard tier, as SSM does;
    // jaam's writes ask for Intelligent-Tiering and go through.
    let big = "k".repeat(6_000);
    let refused = ssm
        .put_parameter()
        .name(format!("/jaam-tests/{}/big", unique("tier")))
        .value(&big)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect_err("6 KB on the Standard tier");
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&refused),
        Some("ValidationException")
    );
    let parameters = jaam_core::providers::aws::parameters::Parameters::new(&config, None);
    let name = format!("/jaam-tests/{}/chain", unique("tier"));
    parameters
        .put(
            &name,
            &jaam_core::value::Secret::new(big.clone()),
            "a long chain",
        )
        .await
        .expect("jaam's write of a long value");

    // A profile whose role cannot use SSM never registers.
    let denied = jaam_tests::instance_profile(&unique("no-ssm"), false).await;
    let other = launch(&cloud, Some(&denied), "#!/bin/bash\ntrue\n").await;
    let machine = cloud.machine(&other).expect("a box");
    let why = jaam_tests::eventually("the boot to finish", Duration::from_secs(60), || {
        let machine = machine.clone();
        async move { machine.not_registered.lock().unwrap().clone() }
    })
    .await;
    assert!(why.contains("do not allow the SSM core actions"), "{why}");
    assert!(!machine.registered());
}
