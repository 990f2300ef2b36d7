//! GitHub webhook deliveries: signature checks, delivery-id de-duplication and
//! what an event asks for.
//!
//! - The signature is `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of
//!   the raw body, checked in constant time against every webhook secret the
//!   daemon knows. A missing or malformed header, or only the SHA-1
//!   `X-Hub-Signature`, is refused (401).
//! - `X-GitHub-Delivery` ids are remembered (the newest 10,000) in a file, so
//!   a delivery GitHub retries — also across a daemon restart — runs once.
//! - `push` to a site's branch asks for its `after` commit; `pull_request`
//!   `closed` with `merged: true` into the branch asks for `merge_commit_sha`;
//!   `ping` is answered; anything else is acknowledged and ignored.

use std::collections::{HashSet, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use jaam_core::Secret;
use sha2::Sha256;

/// Why a delivery's signature is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// No `X-Hub-Signature-256` (including: only the SHA-1 header).
    Missing,
    /// Not `sha256=` and 64 hex digits.
    Malformed,
    /// No known secret signs this body so.
    Mismatch,
}

impl SignatureError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing X-Hub-Signature-256 (SHA-1 signatures are not accepted)",
            Self::Malformed => "malformed X-Hub-Signature-256",
            Self::Mismatch => "signature does not match",
        }
    }
}

/// Checks `header` (the `X-Hub-Signature-256` value) over `body` against `secrets`.
pub(crate) fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .strip_prefix("sha256=")
        .filter(|hex| hex.len() == 64)
        .ok_or(SignatureError::Malformed)?;
    let signature = hex::decode(hex).map_err(|_| SignatureError::Malformed)?;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        // `verify_slice` compares in constant time.
        if mac.verify_slice(&signature).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// What a delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// `ping`.
    Pong,
    /// Deploy `sha` on `repo`'s `branch`.
    Deploy {
        repo: String,
        branch: String,
        sha: String,
        why: &'static str,
    },
    /// Nothing to do (and why).
    Ignore(String),
}

/// Reads an event's payload.
///
/// # Errors
/// A message when the body is not the JSON the event should carry.
pub(crate) fn interpret(event: &str, body: &[u8]) -> Result<Wanted, String> {
    if event == "ping" {
        return Ok(Wanted::Pong);
    }
    if event != "push" && event != "pull_request" {
        return Ok(Wanted::Ignore(format!("`{event}` events are not used")));
    }
    // Only the fields used are read (the rest is skipped, not built).
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let repo = payload
        .repository
        .map(|r| r.full_name)
        .ok_or("the payload names no repository")?;
    if event == "push" {
        let Some(branch) = payload
            .r#ref
            .as_deref()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        else {
            return Ok(Wanted::Ignore("a push that is not to a branch".into()));
        };
        if payload.deleted == Some(true) {
            return Ok(Wanted::Ignore("a deleted branch".into()));
        }
        let sha = payload.after.ok_or("a push without `after`")?;
        return Ok(Wanted::Deploy {
            repo,
            branch: branch.to_owned(),
            sha,
            why: "push",
        });
    }
    let pull = payload
        .pull_request
        .ok_or("a pull_request event without one")?;
    if payload.action.as_deref() != Some("closed") || pull.merged != Some(true) {
        return Ok(Wanted::Ignore("a pull request that was not merged".into()));
    }
    let branch = pull
        .base
        .map(|b| b.r#ref)
        .ok_or("a pull request without a base branch")?;
    let sha = pull
        .merge_commit_sha
        .ok_or("a merged pull request without `merge_commit_sha`")?;
    Ok(Wanted::Deploy {
        repo,
        branch,
        sha,
        why: "merged pull request",
    })
}

#[derive(serde::Deserialize)]
struct Payload {
    action: Option<String>,
    r#ref: Option<String>,
    after: Option<String>,
    deleted: Option<bool>,
    repository: Option<Repository>,
    pull_request: Option<PullRequest>,
}

#[derive(serde::Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(serde::Deserialize)]
struct PullRequest {
    merged: Option<bool>,
    merge_commit_sha: Option<String>,
    base: Option<Base>,
}

#[derive(serde::Deserialize)]
struct Base {
    r#ref: String,
}

/// Delivery ids already seen: the newest `capacity`, kept in a file.
pub(crate) struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    file: Option<PathBuf>,
    appended: usize,
}

impl Deliveries {
    /// Loads the ids remembered in `file` (if any).
    pub(crate) fn load(file: Option<PathBuf>, capacity: usize) -> Self {
        let mut out = Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
            file,
            appended: 0,
        };
        if let Some(text) = out
            .file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
        {
            for id in text.lines().filter(|l| !l.is_empty()) {
                out.remember(id);
            }
        }
        out
    }

    fn remember(&mut self, id: &str) {
        if self.seen.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Records `id`; false when it was seen before.
    pub(crate) fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        self.remember(id);
        if let Some(path) = &self.file {
            self.appended += 1;
            if self.appended > self.capacity {
                // Compact: rewrite the newest ids, atomically.
                let mut tmp = path.clone().into_os_string();
                tmp.push(".tmp");
                let text: String = self.order.iter().map(|id| format!("{id}\n")).collect();
                if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_ok() {
                    self.appended = 0;
                }
            } else if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{id}");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_vector_should_verify() {
        let secret = Secret::new("It's a Secret to Everybody");
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify(
                Some(header),
                b"Hello, World!",
                std::slice::from_ref(&secret)
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                Some(header),
                b"Hello, World?",
                std::slice::from_ref(&secret)
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(None, b"Hello, World!", std::slice::from_ref(&secret)),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("sha1=abc"), b"x", std::slice::from_ref(&secret)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(header), b"Hello, World!", &[]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn deliveries_should_be_remembered_across_a_restart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deliveries");
        let mut deliveries = Deliveries::load(Some(file.clone()), 3);
        assert!(deliveries.first_time("a"));
        assert!(!deliveries.first_time("a"));
        assert!(deliveries.first_time("b"));
        let mut again = Deliveries::load(Some(file.clone()), 3);
        assert!(!again.first_time("a") && !again.first_time("b"));
        for id in ["c", "d", "e", "f", "g"] {
            assert!(again.first_time(id));
        }
        assert!(again.first_time("a"), "forgotten beyond the bound");
        assert!(again.order.len() <= 3);
    }

    #[test]
    fn merged_pull_requests_and_pushes_should_ask_for_commits() {
        let push = br#"{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"o/r"}}"#;
        assert_eq!(
            interpret("push", push).unwrap(),
            Wanted::Deploy {
                repo: "o/r".into(),
                branch: "main".into(),
                sha: "abc".into(),
                why: "push"
            }
        );
        let closed = br#"{"action":"closed","pull_request":{"merged":false,"base":{"ref":"main"}},"repository":{"full_name":"o/r"}}"#;
        assert!(matches!(
            interpret("pull_request", closed).unwrap(),
            Wanted::Ignore(_)
        ));
        assert!(matches!(
            interpret("issues", b"{}").unwrap(),
            Wanted::Ignore(_)
        ));
        assert_eq!(interpret("ping", b"").unwrap(), Wanted::Pong);
        assert!(interpret("push", b"not json").is_err());
    }
}
