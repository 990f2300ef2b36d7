//! The daemon's work queue: one entry per stack, deduplicated, never two
//! reconciles of one stack at once, failures retried with backoff.
//!
//! Sources (file watcher, webhook receiver, resync timer) [`schedule`](Queue::schedule)
//! requests; workers take them with [`next`](Queue::next) and report with
//! [`done`](Queue::done).
//!
//! # Guarantees
//! - **Dedupe**: a stack has at most one pending entry. Scheduling it again keeps
//!   the earlier due time (so a debounced burst of file events runs once, at the
//!   first event's time plus the debounce) and merges the requests (the latest
//!   revision wins).
//! - **Serialization**: a stack that is being reconciled is not handed out again
//!   until its reconcile is done; requests arriving meanwhile wait as one pending
//!   entry, so 100 pushes during a reconcile cause one more reconcile, not 100.
//! - **Retries**: a failed reconcile is scheduled again after an exponential
//!   backoff with jitter, up to a cap; a success resets it.
//! - **Bounded**: at most `capacity` stacks wait at once; beyond that
//!   [`schedule`](Queue::schedule) refuses (the webhook receiver answers 503
//!   rather than growing without bound).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jaam_core::backoff::Backoff;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A request that can absorb a newer one for the same key.
pub(crate) trait Merge {
    /// Folds `newer` into `self` (for revisions: the newer one wins).
    fn merge(&mut self, newer: Self);
}

/// Queue settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// How many keys may wait at once.
    pub(crate) capacity: usize,
    /// Retry delays after failures.
    pub(crate) retry: Backoff,
}

/// The queue is full: the request was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the reconcile queue is full ({capacity} stacks waiting)")]
pub(crate) struct Full {
    capacity: usize,
}

struct Entry<R> {
    due: Instant,
    request: R,
}

struct Inner<K, R> {
    pending: BTreeMap<K, Entry<R>>,
    running: BTreeSet<K>,
    failures: BTreeMap<K, u32>,
}

/// The queue, shared by sources and workers.
pub(crate) struct Queue<K, R> {
    /// Own mutex, never held across an await.
    inner: Mutex<Inner<K, R>>,
    changed: Notify,
    config: Config,
}

impl<K: Ord + Clone, R: Merge> Queue<K, R> {
    /// An empty queue.
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                pending: BTreeMap::new(),
                running: BTreeSet::new(),
                failures: BTreeMap::new(),
            }),
            changed: Notify::new(),
            config,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<K, R>> {
        self.inner.lock().expect("queue mutex")
    }

    /// Schedules `request` for `key` at `due` (merged with a pending one).
    ///
    /// # Errors
    /// [`Full`] when `capacity` other keys are already waiting.
    pub(crate) fn schedule(&self, key: K, due: Instant, request: R) -> Result<(), Full> {
        let mut inner = self.inner();
        let waiting = inner.pending.len();
        match inner.pending.get_mut(&key) {
            Some(entry) => {
                entry.due = entry.due.min(due);
                entry.request.merge(request);
            }
            None if waiting >= self.config.capacity => {
                return Err(Full {
                    capacity: self.config.capacity,
                });
            }
            None => {
                inner.pending.insert(key, Entry { due, request });
            }
        }
        drop(inner);
        self.changed.notify_waiters();
        self.changed.notify_one();
        Ok(())
    }

    /// How many keys are waiting (for `/metrics`).
    pub(crate) fn depth(&self) -> usize {
        self.inner().pending.len()
    }

    /// Waits for the earliest due key that is not being reconciled, marks it
    /// running and returns it with its request.
    ///
    /// # Cancellation
    /// Dropping the future takes nothing off the queue.
    pub(crate) async fn next(&self) -> (K, R) {
        loop {
            let notified = self.changed.notified();
            let wait = {
                let mut inner = self.inner();
                let now = Instant::now();
                let ready = inner
                    .pending
                    .iter()
                    .filter(|(key, _)| !inner.running.contains(*key))
                    .min_by_key(|(_, entry)| entry.due)
                    .map(|(key, entry)| (key.clone(), entry.due));
                match ready {
                    Some((key, due)) if due <= now => {
                        let entry = inner.pending.remove(&key).expect("pending key");
                        inner.running.insert(key.clone());
                        return (key, entry.request);
                    }
                    Some((_, due)) => Some(due),
                    None => None,
                }
            };
            match wait {
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Hands `key` back without a result: its reconcile could not start (the
    /// state's lock is held elsewhere). It is due again at `due` (or later,
    /// merged with what arrived meanwhile), and its failure count and backoff
    /// stay as they were.
    pub(crate) fn requeue(&self, key: &K, due: Instant, request: R) {
        let mut inner = self.inner();
        inner.running.remove(key);
        match inner.pending.get_mut(key) {
            Some(entry) => {
                entry.due = entry.due.max(due);
                entry.request.merge(request);
            }
            None => {
                inner.pending.insert(key.clone(), Entry { due, request });
            }
        }
        drop(inner);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// Reports the end of `key`'s reconcile. On failure the key is scheduled
    /// again after a backoff, and not before `not_before` when the failure
    /// said when to try again (merged with anything that arrived meanwhile),
    /// with `retry` as its request when nothing else is pending.
    pub(crate) fn done(&self, key: &K, succeeded: bool, retry: R, not_before: Option<Instant>) {
        let mut inner = self.inner();
        inner.running.remove(key);
        if succeeded {
            inner.failures.remove(key);
        } else {
            let attempts = inner.failures.entry(key.clone()).or_insert(0);
            let delay = self.config.retry.delay(*attempts);
            *attempts = attempts.saturating_add(1);
            let due = (Instant::now() + delay).max(not_before.unwrap_or_else(Instant::now));
            match inner.pending.get_mut(key) {
                Some(entry) => entry.due = entry.due.max(due),
                None => {
                    inner.pending.insert(
                        key.clone(),
                        Entry {
                            due,
                            request: retry,
                        },
                    );
                }
            }
        }
        drop(inner);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }
}

/// What a reconcile request says: why, and (for sites) which revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Request {
    /// Desired revision per site, the latest wins.
    pub(crate) revisions: BTreeMap<String, String>,
    /// What asked for it: `spec change`, `push`, `resync`, `retry`.
    pub(crate) reasons: BTreeSet<&'static str>,
    /// The webhook deliveries (`X-GitHub-Delivery`) that asked for it, for
    /// the deploy history.
    pub(crate) deliveries: BTreeSet<String>,
}

impl Request {
    /// What the deploy history says triggered it: the reasons, and the
    /// deliveries when a webhook asked (`push (delivery 72d3…)`).
    pub(crate) fn trigger(&self) -> String {
        let reasons: Vec<&str> = self.reasons.iter().copied().collect();
        let mut trigger = reasons.join(", ");
        if !self.deliveries.is_empty() {
            let ids: Vec<&str> = self.deliveries.iter().map(String::as_str).collect();
            trigger.push_str(&format!(
                " (deliver{} {})",
                if ids.len() == 1 { "y" } else { "ies" },
                ids.join(", ")
            ));
        }
        trigger
    }
}

impl Merge for Request {
    fn merge(&mut self, newer: Self) {
        // An empty revision (a pull request's, a manual deploy's) names the
        // site only: it never hides a pushed one.
        for (site, sha) in newer.revisions {
            if !sha.is_empty() || !self.revisions.contains_key(&site) {
                self.revisions.insert(site, sha);
            }
        }
        self.reasons.extend(newer.reasons);
        self.deliveries.extend(newer.deliveries);
    }
}

/// A retry delay for [`Config`]: 1 s doubling to 5 min.
pub(crate) const RETRY: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
    deadline: Duration::MAX,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: &'static str, revision: Option<(&str, &str)>) -> Request {
        let mut out = Request::default();
        out.reasons.insert(reason);
        if let Some((site, sha)) = revision {
            out.revisions.insert(site.to_owned(), sha.to_owned());
        }
        out
    }

    fn queue(capacity: usize) -> Arc<Queue<String, Request>> {
        Queue::new(Config {
            capacity,
            retry: RETRY,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn queue_should_dedupe_and_keep_the_earlier_time_and_latest_revision() {
        let queue = queue(10);
        let now = Instant::now();
        queue
            .schedule(
                "blog".into(),
                now + Duration::from_secs(5),
                request("push", Some(("blog", "a"))),
            )
            .unwrap();
        queue
            .schedule(
                "blog".into(),
                now + Duration::from_secs(1),
                request("push", Some(("blog", "b"))),
            )
            .unwrap();
        queue
            .schedule(
                "blog".into(),
                now + Duration::from_secs(9),
                request("spec change", None),
            )
            .unwrap();
        assert_eq!(queue.depth(), 1);
        let (key, request) = queue.next().await;
        assert_eq!(key, "blog");
        assert_eq!(
            Instant::now() - now,
            Duration::from_secs(1),
            "the earlier due time wins"
        );
        assert_eq!(request.revisions["blog"], "b", "the latest revision wins");
        assert_eq!(request.reasons.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_should_never_hand_out_a_stack_that_is_being_reconciled() {
        let queue = queue(10);
        let now = Instant::now();
        queue
            .schedule("blog".into(), now, request("push", Some(("blog", "1"))))
            .unwrap();
        let (key, _) = queue.next().await;
        // 100 pushes while the reconcile runs coalesce into one waiting entry.
        for n in 2..=101 {
            queue
                .schedule(
                    key.clone(),
                    Instant::now(),
                    request("push", Some(("blog", &n.to_string()))),
                )
                .unwrap();
        }
        queue
            .schedule("shop".into(), Instant::now(), request("push", None))
            .unwrap();
        let (other, _) = queue.next().await;
        assert_eq!(other, "shop", "another stack is not held up");
        let waiting = tokio::time::timeout(Duration::from_secs(60), queue.next()).await;
        assert!(waiting.is_err(), "blog is not handed out while it runs");
        queue.done(&key, true, Request::default(), None);
        let (again, request) = queue.next().await;
        assert_eq!(again, "blog");
        assert_eq!(
            request.revisions["blog"], "101",
            "one more reconcile, with the last revision"
        );
        assert_eq!(queue.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_should_retry_failures_with_growing_backoff_and_reset_on_success() {
        let queue = queue(10);
        queue
            .schedule("blog".into(), Instant::now(), request("push", None))
            .unwrap();
        let mut waits = Vec::new();
        let (mut key, _) = queue.next().await;
        for _ in 0..4 {
            let failed_at = Instant::now();
            queue.done(&key, false, request("retry", None), None);
            let (again, request) = queue.next().await;
            assert!(request.reasons.contains("retry"));
            waits.push(Instant::now() - failed_at);
            key = again;
        }
        for (attempt, wait) in waits.iter().enumerate() {
            let full = Duration::from_secs(1) * 2u32.pow(attempt as u32);
            assert!(
                *wait >= full / 2 && *wait <= full,
                "attempt {attempt}: waited {wait:?}, expected within [{:?}, {full:?}]",
                full / 2
            );
        }
        queue.done(&key, true, Request::default(), None);
        assert!(
            queue.inner().failures.is_empty(),
            "a success resets the backoff"
        );
    }

    /// Issue 13: a failure that says when to try again (an ACME
    /// `Retry-After`) is not retried before then, however short the backoff.
    #[tokio::test(start_paused = true)]
    async fn a_failure_with_a_retry_time_should_wait_for_it() {
        let queue = queue(10);
        queue
            .schedule("blog".into(), Instant::now(), request("push", None))
            .unwrap();
        let (key, _) = queue.next().await;
        let failed_at = Instant::now();
        let asked = failed_at + Duration::from_secs(3_600);
        queue.done(&key, false, request("retry", None), Some(asked));
        let (_, request) = queue.next().await;
        assert!(request.reasons.contains("retry"));
        assert!(
            Instant::now() >= asked,
            "retried after {:?}",
            Instant::now() - failed_at
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeued_stack_should_come_back_at_its_time_with_its_backoff_kept() {
        let queue = queue(10);
        queue
            .schedule(
                "blog".into(),
                Instant::now(),
                request("push", Some(("blog", "1"))),
            )
            .unwrap();
        let (key, _) = queue.next().await;
        queue.done(&key, false, request("retry", None), None);
        let (key, first) = queue.next().await;
        // The lock is held elsewhere: handed back for a second from now.
        let handed_back = Instant::now();
        queue.requeue(&key, handed_back + Duration::from_secs(1), first);
        let (key, again) = queue.next().await;
        assert_eq!(Instant::now() - handed_back, Duration::from_secs(1));
        assert!(again.reasons.contains("retry"), "what it was is kept");
        // Handed back again; a push meanwhile is tried at once, merged.
        let handed_back = Instant::now();
        queue.requeue(&key, handed_back + Duration::from_secs(1), again);
        queue
            .schedule(
                key.clone(),
                Instant::now(),
                request("push", Some(("blog", "2"))),
            )
            .unwrap();
        let (again, merged) = queue.next().await;
        assert_eq!(again, "blog");
        assert_eq!(Instant::now(), handed_back);
        assert_eq!(merged.revisions["blog"], "2");
        assert!(merged.reasons.contains("retry") && merged.reasons.contains("push"));
        assert_eq!(queue.inner().failures["blog"], 1, "the backoff is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn queue_should_refuse_new_stacks_when_full_but_merge_known_ones() {
        let queue = queue(2);
        let now = Instant::now();
        queue
            .schedule("a".into(), now, request("push", None))
            .unwrap();
        queue
            .schedule("b".into(), now, request("push", None))
            .unwrap();
        assert_eq!(
            queue.schedule("c".into(), now, request("push", None)),
            Err(Full { capacity: 2 })
        );
        queue
            .schedule("a".into(), now, request("resync", None))
            .unwrap();
        assert_eq!(queue.depth(), 2);
        let (first, _) = queue.next().await;
        assert_eq!(first, "a");
        queue
            .schedule("c".into(), now, request("push", None))
            .unwrap();
    }
}
