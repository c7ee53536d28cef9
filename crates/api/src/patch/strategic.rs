//! Strategic merge patch: a JSON merge patch that knows which lists to merge by key (see
//! [`merge_key`]) and obeys the `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` directives kubectl puts in it
//! (<https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md>).
//!
//! A value the patch adds where the original has nothing is merged into an empty value, so
//! nulls and directives inside it are applied rather than stored: directive keys never reach
//! the result.

use super::keys::{merge_key, MergeStrategy};
use super::{remove_key, type_name, values_equal, PatchError};
use serde_json::{Map, Value};

type Object = Map<String, Value>;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to an object of kind `kind` ("Pod", "Service", ...).
/// A top-level `$patch: delete` leaves an empty object.
pub fn strategic_merge_patch(
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            what: "strategic merge patch",
            found: type_name(patch),
        });
    };
    let base = original.as_object().cloned().unwrap_or_default();
    let merged = Merger { kind }.map(base, patch, &Loc::default())?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Where the merge is: `schema` is the path [`merge_key`] understands
/// (`spec.containers[].ports`), `shown` the one errors print (`spec.containers[name=web].ports`).
#[derive(Debug, Default)]
struct Loc {
    schema: String,
    shown: String,
}

impl Loc {
    fn field(&self, name: &str) -> Loc {
        let join = |base: &str| match base {
            "" => name.to_string(),
            _ => format!("{base}.{name}"),
        };
        Loc {
            schema: join(&self.schema),
            shown: join(&self.shown),
        }
    }

    fn item(&self, label: &str) -> Loc {
        Loc {
            schema: format!("{}[]", self.schema),
            shown: format!("{}[{label}]", self.shown),
        }
    }

    fn path(&self) -> String {
        match self.shown.as_str() {
            "" => "<root>".to_string(),
            shown => shown.to_string(),
        }
    }
}

/// The `$patch` directive of a map.
#[derive(Debug, PartialEq, Eq)]
enum Directive {
    Merge,
    Replace,
    Delete,
}

fn directive(patch: &Object, loc: &Loc) -> Result<Directive, PatchError> {
    match patch.get(PATCH).map(|v| (v, v.as_str())) {
        None | Some((_, Some("merge"))) => Ok(Directive::Merge),
        Some((_, Some("replace"))) => Ok(Directive::Replace),
        Some((_, Some("delete"))) => Ok(Directive::Delete),
        Some((value, _)) => Err(PatchError::UnknownPatchDirective {
            path: loc.path(),
            value: value.to_string(),
        }),
    }
}

fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// `{"$patch": "replace"}` as a list item: replace the whole list with the other items.
fn is_replace_marker(item: &Value) -> bool {
    item.get(PATCH).and_then(Value::as_str) == Some("replace")
}

struct Merger<'k> {
    kind: &'k str,
}

impl Merger<'_> {
    /// Merges `patch` into `original`; `None` when the patch deletes the whole map.
    fn map(
        &self,
        mut original: Object,
        patch: &Object,
        loc: &Loc,
    ) -> Result<Option<Object>, PatchError> {
        match directive(patch, loc)? {
            Directive::Delete => return Ok(None),
            Directive::Replace => {
                let mut rest = patch.clone();
                remove_key(&mut rest, PATCH);
                return self.map(Object::new(), &rest, loc);
            }
            Directive::Merge => {}
        }
        if let Some(keys) = patch.get(RETAIN_KEYS) {
            retain_keys(&mut original, keys, patch, loc)?;
        }
        for (key, values) in patch {
            if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                delete_from_primitive_list(&mut original, field, values, loc)?;
            }
        }
        for (key, value) in patch.iter().filter(|(k, _)| !is_directive(k)) {
            let current = original.get_mut(key).map(std::mem::take);
            match self.value(current, value, &loc.field(key))? {
                Some(merged) => {
                    original.insert(key.clone(), merged);
                }
                None => {
                    remove_key(&mut original, key);
                }
            }
        }
        for (key, order) in patch {
            if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
                self.set_element_order(&mut original, field, order, loc)?;
            }
        }
        Ok(Some(original))
    }

    /// Merges one field's patch value into its current value; `None` deletes the field.
    fn value(
        &self,
        current: Option<Value>,
        patch: &Value,
        loc: &Loc,
    ) -> Result<Option<Value>, PatchError> {
        Ok(match patch {
            Value::Null => None,
            Value::Object(patch) => {
                let base = match current {
                    Some(Value::Object(map)) => map,
                    _ => Object::new(),
                };
                self.map(base, patch, loc)?.map(Value::Object)
            }
            Value::Array(patch) => {
                let base = match current {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                Some(Value::Array(self.list(base, patch, loc)?))
            }
            scalar => Some(scalar.clone()),
        })
    }

    fn list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        loc: &Loc,
    ) -> Result<Vec<Value>, PatchError> {
        if patch.iter().any(is_replace_marker) {
            let rest: Vec<Value> = patch
                .iter()
                .filter(|i| !is_replace_marker(i))
                .cloned()
                .collect();
            return self.replaced(&rest, loc);
        }
        match merge_key(self.kind, &loc.schema) {
            Some(MergeStrategy::ByKey(key)) => self.merge_by_key(original, patch, key, loc),
            Some(MergeStrategy::Primitives) => Ok(union(original, patch)),
            Some(MergeStrategy::Replace) | None => self.replaced(patch, loc),
        }
    }

    /// The patch's items as the new list, each object merged into nothing.
    fn replaced(&self, patch: &[Value], loc: &Loc) -> Result<Vec<Value>, PatchError> {
        let mut items = Vec::with_capacity(patch.len());
        for (i, item) in patch.iter().enumerate() {
            match item {
                Value::Object(map) => {
                    let merged = self.map(Object::new(), map, &loc.item(&i.to_string()))?;
                    items.extend(merged.map(Value::Object));
                }
                other => items.push(other.clone()),
            }
        }
        Ok(items)
    }

    fn merge_by_key(
        &self,
        mut items: Vec<Value>,
        patch: &[Value],
        key: &'static str,
        loc: &Loc,
    ) -> Result<Vec<Value>, PatchError> {
        for (index, item) in patch.iter().enumerate() {
            let Value::Object(item) = item else {
                return Err(PatchError::ItemNotAnObject {
                    path: loc.path(),
                    index,
                    key,
                });
            };
            let Some(id) = item.get(key) else {
                return Err(PatchError::MissingMergeKey {
                    path: loc.path(),
                    index,
                    key,
                });
            };
            let item_loc = loc.item(&format!("{key}={}", label(id)));
            let matches = |v: &Value| v.get(key).is_some_and(|v| values_equal(v, id));
            if directive(item, &item_loc)? == Directive::Delete {
                items.retain(|v| !matches(v));
                continue;
            }
            let at = items.iter().position(matches);
            let base = at
                .and_then(|at| items.get_mut(at))
                .and_then(|v| match std::mem::take(v) {
                    Value::Object(map) => Some(map),
                    _ => None,
                })
                .unwrap_or_default();
            let merged = self.map(base, item, &item_loc)?.map(Value::Object);
            match (at, merged) {
                (Some(at), Some(merged)) => items[at] = merged,
                (Some(at), None) => {
                    items.remove(at);
                }
                (None, Some(merged)) => items.push(merged),
                (None, None) => {}
            }
        }
        Ok(items)
    }

    /// `$setElementOrder/<field>`: the listed items first, in that order, then the rest.
    fn set_element_order(
        &self,
        map: &mut Object,
        field: &str,
        order: &Value,
        loc: &Loc,
    ) -> Result<(), PatchError> {
        let directive = format!("{SET_ELEMENT_ORDER}{field}");
        let Value::Array(order) = order else {
            return Err(malformed(loc, directive, "a list"));
        };
        let (key, wanted): (Option<&str>, Vec<&Value>) =
            match merge_key(self.kind, &loc.field(field).schema) {
                Some(MergeStrategy::ByKey(key)) => {
                    let ids = order.iter().map(|o| o.get(key)).collect::<Option<_>>();
                    let expected = "a list of objects with the merge key";
                    (
                        Some(key),
                        ids.ok_or_else(|| malformed(loc, directive, expected))?,
                    )
                }
                Some(MergeStrategy::Primitives) => (None, order.iter().collect()),
                // Only merged lists have an order to set; a replaced list is in patch order.
                Some(MergeStrategy::Replace) | None => return Ok(()),
            };
        if let Some(Value::Array(items)) = map.get_mut(field) {
            let ident = |v: &Value| -> Option<Value> {
                match key {
                    Some(key) => v.get(key).cloned(),
                    None => Some(v.clone()),
                }
            };
            *items = reorder(std::mem::take(items), &wanted, ident);
        }
        Ok(())
    }
}

/// `$retainKeys`: drop the original's fields not listed; the patch may only set listed ones.
fn retain_keys(
    original: &mut Object,
    keys: &Value,
    patch: &Object,
    loc: &Loc,
) -> Result<(), PatchError> {
    let keys: Vec<&str> = keys
        .as_array()
        .and_then(|keys| keys.iter().map(Value::as_str).collect())
        .ok_or_else(|| malformed(loc, RETAIN_KEYS.to_string(), "a list of field names"))?;
    let stray = patch
        .iter()
        .find(|(k, v)| !is_directive(k) && !v.is_null() && !keys.contains(&k.as_str()));
    if let Some((key, _)) = stray {
        return Err(PatchError::NotInRetainKeys {
            path: loc.path(),
            key: key.clone(),
        });
    }
    original.retain(|k, _| keys.contains(&k.as_str()));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: remove these values from the original list.
fn delete_from_primitive_list(
    original: &mut Object,
    field: &str,
    values: &Value,
    loc: &Loc,
) -> Result<(), PatchError> {
    let Value::Array(values) = values else {
        let directive = format!("{DELETE_FROM_PRIMITIVE_LIST}{field}");
        return Err(malformed(loc, directive, "a list"));
    };
    if let Some(Value::Array(items)) = original.get_mut(field) {
        items.retain(|item| !values.iter().any(|v| values_equal(v, item)));
    }
    Ok(())
}

/// The original items followed by the patch's items not already present.
fn union(mut items: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    for value in patch {
        if !items.iter().any(|item| values_equal(item, value)) {
            items.push(value.clone());
        }
    }
    items
}

/// The items whose identity appears in `order`, in that order, then the others in their
/// original order.
fn reorder(
    items: Vec<Value>,
    order: &[&Value],
    ident: impl Fn(&Value) -> Option<Value>,
) -> Vec<Value> {
    let rank = |item: &Value| {
        let id = ident(item)?;
        order.iter().position(|o| values_equal(o, &id))
    };
    let mut ranked: Vec<(usize, Value)> = items
        .into_iter()
        .map(|item| (rank(&item).unwrap_or(order.len()), item))
        .collect();
    // A stable sort keeps duplicates and unlisted items in their original order.
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, item)| item).collect()
}

/// A merge key's value as it appears in a path: `name=web`, `containerPort=80`.
fn label(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn malformed(loc: &Loc, directive: String, expected: &'static str) -> PatchError {
    PatchError::MalformedDirective {
        path: loc.path(),
        directive,
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reorder_puts_listed_items_first() {
        let name = |v: &Value| v.get("name").cloned();
        let cases = [
            (
                json!([{"name": "a"}, {"name": "b"}]),
                json!(["b", "a"]),
                json!([{"name": "b"}, {"name": "a"}]),
            ),
            (
                json!([{"name": "x"}, {"name": "a"}, {"name": "y"}, {"name": "b"}]),
                json!(["b", "a"]),
                json!([{"name": "b"}, {"name": "a"}, {"name": "x"}, {"name": "y"}]),
            ),
            (
                json!([{"name": "a"}]),
                json!(["gone", "a"]),
                json!([{"name": "a"}]),
            ),
            (
                json!([{"v": 1}, {"name": "a"}]),
                json!(["a"]),
                json!([{"name": "a"}, {"v": 1}]),
            ),
            (json!([]), json!(["a"]), json!([])),
        ];
        for (items, order, want) in cases {
            let items = items.as_array().cloned().expect("items");
            let order: Vec<&Value> = order.as_array().expect("order").iter().collect();
            assert_eq!(Value::Array(reorder(items, &order, name)), want);
        }
    }

    #[test]
    fn union_keeps_order_and_drops_duplicates() {
        let cases = [
            (json!(["a", "b"]), json!(["c", "a"]), json!(["a", "b", "c"])),
            (json!([]), json!(["x", "x"]), json!(["x"])),
            (json!([1]), json!([1.0, 2]), json!([1, 2])),
        ];
        for (original, patch, want) in cases {
            let original = original.as_array().cloned().expect("original");
            let patch = patch.as_array().cloned().expect("patch");
            assert_eq!(Value::Array(union(original, &patch)), want);
        }
    }

    #[test]
    fn loc_paths() {
        let root = Loc::default();
        assert_eq!(root.path(), "<root>");
        let ports = root
            .field("spec")
            .field("containers")
            .item("name=web")
            .field("ports");
        assert_eq!(ports.schema, "spec.containers[].ports");
        assert_eq!(ports.shown, "spec.containers[name=web].ports");
    }
}
