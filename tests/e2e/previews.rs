//! Issue 15: pull request previews, served for real. `jaam` and its daemon
//! against moto + Pebble + the GitHub fake, the site's instance booted as a
//! box: each open pull request into the site's branch is built from its
//! head and served at `https://pr-N.blog.<domain>` with the site's
//! wildcard certificate, moves with its pushes, goes when it closes, and
//! never touches production.

use std::time::Duration;

use jaam_tests::daemon::{Daemon, pull_deliveries};

use super::frameworks::{build_log, serving_release};
use super::served::{HOOK_SECRET, Stage, state};

const APP: &str = "static-spa";

impl Stage {
    /// Pushes pull request `number`'s head (the app with its own message)
    /// and opens it on the GitHub fake; returns the head.
    fn open_pull(&self, number: u64, message: &str, fork: bool) -> String {
        self.open_pull_of(
            APP,
            number,
            &[("message.txt", &format!("{message}\n"))],
            fork,
        )
    }

    /// [`Stage::open_pull`] of `app` with `changes`.
    fn open_pull_of(&self, app: &str, number: u64, changes: &[(&str, &str)], fork: bool) -> String {
        let sha = self.git.push_pull(
            &self.repo,
            number,
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/apps")
                .join(app),
            changes,
        );
        self.github
            .open_pull(&self.repo, number, "main", &sha, fork);
        sha
    }

    /// Delivers the signed `pull_request` event to `daemon`, which must
    /// accept it.
    fn deliver_pull(&self, daemon: &Daemon, action: &str, number: u64, head: &str, fork: bool) {
        let all = pull_deliveries(
            HOOK_SECRET,
            &self.repo,
            "main",
            &[(action, number, head, fork)],
        );
        let (status, body) = daemon.deliver(&all[0]);
        assert!(status == 200 || status == 202, "{status} {body}");
    }

    /// How many apps listen on the previews' ports (the site's `port`
    /// 3000: 3002 and up) in the site's box.
    async fn preview_apps(&self) -> usize {
        let listening = self
            .instance_box()
            .run(
                "ss -Hltn '( sport >= :3002 and sport <= :3009 )' | wc -l",
                Duration::from_secs(20),
            )
            .await;
        listening.stdout.trim().parse().expect("a count")
    }

    fn preview_host(&self, number: u64) -> String {
        format!("pr-{number}.blog.{}", self.domain)
    }

    /// The page pull request `number`'s host serves over HTTPS.
    async fn preview_page(&self, number: u64) -> String {
        let seen = self
            .get_host(&self.preview_host(number), "https", "/")
            .await;
        format!("{} {}", seen.status, seen.body)
    }

    /// Waits until pull request `number`'s host serves a page with `text`.
    async fn wait_for_preview(&self, number: u64, text: &str) {
        let wanted = text.to_owned();
        jaam_tests::eventually(
            &format!("the preview of #{number} serving `{text}`"),
            Duration::from_secs(240),
            || async {
                let page = self.preview_page(number).await;
                page.contains(&wanted).then_some(())
            },
        )
        .await;
    }

    /// The previews state records: number → head.
    fn recorded_previews(&self) -> std::collections::BTreeMap<String, String> {
        state(&self.ws)["resources"]["site.blog.instance"]["attributes"]["previews"]
            .as_object()
            .map(|previews| {
                previews
                    .iter()
                    .map(|(n, p)| (n.clone(), p["head"].as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_requests_should_get_previews_that_follow_them_and_never_touch_production() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, production) = Stage::new("previews", APP).await;
    // Production reads a secret as its title; previews must not.
    let parameter = stage.put_secret("title", "secret-production-title").await;
    stage.write_site(
        "static",
        None,
        &format!(
            "{}  secrets:\n    PUBLIC_TITLE: {parameter}\n  previews:\n    enabled: true\n",
            stage.webhook()
        ),
    );
    // A pull request open before jaam ever ran: the first apply builds it.
    let first = stage.open_pull(1, "hello from pull request 1", false);
    let plan = stage.jaam(&["plan", "--detailed-exitcode"]).await;
    plan.expect_code(2);
    assert!(plan.stdout.contains("previews"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains(&first),
        "the plan names the head: {}",
        plan.stdout
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    assert_eq!(stage.recorded_previews()["1"], first);
    stage.wait_for_preview(1, "hello from pull request 1").await;
    let page = stage.preview_page(1).await;
    assert!(page.starts_with("200 "), "{page}");
    assert!(page.contains("hello from pull request 1"), "{page}");
    assert!(
        page.contains("<title>jaam sample</title>"),
        "a preview never reads the site's secrets: {page}"
    );
    let main = stage.get("https", "/").await;
    assert!(main.body.contains("hello from revision A"), "{main:?}");
    assert!(
        main.body.contains("secret-production-title"),
        "production does: {main:?}"
    );
    let records = jaam_tests::zone_records(&stage.zone).await;
    assert!(
        records.iter().any(|(name, kind, _)| kind == "A"
            && name.ends_with(&format!("blog.{}", stage.domain))
            && (name.starts_with("*.") || name.starts_with("\\052."))),
        "the wildcard record: {records:?}"
    );
    let listed = stage.jaam(&["previews", "site.blog"]).await;
    listed.expect_code(0);
    assert!(
        listed.stdout.contains("#1")
            && listed.stdout.contains(&first[..12])
            && listed.stdout.contains("serving")
            && listed
                .stdout
                .contains(&format!("https://{}", stage.preview_host(1))),
        "{}",
        listed.stdout
    );
    // Nothing changes until a pull request does.
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(0);

    // The daemon: a pull request opened, pushed to, and a fork's.
    let daemon = Daemon::start(
        stage.command(&["daemon", "--public-url", "https://jaam.example.test"]),
        stage.ws.dir.path().join("daemon.log"),
    );
    let second = stage.open_pull(2, "hello from pull request 2", false);
    stage.deliver_pull(&daemon, "opened", 2, &second, false);
    stage.wait_for_preview(2, "hello from pull request 2").await;
    let moved = stage.open_pull(2, "hello again from pull request 2", false);
    stage.deliver_pull(&daemon, "synchronize", 2, &moved, false);
    stage
        .wait_for_preview(2, "hello again from pull request 2")
        .await;
    daemon.wait_until(
        "the moved preview in /status",
        Duration::from_secs(30),
        |d| d.status()["previews"]["blog"]["2"]["head"] == moved.as_str(),
    );
    assert_eq!(
        daemon.status()["previews"]["blog"]["2"]["url"],
        format!("https://{}", stage.preview_host(2))
    );
    let (code, page) = daemon.get("/sites/blog");
    assert_eq!(code, 200);
    assert!(
        page.contains(&format!(
            "<a class=\"url\" href=\"https://{0}\">https://{0}</a>",
            stage.preview_host(2)
        )) && page.contains("/pull/2\">#2</a>"),
        "the dashboard lists the preview: {page}"
    );
    let fork = stage.open_pull(3, "hello from a fork", true);
    stage.deliver_pull(&daemon, "opened", 3, &fork, true);
    // Closing #1 queues the same reconcile: once #1 is gone, #3's turn came.
    stage.github.close_pull(&stage.repo, 1);
    stage.deliver_pull(&daemon, "closed", 1, &first, false);
    jaam_tests::eventually(
        "the closed pull request's preview gone",
        Duration::from_secs(240),
        || async { (!stage.recorded_previews().contains_key("1")).then_some(()) },
    )
    .await;
    let gone = stage.preview_page(1).await;
    assert!(!gone.contains("pull request 1"), "{gone}");
    assert!(
        !stage.preview_page(3).await.contains("hello from a fork"),
        "a fork's pull request is not built"
    );
    assert!(!stage.recorded_previews().contains_key("3"));
    let main = stage.get("https", "/").await;
    assert!(main.body.contains("hello from revision A"), "{main:?}");
    let root = stage.instance_box().host_path("/srv/jaam/blog/previews");
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .expect("previews directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["2"], "only #2's preview is left on the instance");

    // GitHub heard of each preview: a deployment per head, its statuses.
    {
        let repos = stage.github.repos.lock().unwrap();
        let environment = |id: &i64| repos.deployments[id].1["environment"].clone();
        let preview_two: Vec<&serde_json::Value> = repos
            .statuses
            .iter()
            .filter(|(id, _)| environment(id) == "preview/pr-2")
            .map(|(_, body)| body)
            .collect();
        let states: Vec<&str> = preview_two
            .iter()
            .map(|b| b["state"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            states,
            ["in_progress", "success", "in_progress", "success"],
            "two heads of #2 deployed"
        );
        let done = preview_two.last().unwrap();
        assert_eq!(
            done["environment_url"],
            format!("https://{}", stage.preview_host(2))
        );
        assert_eq!(done["log_url"], "https://jaam.example.test/sites/blog");
        assert!(
            repos
                .deployments
                .values()
                .all(|(_, body)| body["environment"] != "preview/pr-3"),
            "no deployment for a fork's pull request"
        );
    }
    assert_eq!(daemon.terminate(), Some(0));

    // Opened while the daemon was down: the first reconcile of the next
    // daemon builds it. Then more than `max` (5) open pull requests: the
    // newest five serve, the oldest (#2) is evicted.
    let mut heads = Vec::new();
    for number in 4..=8 {
        heads.push(stage.open_pull(number, &format!("hello from pull request {number}"), false));
    }
    let daemon = Daemon::start(
        stage.command(&["daemon"]),
        stage.ws.dir.path().join("daemon-2.log"),
    );
    jaam_tests::eventually(
        "the newest five previews after the restart",
        Duration::from_secs(300),
        || async {
            let recorded: Vec<String> = stage.recorded_previews().into_keys().collect();
            (recorded == ["4", "5", "6", "7", "8"]).then_some(())
        },
    )
    .await;
    assert!(
        stage
            .preview_page(8)
            .await
            .contains("hello from pull request 8")
    );
    assert!(
        !stage.preview_page(2).await.contains("pull request 2"),
        "the oldest preview is evicted"
    );
    // GitHub no longer offers the evicted preview's URL.
    jaam_tests::eventually(
        "the evicted preview's deployment inactive",
        Duration::from_secs(30),
        || async {
            let repos = stage.github.repos.lock().unwrap();
            let last = repos
                .statuses
                .iter()
                .rev()
                .find(|(id, _)| repos.deployments[id].1["environment"] == "preview/pr-2")
                .map(|(_, body)| body["state"].clone());
            (last == Some(serde_json::json!("inactive"))).then_some(())
        },
    )
    .await;
    let main = stage.get("https", "/").await;
    assert!(main.body.contains("hello from revision A"), "{main:?}");
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(
        state(&stage.ws)["resources"]["site.blog.instance"]["attributes"]["revision"],
        production.as_str()
    );

    // A new production commit and a pull request whose build fails, in one
    // apply: production deploys, the failed preview fails the apply by
    // name, and state records exactly what serves (the new revision; the
    // previews that built, #4 evicted by #9 but #9 not serving).
    let next = stage.push(APP, &[("message.txt", "hello from revision B\n")]);
    let broken = stage.git.push_pull(
        &stage.repo,
        9,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/apps")
            .join(APP),
        &[(
            "build.mjs",
            "throw new Error('the preview build broke on purpose');\n",
        )],
    );
    stage
        .github
        .open_pull(&stage.repo, 9, "main", &broken, false);
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(1);
    let text = run.squashed();
    assert!(
        text.contains("preview build failed for pull request(s) #9"),
        "{text}"
    );
    assert!(
        text.contains("the preview build broke on purpose"),
        "the build's output: {text}"
    );
    let recorded = state(&stage.ws)["resources"]["site.blog.instance"]["attributes"].clone();
    assert_eq!(recorded["revision"], next.as_str(), "production deployed");
    let serving: Vec<String> = stage.recorded_previews().into_keys().collect();
    assert_eq!(serving, ["5", "6", "7", "8"]);
    let main = stage.get("https", "/").await;
    assert!(main.body.contains("hello from revision B"), "{main:?}");
    assert!(
        stage
            .preview_page(5)
            .await
            .contains("hello from pull request 5")
    );
    // The failed preview is still a change, but its head is not built
    // again within the hour: the next apply fails at once, saying so.
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(2);
    let again = stage.jaam(&["apply", "--auto-approve"]).await;
    again.expect_code(1);
    let text = again.squashed();
    assert!(
        text.contains(&format!("preview #9: {broken} failed within the hour")),
        "{text}"
    );
    assert!(
        !text.contains("the preview build broke on purpose"),
        "not built again: {text}"
    );

    // A daemon counts that failure against no production revision: even
    // parking at the first failure, nothing is parked.
    let daemon = Daemon::start(
        stage.command(&["daemon", "--max-failures", "1"]),
        stage.ws.dir.path().join("daemon-3.log"),
    );
    daemon.wait_until(
        "the failing preview's reconcile",
        Duration::from_secs(120),
        |d| d.status()["result"] == "failed",
    );
    let status = daemon.status();
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("failed within the hour")),
        "{status}"
    );
    assert_eq!(status["parked"], serde_json::json!([]), "{status}");
    assert_eq!(daemon.terminate(), Some(0));
}

/// A server app's previews: each runs on a port of its own beside
/// production's two; with `secrets: true` a preview reads the site's
/// secrets, a fork's (built with `forks: true`) still never does; a closed
/// one's app stops.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_apps_previews_should_run_on_their_own_ports_and_forks_without_secrets() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, _) = Stage::new("previewapp", "node-server").await;
    let parameter = stage.put_secret("api-key", "previews-may-read-this").await;
    stage.write_site(
        "node",
        None,
        &format!(
            "  https: false\n  secrets:\n    API_KEY: {parameter}\n  previews:\n    enabled: true\n    \
             secrets: true\n    forks: true\n"
        ),
    );
    // The pull requests' server says whether it can read the secret.
    let telling = "const http = require(\"node:http\");\n\
        const message = require(\"node:fs\").readFileSync(\"message.txt\", \"utf8\").trim();\n\
        http.createServer((q, r) => r.end(`${message} key=${process.env.API_KEY ?? \"none\"} port=${process.env.PORT} user=${require(\"node:os\").userInfo().username}\\n`))\n\
          .listen(Number(process.env.PORT), \"127.0.0.1\");\n";
    stage.open_pull_of(
        "node-server",
        1,
        &[
            ("message.txt", "hello from pull request 1\n"),
            ("server.js", telling),
        ],
        false,
    );
    stage.open_pull_of(
        "node-server",
        2,
        &[
            ("message.txt", "hello from a fork\n"),
            ("server.js", telling),
        ],
        true,
    );
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(0);
    let page = |number: u64| {
        let host = stage.preview_host(number);
        let stage = &stage;
        async move {
            let seen = stage.get_host(&host, "http", "/").await;
            format!("{} {}", seen.status, seen.body)
        }
    };
    let one = page(1).await;
    assert!(
        one.contains(
            "hello from pull request 1 key=previews-may-read-this port=3002 user=jaam-blog-pr"
        ),
        "{one}"
    );
    let fork = page(2).await;
    assert!(
        fork.contains("hello from a fork key=none port=3003 user=jaam-blog-pr"),
        "a fork never reads secrets: {fork}"
    );
    let main = stage.get("http", "/").await;
    assert_eq!(main.body.trim(), "hello from revision A", "{main:?}");

    // The instance metadata service hands out the role's credentials, which
    // read the site's secrets: the preview user cannot reach it, the
    // site's user still can. (A stand-in listens at its address here.)
    let probe = stage
        .instance_box()
        .run(
            "ip addr add 169.254.169.254/32 dev lo\n\
             node -e 'require(\"http\").createServer((q, r) => r.end(\"metadata\")).listen(8169, \"169.254.169.254\")' &\n\
             listener=$!\n\
             for _ in $(seq 100); do curl -s -m 1 -o /dev/null http://169.254.169.254:8169/ && break; sleep 0.1; done\n\
             for user in jaam-blog jaam-blog-pr; do\n\
               echo \"$user $(runuser -u \"$user\" -- curl -s -m 3 http://169.254.169.254:8169/ || echo refused)\"\n\
             done\n\
             kill $listener",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        probe.stdout.contains("jaam-blog metadata")
            && probe.stdout.contains("jaam-blog-pr refused"),
        "{} {}",
        probe.stdout,
        probe.stderr
    );

    stage.github.close_pull(&stage.repo, 1);
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let gone = page(1).await;
    assert!(!gone.contains("pull request 1"), "{gone}");
    assert!(page(2).await.contains("hello from a fork"));
    // Nothing listens on the closed preview's port any more.
    let listening = stage
        .instance_box()
        .run(
            "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3002/ || true",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        listening.stdout.trim(),
        "000",
        "the closed preview's app stopped"
    );
    let main = stage.get("http", "/").await;
    assert_eq!(main.body.trim(), "hello from revision A", "{main:?}");

    // `jaam apply` killed while a preview builds: state does not claim it,
    // and the rerun serves it (once: one app on its port), as it would
    // any resource.
    let slow = r#"{"name": "slow", "private": true, "scripts": {"build": "sleep 4", "start": "node server.js"}}"#;
    stage.open_pull_of(
        "node-server",
        3,
        &[
            ("message.txt", "hello from pull request 3\n"),
            ("server.js", telling),
            ("package.json", slow),
        ],
        false,
    );
    let mut child = stage
        .command(&["apply", "--auto-approve"])
        .spawn()
        .expect("jaam apply");
    let log = stage
        .instance_box()
        .host_path("/srv/jaam/blog/logs/build.log");
    jaam_tests::eventually("#3's preview building", Duration::from_secs(120), || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("preview #3: deploy")
                .then_some(())
        }
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let recorded =
        state(&stage.ws)["resources"]["site.blog.instance"]["attributes"]["previews"].clone();
    assert!(
        recorded.get("3").is_none(),
        "killed before it served: {recorded}"
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let three = page(3).await;
    assert!(three.contains("hello from pull request 3"), "{three}");
    let recorded =
        state(&stage.ws)["resources"]["site.blog.instance"]["attributes"]["previews"].clone();
    assert!(recorded.get("3").is_some(), "{recorded}");
    let apps = stage.preview_apps().await;
    assert_eq!(apps, 2, "one app per preview (#2 and #3)");
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(0);

    // Previews turned off: every preview goes, and its wildcard record.
    stage.write_site(
        "node",
        None,
        &format!("  https: false\n  secrets:\n    API_KEY: {parameter}\n"),
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let attributes = state(&stage.ws)["resources"]["site.blog.instance"]["attributes"].clone();
    assert!(
        attributes["previews"].is_null(),
        "{}",
        attributes["previews"]
    );
    assert!(
        state(&stage.ws)["resources"]
            .get("record.previews-blog")
            .is_none()
    );
    assert!(!page(3).await.contains("pull request 3"));
    let apps = stage.preview_apps().await;
    assert_eq!(apps, 0, "no preview app left");
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(0);
    let main = stage.get("http", "/").await;
    assert_eq!(main.body.trim(), "hello from revision A", "{main:?}");
}

/// Previews turned on for a site already served over HTTPS: its certificate
/// is replaced by one that also names the previews' wildcard, and both the
/// site and the preview keep serving over verified TLS.
#[tokio::test(flavor = "multi_thread")]
async fn previews_turned_on_later_should_get_the_wildcard_on_the_sites_certificate() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, _) = Stage::new("previewlater", APP).await;
    stage.write_site("static", None, "");
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let serial = |stage: &Stage| {
        state(&stage.ws)["resources"]["site.blog.certificate"]["attributes"]["serial"].clone()
    };
    let before = serial(&stage);
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("hello from revision A")
    );

    stage.write_site("static", None, "  previews: {enabled: true}\n");
    stage.open_pull(1, "hello from pull request 1", false);
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    assert_ne!(serial(&stage), before, "a new certificate");
    // (nginx's old workers may serve the old certificate for a moment
    // after the reload.)
    stage.wait_for_preview(1, "hello from pull request 1").await;
    let main = stage.get("https", "/").await;
    assert_eq!(main.status, 200, "{main:?}");
    assert!(main.body.contains("hello from revision A"), "{main:?}");
    stage
        .jaam(&["plan", "--detailed-exitcode"])
        .await
        .expect_code(0);
}

/// A real Next.js app's preview (issues 15 and 17; the other previews tests
/// deploy dependency-free apps): built by the preview's own user from
/// production's caches (the hard-linked `node_modules`, read-only to it,
/// and a copy of `.next/cache` of its own) on the first try, with no
/// failed build and clean install behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_nextjs_preview_should_build_on_productions_caches_first_time() {
    let _moto = jaam_tests::MOTO.read().await;
    jaam_tests::boxes::npm_registry();
    let (stage, production) = Stage::new("nextpreview", "nextjs").await;
    stage.write_site(
        "",
        None,
        "  https: false\n  env:\n    NEXT_TELEMETRY_DISABLED: \"1\"\n  previews:\n    enabled: true\n",
    );
    // Open before the first apply: one deploy builds production (a clean
    // install), then the preview on what production's build left.
    stage.open_pull_of(
        "nextjs",
        1,
        &[(
            "app/message.ts",
            "export const message = \"hello from pull request 1\";\n",
        )],
        false,
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let preview = stage.get_host(&stage.preview_host(1), "http", "/").await;
    assert!(
        preview.body.contains("hello from pull request 1"),
        "{preview:?}"
    );
    let main = stage.get("http", "/").await;
    assert!(main.body.contains("hello from revision A"), "{main:?}");

    let log = build_log(&stage);
    let serving = serving_release(&stage);
    assert!(serving.starts_with(&production), "{serving}");
    assert!(
        log.contains(&format!(
            "install: reusing node_modules of release {serving}"
        )),
        "the preview reused production's node_modules: {log}"
    );
    assert!(
        !log.contains("the build failed with"),
        "the preview built on the caches the first time: {log}"
    );
    // What the preview's build wrote in its cache is its user's.
    let owner = stage
        .instance_box()
        .run(
            "stat -c %U /srv/jaam/blog/previews/1/current/.next/cache/.tsbuildinfo",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(owner.stdout.trim(), "jaam-blog-pr", "{owner:?}");
}

/// A token that may not read pull requests (GitHub answers 403 without
/// "Pull requests: read") never holds back production: a new site's
/// revision deploys with no preview, and the plan says why; once the token
/// may, the next apply serves the previews.
#[tokio::test(flavor = "multi_thread")]
async fn unlisted_pull_requests_should_be_noted_and_never_hold_back_production() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, production) = Stage::new("previewsdenied", APP).await;
    stage.write_site("", None, "  https: false\n  previews:\n    enabled: true\n");
    let head = stage.open_pull(1, "hello from pull request 1", false);
    stage
        .github
        .repos
        .lock()
        .unwrap()
        .pulls_denied
        .insert(stage.repo.clone());
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(0);
    assert!(
        run.squashed().contains(&format!(
            "Note: `site.blog.instance` plans previews = {{}}: the open pull requests of `{}@main` could not be listed",
            stage.repo
        )),
        "{}",
        run.squashed()
    );
    let main = stage.get("http", "/").await;
    assert!(main.body.contains("hello from revision A"), "{main:?}");
    let recorded = &state(&stage.ws)["resources"]["site.blog.instance"]["attributes"];
    assert_eq!(recorded["revision"], production.as_str());
    assert!(stage.recorded_previews().is_empty(), "{recorded}");

    stage.github.repos.lock().unwrap().pulls_denied.clear();
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    assert_eq!(
        stage.recorded_previews(),
        std::collections::BTreeMap::from([("1".to_owned(), head)])
    );
    let preview = stage.get_host(&stage.preview_host(1), "http", "/").await;
    assert!(
        preview.body.contains("hello from pull request 1"),
        "{preview:?}"
    );
}
