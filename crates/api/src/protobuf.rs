//! Decoding the Kubernetes protobuf request bodies that `kubectl create configmap`, `create
//! secret generic`, `create namespace` and `create service` send (there is no JSON retry;
//! shared/kubectl-wire.md §2): the `k8s\0` envelope around a `runtime.Unknown`, and the
//! ConfigMap, Secret, Namespace and Service messages with field numbers from k8s.io/api's
//! generated.proto. Other kinds are refused with a clear message.

use base64::Engine;
use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: its number and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// Iterates over the fields of a message.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, rest) = varint(buf)?;
        buf = rest;
        let number = tag >> 3;
        match tag & 7 {
            0 => {
                let (v, rest) = varint(buf)?;
                buf = rest;
                out.push((number, Field::Varint(v)));
            }
            2 => {
                let (len, rest) = varint(buf)?;
                let len = usize::try_from(len).map_err(|_| "length too large")?;
                if rest.len() < len {
                    return Err("truncated message".into());
                }
                out.push((number, Field::Bytes(&rest[..len])));
                buf = &rest[len..];
            }
            1 => {
                buf = buf.get(8..).ok_or("truncated fixed64")?;
                out.push((number, Field::Other));
            }
            5 => {
                buf = buf.get(4..).ok_or("truncated fixed32")?;
                out.push((number, Field::Other));
            }
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    Ok(out)
}

fn varint(buf: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut value = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, &buf[i + 1..]));
        }
    }
    Err("malformed varint".into())
}

fn text(f: &Field<'_>) -> Result<String, String> {
    match f {
        Field::Bytes(b) => {
            String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".into())
        }
        _ => Err("expected a string field".into()),
    }
}

/// A `map<string, string|bytes>` entry.
fn entry(f: &Field<'_>, bytes_value: bool) -> Result<(String, Value), String> {
    let Field::Bytes(b) = f else {
        return Err("expected a map entry".into());
    };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (n, v) in fields(b)? {
        match (n, &v) {
            (1, _) => key = text(&v)?,
            (2, Field::Bytes(raw)) if bytes_value => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(raw))
            }
            (2, _) => value = json!(text(&v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(buf: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(buf)? {
        match n {
            1 => drop(meta.insert("name".into(), json!(text(&f)?))),
            2 => drop(meta.insert("generateName".into(), json!(text(&f)?))),
            3 => drop(meta.insert("namespace".into(), json!(text(&f)?))),
            11 => {
                let (k, v) = entry(&f, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = entry(&f, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(json!(text(&f)?)),
            _ => {}
        }
    }
    meta.retain(|_, v| v.as_str() != Some(""));
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

/// A `ServiceSpec`: the fields `kubectl create service` and users set.
fn service_spec(buf: &[u8]) -> Result<Value, String> {
    let mut spec = Map::new();
    let (mut ports, mut selector, mut ips, mut families) =
        (Vec::new(), Map::new(), Vec::new(), Vec::new());
    for (n, f) in fields(buf)? {
        let mut set = |key: &str, v: Value| drop(spec.insert(key.into(), v));
        match (n, &f) {
            (1, Field::Bytes(b)) => ports.push(service_port(b)?),
            (2, _) => {
                let (k, v) = entry(&f, false)?;
                selector.insert(k, v);
            }
            (3, _) => set("clusterIP", json!(text(&f)?)),
            (4, _) => set("type", json!(text(&f)?)),
            (7, _) => set("sessionAffinity", json!(text(&f)?)),
            (10, _) => set("externalName", json!(text(&f)?)),
            (11, _) => set("externalTrafficPolicy", json!(text(&f)?)),
            (13, Field::Varint(v)) => set("publishNotReadyAddresses", json!(*v == 1)),
            (17, _) => set("ipFamilyPolicy", json!(text(&f)?)),
            (18, _) => ips.push(json!(text(&f)?)),
            (19, _) => families.push(json!(text(&f)?)),
            (22, _) => set("internalTrafficPolicy", json!(text(&f)?)),
            _ => {}
        }
    }
    spec.retain(|_, v| v.as_str() != Some(""));
    for (key, list) in [
        ("ports", ports),
        ("clusterIPs", ips),
        ("ipFamilies", families),
    ] {
        if !list.is_empty() {
            spec.insert(key.into(), Value::Array(list));
        }
    }
    if !selector.is_empty() {
        spec.insert("selector".into(), Value::Object(selector));
    }
    Ok(Value::Object(spec))
}

/// A `ServicePort`; `targetPort` is an `IntOrString` (type 0: intVal, 1: strVal).
fn service_port(buf: &[u8]) -> Result<Value, String> {
    let mut port = Map::new();
    for (n, f) in fields(buf)? {
        match (n, &f) {
            (1, _) => drop(port.insert("name".into(), json!(text(&f)?))),
            (2, _) => drop(port.insert("protocol".into(), json!(text(&f)?))),
            (3, Field::Varint(v)) => drop(port.insert("port".into(), json!(*v as i32))),
            (4, Field::Bytes(b)) => {
                let (mut kind, mut int, mut string) = (0, 0, String::new());
                for (m, g) in fields(b)? {
                    match (m, &g) {
                        (1, Field::Varint(v)) => kind = *v,
                        (2, Field::Varint(v)) => int = *v as i32,
                        (3, _) => string = text(&g)?,
                        _ => {}
                    }
                }
                let target = if kind == 1 { json!(string) } else { json!(int) };
                if target != json!(0) && target != json!("") {
                    port.insert("targetPort".into(), target);
                }
            }
            (5, Field::Varint(v)) if *v != 0 => {
                drop(port.insert("nodePort".into(), json!(*v as i32)))
            }
            (6, _) => drop(port.insert("appProtocol".into(), json!(text(&f)?))),
            _ => {}
        }
    }
    port.retain(|_, v| v.as_str() != Some(""));
    Ok(Value::Object(port))
}

/// Decodes an `application/vnd.kubernetes.protobuf` body into the JSON object it carries.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (m, g) in fields(tm)? {
                    match m {
                        1 => api_version = text(&g)?,
                        2 => kind = text(&g)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut object = json!({"apiVersion": api_version, "kind": kind});
    let msg = fields(raw)?;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") | ("v1", "Secret") => {
            let secret = kind == "Secret";
            let (mut data, mut binary, mut string_data) = (Map::new(), Map::new(), Map::new());
            for (n, f) in msg {
                match n {
                    1 => {
                        object["metadata"] = object_meta(match f {
                            Field::Bytes(b) => b,
                            _ => &[],
                        })?
                    }
                    2 => {
                        let (k, v) = entry(&f, secret)?;
                        data.insert(k, v);
                    }
                    3 if !secret => {
                        let (k, v) = entry(&f, true)?;
                        binary.insert(k, v);
                    }
                    3 => object["type"] = json!(text(&f)?),
                    4 if secret => {
                        let (k, v) = entry(&f, false)?;
                        string_data.insert(k, v);
                    }
                    4 | 5 => object["immutable"] = json!(matches!(f, Field::Varint(1))),
                    _ => {}
                }
            }
            if !data.is_empty() {
                object["data"] = Value::Object(data);
            }
            if !binary.is_empty() {
                object["binaryData"] = Value::Object(binary);
            }
            if !string_data.is_empty() {
                object["stringData"] = Value::Object(string_data);
            }
        }
        ("v1", "Namespace") => {
            for (n, f) in msg {
                if let (1, Field::Bytes(b)) = (n, f) {
                    object["metadata"] = object_meta(b)?;
                }
            }
        }
        ("v1", "Service") => {
            for (n, f) in msg {
                match (n, f) {
                    (1, Field::Bytes(b)) => object["metadata"] = object_meta(b)?,
                    (2, Field::Bytes(b)) => object["spec"] = service_spec(b)?,
                    _ => {}
                }
            }
        }
        _ => {
            return Err(format!(
                "protobuf bodies of {api_version} {kind} are not supported; send JSON"
            ))
        }
    }
    if object.get("metadata").is_none() {
        object["metadata"] = json!({});
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn string(field: u8, s: &str) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, s.len() as u8];
        out.extend_from_slice(s.as_bytes());
        out
    }

    fn message(field: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn decodes_the_captured_configmap() {
        // kubectl create configmap x --from-literal=a=b, as captured in shared/kubectl-wire.md.
        let body = hex("6b387300 0a0f 0a027631 1209 436f6e6669674d6170 121b 0a11 0a0178 1200 1a00 2200 2a00 3200 3800 4200 1206 0a0161 120162 1a00 2200");
        let v = decode(&body).expect("decodes");
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn decodes_namespaces_and_secrets() {
        let meta = string(1, "demo");
        let ns = [
            MAGIC.to_vec(),
            message(1, &[string(1, "v1"), string(2, "Namespace")].concat()),
            message(2, &message(1, &meta)),
        ]
        .concat();
        assert_eq!(decode(&ns).expect("ns")["metadata"]["name"], "demo");
        let data = message(2, &[string(1, "k"), string(2, "v")].concat());
        let raw = [message(1, &meta), data, string(3, "Opaque")].concat();
        let secret = [
            MAGIC.to_vec(),
            message(1, &[string(1, "v1"), string(2, "Secret")].concat()),
            message(2, &raw),
        ]
        .concat();
        let v = decode(&secret).expect("secret");
        assert_eq!(v["data"]["k"], "dg==");
        assert_eq!(v["type"], "Opaque");
    }

    fn varint_field(field: u8, v: u8) -> Vec<u8> {
        vec![field << 3, v]
    }

    #[test]
    fn decodes_services() {
        let target = [varint_field(1, 0), varint_field(2, 80)].concat();
        let port = [
            string(1, "80-8080"),
            string(2, "TCP"),
            varint_field(3, 80),
            message(4, &target),
            varint_field(5, 0),
        ]
        .concat();
        let spec = [
            message(1, &port),
            message(2, &[string(1, "app"), string(2, "web")].concat()),
            string(3, ""),
            string(4, "ClusterIP"),
            string(10, ""),
        ]
        .concat();
        let body = [
            MAGIC.to_vec(),
            message(1, &[string(1, "v1"), string(2, "Service")].concat()),
            message(
                2,
                &[message(1, &string(1, "web")), message(2, &spec)].concat(),
            ),
        ]
        .concat();
        assert_eq!(
            decode(&body).expect("service"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {
                "type": "ClusterIP", "selector": {"app": "web"},
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 80}]}})
        );
    }

    #[test]
    fn refuses_garbage_and_other_kinds() {
        assert!(decode(b"nope").is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0x05, 0x01]].concat()).is_err());
        let pod = [
            MAGIC.to_vec(),
            message(1, &[string(1, "v1"), string(2, "Pod")].concat()),
            message(2, &[]),
        ]
        .concat();
        assert!(decode(&pod).expect_err("pod").contains("not supported"));
    }
}
