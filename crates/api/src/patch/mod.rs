//! Applying the body of a `PATCH` request to a stored object: JSON patch (RFC 6902), JSON merge
//! patch (RFC 7386) and Kubernetes' strategic merge patch, which is what `kubectl apply` and
//! `kubectl patch` send by default
//! (<https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/>).
//!
//! Everything here is a pure function over `serde_json::Value`: the HTTP layer picks the
//! [`PatchType`] from the `Content-Type`, calls [`apply_patch`], then decodes, defaults and
//! validates the result like any other write. Checks that the patch did not change the object's
//! identity (kind, name, namespace, uid) belong to that caller, not here.
//!
//! `json.rs` holds RFC 6902, `strategic.rs` the strategic merge, `keys.rs` the table of which
//! lists merge by which key; RFC 7386 is short enough to live here.

mod json;
pub mod keys;
mod strategic;

pub use json::json_patch;
pub use keys::{merge_key, MergeStrategy};
pub use strategic::strategic_merge_patch;

use serde_json::{Map, Value};

/// The three patch formats the API server accepts, named by their media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`: a list of RFC 6902 operations.
    Json,
    /// `application/merge-patch+json`: RFC 7386, lists are replaced whole.
    Merge,
    /// `application/strategic-merge-patch+json`: lists merged by key, with `$patch` directives.
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a request's `Content-Type`, ignoring parameters such as `charset`.
    /// `None` for anything else, including server-side apply (`application/apply-patch+yaml`).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media_type = ct.split(';').next().unwrap_or_default().trim();
        [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge]
            .into_iter()
            .find(|t| t.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type naming this patch type, e.g. for a 415 response listing what is accepted.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

/// Applies `patch` to `original`, an object of kind `kind` (which only matters for strategic
/// merge patches). The result must still be a JSON object.
pub fn apply_patch(
    kind: &str,
    original: &Value,
    patch: &Value,
    patch_type: PatchType,
) -> Result<Value, PatchError> {
    let patched = match patch_type {
        PatchType::Json => json_patch(original, patch)?,
        PatchType::Merge => {
            require_object(patch, "merge patch")?;
            merge_patch(original, patch)
        }
        PatchType::StrategicMerge => strategic_merge_patch(kind, original, patch)?,
    };
    require_object(&patched, "patched object")?;
    Ok(patched)
}

/// JSON merge patch (RFC 7386, <https://www.rfc-editor.org/rfc/rfc7386>) as its §2
/// `MergePatch` pseudo-code: objects merge key by key, `null` removes a key, anything else
/// (lists included) replaces. This is what `kubectl patch --type=merge` sends and the only patch
/// type the API server accepts for custom resources. Total: every pair of values has a result.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            remove_key(&mut target, key);
        } else {
            let merged = merge_patch(target.get(key).unwrap_or(&Value::Null), value);
            target.insert(key.clone(), merged);
        }
    }
    Value::Object(target)
}

/// Why a patch could not be applied, saying which operation or field was at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("{what} must be a JSON object, got {found}")]
    NotAnObject {
        what: &'static str,
        found: &'static str,
    },
    #[error("json patch must be a JSON array of operations, got {found}")]
    NotAnOperationList { found: &'static str },
    #[error("json patch operation {index}: must be a JSON object")]
    OpNotAnObject { index: usize },
    #[error("json patch operation {index}: {field:?} is missing or not a string")]
    OpFieldMissing { index: usize, field: &'static str },
    #[error("json patch operation {index} ({op}): \"value\" is missing")]
    OpValueMissing { index: usize, op: &'static str },
    #[error(
        "json patch operation {index}: unknown op {op:?}, \
         expected add, remove, replace, move, copy or test"
    )]
    UnknownOp { index: usize, op: String },
    #[error("json patch operation {index} ({op}): invalid JSON pointer {pointer:?}: {problem}")]
    InvalidPointer {
        index: usize,
        op: &'static str,
        pointer: String,
        problem: &'static str,
    },
    #[error("json patch operation {index} ({op}): path {path:?} does not exist")]
    PathNotFound {
        index: usize,
        op: &'static str,
        path: String,
    },
    #[error(
        "json patch operation {index} ({op}): path {path:?}: \
         {token:?} is not a valid index into an array of length {len}"
    )]
    BadArrayIndex {
        index: usize,
        op: &'static str,
        path: String,
        token: String,
        len: usize,
    },
    #[error("json patch operation {index} ({op}): path {path:?} goes through a {found}")]
    NotAContainer {
        index: usize,
        op: &'static str,
        path: String,
        found: &'static str,
    },
    #[error("json patch operation {index} ({op}): cannot remove the whole document")]
    RemoveRoot { index: usize, op: &'static str },
    #[error(
        "json patch operation {index} (move): cannot move {from:?} into its own child {path:?}"
    )]
    MoveIntoChild {
        index: usize,
        from: String,
        path: String,
    },
    #[error("json patch operation {index} (test): value at {path:?} is not the expected value")]
    TestFailed { index: usize, path: String },
    #[error(
        "{path}: unknown $patch directive {value}, expected \"replace\", \"delete\" or \"merge\""
    )]
    UnknownPatchDirective { path: String, value: String },
    #[error("{path}: {directive} must be {expected}")]
    MalformedDirective {
        path: String,
        directive: String,
        expected: &'static str,
    },
    #[error("{path}: item {index} must be an object because the list is merged by {key:?}")]
    ItemNotAnObject {
        path: String,
        index: usize,
        key: &'static str,
    },
    #[error("{path}: item {index} has no merge key {key:?}")]
    MissingMergeKey {
        path: String,
        index: usize,
        key: &'static str,
    },
    #[error("{path}: {key:?} is in the patch but not in $retainKeys")]
    NotInRetainKeys { path: String, key: String },
}

fn require_object(value: &Value, what: &'static str) -> Result<(), PatchError> {
    match value {
        Value::Object(_) => Ok(()),
        other => Err(PatchError::NotAnObject {
            what,
            found: type_name(other),
        }),
    }
}

/// The JSON type of a value, for error messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality as RFC 6902 `test` defines it: numbers compare by value, so `1` equals `1.0`.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Removes `key` keeping the order of the other keys whichever map serde_json is built with
/// (with `preserve_order`, `Map::remove` swaps the last key into the hole).
fn remove_key(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let mut removed = None;
    if map.contains_key(key) {
        for (k, v) in std::mem::take(map) {
            if k == key {
                removed = Some(v);
            } else {
                map.insert(k, v);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        let cases = [
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/strategic-merge-patch+json",
                Some(PatchType::StrategicMerge),
            ),
            (
                "Application/Merge-Patch+JSON; charset=utf-8",
                Some(PatchType::Merge),
            ),
            (" application/json-patch+json ", Some(PatchType::Json)),
            ("application/apply-patch+yaml", None),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn equality_is_numeric() {
        let cases = [
            (json!(1), json!(1.0), true),
            (json!(-1), json!(-1), true),
            (json!(1), json!(2), false),
            (
                json!({"a": [1, {"b": 2.0}]}),
                json!({"a": [1.0, {"b": 2}]}),
                true,
            ),
            (json!({"a": 1}), json!({"a": 1, "b": 1}), false),
            (json!([1]), json!([1, 1]), false),
            (json!("1"), json!(1), false),
            (json!(null), json!(null), true),
        ];
        for (a, b, want) in cases {
            assert_eq!(values_equal(&a, &b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn remove_key_keeps_the_others() {
        let mut map = json!({"a": 1, "b": 2, "c": 3})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(remove_key(&mut map, "a"), Some(json!(1)));
        assert_eq!(remove_key(&mut map, "x"), None);
        assert_eq!(Value::Object(map), json!({"b": 2, "c": 3}));
    }
}
