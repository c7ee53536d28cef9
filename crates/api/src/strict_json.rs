//! JSON decoding that notices a key given twice in one object, which a plain decode into a map
//! hides (the last one wins). The API server reports such keys per the request's
//! `fieldValidation` (<https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation>):
//! an error under Strict, a warning under Warn, nothing under Ignore — and keeps the last value.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Decodes `bytes`; returns the value and the paths of duplicated keys
/// (`spec.containers[0].image`), in the order they were met.
pub fn from_slice(bytes: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut duplicates = Vec::new();
    let value = Node {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, duplicates))
}

/// One value being decoded at `path`; duplicates found below it are pushed to `duplicates`.
struct Node<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let node = Node {
                path: format!("{}[{}]", self.path, items.len()),
                duplicates: &mut *self.duplicates,
            };
            match seq.next_element_seed(node)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let value = map.next_value_seed(Node {
                path: path.clone(),
                duplicates: &mut *self.duplicates,
            })?;
            if object.insert(key, value).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::from_slice;
    use serde_json::json;

    #[test]
    fn duplicates_are_found_with_their_paths_and_the_last_value_kept() {
        let cases: &[(&str, serde_json::Value, &[&str])] = &[
            (r#"{"a":1}"#, json!({"a": 1}), &[]),
            (r#"{"a":1,"a":2}"#, json!({"a": 2}), &["a"]),
            (
                r#"{"metadata":{"name":"x","name":"y"}}"#,
                json!({"metadata": {"name": "y"}}),
                &["metadata.name"],
            ),
            (
                r#"{"spec":{"containers":[{"name":"a"},{"image":"b","image":"c"}]}}"#,
                json!({"spec": {"containers": [{"name": "a"}, {"image": "c"}]}}),
                &["spec.containers[1].image"],
            ),
            (
                r#"[[{"k":true,"k":null}],1.5,-3,"s"]"#,
                json!([[{"k": null}], 1.5, -3, "s"]),
                &["[0][0].k"],
            ),
            (
                r#"{"a":{"b":1},"a":{"b":2,"b":3}}"#,
                json!({"a": {"b": 3}}),
                &["a.b", "a"],
            ),
        ];
        for (text, want, dups) in cases {
            let (got, found) = from_slice(text.as_bytes()).expect(text);
            assert_eq!(&got, want, "{text}");
            assert_eq!(found, *dups, "{text}");
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        for text in ["", "{", r#"{"a":1}x"#, r#"{"a" 1}"#, "[1,]"] {
            assert!(from_slice(text.as_bytes()).is_err(), "{text:?}");
        }
    }
}
