//! Watches: replay from the revision log, then live changes, filtered by label and field
//! selectors the way the API server filters a watch
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>).
//!
//! No gap, no duplicate: the watcher subscribes to the hub *before* opening the read transaction
//! that replays. Every revision up to the one that transaction sees (`R`) comes from the replay
//! (or the initial list), every later one from the channel, and channel events at or below `R`
//! are skipped.

use std::collections::VecDeque;

use serde_json::Value;

use super::error::{db, StoreError};
use super::hub::Subscription;
use super::log::{self, Change, EventKind};
use super::{key, read_meta, Store, LOG, OBJECTS};
use crate::selector::{FieldSelector, LabelSelector};

/// Which objects a watch (or a list) sees. The default sees everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn new(labels: LabelSelector, fields: FieldSelector) -> Filter {
        Filter { labels, fields }
    }

    /// Parses the `labelSelector` and `fieldSelector` query parameters.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Filter, StoreError> {
        Ok(Filter {
            labels: LabelSelector::parse(labels.unwrap_or(""))?,
            fields: FieldSelector::parse(fields.unwrap_or(""))?,
        })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// What a watcher with this filter is told of `change`: a modification that makes the object
    /// stop matching is a deletion, one that makes it start matching an addition.
    pub(crate) fn event_kind(&self, change: &Change) -> Option<EventKind> {
        let now = self.matches(&change.object);
        match change.kind {
            EventKind::Added | EventKind::Deleted => now.then_some(change.kind),
            EventKind::Modified => {
                let before = change.prev.as_ref().is_none_or(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(EventKind::Modified),
                    (false, true) => Some(EventKind::Added),
                    (true, false) => Some(EventKind::Deleted),
                    (false, false) => None,
                }
            }
        }
    }

    fn event(&self, change: &Change) -> Option<WatchEvent> {
        self.event_kind(change).map(|kind| WatchEvent {
            kind,
            object: change.object.clone(),
            revision: change.revision,
        })
    }
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub object: Value,
    /// The store revision this event brings the watcher to: the change's revision, or for the
    /// synthetic ADDED events of a watch from 0, the revision of the initial list. Resuming a
    /// watch from the last event's `revision` neither repeats nor misses a change.
    pub revision: u64,
}

/// A stream of [`WatchEvent`]s; dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    replay: VecDeque<WatchEvent>,
    subscription: Subscription,
    filter: Filter,
    /// Live changes at or below this revision were already covered by the replay.
    replayed_through: u64,
    /// Every matching change up to this revision has been delivered.
    delivered_through: u64,
}

impl Watch {
    /// The next event; `None` when the stream has ended (the watcher fell too far behind, see
    /// [`Watch::lagged`], or the store was dropped). Cancel-safe: no event is lost if the future
    /// is dropped before it completes.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if let Some(event) = self.replay.pop_front() {
            self.delivered_through = self.delivered_through.max(event.revision);
            return Some(event);
        }
        self.delivered_through = self.delivered_through.max(self.replayed_through);
        loop {
            let change = self.subscription.rx.recv().await?;
            if change.revision <= self.replayed_through {
                continue;
            }
            self.delivered_through = change.revision;
            if let Some(event) = self.filter.event(&change) {
                return Some(event);
            }
        }
    }

    /// Every matching change up to this revision has been returned by [`Watch::next`]: the
    /// resourceVersion for a BOOKMARK event.
    pub fn revision(&self) -> u64 {
        if self.replay.is_empty() {
            self.delivered_through.max(self.replayed_through)
        } else {
            self.delivered_through
        }
    }

    /// Whether the stream ended (or will end after the buffered events) because this watcher
    /// did not keep up.
    pub fn lagged(&self) -> bool {
        self.subscription.lagged()
    }
}

impl Store {
    /// Watches `resource` (in `namespace`, or all namespaces) for changes after `since_rv`:
    /// first the logged changes with revision > `since_rv`, then live ones. `since_rv` 0 means
    /// "now", preceded by a synthetic ADDED event for each current object. `Gone` when the log
    /// no longer reaches back to `since_rv`. Short blocking call (one read transaction; the
    /// replay is read eagerly into memory).
    pub fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        since_rv: u64,
        filter: Filter,
    ) -> Result<Watch, StoreError> {
        let prefix = key::prefix(resource, namespace)?;
        let subscription = self
            .inner
            .hub
            .subscribe(prefix.clone(), self.inner.options.watch_capacity);
        let txn = self.inner.begin_read()?;
        let meta = read_meta(&txn)?;
        if since_rv != 0 && since_rv < meta.compacted {
            return Err(StoreError::Gone {
                requested: since_rv,
                oldest: meta.compacted,
            });
        }
        let mut replay = VecDeque::new();
        if since_rv == 0 {
            let objects = txn.open_table(OBJECTS).map_err(db("open objects table"))?;
            let end = key::prefix_end(&prefix);
            let range = objects
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())
                .map_err(db("scan objects"))?;
            for entry in range {
                let (k, v) = entry.map_err(db("scan objects"))?;
                let object = super::parse_object(k.value(), v.value())?;
                if filter.matches(&object) {
                    replay.push_back(WatchEvent {
                        kind: EventKind::Added,
                        object,
                        revision: meta.revision,
                    });
                }
            }
        } else if since_rv < meta.revision {
            let log_table = txn.open_table(LOG).map_err(db("open revision log"))?;
            let range = log_table
                .range(since_rv + 1..=meta.revision)
                .map_err(db("scan revision log"))?;
            for entry in range {
                let (rev, bytes) = entry.map_err(db("scan revision log"))?;
                let bytes = bytes.value();
                if !log::entry_key(bytes).is_some_and(|k| k.starts_with(&prefix)) {
                    continue;
                }
                let change = log::decode(rev.value(), bytes)?;
                replay.extend(filter.event(&change));
            }
        }
        Ok(Watch {
            replay,
            subscription,
            filter,
            replayed_through: meta.revision.max(since_rv),
            delivered_through: since_rv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(app: &str) -> Value {
        json!({"metadata": {"name": "a", "labels": {"app": app}}})
    }

    #[test]
    fn filtered_transitions() {
        use EventKind::*;
        let change = |kind, prev: Option<&str>, now: &str| Change {
            revision: 1,
            kind,
            key: vec![],
            object: labelled(now),
            prev: prev.map(labelled),
        };
        let web = Filter::parse(Some("app=web"), None).expect("parses");
        let all = Filter::default();
        let cases = [
            (&web, change(Added, None, "web"), Some(Added)),
            (&web, change(Added, None, "db"), None),
            (&web, change(Modified, Some("web"), "web"), Some(Modified)),
            (&web, change(Modified, Some("db"), "web"), Some(Added)),
            (&web, change(Modified, Some("web"), "db"), Some(Deleted)),
            (&web, change(Modified, Some("db"), "db"), None),
            (&web, change(Deleted, None, "web"), Some(Deleted)),
            (&web, change(Deleted, None, "db"), None),
            (&all, change(Modified, Some("db"), "web"), Some(Modified)),
            (&all, change(Deleted, None, "db"), Some(Deleted)),
        ];
        for (i, (filter, change, want)) in cases.iter().enumerate() {
            assert_eq!(filter.event_kind(change), *want, "case {i}");
        }
    }

    #[test]
    fn filters_parse_and_match() {
        assert!(Filter::default().is_everything());
        assert!(Filter::parse(None, None).expect("ok").is_everything());
        let f = Filter::parse(Some("app=web"), Some("metadata.name=a")).expect("ok");
        assert!(f.matches(&labelled("web")));
        assert!(!f.matches(&labelled("db")));
        assert!(matches!(
            Filter::parse(Some("a in ()"), None),
            Err(StoreError::InvalidSelector { .. })
        ));
        assert!(matches!(
            Filter::parse(None, Some("nope")),
            Err(StoreError::InvalidSelector { .. })
        ));
    }
}
