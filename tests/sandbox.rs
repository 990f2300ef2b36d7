//! `jaam-sandbox`: the local stand-ins `./scripts/demo` needs beside moto and
//! Pebble. It bridges moto's Route53 to Pebble's DNS (see
//! [`jaam_tests::acme::Route53Mirror`]) and serves a small GitHub API on
//! loopback (repository hooks and branch heads). It prints the environment to
//! point `jaam` at them, then `ready`, and runs until it is stopped.
//!
//! Needs `AWS_ENDPOINT_URL` (moto) and `JAAM_TEST_CHALLTESTSRV`; the branch
//! heads it knows come from `JAAM_SANDBOX_HEADS` (`owner/repo@branch=sha,…`).

use std::io::Write as _;

use jaam_tests::acme::Route53Mirror;
use jaam_tests::github::GithubFake;

#[tokio::main]
async fn main() {
    let moto = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL names moto");
    let dns =
        std::env::var("JAAM_TEST_CHALLTESTSRV").expect("JAAM_TEST_CHALLTESTSRV names challtestsrv");
    let mirror = Route53Mirror::start(&moto, &dns, false).await;
    let github = GithubFake::start().await;
    for head in std::env::var("JAAM_SANDBOX_HEADS")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((branch, sha)) = head.split_once('=')
            && let Some((repo, branch)) = branch.split_once('@')
        {
            github
                .repos
                .lock()
                .expect("fake")
                .branches
                .insert((repo.to_owned(), branch.to_owned()), sha.to_owned());
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "export AWS_ENDPOINT_URL={}", mirror.url);
    let _ = writeln!(out, "export GITHUB_API_URL={}", github.url);
    let _ = writeln!(out, "export GITHUB_TOKEN=sandbox-token");
    let _ = writeln!(out, "# ready");
    let _ = out.flush();
    drop(out);
    let _ = tokio::signal::ctrl_c().await;
}
