//! An in-memory [`StateStore`] and the conformance suite every store must pass.
//!
//! [`conformance`] is public so that each backend's tests (local file here, S3
//! against moto) run the same checks, as Terraform's `statemgr.TestFull` does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::journal::encode;
use super::local::parse_journal;
use super::lock::{LockGuard, LockInfo};
use super::{
    Error, JournalSink, Operation, Outcome, PendingIntent, Record, ResourceState, Result, State,
    StateFile, StateMeta, StateStore,
};

#[derive(Debug, Default)]
struct Inner {
    snapshot: Option<String>,
    backup: Option<String>,
    journal: Option<Vec<String>>,
    lock: Option<LockInfo>,
}

/// State held in memory, serialized as the file backend would write it.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock poisoned")
    }
}

struct MemoryJournal {
    inner: Arc<Mutex<Inner>>,
}

impl JournalSink for MemoryJournal {
    fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("memory store lock poisoned");
        let journal = inner.journal.get_or_insert_with(Vec::new);
        let text = std::str::from_utf8(batch).map_err(std::io::Error::other)?;
        journal.extend(text.lines().map(str::to_owned));
        Ok(())
    }
}

struct MemoryLock {
    inner: Arc<Mutex<Inner>>,
    info: LockInfo,
}

#[async_trait]
impl LockGuard for MemoryLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    async fn release(self: Box<Self>) -> Result<()> {
        self.inner.lock().expect("memory store lock poisoned").lock = None;
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn load(&self) -> Result<Option<State>> {
        let inner = self.inner();
        let snapshot = inner
            .snapshot
            .as_deref()
            .map(|text| StateFile::parse(text, "memory"))
            .transpose()?;
        let Some(lines) = &inner.journal else {
            return Ok(snapshot);
        };
        let records = parse_journal(&lines.join("\n"));
        Ok(super::replay(snapshot, records))
    }

    async fn persist(&self, state: &State) -> Result<()> {
        let mut inner = self.inner();
        let current = inner
            .snapshot
            .as_deref()
            .map(|text| StateFile::parse(text, "memory"))
            .transpose()?;
        let found = current.as_ref().map_or(0, |current| current.serial);
        if current
            .as_ref()
            .is_some_and(|current| current.lineage != state.lineage)
            || state.serial != found + 1
        {
            return Err(Error::Conflict {
                expected_lineage: state.lineage,
                expected_serial: state.serial - 1,
                found_serial: found,
            });
        }
        inner.backup = inner.snapshot.take();
        inner.snapshot = Some(StateFile::render(state));
        inner.journal = None;
        Ok(())
    }

    async fn open_journal(&self, base: StateMeta, stack: &str) -> Result<Box<dyn JournalSink>> {
        let begin = serde_json::to_string(&Record::Begin {
            base,
            stack: stack.to_owned(),
        })
        .expect("record serializes");
        self.inner().journal = Some(vec![begin]);
        Ok(Box::new(MemoryJournal {
            inner: Arc::clone(&self.inner),
        }))
    }

    async fn lock(&self, holder: LockInfo, timeout: Duration) -> Result<Box<dyn LockGuard>> {
        let wait = crate::backoff::Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(200),
            deadline: timeout,
        };
        let taken = crate::backoff::poll(wait, || {
            let mut inner = self.inner();
            let taken = inner.lock.is_none();
            if taken {
                inner.lock = Some(holder.clone());
            }
            async move { Ok::<_, Error>(taken.then_some(())) }
        })
        .await;
        match taken {
            Ok(()) => Ok(Box::new(MemoryLock {
                inner: Arc::clone(&self.inner),
                info: holder,
            })),
            Err(crate::backoff::Error::Failed(error)) => Err(error),
            Err(crate::backoff::Error::Timeout { .. }) => Err(Error::Locked {
                holder: self.inner().lock.clone().unwrap_or(holder),
                lapses: None,
            }),
        }
    }

    async fn backup(&self) -> Result<Option<State>> {
        self.inner()
            .backup
            .as_deref()
            .map(|text| StateFile::parse(text, "memory backup"))
            .transpose()
    }
}

/// A store whose journal commits take `delay` longer, as on a disk with slow
/// fsyncs: tests and the benchmark use it to show group commit at work.
#[derive(Debug)]
pub struct SlowJournal<S> {
    /// The wrapped store.
    pub inner: S,
    /// Extra time per group commit.
    pub delay: Duration,
}

struct SlowSink {
    inner: Box<dyn JournalSink>,
    delay: Duration,
}

impl JournalSink for SlowSink {
    fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        self.inner.append(batch)?;
        // Emulates the disk: this runs on the journal's own thread, never on the runtime.
        std::thread::sleep(self.delay);
        Ok(())
    }
}

#[async_trait]
impl<S: StateStore> StateStore for SlowJournal<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn load(&self) -> Result<Option<State>> {
        self.inner.load().await
    }

    async fn persist(&self, state: &State) -> Result<()> {
        self.inner.persist(state).await
    }

    async fn open_journal(&self, base: StateMeta, stack: &str) -> Result<Box<dyn JournalSink>> {
        let inner = self.inner.open_journal(base, stack).await?;
        Ok(Box::new(SlowSink {
            inner,
            delay: self.delay,
        }))
    }

    async fn lock(&self, holder: LockInfo, timeout: Duration) -> Result<Box<dyn LockGuard>> {
        self.inner.lock(holder, timeout).await
    }

    async fn backup(&self) -> Result<Option<State>> {
        self.inner.backup().await
    }
}

fn sample_resource(id: &str) -> ResourceState {
    let mut attributes = crate::value::Attrs::new();
    attributes.insert("name".into(), id.into());
    ResourceState {
        kind: "log_group".into(),
        id: id.to_owned(),
        attributes,
        dependencies: Vec::new(),
    }
}

/// Runs the checks every [`StateStore`] must pass. `make` returns a fresh, empty
/// store each time it is called. Panics with a description on the first failure.
pub async fn conformance<S: StateStore, F: Fn() -> S>(make: F) {
    snapshots_round_trip_and_bump_serial(make()).await;
    journal_replays_after_a_crash(make()).await;
    journal_is_retired_by_the_snapshot_that_folds_it(make()).await;
    first_apply_journal_replays_without_a_snapshot(make()).await;
    lock_excludes_and_names_its_holder(make()).await;
}

async fn snapshots_round_trip_and_bump_serial(store: impl StateStore) {
    assert!(
        store.load().await.unwrap().is_none(),
        "a new store must load as empty"
    );
    let mut state = State::new("conformance");
    state.serial = 1;
    state
        .resources
        .insert("log_group.a".parse().unwrap(), sample_resource("a"));
    store.persist(&state).await.unwrap();
    assert_eq!(
        store.load().await.unwrap().as_ref(),
        Some(&state),
        "a persisted state must load back unchanged"
    );
    assert!(
        matches!(store.persist(&state).await, Err(Error::Conflict { .. })),
        "writing the same serial twice must conflict"
    );
    let mut skipped = state.clone();
    skipped.serial = 3;
    assert!(
        matches!(store.persist(&skipped).await, Err(Error::Conflict { .. })),
        "a serial gap must conflict"
    );
    let mut other_lineage = state.clone();
    other_lineage.lineage = Uuid::new_v4();
    other_lineage.serial = 2;
    assert!(
        matches!(
            store.persist(&other_lineage).await,
            Err(Error::Conflict { .. })
        ),
        "another lineage must conflict"
    );
    let mut next = state.clone();
    next.serial = 2;
    next.resources
        .insert("log_group.b".parse().unwrap(), sample_resource("b"));
    store.persist(&next).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(next));
    assert_eq!(
        store.backup().await.unwrap(),
        Some(state),
        "the previous snapshot must be kept as backup"
    );
}

async fn journal_replays_after_a_crash(store: impl StateStore) {
    let mut state = State::new("conformance");
    state.serial = 1;
    store.persist(&state).await.unwrap();
    let created = Uuid::new_v4();
    let interrupted = Uuid::new_v4();
    let addr_a: crate::addr::ResourceAddr = "log_group.a".parse().unwrap();
    let addr_b: crate::addr::ResourceAddr = "log_group.b".parse().unwrap();
    let mut sink = store
        .open_journal(state.meta(), &state.stack)
        .await
        .unwrap();
    let intent = |intent, addr: &crate::addr::ResourceAddr| {
        Record::Intent(PendingIntent {
            intent,
            addr: addr.clone(),
            operation: Operation::Create,
            attributes: Default::default(),
        })
    };
    sink.append(&encode(&[
        intent(created, &addr_a),
        intent(interrupted, &addr_b),
    ]))
    .unwrap();
    sink.append(&encode(&[Record::Outcome {
        intent: created,
        addr: addr_a.clone(),
        result: Outcome::Written {
            resource: sample_resource("a"),
        },
    }]))
    .unwrap();
    drop(sink); // the crash: no fold, no persist
    let loaded = store.load().await.unwrap().expect("state after crash");
    assert_eq!(loaded.serial, 1, "replay must not bump the serial");
    assert_eq!(
        loaded.resources.get(&addr_a),
        Some(&sample_resource("a")),
        "a journaled outcome must survive a crash"
    );
    assert_eq!(
        loaded.pending.len(),
        1,
        "an intent without outcome must be pending"
    );
    assert_eq!(loaded.pending[0].intent, interrupted);
    loaded.validate().unwrap();
}

async fn journal_is_retired_by_the_snapshot_that_folds_it(store: impl StateStore) {
    let mut state = State::new("conformance");
    state.serial = 1;
    store.persist(&state).await.unwrap();
    let addr: crate::addr::ResourceAddr = "log_group.a".parse().unwrap();
    let id = Uuid::new_v4();
    let mut sink = store
        .open_journal(state.meta(), &state.stack)
        .await
        .unwrap();
    sink.append(&encode(&[Record::Outcome {
        intent: id,
        addr: addr.clone(),
        result: Outcome::Written {
            resource: sample_resource("a"),
        },
    }]))
    .unwrap();
    drop(sink);
    let mut folded = store.load().await.unwrap().unwrap();
    folded.serial = 2;
    store.persist(&folded).await.unwrap();
    let mut removed = store.load().await.unwrap().unwrap();
    assert_eq!(removed.serial, 2);
    removed.resources.remove(&addr);
    removed.serial = 3;
    store.persist(&removed).await.unwrap();
    let loaded = store.load().await.unwrap().unwrap();
    assert!(
        loaded.resources.is_empty(),
        "a folded journal must not be replayed again"
    );
}

async fn first_apply_journal_replays_without_a_snapshot(store: impl StateStore) {
    let state = State::new("conformance");
    let addr: crate::addr::ResourceAddr = "log_group.a".parse().unwrap();
    let mut sink = store
        .open_journal(state.meta(), &state.stack)
        .await
        .unwrap();
    sink.append(&encode(&[Record::Outcome {
        intent: Uuid::new_v4(),
        addr: addr.clone(),
        result: Outcome::Written {
            resource: sample_resource("a"),
        },
    }]))
    .unwrap();
    drop(sink);
    let loaded = store
        .load()
        .await
        .unwrap()
        .expect("a journal without snapshot must load");
    assert_eq!(loaded.lineage, state.lineage);
    assert_eq!(loaded.serial, 0);
    assert!(loaded.resources.contains_key(&addr));
}

async fn lock_excludes_and_names_its_holder(store: impl StateStore) {
    let first = store
        .lock(LockInfo::current("jaam apply"), Duration::ZERO)
        .await
        .unwrap();
    match store
        .lock(LockInfo::current("jaam plan"), Duration::from_millis(50))
        .await
    {
        Err(Error::Locked { holder, .. }) => {
            assert_eq!(
                holder.command, "jaam apply",
                "the lock error must name the holder's command"
            );
            assert_eq!(holder.id, first.info().id);
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second lock must not be granted while the first is held"),
    }
    first.release().await.unwrap();
    let again = store
        .lock(LockInfo::current("jaam apply"), Duration::ZERO)
        .await
        .unwrap();
    again.release().await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LocalStore;

    #[tokio::test]
    async fn memory_store_should_pass_conformance() {
        conformance(MemoryStore::new).await;
    }

    #[tokio::test]
    async fn local_store_should_pass_conformance() {
        let directory = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        conformance(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            LocalStore::new(directory.path().join(format!("s{n}.json")))
        })
        .await;
    }

    #[tokio::test]
    async fn local_snapshot_should_be_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let store = LocalStore::new(directory.path().join("jaam.state.json"));
        let mut state = State::new("s");
        state.serial = 1;
        store.persist(&state).await.unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn every_prefix_of_a_journal_should_load_and_validate() {
        let directory = tempfile::tempdir().unwrap();
        let store = LocalStore::new(directory.path().join("jaam.state.json"));
        let mut state = State::new("s");
        state.serial = 1;
        store.persist(&state).await.unwrap();
        let mut sink = store.open_journal(state.meta(), "s").await.unwrap();
        for n in 0..5 {
            let addr: crate::addr::ResourceAddr = format!("log_group.g{n}").parse().unwrap();
            let intent = Uuid::new_v4();
            sink.append(&encode(&[
                Record::Intent(PendingIntent {
                    intent,
                    addr: addr.clone(),
                    operation: Operation::Create,
                    attributes: Default::default(),
                }),
                Record::Outcome {
                    intent,
                    addr,
                    result: Outcome::Written {
                        resource: sample_resource(&format!("g{n}")),
                    },
                },
            ]))
            .unwrap();
        }
        drop(sink);
        let full = std::fs::read(store.journal_path()).unwrap();
        let mut previous = 0;
        for cut in 0..=full.len() {
            std::fs::write(store.journal_path(), &full[..cut]).unwrap();
            let loaded = store.load().await.unwrap().expect("every prefix loads");
            loaded.validate().unwrap();
            assert!(
                loaded.resources.len() >= previous,
                "a longer prefix never loses a resource"
            );
            previous = loaded.resources.len();
        }
        assert_eq!(previous, 5);
    }

    #[tokio::test]
    async fn local_store_should_see_a_write_made_by_another_process() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("jaam.state.json");
        let (ours, theirs) = (LocalStore::new(&path), LocalStore::new(&path));
        let mut state = State::new("s");
        state.serial = 1;
        ours.persist(&state).await.unwrap();
        let mut their_state = theirs.load().await.unwrap().unwrap();
        their_state.serial = 2;
        their_state
            .resources
            .insert("log_group.x".parse().unwrap(), sample_resource("x"));
        theirs.persist(&their_state).await.unwrap();
        state.serial = 2;
        let error = ours.persist(&state).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Conflict {
                    found_serial: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            ours.load().await.unwrap().unwrap(),
            their_state,
            "the other writer's state is intact"
        );
    }

    #[test]
    fn state_file_should_reject_unknown_versions() {
        let error = StateFile::parse(r#"{"version": 99}"#, "x").unwrap_err();
        assert!(matches!(
            error,
            Error::UnsupportedVersion { version: 99, .. }
        ));
    }
}
