//! Issue 17: real front-end apps on the instance boxes. The Next.js (App
//! Router) and Vite + React samples in `examples/apps/` are built on the
//! instance from the npm registry (through the caching proxy
//! `scripts/emulators.sh` starts), with `framework` left to `auto` (the plan
//! notes what it detects), served over HTTPS, and redeployed by the daemon
//! from a signed push of a one-line change with zero failed requests, their
//! `node_modules` reused; a corrupted cache falls back to a clean install.

use std::time::Duration;

use jaam_tests::boxes::npm_registry;
use jaam_tests::daemon::Daemon;

use crate::served::{Prober, Stage};

/// The site's build log on the box.
pub(crate) fn build_log(stage: &Stage) -> String {
    std::fs::read_to_string(
        stage
            .instance_box()
            .host_path("/srv/jaam/blog/logs/build.log"),
    )
    .unwrap_or_default()
}

/// The release being served on the box (`current`'s target).
pub(crate) fn serving_release(stage: &Stage) -> String {
    let link = std::fs::read_link(stage.instance_box().host_path("/srv/jaam/blog/current"))
        .expect("current");
    link.file_name().unwrap().to_string_lossy().into_owned()
}

/// The daemon keeping the stack, once its first reconcile saw `serving`.
fn daemon(stage: &Stage, serving: &str) -> Daemon {
    let daemon = Daemon::start(
        stage.command(&["daemon"]),
        stage.ws.dir.path().join("daemon.log"),
    );
    daemon.wait_until(
        "the daemon's first reconcile",
        Duration::from_secs(120),
        |d| d.status()["revisions"]["blog"].as_str() == Some(serving),
    );
    daemon
}

/// Pushes `changes` to `app` and delivers the signed push to `daemon`, while
/// a looping HTTPS client counts failures; returns once the new commit
/// serves, the loop having seen no failure and `needle` at last. Pebble's
/// certificates (40 s) expire during a real build: the loop accepts any
/// certificate (what it counts is the switch), and the test renews with an
/// apply before it looks again, verifying.
async fn push_under_load(
    stage: &Stage,
    daemon: &Daemon,
    app: &str,
    changes: &[(&str, &str)],
    needle: &str,
) -> String {
    let prober = Prober::start_any_certificate(stage, stage.record_ip().await);
    let sha = stage.push(app, changes);
    stage.deliver_push(daemon, &sha);
    daemon.wait_until(
        "the pushed commit deployed",
        Duration::from_secs(300),
        |d| d.status()["revisions"]["blog"].as_str() == Some(sha.as_str()),
    );
    let (total, failed, bodies) = prober.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {total} requests failed during the redeploy"
    );
    assert!(
        bodies.iter().any(|b| b.contains(needle)),
        "the loop saw the new release: {bodies:?}"
    );
    sha
}

/// Stops the daemon and renews what expired meanwhile (Pebble's 40 s
/// certificates), so the test's HTTPS client verifies again. An apply
/// renews a certificate with a third of its life left; one that lapses
/// while that apply runs (a loaded CI machine: it happened) is renewed by
/// the next.
async fn stop_and_renew(stage: &Stage, daemon: Daemon) {
    assert_eq!(daemon.terminate(), Some(0));
    for _ in 0..3 {
        stage
            .jaam(&["apply", "--auto-approve"])
            .await
            .expect_code(0);
        if stage.get("https", "/").await.status == 200 {
            return;
        }
    }
    panic!("not served over verified HTTPS after three applies");
}

#[tokio::test(flavor = "multi_thread")]
async fn nextjs_app_should_build_from_npm_serve_over_https_and_redeploy_from_its_cache() {
    let _moto = jaam_tests::MOTO.read().await;
    npm_registry();
    let (stage, sha) = Stage::new("nextjs", "nextjs").await;
    stage.write_site(
        "",
        None,
        &format!(
            "  env:\n    GREETING: hello from the site's env\n    NEXT_TELEMETRY_DISABLED: \"1\"\n{}",
            stage.webhook()
        ),
    );
    // The plan says what `auto` will build, read from the commit's package.json.
    let plan = stage.jaam(&["plan"]).await;
    plan.expect_code(0);
    assert!(
        plan.squashed().contains(&format!(
            "Note: `site.blog.instance`: framework auto → nextjs at {} (`next` is a dependency in package.json)",
            &sha[..7]
        )),
        "{}",
        plan.squashed()
    );
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let log = build_log(&stage);
    assert!(
        log.contains("framework: nextjs (auto: `next` is a dependency in package.json)"),
        "{log}"
    );
    assert!(
        log.contains("install: if [ -f package-lock.json ]; then npm ci"),
        "{log}"
    );

    // The server-rendered page shows the env value and the request's time.
    let page = stage.get("https", "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("hello from revision A"), "{page:?}");
    assert!(
        page.body.contains("hello from the site&#x27;s env"),
        "{page:?}"
    );
    let again = stage.get("https", "/").await;
    assert_ne!(page.body, again.body, "rendered at each request");
    let api = stage.get("https", "/api/hello").await;
    assert_eq!(api.status, 200, "{api:?}");
    let json: serde_json::Value = serde_json::from_str(&api.body).expect("the API answers JSON");
    assert_eq!(json["message"], "hello from revision A");
    assert_eq!(json["greeting"], "hello from the site's env");
    let asset = stage.get("https", "/jaam.svg").await;
    assert_eq!(asset.status, 200);
    assert!(asset.body.contains("<svg"), "{asset:?}");

    // A push of a one-line change, through the daemon: rebuilt on the
    // cached node_modules, switched with no failed request.
    let first = serving_release(&stage);
    let daemon = daemon(&stage, &sha);
    push_under_load(
        &stage,
        &daemon,
        "nextjs",
        &[(
            "app/message.ts",
            "export const message = \"hello from revision B\";\n",
        )],
        "hello from revision B",
    )
    .await;
    let log = build_log(&stage);
    assert!(
        log.contains(&format!("install: reusing node_modules of release {first}")),
        "{log}"
    );

    // A corrupt cache: the serving release's node_modules lost `next`'s
    // binary link. The cached build fails, the clean one serves.
    let second = serving_release(&stage);
    let bin = stage.instance_box().host_path(&format!(
        "/srv/jaam/blog/releases/{second}/node_modules/.bin/next"
    ));
    std::fs::remove_file(&bin).expect("remove node_modules/.bin/next");
    push_under_load(
        &stage,
        &daemon,
        "nextjs",
        &[(
            "app/message.ts",
            "export const message = \"hello from revision C\";\n",
        )],
        "hello from revision C",
    )
    .await;
    let log = build_log(&stage);
    assert!(
        log.contains(
            "the build failed with the cached node_modules: once more with a clean install"
        ),
        "{log}"
    );
    stop_and_renew(&stage, daemon).await;
    let api = stage.get("https", "/api/hello").await;
    assert!(api.body.contains("hello from revision C"), "{api:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vite_app_should_build_from_npm_serve_deep_links_and_redeploy() {
    let _moto = jaam_tests::MOTO.read().await;
    npm_registry();
    let (stage, sha) = Stage::new("vite", "vite-react").await;
    stage.write_site("", None, &stage.webhook());
    let run = stage.jaam(&["apply", "--auto-approve"]).await;
    run.expect_code(0);
    assert!(
        run.squashed().contains(&format!(
            "Note: `site.blog.instance`: framework auto → static at {} (`vite` is a dependency in package.json)",
            &sha[..7]
        )),
        "{}",
        run.squashed()
    );
    // Nothing to deploy: no note, and no read of package.json.
    let reads = |stage: &Stage| {
        stage
            .github
            .repos
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(_, path, _)| path.contains("/contents/package.json"))
            .count()
    };
    let before = reads(&stage);
    let plan = stage.jaam(&["plan"]).await;
    assert!(
        !plan.squashed().contains("framework auto"),
        "{}",
        plan.squashed()
    );
    assert_eq!(
        reads(&stage),
        before,
        "an unchanged site costs no contents read"
    );
    let log = build_log(&stage);
    assert!(
        log.contains("framework: static (auto: `vite` is a dependency in package.json)"),
        "{log}"
    );

    // The app, at its root and at a client-side route (a deep link).
    let bundle = |body: &str| {
        let start = body
            .find("/assets/index-")
            .expect("the bundle's script tag");
        let end = body[start..].find(".js").expect("a .js bundle") + start + 3;
        body[start..end].to_owned()
    };
    let page = stage.get("https", "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("data-app=\"jaam-vite-react\""),
        "{page:?}"
    );
    let deep = stage.get("https", "/about/team").await;
    assert_eq!(deep.status, 200, "{deep:?}");
    assert_eq!(deep.body, page.body, "a deep link answers the app");
    let script = stage.get("https", &bundle(&page.body)).await;
    assert_eq!(script.status, 200);
    assert!(script.body.contains("hello from revision A"));
    assert!(script.body.contains("the team page, routed in the browser"));

    // A push of a one-line change, through the daemon.
    let first = serving_release(&stage);
    let daemon = daemon(&stage, &sha);
    push_under_load(
        &stage,
        &daemon,
        "vite-react",
        &[(
            "src/message.js",
            "export const message = \"hello from revision B\";\n",
        )],
        "data-app",
    )
    .await;
    stop_and_renew(&stage, daemon).await;
    let index = stage.get("https", "/").await;
    assert_ne!(index.body, page.body, "a new index names the new bundle");
    let script = stage.get("https", &bundle(&index.body)).await;
    assert!(script.body.contains("hello from revision B"), "new bundle");
    let log = build_log(&stage);
    assert!(
        log.contains(&format!("install: reusing node_modules of release {first}")),
        "{log}"
    );
}
