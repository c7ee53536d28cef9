//! Fan-out of committed changes to live watchers: one bounded channel per watcher, fed in
//! revision order by the writer right after each commit.
//!
//! A watcher whose channel is full is dropped from the hub rather than blocking the writer or
//! skipping an event: its stream ends after what it has buffered and the client re-lists or
//! re-watches from the last revision it saw, as with the API server's slow watchers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::mpsc::{self, error::TrySendError};

use super::log::Change;

#[derive(Debug, Default)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    next_id: u64,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    /// Encoded-key prefix of the resource (and namespace) watched.
    prefix: Vec<u8>,
    tx: mpsc::Sender<Arc<Change>>,
    lagged: Arc<AtomicBool>,
}

/// A watcher's end of the hub; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    hub: Weak<Hub>,
    id: u64,
    pub rx: mpsc::Receiver<Arc<Change>>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// Whether the hub dropped this subscriber because its channel was full.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.lock().subscribers.retain(|s| s.id != self.id);
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The state is a list that every operation leaves whole; a panic elsewhere cannot
        // corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a watcher of every change whose key starts with `prefix`. Every change
    /// published after this returns is delivered (or the channel is closed on lag).
    pub fn subscribe(self: &Arc<Self>, prefix: Vec<u8>, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.push(Subscriber {
            id,
            prefix,
            tx,
            lagged: lagged.clone(),
        });
        Subscription {
            hub: Arc::downgrade(self),
            id,
            rx,
            lagged,
        }
    }

    /// Hands `change` to every interested watcher. Called by the single writer, in revision
    /// order, after the change is committed.
    pub fn publish(&self, change: &Arc<Change>) {
        let mut state = self.lock();
        state.subscribers.retain(|s| {
            if !change.key.starts_with(&s.prefix) {
                return true;
            }
            match s.tx.try_send(change.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.lagged.store(true, Ordering::Release);
                    tracing::debug!(
                        revision = change.revision,
                        "watcher lagged, ending its stream"
                    );
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::log::EventKind;
    use serde_json::json;

    fn change(revision: u64, key: &[u8]) -> Arc<Change> {
        Arc::new(Change {
            revision,
            kind: EventKind::Added,
            key: key.to_vec(),
            object: json!({}),
            prev: None,
        })
    }

    #[test]
    fn routes_by_prefix() {
        let hub = Arc::new(Hub::default());
        let mut pods = hub.subscribe(b"pods\0".to_vec(), 8);
        let mut default = hub.subscribe(b"pods\0default\0".to_vec(), 8);
        hub.publish(&change(1, b"pods\0default\0a"));
        hub.publish(&change(2, b"pods\0other\0a"));
        hub.publish(&change(3, b"podsx\0default\0a"));
        let revs = |s: &mut Subscription| {
            std::iter::from_fn(|| s.rx.try_recv().ok().map(|c| c.revision)).collect::<Vec<_>>()
        };
        assert_eq!(revs(&mut pods), [1, 2]);
        assert_eq!(revs(&mut default), [1]);
    }

    #[test]
    fn full_channel_ends_the_stream_and_drop_unsubscribes() {
        let hub = Arc::new(Hub::default());
        let mut slow = hub.subscribe(b"p\0".to_vec(), 2);
        let other = hub.subscribe(b"p\0".to_vec(), 8);
        for rev in 1..=3 {
            hub.publish(&change(rev, b"p\0\0x"));
        }
        assert!(slow.lagged());
        assert_eq!(slow.rx.try_recv().map(|c| c.revision).ok(), Some(1));
        assert_eq!(slow.rx.try_recv().map(|c| c.revision).ok(), Some(2));
        assert!(matches!(
            slow.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(hub.len(), 1);
        drop(other);
        assert_eq!(hub.len(), 0);
    }
}
