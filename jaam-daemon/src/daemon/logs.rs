//! Build-log streams: one CloudWatch poller per site, shared by every client
//! that follows that site's log, and a cap on concurrent streams.
//!
//! # Guarantees
//! - However many clients follow a site, the daemon polls its log group once
//!   (per poll interval): the first subscriber starts the poller, the last
//!   one to leave stops it.
//! - A new subscriber first gets the lines the poller has kept (the newest
//!   [`RECENT`], from up to ten minutes back), then new lines as they come.
//! - At most [`MAX_STREAMS`] streams are open at once; beyond, the endpoint
//!   answers 503. A client that reads slower than the lines come loses the
//!   lines it fell behind on (the stream says how many), never the daemon's
//!   memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use jaam_core::providers::aws::sites::{LogLine, Logs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// Concurrent log streams the daemon serves.
pub(crate) const MAX_STREAMS: usize = 32;

/// Lines a site's poller keeps for the next subscriber.
pub(crate) const RECENT: usize = 256;

/// One site's poller, alive while someone follows it.
pub(crate) struct SitePoller {
    lines: broadcast::Sender<LogLine>,
    recent: Arc<Mutex<VecDeque<LogLine>>>,
    cancel: CancellationToken,
}

impl Drop for SitePoller {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A client's subscription: what was kept, then new lines. Holding it keeps
/// the site's poller (and the stream's permit) alive.
pub(crate) struct Subscription {
    pub(crate) backlog: Vec<LogLine>,
    pub(crate) lines: broadcast::Receiver<LogLine>,
    _poller: Arc<SitePoller>,
    _permit: OwnedSemaphorePermit,
}

/// The pollers, by log group.
pub(crate) struct LogHub {
    reader: Logs,
    pollers: Mutex<HashMap<String, Weak<SitePoller>>>,
    streams: Arc<Semaphore>,
}

impl LogHub {
    pub(crate) fn new(reader: Logs) -> Self {
        Self {
            reader,
            pollers: Mutex::default(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }

    /// How many pollers run (for tests and metrics).
    pub(crate) fn pollers(&self) -> usize {
        self.pollers
            .lock()
            .expect("pollers")
            .values()
            .filter(|poller| poller.strong_count() > 0)
            .count()
    }

    /// How many streams are open.
    pub(crate) fn streams(&self) -> usize {
        MAX_STREAMS - self.streams.available_permits()
    }

    /// Subscribes to `group`; `None` when [`MAX_STREAMS`] are open.
    pub(crate) fn subscribe(&self, group: &str) -> Option<Subscription> {
        let permit = Arc::clone(&self.streams).try_acquire_owned().ok()?;
        let mut pollers = self.pollers.lock().expect("pollers");
        pollers.retain(|_, poller| poller.strong_count() > 0);
        let poller = match pollers.get(group).and_then(Weak::upgrade) {
            Some(poller) => poller,
            None => {
                let poller = self.start(group);
                pollers.insert(group.to_owned(), Arc::downgrade(&poller));
                poller
            }
        };
        // Subscribe before copying the backlog: a line that arrives in
        // between is delivered twice at worst (the client de-duplicates by
        // id), never lost.
        let lines = poller.lines.subscribe();
        let backlog = poller
            .recent
            .lock()
            .expect("recent")
            .iter()
            .cloned()
            .collect();
        Some(Subscription {
            backlog,
            lines,
            _poller: poller,
            _permit: permit,
        })
    }

    fn start(&self, group: &str) -> Arc<SitePoller> {
        let (sender, _) = broadcast::channel(RECENT);
        let poller = Arc::new(SitePoller {
            lines: sender.clone(),
            recent: Arc::default(),
            cancel: CancellationToken::new(),
        });
        let (reader, group, cancel, recent) = (
            self.reader.clone(),
            group.to_owned(),
            poller.cancel.clone(),
            Arc::clone(&poller.recent),
        );
        let since = chrono::Utc::now() - chrono::Duration::minutes(10);
        tokio::spawn(async move {
            let result = reader
                .follow(&group, since, &cancel, |line| {
                    let mut kept = recent.lock().expect("recent");
                    if kept.len() == RECENT {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                    drop(kept);
                    // No receiver right now is fine: the backlog keeps it.
                    let _ = sender.send(line);
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, group, "log poller stopped");
            }
        });
        poller
    }
}
