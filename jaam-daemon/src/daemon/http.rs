//! The daemon's HTTP side: the GitHub webhook receiver and the read endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::fleet::Fleet;
use super::webhook::{self, Wanted};
use super::{Daemon, Shared};
use crate::queue::Request as Work;

/// The handlers' state: every stack, and what they share.
pub(super) type App = Arc<Fleet>;

pub(crate) async fn serve(daemon: App, listener: tokio::net::TcpListener) {
    let stop = daemon.intake.clone();
    let daemon_header_timeout = daemon.args.header_timeout;
    let app = axum::Router::new()
        .route("/hooks/github", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sites/{name}/logs", get(logs))
        .merge(super::dashboard::routes())
        .with_state(daemon);
    // hyper directly rather than `axum::serve`, for a header read timeout: a
    // client that trickles its request headers is cut off.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = daemon_header_timeout;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    // Let answers in progress (and log streams) end, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// Bodies larger than this are checked on the blocking pool, so hashing
/// megabytes never stalls the runtime's workers (health checks, other
/// deliveries).
const INLINE_CHECK_BYTES: usize = 64 * 1024;

/// `POST /hooks/github`: headers checked first, then the body read under a
/// bounded number of permits, authenticated against its repository's
/// webhook secrets only, de-duplicated, and turned into work.
async fn hook(State(daemon): State<App>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // 1. No well-formed signature: refused before a byte of the body is read.
    let signature = match webhook::parse_signature(header("x-hub-signature-256").as_deref()) {
        Ok(signature) => signature,
        Err(error) => return refused(&daemon, error),
    };
    // 2. A bounded number of bodies in memory at once.
    let Ok(_permit) = daemon.bodies.try_acquire() else {
        daemon.metrics.delivery("busy");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "too many deliveries at once; retry later"}),
        );
    };
    let limit = daemon.args.max_body;
    let read =
        tokio::time::timeout(daemon.args.body_timeout, axum::body::to_bytes(body, limit)).await;
    let body = match read {
        Err(_) => {
            daemon.metrics.delivery("timeout");
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": "the body did not arrive in time"}),
            );
        }
        Ok(Err(_)) => {
            daemon.metrics.delivery("too_large");
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("bodies are limited to {limit} bytes")}),
            );
        }
        Ok(Ok(body)) => body,
    };
    // 3. Only the secrets of the webhook(s) of the repository it names.
    let hook_id = header("x-github-hook-id");
    let check = {
        let daemon = Arc::clone(&daemon);
        let body = body.clone();
        move || {
            let repo = webhook::claimed_repository(&body);
            daemon.authenticate(&signature, hook_id.as_deref(), repo.as_deref(), &body)?;
            Ok::<_, webhook::SignatureError>(webhook::body_key(&body))
        }
    };
    let checked = if body.len() > INLINE_CHECK_BYTES {
        tokio::task::spawn_blocking(check)
            .await
            .expect("signature check")
    } else {
        check()
    };
    let body_key = match checked {
        Ok(key) => key,
        Err(error) => return refused(&daemon, error),
    };
    let (Some(event), Some(delivery)) = (header("x-github-event"), header("x-github-delivery"))
    else {
        daemon.metrics.delivery("bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "X-GitHub-Event and X-GitHub-Delivery are required"}),
        );
    };
    // 4. Once per delivery id and once per body (the id header is not signed).
    if !daemon
        .deliveries
        .lock()
        .expect("deliveries")
        .first_time(&[&delivery, &body_key])
    {
        daemon.metrics.delivery("duplicate");
        return answer(
            StatusCode::OK,
            json!({"status": "duplicate", "delivery": delivery}),
        );
    }
    let wanted = match webhook::interpret(&event, &body) {
        Ok(wanted) => wanted,
        Err(error) => {
            daemon.metrics.delivery("bad_request");
            return answer(StatusCode::BAD_REQUEST, json!({"error": error}));
        }
    };
    match wanted {
        Wanted::Pong => {
            daemon.metrics.delivery("ping");
            answer(StatusCode::OK, json!({"status": "pong"}))
        }
        Wanted::Ignore(reason) => {
            daemon.metrics.delivery("ignored");
            answer(
                StatusCode::ACCEPTED,
                json!({"status": "ignored", "reason": reason}),
            )
        }
        Wanted::Deploy {
            repo,
            branch,
            sha,
            why,
        } => deploy(&daemon, &delivery, &repo, &branch, &sha, why),
        Wanted::Previews { repo, base, number } => {
            previews(&daemon, &delivery, &repo, &base, number)
        }
    }
}

/// What a delivery queues in each stack.
struct Queued<'a> {
    delivery: &'a str,
    why: &'static str,
    /// The revision the delivery says each site's branch is at (empty: it
    /// names the sites only).
    sha: &'a str,
    /// Why nothing was queued, when no stack had a site.
    none: String,
    /// What the answer adds beside the sites.
    detail: (&'static str, serde_json::Value),
}

/// Queues, in every stack, the sites `pick` chooses from its routes (a
/// push's `before` runs first in each stack that has some).
fn queue_sites(
    fleet: &Fleet,
    queued: Queued<'_>,
    pick: impl Fn(&webhook::Routes) -> Vec<String>,
    before: impl Fn(&Daemon),
) -> Response {
    let mut sites_queued = Vec::new();
    for daemon in fleet.stacks() {
        let sites = pick(&daemon.routes.read().expect("routes"));
        if sites.is_empty() {
            continue;
        }
        before(&daemon);
        let mut work = Work::default();
        work.reasons.insert(queued.why);
        work.deliveries.insert(queued.delivery.to_owned());
        for site in &sites {
            work.revisions.insert(site.clone(), queued.sha.to_owned());
        }
        if let Err(full) = daemon.schedule(daemon.push_due(), work) {
            fleet.metrics.delivery("queue_full");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": full.to_string()}),
            );
        }
        tracing::info!(delivery = queued.delivery, stack = %daemon.stack, ?sites, sha = queued.sha, why = queued.why, "queued");
        sites_queued.extend(sites);
    }
    if sites_queued.is_empty() {
        fleet.metrics.delivery("ignored");
        return answer(
            StatusCode::ACCEPTED,
            json!({"status": "ignored", "reason": queued.none}),
        );
    }
    fleet.metrics.delivery("accepted");
    let (key, value) = queued.detail;
    answer(
        StatusCode::ACCEPTED,
        json!({"status": "accepted", "sites": sites_queued, key: value}),
    )
}

/// Queues the sites with previews of `repo`'s pull requests into `base`,
/// in every stack that has one: their plan lists the open pull requests
/// again, so the preview of pull request `number` (and any the daemon
/// missed) opens, moves or goes.
fn previews(fleet: &Fleet, delivery: &str, repo: &str, base: &str, number: u64) -> Response {
    let queued = Queued {
        delivery,
        why: "pull request",
        sha: "",
        none: format!("no site previews pull requests into {repo}@{base}"),
        detail: ("pull_request", json!(number)),
    };
    queue_sites(
        fleet,
        queued,
        |routes| routes.preview_sites(repo, base),
        |_| {},
    )
}

/// Queues a deploy of the sites of `repo`'s `branch`, in every stack that
/// has one. `sha` is what the delivery says the head is; each reconcile
/// deploys the head GitHub reports.
fn deploy(
    fleet: &Fleet,
    delivery: &str,
    repo: &str,
    branch: &str,
    sha: &str,
    why: &'static str,
) -> Response {
    let queued = Queued {
        delivery,
        why,
        sha,
        none: format!("no site deploys {repo}@{branch}"),
        detail: ("revision", json!(sha)),
    };
    queue_sites(
        fleet,
        queued,
        |routes| routes.sites(repo, branch),
        // A new push: a revision parked for failing may be deployed again.
        |daemon| daemon.parking.pushed(repo, branch),
    )
}

fn refused(daemon: &Shared, error: webhook::SignatureError) -> Response {
    daemon.metrics.delivery("unauthorized");
    tracing::warn!(reason = error.reason(), "refused a webhook delivery");
    answer(StatusCode::UNAUTHORIZED, json!({"error": error.reason()}))
}

/// Whether a read endpoint's caller may read: no token set, `--public-read`,
/// the token as a bearer, or the dashboard's session cookie.
///
/// Both sides are hashed first and the digests compared in constant time,
/// so the answer's timing tells neither the token's content nor its length.
pub(super) fn allowed(daemon: &Shared, headers: &HeaderMap) -> bool {
    use sha2::{Digest as _, Sha256};
    let Some(token) = &daemon.read_token else {
        return true;
    };
    if daemon.args.public_read || super::dashboard::signed_in(daemon, headers) {
        return true;
    }
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(token.expose().as_bytes());
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn unauthorized() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        json!({"error": "a bearer token is required"}),
    )
}

async fn metrics(State(fleet): State<App>, headers: HeaderMap) -> Response {
    if !allowed(&fleet, &headers) {
        return unauthorized();
    }
    let mut text = fleet.metrics.render(
        fleet.queue.depth(),
        fleet.logs.pollers(),
        fleet.logs.streams(),
    );
    text.push_str(&format!(
        "# HELP jaam_stacks Stacks kept, and stacks whose specs do not load.\n# TYPE jaam_stacks gauge\n\
         jaam_stacks{{state=\"kept\"}} {}\njaam_stacks{{state=\"broken\"}} {}\n",
        fleet.stacks().len(),
        fleet.broken().len()
    ));
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /status`: every stack, by name; a stack whose specs do not load
/// with its error.
async fn status(State(fleet): State<App>, headers: HeaderMap) -> Response {
    if !allowed(&fleet, &headers) {
        return unauthorized();
    }
    let mut stacks: Vec<serde_json::Value> = fleet
        .stacks()
        .iter()
        .map(|daemon| {
            let status = daemon.status.lock().expect("status").clone();
            let mut stack = serde_json::to_value(status).unwrap_or_default();
            stack["parked"] = serde_json::to_value(daemon.parking.list()).unwrap_or_default();
            stack
        })
        .collect();
    for (name, error) in fleet.broken() {
        stacks.push(json!({"stack": name, "result": "specs_invalid", "error": error}));
    }
    Json(json!({ "stacks": stacks })).into_response()
}

/// `GET /sites/{name}/logs`: the site's log group as server-sent events, from
/// ten minutes back, following new events until the client goes away.
async fn logs(State(fleet): State<App>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !allowed(&fleet, &headers) {
        return unauthorized();
    }
    let (Some(addr), Some(daemon)) = (super::site_addr(&name), fleet.site(&name)) else {
        return answer(StatusCode::NOT_FOUND, json!({"error": "no such site"}));
    };
    let state = match daemon.engine.state().await {
        Ok(Some(state)) => state,
        _ => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({"error": "nothing applied yet"}),
            );
        }
    };
    let group = match jaam_core::providers::aws::sites::log_group_of(&state, &addr) {
        Ok(group) => group,
        Err(error) => return answer(StatusCode::NOT_FOUND, json!({"error": error})),
    };
    let Some(subscription) = daemon.logs.subscribe(&group) else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("at most {} log streams at once", super::logs::MAX_STREAMS)}),
        );
    };
    let event = |line: &jaam_core::providers::aws::sites::LogLine| {
        Event::default()
            .id(line.id.clone())
            .event(line.stream.clone())
            .data(format!(
                "{} {}",
                line.timestamp
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                line.message.trim_end()
            ))
    };
    let backlog: Vec<Result<Event, Infallible>> = subscription
        .backlog
        .iter()
        .map(|line| Ok(event(line)))
        .collect();
    let live = futures::stream::unfold(subscription, move |mut subscription| async move {
        let next = match subscription.lines.recv().await {
            Ok(line) => event(&line),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(format!(
                    "{missed} lines were skipped: this client read too slowly"
                ))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(next), subscription))
    });
    let stream = futures::StreamExt::chain(futures::stream::iter(backlog), live);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
