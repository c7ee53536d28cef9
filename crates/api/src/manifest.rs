//! Decoding manifests strictly, as `kubectl apply --validate=strict` and the API server's
//! strict field validation do: a wrong type or an unknown field is an error with its path
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation>).
//!
//! The YAML is read into a JSON value, decoded into the `k8s-openapi` type (a wrong type fails
//! with its path), then encoded back: a key the input has and the typed object lost is a field
//! the type does not know.

use crate::field::{FieldError, FieldErrorKind, FieldPath};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde_json::Value;

/// One object of a manifest.
#[derive(Debug, Clone)]
pub enum Object {
    Pod(Box<Pod>),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Pod(_) => "Pod",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            Object::Pod(p) => &p.metadata,
            Object::ConfigMap(c) => &c.metadata,
            Object::Secret(s) => &s.metadata,
        };
        meta.name.as_deref().unwrap_or("")
    }
}

/// Why a manifest could not be decoded. `document` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("yaml: {message}")]
    Yaml { message: String },
    #[error("document {document}: {error}")]
    Field {
        document: usize,
        kind: Option<String>,
        name: Option<String>,
        error: FieldError,
    },
}

const SUPPORTED_KINDS: [&str; 3] = ["Pod", "ConfigMap", "Secret"];

/// Decodes every document of a (multi-document) YAML manifest. Empty documents are skipped.
pub fn decode_manifests(text: &str) -> Result<Vec<Object>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
        message: e.to_string().lines().next().unwrap_or("").to_string(),
    })?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        out.push(
            decode_object(doc).map_err(|(kind, name, error)| ManifestError::Field {
                document: i + 1,
                kind,
                name,
                error,
            })?,
        );
    }
    Ok(out)
}

type DecodeFailure = (Option<String>, Option<String>, FieldError);

fn decode_object(doc: Value) -> Result<Object, DecodeFailure> {
    let kind = doc.get("kind").and_then(Value::as_str).map(str::to_string);
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let fail = |error| (kind.clone(), name.clone(), error);
    if !doc.is_object() {
        return Err(fail(FieldError {
            path: FieldPath::default(),
            kind: FieldErrorKind::WrongType {
                detail: "a document must be a mapping".into(),
            },
        }));
    }
    let api_version = doc.get("apiVersion").and_then(Value::as_str);
    match api_version {
        None => return Err(fail(FieldError::required(FieldPath::root("apiVersion")))),
        Some("v1") => {}
        Some(other) => {
            return Err(fail(FieldError::not_supported(
                FieldPath::root("apiVersion"),
                other,
                &["v1"],
            )))
        }
    }
    let object = match kind.as_deref() {
        Some("Pod") => Object::Pod(Box::new(strict::<Pod>(&doc).map_err(fail)?)),
        Some("ConfigMap") => Object::ConfigMap(strict::<ConfigMap>(&doc).map_err(fail)?),
        Some("Secret") => Object::Secret(strict::<Secret>(&doc).map_err(fail)?),
        Some(other) => {
            return Err(fail(FieldError::not_supported(
                FieldPath::root("kind"),
                other,
                &SUPPORTED_KINDS,
            )))
        }
        None => return Err(fail(FieldError::required(FieldPath::root("kind")))),
    };
    Ok(object)
}

/// Decodes `doc` as `T`, failing on a wrong type or an unknown field, with its path.
fn strict<T>(doc: &Value) -> Result<T, FieldError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let (typed, unknown) = decode_typed(doc)?;
    match unknown {
        Some(path) => Err(FieldError {
            path,
            kind: FieldErrorKind::Unknown,
        }),
        None => Ok(typed),
    }
}

/// Decodes `doc` as `T`: a wrong type is an error with its path; the first field `T` does not
/// know is returned beside the object, for the caller's field validation mode (Strict, Warn,
/// Ignore) to decide.
pub fn decode_typed<T>(doc: &Value) -> Result<(T, Option<FieldPath>), FieldError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_path_to_error::deserialize(doc).map_err(|e| FieldError {
        path: FieldPath::root(&e.path().to_string()),
        kind: FieldErrorKind::WrongType {
            detail: short_serde_message(&e.inner().to_string()),
        },
    })?;
    let back = serde_json::to_value(&typed).map_err(|e| FieldError {
        path: FieldPath::default(),
        kind: FieldErrorKind::WrongType {
            detail: e.to_string(),
        },
    })?;
    let unknown = first_unknown(doc, &back, FieldPath::default());
    Ok((typed, unknown))
}

/// serde's messages end with " at line 1 column 2" for JSON sources; values have none, but keep
/// the first clause only.
fn short_serde_message(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string()
}

/// The first key present (and not null) in `input` but absent from `typed`.
fn first_unknown(input: &Value, typed: &Value, path: FieldPath) -> Option<FieldPath> {
    match (input, typed) {
        (Value::Object(inp), Value::Object(out)) => {
            let mut keys: Vec<&String> = inp.keys().collect();
            keys.sort();
            for key in keys {
                let value = &inp[key];
                if value.is_null() {
                    continue;
                }
                let child = path.child(key);
                match out.get(key) {
                    None => return Some(child),
                    Some(o) => {
                        if let Some(found) = first_unknown(value, o, child) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(inp), Value::Array(out)) => inp
            .iter()
            .zip(out.iter())
            .enumerate()
            .find_map(|(i, (a, b))| first_unknown(a, b, path.index(i))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    fn field_error(text: &str) -> FieldError {
        match decode_manifests(text) {
            Err(ManifestError::Field { error, .. }) => error,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn decodes_several_documents() {
        let text = format!("{POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: b\n---\n");
        let objects = decode_manifests(&text).expect("decodes");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].kind(), "Pod");
        assert_eq!(objects[1].name(), "cfg");
    }

    #[test]
    fn unknown_field_has_its_path() {
        let err =
            field_error(&POD.replace("    image: busybox", "    image: busybox\n    imagee: x"));
        assert_eq!(err.path.as_str(), "spec.containers[0].imagee");
        assert_eq!(err.to_string(), "spec.containers[0].imagee: unknown field");
    }

    #[test]
    fn wrong_type_has_its_path() {
        let text = POD.replace(
            "    image: busybox",
            "    image: busybox\n    ports:\n    - containerPort: eighty",
        );
        let err = field_error(&text);
        assert_eq!(
            err.path.as_str(),
            "spec.containers[0].ports[0].containerPort"
        );
        assert!(
            matches!(err.kind, FieldErrorKind::WrongType { .. }),
            "{err}"
        );
    }

    #[test]
    fn kinds_and_versions() {
        let err = field_error(&POD.replace("kind: Pod", "kind: Deployment"));
        assert_eq!(err.path.as_str(), "kind");
        let err = field_error(&POD.replace("apiVersion: v1", "apiVersion: apps/v1"));
        assert_eq!(err.path.as_str(), "apiVersion");
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(matches!(
            decode_manifests("a: [1, 2"),
            Err(ManifestError::Yaml { .. })
        ));
    }

    #[test]
    fn null_values_and_empty_maps_are_fine() {
        let text =
            format!("{POD}  volumes:\n  - name: v\n    emptyDir: {{}}\n  nodeSelector: null\n");
        assert!(decode_manifests(&text).is_ok());
    }
}
