//! The store's error type: one variant per answer the API server gives (404, 409, 410, 400) plus
//! the storage failures, each carrying the key or revision it concerns.

use std::path::PathBuf;
use std::sync::Arc;

use super::key::ObjectKey;
use crate::selector::SelectorError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found")]
    NotFound { key: ObjectKey },

    #[error("{key} already exists")]
    AlreadyExists { key: ObjectKey },

    /// A resourceVersion precondition failed (the API server's 409 Conflict).
    #[error("conflict on {key}: expected resourceVersion {expected}, found {actual}")]
    Conflict {
        key: ObjectKey,
        expected: u64,
        actual: u64,
    },

    /// The revision asked for has been compacted away (the API server's 410 Gone / Expired).
    /// `oldest` is the oldest revision a watch or a continue token may still start from.
    #[error("resourceVersion {requested} is too old, the oldest available is {oldest}")]
    Gone { requested: u64, oldest: u64 },

    #[error("invalid selector {selector:?}: {reason}")]
    InvalidSelector { selector: String, reason: String },

    #[error("invalid continue token")]
    InvalidContinue,

    /// A `metadata.resourceVersion` that is not a decimal revision.
    #[error("invalid resourceVersion {value:?} for {key}")]
    InvalidResourceVersion { key: ObjectKey, value: String },

    /// A key that cannot be encoded (empty part, NUL byte, `Some("")` namespace).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    /// An object that is not a JSON object, or whose metadata disagrees with its key.
    #[error("invalid object {key}: {reason}")]
    InvalidObject { key: ObjectKey, reason: String },

    /// Bytes in the database that the store did not write (or no longer understands).
    #[error("corrupt store entry {entry}: {reason}")]
    Corrupt {
        entry: String,
        reason: &'static str,
        #[source]
        source: Option<serde_json::Error>,
    },

    #[error("encoding {key} as JSON")]
    Encode {
        key: ObjectKey,
        #[source]
        source: serde_json::Error,
    },

    #[error("opening store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },

    #[error("store {op} failed")]
    Db {
        op: &'static str,
        #[source]
        source: redb::Error,
    },

    /// The filesystem under the store is full: nothing of the failed commit was written. The
    /// API server answers 500 when etcd runs out of space; so does peapod.
    #[error("no space left on device for the store ({op})")]
    NoSpace { op: &'static str },

    /// The commit that held this write failed; every write in it fails with the same cause.
    #[error(transparent)]
    Commit(Arc<StoreError>),

    /// A store setting from the environment that cannot be used.
    #[error("{var}={value:?}: {reason}")]
    InvalidSetting {
        var: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("reading random bytes for a uid")]
    Random {
        #[source]
        source: std::io::Error,
    },
}

impl From<SelectorError> for StoreError {
    fn from(e: SelectorError) -> StoreError {
        StoreError::InvalidSelector {
            selector: e.selector,
            reason: e.reason,
        }
    }
}

impl StoreError {
    /// Whether the storage handle is unusable after this error (redb refuses every later
    /// operation after an I/O error, until the database is opened again).
    pub(crate) fn lost_handle(&self) -> bool {
        match self {
            StoreError::NoSpace { .. } => true,
            StoreError::Db { source, .. } => {
                matches!(source, redb::Error::Io(_) | redb::Error::PreviousIo)
            }
            StoreError::Commit(inner) => inner.lost_handle(),
            _ => false,
        }
    }
}

/// Wraps any redb error with the operation that failed: `.map_err(db("commit"))`; a full
/// filesystem is [`StoreError::NoSpace`].
pub(crate) fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        redb::Error::Io(io) if no_space(&io) => StoreError::NoSpace { op },
        source => StoreError::Db { op, source },
    }
}

pub(crate) fn no_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
