//! GitHub webhook deliveries: whom a delivery may come from, signature checks,
//! de-duplication, and what an event asks for.
//!
//! # What the daemon trusts
//! - A delivery is checked only against the secret(s) of the webhook(s) of
//!   the repository it names ([`Routes::authenticate`]; narrowed to one hook
//!   by `X-GitHub-Hook-ID` when that hook is known). One site's secret never
//!   authenticates a delivery for another site's repository. Repository names
//!   compare case-insensitively (GitHub's `full_name` is canonical; a spec may
//!   differ in case).
//! - The signature is `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of
//!   the raw body, compared in constant time. A missing or malformed header
//!   (or only the SHA-1 `X-Hub-Signature`) is refused (401) before the body is
//!   read.
//! - A delivery is a trigger, not an authority: the commit deployed is the
//!   branch head the GitHub API reports when the reconcile runs. A payload's
//!   commit must be 40 or 64 hex digits (else 400) and is only compared with
//!   that head; a replayed old delivery deploys nothing new.
//! - Deliveries are de-duplicated by their `X-GitHub-Delivery` id *and* by a
//!   hash of the body (the id header is not signed): the newest 10,000 of each
//!   are remembered in a file, across restarts.
//! - `push` to a site's branch and `pull_request` `closed` with `merged: true`
//!   into it ask for a deploy; `pull_request` `opened`, `synchronize`,
//!   `reopened`, `closed` (unmerged) and `edited` (the base may have moved)
//!   ask the sites with previews of pull requests into that branch to bring
//!   them up to date (what serves is what the GitHub API lists when the
//!   reconcile plans, never the payload's commit); `ping` is answered;
//!   anything else is acknowledged and ignored.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use jaam_core::Secret;
use sha2::{Digest as _, Sha256};

/// Why a delivery's signature is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// No `X-Hub-Signature-256` (including: only the SHA-1 header).
    Missing,
    /// Not `sha256=` and 64 hex digits.
    Malformed,
    /// The delivery names no repository this daemon has a webhook for.
    UnknownRepository,
    /// No secret of the repository's webhooks signs this body so.
    Mismatch,
}

impl SignatureError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing X-Hub-Signature-256 (SHA-1 signatures are not accepted)",
            Self::Malformed => "malformed X-Hub-Signature-256",
            Self::UnknownRepository => "no webhook of this daemon is for the delivery's repository",
            Self::Mismatch => "signature does not match",
        }
    }
}

/// Reads the `X-Hub-Signature-256` header (before the body is read).
pub(crate) fn parse_signature(header: Option<&str>) -> Result<[u8; 32], SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .strip_prefix("sha256=")
        .filter(|hex| hex.len() == 64)
        .ok_or(SignatureError::Malformed)?;
    let mut signature = [0u8; 32];
    hex::decode_to_slice(hex, &mut signature).map_err(|_| SignatureError::Malformed)?;
    Ok(signature)
}

/// Whether one of `secrets` signs `body` as `signature` says.
pub(crate) fn verify<'a>(
    signature: &[u8; 32],
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<(), SignatureError> {
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        // `verify_slice` compares in constant time.
        if mac.verify_slice(signature).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// A webhook the daemon knows: its GitHub id (once created) and its secret.
#[derive(Clone, Debug)]
pub(crate) struct KnownHook {
    pub(crate) id: Option<String>,
    pub(crate) secret: Secret,
}

/// Which deliveries the daemon accepts and what they deploy.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Repository (lowercase `owner/name`) → its webhooks.
    hooks: HashMap<String, Vec<KnownHook>>,
    /// (repository lowercase, branch) → the sites that deploy it.
    sites: HashMap<(String, String), Vec<String>>,
    /// The sites with pull request previews.
    previews: HashSet<String>,
}

impl Routes {
    /// `repo`'s webhook `hook` (its secret authenticates deliveries naming `repo`).
    pub(crate) fn add_hook(&mut self, repo: &str, hook: KnownHook) {
        self.hooks
            .entry(repo.to_ascii_lowercase())
            .or_default()
            .push(hook);
    }

    /// `site` deploys `branch` of `repo`.
    pub(crate) fn add_site(&mut self, repo: &str, branch: &str, site: String) {
        self.sites
            .entry((repo.to_ascii_lowercase(), branch.to_owned()))
            .or_default()
            .push(site);
    }

    /// `site` serves previews of the pull requests into its branch.
    pub(crate) fn add_previews(&mut self, site: &str) {
        self.previews.insert(site.to_owned());
    }

    /// The sites that serve previews of pull requests into `branch` of `repo`.
    pub(crate) fn preview_sites(&self, repo: &str, branch: &str) -> Vec<String> {
        let mut sites = self.sites(repo, branch);
        sites.retain(|site| self.previews.contains(site));
        sites
    }

    /// Whether any site deploys from a webhook delivery but no secret is known.
    pub(crate) fn has_sites_without_hooks(&self) -> bool {
        self.sites
            .keys()
            .any(|(repo, _)| !self.hooks.contains_key(repo))
    }

    /// Every site with the repository (lowercase) and branch it deploys,
    /// by site name.
    pub(crate) fn all_sites(&self) -> BTreeMap<String, (String, String)> {
        self.sites
            .iter()
            .flat_map(|((repo, branch), sites)| {
                sites
                    .iter()
                    .map(move |site| (site.clone(), (repo.clone(), branch.clone())))
            })
            .collect()
    }

    /// Whether `site` deploys from a repository here (without building
    /// [`all_sites`](Self::all_sites): a fleet asks every stack).
    pub(crate) fn has_site(&self, site: &str) -> bool {
        self.sites
            .values()
            .any(|sites| sites.iter().any(|s| s == site))
    }

    /// The sites that deploy `branch` of `repo`.
    pub(crate) fn sites(&self, repo: &str, branch: &str) -> Vec<String> {
        self.sites
            .get(&(repo.to_ascii_lowercase(), branch.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Checks `body` against the secrets of `repo`'s webhooks only (of the one
    /// with `hook_id`, when it is known), never against every secret.
    pub(crate) fn authenticate(
        &self,
        signature: &[u8; 32],
        hook_id: Option<&str>,
        repo: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let hooks = repo
            .and_then(|repo| self.hooks.get(&repo.to_ascii_lowercase()))
            .ok_or(SignatureError::UnknownRepository)?;
        let by_id: Vec<&KnownHook> = hooks
            .iter()
            .filter(|hook| hook_id.is_some() && hook.id.as_deref() == hook_id)
            .collect();
        let candidates: Vec<&KnownHook> = if by_id.is_empty() {
            hooks.iter().collect()
        } else {
            by_id
        };
        verify(
            signature,
            body,
            candidates.into_iter().map(|hook| &hook.secret),
        )
    }
}

/// The repository a delivery names (unverified: it only selects the secrets
/// the signature is checked against).
pub(crate) fn claimed_repository(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claim {
        repository: Option<Repository>,
    }
    serde_json::from_slice::<Claim>(body)
        .ok()?
        .repository
        .map(|r| r.full_name)
}

/// The de-duplication key of a body: its SHA-256.
pub(crate) fn body_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// Whether `sha` is a full commit id (SHA-1 or SHA-256 object format).
pub(crate) fn is_full_commit(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.chars().all(|c| c.is_ascii_hexdigit())
}

/// What a delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// `ping`.
    Pong,
    /// Deploy `repo`'s `branch`, whose head the delivery says is `sha`.
    Deploy {
        repo: String,
        branch: String,
        sha: String,
        why: &'static str,
    },
    /// Bring the previews of `repo`'s pull requests into `base` up to date
    /// (pull request `number` was opened, pushed to, reopened or closed).
    Previews {
        repo: String,
        base: String,
        number: u64,
    },
    /// Nothing to do (and why).
    Ignore(String),
}

/// The `pull_request` actions that change which previews serve what.
const PREVIEW_ACTIONS: [&str; 5] = ["opened", "synchronize", "reopened", "closed", "edited"];

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
        if !is_full_commit(&sha) {
            return Err(format!("`after` is not a commit id: {sha:?}"));
        }
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
    let branch = pull
        .base
        .map(|b| b.r#ref)
        .ok_or("a pull request without a base branch")?;
    if payload.action.as_deref() != Some("closed") || pull.merged != Some(true) {
        let action = payload.action.unwrap_or_default();
        if !PREVIEW_ACTIONS.contains(&action.as_str()) {
            return Ok(Wanted::Ignore(format!(
                "pull request action `{action}` changes no preview"
            )));
        }
        let number = pull.number.ok_or("a pull request without a number")?;
        return Ok(Wanted::Previews {
            repo,
            base: branch,
            number,
        });
    }
    let sha = pull
        .merge_commit_sha
        .ok_or("a merged pull request without `merge_commit_sha`")?;
    if !is_full_commit(&sha) {
        return Err(format!("`merge_commit_sha` is not a commit id: {sha:?}"));
    }
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
    number: Option<u64>,
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

    /// Records every key; false when any of them was seen before (then
    /// nothing is recorded).
    pub(crate) fn first_time(&mut self, keys: &[&str]) -> bool {
        if keys.iter().any(|key| self.seen.contains(*key)) {
            return false;
        }
        for key in keys {
            self.record(key);
        }
        true
    }

    fn record(&mut self, id: &str) {
        self.remember(id);
        if let Some(path) = &self.file {
            self.appended += 1;
            if self.appended > self.capacity {
                // Compact: rewrite the newest ids, atomically (a new 0600
                // file renamed into place; see `jaam_core::files`).
                let text: String = self.order.iter().map(|id| format!("{id}\n")).collect();
                if jaam_core::files::write_atomically(path, text.as_bytes(), false).is_ok() {
                    self.appended = 0;
                }
            } else if let Ok(mut file) = jaam_core::files::open_private(path, true) {
                let _ = writeln!(file, "{id}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_vector_should_verify() {
        let secret = Secret::new("It's a Secret to Everybody");
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let signature = parse_signature(Some(header)).unwrap();
        assert_eq!(verify(&signature, b"Hello, World!", [&secret]), Ok(()));
        assert_eq!(
            verify(&signature, b"Hello, World?", [&secret]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(parse_signature(None), Err(SignatureError::Missing));
        assert_eq!(
            parse_signature(Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            parse_signature(Some(&format!("sha256={}", "zz".repeat(32)))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&signature, b"Hello, World!", []),
            Err(SignatureError::Mismatch)
        );
    }

    fn sign(secret: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Issue 11, item 1: a secret authenticates only its own repository's hooks.
    #[test]
    fn a_secret_should_authenticate_only_deliveries_for_its_own_repository() {
        let mut routes = Routes::default();
        let a = "secret-of-site-a-0123456789";
        let b = "secret-of-site-b-0123456789";
        routes.add_hook(
            "acme/A-Site",
            KnownHook {
                id: Some("1".into()),
                secret: Secret::new(a),
            },
        );
        routes.add_hook(
            "acme/b-site",
            KnownHook {
                id: Some("2".into()),
                secret: Secret::new(b),
            },
        );
        let for_b = br#"{"repository":{"full_name":"acme/b-site"}}"#;
        // Site A's secret signing a delivery that names B's repository.
        let forged = sign(a, for_b);
        assert_eq!(
            routes.authenticate(&forged, None, claimed_repository(for_b).as_deref(), for_b),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            routes.authenticate(
                &forged,
                Some("1"),
                claimed_repository(for_b).as_deref(),
                for_b
            ),
            Err(SignatureError::Mismatch),
            "a hook id of another repository selects nothing of B's"
        );
        // B's own secret passes, whatever the case of the name.
        let genuine = sign(b, for_b);
        assert_eq!(
            routes.authenticate(&genuine, None, Some("ACME/B-Site"), for_b),
            Ok(())
        );
        assert_eq!(
            routes.authenticate(&genuine, Some("2"), Some("acme/b-site"), for_b),
            Ok(())
        );
        // Unknown repositories and deliveries naming none are refused.
        assert_eq!(
            routes.authenticate(&genuine, None, Some("acme/c"), for_b),
            Err(SignatureError::UnknownRepository)
        );
        assert_eq!(
            routes.authenticate(&genuine, None, None, b"{}"),
            Err(SignatureError::UnknownRepository)
        );
        // An empty secret is no secret: it authenticates nothing of B's.
        let blank = sign("", for_b);
        assert_eq!(
            routes.authenticate(&blank, None, Some("acme/b-site"), for_b),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn deliveries_should_be_remembered_across_a_restart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deliveries");
        let mut deliveries = Deliveries::load(Some(file.clone()), 3);
        assert!(deliveries.first_time(&["a"]));
        assert!(!deliveries.first_time(&["a"]));
        assert!(deliveries.first_time(&["b"]));
        let mut again = Deliveries::load(Some(file.clone()), 3);
        assert!(!again.first_time(&["a"]) && !again.first_time(&["b"]));
        for id in ["c", "d", "e", "f", "g"] {
            assert!(again.first_time(&[id]));
        }
        assert!(again.first_time(&["a"]), "forgotten beyond the bound");
        assert!(
            !again.first_time(&["new", "a"]),
            "any key seen makes a duplicate"
        );
        assert!(again.first_time(&["new"]), "and records nothing");
        assert!(again.order.len() <= 3);
    }

    #[test]
    fn merged_pull_requests_and_pushes_should_ask_for_commits() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let push = format!(
            r#"{{"ref":"refs/heads/main","after":"{sha}","repository":{{"full_name":"o/r"}}}}"#
        );
        assert_eq!(
            interpret("push", push.as_bytes()).unwrap(),
            Wanted::Deploy {
                repo: "o/r".into(),
                branch: "main".into(),
                sha: sha.into(),
                why: "push"
            }
        );
        // An unmerged pull request's events update its preview.
        for action in ["opened", "synchronize", "reopened", "closed", "edited"] {
            let event = format!(
                r#"{{"action":"{action}","number":7,"pull_request":{{"number":7,"merged":false,"base":{{"ref":"main"}}}},"repository":{{"full_name":"o/r"}}}}"#
            );
            assert_eq!(
                interpret("pull_request", event.as_bytes()).unwrap(),
                Wanted::Previews {
                    repo: "o/r".into(),
                    base: "main".into(),
                    number: 7
                },
                "{action}"
            );
        }
        let labeled = br#"{"action":"labeled","pull_request":{"number":7,"base":{"ref":"main"}},"repository":{"full_name":"o/r"}}"#;
        assert!(matches!(
            interpret("pull_request", labeled).unwrap(),
            Wanted::Ignore(_)
        ));
        assert!(matches!(
            interpret("issues", b"{}").unwrap(),
            Wanted::Ignore(_)
        ));
        assert_eq!(interpret("ping", b"").unwrap(), Wanted::Pong);
        assert!(interpret("push", b"not json").is_err());
        // Issue 11, item 2: only full commit ids pass; words and branch names do not.
        for after in [
            "rollback",
            "main",
            "abc",
            "0123456789abcdef0123456789abcdef0123456g",
        ] {
            let push = format!(
                r#"{{"ref":"refs/heads/main","after":"{after}","repository":{{"full_name":"o/r"}}}}"#
            );
            assert!(interpret("push", push.as_bytes()).is_err(), "{after}");
        }
    }
}
