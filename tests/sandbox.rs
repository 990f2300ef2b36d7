//! `jaam-sandbox`: the local stand-ins `./scripts/demo` needs beside moto and
//! Pebble. It bridges moto's Route53 to Pebble's DNS (see
//! [`jaam_tests::acme::Route53Mirror`]), serves a small GitHub API on
//! loopback (repository hooks and branch heads) and, run as root, boots every
//! instance as a box ([`jaam_tests::boxes`]) with `examples/apps/static-spa`
//! published as `acme/blog` on a local Git server, so the demo's site is
//! really built and served. It prints the environment to point `jaam` at them,
//! then `ready`, and runs until it is stopped.
//!
//! Needs `AWS_ENDPOINT_URL` (moto) and `JAAM_TEST_CHALLTESTSRV`; more branch
//! heads may come from `JAAM_SANDBOX_HEADS` (`owner/repo@branch=sha,…`).

use std::io::Write as _;

use jaam_tests::acme::Route53Mirror;
use jaam_tests::boxes::BoxConfig;
use jaam_tests::boxes::cloud::{Cloud, GitServer};
use jaam_tests::github::GithubFake;

#[tokio::main]
async fn main() {
    let moto = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL names moto");
    let dns =
        std::env::var("JAAM_TEST_CHALLTESTSRV").expect("JAAM_TEST_CHALLTESTSRV names challtestsrv");
    let github = GithubFake::start().await;
    let mut heads: Vec<(String, String, String)> = std::env::var("JAAM_SANDBOX_HEADS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|head| {
            let (branch, sha) = head.split_once('=')?;
            let (repo, branch) = branch.split_once('@')?;
            Some((repo.to_owned(), branch.to_owned(), sha.to_owned()))
        })
        .collect();
    // Instances that run, when this process may make namespaces.
    let boxes = rustix::process::geteuid().is_root();
    let mut git = None;
    let mut cloud = None;
    if boxes {
        let server = GitServer::start().await;
        let app =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/static-spa");
        let sha = server.push("acme/blog", &app, &[]);
        heads.retain(|(repo, _, _)| repo != "acme/blog");
        heads.push(("acme/blog".into(), "main".into(), sha));
        let moto_port: u16 = moto
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("AWS_ENDPOINT_URL ends with a port");
        cloud = Some(
            Cloud::start(
                &moto,
                BoxConfig {
                    forwards: vec![moto_port, server.port],
                    git_base: Some(server.base()),
                    env: [
                        "AWS_DEFAULT_REGION",
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                    ]
                    .iter()
                    .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
                    .chain([("AWS_ENDPOINT_URL".to_owned(), moto.clone())])
                    .collect(),
                    missing_packages: Vec::new(),
                },
            )
            .await,
        );
        git = Some(server);
    }
    for (repo, branch, sha) in heads {
        github
            .repos
            .lock()
            .expect("fake")
            .branches
            .insert((repo, branch), sha);
    }
    let upstream = cloud.as_ref().map_or(moto.clone(), |c| c.url.clone());
    let mirror = Route53Mirror::start(&upstream, &dns, false).await;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "export AWS_ENDPOINT_URL={}", mirror.url);
    let _ = writeln!(out, "export GITHUB_API_URL={}", github.url);
    let _ = writeln!(out, "export GITHUB_TOKEN=sandbox-token");
    let _ = writeln!(out, "export JAAM_SANDBOX_BOXES={}", u8::from(boxes));
    let _ = writeln!(out, "# ready");
    let _ = out.flush();
    drop(out);
    // Stopped with SIGINT or SIGTERM (how the demo stops it): the boxes are
    // dropped, which kills their processes and removes their namespaces.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop((cloud, git));
}
