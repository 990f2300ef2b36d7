//! Revisions that keep failing are parked, not rebuilt forever.
//!
//! A site whose branch head does not build fails every deploy of it: retried
//! with backoff, then at every resync (which reads the head again), each
//! time a full build on the instance. After `--max-failures` (default 5)
//! failed deploys in a row of the same revision of a (repository, branch),
//! that revision is **parked**: the daemon stops deploying it — no retry,
//! and a resync plans the site at the revision it serves (the branch-head
//! resolver answers the serving revision for a parked head) — until one of:
//! - a new push (or merged pull request) for that repository and branch;
//! - a spec change;
//! - the revision is deployed by someone else (a manual `jaam apply` that
//!   succeeded: state then records it).
//!
//! `/status` lists parked revisions with their failure count and last error.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use jaam_core::providers::aws::ec2::HeadResolver;
use serde::Serialize;

/// One parked revision.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Parked {
    /// The repository (lowercase `owner/name`).
    pub(crate) repo: String,
    /// The branch.
    pub(crate) branch: String,
    /// The revision that failed.
    pub(crate) revision: String,
    /// What the sites serve meanwhile (none: never deployed).
    pub(crate) serving: Option<String>,
    /// Failed deploys in a row.
    pub(crate) failures: u32,
    /// The last failure.
    pub(crate) error: String,
    /// When it was parked.
    pub(crate) since: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    /// (repo, branch) → (revision, failures in a row).
    failures: HashMap<(String, String), (String, u32)>,
    parked: BTreeMap<(String, String), Parked>,
}

/// The daemon's parking lot, shared with the branch-head resolver.
#[derive(Clone, Default)]
pub(crate) struct Parking {
    inner: Arc<Mutex<Inner>>,
    max: u32,
}

impl Parking {
    /// Parks a revision after `max` failed deploys in a row (0: never).
    pub(crate) fn new(max: u32) -> Self {
        Self {
            inner: Arc::default(),
            max,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("parking")
    }

    /// `resolver` answering, for a parked head, the revision serving.
    pub(crate) fn wrap(&self, resolver: Option<HeadResolver>) -> Option<HeadResolver> {
        let resolver = resolver?;
        let parking = self.clone();
        Some(Arc::new(move |repo: String, branch: String| {
            let resolver = Arc::clone(&resolver);
            let parking = parking.clone();
            Box::pin(async move {
                let head = resolver(repo.clone(), branch.clone()).await?;
                let key = (repo.to_ascii_lowercase(), branch);
                let parked = parking.inner().parked.get(&key).cloned();
                match parked {
                    Some(parked) if parked.revision == head => match parked.serving {
                        Some(serving) => {
                            tracing::info!(
                                repo,
                                head,
                                serving,
                                "parked head: planning the revision serving"
                            );
                            Ok(serving)
                        }
                        // Nothing serves yet: no revision to plan, and no
                        // build of the parked one either.
                        None => Err(jaam_core::provider::ProviderError::new(
                            jaam_core::provider::ErrorKind::Transient,
                            format!(
                                "{head} is parked after {} failed deploys ({}); push a fix or run `jaam apply`",
                                parked.failures, parked.error
                            ),
                        )),
                    },
                    _ => Ok(head),
                }
            })
        }))
    }

    /// A deploy of `revision` for (`repo`, `branch`) failed with `error`;
    /// `serving` is what the sites serve. Whether it is parked now.
    pub(crate) fn failed(
        &self,
        repo: &str,
        branch: &str,
        revision: &str,
        serving: Option<String>,
        error: &str,
    ) -> bool {
        let key = (repo.to_ascii_lowercase(), branch.to_owned());
        let mut inner = self.inner();
        let count = match inner.failures.get_mut(&key) {
            Some((failed, count)) if failed == revision => {
                *count += 1;
                *count
            }
            _ => {
                inner.failures.insert(key.clone(), (revision.to_owned(), 1));
                1
            }
        };
        if self.max == 0 || count < self.max {
            return false;
        }
        tracing::warn!(
            repo,
            branch,
            revision,
            failures = count,
            "parking a revision that keeps failing: no more deploys of it until a new push, a spec change or a manual apply"
        );
        inner.parked.insert(
            key.clone(),
            Parked {
                repo: key.0,
                branch: key.1,
                revision: revision.to_owned(),
                serving,
                failures: count,
                error: error.to_owned(),
                since: Utc::now(),
            },
        );
        true
    }

    /// A deploy for (`repo`, `branch`) succeeded, serving `revision`.
    pub(crate) fn succeeded(&self, repo: &str, branch: &str, revision: &str) {
        let key = (repo.to_ascii_lowercase(), branch.to_owned());
        let mut inner = self.inner();
        inner.failures.remove(&key);
        if inner
            .parked
            .get(&key)
            .is_some_and(|parked| parked.revision == revision)
        {
            tracing::info!(
                repo,
                branch,
                revision,
                "a parked revision was deployed: unparked"
            );
            inner.parked.remove(&key);
        }
    }

    /// A new push for (`repo`, `branch`): its parked revision may go again.
    pub(crate) fn pushed(&self, repo: &str, branch: &str) {
        let key = (repo.to_ascii_lowercase(), branch.to_owned());
        let mut inner = self.inner();
        inner.failures.remove(&key);
        if inner.parked.remove(&key).is_some() {
            tracing::info!(repo, branch, "a new push: unparked");
        }
    }

    /// The specs changed: everything may go again.
    pub(crate) fn clear(&self) {
        let mut inner = self.inner();
        inner.failures.clear();
        inner.parked.clear();
    }

    /// Whether (`repo`, `branch`) has a parked revision.
    #[cfg(test)]
    pub(crate) fn is_parked(&self, repo: &str, branch: &str) -> bool {
        self.inner()
            .parked
            .contains_key(&(repo.to_ascii_lowercase(), branch.to_owned()))
    }

    /// What `/status` shows.
    pub(crate) fn list(&self) -> Vec<Parked> {
        self.inner().parked.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(head: &'static str) -> HeadResolver {
        Arc::new(move |_, _| Box::pin(async move { Ok(head.to_owned()) }))
    }

    #[tokio::test]
    async fn a_revision_should_park_after_max_failures_in_a_row_and_unpark_on_a_push() {
        let parking = Parking::new(3);
        let heads = parking.wrap(Some(resolver("bbbbbbb"))).unwrap();
        let fail = |repo: &str, revision: &str| {
            parking.failed(repo, "main", revision, Some("aaaaaaa".into()), "broke")
        };
        assert!(!fail("Acme/Blog", "bbbbbbb"));
        // Another revision failing starts the count again.
        assert!(!fail("acme/blog", "ccccccc"));
        assert!(!fail("acme/blog", "bbbbbbb"));
        assert!(!fail("acme/blog", "bbbbbbb"));
        assert_eq!(
            heads("acme/blog".into(), "main".into()).await.unwrap(),
            "bbbbbbb"
        );
        assert!(fail("acme/blog", "bbbbbbb"));
        assert!(parking.is_parked("ACME/blog", "main"));
        // The resolver answers the revision serving for the parked head.
        assert_eq!(
            heads("acme/blog".into(), "main".into()).await.unwrap(),
            "aaaaaaa"
        );
        assert_eq!(parking.list()[0].failures, 3);
        parking.pushed("acme/blog", "main");
        assert!(!parking.is_parked("acme/blog", "main"));
        assert_eq!(
            heads("acme/blog".into(), "main".into()).await.unwrap(),
            "bbbbbbb"
        );
    }

    /// A site that never served: its parked head is no revision to plan
    /// (the resolver says why), so nothing builds it again.
    #[tokio::test]
    async fn a_parked_head_with_nothing_serving_should_not_be_planned() {
        let parking = Parking::new(1);
        let heads = parking.wrap(Some(resolver("bbbbbbb"))).unwrap();
        assert!(parking.failed("acme/blog", "main", "bbbbbbb", None, "the build broke"));
        let error = heads("acme/blog".into(), "main".into()).await.unwrap_err();
        assert!(
            error
                .message
                .contains("bbbbbbb is parked after 1 failed deploys (the build broke)"),
            "{error}"
        );
    }

    #[test]
    fn a_manual_deploy_of_the_parked_revision_should_unpark_it() {
        let parking = Parking::new(1);
        assert!(parking.failed("acme/blog", "main", "bbbbbbb", None, "broke"));
        parking.succeeded("acme/blog", "main", "aaaaaaa");
        assert!(
            parking.is_parked("acme/blog", "main"),
            "another revision does not"
        );
        parking.succeeded("acme/blog", "main", "bbbbbbb");
        assert!(!parking.is_parked("acme/blog", "main"));
    }
}
