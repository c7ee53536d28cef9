//! The object store: Kubernetes objects as JSON in one redb file, with the API server's storage
//! semantics (<https://kubernetes.io/docs/reference/using-api/api-concepts/>): one global
//! revision that every write increments and stamps as `metadata.resourceVersion`, optimistic
//! concurrency, label and field selectors, `limit`/`continue` paging, and watches replayed from a
//! revision log until it is compacted.
//!
//! Tables: `objects` (encoded key, see `key.rs` → object JSON), `revision_log` (revision → entry,
//! see `log.rs`) and `meta` (current revision, compacted-through revision). Each write is one
//! redb write transaction with immediate durability, committed before the call returns: an
//! acknowledged write survives a crash.
//!
//! Concurrency: writes are serialised by a mutex held from the start of the transaction until
//! the change has been handed to watchers, so watchers see revisions in order; reads are redb
//! read transactions (MVCC snapshots) and never wait for a writer. Every method is a short
//! blocking call; async callers may call them directly for ordinary objects (a write costs one
//! fsync), and should use `spawn_blocking` for large lists or bulk work.

mod error;
mod hub;
mod key;
mod list;
mod log;
mod object;
mod watch;
mod write;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

pub use error::StoreError;
pub use key::ObjectKey;
pub use list::{ListOptions, ListResult};
pub use log::EventKind;
pub use watch::{Filter, Watch, WatchEvent};

use error::db;
use hub::Hub;

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("revision_log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Tunables of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Events buffered per watcher before it counts as lagging and its stream is ended.
    pub watch_capacity: usize,
    /// Upper bound of redb's page cache (its own default, 1 GiB, is far more than one node's
    /// objects need).
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            watch_capacity: 1024,
            cache_bytes: 64 << 20,
        }
    }
}

/// A handle on the store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    options: StoreOptions,
    /// Held by each write from `begin_write` until its change is published.
    writer: Mutex<()>,
    /// The last committed revision, for [`Store::revision`].
    revision: AtomicU64,
    hub: Arc<Hub>,
    urandom: File,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("revision", &self.revision())
            .finish_non_exhaustive()
    }
}

/// The revision counters kept in the `meta` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    revision: u64,
    /// Log entries up to and including this revision have been dropped.
    compacted: u64,
}

fn read_meta(txn: &ReadTransaction) -> Result<Meta, StoreError> {
    let table = txn.open_table(META).map_err(db("open meta table"))?;
    Ok(Meta {
        revision: meta_value(&table, META_REVISION)?,
        compacted: meta_value(&table, META_COMPACTED)?,
    })
}

/// A counter from the `meta` table; absent counters are 0.
fn meta_value(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, StoreError> {
    let value = table.get(name).map_err(db("read meta table"))?;
    Ok(value.map(|v| v.value()).unwrap_or(0))
}

/// Parses a stored object, naming its key if it is not JSON.
fn parse_object(key: &[u8], bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        entry: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: "object JSON",
        source: Some(e),
    })
}

impl Store {
    /// Opens (creating if needed) the store in the redb file at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let database = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Store::with_database(database, path, options)
    }

    /// A store that lives in memory only, for a daemon whose objects end with it (`peapod
    /// run`): the same transactions and revisions, without a file or an fsync per write.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = Path::new(":memory:");
        let database = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Store::with_database(database, path, StoreOptions::default())
    }

    fn with_database(
        database: Database,
        path: &Path,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let txn = database
            .begin_write()
            .map_err(db("begin write transaction"))?;
        txn.open_table(OBJECTS)
            .map_err(db("create objects table"))?;
        txn.open_table(LOG).map_err(db("create revision log"))?;
        txn.open_table(META).map_err(db("create meta table"))?;
        txn.commit().map_err(db("commit"))?;
        let txn = database
            .begin_read()
            .map_err(db("begin read transaction"))?;
        let meta = read_meta(&txn)?;
        drop(txn);
        let urandom = File::open("/dev/urandom").map_err(|source| StoreError::Random { source })?;
        tracing::debug!(path = %path.display(), revision = meta.revision, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                db: database,
                path: path.to_path_buf(),
                options,
                writer: Mutex::new(()),
                revision: AtomicU64::new(meta.revision),
                hub: Arc::new(Hub::default()),
                urandom,
            }),
        })
    }

    /// The revision of the last committed write (0 for an empty store).
    pub fn revision(&self) -> u64 {
        self.inner.revision.load(Ordering::Acquire)
    }

    /// The revision log reaches back to (but not including) this revision: watches and continue
    /// tokens from older revisions are `Gone`.
    pub fn compacted(&self) -> Result<u64, StoreError> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(db("begin read transaction"))?;
        Ok(read_meta(&txn)?.compacted)
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        let encoded = key::encode(key)?;
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(db("begin read transaction"))?;
        let objects = txn.open_table(OBJECTS).map_err(db("open objects table"))?;
        let value = objects.get(encoded.as_slice()).map_err(db("read object"))?;
        value.map(|v| parse_object(&encoded, v.value())).transpose()
    }

    /// Drops the log entries with revision <= `keep_after` (capped at the current revision) and
    /// records the compaction point; watches and continue tokens from before it become `Gone`.
    pub fn compact(&self, keep_after: u64) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        let txn = self
            .inner
            .db
            .begin_write()
            .map_err(db("begin write transaction"))?;
        {
            let mut meta = txn.open_table(META).map_err(db("open meta table"))?;
            let revision = meta_value(&meta, META_REVISION)?;
            let previous = meta_value(&meta, META_COMPACTED)?;
            let through = keep_after.min(revision);
            if through <= previous {
                return Ok(());
            }
            let mut log_table = txn.open_table(LOG).map_err(db("open revision log"))?;
            log_table
                .retain_in(..=through, |_, _| false)
                .map_err(db("compact revision log"))?;
            meta.insert(META_COMPACTED, through)
                .map_err(db("write meta table"))?;
            tracing::debug!(through, "revision log compacted");
        }
        txn.commit().map_err(db("commit"))
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded state is in the database, which an aborted transaction leaves unchanged.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh version 4 UUID for `metadata.uid`.
    fn new_uid(&self) -> Result<String, StoreError> {
        let mut bytes = [0u8; 16];
        (&self.inner.urandom)
            .read_exact(&mut bytes)
            .map_err(|source| StoreError::Random { source })?;
        Ok(object::uuid_v4(bytes))
    }
}
