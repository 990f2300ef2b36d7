//! The local-file backend: `jaam.state.json` plus `.backup`, `.journal` and `.lock`
//! beside it.
//!
//! # Guarantees
//! - Snapshots are written to a temporary file in the same directory (mode 0600),
//!   fsynced, and renamed over the old one; the directory is fsynced after. The
//!   old snapshot is first hard-linked to `.backup`, so there is always a
//!   complete current file.
//! - The journal is one JSON record per line, appended and fdatasynced per group
//!   commit. A torn last line is ignored on load.
//! - The lock is `flock` on `.lock`, released by the kernel if the holder dies.
//! - Snapshots go through exclusively created temporary files; the journal and
//!   the lock file are opened without following symlinks (`O_NOFOLLOW`).
//! - Whoever takes the lock first folds a journal a crashed holder left into
//!   a new snapshot (serial + 1), as the S3 store does when it takes a lease
//!   over. Only then may a new apply open (and truncate) the journal: a second
//!   crash can never lose what the first one's journal held (issue 11).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::lock::{LockGuard, LockInfo};
use super::{Error, JournalSink, Record, Result, State, StateFile, StateMeta, StateStore};
use crate::backoff::{self, Backoff};

/// State in a local file.
#[derive(Clone, Debug)]
pub struct LocalStore {
    path: PathBuf,
    /// The snapshot this store last read or wrote: its meta, and the file's size and
    /// modification time then. A compare-and-swap that finds the file unchanged
    /// (same size and mtime) trusts this instead of re-parsing megabytes of state.
    /// Guarded by its own mutex, never held across an await.
    seen: std::sync::Arc<std::sync::Mutex<Option<Seen>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    meta: StateMeta,
    len: u64,
    modified: std::time::SystemTime,
}

impl LocalStore {
    /// A store at `path` (the snapshot file; siblings get suffixes).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            seen: Default::default(),
        }
    }

    /// The snapshot path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    /// The journal path.
    pub fn journal_path(&self) -> PathBuf {
        self.sibling(".journal")
    }

    /// The backup path.
    pub fn backup_path(&self) -> PathBuf {
        self.sibling(".backup")
    }

    fn lock_path(&self) -> PathBuf {
        self.sibling(".lock")
    }

    fn directory(&self) -> PathBuf {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
        move |source| Error::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    fn read_snapshot(path: &Path) -> Result<Option<State>> {
        match std::fs::read_to_string(path) {
            Ok(text) => StateFile::parse(&text, &path.display().to_string()).map(Some),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Self::io("read", path)(error)),
        }
    }

    /// The snapshot's lineage and serial, without building its resources.
    fn stat(&self) -> Option<(u64, std::time::SystemTime)> {
        let metadata = std::fs::metadata(&self.path).ok()?;
        Some((metadata.len(), metadata.modified().ok()?))
    }

    fn remember(&self, meta: StateMeta) {
        let seen = self.stat().map(|(len, modified)| Seen {
            meta,
            len,
            modified,
        });
        *self.seen.lock().expect("seen mutex") = seen;
    }

    fn read_meta(&self) -> Result<Option<StateMeta>> {
        let seen = *self.seen.lock().expect("seen mutex");
        if let (Some(seen), Some((len, modified))) = (seen, self.stat())
            && seen.len == len
            && seen.modified == modified
        {
            return Ok(Some(seen.meta));
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => StateFile::parse_meta(&text, &self.path.display().to_string()).map(Some),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Self::io("read", &self.path)(error)),
        }
    }

    fn load_blocking(&self) -> Result<Option<State>> {
        let before = self.stat();
        let snapshot = Self::read_snapshot(&self.path)?;
        if let (Some(state), Some((len, modified))) = (&snapshot, before)
            && self.stat() == before
        {
            *self.seen.lock().expect("seen mutex") = Some(Seen {
                meta: state.meta(),
                len,
                modified,
            });
        }
        let journal_path = self.journal_path();
        let text = match std::fs::read_to_string(&journal_path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(snapshot),
            Err(error) => return Err(Self::io("read", &journal_path)(error)),
        };
        let records = parse_journal(&text);
        Ok(super::replay(snapshot, records))
    }

    /// Folds a journal left by a crashed holder into a new snapshot, under
    /// the lock. A journal with nothing beyond its `Begin` (or one for another
    /// base: its snapshot was written, only the removal was cut short) is
    /// removed without a write.
    fn checkpoint_blocking(&self) -> Result<()> {
        let journal_path = self.journal_path();
        let text = match std::fs::read_to_string(&journal_path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(Self::io("read", &journal_path)(error)),
        };
        let records = parse_journal(&text);
        let snapshot = Self::read_snapshot(&self.path)?;
        let snapshot_meta = snapshot.as_ref().map(State::meta);
        let applies = match records.first() {
            Some(Record::Begin { base, .. }) => {
                records.len() > 1
                    && (snapshot_meta == Some(*base) || (snapshot.is_none() && base.serial == 0))
            }
            _ => false,
        };
        if applies && let Some(mut state) = super::replay(snapshot, records) {
            state.serial += 1;
            tracing::info!(
                journal = %journal_path.display(),
                serial = state.serial,
                "folded the journal an interrupted run left into a new snapshot"
            );
            return self.persist_blocking(state.meta(), &StateFile::render(&state));
        }
        match std::fs::remove_file(&journal_path) {
            Ok(()) => sync_directory(&self.directory()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Self::io("remove", &journal_path)(error)),
        }
    }

    fn persist_blocking(&self, meta: StateMeta, text: &str) -> Result<()> {
        let current = self.read_meta()?;
        let found = current.map_or(0, |current| current.serial);
        let lineage_matches = current.is_none_or(|current| current.lineage == meta.lineage);
        if !lineage_matches || meta.serial != found + 1 {
            return Err(Error::Conflict {
                expected_lineage: meta.lineage,
                expected_serial: meta.serial - 1,
                found_serial: found,
            });
        }
        let directory = self.directory();
        // Created exclusively under an unpredictable name: a planted symlink
        // or file is never written through (see `crate::files`).
        let (temporary, mut file) = crate::files::create_temporary(&self.path, "tmp")
            .map_err(Self::io("create", &self.sibling(".tmp-*")))?;
        file.write_all(text.as_bytes())
            .map_err(Self::io("write", &temporary))?;
        file.sync_all().map_err(Self::io("fsync", &temporary))?;
        drop(file);
        if current.is_some() {
            // Keep the previous snapshot: hard link, then atomic rename over the old backup.
            let mut staged = self.path.as_os_str().to_owned();
            staged.push(format!(".backup-tmp-{}", uuid::Uuid::new_v4().simple()));
            let staged = PathBuf::from(staged);
            std::fs::hard_link(&self.path, &staged).map_err(Self::io("link", &staged))?;
            std::fs::rename(&staged, self.backup_path()).map_err(Self::io("rename", &staged))?;
        }
        std::fs::rename(&temporary, &self.path).map_err(Self::io("rename", &temporary))?;
        sync_directory(&directory)?;
        self.remember(meta);
        // The snapshot now contains everything the journal said; retire it.
        match std::fs::remove_file(self.journal_path()) {
            Ok(()) => sync_directory(&directory),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Self::io("remove", &self.journal_path())(error)),
        }
    }

    fn try_lock(&self, holder: &LockInfo) -> Result<Option<FileLock>> {
        let path = self.lock_path();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(crate::files::O_NOFOLLOW)
            .open(&path)
            .map_err(Self::io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(Self::io("write", &path))?;
                let text = serde_json::to_string(holder).expect("lock info serializes");
                file.write_all(text.as_bytes())
                    .map_err(Self::io("write", &path))?;
                file.sync_data().map_err(Self::io("fsync", &path))?;
                Ok(Some(FileLock {
                    file,
                    info: holder.clone(),
                }))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(Self::io("lock", &path)(error)),
        }
    }

    fn holder(&self) -> LockInfo {
        std::fs::read_to_string(self.lock_path())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| LockInfo {
                command: "(unknown: holder still writing its name)".into(),
                ..LockInfo::current("")
            })
    }
}

fn sync_directory(directory: &Path) -> Result<()> {
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| Error::Io {
            action: "fsync",
            path: directory.display().to_string(),
            source,
        })
}

/// Parses journal lines, stopping at the first line that does not parse (a torn write).
pub(super) fn parse_journal(text: &str) -> Vec<Record> {
    text.lines()
        .map_while(|line| serde_json::from_str::<Record>(line).ok())
        .collect()
}

struct LocalJournal {
    file: File,
}

impl JournalSink for LocalJournal {
    fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        self.file.write_all(batch)?;
        self.file.sync_data()
    }
}

struct FileLock {
    file: File,
    info: LockInfo,
}

#[async_trait]
impl LockGuard for FileLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    async fn release(self: Box<Self>) -> Result<()> {
        let _ = self.file.set_len(0);
        self.file.unlock().map_err(|source| Error::Io {
            action: "unlock",
            path: "lock file".into(),
            source,
        })
    }
}

#[async_trait]
impl StateStore for LocalStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self) -> Result<Option<State>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load_blocking())
            .await
            .expect("load task")
    }

    async fn persist(&self, state: &State) -> Result<()> {
        let (store, meta, text) = (self.clone(), state.meta(), StateFile::render(state));
        tokio::task::spawn_blocking(move || store.persist_blocking(meta, &text))
            .await
            .expect("persist task")
    }

    async fn open_journal(&self, base: StateMeta, stack: &str) -> Result<Box<dyn JournalSink>> {
        let path = self.journal_path();
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(crate::files::O_NOFOLLOW)
            .open(&path)
            .map_err(Self::io("create", &path))?;
        let mut journal = LocalJournal { file };
        journal
            .append(&super::journal::encode(&[Record::Begin {
                base,
                stack: stack.to_owned(),
            }]))
            .map_err(Self::io("write", &path))?;
        sync_directory(&self.directory())?;
        Ok(Box::new(journal))
    }

    async fn lock(&self, holder: LockInfo, timeout: Duration) -> Result<Box<dyn LockGuard>> {
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(1),
            deadline: timeout,
        };
        let outcome = backoff::poll(backoff, || {
            let store = self.clone();
            let holder = holder.clone();
            async move {
                tokio::task::spawn_blocking(move || store.try_lock(&holder))
                    .await
                    .expect("lock task")
            }
        })
        .await;
        match outcome {
            Ok(lock) => {
                let store = self.clone();
                let checkpoint = tokio::task::spawn_blocking(move || store.checkpoint_blocking())
                    .await
                    .expect("checkpoint task");
                if let Err(error) = checkpoint {
                    let _ = Box::new(lock).release().await;
                    return Err(error);
                }
                Ok(Box::new(lock))
            }
            Err(backoff::Error::Failed(error)) => Err(error),
            Err(backoff::Error::Timeout { .. }) => Err(Error::Locked {
                holder: self.holder(),
                lapses: None,
            }),
        }
    }

    async fn backup(&self) -> Result<Option<State>> {
        Self::read_snapshot(&self.backup_path())
    }

    async fn deployments(&self) -> Result<Vec<crate::history::Deployment>> {
        let path = self.sibling(".history.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| Error::Corrupt {
                origin: path.display().to_string(),
                source,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(Self::io("read", &path)(error)),
        }
    }

    async fn record_deployments(&self, new: &[crate::history::Deployment]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let mut kept = self.deployments().await?;
        crate::history::merge(&mut kept, new);
        let path = self.sibling(".history.json");
        let text = serde_json::to_vec_pretty(&kept).expect("history serializes");
        crate::files::write_atomically(&path, &text, true).map_err(Self::io("write", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 12: a symlink planted at the journal's or the lock's
    /// path is refused, never written through.
    #[tokio::test]
    async fn the_journal_and_the_lock_should_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let store = LocalStore::new(dir.path().join("jaam.state.json"));
        std::os::unix::fs::symlink(&victim, store.journal_path()).unwrap();
        let base = StateMeta {
            lineage: uuid::Uuid::new_v4(),
            serial: 0,
        };
        assert!(store.open_journal(base, "s").await.is_err());
        std::os::unix::fs::symlink(&victim, store.lock_path()).unwrap();
        assert!(
            store
                .lock(LockInfo::current("test"), Duration::ZERO)
                .await
                .is_err()
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
