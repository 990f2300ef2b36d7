//! The S3 backend: state for teams, CI and several daemons, with a lease that
//! expires and fences.
//!
//! Objects, beside `KEY` (the snapshot):
//! - `KEY.lease`: who holds the stack — a [`Lease`] with holder, acquired and
//!   expiry times and a generation that grows with every acquisition.
//! - `KEY.journal/GGGGGGGGGG-SSSSSSSSSSSSSSSSSSSS/NNNNNNNNNN`: the journal of an
//!   apply on snapshot serial `S` under lease generation `G`, one object per
//!   group commit (objects are atomic: a crash never leaves a torn record).
//!
//! # Guarantees
//! - Every snapshot write is a PutObject conditional on the ETag last read
//!   (`If-Match`), or on absence for the first (`If-None-Match: *`): a writer
//!   that did not see the newest snapshot gets "state changed underneath you"
//!   instead of overwriting it.
//! - The lease is created with `If-None-Match: *` and renewed, released or taken
//!   over only with `If-Match` on its ETag. The holder renews it every third of
//!   its TTL; anyone may take it over once it has expired — a crashed holder
//!   never leaves the stack locked for longer than the TTL.
//! - **Fencing**: on taking the lease, the new holder rewrites the snapshot with
//!   its generation (folding any journal the previous holder left). The
//!   snapshot's ETag changes, so a stalled old holder that wakes up and writes
//!   is refused by `If-Match`; journal objects of an old generation are never
//!   replayed. A holder that learns its renewal failed refuses to write at all.
//! - Each journal group commit is durable (a PutObject) before the operations
//!   in it count as done: a crash loses no recorded outcome.
//!
//! # Caveats
//! Fencing needs the snapshot to change: it is rewritten (same serial, so saved
//! plans stay valid) at every acquisition.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::lock::{LockGuard, LockInfo};
use super::{Error, JournalSink, Record, Result, State, StateFile, StateMeta, StateStore};
use crate::backoff::{self, Backoff};

/// The lease object's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// This holding's id (what `jaam force-unlock` takes).
    pub id: Uuid,
    /// Who holds it.
    pub holder: LockInfo,
    /// When it was taken.
    pub acquired_at: DateTime<Utc>,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Grows by one with every acquisition.
    pub generation: u64,
    /// Its holder let it go (a lease that lapsed without this was
    /// abandoned: its holder died or lost S3 mid-reconcile; see
    /// [`LeaseWatch`]). A broken lease (`jaam force-unlock`) is not released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

#[derive(Clone, Debug)]
struct Held {
    id: Uuid,
    generation: u64,
    etag: String,
    lost: bool,
}

/// State in an S3 object.
#[derive(Clone)]
pub struct S3Store {
    config: SdkConfig,
    client: Client,
    bucket: String,
    key: String,
    ttl: Duration,
    /// The snapshot's ETag and meta as last read or written. Own mutex, never
    /// held across an await.
    seen: Arc<Mutex<Option<(String, StateMeta)>>>,
    /// The lease this store holds. Own mutex, never held across an await.
    held: Arc<Mutex<Option<Held>>>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store(s3://{}/{})", self.bucket, self.key)
    }
}

fn io(action: &'static str, path: String) -> impl FnOnce(String) -> Error {
    move |message| Error::Io {
        action,
        path,
        source: std::io::Error::other(message),
    }
}

/// An S3 failure as a state error: a missing bucket in one sentence, the
/// SDK's whole story otherwise.
fn failure<E, R>(
    action: &'static str,
    bucket: &str,
    path: String,
    error: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> Error
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    if let SdkError::ServiceError(context) = &error
        && context.err().code() == Some("NoSuchBucket")
    {
        return Error::NoBucket {
            bucket: bucket.to_owned(),
        };
    }
    io(action, path)(aws_sdk_s3::error::DisplayErrorContext(error).to_string())
}

fn is_precondition_failed<E, R>(
    error: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match error {
        SdkError::ServiceError(context) => {
            matches!(
                context.err().code(),
                Some("PreconditionFailed" | "ConditionalRequestConflict")
            )
        }
        _ => false,
    }
}

fn is_not_found<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match error {
        SdkError::ServiceError(context) => {
            matches!(context.err().code(), Some("NoSuchKey" | "NotFound"))
        }
        _ => false,
    }
}

impl S3Store {
    /// A store for `s3://bucket/key` with a lease TTL of `ttl`.
    pub fn new(
        config: &SdkConfig,
        bucket: impl Into<String>,
        key: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        let s3 = crate::providers::aws::instrumented!(
            aws_sdk_s3::config::Builder::from(config),
            None::<crate::providers::aws::CallCounter>
        )
        .force_path_style(true)
        .build();
        Self {
            config: config.clone(),
            client: Client::from_conf(s3),
            bucket: bucket.into(),
            key: key.into(),
            ttl,
            seen: Arc::default(),
            held: Arc::default(),
        }
    }

    /// Parses `s3://bucket/key`.
    pub fn parse_url(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_owned(), key.to_owned()))
    }

    fn backup_key(&self) -> String {
        format!("{}.backup", self.key)
    }

    fn history_key(&self) -> String {
        format!("{}.history", self.key)
    }

    /// The deploy history object and its ETag.
    async fn read_history(&self) -> Result<Option<(Vec<crate::history::Deployment>, String)>> {
        let Some((body, etag)) = self.get(&self.history_key()).await? else {
            return Ok(None);
        };
        let kept = serde_json::from_slice(&body).map_err(|source| Error::Corrupt {
            origin: self.url(&self.history_key()),
            source,
        })?;
        Ok(Some((kept, etag)))
    }

    fn lease_key(&self) -> String {
        format!("{}.lease", self.key)
    }

    fn journal_prefix(&self, generation: u64, serial: u64) -> String {
        format!("{}.journal/{generation:010}-{serial:020}/", self.key)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// An object's body and ETag, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(answer) => {
                let etag = answer.e_tag().unwrap_or_default().to_owned();
                let body = answer
                    .body
                    .collect()
                    .await
                    .map_err(|e| io("read", self.url(key))(e.to_string()))?;
                Ok(Some((body.to_vec(), etag)))
            }
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(failure("read", &self.bucket, self.url(key), error)),
        }
    }

    /// A conditional put: `Ok(Some(etag))`, or `Ok(None)` when the condition failed.
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> Result<Option<String>> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        request = match if_match {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(answer) => Ok(Some(answer.e_tag().unwrap_or_default().to_owned())),
            Err(error) if is_precondition_failed(&error) => Ok(None),
            Err(error) => Err(failure("write", &self.bucket, self.url(key), error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failure("list", &self.bucket, self.url(prefix), e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| failure("delete", &self.bucket, self.url(key), e))?;
        }
        Ok(())
    }

    async fn read_lease(&self) -> Result<Option<(Lease, String)>> {
        let Some((body, etag)) = self.get(&self.lease_key()).await? else {
            return Ok(None);
        };
        let lease = serde_json::from_slice(&body).map_err(|source| Error::Corrupt {
            origin: self.url(&self.lease_key()),
            source,
        })?;
        Ok(Some((lease, etag)))
    }

    /// The snapshot, its ETag, and the journal objects that apply to it.
    async fn read(&self) -> Result<Option<(State, Option<String>, Vec<String>)>> {
        let snapshot = match self.get(&self.key).await? {
            Some((body, etag)) => {
                let text = String::from_utf8_lossy(&body);
                Some((StateFile::parse(&text, &self.url(&self.key))?, etag))
            }
            None => None,
        };
        let (state, etag) = match snapshot {
            Some((state, etag)) => (state, Some(etag)),
            None => {
                // No snapshot yet: a first apply's journal, if any (serial 0, newest generation).
                let all = self.list(&format!("{}.journal/", self.key)).await?;
                let Some(first) = all
                    .iter()
                    .rev()
                    .find(|key| key.contains("-00000000000000000000/"))
                else {
                    return Ok(None);
                };
                let prefix = first[..first.rfind('/').unwrap_or(0) + 1].to_owned();
                let journal: Vec<String> = all
                    .into_iter()
                    .filter(|key| key.starts_with(&prefix))
                    .collect();
                let records = self.records(&journal).await?;
                let Some(state) = super::replay(None, records) else {
                    return Ok(None);
                };
                return Ok(Some((state, None, journal)));
            }
        };
        *self.seen.lock().expect("seen mutex") = etag.clone().map(|etag| (etag, state.meta()));
        let generation = state.lease_generation.unwrap_or(0);
        let journal = self
            .list(&self.journal_prefix(generation, state.serial))
            .await?;
        let records = self.records(&journal).await?;
        let state = super::replay(Some(state), records).expect("a snapshot replays to a state");
        Ok(Some((state, etag, journal)))
    }

    async fn records(&self, keys: &[String]) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for key in keys {
            if let Some((body, _)) = self.get(key).await? {
                out.extend(super::local::parse_journal(&String::from_utf8_lossy(&body)));
            }
        }
        Ok(out)
    }

    fn generation(&self) -> Result<Option<u64>> {
        match &*self.held.lock().expect("held mutex") {
            Some(held) if held.lost => Err(Error::Fenced {
                generation: held.generation,
            }),
            Some(held) => Ok(Some(held.generation)),
            None => Ok(None),
        }
    }

    /// Writes `state` over the snapshot last seen (`If-Match`), or as the first one.
    async fn write(&self, state: &State, expected: Option<&str>) -> Result<String> {
        let body = StateFile::render(state).into_bytes();
        match self.put(&self.key, body, expected).await? {
            Some(etag) => {
                *self.seen.lock().expect("seen mutex") = Some((etag.clone(), state.meta()));
                Ok(etag)
            }
            None => {
                let found = self.get(&self.key).await?.and_then(|(body, _)| {
                    StateFile::parse_meta(&String::from_utf8_lossy(&body), "")
                        .ok()
                        .map(|meta| meta.serial)
                });
                Err(Error::Conflict {
                    expected_lineage: state.lineage,
                    expected_serial: state.serial.saturating_sub(1),
                    found_serial: found.unwrap_or(0),
                })
            }
        }
    }

    /// After taking the lease: fold whatever journal the previous holder left and
    /// rewrite the snapshot under this generation (the fence).
    async fn fence(&self, generation: u64) -> Result<()> {
        let Some((mut state, etag, journal)) = self.read().await? else {
            return Ok(());
        };
        let folded = !journal.is_empty();
        if folded || etag.is_none() {
            state.serial += 1;
        }
        state.lease_generation = Some(generation);
        self.write(&state, etag.as_deref()).await?;
        self.delete_keys(&journal).await
    }

    /// Breaks the lease `id` whoever holds it (`jaam force-unlock`), returning
    /// who held it.
    ///
    /// # Errors
    /// [`Error::Io`] when S3 fails; [`Error::NotLocked`] when no live lease
    /// holds the state (nothing to break: it names the last holder and when
    /// its lease lapsed); [`Error::NotTheLease`] when `id` is not the live
    /// lease's (it is left alone; the error names the id to give).
    pub async fn force_unlock(&self, id: Uuid) -> Result<LockInfo> {
        let origin = self.url(&self.key);
        let Some((mut lease, etag)) = self.read_lease().await? else {
            return Err(Error::NotLocked {
                origin,
                last: String::new(),
            });
        };
        let now = Utc::now();
        if lease.expires_at <= now {
            return Err(Error::NotLocked {
                origin,
                last: format!(
                    " (the last lease, of {}, lapsed at {})",
                    lease.holder,
                    lease.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            });
        }
        if lease.id != id {
            return Err(Error::NotTheLease {
                given: id,
                holder: lease.holder,
            });
        }
        lease.expires_at = now;
        let body = serde_json::to_vec(&lease).expect("lease serializes");
        self.put(&self.lease_key(), body, Some(&etag)).await?;
        Ok(lease.holder)
    }

    /// Takes the lease if it is free or lapsed: `Ok(Err(lease))` names the
    /// live lease that holds it — read again after losing a race, so the
    /// holder reported is the one that won, never this process or an
    /// earlier, exited holder.
    async fn try_acquire(
        &self,
        holder: &LockInfo,
    ) -> Result<std::result::Result<(Lease, String), Lease>> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(60));
        let current = self.read_lease().await?;
        let (generation, condition) = match &current {
            None => (1, None),
            Some((lease, _)) if lease.expires_at > now => return Ok(Err(lease.clone())),
            Some((lease, etag)) => (lease.generation + 1, Some(etag.as_str())),
        };
        let lease = Lease {
            id: holder.id,
            holder: holder.clone(),
            acquired_at: now,
            expires_at: now + ttl,
            generation,
            released: false,
        };
        let body = serde_json::to_vec(&lease).expect("lease serializes");
        match self.put(&self.lease_key(), body, condition).await? {
            Some(etag) => Ok(Ok((lease, etag))),
            // Someone else won the race: the lease they wrote names them.
            None => match self.read_lease().await? {
                Some((winner, _)) => Ok(Err(winner)),
                // Released and removed in between: the next attempt takes it.
                None => Ok(Err(Lease {
                    expires_at: now,
                    ..lease
                })),
            },
        }
    }
}

type Put = (
    String,
    Vec<u8>,
    std::sync::mpsc::Sender<Result<Option<String>>>,
);

/// The journal sink. Its writes run on a thread of their own with its own
/// runtime and S3 client, so `append` may block whatever thread calls it (the
/// journal writer's, or a test's) without needing the caller's runtime.
struct S3Journal {
    store: S3Store,
    prefix: String,
    sequence: u64,
    writes: std::sync::mpsc::Sender<Put>,
}

impl S3Journal {
    fn start(store: S3Store, prefix: String) -> Self {
        let (writes, requests) = std::sync::mpsc::channel::<Put>();
        let writer = store.clone();
        std::thread::Builder::new()
            .name("jaam-s3-journal".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("journal runtime");
                let mut writer = writer;
                let config = crate::providers::aws::instrumented!(
                    aws_sdk_s3::config::Builder::from(&writer.config),
                    None::<crate::providers::aws::CallCounter>
                )
                .force_path_style(true)
                .build();
                writer.client = Client::from_conf(config);
                while let Ok((key, body, reply)) = requests.recv() {
                    let _ = reply.send(runtime.block_on(writer.put(&key, body, None)));
                }
            })
            .expect("spawning the S3 journal thread");
        Self {
            store,
            prefix,
            sequence: 0,
            writes,
        }
    }
}

impl JournalSink for S3Journal {
    fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        if let Err(error) = self.store.generation() {
            return Err(std::io::Error::other(error.to_string()));
        }
        self.sequence += 1;
        let key = format!("{}{:010}", self.prefix, self.sequence);
        let (reply, written) = std::sync::mpsc::channel();
        self.writes
            .send((key, batch.to_vec(), reply))
            .map_err(|_| std::io::Error::other("journal thread stopped"))?;
        match written
            .recv()
            .map_err(|_| std::io::Error::other("journal thread stopped"))?
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(std::io::Error::other("journal object already exists")),
            Err(error) => Err(std::io::Error::other(error.to_string())),
        }
    }
}

struct S3Lease {
    store: S3Store,
    info: LockInfo,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for S3Lease {
    /// Dropped without `release` (a crash, a cancelled task): stop renewing, so
    /// the lease lapses after its TTL.
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

#[async_trait]
impl LockGuard for S3Lease {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    async fn release(self: Box<Self>) -> Result<()> {
        self.heartbeat.abort();
        let held = self.store.held.lock().expect("held mutex").take();
        let Some(held) = held.filter(|held| !held.lost) else {
            return Ok(());
        };
        if let Some((mut lease, etag)) = self.store.read_lease().await?
            && lease.id == held.id
        {
            lease.expires_at = Utc::now();
            lease.released = true;
            let body = serde_json::to_vec(&lease).expect("lease serializes");
            self.store
                .put(&self.store.lease_key(), body, Some(&etag))
                .await?;
        }
        Ok(())
    }
}

/// Finds the leases under a prefix that were abandoned: they lapsed
/// without their holder releasing them (it was killed, or lost S3, in the
/// middle of a reconcile). Several daemons sharing S3 state use it to take
/// over a dead peer's stacks once their leases lapse, instead of waiting
/// for the next resync.
///
/// Each [`check`](Self::check) costs a `ListObjectsV2` page per 1,000
/// objects under the prefix (a stack has its snapshot, lease and history:
/// three pages for 1,000 stacks) plus one `GetObject` per lease that lapsed
/// since the check before — a lease is read about once per lapse, however many stacks there
/// are. A lease that lapsed before the first check is not reported (a
/// daemon's start-up resync covers those).
#[derive(Debug)]
pub struct LeaseWatch {
    store: S3Store,
    prefix: String,
    /// When the watch began: leases that lapsed before are not reported.
    started: DateTime<Utc>,
    checked: DateTime<Utc>,
    /// Lease versions (key and ETag) already looked at, with when: the
    /// windows overlap by [`CLOCK_SLACK`], and a lapse is reported once.
    looked: std::collections::HashMap<(String, String), DateTime<Utc>>,
}

/// How far S3's clock may be off ours: lapses near the window's edges are
/// looked at twice rather than missed.
const CLOCK_SLACK: chrono::Duration = chrono::Duration::seconds(2);

impl LeaseWatch {
    /// Watches the leases of `s3://bucket/PREFIX*` whose TTL is `ttl`.
    pub fn new(config: &SdkConfig, bucket: &str, prefix: &str, ttl: Duration) -> Self {
        Self {
            store: S3Store::new(config, bucket, prefix, ttl),
            prefix: prefix.to_owned(),
            started: Utc::now(),
            checked: Utc::now(),
            looked: std::collections::HashMap::new(),
        }
    }

    /// The state keys (the lease key without `.lease`) whose lease was
    /// abandoned and lapsed since the last check, with the lease.
    ///
    /// # Errors
    /// [`Error::Io`] when S3 fails (the window is kept: the next check looks
    /// again).
    pub async fn check(&mut self) -> Result<Vec<(String, Lease)>> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.store.ttl).unwrap_or(chrono::Duration::MAX);
        let (from, until) = (self.checked - ttl - CLOCK_SLACK, now - ttl);
        let mut candidates = Vec::new();
        let mut pages = self
            .store
            .client
            .list_objects_v2()
            .bucket(&self.store.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                failure("list", &self.store.bucket, self.store.url(&self.prefix), e)
            })?;
            for object in page.contents() {
                let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                    continue;
                };
                // Listed without a delimiter, so any template works
                // (`jaam/{stack}/state.json`); journals and backups are
                // filtered here.
                let modified = DateTime::<Utc>::from_timestamp(modified.secs(), 0).unwrap_or(now);
                let version = (
                    key.to_owned(),
                    object.e_tag().unwrap_or_default().to_owned(),
                );
                if key.ends_with(".lease")
                    && modified > from
                    && modified <= until
                    && !self.looked.contains_key(&version)
                {
                    candidates.push(version);
                }
            }
        }
        let mut abandoned = Vec::new();
        for (key, etag) in candidates {
            let Some((body, _)) = self.store.get(&key).await? else {
                continue;
            };
            let Ok(lease) = serde_json::from_slice::<Lease>(&body) else {
                continue;
            };
            // S3's times are whole seconds: a lease may look a second older
            // than it is. One that has not lapsed yet is looked at again.
            if lease.expires_at > now {
                continue;
            }
            self.looked.insert((key.clone(), etag), now);
            if !lease.released && lease.expires_at > self.started {
                let state = key.trim_end_matches(".lease").to_owned();
                abandoned.push((state, lease));
            }
        }
        self.checked = now;
        self.looked
            .retain(|_, at| *at > now - ttl - CLOCK_SLACK - CLOCK_SLACK);
        Ok(abandoned)
    }
}

#[async_trait]
impl StateStore for S3Store {
    fn describe(&self) -> String {
        self.url(&self.key)
    }

    async fn load(&self) -> Result<Option<State>> {
        Ok(self.read().await?.map(|(state, _, _)| state))
    }

    async fn persist(&self, state: &State) -> Result<()> {
        let generation = self.generation()?;
        let seen = self.seen.lock().expect("seen mutex").clone();
        let seen = match seen {
            Some(seen) => Some(seen),
            None => self
                .read()
                .await?
                .and_then(|(state, etag, _)| etag.map(|etag| (etag, state.meta()))),
        };
        let (etag, found) = match &seen {
            Some((etag, meta)) => (Some(etag.as_str()), meta.serial),
            None => (None, 0),
        };
        let lineage_matches = seen
            .as_ref()
            .is_none_or(|(_, meta)| meta.lineage == state.lineage);
        if !lineage_matches || state.serial != found + 1 {
            return Err(Error::Conflict {
                expected_lineage: state.lineage,
                expected_serial: state.serial - 1,
                found_serial: found,
            });
        }
        let mut state = state.clone();
        state.lease_generation = generation.or(state.lease_generation);
        // The journal was opened under this holder's generation, the first
        // apply's (no snapshot yet) included.
        let base_generation = generation.unwrap_or(0);
        if let Some(etag) = etag {
            // Keep the previous snapshot (best effort: the write below is what must be exact).
            let _ = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(self.backup_key())
                .copy_source(format!("{}/{}", self.bucket, self.key))
                .copy_source_if_match(etag)
                .send()
                .await;
        }
        self.write(&state, etag).await?;
        let journal = self
            .list(&self.journal_prefix(base_generation, found))
            .await?;
        self.delete_keys(&journal).await
    }

    async fn open_journal(&self, base: StateMeta, stack: &str) -> Result<Box<dyn JournalSink>> {
        let generation = self.generation()?.unwrap_or(0);
        let mut sink = S3Journal::start(self.clone(), self.journal_prefix(generation, base.serial));
        let begin = super::journal::encode(&[Record::Begin {
            base,
            stack: stack.to_owned(),
        }]);
        let key = format!("{}{:010}", sink.prefix, 0);
        match self.put(&key, begin, None).await? {
            Some(_) => {}
            None => {
                return Err(io("write", self.url(&key))(
                    "a journal for this snapshot exists already".to_owned(),
                ));
            }
        }
        sink.sequence = 0;
        Ok(Box::new(sink))
    }

    async fn lock(&self, holder: LockInfo, timeout: Duration) -> Result<Box<dyn LockGuard>> {
        let wait = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            deadline: timeout,
        };
        let last_holder: Mutex<Option<Lease>> = Mutex::new(None);
        let outcome = backoff::poll(wait, || {
            let holder = holder.clone();
            let last = &last_holder;
            async move {
                match self.try_acquire(&holder).await? {
                    Ok(acquired) => Ok::<_, Error>(Some(acquired)),
                    Err(current) => {
                        *last.lock().expect("holder mutex") = Some(current);
                        Ok(None)
                    }
                }
            }
        })
        .await;
        let last_holder = last_holder.into_inner().expect("holder mutex");
        let (lease, etag) = match outcome {
            Ok(acquired) => acquired,
            Err(backoff::Error::Failed(error)) => return Err(error),
            Err(backoff::Error::Timeout { .. }) => {
                return Err(match last_holder {
                    Some(lease) => Error::Locked {
                        holder: lease.holder,
                        lapses: Some(lease.expires_at),
                    },
                    None => Error::Locked {
                        holder,
                        lapses: None,
                    },
                });
            }
        };
        *self.held.lock().expect("held mutex") = Some(Held {
            id: lease.id,
            generation: lease.generation,
            etag,
            lost: false,
        });
        self.fence(lease.generation).await?;
        let heartbeat = tokio::spawn(heartbeat(self.clone(), self.ttl));
        Ok(Box::new(S3Lease {
            store: self.clone(),
            info: holder,
            heartbeat,
        }))
    }

    async fn deployments(&self) -> Result<Vec<crate::history::Deployment>> {
        Ok(self
            .read_history()
            .await?
            .map(|(kept, _)| kept)
            .unwrap_or_default())
    }

    async fn record_deployments(&self, new: &[crate::history::Deployment]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        // Read, merge, write conditionally on what was read (a concurrent
        // writer makes the write fail: read again).
        for _ in 0..5 {
            let (mut kept, etag) = self.read_history().await?.unwrap_or_default();
            crate::history::merge(&mut kept, new);
            let body = serde_json::to_vec(&kept).expect("history serializes");
            let condition = (!etag.is_empty()).then_some(etag.as_str());
            if self
                .put(&self.history_key(), body, condition)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(io("write", self.url(&self.history_key()))(
            "the deploy history kept changing underneath".to_owned(),
        ))
    }

    async fn backup(&self) -> Result<Option<State>> {
        let Some((body, _)) = self.get(&self.backup_key()).await? else {
            return Ok(None);
        };
        StateFile::parse(
            &String::from_utf8_lossy(&body),
            &self.url(&self.backup_key()),
        )
        .map(Some)
    }
}

/// Renews the lease every third of its TTL; marks it lost if renewal fails.
async fn heartbeat(store: S3Store, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let held = store.held.lock().expect("held mutex").clone();
        let Some(held) = held else { return };
        let renewed = async {
            let (mut lease, etag) = store
                .read_lease()
                .await?
                .ok_or_else(|| io("renew", store.lease_key())("lease gone".to_owned()))?;
            if lease.id != held.id || lease.generation != held.generation || etag != held.etag {
                return Ok::<_, Error>(None);
            }
            lease.expires_at = Utc::now()
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
            store
                .put(
                    &store.lease_key(),
                    serde_json::to_vec(&lease).expect("lease serializes"),
                    Some(&etag),
                )
                .await
        }
        .await;
        let mut slot = store.held.lock().expect("held mutex");
        match (renewed, slot.as_mut()) {
            (Ok(Some(etag)), Some(current)) => current.etag = etag,
            (Ok(None), Some(current)) => {
                tracing::warn!(
                    generation = current.generation,
                    "state lease was taken over; this process will not write"
                );
                current.lost = true;
                return;
            }
            // A transient failure: try again at the next beat, before the lease lapses.
            (Err(error), _) => tracing::warn!(error = %error, "state lease renewal failed"),
            (_, None) => return,
        }
    }
}
