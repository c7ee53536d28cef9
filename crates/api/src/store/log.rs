//! Revision log entries: what each revision did, kept so that a watch can start from an old
//! resourceVersion (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>).
//!
//! An entry is `kind (1 byte) | key length (u32 BE) | key | object length (u32 BE) | object JSON
//! | previous object JSON`. The key comes first and undecoded so a replay can skip other
//! resources without parsing JSON; a MODIFIED entry keeps the previous object so that a filtered
//! watch can tell whether the object started or stopped matching.

use serde_json::Value;

use super::error::StoreError;

/// The type of a watch event (and of a logged change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    /// The `type` of a watch event on the wire: `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            EventKind::Added => 1,
            EventKind::Modified => 2,
            EventKind::Deleted => 3,
        }
    }

    fn from_byte(b: u8) -> Option<EventKind> {
        match b {
            1 => Some(EventKind::Added),
            2 => Some(EventKind::Modified),
            3 => Some(EventKind::Deleted),
            _ => None,
        }
    }
}

/// One committed change, as logged and as fanned out to live watchers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub revision: u64,
    pub kind: EventKind,
    /// The encoded key (see `key.rs`).
    pub key: Vec<u8>,
    /// The object after the change; for DELETED, its last state with the deletion's revision.
    pub object: Value,
    /// The object before a MODIFIED change.
    pub prev: Option<Value>,
}

pub(crate) fn encode(kind: EventKind, key: &[u8], object: &[u8], prev: Option<&[u8]>) -> Vec<u8> {
    let prev = prev.unwrap_or_default();
    let mut out = Vec::with_capacity(9 + key.len() + object.len() + prev.len());
    out.push(kind.to_byte());
    push_chunk(&mut out, key);
    push_chunk(&mut out, object);
    out.extend_from_slice(prev);
    out
}

fn push_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    // Keys and objects are far below 4 GiB (redb values are limited to 3 GiB).
    let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(chunk);
}

fn take_chunk(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?);
    rest.split_at_checked(usize::try_from(len).ok()?)
}

/// The encoded key of an entry, without parsing its JSON.
pub(crate) fn entry_key(bytes: &[u8]) -> Option<&[u8]> {
    take_chunk(bytes.get(1..)?).map(|(key, _)| key)
}

pub(crate) fn decode(revision: u64, bytes: &[u8]) -> Result<Change, StoreError> {
    let corrupt = |reason, source| StoreError::Corrupt {
        entry: format!("log revision {revision}"),
        reason,
        source,
    };
    let (&kind, rest) = bytes.split_first().ok_or(corrupt("empty entry", None))?;
    let kind = EventKind::from_byte(kind).ok_or(corrupt("unknown event kind", None))?;
    let (key, rest) = take_chunk(rest).ok_or(corrupt("truncated key", None))?;
    let (object, prev) = take_chunk(rest).ok_or(corrupt("truncated object", None))?;
    let object = serde_json::from_slice(object).map_err(|e| corrupt("object JSON", Some(e)))?;
    let prev = if prev.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(prev).map_err(|e| corrupt("previous object JSON", Some(e)))?)
    };
    Ok(Change {
        revision,
        kind,
        key: key.to_vec(),
        object,
        prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_round_trip() {
        let obj = json!({"metadata": {"name": "a"}});
        let prev = json!({"metadata": {"name": "a"}, "spec": 1});
        let cases = [
            (EventKind::Added, None),
            (EventKind::Modified, Some(prev)),
            (EventKind::Deleted, None),
        ];
        for (kind, prev) in cases {
            let prev_json = prev.as_ref().map(|p| p.to_string().into_bytes());
            let bytes = encode(
                kind,
                b"pods\0ns\0a",
                obj.to_string().as_bytes(),
                prev_json.as_deref(),
            );
            assert_eq!(entry_key(&bytes), Some(&b"pods\0ns\0a"[..]));
            let change = decode(7, &bytes).expect("decodes");
            let want = Change {
                revision: 7,
                kind,
                key: b"pods\0ns\0a".to_vec(),
                object: obj.clone(),
                prev,
            };
            assert_eq!(change, want);
        }
    }

    #[test]
    fn corrupt_entries() {
        let good = encode(EventKind::Added, b"k", b"{}", None);
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![9, 0, 0, 0, 0],
            vec![1, 0, 0],
            vec![1, 0, 0, 0, 5, b'k'],
            good[..good.len() - 1].to_vec(),
            encode(EventKind::Added, b"k", b"{", None),
            encode(EventKind::Modified, b"k", b"{}", Some(b"[")),
        ];
        for bytes in cases {
            assert!(
                matches!(decode(1, &bytes), Err(StoreError::Corrupt { .. })),
                "{bytes:?}"
            );
        }
    }
}
