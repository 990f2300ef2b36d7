//! `webhook`: a GitHub repository hook, through `octocrab`.
//!
//! # Arguments
//! - `repo` (`owner/name`): **replaces**.
//! - `url`: where GitHub delivers.
//! - `events` (default `push` and `pull_request`), compared as a set.
//! - `content_type`: `json` (default) or `form`.
//! - `secret` (sensitive, at least 16 bytes): usually `${env.NAME}`. When
//!   unset, jaam generates one at create and keeps it in SSM Parameter Store
//!   at `/jaam/<stack>/<address>/secret-<random>` (computed
//!   `secret_parameter`); the daemon reads it from there to check signatures.
//!   Each hook gets a parameter of its own: a replacement (a new `repo`)
//!   creates the new hook's before the old hook and its parameter are deleted.
//! - `active` (default true).
//!
//! Computed: `hook_id`. The cloud id is `owner/name/hook_id`, the form
//! `jaam import webhook.x owner/name/123` takes.
//!
//! # Refresh cost
//! One listing of a repository's hooks (100 per page) per repository, however
//! many hooks jaam manages there. A hook edited on GitHub (URL, events, content
//! type, active, or its secret removed) is drift and the next apply corrects it.
//! GitHub never returns a secret's value, so a secret changed on GitHub is not
//! seen; changing it in the spec is.
//!
//! # Configuration
//! `GITHUB_TOKEN` authenticates; `GITHUB_API_URL` (or `JAAM_GITHUB_API_URL`)
//! points at GitHub Enterprise or a test server, default
//! `https://api.github.com`.
//!
//! # Rate limits
//! A 429, or a 403 with `retry-after` or `x-ratelimit-remaining: 0`, is waited
//! out (the server's `retry-after` or `x-ratelimit-reset`, capped, with backoff
//! when it gives neither) under a deadline, then reported as transient so the
//! daemon retries later.
//!
//! # Request bodies
//! Bodies carry only `name`, `active`, `events` and `config` (GitHub's schema
//! for hook create and update); the secret is sent in every update's `config`,
//! because GitHub replaces the whole `config` object.
//!
//! # Crash safety
//! Hooks carry no tags. A hook whose URL matches a desired, unrecorded hook is
//! adopted rather than created twice (a create whose outcome never reached the
//! journal). GitHub never shows a hook's secret, so an adopted hook is updated
//! at once (the plan says why): its secret is set again, generated into a new
//! parameter when the spec gives none.
//!
//! # Permissions
//! Listing, creating and editing hooks needs the token's `admin:repo_hook`
//! scope (classic tokens) or the repository permission "Webhooks: read and
//! write" (fine-grained). Without it GitHub answers 404 or 403: a recorded
//! hook is then kept as recorded (not planned again as a create), a new one
//! fails its create with a message naming the permission, and the rest of the
//! plan goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use http::{HeaderMap, Method, StatusCode};
use rand::Rng;
use serde_json::{Value as Json, json};

use super::aws::parameters::{self, Parameters};
use crate::backoff::Backoff;
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result,
};
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Secret, Value};

/// The default API.
pub const GITHUB_API: &str = "https://api.github.com";

/// The longest single wait for a rate limit, and the whole budget.
const RATE_LIMIT: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(60),
    deadline: Duration::from_secs(300),
};

fn check_repo(value: &Value) -> Result<(), String> {
    match value.as_str() {
        None => Ok(()),
        Some(repo) => {
            let valid = repo.split_once('/').is_some_and(|(owner, name)| {
                !owner.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if valid {
                Ok(())
            } else {
                Err(format!("`{repo}` is not a repository; write owner/name"))
            }
        }
    }
}

fn check_content_type(value: &Value) -> Result<(), String> {
    crate::schema::one_of(value, &["json", "form"], "a content type GitHub delivers")
}

/// The `webhook` schema.
pub fn schema() -> Schema {
    Schema {
        kind: "webhook",
        attributes: vec![
            Attribute::required("repo", Type::String)
                .force_new()
                .checked(check_repo),
            Attribute::required("url", Type::String),
            Attribute::optional("events", Type::List(Box::new(Type::String))).default_value(
                Value::List(vec![Value::from("push"), Value::from("pull_request")]),
            ),
            Attribute::optional("content_type", Type::String)
                .default_value("json")
                .checked(check_content_type),
            Attribute::optional("secret", Type::String)
                .sensitive()
                .checked(crate::spec::site::checks::webhook_secret),
            Attribute::optional("active", Type::Bool).default_value(true),
            Attribute::computed("hook_id", Type::Int),
            Attribute::computed("secret_parameter", Type::String),
        ],
        replace_order: ReplaceOrder::CreateThenDelete,
        adoptable: true,
        in_flight_grace: Duration::ZERO,
    }
}

/// `text` for a URL's query: unreserved characters as they are, the rest
/// percent-encoded (`preview/pr-42` → `preview%2Fpr-42`).
fn query_escape(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// One answer from the API.
struct Answer {
    status: StatusCode,
    body: String,
    /// The `ETag` header, for conditional requests.
    etag: Option<String>,
}

impl Answer {
    fn json(&self, what: &str) -> Result<Json> {
        serde_json::from_str(&self.body).map_err(|e| {
            ProviderError::new(ErrorKind::Other, format!("{what}: unreadable answer: {e}"))
        })
    }
}

/// Branch heads read before: (repository, branch) → (ETag, commit).
type HeadCache =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), (String, String)>>>;

/// Answers read before, by path: (ETag, body).
type AnswerCache =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>>;

/// One deployment status (see [`Api::deployment_status`]).
#[derive(Clone, Copy, Debug)]
pub struct DeploymentStatus<'a> {
    /// `in_progress`, `success`, `failure` or `error`.
    pub state: &'a str,
    /// A line for people (at most 140 characters).
    pub description: &'a str,
    /// Where the deployment serves.
    pub environment_url: Option<&'a str>,
    /// Where its log is.
    pub log_url: Option<&'a str>,
}

/// A GitHub REST client (octocrab) that waits out rate limits.
#[derive(Clone)]
pub struct Api {
    client: std::result::Result<octocrab::Octocrab, String>,
    token: bool,
    /// Guarded by its own mutex, never held across an await.
    heads: HeadCache,
    /// Hook listings read before (see [`Api::get_conditional`]).
    answers: AnswerCache,
}

impl Api {
    /// A client for `base_url` with `token` (None: calls fail with a clear error).
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        let mut builder = octocrab::Octocrab::builder();
        let has_token = token.is_some();
        if let Some(token) = token {
            builder = builder.personal_token(token);
        }
        let client = builder
            .base_uri(base_url.trim_end_matches('/'))
            .map_err(|e| format!("GitHub API URL `{base_url}`: {e}"))
            .and_then(|builder| {
                builder
                    .set_connect_timeout(Some(Duration::from_secs(10)))
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .build()
                    .map_err(|e| format!("GitHub client: {e}"))
            });
        Self {
            client,
            token: has_token,
            heads: HeadCache::default(),
            answers: AnswerCache::default(),
        }
    }

    /// A client configured from `GITHUB_API_URL`/`JAAM_GITHUB_API_URL` and `GITHUB_TOKEN`.
    pub fn from_env() -> Self {
        let base = std::env::var("JAAM_GITHUB_API_URL")
            .or_else(|_| std::env::var("GITHUB_API_URL"))
            .unwrap_or_else(|_| GITHUB_API.to_owned());
        let token = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty());
        Self::new(&base, token)
    }

    /// The head commit of `branch` in `repo` (`owner/name`), read with a
    /// conditional request: an unchanged branch answers `304 Not Modified`,
    /// which GitHub does not count against the token's rate limit.
    ///
    /// # Errors
    /// A failed call, or an unknown repository or branch.
    pub async fn branch_head(&self, repo: &str, branch: &str) -> Result<String> {
        let key = (repo.to_owned(), branch.to_owned());
        let cached = self.heads.lock().expect("heads").get(&key).cloned();
        let path = format!("/repos/{repo}/branches/{branch}");
        let answer = self
            .call(
                Method::GET,
                &path,
                None,
                cached.as_ref().map(|(etag, _)| etag.as_str()),
            )
            .await;
        let answer = match (answer, cached) {
            (Ok(answer), Some((_, sha))) if answer.status == StatusCode::NOT_MODIFIED => {
                return Ok(sha);
            }
            (Ok(answer), _) => Self::success(&Method::GET, &path, answer),
            (Err(error), _) => Err(error),
        }
        .map_err(|error| ProviderError {
            message: format!("head of `{repo}@{branch}`: {}", error.message),
            ..error
        })?;
        let sha = answer
            .json("branch")?
            .pointer("/commit/sha")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::new(ErrorKind::Other, "branch without a commit"))?;
        if let Some(etag) = &answer.etag {
            self.heads
                .lock()
                .expect("heads")
                .insert(key, (etag.clone(), sha.clone()));
        }
        Ok(sha)
    }

    /// GET `path`, conditional on the `ETag` of its last answer: unchanged,
    /// GitHub answers `304 Not Modified` (not counted against the token's
    /// rate limit) and the last body is returned. A resync's hook listings
    /// (one per repository) then cost nothing while no hook changed.
    async fn get_conditional(&self, path: &str) -> Result<Answer> {
        let cached = self.answers.lock().expect("answers").get(path).cloned();
        let answer = self
            .call(
                Method::GET,
                path,
                None,
                cached.as_ref().map(|(etag, _)| etag.as_str()),
            )
            .await?;
        if answer.status == StatusCode::NOT_MODIFIED
            && let Some((etag, body)) = cached
        {
            return Ok(Answer {
                status: StatusCode::OK,
                body,
                etag: Some(etag),
            });
        }
        let answer = Self::success(&Method::GET, path, answer)?;
        if let Some(etag) = &answer.etag {
            self.answers
                .lock()
                .expect("answers")
                .insert(path.to_owned(), (etag.clone(), answer.body.clone()));
        }
        Ok(answer)
    }

    /// The text of `path` in `repo`'s default branch (the contents API),
    /// `None` when the file does not exist.
    ///
    /// # Errors
    /// A failed call, or an answer without base64 content.
    pub async fn file(&self, repo: &str, path: &str) -> Result<Option<String>> {
        self.file_at(repo, path, None).await
    }

    /// [`Api::file`] at `reference` (a commit, branch or tag; `None`: the
    /// default branch).
    ///
    /// # Errors
    /// As [`Api::file`].
    pub async fn file_at(
        &self,
        repo: &str,
        path: &str,
        reference: Option<&str>,
    ) -> Result<Option<String>> {
        let query = reference.map(|r| format!("?ref={r}")).unwrap_or_default();
        let answer = match self
            .expect(
                Method::GET,
                &format!("/repos/{repo}/contents/{path}{query}"),
                None,
            )
            .await
        {
            Ok(answer) => answer,
            Err(error) if error.kind == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let json = answer.json("file")?;
        let encoded: String = json
            .get("content")
            .and_then(Json::as_str)
            .ok_or_else(|| ProviderError::new(ErrorKind::Other, "file: no content"))?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| ProviderError::new(ErrorKind::Other, format!("file: {e}")))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Creates a GitHub deployment of `sha` in `repo` for `environment`
    /// (`production`, `preview/pr-42`): what GitHub shows on the commit and
    /// the pull request. Returns its id.
    ///
    /// # Errors
    /// A failed call (a token without "Deployments: write" gets 403/404).
    pub async fn create_deployment(
        &self,
        repo: &str,
        sha: &str,
        environment: &str,
        description: &str,
    ) -> Result<u64> {
        let body = json!({
            "ref": sha,
            "environment": environment,
            "description": description,
            "auto_merge": false,
            "required_contexts": [],
            "production_environment": environment == "production",
            "transient_environment": environment != "production",
        });
        let answer = self
            .expect(
                Method::POST,
                &format!("/repos/{repo}/deployments"),
                Some(&body),
            )
            .await?;
        answer
            .json("deployment")?
            .get("id")
            .and_then(Json::as_u64)
            .ok_or_else(|| ProviderError::new(ErrorKind::Other, "a deployment without an id"))
    }

    /// Sets deployment `id`'s state (`in_progress`, `success`, `failure`),
    /// with the URL it serves and the URL of its log.
    ///
    /// # Errors
    /// A failed call.
    pub async fn deployment_status(
        &self,
        repo: &str,
        id: u64,
        status: &DeploymentStatus<'_>,
    ) -> Result<()> {
        let mut body = json!({
            "state": status.state,
            "description": status.description,
            "auto_inactive": true,
        });
        if let Some(url) = status.environment_url {
            body["environment_url"] = json!(url);
        }
        if let Some(url) = status.log_url {
            body["log_url"] = json!(url);
        }
        self.expect(
            Method::POST,
            &format!("/repos/{repo}/deployments/{id}/statuses"),
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// The open pull requests of `repo` into `base`, newest first: one
    /// conditional request per page of 100 (an unchanged listing answers
    /// `304 Not Modified`, not counted against the rate limit), at most ten
    /// pages. A pull request whose head repository is another one, or gone,
    /// is a fork's.
    ///
    /// # Errors
    /// A failed call, or an answer that is not a list of pull requests.
    pub async fn open_pulls(&self, repo: &str, base: &str) -> Result<Vec<super::aws::ec2::Pull>> {
        const PAGE: usize = 100;
        let mut pulls = Vec::new();
        for page in 1..=10 {
            let path = format!(
                "/repos/{repo}/pulls?state=open&base={}&sort=created&direction=desc&per_page={PAGE}&page={page}",
                query_escape(base)
            );
            let answer = self
                .get_conditional(&path)
                .await
                .map_err(|error| ProviderError {
                    message: format!("open pull requests of `{repo}@{base}`: {}", error.message),
                    ..error
                })?;
            let listed = answer.json("pull requests")?;
            let items = listed
                .as_array()
                .ok_or_else(|| ProviderError::new(ErrorKind::Other, "pull requests: not a list"))?;
            for item in items {
                let number = item.get("number").and_then(Json::as_u64);
                let head = item.pointer("/head/sha").and_then(Json::as_str);
                let (Some(number), Some(head)) = (number, head) else {
                    return Err(ProviderError::new(
                        ErrorKind::Other,
                        "pull requests: an item without `number` or `head.sha`",
                    ));
                };
                let from = item.pointer("/head/repo/full_name").and_then(Json::as_str);
                let into = item
                    .pointer("/base/repo/full_name")
                    .and_then(Json::as_str)
                    .unwrap_or(repo);
                pulls.push(super::aws::ec2::Pull {
                    number,
                    head: head.to_owned(),
                    fork: !from.is_some_and(|from| from.eq_ignore_ascii_case(into)),
                });
            }
            if items.len() < PAGE {
                break;
            }
        }
        Ok(pulls)
    }

    /// [`Api::open_pulls`] as the instance provider's previews resolver.
    pub fn pulls_resolver(&self) -> super::aws::ec2::PullsResolver {
        let api = self.clone();
        std::sync::Arc::new(move |repo, base| {
            let api = api.clone();
            Box::pin(async move { api.open_pulls(&repo, &base).await })
        })
    }

    /// The newest deployment of `repo` to `environment`, if any.
    ///
    /// # Errors
    /// A failed call.
    pub async fn latest_deployment(&self, repo: &str, environment: &str) -> Result<Option<u64>> {
        let answer = self
            .expect(
                Method::GET,
                &format!(
                    "/repos/{repo}/deployments?environment={}&per_page=1",
                    query_escape(environment)
                ),
                None,
            )
            .await?;
        Ok(answer
            .json("deployments")?
            .as_array()
            .and_then(|list| list.first())
            .and_then(|deployment| deployment.get("id"))
            .and_then(Json::as_u64))
    }

    /// [`Api::branch_head`] as the instance provider's revision resolver.
    pub fn head_resolver(&self) -> super::aws::ec2::HeadResolver {
        let api = self.clone();
        std::sync::Arc::new(move |repo, branch| {
            let api = api.clone();
            Box::pin(async move { api.branch_head(&repo, &branch).await })
        })
    }

    /// Sends one request (a GET conditional on `if_none_match`), waiting out
    /// rate limits.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
        if_none_match: Option<&str>,
    ) -> Result<Answer> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| ProviderError::new(ErrorKind::Invalid, e.clone()))?;
        if !self.token {
            // A configuration error (not GitHub's answer): it fails the plan.
            return Err(ProviderError::new(
                ErrorKind::Invalid,
                "GITHUB_TOKEN is not set; jaam needs a token that may manage the repository's hooks",
            ));
        }
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            let sent = match method {
                Method::GET => {
                    let mut headers = HeaderMap::new();
                    if let Some(etag) = if_none_match.and_then(|e| e.parse().ok()) {
                        headers.insert(http::header::IF_NONE_MATCH, etag);
                    }
                    client._get_with_headers(path, Some(headers)).await
                }
                Method::POST => client._post(path, body).await,
                Method::PATCH => client._patch(path, body).await,
                Method::DELETE => client._delete(path, None::<&()>).await,
                _ => unreachable!("jaam sends GET, POST, PATCH and DELETE only"),
            };
            let response = sent.map_err(|e| {
                ProviderError::new(ErrorKind::Transient, format!("{method} {path}: {e}"))
            })?;
            let status = response.status();
            let etag = response
                .headers()
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let wait = rate_limited(status, response.headers(), attempt);
            let body = client.body_to_string(response).await.map_err(|e| {
                ProviderError::new(ErrorKind::Transient, format!("{method} {path}: {e}"))
            })?;
            let Some(wait) = wait else {
                return Ok(Answer { status, body, etag });
            };
            if started.elapsed() + wait > RATE_LIMIT.deadline {
                return Err(ProviderError::new(
                    ErrorKind::Transient,
                    format!("{method} {path}: GitHub rate limit ({status}) outlasted the wait"),
                ));
            }
            tracing::warn!(%method, path, %status, wait_ms = wait.as_millis() as u64, "GitHub rate limit; waiting");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Like [`Self::call`], failing on any status but a success.
    async fn expect(&self, method: Method, path: &str, body: Option<&Json>) -> Result<Answer> {
        let answer = self.call(method.clone(), path, body, None).await?;
        Self::success(&method, path, answer)
    }

    /// The answer if it is a success, else an error by its status.
    fn success(method: &Method, path: &str, answer: Answer) -> Result<Answer> {
        if answer.status.is_success() {
            return Ok(answer);
        }
        let message = serde_json::from_str::<Json>(&answer.body)
            .ok()
            .and_then(|json| json.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| answer.body.chars().take(200).collect());
        let kind = match answer.status {
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Denied,
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => ErrorKind::Invalid,
            status if status.is_server_error() => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
        Err(ProviderError::new(
            kind,
            format!("{method} {path}: {} {message}", answer.status.as_u16()),
        ))
    }
}

/// The `webhook` provider.
pub struct Webhooks {
    schema: Schema,
    api: Api,
    parameters: Parameters,
}

impl Webhooks {
    /// A provider for `base_url` with `token` (None: calls fail with a clear
    /// error); secrets go to Parameter Store through `config`.
    pub fn new(config: &SdkConfig, base_url: &str, token: Option<String>) -> Self {
        Self::with_api(config, Api::new(base_url, token))
    }

    /// A provider using `api`.
    pub fn with_api(config: &SdkConfig, api: Api) -> Self {
        Self {
            schema: schema(),
            api,
            parameters: Parameters::new(config, None),
        }
    }

    /// A provider configured from the environment (see [`Api::from_env`]).
    pub fn from_env(config: &SdkConfig) -> Self {
        Self::with_api(config, Api::from_env())
    }

    /// Every hook of `repo`, following pagination.
    async fn hooks(&self, repo: &str) -> Result<Vec<Json>> {
        let mut hooks = Vec::new();
        for page in 1.. {
            let answer = self
                .api
                .get_conditional(&format!("/repos/{repo}/hooks?per_page=100&page={page}"))
                .await?;
            let Json::Array(batch) = answer.json("hook list")? else {
                return Err(ProviderError::new(
                    ErrorKind::Other,
                    "hook list: not a list",
                ));
            };
            let full = batch.len() == 100;
            hooks.extend(batch);
            if !full {
                break;
            }
        }
        Ok(hooks)
    }

    /// The secret to send: the argument, or the generated one in Parameter Store.
    async fn secret(&self, attributes: &Attrs, prior: Option<&Attrs>) -> Result<Option<Secret>> {
        if let Some(secret) = attributes.get("secret").and_then(Value::as_str) {
            return Ok(Some(Secret::new(secret)));
        }
        let Some(name) = prior
            .unwrap_or(attributes)
            .get("secret_parameter")
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        self.parameters.get(name).await
    }

    /// A new random secret in a parameter of its own (`…/secret-<random>`):
    /// two hooks of one address (a replacement) never share one.
    async fn generate_secret(&self, context: &Context, addr: &str) -> Result<(String, Secret)> {
        let bytes: [u8; 32] = rand::rng().random();
        let secret = Secret::new(hex::encode(bytes));
        let suffix: [u8; 4] = rand::rng().random();
        let name = format!(
            "/jaam/{}/{addr}/secret-{}",
            context.stack,
            hex::encode(suffix)
        );
        self.parameters
            .put(&name, &secret, "jaam webhook secret")
            .await?;
        Ok((name, secret))
    }

    /// The request body of a create or an update.
    fn body(attributes: &Attrs, secret: Option<&Secret>) -> Json {
        let mut config = json!({
            "url": text(attributes, "url"),
            "content_type": text(attributes, "content_type").unwrap_or("json"),
            "insecure_ssl": "0",
        });
        if let Some(secret) = secret {
            config["secret"] = Json::String(secret.expose().to_owned());
        }
        json!({
            "name": "web",
            "active": attributes.get("active") != Some(&Value::Bool(false)),
            "events": events(attributes),
            "config": config,
        })
    }
}

fn text<'a>(attributes: &'a Attrs, name: &str) -> Option<&'a str> {
    attributes.get(name).and_then(Value::as_str)
}

fn events(attributes: &Attrs) -> Vec<String> {
    match attributes.get("events") {
        Some(Value::List(_)) => crate::value::string_list(attributes.get("events")),
        _ => vec!["push".to_owned(), "pull_request".to_owned()],
    }
}

/// How long to wait before retrying a rate-limited answer, or `None` when it is not one.
fn rate_limited(status: StatusCode, headers: &HeaderMap, attempt: u32) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (retry_after.is_some() || exhausted));
    if !limited {
        return None;
    }
    let told = retry_after.map(Duration::from_secs).or_else(|| {
        let reset = header("x-ratelimit-reset")?.trim().parse::<i64>().ok()?;
        let now = chrono::Utc::now().timestamp();
        Some(Duration::from_secs(reset.saturating_sub(now).max(0) as u64))
    });
    Some(match told {
        // Never hammer: at least the backoff's first step, at most its cap.
        Some(told) => told.clamp(RATE_LIMIT.initial, RATE_LIMIT.max),
        None => RATE_LIMIT.delay(attempt),
    })
}

/// Reads a hook as attributes, keeping what GitHub cannot show from `known`.
fn observe(repo: &str, hook: &Json, known: &Attrs, owner: Option<Owner>) -> Option<Observed> {
    let hook_id = hook.get("id")?.as_i64()?;
    let config = hook.get("config").cloned().unwrap_or(Json::Null);
    let mut attributes = Attrs::new();
    attributes.insert("repo".to_owned(), Value::from(repo));
    if let Some(url) = config.get("url").and_then(Json::as_str) {
        attributes.insert("url".to_owned(), Value::from(url));
    }
    let found: Vec<String> = hook
        .get("events")
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Json::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // Events are a set: keep the spec's order when the sets agree.
    let wanted = events(known);
    let same = found.iter().collect::<BTreeSet<_>>() == wanted.iter().collect::<BTreeSet<_>>();
    let events = if same { wanted } else { found };
    attributes.insert(
        "events".to_owned(),
        Value::List(events.into_iter().map(Value::String).collect()),
    );
    attributes.insert(
        "content_type".to_owned(),
        Value::from(
            config
                .get("content_type")
                .and_then(Json::as_str)
                .unwrap_or("form"),
        ),
    );
    attributes.insert(
        "active".to_owned(),
        Value::Bool(hook.get("active").and_then(Json::as_bool).unwrap_or(true)),
    );
    // GitHub masks a secret as "********" and omits it when there is none.
    let has_secret = config.get("secret").is_some_and(|s| !s.is_null());
    let secret = match known.get("secret") {
        Some(value) if !value.is_null() && has_secret => value.clone(),
        _ => Value::Null,
    };
    attributes.insert("secret".to_owned(), secret);
    attributes.insert("hook_id".to_owned(), Value::Int(hook_id));
    attributes.insert(
        "secret_parameter".to_owned(),
        known
            .get("secret_parameter")
            .cloned()
            .unwrap_or(Value::Null),
    );
    Some(Observed {
        id: format!("{repo}/{hook_id}"),
        attributes,
        owner,
        due: None,
    })
}

/// What a token needs to manage a repository's hooks.
const HOOK_PERMISSION: &str = "the token needs the `admin:repo_hook` scope (classic token) \
     or the repository permission \"Webhooks: read and write\" (fine-grained token)";

/// A 404 or 403 from a hook endpoint, said as the missing permission it
/// usually is (GitHub hides repositories a token may not administer).
fn permission_hint(repo: &str, error: ProviderError) -> ProviderError {
    if matches!(error.kind, ErrorKind::NotFound | ErrorKind::Denied) {
        ProviderError {
            message: format!(
                "cannot manage the hooks of `{repo}` ({}): {HOOK_PERMISSION}, and the repository must exist",
                error.message
            ),
            ..error
        }
    } else {
        error
    }
}

/// Splits a cloud id `owner/name/hook_id`.
fn split_id(id: &str) -> Result<(&str, i64)> {
    id.rsplit_once('/')
        .and_then(|(repo, hook)| Some((repo, hook.parse().ok()?)))
        .filter(|(repo, _)| repo.contains('/'))
        .ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Invalid,
                format!("`{id}` is not a webhook id; write owner/name/hook_id"),
            )
        })
}

#[async_trait]
impl Provider for Webhooks {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        let mut repos: BTreeMap<&str, Vec<Json>> = BTreeMap::new();
        for target in targets {
            if let Some(repo) = text(target.attributes, "repo") {
                repos.entry(repo).or_default();
            }
        }
        // Repositories whose hooks the token may not list: GitHub answers 404
        // (or 403) alike for a missing repository and a missing permission.
        let mut unreadable: BTreeSet<&str> = BTreeSet::new();
        for (repo, hooks) in &mut repos {
            *hooks = match self.hooks(repo).await {
                Ok(found) => found,
                Err(error) if matches!(error.kind, ErrorKind::NotFound | ErrorKind::Denied) => {
                    tracing::warn!(
                        repo,
                        %error,
                        "cannot list the repository's hooks: {HOOK_PERMISSION}; recorded hooks are kept as recorded"
                    );
                    unreadable.insert(repo);
                    Vec::new()
                }
                Err(error) => return Err(error),
            };
        }
        Ok(targets
            .iter()
            .map(|target| {
                let repo = text(target.attributes, "repo")?;
                let hooks = repos.get(repo)?;
                if unreadable.contains(repo) {
                    // Not seen is not gone: keep a recorded hook as it was.
                    return target.id.map(|id| Observed {
                        id: id.to_owned(),
                        attributes: target.attributes.clone(),
                        owner: None,
                        due: None,
                    });
                }
                match target.id {
                    Some(id) => {
                        let (_, hook_id) = split_id(id).ok()?;
                        let hook = hooks
                            .iter()
                            .find(|hook| hook.get("id").and_then(Json::as_i64) == Some(hook_id))?;
                        observe(repo, hook, target.attributes, None)
                    }
                    None => {
                        let url = text(target.attributes, "url")?;
                        let hook = hooks.iter().find(|hook| {
                            hook.pointer("/config/url").and_then(Json::as_str) == Some(url)
                        })?;
                        let owner = Owner {
                            stack: context.stack.clone(),
                            addr: target.addr.to_string(),
                            intent: None,
                        };
                        let mut adopted = observe(repo, hook, target.attributes, Some(owner))?;
                        // Its secret is unknown to jaam: set it again now.
                        adopted.due =
                            Some("adopted by its URL: its secret is set again".to_owned());
                        adopted
                            .attributes
                            .insert("secret_parameter".into(), Value::Null);
                        Some(adopted)
                    }
                }
            })
            .collect())
    }

    async fn create(
        &self,
        context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let repo = text(attributes, "repo").unwrap_or_default();
        let mut known = attributes.clone();
        let secret = match attributes.get("secret").and_then(Value::as_str) {
            Some(secret) => Secret::new(secret),
            None => {
                let (name, secret) = self.generate_secret(context, &owner.addr).await?;
                known.insert("secret_parameter".to_owned(), Value::String(name));
                secret
            }
        };
        let created = self
            .api
            .expect(
                Method::POST,
                &format!("/repos/{repo}/hooks"),
                Some(&Self::body(attributes, Some(&secret))),
            )
            .await;
        let answer = match created {
            Ok(answer) => answer,
            Err(error) => {
                // The generated secret belongs to no hook: remove it again.
                if let Some(name) = known.get("secret_parameter").and_then(Value::as_str) {
                    let _ = self.parameters.delete(&[name.to_owned()]).await;
                }
                return Err(permission_hint(repo, error));
            }
        };
        observe(repo, &answer.json("created hook")?, &known, None)
            .ok_or_else(|| ProviderError::new(ErrorKind::Other, "the created hook has no id"))
    }

    async fn update(
        &self,
        context: &Context,
        owner: &Owner,
        id: &str,
        prior: &Attrs,
        attributes: &Attrs,
        _changed: &[String],
    ) -> Result<Observed> {
        let (repo, hook_id) = split_id(id)?;
        let mut known = attributes.clone();
        known.insert(
            "secret_parameter".to_owned(),
            prior
                .get("secret_parameter")
                .cloned()
                .unwrap_or(Value::Null),
        );
        let (secret, generated) = match self.secret(attributes, Some(prior)).await? {
            Some(secret) => (secret, None),
            // Adopted (or its parameter lost): a secret of its own, now.
            None => {
                let (name, secret) = self.generate_secret(context, &owner.addr).await?;
                known.insert("secret_parameter".to_owned(), Value::String(name.clone()));
                (secret, Some(name))
            }
        };
        let patched = self
            .api
            .expect(
                Method::PATCH,
                &format!("/repos/{repo}/hooks/{hook_id}"),
                Some(&Self::body(attributes, Some(&secret))),
            )
            .await;
        let answer = match patched {
            Ok(answer) => answer,
            Err(error) => {
                // A secret generated for this update belongs to no hook.
                if let Some(name) = generated {
                    let _ = self.parameters.delete(&[name]).await;
                }
                return Err(permission_hint(repo, error));
            }
        };
        observe(repo, &answer.json("updated hook")?, &known, None)
            .ok_or_else(|| ProviderError::new(ErrorKind::Other, "the updated hook has no id"))
    }

    async fn delete(&self, _context: &Context, id: &str, prior: &Attrs) -> Result<()> {
        let (repo, hook_id) = split_id(id)?;
        match self
            .api
            .expect(
                Method::DELETE,
                &format!("/repos/{repo}/hooks/{hook_id}"),
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(error) if error.kind == ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        if let Some(name) = prior.get("secret_parameter").and_then(Value::as_str) {
            self.parameters.delete(&[name.to_owned()]).await?;
        }
        Ok(())
    }

    async fn import(&self, _context: &Context, id: &str) -> Result<Observed> {
        let (repo, hook_id) = split_id(id)?;
        let answer = self
            .api
            .expect(Method::GET, &format!("/repos/{repo}/hooks/{hook_id}"), None)
            .await?;
        observe(repo, &answer.json("hook")?, &Attrs::new(), None)
            .ok_or_else(|| ProviderError::new(ErrorKind::Other, "the hook has no id"))
    }

    async fn list_owned(&self, _context: &Context) -> Result<Vec<Observed>> {
        // Hooks carry no tags: `jaam gc` cannot report them.
        Ok(Vec::new())
    }
}

/// The secret a webhook signs deliveries with: its `secret` argument's value
/// (from the environment the spec names) is not in state, so the daemon asks
/// here for generated secrets only.
///
/// # Errors
/// A failed Parameter Store call or a missing parameter.
pub async fn stored_secret(parameters: &Parameters, name: &str) -> Result<Secret> {
    parameters
        .get(name)
        .await?
        .ok_or_else(|| parameters::malformed(name, "a webhook secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_should_be_recognised() {
        let mut headers = HeaderMap::new();
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &headers, 0), None);
        assert_eq!(rate_limited(StatusCode::OK, &headers, 0), None);
        assert!(rate_limited(StatusCode::TOO_MANY_REQUESTS, &headers, 0).is_some());
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(
            rate_limited(StatusCode::FORBIDDEN, &headers, 0),
            Some(Duration::from_secs(3))
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        let reset = chrono::Utc::now().timestamp() + 7200;
        headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        assert_eq!(
            rate_limited(StatusCode::FORBIDDEN, &headers, 0),
            Some(RATE_LIMIT.max)
        );
    }

    #[test]
    fn query_values_should_be_escaped() {
        assert_eq!(super::query_escape("preview/pr-42"), "preview%2Fpr-42");
        assert_eq!(super::query_escape("a b&c"), "a%20b%26c");
    }

    #[test]
    fn ids_should_split() {
        assert_eq!(split_id("o/r/12").unwrap(), ("o/r", 12));
        assert!(split_id("r/12").is_err());
        assert!(split_id("o/r/x").is_err());
    }

    #[test]
    fn hooks_should_read_back_with_masked_secrets() {
        let hook = json!({"id": 7, "active": true, "events": ["pull_request", "push"],
            "config": {"url": "https://x.test/h", "content_type": "json", "secret": "********"}});
        let known = Attrs::from([
            ("secret".to_owned(), Value::from("sha256:ab")),
            (
                "events".to_owned(),
                Value::List(vec![Value::from("push"), Value::from("pull_request")]),
            ),
        ]);
        let observed = observe("o/r", &hook, &known, None).unwrap();
        assert_eq!(observed.id, "o/r/7");
        assert_eq!(observed.attributes["secret"], Value::from("sha256:ab"));
        assert_eq!(observed.attributes["events"], known["events"]);
        let bare = json!({"id": 7, "events": ["push"], "config": {"url": "u"}});
        let observed = observe("o/r", &bare, &known, None).unwrap();
        assert_eq!(observed.attributes["secret"], Value::Null);
        assert_eq!(observed.attributes["content_type"], Value::from("form"));
    }
}
