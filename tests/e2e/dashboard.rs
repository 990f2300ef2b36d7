//! The dashboard, tried in a real browser: Debian's chromium driven over
//! WebDriver (chromedriver, through fantoccini) against a daemon that keeps
//! a site on moto + the instance boxes. Screenshots of each page are written
//! under the test's output directory (`$CARGO_TARGET_TMPDIR/dashboard/`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use jaam_tests::daemon::Daemon;

use crate::served::Stage;

const TOKEN: &str = "dashboard-token-for-the-test";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "this test needs chromedriver (Debian's chromium-driver): run it through ./scripts/test, which installs it",
            );
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let mut delay = Duration::from_millis(50);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::rustls()
            .expect("a TLS set-up")
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(error) => panic!("chromedriver did not start a browser: {error}"),
        }
    }
}

/// Polls `check` with backoff until it gives a value, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The history table's rows (newest first), as their text.
async fn history(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for row in client
        .find_all(Locator::Css("#history tbody tr:not(.detail)"))
        .await
        .unwrap_or_default()
    {
        out.push(row.text().await.unwrap_or_default());
    }
    out
}

async fn screenshot(client: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

/// Clicks the button `css` and accepts its confirmation dialog.
async fn click_and_confirm(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
    eventually(
        "the confirmation dialog",
        Duration::from_secs(10),
        || async { client.accept_alert().await.ok() },
    )
    .await;
}

/// Issue 16: the list shows the site; a push makes a new history row while
/// the live log shows the build's lines; the rollback button is refused
/// without the token and works after signing in with it.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_should_show_sites_follow_a_build_and_roll_back_with_the_token() {
    let _moto = jaam_tests::MOTO.read().await;
    let (stage, first) = Stage::new("dashboard", "static-spa").await;
    stage.write_site("static", None, &stage.webhook());
    stage
        .jaam(&["apply", "--auto-approve"])
        .await
        .expect_code(0);
    let mut command = stage.command(&["daemon", "--public-read"]);
    command.env("JAAM_DAEMON_TOKEN", TOKEN);
    let daemon = Daemon::start(command, stage.ws.dir.path().join("daemon.log"));
    let revision = |d: &Daemon| d.status()["revisions"]["blog"].as_str().map(str::to_owned);
    daemon.wait_until("the first reconcile", Duration::from_secs(120), |d| {
        revision(d).as_deref() == Some(first.as_str())
    });
    let base = format!("http://127.0.0.1:{}", daemon.port);
    let driver = Driver::start();
    let client = browser(&driver).await;

    // The list: the site, its URL, the revision serving, the last deploy.
    client.goto(&format!("{base}/")).await.unwrap();
    let card = text(&client, "article.site[data-site=blog]").await;
    assert!(
        card.contains(&format!("https://blog.{}", stage.domain)),
        "{card}"
    );
    assert!(card.contains(&first[..7]), "{card}");
    assert!(card.contains("succeeded") && card.contains("cli"), "{card}");
    screenshot(&client, "index.png").await;
    client.set_window_size(390, 844).await.unwrap();
    screenshot(&client, "index-phone.png").await;
    client.set_window_size(1280, 900).await.unwrap();

    // The site page follows a push's build live, then shows its row.
    client.goto(&format!("{base}/sites/blog")).await.unwrap();
    eventually(
        "the live log connected",
        Duration::from_secs(30),
        || async { (text(&client, "#live").await == "live").then_some(()) },
    )
    .await;
    let before = history(&client).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let second = stage.push("static-spa", &[("message.txt", "hello from revision B\n")]);
    stage.deliver_push(&daemon, &second);
    let log = eventually(
        "the build's lines in the live log",
        Duration::from_secs(300),
        || async {
            let log = text(&client, "#log").await;
            (log.contains("built: hello from revision B")
                && log.contains(&format!("serving {second}")))
            .then_some(log)
        },
    )
    .await;
    assert!(log.contains("install: "), "{log}");
    let rows = eventually(
        "the push's history row",
        Duration::from_secs(60),
        || async {
            let rows = history(&client).await;
            (rows.len() == 2).then_some(rows)
        },
    )
    .await;
    assert!(
        rows[0].contains("push") && rows[0].contains(&second[..7]),
        "{rows:?}"
    );
    assert!(rows[0].contains("succeeded"), "{rows:?}");
    screenshot(&client, "site.png").await;

    // Roll back without the token: refused, nothing changes.
    click_and_confirm(&client, "button[data-action$='/rollback']").await;
    let toast = eventually("the refusal", Duration::from_secs(10), || async {
        let toast = text(&client, "#toast").await;
        (!toast.is_empty()).then_some(toast)
    })
    .await;
    assert!(toast.contains("sign in with the daemon's token"), "{toast}");
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("hello from revision B")
    );
    assert_eq!(history(&client).await.len(), 2);

    // Signed in with the token: the rollback serves revision A again.
    let field = client
        .find(Locator::Css("form[data-sign-in] input[name=token]"))
        .await
        .unwrap();
    field.send_keys(TOKEN).await.unwrap();
    client
        .find(Locator::Css("form[data-sign-in] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("signed in", Duration::from_secs(10), || async {
        client
            .find(Locator::Css("button[data-sign-out]"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    click_and_confirm(&client, "button[data-action$='/rollback']").await;
    let rows = eventually(
        "the rollback's history row",
        Duration::from_secs(120),
        || async {
            let rows = history(&client).await;
            (rows.len() == 3).then_some(rows)
        },
    )
    .await;
    assert!(
        rows[0].contains("rollback") && rows[0].contains("succeeded"),
        "{rows:?}"
    );
    assert!(rows[0].contains(&first[..7]), "{rows:?}");
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("hello from revision A")
    );
    assert!(
        text(&client, "#serving").await.contains(&first[..7]),
        "the page follows the rollback"
    );
    client
        .execute(
            "document.getElementById('history').scrollIntoView()",
            Vec::new(),
        )
        .await
        .unwrap();
    screenshot(&client, "rolled-back.png").await;

    // Deploy latest: a push whose delivery never came is deployed from the
    // page, as a deploy of this site (a trigger of its own in the history).
    let third = stage.push("static-spa", &[("message.txt", "hello from revision C\n")]);
    client
        .execute("window.scrollTo(0, 0)", Vec::new())
        .await
        .unwrap();
    client
        .find(Locator::Css("button[data-action$='/deploy']"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
    let rows = eventually(
        "the deploy's history row",
        Duration::from_secs(300),
        || async {
            let rows = history(&client).await;
            (rows.len() == 4).then_some(rows)
        },
    )
    .await;
    assert!(
        rows[0].contains("deploy") && rows[0].contains(&third[..7]),
        "{rows:?}"
    );
    assert!(
        stage
            .get("https", "/")
            .await
            .body
            .contains("hello from revision C")
    );

    // A page and its script are one origin: a cross-site POST is refused.
    let (status, _) = jaam_tests::daemon::http(
        daemon.port,
        "POST",
        "/sites/blog/rollback",
        &[
            ("origin", "https://evil.test"),
            ("authorization", &format!("Bearer {TOKEN}")),
        ],
        b"",
    )
    .expect("POST");
    assert_eq!(status, 403);

    client.close().await.ok();
    assert_eq!(daemon.terminate(), Some(0));
}
