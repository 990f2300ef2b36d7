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
use tokio_util::sync::CancellationToken;

use super::Daemon;
use super::webhook::{self, Wanted};
use crate::queue::Request as Work;

type Shared = Arc<Daemon>;

pub(crate) async fn serve(daemon: Shared, listener: tokio::net::TcpListener) {
    let stop = daemon.intake.clone();
    let daemon_header_timeout = daemon.args.header_timeout;
    let app = axum::Router::new()
        .route("/hooks/github", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sites/{name}/logs", get(logs))
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

/// `POST /hooks/github`.
async fn hook(State(daemon): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
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
    let verified = webhook::verify(
        header("x-hub-signature-256").as_deref(),
        &body,
        &daemon.secrets.read().expect("secrets"),
    );
    if let Err(error) = verified {
        daemon.metrics.delivery("unauthorized");
        tracing::warn!(reason = error.reason(), "refused a webhook delivery");
        return answer(StatusCode::UNAUTHORIZED, json!({"error": error.reason()}));
    }
    let (Some(event), Some(delivery)) = (header("x-github-event"), header("x-github-delivery"))
    else {
        daemon.metrics.delivery("bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "X-GitHub-Event and X-GitHub-Delivery are required"}),
        );
    };
    if !daemon
        .deliveries
        .lock()
        .expect("deliveries")
        .first_time(&delivery)
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
        } => {
            let sites = daemon
                .sites
                .read()
                .expect("sites")
                .get(&(repo.clone(), branch.clone()))
                .cloned()
                .unwrap_or_default();
            if sites.is_empty() {
                daemon.metrics.delivery("ignored");
                return answer(
                    StatusCode::ACCEPTED,
                    json!({"status": "ignored", "reason": format!("no site deploys {repo}@{branch}")}),
                );
            }
            daemon
                .pins
                .lock()
                .expect("pins")
                .insert((repo, branch), sha.clone());
            let mut work = Work::default();
            work.reasons.insert(why);
            for site in &sites {
                work.revisions.insert(site.clone(), sha.clone());
            }
            match daemon.schedule(daemon.push_due(), work) {
                Ok(()) => {
                    daemon.metrics.delivery("accepted");
                    tracing::info!(delivery, ?sites, sha, why, "deploy queued");
                    answer(
                        StatusCode::ACCEPTED,
                        json!({"status": "accepted", "sites": sites, "revision": sha}),
                    )
                }
                Err(full) => {
                    daemon.metrics.delivery("queue_full");
                    answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": full.to_string()}),
                    )
                }
            }
        }
    }
}

/// Whether a read endpoint's caller shows the token (when one is set).
fn allowed(daemon: &Daemon, headers: &HeaderMap) -> bool {
    let Some(token) = &daemon.args.read_token else {
        return true;
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Constant time, as for signatures.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn unauthorized() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        json!({"error": "a bearer token is required"}),
    )
}

async fn metrics(State(daemon): State<Shared>, headers: HeaderMap) -> Response {
    if !allowed(&daemon, &headers) {
        return unauthorized();
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        daemon.metrics.render(daemon.queue.depth()),
    )
        .into_response()
}

async fn status(State(daemon): State<Shared>, headers: HeaderMap) -> Response {
    if !allowed(&daemon, &headers) {
        return unauthorized();
    }
    let status = daemon.status.lock().expect("status").clone();
    Json(json!({ "stacks": [status] })).into_response()
}

/// `GET /sites/{name}/logs`: the site's log group as server-sent events, from
/// ten minutes back, following new events until the client goes away.
async fn logs(
    State(daemon): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !allowed(&daemon, &headers) {
        return unauthorized();
    }
    let Some(addr) = super::site_addr(&name) else {
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
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(256);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let reader = jaam_core::providers::aws::sites::Logs::new(&daemon.sdk);
    let since = chrono::Utc::now() - chrono::Duration::minutes(10);
    tokio::spawn(async move {
        let closed = sender.clone();
        let follow = reader.follow(&group, since, &cancel, |line| {
            let event = Event::default()
                .id(line.id.clone())
                .event(line.stream.clone())
                .data(format!(
                    "{} {}",
                    line.timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    line.message.trim_end()
                ));
            if sender.try_send(event).is_err() && sender.is_closed() {
                stop.cancel();
            }
        });
        tokio::select! {
            result = follow => {
                if let Err(error) = result {
                    tracing::warn!(%error, "log stream ended");
                }
            }
            () = closed.closed() => {}
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
