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
            let mut objects = txn.open_table(OBJECTS).map_err(db("open objects table"))?;
            let mut log_table = txn.open_table(LOG).map_err(db("open revision log"))?;
            let mut meta = txn.open_table(META).map_err(db("open meta table"))?;
            let revision = meta_value(&meta, META_REVISION)? + 1;
            let current = match objects.get(encoded.as_slice()).map_err(db("read object"))? {
                Some(bytes) => Some(parse_object(&encoded, bytes.value())?),
                None => None,
            };
            let (kind, object) = match decide(current.as_ref(), revision)? {
                Decision::Write { kind, object } => (kind, object),
                Decision::Unchanged(object) => return Ok(Applied::Read(object)),
            };
            let json = to_json(key, &object)?;
            let prev = current.filter(|_| kind == EventKind::Modified);
            let prev_json = prev.as_ref().map(|p| to_json(key, p)).transpose()?;
            if kind == EventKind::Deleted {
                objects
                    .remove(encoded.as_slice())
                    .map_err(db("remove object"))?;
            } else {
                objects
                    .insert(encoded.as_slice(), json.as_slice())
                    .map_err(db("write object"))?;
            }
            let entry = log::encode(kind, &encoded, &json, prev_json.as_deref());
            log_table
                .insert(revision, entry.as_slice())
                .map_err(db("append to revision log"))?;
            meta.insert(META_REVISION, revision)
                .map_err(db("write meta table"))?;
            let change = Change {
                revision,
                kind,
                key: encoded.clone(),
                object: object.clone(),
                prev,
            };
            Ok(Applied::Wrote(object, Some(change)))
        })
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
