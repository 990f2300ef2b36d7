//! The write lock: who holds it, and the guard that releases it.
//!
//! Every command that writes state holds the stack's lock. A held lock names its
//! holder (id, pid, host, command) and since when, so "state is locked" always
//! says by whom. The local backend uses an OS advisory lock (`flock`) on a file
//! beside the state: the kernel releases it when the holder dies, so a crash
//! never leaves a stuck lock (Terraform's local lock has the same property; its
//! S3 lock does not — the S3 backend gets an expiring lease instead).

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// A unique id of this holding.
    pub id: Uuid,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// What the holder is doing (`jaam apply`).
    pub command: String,
    /// When it took the lock.
    pub since: DateTime<Utc>,
}

impl LockInfo {
    /// A holder description for this process running `command`.
    pub fn current(command: impl Into<String>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|text| text.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            id: Uuid::new_v4(),
            pid: std::process::id(),
            host,
            command: command.into(),
            since: Utc::now(),
        }
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let age = Utc::now()
            .signed_duration_since(self.since)
            .num_seconds()
            .max(0);
        write!(
            f,
            "`{}` (pid {} on {}, lock id {}) since {} ({age}s ago)",
            self.command,
            self.pid,
            self.host,
            self.id,
            self.since.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// A held lock; dropping it releases the lock.
#[async_trait]
pub trait LockGuard: Send + Sync {
    /// Who holds it (this process).
    fn info(&self) -> &LockInfo;

    /// Releases the lock now, reporting failures that a drop would hide.
    async fn release(self: Box<Self>) -> super::Result<()>;
}
