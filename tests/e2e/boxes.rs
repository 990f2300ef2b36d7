//! The instance emulator's own tests: boxes run user data once, keep only
//! enabled units across a stop/start, and the SSM stand-in follows SSM's
//! registration rules, statuses, timeouts and output limits.

use std::time::Duration;


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
        extra_ca: None,
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
                .run(&format!("systemctl is-active {unit}"), Duration::from_secs(10))
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
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .arg("http://198.51.100.7:80/")
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ping.stdout), "000", "nothing listens on 80 yet");

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
    assert_eq!(active("gone").await, "inactive", "a unit never enabled does not");
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
