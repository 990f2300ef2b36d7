//! State: what jaam created, one JSON document per stack, plus the journal of an
//! apply in progress.
//!
//! # Format
//! A snapshot is a [`StateFile`]: `version` (the format, currently 1), `lineage`
//! (a uuid fixed when the stack's first state is written), `serial` (bumped on
//! every snapshot write), `stack`, and per address the kind, cloud id, attributes
//! and dependencies. Readers are per format version with upgrade functions
//! between them ([`StateFile::parse`]). Sensitive attributes are stored only as
//! fingerprints ([`crate::value::Secret::fingerprint`]).
//!
//! # The journal
//! During an apply, each resource operation appends [`Record`]s to an append-only
//! journal beside the snapshot: an intent before the cloud call and an outcome
//! after it. Records go through one writer that batches whatever is queued into
//! a single write + fsync ("group commit"), so ten parallel operations share one
//! fsync instead of rewriting the whole state per resource as Terraform does.
//! At the end the journal is folded into a new snapshot (serial + 1) and removed;
//! after a crash, loading replays it ([`fold`]). Intents without an outcome
//! survive into the loaded state as [`State::pending`], which the next plan
//! resolves by finding the resource through its ownership tags.
//!
//! # Guarantees
//! - An outcome is durable before the engine reports its resource done.
//! - A snapshot write is atomic: readers see the old or the new document, never a
//!   mix; the previous snapshot is kept as a backup.
//! - Every prefix of the journal loads: a torn last line (a crash mid-write) is
//!   ignored, and a journal already folded into the snapshot is recognised by its
//!   base serial and skipped.

mod journal;
mod local;
pub mod lock;
#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod s3;
pub mod testing;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use journal::{Journal, JournalSink, encode};
pub use local::LocalStore;
pub use lock::{LockGuard, LockInfo};

use crate::addr::ResourceAddr;
use crate::value::Attrs;

/// The current state format version.
pub const FORMAT_VERSION: u32 = 1;

/// Which state a plan was made against: a plan applies only to the same lineage and serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The stack's lineage.
    pub lineage: Uuid,
    /// The snapshot serial.
    pub serial: u64,
}

/// One resource jaam manages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// Its kind.
    pub kind: String,
    /// The cloud's id.
    pub id: String,
    /// Arguments and computed attributes as last seen.
    pub attributes: Attrs,
    /// The resources it depended on when last applied (destroy order).
    #[serde(default)]
    pub dependencies: Vec<ResourceAddr>,
}

/// A journal intent that has no outcome: an operation interrupted by a crash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingIntent {
    /// The intent id, written into the `jaam:intent` tag.
    pub intent: Uuid,
    /// The resource.
    pub addr: ResourceAddr,
    /// What was being done.
    pub operation: Operation,
    /// The attributes being written (for creates: how to find it again).
    #[serde(default)]
    pub attributes: Attrs,
}

/// A resource operation recorded in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A create call.
    Create,
    /// An in-place update.
    Update,
    /// A delete call.
    Delete,
}

/// The state of one stack, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The lineage.
    pub lineage: Uuid,
    /// The serial of the snapshot this state was read from (or will be written as).
    pub serial: u64,
    /// The stack name.
    pub stack: String,
    /// Managed resources.
    pub resources: BTreeMap<ResourceAddr, ResourceState>,
    /// Interrupted operations awaiting resolution.
    pub pending: Vec<PendingIntent>,
    /// The generation of the lease under which this snapshot was written, for
    /// stores with expiring leases (S3): a holder whose lease was taken over
    /// cannot write over it. `None` for stores with OS locks.
    pub lease_generation: Option<u64>,
    /// Old objects of create-then-delete replacements whose delete has not
    /// happened yet (a dependent failed, the apply was cancelled or crashed):
    /// the next apply deletes them.
    pub deposed: Vec<Deposed>,
}

/// The old object of a create-then-delete replacement, awaiting deletion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deposed {
    /// The address it was replaced under.
    pub addr: ResourceAddr,
    /// The object as last recorded.
    pub resource: ResourceState,
}

impl State {
    /// An empty state for a new stack (serial 0: nothing written yet).
    pub fn new(stack: impl Into<String>) -> Self {
        Self {
            lineage: Uuid::new_v4(),
            serial: 0,
            stack: stack.into(),
            resources: BTreeMap::new(),
            pending: Vec::new(),
            lease_generation: None,
            deposed: Vec::new(),
        }
    }

    /// Its lineage and serial.
    pub fn meta(&self) -> StateMeta {
        StateMeta {
            lineage: self.lineage,
            serial: self.serial,
        }
    }

    /// Checks internal consistency: every key's kind matches its record, ids are
    /// set, dependencies name managed resources.
    ///
    /// # Errors
    /// A description of the first inconsistency.
    pub fn validate(&self) -> Result<(), String> {
        for (addr, resource) in &self.resources {
            if addr.kind() != resource.kind {
                return Err(format!(
                    "`{addr}` is recorded with kind `{}`",
                    resource.kind
                ));
            }
            if resource.id.is_empty() {
                return Err(format!("`{addr}` has an empty id"));
            }
        }
        Ok(())
    }
}

/// The serialized form of [`State`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// The format version.
    pub version: u32,
    /// The lineage.
    pub lineage: Uuid,
    /// The serial.
    pub serial: u64,
    /// The stack.
    pub stack: String,
    /// Managed resources.
    pub resources: BTreeMap<ResourceAddr, ResourceState>,
    /// Interrupted operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingIntent>,
    /// The lease generation it was written under (S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_generation: Option<u64>,
    /// Replaced objects awaiting deletion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deposed: Vec<Deposed>,
}

impl StateFile {
    /// Parses a snapshot of any supported version, upgrading it to the current one.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for unparsable text; [`Error::UnsupportedVersion`] for a
    /// version this build does not know (written by a newer jaam).
    pub fn parse(text: &str, origin: &str) -> Result<State> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let corrupt = |source| Error::Corrupt {
            origin: origin.to_owned(),
            source,
        };
        let probe: Probe = serde_json::from_str(text).map_err(corrupt)?;
        match probe.version {
            // Version 1 is current; future versions add `upgrade_v1_to_v2` here.
            1 => {
                let file: StateFile = serde_json::from_str(text).map_err(corrupt)?;
                Ok(file.into())
            }
            version => Err(Error::UnsupportedVersion {
                origin: origin.to_owned(),
                version,
            }),
        }
    }

    /// Reads only the lineage and serial of a snapshot (cheap: resources are skipped).
    ///
    /// # Errors
    /// As [`StateFile::parse`].
    pub fn parse_meta(text: &str, origin: &str) -> Result<StateMeta> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
            lineage: Uuid,
            serial: u64,
        }
        let probe: Probe = serde_json::from_str(text).map_err(|source| Error::Corrupt {
            origin: origin.to_owned(),
            source,
        })?;
        if probe.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                origin: origin.to_owned(),
                version: probe.version,
            });
        }
        Ok(StateMeta {
            lineage: probe.lineage,
            serial: probe.serial,
        })
    }

    /// Serializes pretty-printed with a trailing newline.
    pub fn render(state: &State) -> String {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u32,
            lineage: &'a Uuid,
            serial: u64,
            stack: &'a str,
            resources: &'a BTreeMap<ResourceAddr, ResourceState>,
            #[serde(skip_serializing_if = "<[PendingIntent]>::is_empty")]
            pending: &'a [PendingIntent],
            #[serde(skip_serializing_if = "Option::is_none")]
            lease_generation: Option<u64>,
            #[serde(skip_serializing_if = "<[Deposed]>::is_empty")]
            deposed: &'a [Deposed],
        }
        let file = Borrowed {
            version: FORMAT_VERSION,
            lineage: &state.lineage,
            serial: state.serial,
            stack: &state.stack,
            resources: &state.resources,
            pending: &state.pending,
            lease_generation: state.lease_generation,
            deposed: &state.deposed,
        };
        let mut text = serde_json::to_string_pretty(&file).expect("state serializes");
        text.push('\n');
        text
    }
}

impl From<State> for StateFile {
    fn from(state: State) -> Self {
        Self {
            version: FORMAT_VERSION,
            lineage: state.lineage,
            serial: state.serial,
            stack: state.stack,
            resources: state.resources,
            pending: state.pending,
            lease_generation: state.lease_generation,
            deposed: state.deposed,
        }
    }
}

impl From<StateFile> for State {
    fn from(file: StateFile) -> Self {
        Self {
            lineage: file.lineage,
            serial: file.serial,
            stack: file.stack,
            resources: file.resources,
            pending: file.pending,
            lease_generation: file.lease_generation,
            deposed: file.deposed,
        }
    }
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The first record: which snapshot the journal applies to.
    Begin {
        /// The snapshot's lineage and serial (serial 0: no snapshot yet).
        base: StateMeta,
        /// The stack.
        stack: String,
    },
    /// Written before a cloud call.
    Intent(PendingIntent),
    /// Written after a cloud call.
    Outcome {
        /// The intent it answers.
        intent: Uuid,
        /// The resource.
        addr: ResourceAddr,
        /// What happened.
        result: Outcome,
    },
}

/// The result of one resource operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The resource exists with these attributes.
    Written {
        /// Its record.
        resource: ResourceState,
    },
    /// The resource no longer exists.
    Removed,
    /// The call failed; the resource is as it was before.
    Failed {
        /// Why.
        message: String,
    },
    /// A create-then-delete replacement made its new object; the old one is
    /// deposed until its delete is recorded.
    Replaced {
        /// The new object's record.
        resource: ResourceState,
        /// The old object, to delete.
        deposed: ResourceState,
    },
    /// A deposed object (the old side of a create-then-delete replacement) was deleted.
    DeposedRemoved {
        /// Its cloud id.
        id: String,
    },
}

/// The state after a crash: `snapshot` with the journal `records` replayed when
/// the journal was begun on it (or on no snapshot yet). A journal begun on an
/// older snapshot was folded already and is ignored; an empty or torn-at-birth
/// journal changes nothing.
pub fn replay(snapshot: Option<State>, records: Vec<Record>) -> Option<State> {
    let Some(Record::Begin { base, stack }) = records.first().cloned() else {
        return snapshot;
    };
    let mut state = match snapshot {
        Some(state) if state.meta() == base => state,
        Some(state) => return Some(state),
        None if base.serial == 0 => State {
            lineage: base.lineage,
            ..State::new(stack)
        },
        None => return None,
    };
    fold(&mut state, records);
    Some(state)
}

/// Applies journal `records` to `state` (replay after a crash, or the fold at the end
/// of an apply). Records for another base are ignored by the caller.
pub fn fold(state: &mut State, records: impl IntoIterator<Item = Record>) {
    for record in records {
        match record {
            Record::Begin { .. } => {}
            Record::Intent(intent) => state.pending.push(intent),
            Record::Outcome {
                intent,
                addr,
                result,
            } => {
                state.pending.retain(|pending| pending.intent != intent);
                match result {
                    Outcome::Written { resource } => {
                        state.resources.insert(addr, resource);
                    }
                    Outcome::Replaced { resource, deposed } => {
                        state.deposed.push(Deposed {
                            addr: addr.clone(),
                            resource: deposed,
                        });
                        state.resources.insert(addr, resource);
                    }
                    Outcome::DeposedRemoved { id } => {
                        state.deposed.retain(|deposed| deposed.resource.id != id);
                    }
                    Outcome::Removed => {
                        state.resources.remove(&addr);
                    }
                    Outcome::Failed { .. } => {}
                }
            }
        }
    }
}

/// Errors of state stores.
///
/// [`Error::Locked`] is retryable (after the holder finishes); the rest are not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or object.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stored document is not valid state.
    #[error("state `{origin}` is not valid JSON state")]
    Corrupt {
        /// The file or object.
        origin: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer jaam.
    #[error("state `{origin}` has format version {version}, which this jaam does not know")]
    UnsupportedVersion {
        /// The file or object.
        origin: String,
        /// The version found.
        version: u32,
    },
    /// Someone else holds the lock.
    #[error("state is locked by {holder}")]
    Locked {
        /// Who holds it.
        holder: LockInfo,
        /// When an expiring lease (S3) lapses unless its holder renews it;
        /// `None` for OS locks, released when the holder exits.
        lapses: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// `force-unlock` named a lease that is not the live one.
    #[error("`{given}` is not the id of the live lease: state is locked by {holder}")]
    NotTheLease {
        /// The id given.
        given: Uuid,
        /// Who holds the live lease (its id is the one to give).
        holder: LockInfo,
    },
    /// `force-unlock` found no live lease.
    #[error("state `{origin}` is not locked{last}")]
    NotLocked {
        /// The state.
        origin: String,
        /// Who held the last lease and when it lapsed, if any (text).
        last: String,
    },
    /// The S3 bucket of the state is missing, or the credentials may not use it.
    #[error("bucket `{bucket}` does not exist or is not yours")]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// The snapshot changed since it was read (another writer).
    #[error(
        "state changed underneath you: expected lineage {expected_lineage} serial {expected_serial}, found serial {found_serial}"
    )]
    Conflict {
        /// The lineage the writer expected.
        expected_lineage: Uuid,
        /// The serial the writer expected to replace.
        expected_serial: u64,
        /// The serial found.
        found_serial: u64,
    },
    /// This process's lease was taken over by another holder: it may not write.
    #[error(
        "the state lease (generation {generation}) was taken over by another process; this write is refused"
    )]
    Fenced {
        /// The generation this process held.
        generation: u64,
    },
    /// The journal could not be written; the apply must stop.
    #[error("journal write failed")]
    Journal(#[source] std::io::Error),
}

/// State result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where state lives: a local file, S3, or memory (tests).
///
/// Every implementation passes [`testing::conformance`].
#[async_trait]
pub trait StateStore: Send + Sync {
    /// A human name for messages (`./jaam.state.json`).
    fn describe(&self) -> String;

    /// The newest state: the snapshot with any unfolded journal replayed, or `None`
    /// when the stack has no state yet.
    async fn load(&self) -> Result<Option<State>>;

    /// Writes `state` as the new snapshot and retires the journal it folds. Its
    /// serial must be one more than the stored snapshot's (or 1 for the first
    /// write) with the same lineage; the previous snapshot is kept as a backup.
    async fn persist(&self, state: &State) -> Result<()>;

    /// Starts a journal for an apply on `base` (writes its `Begin` record).
    async fn open_journal(&self, base: StateMeta, stack: &str) -> Result<Box<dyn JournalSink>>;

    /// Takes the stack's write lock, waiting up to `timeout` for a holder to finish.
    async fn lock(&self, holder: LockInfo, timeout: Duration) -> Result<Box<dyn LockGuard>>;

    /// The previous snapshot, kept by the last `persist`.
    async fn backup(&self) -> Result<Option<State>>;

    /// Deploy history, oldest first (see [`crate::history`]). Stores that
    /// keep none answer empty.
    async fn deployments(&self) -> Result<Vec<crate::history::Deployment>> {
        Ok(Vec::new())
    }

    /// Adds to the deploy history (the newest [`crate::history::KEEP`] per
    /// site are kept). Callers hold the stack's lock.
    async fn record_deployments(&self, _new: &[crate::history::Deployment]) -> Result<()> {
        Ok(())
    }
}
