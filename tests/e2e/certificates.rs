//! `certificate` against Pebble (real DNS-01 validation through
//! pebble-challtestsrv) and moto (Route53 TXT records, SSM Parameter Store).

use std::time::Duration;

use jaam_tests::acme::{Route53Mirror, pebble};
use jaam_tests::{Run, Workspace, aws_config, hosted_zone, moto_endpoint, unique, zone_records};

fn spec(domain: &str, directory: &str, extra: &str) -> String {
    format!(
        "certificate.www:\n  domains: [www.{domain}, api.{domain}]\n  zone: {domain}\n  \
         acme_directory: {directory}\n  contact_email: ops@{domain}\n{extra}"
    )
}

/// Runs jaam through the Route53 mirror, with debug logs captured.
fn jaam(ws: &Workspace, mirror: &Route53Mirror, args: &[&str]) -> Run {
    let output = ws
        .command(args)
        .env("AWS_ENDPOINT_URL", &mirror.url)
        .env("JAAM_LOG", "debug")
        .output()
        .expect("run jaam");
    Run::from(output)
}

async fn parameter(name: &str) -> Option<(String, i64)> {
    let client = aws_sdk_ssm::Client::new(&aws_config().await);
    match client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(answer) => answer
            .parameter()
            .map(|p| (p.value().unwrap_or_default().to_owned(), p.version())),
        Err(_) => None,
    }
}

fn state_attributes(ws: &Workspace) -> serde_json::Value {
    let text = std::fs::read_to_string(ws.state()).expect("state");
    let json: serde_json::Value = serde_json::from_str(&text).expect("state JSON");
    json["resources"]["certificate.www"]["attributes"].clone()
}

fn account_parameter(directory: &str) -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(directory.as_bytes()));
    format!("/jaam/acme/account/{}", &hash[..16])
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_should_be_issued_renewed_and_kept_out_of_state() {
    let moto = moto_endpoint();
    let pebble = pebble();
    let _moto = jaam_tests::MOTO.read().await;
    let mirror = Route53Mirror::start(&moto, &pebble.challtestsrv, false).await;
    let ws = Workspace::new(&unique("cert"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    ws.write_specs(&spec(&domain, &pebble.directory, ""));

    let run = jaam(&ws, &mirror, &["apply", "--auto-approve"]);
    run.expect_code(0);
    assert!(mirror.published.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    let prefix = format!("/jaam/{}/certificate.www", ws.stack);
    let (key, _) = parameter(&format!("{prefix}/private_key"))
        .await
        .expect("the key is in Parameter Store");
    let (chain, _) = parameter(&format!("{prefix}/chain"))
        .await
        .expect("the chain is in Parameter Store");
    assert!(key.contains("PRIVATE KEY"), "a PEM key");
    pebble
        .verify(&chain)
        .expect("the chain verifies against Pebble's root");
    let names = jaam_core::providers::acme::inspect_chain(&chain)
        .expect("a chain")
        .names;
    assert_eq!(names, [format!("www.{domain}"), format!("api.{domain}")]);

    // The key is nowhere but Parameter Store; state keeps names and metadata.
    let state = std::fs::read_to_string(ws.state()).expect("state");
    let key_body: String = key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    for haystack in [&state, &run.stdout, &run.stderr] {
        assert!(!haystack.contains(&key_body[..40]), "the key leaked");
        assert!(!haystack.contains("PRIVATE KEY-----"), "a key leaked");
    }
    let attributes = state_attributes(&ws);
    assert_eq!(
        attributes["private_key_parameter"],
        format!("{prefix}/private_key")
    );
    let serial = attributes["serial"].as_str().expect("serial").to_owned();
    assert!(
        attributes["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 64)
    );
    // The challenge records are gone again.
    assert!(
        zone_records(&zone)
            .await
            .iter()
            .all(|(name, _, _)| !name.starts_with("_acme-challenge")),
        "{:?}",
        zone_records(&zone).await
    );
    // Inside its lifetime, outside the renewal window: nothing to do.
    jaam(&ws, &mirror, &["plan", "--detailed-exitcode"]).expect_code(0);
    let account = account_parameter(&pebble.directory);
    let (_, account_version) = parameter(&account)
        .await
        .expect("the account key is stored");

    // Pebble issues for 40 s; a third of that before expiry the plan renews.
    let renewal = jaam_tests::eventually("a planned renewal", Duration::from_secs(60), || {
        let run = jaam(&ws, &mirror, &["plan", "--detailed-exitcode"]);
        async move {
            if run.code == Some(2) {
                return Some(run);
            }
            run.expect_code(0);
            None
        }
    })
    .await;
    let text = renewal.squashed();
    assert!(
        text.contains("# certificate.www will be updated in place (renewal due: expires in"),
        "{text}"
    );
    let run = jaam(&ws, &mirror, &["apply", "--auto-approve"]);
    run.expect_code(0);
    assert!(
        run.stderr.contains("reusing the stored ACME account"),
        "{}",
        run.stderr
    );
    let attributes = state_attributes(&ws);
    assert_ne!(
        attributes["serial"].as_str(),
        Some(serial.as_str()),
        "renewed"
    );
    let (_, version) = parameter(&account).await.expect("account");
    assert_eq!(
        version, account_version,
        "the account key was reused, not replaced"
    );
    let (renewed_key, _) = parameter(&format!("{prefix}/private_key"))
        .await
        .expect("key");
    assert_ne!(renewed_key, key, "a renewal uses a fresh key");

    // A parameter deleted outside jaam is planned back.
    aws_sdk_ssm::Client::new(&aws_config().await)
        .delete_parameter()
        .name(format!("{prefix}/chain"))
        .send()
        .await
        .expect("DeleteParameter");
    let run = jaam(&ws, &mirror, &["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(
        text.contains("certificate.www will be created (deleted outside jaam)"),
        "{text}"
    );
    jaam(&ws, &mirror, &["apply", "--auto-approve"]).expect_code(0);
    assert!(parameter(&format!("{prefix}/chain")).await.is_some());

    jaam(&ws, &mirror, &["destroy", "--auto-approve"]).expect_code(0);
    assert!(parameter(&format!("{prefix}/chain")).await.is_none());
    assert!(parameter(&format!("{prefix}/private_key")).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_validation_should_fail_with_the_ca_reason_and_record_nothing() {
    let moto = moto_endpoint();
    let pebble = pebble();
    let _moto = jaam_tests::MOTO.read().await;
    let mirror = Route53Mirror::start(&moto, &pebble.challtestsrv, true).await;
    let ws = Workspace::new(&unique("badcert"));
    let domain = format!("{}.test", ws.stack);
    let zone = hosted_zone(&domain).await;
    ws.write_specs(&spec(&domain, &pebble.directory, ""));

    let run = jaam(&ws, &mirror, &["apply", "--auto-approve"]);
    run.expect_code(1);
    let text = run.squashed();
    assert!(text.contains("certificate.www"), "{text}");
    // Pebble's own words for a TXT record with the wrong value.
    assert!(
        text.contains("Correct value not found for DNS challenge"),
        "{text}"
    );
    let state = std::fs::read_to_string(ws.state()).unwrap_or_default();
    assert!(
        !state.contains("certificate.www\""),
        "nothing recorded: {state}"
    );
    let prefix = format!("/jaam/{}/certificate.www", ws.stack);
    assert!(parameter(&format!("{prefix}/private_key")).await.is_none());
    assert!(
        zone_records(&zone)
            .await
            .iter()
            .all(|(name, _, _)| !name.starts_with("_acme-challenge")),
        "challenge records are cleaned up after a failure"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn install_on_should_send_one_command_per_issue() {
    let moto = moto_endpoint();
    let pebble = pebble();
    let _moto = jaam_tests::MOTO.read().await;
    let mirror = Route53Mirror::start(&moto, &pebble.challtestsrv, false).await;
    let ws = Workspace::new(&unique("certinstall"));
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    let ec2 = jaam_tests::ec2_client().await;
    let launched = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("RunInstances");
    let instance = launched.instances()[0]
        .instance_id()
        .expect("id")
        .to_owned();
    ws.write_specs(&spec(
        &domain,
        &pebble.directory,
        &format!("  install_on: [{instance}]\n"),
    ));
    jaam(&ws, &mirror, &["apply", "--auto-approve"]).expect_code(0);

    let ssm = aws_sdk_ssm::Client::new(&aws_config().await);
    let commands = ssm
        .list_commands()
        .instance_id(&instance)
        .send()
        .await
        .expect("ListCommands");
    let ours: Vec<_> = commands
        .commands()
        .iter()
        .filter(|c| c.comment() == Some("jaam: install certificate www"))
        .collect();
    assert_eq!(ours.len(), 1, "{commands:?}");
    let script = ours[0].parameters().expect("parameters")["commands"].join("\n");
    assert!(script.contains(&format!("/jaam/{}/certificate.www/private_key", ws.stack)));
    assert!(script.contains("/etc/jaam/tls/www/privkey.pem"), "{script}");
    assert!(
        !script.contains("PRIVATE KEY"),
        "the key never travels in the command"
    );
    ec2.terminate_instances()
        .instance_ids(&instance)
        .send()
        .await
        .expect("terminate");
}

/// Issue 16, item 4: on a terminal, `apply` keeps a live line per resource in
/// flight (spinner and time spent) under the lines of what finished. The
/// terminal is a real pseudo-terminal (`script` from util-linux).
#[tokio::test(flavor = "multi_thread")]
async fn apply_on_a_terminal_should_show_a_live_line_per_resource_in_flight() {
    let moto = moto_endpoint();
    let pebble = pebble();
    let _moto = jaam_tests::MOTO.read().await;
    let mirror = Route53Mirror::start(&moto, &pebble.challtestsrv, false).await;
    let ws = Workspace::new(&unique("live"));
    let domain = format!("{}.test", ws.stack);
    hosted_zone(&domain).await;
    ws.write_specs(&spec(&domain, &pebble.directory, ""));
    let command = ws.command(&["apply", "--auto-approve"]);
    let quote =
        |arg: &std::ffi::OsStr| format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(quote)
        .collect();
    let mut terminal = std::process::Command::new("script");
    terminal
        .args(["-qfec", &line.join(" "), "/dev/null"])
        .current_dir(ws.dir.path())
        .env("AWS_ENDPOINT_URL", &mirror.url)
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120");
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            terminal.env(key, value);
        }
    }
    let output = terminal.output().expect("run script(1)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("certificate.www: Creating...") && text.contains("elapsed]"),
        "a live line while the certificate is issued: {text}"
    );
    assert!(text.contains("\x1b["), "redrawn in place: {text}");
    assert!(
        text.contains("certificate.www: Creation complete after"),
        "{text}"
    );

    // Piped, the same apply (a destroy here) prints plain lines only.
    let run = jaam(&ws, &mirror, &["destroy", "--auto-approve"]);
    run.expect_code(0);
    assert!(
        !run.stderr.contains("elapsed]") && !run.stderr.contains('\x1b'),
        "{}",
        run.stderr
    );
}
