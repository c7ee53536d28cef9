//! The object store: Kubernetes objects as JSON in one redb file, with the API server's storage
//! semantics (<https://kubernetes.io/docs/reference/using-api/api-concepts/>): one global
//! revision that every write increments and stamps as `metadata.resourceVersion`, optimistic
//! concurrency, label and field selectors, `limit`/`continue` paging, and watches replayed from a
//! revision log until it is compacted.
//!
//! Tables: `objects` (encoded key, see `key.rs` → object JSON), `revision_log` (revision → entry,
//! see `log.rs`) and `meta` (current revision, compacted-through revision). Writes are applied
//! one at a time to a redb write transaction that concurrent writes share (group commit,
//! `batch.rs`), committed with immediate durability before any of them returns: an acknowledged
//! write survives a crash, and a write costs one fsync shared with every write queued behind
//! the previous one. Watchers get each batch's changes after its commit, in revision order.
//!
//! Reads are redb read transactions (MVCC snapshots) and never wait for a writer. Every method
//! is a short blocking call; async callers may call them directly for ordinary objects, and
//! should use `spawn_blocking` for large lists or bulk work.
//!
//! Faults: redb refuses every operation after an I/O error (a full disk, say), so a commit that
//! fails that way closes the database and opens it again (redb's repair keeps the last
//! committed state; nothing of the failed batch is there). The failed writes answer
//! [`StoreError::NoSpace`] (or the I/O error); reads and watches go on from the reopened handle,
//! and writes succeed again once there is space.

mod batch;
mod error;
mod hub;
mod key;
mod list;
mod log;
mod memory;
mod object;
mod watch;
mod write;

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde_json::Value;

pub use error::StoreError;
pub use key::ObjectKey;
pub use list::{ListOptions, ListResult};
pub use log::EventKind;
pub use watch::{Filter, Watch, WatchEvent};

use batch::{Backend, GroupCommit};
use error::{db, no_space};
use hub::Hub;
use log::Change;

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

impl StoreOptions {
    /// The defaults with `PEAPOD_STORE_CACHE_SIZE` (a quantity such as `64Mi`) from the process
    /// environment.
    pub fn from_env() -> Result<StoreOptions, StoreError> {
        StoreOptions::from_lookup(|k| std::env::var(k).ok())
    }

    /// The defaults with the overrides `var` returns (pure, for tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<StoreOptions, StoreError> {
        let mut options = StoreOptions::default();
        let name = "PEAPOD_STORE_CACHE_SIZE";
        if let Some(value) = var(name) {
            options.cache_bytes = crate::quantity::parse_quantity(value.trim())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(StoreError::InvalidSetting {
                    var: name,
                    value,
                    reason: "not a quantity such as 64Mi",
                })?;
        }
        Ok(options)
    }
}

/// A handle on the store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` after an I/O error closed it, until it is opened again. Readers hold the read
    /// lock for as long as their transaction lives, so closing never pulls a file from under
    /// one.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    options: StoreOptions,
    group: GroupCommit<Inner>,
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

/// Opens (creating if needed) the redb file.
/// The path a store kept in memory reports ([`Store::open_in_memory`]).
const IN_MEMORY: &str = ":memory:";
/// redb's page cache for a store kept in memory: enough to buffer a batch's writes.
const IN_MEMORY_CACHE_BYTES: usize = 1 << 20;

fn open_database(path: &Path, options: &StoreOptions) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(options.cache_bytes)
        .create(path)
        .map_err(|source| match source {
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) if no_space(&io) => {
                StoreError::NoSpace { op: "open" }
            }
            source => StoreError::Open {
                path: path.to_path_buf(),
                source,
            },
        })
}

/// A read transaction, holding the database open while it lives.
pub(crate) struct Reader<'a> {
    txn: ReadTransaction,
    _db: RwLockReadGuard<'a, Option<Database>>,
}

impl Deref for Reader<'_> {
    type Target = ReadTransaction;
    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

impl Inner {
    /// The database, opened again first if an I/O error closed it.
    fn handle(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, StoreError> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if db.is_some() {
            return Ok(db);
        }
        drop(db);
        self.reopen()?;
        Ok(self.db.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            *db = Some(open_database(&self.path, &self.options)?);
            tracing::info!(path = %self.path.display(), "store reopened");
        }
        Ok(())
    }

    fn closed(&self) -> StoreError {
        StoreError::Db {
            op: "reopen after an I/O error",
            source: redb::Error::DatabaseClosed,
        }
    }

    fn begin_read(&self) -> Result<Reader<'_>, StoreError> {
        let handle = self.handle()?;
        let txn = match handle.as_ref() {
            Some(database) => database
                .begin_read()
                .map_err(db("begin read transaction"))?,
            None => return Err(self.closed()),
        };
        Ok(Reader { txn, _db: handle })
    }
}

impl Backend for Inner {
    type Txn = WriteTransaction;
    type Change = Change;

    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let handle = self.handle()?;
        match handle.as_ref() {
            Some(database) => database
                .begin_write()
                .map_err(db("begin write transaction")),
            None => Err(self.closed()),
        }
    }

    fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(db("commit"))
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            self.revision.store(change.revision, Ordering::Release);
            tracing::trace!(
                revision = change.revision,
                kind = change.kind.as_str(),
                "stored"
            );
            self.hub.publish(&Arc::new(change));
        }
    }

    fn handle_lost(&self, error: &StoreError) -> bool {
        error.lost_handle()
    }

    fn recover(&self) {
        if self.path == Path::new(IN_MEMORY) {
            return; // no file to reopen: the memory it lives in is all there is
        }
        tracing::warn!(path = %self.path.display(), "store closed after an I/O error");
        // Dropping the handle closes the file (once readers are done), so it can be reopened.
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = None;
        if let Err(error) = self.reopen() {
            tracing::warn!(%error, "store not reopened yet, retrying with the next request");
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in the redb file at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let database = open_database(path, &options)?;
        Store::with_database(database, path, options)
    }

    /// A store that lives in memory only, for a daemon whose objects end with it (`peapod
    /// run`): the same transactions and revisions, without a file or an fsync per write.
    pub fn open_in_memory(options: StoreOptions) -> Result<Store, StoreError> {
        let path = Path::new(IN_MEMORY);
        let database = Database::builder()
            // The backend is memory already: a page cache over it only holds second copies.
            .set_cache_size(options.cache_bytes.min(IN_MEMORY_CACHE_BYTES))
            .create_with_backend(memory::Memory::default())
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Store::with_database(database, path, options)
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
                db: RwLock::new(Some(database)),
                path: path.to_path_buf(),
                options,
                group: GroupCommit::default(),
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
        let txn = self.inner.begin_read()?;
        Ok(read_meta(&txn)?.compacted)
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        let encoded = key::encode(key)?;
        let txn = self.inner.begin_read()?;
        let objects = txn.open_table(OBJECTS).map_err(db("open objects table"))?;
        let value = objects.get(encoded.as_slice()).map_err(db("read object"))?;
        value.map(|v| parse_object(&encoded, v.value())).transpose()
    }

    /// Drops the log entries with revision <= `keep_after` (capped at the current revision) and
    /// records the compaction point; watches and continue tokens from before it become `Gone`.
    pub fn compact(&self, keep_after: u64) -> Result<(), StoreError> {
        self.inner.group.run(&self.inner, |txn| {
            let mut meta = txn.open_table(META).map_err(db("open meta table"))?;
            let revision = meta_value(&meta, META_REVISION)?;
            let previous = meta_value(&meta, META_COMPACTED)?;
            let through = keep_after.min(revision);
            if through <= previous {
                return Ok(batch::Applied::Read(()));
            }
            let mut log_table = txn.open_table(LOG).map_err(db("open revision log"))?;
            log_table
                .retain_in(..=through, |_, _| false)
                .map_err(db("compact revision log"))?;
            meta.insert(META_COMPACTED, through)
                .map_err(db("write meta table"))?;
            tracing::debug!(through, "revision log compacted");
            Ok(batch::Applied::Wrote((), Vec::new()))
        })
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
