//! The apply journal's writer: one thread that group-commits records.
//!
//! Callers queue records; the writer takes everything queued, writes it in one
//! append and one fsync, then wakes every caller that waited for durability. A
//! record queued with [`Journal::record`] (no wait) rides along with the next
//! durable batch and never costs an fsync of its own.
//!
//! # Guarantees
//! - When [`Journal::record_durable`] returns `Ok`, that record and every record
//!   queued before it are on disk (or in the remote store).
//! - After a failed write, every later call fails: an apply cannot go on with a
//!   journal that has a hole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{Error, Record, Result};

/// A durable, append-only destination for journal records.
pub trait JournalSink: Send {
    /// Appends `batch` (records encoded by [`encode`], one JSON object per line)
    /// and makes it durable (fsync) before returning.
    ///
    /// # Errors
    /// The I/O error; the journal is then unusable.
    fn append(&mut self, batch: &[u8]) -> std::io::Result<()>;
}

/// Encodes records as journal lines.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        encode_into(&mut out, record);
    }
    out
}

fn encode_into(out: &mut Vec<u8>, record: &Record) {
    serde_json::to_writer(&mut *out, record).expect("journal records serialize");
    out.push(b'\n');
}

type Waiter = oneshot::Sender<std::result::Result<(), Arc<std::io::Error>>>;

enum Message {
    Lazy(Vec<u8>),
    Durable(Vec<u8>, Waiter),
    Close(Waiter),
}

/// A running journal writer.
pub struct Journal {
    sender: mpsc::Sender<Message>,
    worker: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("commits", &self.commits())
            .finish()
    }
}

impl Journal {
    /// Starts the writer thread over `sink`.
    pub fn start(mut sink: Box<dyn JournalSink>) -> Self {
        let (sender, receiver) = mpsc::channel::<Message>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        let worker = std::thread::Builder::new()
            .name("jaam-journal".to_owned())
            .spawn(move || {
                let mut buffered: Vec<u8> = Vec::new();
                let mut failed: Option<Arc<std::io::Error>> = None;
                while let Ok(first) = receiver.recv() {
                    let mut waiters = Vec::new();
                    let mut closing = false;
                    let mut take = |message: Message, buffered: &mut Vec<u8>| match message {
                        Message::Lazy(line) => buffered.extend_from_slice(&line),
                        Message::Durable(line, waiter) => {
                            buffered.extend_from_slice(&line);
                            waiters.push(waiter);
                        }
                        Message::Close(waiter) => {
                            waiters.push(waiter);
                            closing = true;
                        }
                    };
                    take(first, &mut buffered);
                    while let Ok(next) = receiver.try_recv() {
                        take(next, &mut buffered);
                    }
                    if !waiters.is_empty() && !buffered.is_empty() && failed.is_none() {
                        if let Err(error) = sink.append(&buffered) {
                            failed = Some(Arc::new(error));
                        }
                        counter.fetch_add(1, Ordering::Relaxed);
                        buffered.clear();
                    }
                    for waiter in waiters {
                        let _ = waiter.send(failed.clone().map_or(Ok(()), Err));
                    }
                    if closing {
                        break;
                    }
                }
            })
            .expect("spawning the journal thread");
        Self {
            sender,
            worker: Some(worker),
            commits,
        }
    }

    /// Queues `record` without waiting: it is written with the next durable batch.
    /// The record is encoded by the caller, so encoding runs in parallel.
    pub fn record(&self, record: &Record) {
        let mut line = Vec::with_capacity(256);
        encode_into(&mut line, record);
        let _ = self.sender.send(Message::Lazy(line));
    }

    /// Queues `record` now; the returned future resolves once it is durable.
    ///
    /// # Errors
    /// The future fails with [`Error::Journal`] when the write failed (now or earlier).
    pub fn record_durable(
        &self,
        record: &Record,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let mut line = Vec::with_capacity(256);
        encode_into(&mut line, record);
        let (waiter, done) = oneshot::channel();
        let sent = self
            .sender
            .send(Message::Durable(line, waiter))
            .map_err(|_| closed());
        async move {
            sent?;
            wait(done).await
        }
    }

    /// How many group commits (write + fsync) have been made.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Writes whatever is buffered and stops the writer.
    ///
    /// # Errors
    /// [`Error::Journal`] when a write failed.
    pub async fn close(mut self) -> Result<u64> {
        let (waiter, done) = oneshot::channel();
        self.sender
            .send(Message::Close(waiter))
            .map_err(|_| closed())?;
        let result = wait(done).await;
        if let Some(worker) = self.worker.take() {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        result.map(|()| self.commits())
    }
}

fn closed() -> Error {
    Error::Journal(std::io::Error::other("journal writer stopped"))
}

async fn wait(done: oneshot::Receiver<std::result::Result<(), Arc<std::io::Error>>>) -> Result<()> {
    match done.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Error::Journal(std::io::Error::new(
            error.kind(),
            error.to_string(),
        ))),
        Err(_) => Err(closed()),
    }
}
