//! Pebble (the ACME test CA) and the bridge between moto's Route53 and the DNS
//! server Pebble asks, `pebble-challtestsrv`.
//!
//! jaam writes `_acme-challenge` TXT records to Route53 (moto). Pebble resolves
//! them through challtestsrv, so [`Route53Mirror`] sits between jaam and moto
//! and copies every TXT change of a `_acme-challenge` name into challtestsrv
//! *before* moto answers: by the time jaam sees INSYNC and tells Pebble to
//! validate, the DNS answer is there. Pebble then really checks the value.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where `scripts/test` started Pebble.
#[derive(Clone, Debug)]
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// Pebble's management API (roots).
    pub management: String,
    /// challtestsrv's management API.
    pub challtestsrv: String,
    /// The PEM file of the CA that signed Pebble's HTTPS certificate.
    pub tls_root: String,
}

/// Pebble's endpoints, or a loud failure explaining how to start it.
pub fn pebble() -> Pebble {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "this test needs Pebble and pebble-challtestsrv: run it through `./scripts/test`, \
                 which installs and starts them ({name} is not set)"
            )
        })
    };
    Pebble {
        directory: var("JAAM_TEST_ACME_DIRECTORY"),
        management: var("JAAM_TEST_PEBBLE_MANAGEMENT"),
        challtestsrv: var("JAAM_TEST_CHALLTESTSRV"),
        tls_root: var("JAAM_ACME_ROOT_CA"),
    }
}

impl Pebble {
    /// Pebble's current root and intermediate certificates (issuing chain roots).
    pub fn roots(&self) -> String {
        let output = std::process::Command::new("curl")
            .args(["-sSf", "--cacert", &self.tls_root])
            .arg(format!("{}/roots/0", self.management))
            .output()
            .expect("run curl");
        assert!(
            output.status.success(),
            "GET /roots/0: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("PEM")
    }

    /// Verifies `chain` (leaf first, then intermediates) against Pebble's root
    /// with `openssl verify`.
    pub fn verify(&self, chain: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocks: Vec<String> = chain
            .split_inclusive("-----END CERTIFICATE-----")
            .map(str::trim)
            .filter(|block| block.contains("BEGIN CERTIFICATE"))
            .map(|block| format!("{block}\n"))
            .collect();
        assert!(!blocks.is_empty(), "no certificate in the chain");
        std::fs::write(dir.path().join("leaf.pem"), &blocks[0]).expect("write");
        std::fs::write(dir.path().join("intermediates.pem"), blocks[1..].concat()).expect("write");
        std::fs::write(dir.path().join("root.pem"), self.roots()).expect("write");
        let mut command = std::process::Command::new("openssl");
        command
            .current_dir(dir.path())
            .args(["verify", "-CAfile", "root.pem"]);
        if blocks.len() > 1 {
            command.args(["-untrusted", "intermediates.pem"]);
        }
        let output = command.arg("leaf.pem").output().expect("run openssl");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

/// A proxy in front of moto that mirrors `_acme-challenge` TXT changes into
/// challtestsrv. With `corrupt`, it publishes a wrong value instead.
pub struct Route53Mirror {
    /// `http://127.0.0.1:PORT`: give it to jaam as `AWS_ENDPOINT_URL`.
    pub url: String,
    /// TXT values published so far.
    pub published: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Route53Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Route53Mirror {
    /// Starts the mirror in front of `moto` (`http://127.0.0.1:PORT`).
    pub async fn start(moto: &str, challtestsrv: &str, corrupt: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mirror");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let upstream = moto.trim_start_matches("http://").to_owned();
        let dns = challtestsrv.trim_start_matches("http://").to_owned();
        let published = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&published);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, dns, count) = (upstream.clone(), dns.clone(), Arc::clone(&count));
                tokio::spawn(async move {
                    let Ok(Some((request, body_start))) = crate::read_request(&mut client).await
                    else {
                        return;
                    };
                    let body = String::from_utf8_lossy(&request[body_start..]).into_owned();
                    if body.contains("<ChangeBatch") {
                        for change in challenge_changes(&body) {
                            mirror(&dns, &change, corrupt).await;
                            if change.action != "DELETE" {
                                count.fetch_add(change.values.len(), Ordering::Relaxed);
                            }
                        }
                    }
                    let _ = crate::forward(client, &upstream, &request).await;
                });
            }
        });
        Self {
            url,
            published,
            task,
        }
    }
}

/// One TXT change of a `_acme-challenge` name.
#[derive(Debug, PartialEq, Eq)]
struct Change {
    action: String,
    name: String,
    values: Vec<String>,
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    text.split(open)
        .skip(1)
        .filter_map(|rest| rest.split_once(close).map(|(inside, _)| inside))
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn challenge_changes(body: &str) -> Vec<Change> {
    body.split("<Change>")
        .skip(1)
        .filter_map(|change| {
            let action = between(change, "<Action>", "</Action>")
                .first()?
                .to_string();
            let name = between(change, "<Name>", "</Name>").first()?.to_string();
            let kind = *between(change, "<Type>", "</Type>").first()?;
            (kind == "TXT" && name.starts_with("_acme-challenge.")).then(|| Change {
                action,
                name,
                values: between(change, "<Value>", "</Value>")
                    .into_iter()
                    .map(|v| unescape(v).trim_matches('"').to_owned())
                    .collect(),
            })
        })
        .collect()
}

async fn mirror(dns: &str, change: &Change, corrupt: bool) {
    let host = if change.name.ends_with('.') {
        change.name.clone()
    } else {
        format!("{}.", change.name)
    };
    post(dns, "/clear-txt", &serde_json::json!({ "host": host })).await;
    if change.action == "DELETE" {
        return;
    }
    for value in &change.values {
        let value = if corrupt {
            "not-the-key-authorization-digest".to_owned()
        } else {
            value.clone()
        };
        post(
            dns,
            "/set-txt",
            &serde_json::json!({ "host": host, "value": value }),
        )
        .await;
    }
}

async fn post(host: &str, path: &str, body: &serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to challtestsrv");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write to challtestsrv");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("read challtestsrv");
    let status = String::from_utf8_lossy(&answer);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "challtestsrv {path}: {status}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_should_be_read_from_a_change_batch() {
        let body = r#"<ChangeResourceRecordSetsRequest><ChangeBatch><Changes><Change><Action>UPSERT</Action><ResourceRecordSet><Name>_acme-challenge.a.x.test.</Name><Type>TXT</Type><ResourceRecords><ResourceRecord><Value>&quot;abc&quot;</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change><Change><Action>UPSERT</Action><ResourceRecordSet><Name>a.x.test.</Name><Type>A</Type></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#;
        assert_eq!(
            challenge_changes(body),
            [Change {
                action: "UPSERT".into(),
                name: "_acme-challenge.a.x.test.".into(),
                values: vec!["abc".into()],
            }]
        );
    }
}
