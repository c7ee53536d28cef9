//! Field ownership (`metadata.managedFields`) and server-side apply's conflicts, a subset of
//! the API server's structured-merge-diff
//! (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>).
//!
//! A field set is a set of paths in the `FieldsV1` form: `f:<field>` steps through a map,
//! `k:{"<merge key>":<value>}` picks a list item by the list's strategic-merge key
//! (`spec.containers` by `name`, `ports` by `containerPort`, `env` by `name`, …; see
//! `patch/keys.rs`). A path ending at a list item marks the item itself; other paths end at a
//! leaf: a scalar, an empty map, or a list without a merge key (owned as a whole). `status`
//! and the metadata the server sets are never owned.
//!
//! - Apply (`kubectl apply --server-side`): the manager owns exactly the fields of its
//!   configuration. A field another manager owns with a different value is a conflict, unless
//!   forced (`--force-conflicts`), which moves it to the applier. Fields the manager applied
//!   before and no longer does are removed from the object when nobody else owns them.
//! - Update (create, replace, patch): the writer takes the fields whose value it changed.

use crate::patch::keys::{merge_key, MergeStrategy};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One path in a field set: `f:`/`k:` steps.
pub type FieldPath = Vec<String>;
/// The fields a manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// The metadata fields the server sets or that identify the object: never owned.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The annotation kubectl keeps for client-side apply; kubectl rewrites it under its own
/// managers (`kubectl-last-applied`) on every apply, so it never conflicts.
const LAST_APPLIED: &str = "f:kubectl.kubernetes.io/last-applied-configuration";

/// The field set of `object` (every field it sets) for a kind.
pub fn field_set(kind: &str, object: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    if let Some(map) = object.as_object() {
        for (k, v) in map {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    let Some(meta) = v.as_object() else { continue };
                    for (mk, mv) in meta {
                        if SERVER_METADATA.contains(&mk.as_str()) {
                            continue;
                        }
                        let path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                        walk(kind, &format!("metadata.{mk}"), mv, path, &mut set);
                    }
                }
                _ => walk(kind, k, v, vec![format!("f:{k}")], &mut set),
            }
        }
    }
    set
}

fn walk(kind: &str, schema: &str, value: &Value, path: FieldPath, set: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut child = path.clone();
                child.push(format!("f:{k}"));
                walk(kind, &format!("{schema}.{k}"), v, child, set);
            }
        }
        Value::Array(items) => match merge_key(kind, schema) {
            Some(MergeStrategy::ByKey(key)) if items.iter().all(|i| i.get(key).is_some()) => {
                for item in items {
                    let mut child = path.clone();
                    child.push(key_step(key, &item[key]));
                    set.insert(child.clone());
                    if let Some(fields) = item.as_object() {
                        for (k, v) in fields {
                            let mut grandchild = child.clone();
                            grandchild.push(format!("f:{k}"));
                            walk(kind, &format!("{schema}[].{k}"), v, grandchild, set);
                        }
                    }
                }
            }
            _ => {
                set.insert(path);
            }
        },
        _ => {
            set.insert(path);
        }
    }
}

fn key_step(key: &str, value: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    format!("k:{}", Value::Object(m))
}

/// The value at `path` in `object`, if there is one.
pub fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = object;
    for step in path {
        at = if let Some(field) = step.strip_prefix("f:") {
            at.get(field)?
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            at.as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else {
            return None;
        };
    }
    Some(at)
}

/// Removes the field or list item at `path` from `object`, if it is there.
fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut at = object;
    for step in parent_path {
        let next = if let Some(field) = step.strip_prefix("f:") {
            at.get_mut(field)
        } else if let Some(key) = step.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            at.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
            })
        } else {
            None
        };
        let Some(next) = next else { return };
        at = next;
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = at.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Ok(key), Some(items)) = (
            serde_json::from_str::<Map<String, Value>>(key),
            at.as_array_mut(),
        ) {
            items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    }
}

/// A path as the API server prints it in conflicts: `.spec.containers[name="x"].image`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(field) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    out
}

/// The FieldsV1 trie of a set: `{"f:spec":{"f:containers":{"k:{…}":{".":{},"f:image":{}}}}}`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let child = node
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(child) = child {
            insert(child, rest);
        }
    }
    // Members that also have members below them get a "." child.
    fn mark(node: &mut Map<String, Value>, set: &FieldSet, path: &mut FieldPath) {
        for (k, v) in node.iter_mut() {
            path.push(k.clone());
            if let Value::Object(child) = v {
                if !child.is_empty() {
                    mark(child, set, path);
                    if set.contains(path) {
                        child.insert(".".into(), json!({}));
                    }
                }
            }
            path.pop();
        }
    }
    let mut root = Map::new();
    for path in set {
        insert(&mut root, path);
    }
    mark(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

/// The set a FieldsV1 trie describes.
pub fn from_fields_v1(fields: &Value) -> FieldSet {
    fn go(node: &Map<String, Value>, path: &mut FieldPath, set: &mut FieldSet) {
        for (k, v) in node {
            if k == "." {
                set.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            match v.as_object() {
                Some(child) if !child.is_empty() => go(child, path, set),
                _ => {
                    set.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut set = FieldSet::new();
    if let Some(root) = fields.as_object() {
        go(root, &mut Vec::new(), &mut set);
    }
    set
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// The entries of an object (unreadable ones dropped).
pub fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str()?.to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or("v1").to_string(),
                time: e["time"].as_str().unwrap_or("").to_string(),
                fields: from_fields_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

/// Writes `entries` into the object's metadata (empty sets dropped; none at all: no field).
pub fn set_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            })
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn upsert(
    entries: &mut Vec<Entry>,
    manager: &str,
    operation: &str,
    api_version: &str,
    now: &str,
) -> usize {
    match entries
        .iter()
        .position(|e| e.manager == manager && e.operation == operation)
    {
        Some(i) => {
            entries[i].time = now.to_string();
            entries[i].api_version = api_version.to_string();
            i
        }
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    }
}

/// A field another manager owns with a different value than the applied one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: FieldPath,
}

/// The API server's message for conflicts: `Apply failed with 1 conflict: conflict with "a"
/// using v1: .spec.containers[name="x"].image`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_manager: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry((&c.manager, &c.api_version))
            .or_default()
            .push(display(&c.path));
    }
    let parts: Vec<String> = by_manager
        .iter()
        .map(|((manager, version), paths)| match paths.as_slice() {
            [one] => format!("conflict with {manager:?} using {version}: {one}"),
            many => format!(
                "conflicts with {manager:?} using {version}:\n- {}",
                many.join("\n- ")
            ),
        })
        .collect();
    let n = conflicts.len();
    let noun = if n == 1 { "conflict" } else { "conflicts" };
    format!("Apply failed with {n} {noun}: {}", parts.join("\n"))
}

/// What an apply does to ownership.
pub struct Applied {
    /// The entries after the apply.
    pub entries: Vec<Entry>,
    /// Fields the manager no longer applies and nobody else owns: to remove from the object.
    pub removed: Vec<FieldPath>,
}

/// Server-side apply of `config` by `manager` to `live` (which already has the configuration
/// merged in or not: only its current values are compared). Conflicts unless `force`.
pub fn apply(
    kind: &str,
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Applied, Vec<Conflict>> {
    let api_version = config["apiVersion"].as_str().unwrap_or("v1").to_string();
    let applied = field_set(kind, config);
    let mut entries = entries(live);
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| e.manager != manager) {
        for path in applied.intersection(&e.fields) {
            if path
                .last()
                .is_some_and(|s| s.starts_with("k:") || s == LAST_APPLIED)
            {
                continue;
            }
            // An empty map applied only says the map is there: its contents are others' fields.
            let applied_value = get(config, path);
            if applied_value.is_some_and(|v| v.as_object().is_some_and(Map::is_empty)) {
                continue;
            }
            if get(live, path) != applied_value {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for c in &conflicts {
        for e in entries.iter_mut().filter(|e| e.manager == c.manager) {
            e.fields.remove(&c.path);
        }
    }
    let mine = upsert(&mut entries, manager, "Apply", &api_version, now);
    let before = std::mem::replace(&mut entries[mine].fields, applied.clone());
    let others: FieldSet = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != mine)
        .flat_map(|(_, e)| e.fields.iter().cloned())
        .collect();
    let removed = before
        .difference(&applied)
        .filter(|p| !others.contains(*p) && !others.iter().any(|o| o.starts_with(p)))
        .cloned()
        .collect();
    Ok(Applied { entries, removed })
}

/// Removes the given fields from an object (see [`Applied::removed`]).
pub fn remove_fields(object: &mut Value, paths: &[FieldPath]) {
    for path in paths {
        remove(object, path);
    }
}

/// Ownership after a write that is not an apply (create, replace, patch) by `manager`: it takes
/// every field whose value it changed; fields gone from the object are owned by nobody. If the
/// write itself replaced `managedFields`, that is the starting point (kubectl rewrites it when
/// it moves client-side apply's fields to server-side apply).
pub fn update(kind: &str, old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let null = Value::Null;
    let old = old.unwrap_or(&null);
    let requested = &new["metadata"]["managedFields"];
    let base = if requested.is_array() && *requested != old["metadata"]["managedFields"] {
        new.clone()
    } else {
        old.clone()
    };
    let mut entries = entries(&base);
    let now_set = field_set(kind, new);
    let changed: FieldSet = now_set
        .iter()
        .filter(|p| get(old, p) != get(new, p))
        .cloned()
        .collect();
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| now_set.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let api_version = new["apiVersion"].as_str().unwrap_or("v1").to_string();
        let i = upsert(&mut entries, manager, "Update", &api_version, now);
        entries[i].fields.extend(changed);
    }
    set_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(image: &str, label: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": label}},
            "spec": {"containers": [{"name": "x", "image": image,
                                     "ports": [{"containerPort": 80}],
                                     "command": ["sh", "-c", "true"]}]}
        })
    }

    fn path(s: &[&str]) -> FieldPath {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sets_use_merge_keys_and_own_atomic_lists_whole() {
        let set = field_set("Pod", &pod("busybox", "a"));
        let item = r#"k:{"name":"x"}"#;
        for p in [
            path(&["f:metadata", "f:labels", "f:app"]),
            path(&["f:spec", "f:containers", item]),
            path(&["f:spec", "f:containers", item, "f:image"]),
            path(&["f:spec", "f:containers", item, "f:command"]),
            path(&[
                "f:spec",
                "f:containers",
                item,
                "f:ports",
                r#"k:{"containerPort":80}"#,
            ]),
        ] {
            assert!(set.contains(&p), "{p:?} in {set:?}");
        }
        assert!(!set
            .iter()
            .any(|p| p.contains(&"f:name".to_string()) && p.len() == 2));
        let trie = to_fields_v1(&set);
        assert_eq!(trie["f:spec"]["f:containers"][item]["."], json!({}));
        assert_eq!(from_fields_v1(&trie), set);
        assert_eq!(
            display(&path(&["f:spec", "f:containers", item, "f:image"])),
            r#".spec.containers[name="x"].image"#
        );
    }

    #[test]
    fn a_different_value_of_anothers_field_conflicts_unless_forced() {
        let mut live = pod("busybox", "a");
        let first = apply("Pod", &live, &pod("busybox", "a"), "a", false, "t").expect("first");
        set_entries(&mut live, &first.entries);
        // The same values: shared, no conflict.
        assert!(apply("Pod", &live, &pod("busybox", "a"), "b", false, "t").is_ok());
        let conflicts = apply("Pod", &live, &pod("nginx", "a"), "b", false, "t")
            .err()
            .expect("conflict");
        assert_eq!(
            conflict_message(&conflicts),
            r#"Apply failed with 1 conflict: conflict with "a" using v1: .spec.containers[name="x"].image"#
        );
        let two = apply("Pod", &live, &pod("nginx", "b"), "b", false, "t")
            .err()
            .expect("two");
        assert!(conflict_message(&two)
            .starts_with("Apply failed with 2 conflicts: conflicts with \"a\" using v1:\n- "));
        let forced = apply("Pod", &live, &pod("nginx", "a"), "b", true, "t").expect("forced");
        let image = path(&["f:spec", "f:containers", r#"k:{"name":"x"}"#, "f:image"]);
        let owner = |m: &str| {
            forced
                .entries
                .iter()
                .find(|e| e.manager == m)
                .expect(m)
                .fields
                .contains(&image)
        };
        assert!(owner("b") && !owner("a"));
    }

    #[test]
    fn fields_no_longer_applied_and_unshared_are_removed() {
        let mut live = pod("busybox", "a");
        let first = apply("Pod", &live, &live.clone(), "a", false, "t").expect("first");
        set_entries(&mut live, &first.entries);
        let mut smaller = pod("busybox", "a");
        smaller["metadata"]["labels"] = json!({});
        smaller["spec"]["containers"][0]["ports"] = json!([]);
        let applied = apply("Pod", &live, &smaller, "a", false, "t").expect("apply");
        remove_fields(&mut live, &applied.removed);
        assert_eq!(live["metadata"]["labels"], json!({}));
        assert_eq!(live["spec"]["containers"][0]["ports"], json!([]));
        assert_eq!(live["spec"]["containers"][0]["image"], "busybox");
    }

    #[test]
    fn updates_take_what_they_change() {
        let mut created = pod("busybox", "a");
        update("Pod", None, &mut created, "kubectl-create", "t");
        let mut patched = created.clone();
        patched["metadata"]["labels"]["app"] = json!("b");
        update("Pod", Some(&created), &mut patched, "kubectl-label", "t");
        let e = entries(&patched);
        let label = path(&["f:metadata", "f:labels", "f:app"]);
        assert_eq!(e.len(), 2);
        assert!(e[1].manager == "kubectl-label" && e[1].fields.contains(&label));
        assert!(!e[0].fields.contains(&label) && e[0].operation == "Update");
    }
}
