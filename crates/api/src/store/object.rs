//! The metadata the store owns, as pure functions over JSON: resourceVersion, uid,
//! creationTimestamp and generation on create and update, following the API server's
//! `rest.BeforeCreate`/`BeforeUpdate`
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions>,
//! <https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/>).

use serde_json::{Map, Value};

use super::error::StoreError;
use super::key::ObjectKey;

/// Values a create may need, made outside the pure functions (randomness and the clock).
#[derive(Debug, Clone)]
pub(crate) struct Fresh {
    pub uid: String,
    pub timestamp: String,
}

/// Stamps a new object: name and namespace from the key, uid and creationTimestamp when absent,
/// generation 1, resourceVersion `revision`.
pub(crate) fn prepare_create(
    key: &ObjectKey,
    object: &mut Value,
    revision: u64,
    fresh: Fresh,
) -> Result<(), StoreError> {
    let meta = metadata_mut(key, object)?;
    check_identity(key, meta)?;
    if !has_text(meta, "uid") {
        meta.insert("uid".into(), fresh.uid.into());
    }
    if !has_text(meta, "creationTimestamp") {
        meta.insert("creationTimestamp".into(), fresh.timestamp.into());
    }
    meta.insert("generation".into(), 1.into());
    meta.insert("resourceVersion".into(), revision.to_string().into());
    Ok(())
}

/// Stamps a replacement for `stored`: uid and creationTimestamp (and a deletionTimestamp once
/// set) are kept from `stored`, generation is bumped when anything outside `metadata` and
/// `status` changed, resourceVersion becomes `revision`.
pub(crate) fn prepare_update(
    key: &ObjectKey,
    stored: &Value,
    object: &mut Value,
    revision: u64,
) -> Result<(), StoreError> {
    let bump = spec_changed(stored, object);
    let meta = metadata_mut(key, object)?;
    check_identity(key, meta)?;
    let old = stored.get("metadata").and_then(Value::as_object);
    for field in ["uid", "creationTimestamp"] {
        match old.and_then(|m| m.get(field)) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    // An update can never remove or change a deletion timestamp (rest.BeforeUpdate).
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        if let Some(v) = old.and_then(|m| m.get(field)).filter(|v| !v.is_null()) {
            meta.insert(field.into(), v.clone());
        }
    }
    let generation = old
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if bump { generation + 1 } else { generation };
    meta.insert("generation".into(), generation.into());
    meta.insert("resourceVersion".into(), revision.to_string().into());
    Ok(())
}

/// Sets `metadata.resourceVersion` (the DELETED event's object carries the deletion's revision).
pub(crate) fn set_resource_version(
    key: &ObjectKey,
    object: &mut Value,
    revision: u64,
) -> Result<(), StoreError> {
    let meta = metadata_mut(key, object)?;
    meta.insert("resourceVersion".into(), revision.to_string().into());
    Ok(())
}

/// Whether an update changed anything other than `metadata` and `status`.
pub(crate) fn spec_changed(old: &Value, new: &Value) -> bool {
    let body = |v: &Value| -> Map<String, Value> {
        let mut map = v.as_object().cloned().unwrap_or_default();
        map.remove("metadata");
        map.remove("status");
        map
    };
    body(old) != body(new)
}

/// The resourceVersion of an object the store wrote.
pub(crate) fn stored_revision(key: &ObjectKey, object: &Value) -> Result<u64, StoreError> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            entry: key.to_string(),
            reason: "stored object without a numeric resourceVersion",
            source: None,
        })
}

/// The resourceVersion precondition an incoming object carries: `None` when absent or empty.
pub(crate) fn requested_revision(
    key: &ObjectKey,
    object: &Value,
) -> Result<Option<u64>, StoreError> {
    match object.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| invalid_rv(key, s.clone())),
        Some(other) => Err(invalid_rv(key, other.to_string())),
    }
}

fn invalid_rv(key: &ObjectKey, value: String) -> StoreError {
    StoreError::InvalidResourceVersion {
        key: key.clone(),
        value,
    }
}

/// `Conflict` unless `expected` (when given) is the stored revision.
pub(crate) fn check_precondition(
    key: &ObjectKey,
    expected: Option<u64>,
    actual: u64,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != actual => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

fn has_text(meta: &Map<String, Value>, field: &str) -> bool {
    meta.get(field)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

fn metadata_mut<'a>(
    key: &ObjectKey,
    object: &'a mut Value,
) -> Result<&'a mut Map<String, Value>, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidObject {
        key: key.clone(),
        reason: reason.to_string(),
    };
    let map = object
        .as_object_mut()
        .ok_or_else(|| invalid("not a JSON object"))?;
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata is not an object"))
}

/// Fills name and namespace from the key; a different name or namespace in the object is an
/// error, except that cluster-scoped objects lose any namespace (as `rest.BeforeCreate` does).
fn check_identity(key: &ObjectKey, meta: &mut Map<String, Value>) -> Result<(), StoreError> {
    let mismatch = |field: &str, found: &Value| StoreError::InvalidObject {
        key: key.clone(),
        reason: format!("metadata.{field} {found} does not match the key"),
    };
    match meta.get("name") {
        None | Some(Value::Null) => {
            meta.insert("name".into(), key.name.clone().into());
        }
        Some(Value::String(n)) if *n == key.name => {}
        Some(other) => return Err(mismatch("name", other)),
    }
    match (&key.namespace, meta.get("namespace")) {
        (None, _) => {
            meta.remove("namespace");
        }
        (Some(ns), None | Some(Value::Null)) => {
            meta.insert("namespace".into(), ns.clone().into());
        }
        (Some(ns), Some(Value::String(found))) if found == ns => {}
        (Some(_), Some(other)) => return Err(mismatch("namespace", other)),
    }
    Ok(())
}

/// Formats 16 random bytes as a version 4 UUID (RFC 9562 section 5.4).
pub(crate) fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Now as the API server writes timestamps: RFC 3339, whole seconds, UTC with `Z`.
pub(crate) fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey::namespaced("pods", "default", "web")
    }

    fn fresh() -> Fresh {
        Fresh {
            uid: "u-new".into(),
            timestamp: "2024-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn create_stamps_metadata() {
        let mut obj = json!({"spec": {}, "metadata": {"labels": {"a": "b"}, "generation": 7}});
        prepare_create(&key(), &mut obj, 9, fresh()).expect("ok");
        assert_eq!(
            obj["metadata"],
            json!({"name": "web", "namespace": "default", "labels": {"a": "b"},
                   "uid": "u-new", "creationTimestamp": "2024-01-02T03:04:05Z",
                   "generation": 1, "resourceVersion": "9"})
        );
        let mut kept = json!({"metadata": {"uid": "u1", "creationTimestamp": "t0"}});
        prepare_create(&key(), &mut kept, 1, fresh()).expect("ok");
        assert_eq!(kept["metadata"]["uid"], "u1");
        assert_eq!(kept["metadata"]["creationTimestamp"], "t0");
        let mut node = json!({"metadata": {"namespace": "default"}});
        prepare_create(&ObjectKey::cluster("nodes", "n"), &mut node, 1, fresh()).expect("ok");
        assert_eq!(node["metadata"].get("namespace"), None);
    }

    #[test]
    fn create_rejects_bad_objects() {
        let cases = [
            json!([]),
            json!("x"),
            json!({"metadata": []}),
            json!({"metadata": {"name": "other"}}),
            json!({"metadata": {"name": 1}}),
            json!({"metadata": {"namespace": "other"}}),
        ];
        for mut obj in cases {
            let shown = obj.to_string();
            let err = prepare_create(&key(), &mut obj, 1, fresh()).expect_err(&shown);
            assert!(matches!(err, StoreError::InvalidObject { .. }), "{shown}");
        }
    }

    #[test]
    fn update_generation_rules() {
        let stored = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 3,
                         "creationTimestamp": "t0", "resourceVersion": "5", "labels": {"a": "1"}},
            "spec": {"x": 1}, "status": {"phase": "Pending"}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = stored.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(&str, Value, i64)> = vec![
            ("unchanged", stored.clone(), 3),
            (
                "label",
                with(&|v| v["metadata"]["labels"]["a"] = "2".into()),
                3,
            ),
            (
                "status",
                with(&|v| v["status"]["phase"] = "Running".into()),
                3,
            ),
            ("spec", with(&|v| v["spec"]["x"] = 2.into()), 4),
            (
                "new top-level field",
                with(&|v| v["data"] = json!({"k": "v"})),
                4,
            ),
            (
                "removed spec",
                with(&|v| drop(v.as_object_mut().map(|m| m.remove("spec")))),
                4,
            ),
            (
                "client generation ignored",
                with(&|v| v["metadata"]["generation"] = 99.into()),
                3,
            ),
        ];
        for (name, mut obj, generation) in cases {
            prepare_update(&key(), &stored, &mut obj, 6).expect(name);
            assert_eq!(obj["metadata"]["generation"], generation, "{name}");
            assert_eq!(obj["metadata"]["resourceVersion"], "6", "{name}");
        }
    }

    #[test]
    fn update_keeps_system_fields() {
        let stored = json!({"metadata": {"uid": "u1", "creationTimestamp": "t0",
                                         "deletionTimestamp": "t1", "generation": 1}});
        let mut obj = json!({"metadata": {"uid": "other", "creationTimestamp": "t9"}});
        prepare_update(&key(), &stored, &mut obj, 2).expect("ok");
        let meta = &obj["metadata"];
        assert_eq!(
            (
                &meta["uid"],
                &meta["creationTimestamp"],
                &meta["deletionTimestamp"]
            ),
            (&json!("u1"), &json!("t0"), &json!("t1"))
        );
    }

    #[test]
    fn requested_revisions() {
        let cases = [
            (json!({}), Ok(None)),
            (json!({"metadata": {}}), Ok(None)),
            (json!({"metadata": {"resourceVersion": ""}}), Ok(None)),
            (json!({"metadata": {"resourceVersion": "12"}}), Ok(Some(12))),
            (json!({"metadata": {"resourceVersion": "x"}}), Err(())),
            (json!({"metadata": {"resourceVersion": 12}}), Err(())),
        ];
        for (obj, want) in cases {
            let got = requested_revision(&key(), &obj).map_err(|_| ());
            assert_eq!(got, want, "{obj}");
        }
    }

    #[test]
    fn preconditions() {
        assert!(check_precondition(&key(), None, 5).is_ok());
        assert!(check_precondition(&key(), Some(5), 5).is_ok());
        assert!(matches!(
            check_precondition(&key(), Some(4), 5),
            Err(StoreError::Conflict {
                expected: 4,
                actual: 5,
                ..
            })
        ));
    }

    #[test]
    fn uuids_are_version_4() {
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let ts = now_timestamp();
        assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    }
}
