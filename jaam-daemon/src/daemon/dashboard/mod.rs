//! The dashboard: `jaam daemon` serves a small web app at `/`.
//!
//! - `/` lists the stack's sites: URL, repository and branch, the revision
//!   serving (linked to its commit), the last deploy's result and age, drift
//!   a `report` resync found, and the stack's last reconcile.
//! - `/sites/NAME` is one site: its deploy history (every deploy and
//!   rollback, newest first, with the failing build's last lines) and its
//!   build and app log, live while a build runs (server-sent events from
//!   `/sites/NAME/logs`, the endpoint `jaam logs --follow` readers share).
//! - Buttons: **Deploy latest** (this site's instance only, at its branch
//!   head, as a push would: never the rest of the stack's drift), **Roll back** (the previous release, at once, recorded
//!   in the history), and **Apply drift** when a `report` resync found some.
//!
//! Server-rendered HTML, one stylesheet and one small script, all embedded in
//! the binary: no external asset, font or CDN. It reads on a phone.
//!
//! # Who may do what
//! Reading follows the read endpoints (`/status`): open on loopback or with
//! `--public-read`, else the daemon's token. Every action needs the token,
//! always (a daemon without one shows the buttons disabled and says why).
//! A browser signs in once: it posts the token (`POST /session`, JSON) and
//! gets an `HttpOnly`, `SameSite=Strict` cookie holding a digest of it, never
//! the token itself. Actions are `POST`s that carry, besides that cookie, an
//! `X-Jaam-Csrf` header with a second digest the pages embed for signed-in
//! viewers; a custom header is something a cross-site form cannot send, and
//! a request whose `Origin` is not this host is refused as well. Scripts and
//! the CLI may send `Authorization: Bearer <token>` instead.
//!
//! # Why here
//! Under `daemon/` (not a sibling module as first sketched): the pages read
//! the daemon's state (status, routes, queue, engine) like the other HTTP
//! handlers, through the same private fields.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::fleet::Fleet;
use super::http::App;
use super::{Daemon, Shared};
use crate::queue::Request;

const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");
/// The session cookie's name.
const COOKIE: &str = "jaam_session";

/// The dashboard's routes.
pub(super) fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/", get(index))
        .route("/sites/{name}", get(site_page))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        .route("/session", post(sign_in).delete(sign_out))
        .route("/sites/{name}/deploy", post(deploy))
        .route("/sites/{name}/rollback", post(rollback))
        .route("/apply", post(apply))
}

/// A digest of the token for one purpose: the session cookie, the CSRF header.
fn digest(purpose: &str, token: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"jaam dashboard ");
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(token.as_bytes());
    hex::encode(hasher.finalize())
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Whether the request carries the daemon's session cookie.
pub(super) fn signed_in(daemon: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &daemon.read_token else {
        return false;
    };
    cookie(headers, COOKIE).is_some_and(|given| same(given, &digest("session", token.expose())))
}

fn bearer(daemon: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &daemon.read_token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given, token.expose()))
}

/// Whether `Origin`, when the browser sent one, is this host, or the
/// daemon's `--public-url` (behind a proxy the `Host` may be an inner one).
fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if public_url.is_some_and(|url| url.trim_end_matches('/') == origin) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

/// Whether the request may act, or the answer that says why not.
fn may_act(daemon: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &daemon.read_token else {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "actions need the daemon's token: start it with JAAM_DAEMON_TOKEN (or --read-token-file)",
        )));
    };
    if !same_origin(headers, daemon.args.public_url.as_deref()) {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "a request from another site is refused",
        )));
    }
    if bearer(daemon, headers) {
        return Ok(());
    }
    let csrf = headers
        .get("x-jaam-csrf")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| same(given, &digest("csrf", token.expose())));
    if signed_in(daemon, headers) && csrf {
        return Ok(());
    }
    Err(Box::new(refuse(
        StatusCode::UNAUTHORIZED,
        "sign in with the daemon's token to do this",
    )))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /session` `{"token": …}`: the session cookie for the right token.
async fn sign_in(
    State(daemon): State<App>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Response {
    let Some(token) = &daemon.read_token else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this daemon has no token: start it with JAAM_DAEMON_TOKEN to sign in",
        );
    };
    if !same_origin(&headers, daemon.args.public_url.as_deref()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "a request from another site is refused",
        );
    }
    if !same(body.token.trim(), token.expose()) {
        tracing::warn!("dashboard: a sign-in with a wrong token");
        return refuse(StatusCode::UNAUTHORIZED, "that is not the daemon's token");
    }
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        == Some("https");
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{}",
        digest("session", token.expose()),
        if secure { "; Secure" } else { "" }
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "signed_in": true })),
    )
        .into_response()
}

/// `DELETE /session`: forgets the cookie.
async fn sign_out() -> Response {
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Json(json!({ "signed_in": false })),
    )
        .into_response()
}

/// `POST /sites/NAME/deploy`: a reconcile now (heads read, changes deployed).
async fn deploy(
    State(fleet): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = may_act(&fleet, &headers) {
        return *refused;
    }
    let Some(daemon) = fleet
        .site(&name)
        .filter(|daemon| daemon.routes.read().expect("routes").has_site(&name))
    else {
        return refuse(StatusCode::NOT_FOUND, "no such site");
    };
    // This site's instance only, at its branch head (read when the
    // reconcile runs): never the drift of the rest of the stack.
    let mut request = Request::default();
    request.reasons.insert("deploy");
    request.revisions.insert(name.clone(), String::new());
    match schedule_now(
        &daemon,
        request,
        &format!("deploy of {name} asked from the dashboard"),
    ) {
        Ok(()) => accepted(std::slice::from_ref(&daemon.stack)),
        Err(refused) => *refused,
    }
}

/// `POST /apply`: a reconcile now of every stack with drift a `report`
/// resync found (of every stack, when none has), which applies it.
async fn apply(State(fleet): State<App>, headers: HeaderMap) -> Response {
    if let Err(refused) = may_act(&fleet, &headers) {
        return *refused;
    }
    let stacks = fleet.stacks();
    let drifted: Vec<&Arc<Daemon>> = stacks
        .iter()
        .filter(|daemon| !daemon.status.lock().expect("status").drift.is_empty())
        .collect();
    let chosen = if drifted.is_empty() {
        stacks.iter().collect()
    } else {
        drifted
    };
    let mut scheduled = Vec::new();
    for daemon in chosen {
        let mut request = Request::default();
        request.reasons.insert("dashboard");
        if let Err(refused) = schedule_now(daemon, request, "apply asked from the dashboard") {
            return *refused;
        }
        scheduled.push(daemon.stack.clone());
    }
    accepted(&scheduled)
}

/// Schedules `request` for `daemon`'s stack now.
fn schedule_now(daemon: &Daemon, request: Request, why: &str) -> Result<(), Box<Response>> {
    daemon
        .schedule(tokio::time::Instant::now(), request)
        .map_err(|_| {
            Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the work queue is full; try again shortly",
            ))
        })?;
    tracing::info!(stack = %daemon.stack, "{why}");
    Ok(())
}

/// The answer to an action that scheduled `stacks`.
fn accepted(stacks: &[String]) -> Response {
    let stack = stacks.first().cloned().unwrap_or_default();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "scheduled": true, "stack": stack, "stacks": stacks })),
    )
        .into_response()
}

/// `POST /sites/NAME/rollback`: the previous release, at once.
async fn rollback(
    State(fleet): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = may_act(&fleet, &headers) {
        return *refused;
    }
    let (Some(addr), Some(daemon)) = (super::site_addr(&name), fleet.site(&name)) else {
        return refuse(StatusCode::NOT_FOUND, "no such site");
    };
    match daemon.rollback(&addr).await {
        Ok(output) => Json(json!({ "rolled_back": true, "output": output })).into_response(),
        Err(error) => refuse(StatusCode::BAD_GATEWAY, &error),
    }
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How long ago, for people ("3 min ago"); the page's script keeps it fresh.
fn ago(at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3_600 => format!("{} min ago", seconds / 60),
        3_600..86_400 => format!("{} h ago", seconds / 3_600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        ago(at)
    )
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

fn commit_link(repo: Option<&str>, sha: &str) -> String {
    let is_commit = sha.len() >= 7 && sha.chars().all(|c| c.is_ascii_hexdigit());
    match repo {
        Some(repo) if is_commit => format!(
            "<a class=\"sha\" href=\"https://github.com/{}/commit/{}\">{}</a>",
            escape(repo),
            escape(sha),
            escape(short(sha))
        ),
        _ => format!("<span class=\"sha\">{}</span>", escape(short(sha))),
    }
}

fn badge(result: &str) -> String {
    let class = match result {
        "succeeded" | "applied" | "no_changes" => "ok",
        "failed" => "bad",
        "drift_reported" => "warn",
        _ => "neutral",
    };
    format!(
        "<span class=\"badge {class}\">{}</span>",
        escape(&result.replace('_', " "))
    )
}

/// What the pages show of one site.
struct SiteView {
    name: String,
    repo: Option<String>,
    branch: Option<String>,
    url: Option<String>,
    serving: Option<String>,
    drift: Vec<String>,
    history: Vec<jaam_core::history::Deployment>,
    /// Pull request previews serving: number, head, URL.
    previews: Vec<(u64, String, String)>,
}

impl SiteView {
    /// Its URL as a link, or `none` when it is not served yet.
    fn url_html(&self, none: &str) -> String {
        self.url.as_ref().map_or_else(
            || none.to_owned(),
            |u| format!("<a class=\"url\" href=\"{0}\">{0}</a>", escape(u)),
        )
    }

    /// Its repository (linked) and branch.
    fn repo_html(&self) -> String {
        self.repo.as_ref().map_or_else(
            || "—".to_owned(),
            |r| {
                format!(
                    "<a href=\"https://github.com/{0}\">{0}</a> <span class=\"muted\">{1}</span>",
                    escape(r),
                    escape(self.branch.as_deref().unwrap_or_default())
                )
            },
        )
    }

    /// Its previews: `#N` linked to the pull request, the head to its
    /// commit, the URL.
    fn previews_html(&self) -> String {
        if self.previews.is_empty() {
            return String::new();
        }
        let items: Vec<String> = self
            .previews
            .iter()
            .map(|(number, head, url)| {
                let pull = self.repo.as_ref().map_or_else(
                    || format!("#{number}"),
                    |r| {
                        format!(
                            "<a href=\"https://github.com/{}/pull/{number}\">#{number}</a>",
                            escape(r)
                        )
                    },
                );
                format!(
                    "<li>{pull} {head} <a class=\"url\" href=\"{url}\">{url}</a></li>",
                    head = commit_link(self.repo.as_deref(), head),
                    url = escape(url),
                )
            })
            .collect();
        format!(
            "<dt>Previews</dt><dd><ul class=\"previews\" id=\"previews\">{}</ul></dd>",
            items.join("")
        )
    }

    /// The revision serving, linked to its commit.
    fn serving_html(&self) -> String {
        self.serving
            .as_ref()
            .map_or_else(|| "—".to_owned(), |s| commit_link(self.repo.as_deref(), s))
    }
}

/// Reads what every site shows: routes, state, history, status.
async fn sites(daemon: &Daemon) -> BTreeMap<String, SiteView> {
    let routes = daemon.routes.read().expect("routes").all_sites();
    let state = daemon.engine.state().await.ok().flatten();
    let history = daemon.engine.deployments().await.unwrap_or_default();
    let status = daemon.status.lock().expect("status").clone();
    let mut names: Vec<String> = routes.keys().cloned().collect();
    names.extend(status.revisions.keys().cloned());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let attribute = |kind: &str, attribute: &str| {
                let addr: jaam_core::ResourceAddr = format!("site.{name}.{kind}").parse().ok()?;
                state
                    .as_ref()?
                    .resources
                    .get(&addr)?
                    .attributes
                    .get(attribute)?
                    .as_str()
                    .map(str::to_owned)
            };
            let https = state.as_ref().is_some_and(|state| {
                state.resources.keys().any(|addr| {
                    addr.kind() == "certificate"
                        && (addr.to_string() == format!("site.{name}.certificate")
                            || addr.name().starts_with("wildcard-"))
                })
            });
            let url = attribute("record", "name").map(|domain| {
                format!(
                    "{}://{}",
                    if https { "https" } else { "http" },
                    domain.trim_end_matches('.')
                )
            });
            let (repo, branch) = routes
                .get(&name)
                .map_or((None, None), |(r, b)| (Some(r.clone()), Some(b.clone())));
            let prefix = format!("site.{name}.");
            let mut runs: Vec<_> = history.iter().filter(|d| d.site == name).cloned().collect();
            runs.reverse();
            // What serves is the last deploy or rollback that succeeded (a
            // failed build leaves the release before; a rollback changes the
            // release, not the recorded revision); else what state says.
            let serving = runs
                .iter()
                .find(|run| run.result == "succeeded" && !run.revision.starts_with('('))
                .map(|run| run.revision.clone())
                .or_else(|| status.revisions.get(&name).cloned());
            let view = SiteView {
                repo,
                branch,
                url,
                serving,
                drift: status
                    .drift
                    .iter()
                    .filter(|addr| addr.starts_with(&prefix))
                    .cloned()
                    .collect(),
                history: runs,
                previews: status
                    .previews
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .rev()
                    .map(|(number, preview)| {
                        let text = |key: &str| preview[key].as_str().unwrap_or_default().to_owned();
                        (*number, text("head"), text("url"))
                    })
                    .collect(),
                name: name.clone(),
            };
            (name, view)
        })
        .collect()
}

/// The page around `body`.
fn page(daemon: &Fleet, headers: &HeaderMap, title: &str, body: &str) -> Html<String> {
    let signed = signed_in(daemon, headers);
    let csrf = match (&daemon.read_token, signed) {
        (Some(token), true) => digest("csrf", token.expose()),
        _ => String::new(),
    };
    let session = match (&daemon.read_token, signed) {
        (None, _) => "<span class=\"muted\" title=\"start the daemon with JAAM_DAEMON_TOKEN to enable actions\">read-only</span>".to_owned(),
        (Some(_), true) => "<button class=\"link\" data-sign-out>Sign out</button>".to_owned(),
        (Some(_), false) => "<form class=\"sign-in\" data-sign-in><input type=\"password\" name=\"token\" placeholder=\"daemon token\" autocomplete=\"current-password\" aria-label=\"daemon token\"><button type=\"submit\">Sign in</button></form>".to_owned(),
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"jaam-csrf\" content=\"{csrf}\">\n<title>{title} · jaam</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\">\n</head>\n<body>\n\
         <header class=\"top\"><a class=\"brand\" href=\"/\">jaam</a><span class=\"stack\">stack <b>{stack}</b></span>\
         <span class=\"grow\"></span>{session}</header>\n<main>\n{body}</main>\n\
         <div id=\"toast\" role=\"status\" aria-live=\"polite\"></div>\n\
         <script src=\"/assets/dashboard.js\"></script>\n</body>\n</html>\n",
        title = escape(title),
        stack = escape(&daemon.label()),
    ))
}

fn sign_in_page(daemon: &Fleet, headers: &HeaderMap) -> Response {
    page(
        daemon,
        headers,
        "Sign in",
        "<section class=\"card narrow\"><h1>Sign in</h1><p>This daemon's pages need its token \
         (<code>JAAM_DAEMON_TOKEN</code>). Paste it above.</p></section>",
    )
    .into_response()
}

/// `GET /`: every site of every stack.
async fn index(State(fleet): State<App>, headers: HeaderMap) -> Response {
    if !super::http::allowed(&fleet, &headers) {
        return (StatusCode::UNAUTHORIZED, sign_in_page(&fleet, &headers)).into_response();
    }
    let stacks = fleet.stacks();
    let mut all = BTreeMap::new();
    for daemon in &stacks {
        all.extend(sites(daemon).await);
    }
    let sites = all;
    let statuses: Vec<super::StackStatus> = stacks
        .iter()
        .map(|daemon| daemon.status.lock().expect("status").clone())
        .collect();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<section class=\"summary\"><div><h1>Sites</h1><p class=\"muted\">{count} site{plural} kept by this daemon</p></div>{reconcile}</section>",
        count = sites.len(),
        plural = if sites.len() == 1 { "" } else { "s" },
        reconcile = match statuses.as_slice() {
            [status] => reconcile_summary(status),
            _ => format!(
                "<div class=\"reconcile muted\">{}</div>",
                escape(&fleet.label())
            ),
        },
    );
    for status in statuses.iter().filter(|status| !status.drift.is_empty()) {
        let _ = writeln!(
            body,
            "<section class=\"card warn-card\"><h2>Drift found</h2><p>A resync found {} resource{} of stack <b>{}</b> out of line with the specs; the stack's policy is <code>report</code>.</p>\
             <ul class=\"plain\">{}</ul><button data-action=\"/apply\" data-confirm=\"Apply the specs now?\">Apply drift</button></section>",
            status.drift.len(),
            if status.drift.len() == 1 { "" } else { "s" },
            escape(&status.stack),
            status
                .drift
                .iter()
                .map(|a| format!("<li><code>{}</code></li>", escape(a)))
                .collect::<String>(),
        );
    }
    if sites.is_empty() {
        body.push_str("<section class=\"card\"><p>No site yet: add a <code>site.NAME</code> to the specs.</p></section>\n");
    }
    body.push_str("<section class=\"grid\">\n");
    for site in sites.values() {
        let last = site.history.first();
        let _ = write!(
            body,
            "<article class=\"card site\" data-site=\"{name}\">\n<div class=\"row\"><h2><a href=\"/sites/{name}\">{name}</a></h2>{result}</div>\n\
             {url}\n<dl>\n<dt>Repository</dt><dd>{repo}</dd>\n<dt>Serving</dt><dd>{serving}</dd>\n<dt>Last deploy</dt><dd>{last}</dd>\n{drift}</dl>\n</article>\n",
            name = escape(&site.name),
            result = last.map(|d| badge(&d.result)).unwrap_or_default(),
            url = site.url_html("<span class=\"muted\">not served yet</span>"),
            repo = site.repo_html(),
            serving = site.serving_html(),
            last = last
                .map(|d| format!("{} · {}", escape(&d.trigger), time(d.started)))
                .unwrap_or_else(|| "—".to_owned()),
            drift = if site.drift.is_empty() {
                String::new()
            } else {
                format!(
                    "<dt>Drift</dt><dd class=\"warn-text\">{}</dd>\n",
                    site.drift.len()
                )
            },
        );
    }
    body.push_str("</section>\n");
    page(&fleet, &headers, "Sites", &body).into_response()
}

fn reconcile_summary(status: &super::StackStatus) -> String {
    let Some(at) = status.last_reconcile else {
        return "<div class=\"reconcile muted\">no reconcile yet</div>".to_owned();
    };
    let error = status
        .error
        .as_ref()
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<div class=\"reconcile\">last reconcile {} {} <span class=\"muted\">({})</span>{error}</div>",
        time(at),
        badge(status.result.as_deref().unwrap_or("unknown")),
        escape(&status.reasons.join(", ")),
    )
}

/// `GET /sites/NAME`: one site, its history and its live log.
async fn site_page(
    State(fleet): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !super::http::allowed(&fleet, &headers) {
        return (StatusCode::UNAUTHORIZED, sign_in_page(&fleet, &headers)).into_response();
    }
    let mut sites = match fleet.site(&name) {
        Some(daemon) => sites(&daemon).await,
        None => BTreeMap::new(),
    };
    let Some(site) = sites.remove(&name) else {
        return (
            StatusCode::NOT_FOUND,
            page(
                &fleet,
                &headers,
                "Not found",
                &format!(
                    "<section class=\"card\"><h1>No site <code>{}</code></h1><p><a href=\"/\">All sites</a></p></section>",
                    escape(&name)
                ),
            ),
        )
            .into_response();
    };
    let name = escape(&site.name);
    let mut body = format!(
        "<nav class=\"crumbs\"><a href=\"/\">Sites</a> / {name}</nav>\n\
         <section class=\"summary\"><div><h1>{name}</h1>{url}</div>\
         <div class=\"actions\"><button data-action=\"/sites/{name}/deploy\">Deploy latest</button>\
         <button class=\"secondary\" data-action=\"/sites/{name}/rollback\" data-confirm=\"Switch {name} back to its previous release now?\">Roll back</button></div></section>\n\
         <section class=\"card\"><dl class=\"wide\"><dt>Repository</dt><dd>{repo}</dd><dt>Serving</dt><dd id=\"serving\">{serving}</dd>{previews}{drift}</dl></section>\n",
        url = site.url_html(""),
        previews = site.previews_html(),
        repo = site.repo_html(),
        serving = site.serving_html(),
        drift = if site.drift.is_empty() {
            String::new()
        } else {
            format!(
                "<dt>Drift</dt><dd class=\"warn-text\">{} <button class=\"small\" data-action=\"/apply\">Apply drift</button></dd>",
                site.drift
                    .iter()
                    .map(|a| escape(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    body.push_str(
        "<section class=\"card\"><div class=\"row\"><h2>Build log</h2><span class=\"live\" id=\"live\">connecting…</span></div>\
         <pre class=\"log\" id=\"log\" data-logs=\"/sites/",
    );
    body.push_str(&name);
    body.push_str("/logs\" tabindex=\"0\" aria-label=\"build and app log\"></pre></section>\n");
    body.push_str("<section class=\"card\"><h2>Deploys</h2>\n");
    if site.history.is_empty() {
        body.push_str("<p class=\"muted\">No deploy recorded yet.</p>\n");
    } else {
        body.push_str(
            "<div class=\"table\"><table id=\"history\"><thead><tr><th>When</th><th>Trigger</th><th>Revision</th><th>Previous</th><th>Result</th><th>Took</th></tr></thead><tbody>\n",
        );
        for run in &site.history {
            let _ = writeln!(
                body,
                "<tr class=\"{class}\"><td>{when}</td><td>{trigger}</td><td>{revision}</td><td>{previous}</td><td>{result}</td><td>{took}</td></tr>",
                class = if run.result == "failed" { "failed" } else { "" },
                when = time(run.started),
                trigger = escape(&run.trigger),
                revision = commit_link(site.repo.as_deref(), &run.revision),
                previous = run
                    .previous
                    .as_ref()
                    .map(|p| commit_link(site.repo.as_deref(), p))
                    .unwrap_or_else(|| "—".to_owned()),
                result = badge(&run.result),
                took = took(run.duration_ms),
            );
            if let Some(error) = &run.error {
                let _ = writeln!(
                    body,
                    "<tr class=\"detail\"><td colspan=\"6\"><details><summary>why it failed</summary><pre class=\"log\">{}</pre></details></td></tr>",
                    escape(error)
                );
            }
        }
        body.push_str("</tbody></table></div>\n");
    }
    body.push_str("</section>\n");
    page(&fleet, &headers, &site.name, &body).into_response()
}

fn took(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{} min", ms / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_should_be_escaped_for_html() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn only_this_host_should_count_as_the_same_origin() {
        let headers = |origin: Option<&str>| {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
            if let Some(origin) = origin {
                map.insert(header::ORIGIN, origin.parse().unwrap());
            }
            map
        };
        assert!(same_origin(&headers(None), None));
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080")), None));
        assert!(!same_origin(&headers(Some("https://evil.test")), None));
        assert!(!same_origin(
            &headers(Some("http://127.0.0.1:8080.evil.test")),
            None
        ));
        // Behind a proxy: the public URL's origin, and only it.
        let public = Some("https://jaam.example.test/");
        assert!(same_origin(
            &headers(Some("https://jaam.example.test")),
            public
        ));
        assert!(!same_origin(&headers(Some("https://evil.test")), public));
    }

    #[test]
    fn the_cookie_and_csrf_digests_should_differ_and_never_be_the_token() {
        let (session, csrf) = (digest("session", "t0ken"), digest("csrf", "t0ken"));
        assert_ne!(session, csrf);
        assert!(!session.contains("t0ken") && !csrf.contains("t0ken"));
        let mut map = HeaderMap::new();
        map.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={session}").parse().unwrap(),
        );
        assert_eq!(cookie(&map, COOKIE), Some(session.as_str()));
    }
}
