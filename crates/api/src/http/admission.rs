//! What the API server does to an object before it is stored: strict decoding per the
//! request's `fieldValidation`, defaulting, validation, and pod specifics (node assignment,
//! immutable fields) — pure functions over JSON.

use super::error::ApiError;
use super::registry::Resource;
use crate::field::{FieldError, FieldErrorKind, FieldPath};
use crate::manifest::decode_typed;
use crate::names::{dns1123_label, dns1123_subdomain};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde_json::{json, Value};

/// `fieldValidation`: what to do with unknown fields
/// (<https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn from_query(v: Option<&str>) -> FieldValidation {
        match v {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// The admitted object and any warnings for the `Warning` header.
#[derive(Debug)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

fn invalid(resource: &Resource, name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: resource.plural.to_string(),
        name: name.to_string(),
        causes,
    }
}

/// Decodes `object` as `T` honouring the validation mode; returns it re-encoded (so unknown
/// fields are dropped, as the API server's decoder drops them).
fn typed<T>(
    object: &Value,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(T, Value), ApiError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let (t, unknown) = decode_typed::<T>(object).map_err(|e| match &e.kind {
        FieldErrorKind::WrongType { detail } => {
            ApiError::bad_request(format!("json: cannot unmarshal {}: {detail}", e.path))
        }
        _ => ApiError::bad_request(e.to_string()),
    })?;
    if let Some(path) = unknown {
        match mode {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: unknown field \"{path}\""
                )))
            }
            FieldValidation::Warn => warnings.push(format!("unknown field \"{path}\"")),
            FieldValidation::Ignore => {}
        }
    }
    let back = serde_json::to_value(&t).map_err(ApiError::internal)?;
    Ok((t, back))
}

/// Admits an object being created in `namespace`.
pub fn admit_create(
    resource: &Resource,
    namespace: Option<&str>,
    mut object: Value,
    mode: FieldValidation,
    node_name: &str,
) -> Result<Admitted, ApiError> {
    let mut warnings = Vec::new();
    if !object.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    object["apiVersion"] = json!(resource.api_version());
    object["kind"] = json!(resource.kind);
    let meta = object.get_mut("metadata").filter(|m| m.is_object());
    if meta.is_none() {
        object["metadata"] = json!({});
    }
    if let Some(ns) = namespace {
        match object["metadata"].get("namespace").and_then(Value::as_str) {
            Some(given) if given != ns => {
                return Err(ApiError::bad_request(format!("the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})")))
            }
            _ => object["metadata"]["namespace"] = json!(ns),
        }
    }
    if object["metadata"]
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        if let Some(prefix) = object["metadata"]
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            object["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
        }
    }
    let name = object["metadata"]
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for key in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
    ] {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove(key);
        }
    }
    let object = match resource.kind {
        "Pod" if resource.group.is_empty() => {
            let (mut pod, _) = typed::<Pod>(&object, mode, &mut warnings)?;
            crate::defaults::default_pod(&mut pod);
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name.get_or_insert_with(|| node_name.to_string());
                spec.service_account_name
                    .get_or_insert_with(|| "default".into());
            }
            let errs = crate::validation::validate_pod(&pod);
            if !errs.is_empty() {
                return Err(invalid(resource, &name, errs));
            }
            let mut v = serde_json::to_value(&pod).map_err(ApiError::internal)?;
            v["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            v
        }
        "ConfigMap" if resource.group.is_empty() => {
            let (cm, v) = typed::<ConfigMap>(&object, mode, &mut warnings)?;
            let errs = crate::validation::validate_config_map(&cm);
            if !errs.is_empty() {
                return Err(invalid(resource, &name, errs));
            }
            v
        }
        "Secret" if resource.group.is_empty() => {
            let (secret, mut v) = typed::<Secret>(&object, mode, &mut warnings)?;
            let errs = crate::validation::validate_secret(&secret);
            if !errs.is_empty() {
                return Err(invalid(resource, &name, errs));
            }
            // stringData is write-only: folded into data, as the API server does.
            if let Some(sd) = v.as_object_mut().and_then(|m| m.remove("stringData")) {
                for (k, val) in sd.as_object().into_iter().flatten() {
                    let encoded = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        val.as_str().unwrap_or(""),
                    );
                    v["data"][k] = json!(encoded);
                }
            }
            if v.get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                v["type"] = json!("Opaque");
            }
            v
        }
        "EndpointSlice" if resource.group == "discovery.k8s.io" => {
            let (_, v) = typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(
                &object,
                mode,
                &mut warnings,
            )?;
            check_name(resource, &name)?;
            if v["addressType"].as_str().unwrap_or("").is_empty() {
                return Err(invalid(
                    resource,
                    &name,
                    vec![FieldError::required(FieldPath::root("addressType"))],
                ));
            }
            v
        }
        "Namespace" => {
            let mut v = object;
            if let Err(detail) = dns1123_label(&name) {
                return Err(invalid(
                    resource,
                    &name,
                    vec![FieldError::invalid(
                        FieldPath::root("metadata").child("name"),
                        &name,
                        detail,
                    )],
                ));
            }
            v["status"] = json!({"phase": "Active"});
            v["spec"] = json!({"finalizers": ["kubernetes"]});
            v
        }
        _ => {
            check_name(resource, &name)?;
            object
        }
    };
    Ok(Admitted { object, warnings })
}

/// A name is required and a DNS subdomain (an Event's is not checked: clients derive it from
/// the object's name).
fn check_name(resource: &Resource, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(invalid(
            resource,
            name,
            vec![FieldError::required(
                FieldPath::root("metadata").child("name"),
            )],
        ));
    }
    if let Err(detail) = dns1123_subdomain(name) {
        if resource.kind != "Event" {
            return Err(invalid(
                resource,
                name,
                vec![FieldError::invalid(
                    FieldPath::root("metadata").child("name"),
                    name,
                    detail,
                )],
            ));
        }
    }
    Ok(())
}

/// Admits an update of `old` to `new` (full replacement); status-only when `status_only`.
pub fn admit_update(
    resource: &Resource,
    old: &Value,
    mut new: Value,
    mode: FieldValidation,
    status_only: bool,
    node_name: &str,
) -> Result<Admitted, ApiError> {
    let name = old["metadata"]["name"].as_str().unwrap_or("").to_string();
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            new["metadata"]["name"].as_str().unwrap_or("")
        )));
    }
    // Fields the client cannot change.
    for key in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(key) {
            Some(v) => new["metadata"][key] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(key);
                }
            }
        }
    }
    if status_only {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if let Some(rv) = new["metadata"].get("resourceVersion") {
            merged["metadata"]["resourceVersion"] = rv.clone();
        }
        return Ok(Admitted {
            object: merged,
            warnings: vec![],
        });
    }
    // A spec update keeps the status (the status subresource owns it).
    if let Some(status) = old.get("status") {
        new["status"] = status.clone();
    }
    // The resourceVersion the client read, for optimistic concurrency in the store.
    let read_version = new["metadata"].get("resourceVersion").cloned();
    let mut admitted = admit_create(
        resource,
        old["metadata"]["namespace"].as_str(),
        new,
        mode,
        node_name,
    )?;
    if let Some(rv) = read_version {
        admitted.object["metadata"]["resourceVersion"] = rv;
    }
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        if let Some(v) = old["metadata"].get(key) {
            admitted.object["metadata"][key] = v.clone();
        }
    }
    if let Some(status) = old.get("status") {
        admitted.object["status"] = status.clone();
    }
    if resource.kind == "Pod" && resource.group.is_empty() {
        check_pod_update(resource, &name, old, &admitted.object)?;
    }
    Ok(admitted)
}

/// Pod updates may only change images, activeDeadlineSeconds, tolerations (additions) and
/// terminationGracePeriodSeconds
/// (<https://kubernetes.io/docs/concepts/workloads/pods/#pod-update-and-replacement>).
fn check_pod_update(
    resource: &Resource,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let strip = |spec: &Value| {
        let mut s = spec.clone();
        for group in ["containers", "initContainers"] {
            if let Some(list) = s.get_mut(group).and_then(Value::as_array_mut) {
                for c in list {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("image");
                    }
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            for key in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                m.remove(key);
            }
        }
        s
    };
    if strip(&old["spec"]) != strip(&new["spec"]) {
        let e = FieldError::forbidden(
            FieldPath::root("spec"),
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        );
        return Err(invalid(resource, name, vec![e]));
    }
    Ok(())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::registry::lookup;

    fn pods() -> &'static Resource {
        lookup("", "v1", "pods").expect("pods")
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn create_defaults_and_assigns_the_node() {
        let a = admit_create(
            pods(),
            Some("default"),
            pod(),
            FieldValidation::Strict,
            "node1",
        )
        .expect("admitted");
        assert_eq!(a.object["spec"]["nodeName"], "node1");
        assert_eq!(a.object["spec"]["restartPolicy"], "Always");
        assert_eq!(a.object["metadata"]["namespace"], "default");
        assert_eq!(a.object["status"]["phase"], "Pending");
    }

    #[test]
    fn unknown_fields_by_mode() {
        let mut p = pod();
        p["spec"]["containers"][0]["imagee"] = json!("x");
        let err = admit_create(
            pods(),
            Some("default"),
            p.clone(),
            FieldValidation::Strict,
            "n",
        )
        .expect_err("strict");
        assert_eq!(
            err.status()["message"],
            "strict decoding error: unknown field \"spec.containers[0].imagee\""
        );
        let a = admit_create(
            pods(),
            Some("default"),
            p.clone(),
            FieldValidation::Warn,
            "n",
        )
        .expect("warn");
        assert_eq!(a.warnings.len(), 1);
        let a =
            admit_create(pods(), Some("default"), p, FieldValidation::Ignore, "n").expect("ignore");
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn invalid_pods_are_422() {
        let mut p = pod();
        p["spec"]["containers"] = json!([]);
        let err = admit_create(pods(), Some("default"), p, FieldValidation::Strict, "n")
            .expect_err("invalid");
        assert_eq!(err.status()["code"], 422);
        let mut p = pod();
        p["metadata"]["namespace"] = json!("other");
        assert!(admit_create(pods(), Some("default"), p, FieldValidation::Strict, "n").is_err());
    }

    #[test]
    fn pod_updates_are_limited() {
        let old = admit_create(pods(), Some("default"), pod(), FieldValidation::Strict, "n")
            .expect("admitted")
            .object;
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("busybox:2");
        assert!(admit_update(pods(), &old, new, FieldValidation::Strict, false, "n").is_ok());
        let mut new = old.clone();
        new["spec"]["containers"][0]["command"] = json!(["sh"]);
        let err = admit_update(pods(), &old, new, FieldValidation::Strict, false, "n")
            .expect_err("forbidden");
        assert_eq!(err.status()["code"], 422);
    }
}
