//! Object keys, their byte encoding in the `objects` table, and continue tokens.
//!
//! A key is encoded as `resource NUL namespace NUL name` (an empty namespace for cluster-scoped
//! objects). NUL sorts below every other byte, so byte order is (resource, namespace, name)
//! order, `resource NUL` is the prefix of every object of a resource and
//! `resource NUL namespace NUL` of every object in one namespace: lists and watch replays are
//! prefix range scans, already sorted by namespace and name. Kubernetes names never contain NUL
//! (<https://kubernetes.io/docs/concepts/overview/working-with-objects/names/>), so the encoding
//! is unambiguous; keys that do are rejected.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::StoreError;

/// Where one object lives: resource (plural, with its group for non-core groups, e.g.
/// `events.events.k8s.io`), namespace (`None` for cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn namespaced(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> ObjectKey {
        ObjectKey {
            resource: resource.into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    pub fn cluster(resource: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            resource: resource.into(),
            namespace: None,
            name: name.into(),
        }
    }
}

/// `pods/default/web`, or `nodes/peapod` for a cluster-scoped object.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.resource, ns, self.name),
            None => write!(f, "{}/{}", self.resource, self.name),
        }
    }
}

const SEP: u8 = 0;
const EMPTY_NAMESPACE: &str = "empty namespace (use None for cluster scope)";

fn check_part(part: &str, what: &'static str, shown: &dyn fmt::Display) -> Result<(), StoreError> {
    let reason = if part.is_empty() {
        what
    } else if part.as_bytes().contains(&SEP) {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: shown.to_string(),
        reason,
    })
}

/// The bytes every key of `resource` (in `namespace`, if given) starts with.
pub(crate) fn prefix(resource: &str, namespace: Option<&str>) -> Result<Vec<u8>, StoreError> {
    let shown = format!("{resource}/{}", namespace.unwrap_or("*"));
    check_part(resource, "empty resource", &shown)?;
    let mut out = Vec::with_capacity(resource.len() + 2 + namespace.map_or(0, str::len));
    out.extend_from_slice(resource.as_bytes());
    out.push(SEP);
    if let Some(ns) = namespace {
        check_part(ns, EMPTY_NAMESPACE, &shown)?;
        out.extend_from_slice(ns.as_bytes());
        out.push(SEP);
    }
    Ok(out)
}

/// The first key after every key starting with `prefix` (which ends with the separator).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = SEP + 1;
    }
    end
}

pub(crate) fn encode(key: &ObjectKey) -> Result<Vec<u8>, StoreError> {
    check_part(&key.resource, "empty resource", key)?;
    if let Some(ns) = &key.namespace {
        check_part(ns, EMPTY_NAMESPACE, key)?;
    }
    check_part(&key.name, "empty name", key)?;
    let namespace = key.namespace.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(key.resource.len() + namespace.len() + key.name.len() + 2);
    out.extend_from_slice(key.resource.as_bytes());
    out.push(SEP);
    out.extend_from_slice(namespace.as_bytes());
    out.push(SEP);
    out.extend_from_slice(key.name.as_bytes());
    Ok(out)
}

/// Decodes bytes written by [`encode`]; `None` if they are not such bytes.
pub(crate) fn decode(bytes: &[u8]) -> Option<ObjectKey> {
    let mut parts = bytes.splitn(3, |b| *b == SEP);
    let resource = std::str::from_utf8(parts.next()?).ok()?;
    let namespace = std::str::from_utf8(parts.next()?).ok()?;
    let name = std::str::from_utf8(parts.next()?).ok()?;
    if resource.is_empty() || name.is_empty() || name.as_bytes().contains(&SEP) {
        return None;
    }
    Some(ObjectKey {
        resource: resource.to_string(),
        namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
        name: name.to_string(),
    })
}

/// A continue token: URL-safe base64 of the list's revision (8 bytes, big-endian) followed by the
/// encoded key of the last object returned. Opaque to clients.
pub(crate) fn encode_continue(revision: u64, last_key: &[u8]) -> String {
    let mut raw = revision.to_be_bytes().to_vec();
    raw.extend_from_slice(last_key);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The revision and last key of a continue token, checked to lie under `prefix` (so a token is
/// only good for the resource and namespace it was issued for).
pub(crate) fn decode_continue(token: &str, prefix: &[u8]) -> Result<(u64, Vec<u8>), StoreError> {
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::InvalidContinue)?;
    let (revision, key) = raw.split_at_checked(8).ok_or(StoreError::InvalidContinue)?;
    let revision: [u8; 8] = revision
        .try_into()
        .map_err(|_| StoreError::InvalidContinue)?;
    if !key.starts_with(prefix) || decode(key).is_none() {
        return Err(StoreError::InvalidContinue);
    }
    Ok((u64::from_be_bytes(revision), key.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let cases = [
            ObjectKey::namespaced("pods", "default", "web"),
            ObjectKey::cluster("nodes", "peapod"),
            ObjectKey::namespaced("events.events.k8s.io", "kube-system", "a.b.c"),
        ];
        for key in cases {
            let bytes = encode(&key).expect("encodes");
            assert_eq!(decode(&bytes), Some(key.clone()), "{key}");
            let ns_prefix = prefix(&key.resource, key.namespace.as_deref()).expect("prefix");
            assert!(bytes.starts_with(&ns_prefix), "{key}");
            assert!(
                bytes.as_slice() < prefix_end(&ns_prefix).as_slice(),
                "{key}"
            );
            let all = prefix(&key.resource, None).expect("prefix");
            assert!(bytes.starts_with(&all), "{key}");
        }
    }

    #[test]
    fn invalid_keys() {
        let cases = [
            ObjectKey::namespaced("", "default", "web"),
            ObjectKey::namespaced("pods", "", "web"),
            ObjectKey::namespaced("pods", "default", ""),
            ObjectKey::namespaced("pods", "def\0ault", "web"),
            ObjectKey::cluster("no\0des", "x"),
            ObjectKey::cluster("nodes", "x\0y"),
        ];
        for key in cases {
            assert!(
                matches!(encode(&key), Err(StoreError::InvalidKey { .. })),
                "{key:?}"
            );
        }
        for bytes in [
            &b""[..],
            b"pods",
            b"pods\0ns",
            b"pods\0ns\0",
            b"\0ns\0x",
            b"p\0n\0a\0b",
        ] {
            assert_eq!(decode(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn byte_order_is_namespace_then_name() {
        // Sorted as (namespace, name) tuples; a namespace that is a prefix of another sorts
        // first whatever the names, and cluster-scoped keys sort before namespaced ones.
        let ordered = [
            ObjectKey::cluster("pods", "z"),
            ObjectKey::namespaced("pods", "a", "z"),
            ObjectKey::namespaced("pods", "a", "zz"),
            ObjectKey::namespaced("pods", "ab", "a"),
            ObjectKey::namespaced("pods", "b", "a"),
            ObjectKey::namespaced("podsx", "a", "a"),
        ];
        let encoded: Vec<Vec<u8>> = ordered.iter().map(|k| encode(k).expect("ok")).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded);
        // Resource `pods` must not match resource `podsx` by prefix.
        let pods = prefix("pods", None).expect("ok");
        assert!(!encoded[5].starts_with(&pods));
        // Namespace `a` must not match namespace `ab` by prefix.
        let ns_a = prefix("pods", Some("a")).expect("ok");
        assert!(!encoded[3].starts_with(&ns_a));
    }

    #[test]
    fn continue_tokens() {
        let key = encode(&ObjectKey::namespaced("pods", "default", "web")).expect("ok");
        let token = encode_continue(42, &key);
        let default = prefix("pods", Some("default")).expect("ok");
        assert_eq!(
            decode_continue(&token, &default).ok(),
            Some((42, key.clone()))
        );
        let all = prefix("pods", None).expect("ok");
        assert!(decode_continue(&token, &all).is_ok());
        let other = prefix("pods", Some("other")).expect("ok");
        let services = prefix("services", None).expect("ok");
        let short = URL_SAFE_NO_PAD.encode([1u8, 2, 3]);
        let no_key = encode_continue(1, b"");
        for (token, prefix) in [
            (token.as_str(), &other),
            (token.as_str(), &services),
            ("not base64!", &all),
            (short.as_str(), &all),
            (no_key.as_str(), &all),
        ] {
            assert!(
                matches!(
                    decode_continue(token, prefix),
                    Err(StoreError::InvalidContinue)
                ),
                "{token}"
            );
        }
    }
}
