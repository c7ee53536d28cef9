//! Writes: create, update, read-modify-write and delete. Each stores the object, appends to the
//! revision log and advances the revision inside the open batch's transaction (`batch.rs`); the
//! change reaches watchers once that batch is committed.
//!
//! An update that changes nothing is not written and gets no new revision, as with the API
//! server (its storage layer skips no-op updates), so a kubelet re-reporting the same status
//! does not wake every watcher.

use redb::ReadableTable;
use serde_json::Value;

use super::batch::Applied;
use super::error::{db, StoreError};
use super::log::{self, Change, EventKind};
use super::object::{self, Fresh};
use super::{key, meta_value, parse_object, ObjectKey, Store, LOG, META, META_REVISION, OBJECTS};

/// What a write decided to do, given the current object and the revision it would create.
enum Decision {
    Write {
        kind: EventKind,
        object: Value,
    },
    /// Nothing changed: answer with the stored object, write nothing.
    Unchanged(Value),
}

impl Store {
    /// Creates the object at `key`, returning it as stored. `AlreadyExists` if there is one.
    pub fn create(&self, key: &ObjectKey, mut object: Value) -> Result<Value, StoreError> {
        let fresh = Fresh {
            uid: self.new_uid()?,
            timestamp: object::now_timestamp(),
        };
        self.write(key, |current, revision| {
            if current.is_some() {
                return Err(StoreError::AlreadyExists { key: key.clone() });
            }
            object::prepare_create(key, &mut object, revision, fresh)?;
            Ok(Decision::Write {
                kind: EventKind::Added,
                object,
            })
        })
    }

    /// Replaces the object at `key`. When `object` carries a non-empty
    /// `metadata.resourceVersion`, it must be the stored one (else `Conflict`).
    pub fn update(&self, key: &ObjectKey, object: Value) -> Result<Value, StoreError> {
        let expected = object::requested_revision(key, &object)?;
        self.write(key, |current, revision| {
            let stored = current.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            let actual = object::stored_revision(key, stored)?;
            object::check_precondition(key, expected, actual)?;
            replace(key, stored, object, actual, revision)
        })
    }

    /// Applies `f` to the stored object and stores the result, atomically: no other write can
    /// come between the read and the write, so there is no conflict to retry. `f`'s error
    /// aborts the write and is returned.
    pub fn update_with<F>(&self, key: &ObjectKey, mut f: F) -> Result<Value, StoreError>
    where
        F: FnMut(&mut Value) -> Result<(), StoreError>,
    {
        self.write(key, |current, revision| {
            let stored = current.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            let actual = object::stored_revision(key, stored)?;
            let mut object = stored.clone();
            f(&mut object)?;
            replace(key, stored, object, actual, revision)
        })
    }

    /// Removes the object at `key` (if `precondition_rv` is given, only at that revision) and
    /// returns its last state with the deletion's resourceVersion, as the DELETED event carries.
    pub fn delete(
        &self,
        key: &ObjectKey,
        precondition_rv: Option<u64>,
    ) -> Result<Value, StoreError> {
        self.write(key, |current, revision| {
            let stored = current.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            let actual = object::stored_revision(key, stored)?;
            object::check_precondition(key, precondition_rv, actual)?;
            let mut object = stored.clone();
            object::set_resource_version(key, &mut object, revision)?;
            Ok(Decision::Write {
                kind: EventKind::Deleted,
                object,
            })
        })
    }

    /// The write pipeline: in the open batch (see `batch.rs`), read the current object, let
    /// `decide` choose, store object, log entry and revision; answer once the batch is durable.
    fn write<D>(&self, key: &ObjectKey, decide: D) -> Result<Value, StoreError>
    where
        D: FnOnce(Option<&Value>, u64) -> Result<Decision, StoreError>,
    {
        let encoded = key::encode(key)?;
        self.inner.group.run(&self.inner, |txn| {
            let mut tables = Tables::open(txn)?;
            Ok(match tables.apply(key, &encoded, decide)? {
                Err(unchanged) => Applied::Read(unchanged),
                Ok((object, change)) => Applied::Wrote(object, vec![change]),
            })
        })
    }

    /// Creates each of `objects` that is not there yet, all in one transaction (one revision
    /// each, in order); returns whether each was created. For the objects a daemon makes at
    /// start: ten writes of their own cost ten commits.
    pub fn create_missing(
        &self,
        objects: Vec<(ObjectKey, Value)>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut fresh = Vec::with_capacity(objects.len());
        let mut encoded = Vec::with_capacity(objects.len());
        for (key, _) in &objects {
            fresh.push(Fresh {
                uid: self.new_uid()?,
                timestamp: object::now_timestamp(),
            });
            encoded.push(key::encode(key)?);
        }
        self.inner.group.run(&self.inner, |txn| {
            let mut tables = Tables::open(txn)?;
            // Every decision before any write: a refused object leaves the transaction as it
            // was (the group commit's rule for a failed write).
            let mut revision = meta_value(&tables.meta, META_REVISION)?;
            let mut writes = Vec::new();
            let mut created = Vec::with_capacity(objects.len());
            for (((key, mut object), fresh), encoded) in
                objects.into_iter().zip(fresh).zip(&encoded)
            {
                let exists = tables
                    .objects
                    .get(encoded.as_slice())
                    .map_err(db("read object"))?
                    .is_some();
                created.push(!exists);
                if !exists {
                    revision += 1;
                    object::prepare_create(&key, &mut object, revision, fresh)?;
                    writes.push((key, encoded, object));
                }
            }
            let mut changes = Vec::with_capacity(writes.len());
            for (key, encoded, object) in writes {
                let write = |_: Option<&Value>, _| {
                    Ok(Decision::Write {
                        kind: EventKind::Added,
                        object,
                    })
                };
                if let Ok((_, change)) = tables.apply(&key, encoded, write)? {
                    changes.push(change);
                }
            }
            Ok(match changes.is_empty() {
                true => Applied::Read(created),
                false => Applied::Wrote(created, changes),
            })
        })
    }
}

/// The tables a write changes, open in its transaction.
struct Tables<'t> {
    objects: redb::Table<'t, &'static [u8], &'static [u8]>,
    log: redb::Table<'t, u64, &'static [u8]>,
    meta: redb::Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            objects: txn.open_table(OBJECTS).map_err(db("open objects table"))?,
            log: txn.open_table(LOG).map_err(db("open revision log"))?,
            meta: txn.open_table(META).map_err(db("open meta table"))?,
        })
    }

    /// Decides and applies one write at the next revision: the object as written and its
    /// change, or (`Err`) the stored object when the decision is to write nothing.
    fn apply<D>(
        &mut self,
        key: &ObjectKey,
        encoded: &[u8],
        decide: D,
    ) -> Result<Result<(Value, Change), Value>, StoreError>
    where
        D: FnOnce(Option<&Value>, u64) -> Result<Decision, StoreError>,
    {
        let revision = meta_value(&self.meta, META_REVISION)? + 1;
        let current = match self.objects.get(encoded).map_err(db("read object"))? {
            Some(bytes) => Some(parse_object(encoded, bytes.value())?),
            None => None,
        };
        let (kind, object) = match decide(current.as_ref(), revision)? {
            Decision::Write { kind, object } => (kind, object),
            Decision::Unchanged(object) => return Ok(Err(object)),
        };
        let json = to_json(key, &object)?;
        let prev = current.filter(|_| kind == EventKind::Modified);
        let prev_json = prev.as_ref().map(|p| to_json(key, p)).transpose()?;
        if kind == EventKind::Deleted {
            self.objects.remove(encoded).map_err(db("remove object"))?;
        } else {
            self.objects
                .insert(encoded, json.as_slice())
                .map_err(db("write object"))?;
        }
        let entry = log::encode(kind, encoded, &json, prev_json.as_deref());
        self.log
            .insert(revision, entry.as_slice())
            .map_err(db("append to revision log"))?;
        self.meta
            .insert(META_REVISION, revision)
            .map_err(db("write meta table"))?;
        let change = Change {
            revision,
            kind,
            key: encoded.to_vec(),
            object: object.clone(),
            prev,
        };
        Ok(Ok((object, change)))
    }
}

fn to_json(key: &ObjectKey, object: &Value) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(object).map_err(|source| StoreError::Encode {
        key: key.clone(),
        source,
    })
}

/// A MODIFIED write of `object` over `stored`, unless that would change nothing.
fn replace(
    key: &ObjectKey,
    stored: &Value,
    mut object: Value,
    stored_revision: u64,
    revision: u64,
) -> Result<Decision, StoreError> {
    object::prepare_update(key, stored, &mut object, stored_revision)?;
    if object == *stored {
        return Ok(Decision::Unchanged(object));
    }
    object::set_resource_version(key, &mut object, revision)?;
    Ok(Decision::Write {
        kind: EventKind::Modified,
        object,
    })
}
