//! Create, read, update, patch and delete of every served resource, over the store. Graceful
//! pod deletion: a pod gets `deletionTimestamp` and stays (Terminating) until the kubelet has
//! stopped it and removes it (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination>).

use super::admission::{admit_create, admit_update, FieldValidation};
use super::error::ApiError;
use super::registry::Resource;
use super::table::{table, IncludeObject};
use super::{json, ApiState, MAX_BODY};
use crate::managed;
use crate::patch::{apply_patch, PatchType};
use crate::store::{ListOptions, ObjectKey};
use crate::strict_json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            resource: self.resource.store_name(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
        }
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// RFC 3339 with seconds, as object timestamps are written.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn wants_table(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn table_response(value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )],
        body,
    )
        .into_response()
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            response.headers_mut().append("Warning", v);
        }
    }
    response
}

/// Routes one request on a resource.
pub async fn dispatch(
    state: &ApiState,
    target: Target,
    mut params: HashMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let method = req.method().clone();
    if !params.contains_key("fieldManager") {
        // As the API server: the User-Agent up to its first '/' (`kubectl`, `python-requests`).
        let agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|a| a.to_str().ok())
            .and_then(|a| a.split('/').next())
            .filter(|a| !a.is_empty())
            .unwrap_or("unknown");
        params.insert("fieldManager".into(), agent.to_string());
    }
    let sub = target.sub.clone();
    match (&method, target.name.as_deref(), sub.as_deref()) {
        (&Method::GET, None, None)
            if params.get("watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            super::watch::watch(state, &target, &params, wants_table(&req)).await
        }
        (&Method::GET, None, None) => list(state, &target, &params, wants_table(&req)),
        (&Method::GET, Some(name), None | Some("status")) => {
            get(state, &target, name, wants_table(&req), &params)
        }
        (&Method::GET, Some(name), Some("log")) if target.resource.kind == "Pod" => {
            super::logs::logs(state, &target, name, &params).await
        }
        (&Method::POST, None, None) => create(state, &target, &params, req).await,
        (&Method::PUT, Some(name), None | Some("status")) => {
            update(state, &target, name, &params, req).await
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            patch(state, &target, name, &params, req).await
        }
        (&Method::DELETE, Some(name), None) => delete(state, &target, name, &params, req).await,
        (&Method::DELETE, None, None) => delete_collection(state, &target, &params),
        (&Method::GET | &Method::POST, Some(name), Some(sub @ ("exec" | "attach")))
            if target.resource.kind == "Pod" =>
        {
            let verb = match sub {
                "exec" => super::exec::Verb::Exec,
                _ => super::exec::Verb::Attach,
            };
            super::exec::exec(state, &target, name, verb, req).await
        }
        (&Method::GET | &Method::POST, Some(name), Some("portforward"))
            if target.resource.kind == "Pod" =>
        {
            super::portforward::portforward(state, &target, name, req).await
        }
        _ => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
        }),
    }
}

fn list_options(params: &HashMap<String, String>) -> ListOptions {
    ListOptions {
        label_selector: params
            .get("labelSelector")
            .filter(|s| !s.is_empty())
            .cloned(),
        field_selector: params
            .get("fieldSelector")
            .filter(|s| !s.is_empty())
            .cloned(),
        limit: params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l: &usize| *l > 0),
        continue_token: params.get("continue").filter(|s| !s.is_empty()).cloned(),
    }
}

fn list(
    state: &ApiState,
    target: &Target,
    params: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    let result = state.store.list(
        &target.resource.store_name(),
        target.namespace.as_deref(),
        &list_options(params),
    )?;
    let rv = result.resource_version.to_string();
    if as_table {
        let include = IncludeObject::from_query(params.get("includeObject").map(String::as_str));
        let mut t = table(
            target.resource.plural,
            &result.items,
            &rv,
            include,
            now_secs(),
        );
        if let Some(c) = &result.continue_token {
            t["metadata"]["continue"] = json!(c);
        }
        return Ok(table_response(&t));
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(c) = &result.continue_token {
        metadata["continue"] = json!(c);
    }
    if let Some(r) = result.remaining {
        metadata["remainingItemCount"] = json!(r);
    }
    let list = json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.api_version(),
        "metadata": metadata,
        "items": result.items,
    });
    Ok(json(StatusCode::OK, &list))
}

fn get(
    state: &ApiState,
    target: &Target,
    name: &str,
    as_table: bool,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let object = state
        .store
        .get(&target.key(name))?
        .ok_or_else(|| not_found(target, name))?;
    if as_table {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let include = IncludeObject::from_query(params.get("includeObject").map(String::as_str));
        return Ok(table_response(&table(
            target.resource.plural,
            &[object],
            &rv,
            include,
            now_secs(),
        )));
    }
    Ok(json(StatusCode::OK, &object))
}

fn not_found(target: &Target, name: &str) -> ApiError {
    ApiError::NotFound {
        kind: target.resource.plural.to_string(),
        name: name.to_string(),
    }
}

/// A decoded request body.
struct Body {
    media: String,
    value: Value,
    /// `Warning` header lines for fields given twice (under `fieldValidation=Warn`).
    warnings: Vec<String>,
}

/// Reads and decodes a request body: JSON, YAML, or the protobuf envelope of the few kinds the
/// `kubectl create <kind>` generators send. A JSON key given twice in one object is refused,
/// warned of or ignored as `mode` says; the last value is kept.
async fn read_body(req: Request, mode: FieldValidation) -> Result<Body, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY + 1)
        .await
        .map_err(|_| ApiError::TooLarge { limit: MAX_BODY })?;
    if bytes.len() > MAX_BODY {
        return Err(ApiError::TooLarge { limit: MAX_BODY });
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let mut duplicates = Vec::new();
    let value = match media.as_str() {
        "application/yaml" | "application/apply-patch+yaml" => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "error decoding YAML: {}",
                    e.to_string().lines().next().unwrap_or("")
                ))
            })?
        }
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(&bytes).map_err(ApiError::bad_request)?
        }
        m if m.starts_with("application/") && m.ends_with("json") || m.is_empty() => {
            let (value, found) = strict_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?;
            duplicates = found;
            value
        }
        _ => return Err(ApiError::UnsupportedMediaType { content_type }),
    };
    let duplicates: Vec<String> = duplicates
        .iter()
        .map(|path| format!("duplicate field \"{path}\""))
        .collect();
    let warnings = match mode {
        FieldValidation::Strict if !duplicates.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                duplicates.join(", ")
            )))
        }
        FieldValidation::Warn => duplicates,
        FieldValidation::Strict | FieldValidation::Ignore => Vec::new(),
    };
    Ok(Body {
        media,
        value,
        warnings,
    })
}

fn dry_run(params: &HashMap<String, String>) -> bool {
    params.get("dryRun").is_some_and(|d| d == "All")
}

fn validation(params: &HashMap<String, String>) -> FieldValidation {
    FieldValidation::from_query(params.get("fieldValidation").map(String::as_str))
}

fn ensure_namespace(state: &ApiState, target: &Target) -> Result<(), ApiError> {
    let Some(ns) = target.namespace.as_deref() else {
        return Ok(());
    };
    let key = ObjectKey {
        resource: "namespaces".into(),
        namespace: None,
        name: ns.to_string(),
    };
    match state.store.get(&key)? {
        Some(n) if is_deleting(&n) => Err(ApiError::Forbidden {
            message: format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        }),
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound {
            kind: "namespaces".into(),
            name: ns.to_string(),
        }),
    }
}

async fn create(
    state: &ApiState,
    target: &Target,
    params: &HashMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_body(req, validation(params)).await?;
    let response = create_object(state, target, params, body.value, Ownership::Update)?;
    Ok(with_warnings(response, &body.warnings))
}

/// How a write changes field ownership (`managed.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// The writer takes the fields it changed.
    Update,
    /// Server-side apply: the writer owns exactly what it applied; conflicts unless forced.
    Apply { force: bool },
}

fn field_manager(params: &HashMap<String, String>) -> &str {
    params.get("fieldManager").map_or("unknown", String::as_str)
}

fn conflict_error(target: &Target, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
    ApiError::FieldConflict {
        kind: target.resource.plural.to_string(),
        name: name.to_string(),
        message: managed::conflict_message(conflicts),
        causes: conflicts
            .iter()
            .map(|c| {
                (
                    format!("conflict with {:?} using {}", c.manager, c.api_version),
                    managed::display(&c.path),
                )
            })
            .collect(),
    }
}

/// Admits and stores a new object (only admits it under `dryRun=All`); 201 with the object.
fn create_object(
    state: &ApiState,
    target: &Target,
    params: &HashMap<String, String>,
    body: Value,
    ownership: Ownership,
) -> Result<Response, ApiError> {
    ensure_namespace(state, target)?;
    let config = body.clone();
    let mut admitted = admit_create(
        target.resource,
        target.namespace.as_deref(),
        body,
        validation(params),
        &state.node_name,
    )?;
    let (kind, manager, now) = (target.resource.kind, field_manager(params), now_rfc3339());
    match ownership {
        Ownership::Update => managed::update(kind, None, &mut admitted.object, manager, &now),
        Ownership::Apply { force } => {
            let mut fresh = admitted.object.clone();
            managed::set_entries(&mut fresh, &[]);
            let name = fresh["metadata"]["name"].as_str().unwrap_or("").to_string();
            let applied = managed::apply(kind, &fresh, &config, manager, force, &now)
                .map_err(|c| conflict_error(target, &name, &c))?;
            managed::set_entries(&mut admitted.object, &applied.entries);
        }
    }
    let name = admitted.object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let object = if dry_run(params) {
        admitted.object
    } else {
        state.store.create(&target.key(&name), admitted.object)?
    };
    Ok(with_warnings(
        json(StatusCode::CREATED, &object),
        &admitted.warnings,
    ))
}

async fn update(
    state: &ApiState,
    target: &Target,
    name: &str,
    params: &HashMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let Body {
        value: body,
        warnings: duplicates,
        ..
    } = read_body(req, validation(params)).await?;
    let key = target.key(name);
    let old = state
        .store
        .get(&key)?
        .ok_or_else(|| not_found(target, name))?;
    let status_only = target.sub.as_deref() == Some("status");
    let mut admitted = admit_update(
        target.resource,
        &old,
        body,
        validation(params),
        status_only,
        &state.node_name,
    )?;
    admitted.warnings.extend(duplicates);
    let (kind, manager) = (target.resource.kind, field_manager(params));
    managed::update(
        kind,
        Some(&old),
        &mut admitted.object,
        manager,
        &now_rfc3339(),
    );
    if dry_run(params) {
        return Ok(json(StatusCode::OK, &admitted.object));
    }
    let object = finish_write(state, target, &key, admitted.object)?;
    Ok(with_warnings(
        json(StatusCode::OK, &object),
        &admitted.warnings,
    ))
}

/// Whether the object is being deleted (`metadata.deletionTimestamp` set).
pub fn is_deleting(object: &Value) -> bool {
    object["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

/// Whether finalizers still hold the object.
fn has_finalizers(object: &Value) -> bool {
    object["metadata"]
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Stores an updated object; one whose deletion was only waiting for its finalizers goes.
fn finish_write(
    state: &ApiState,
    target: &Target,
    key: &ObjectKey,
    object: Value,
) -> Result<Value, ApiError> {
    let deleting = is_deleting(&object);
    let finalizers = has_finalizers(&object);
    let stored = state.store.update(key, object)?;
    if deleting
        && !finalizers
        && target.resource.kind != "Pod"
        && target.resource.kind != "Namespace"
    {
        return Ok(state.store.delete(key, None)?);
    }
    Ok(stored)
}

async fn patch(
    state: &ApiState,
    target: &Target,
    name: &str,
    params: &HashMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let Body {
        media,
        value: body,
        warnings: duplicates,
    } = read_body(req, validation(params)).await?;
    let status_only = target.sub.as_deref() == Some("status");
    if media == "application/apply-patch+yaml" {
        let response = apply_server_side(state, target, name, params, body).await?;
        return Ok(with_warnings(response, &duplicates));
    }
    let patch_type =
        PatchType::from_content_type(&media).ok_or_else(|| ApiError::UnsupportedMediaType {
            content_type: media.clone(),
        })?;
    let pinned = body["metadata"].get("resourceVersion").is_some();
    let spec = PatchSpec {
        body: &body,
        patch_type,
        status_only,
        pinned,
        ownership: Ownership::Update,
    };
    let response = patch_stored(state, target, name, params, &spec)?;
    Ok(with_warnings(response, &duplicates))
}

/// A patch as the request gave it.
struct PatchSpec<'a> {
    body: &'a Value,
    patch_type: PatchType,
    status_only: bool,
    /// The patch names a resourceVersion: a concurrent write is then the client's conflict.
    pinned: bool,
    ownership: Ownership,
}

/// Applies a patch to the stored object and writes it. A patch that names no resourceVersion
/// applies to whatever is stored: a write that raced it (the kubelet's status, say) means
/// reading again and re-applying, as the API server does, never a 409 for the client.
fn patch_stored(
    state: &ApiState,
    target: &Target,
    name: &str,
    params: &HashMap<String, String>,
    spec: &PatchSpec<'_>,
) -> Result<Response, ApiError> {
    let key = target.key(name);
    for _ in 0..10 {
        let old = state
            .store
            .get(&key)?
            .ok_or_else(|| not_found(target, name))?;
        let (kind, manager, now) = (target.resource.kind, field_manager(params), now_rfc3339());
        let mut patched = apply_patch(kind, &old, spec.body, spec.patch_type)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Ownership::Apply { force } = spec.ownership {
            let applied = managed::apply(kind, &old, spec.body, manager, force, &now)
                .map_err(|c| conflict_error(target, name, &c))?;
            managed::remove_fields(&mut patched, &applied.removed);
            managed::set_entries(&mut patched, &applied.entries);
        }
        let mut admitted = admit_update(
            target.resource,
            &old,
            patched,
            validation(params),
            spec.status_only,
            &state.node_name,
        )?;
        if spec.ownership == Ownership::Update {
            managed::update(kind, Some(&old), &mut admitted.object, manager, &now);
        }
        if dry_run(params) {
            return Ok(json(StatusCode::OK, &admitted.object));
        }
        let mut object = admitted.object;
        if !spec.pinned {
            object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        match finish_write(state, target, &key, object) {
            Err(ApiError::Conflict { .. }) if !spec.pinned => continue,
            result => {
                return Ok(with_warnings(
                    json(StatusCode::OK, &result?),
                    &admitted.warnings,
                ))
            }
        }
    }
    Err(ApiError::Conflict {
        kind: target.resource.plural.to_string(),
        name: name.to_string(),
        message: "too many concurrent writes".into(),
    })
}

/// `kubectl apply --server-side`: creates, or merges the applied configuration into the live
/// object, with field ownership by manager (`managed.rs`): a conflict is a 409 unless
/// `force=true`.
async fn apply_server_side(
    state: &ApiState,
    target: &Target,
    name: &str,
    params: &HashMap<String, String>,
    body: Value,
) -> Result<Response, ApiError> {
    let key = target.key(name);
    let force = params.get("force").is_some_and(|f| f == "true");
    let ownership = Ownership::Apply { force };
    match state.store.get(&key)? {
        None => create_object(state, target, params, body, ownership),
        Some(_) => {
            let spec = PatchSpec {
                body: &body,
                patch_type: PatchType::StrategicMerge,
                status_only: false,
                pinned: false,
                ownership,
            };
            patch_stored(state, target, name, params, &spec)
        }
    }
}

/// Delete options from the body or the query.
fn grace_period(params: &HashMap<String, String>, body: &Value) -> Option<i64> {
    body.get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            params
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse().ok())
        })
}

async fn delete(
    state: &ApiState,
    target: &Target,
    name: &str,
    params: &HashMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = match read_body(req, FieldValidation::Ignore).await {
        Ok(b) => b.value,
        Err(ApiError::BadRequest { .. }) => Value::Null,
        Err(e) => return Err(e),
    };
    let key = target.key(name);
    let object = state
        .store
        .get(&key)?
        .ok_or_else(|| not_found(target, name))?;
    let precondition = body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok());
    if dry_run(params) {
        return Ok(json(StatusCode::OK, &object));
    }
    if body["propagationPolicy"].as_str() == Some("Orphan")
        || params
            .get("propagationPolicy")
            .is_some_and(|p| p == "Orphan")
    {
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            super::gc::orphan_dependents(state, uid);
        }
    }
    let result = delete_object(
        state,
        target.resource,
        &key,
        object,
        grace_period(params, &body),
        precondition,
    )?;
    Ok(json(StatusCode::OK, &result))
}

/// Deletes one object: gracefully for pods, after finalizers for anything that has them,
/// with its contents for namespaces.
pub fn delete_object(
    state: &ApiState,
    resource: &Resource,
    key: &ObjectKey,
    object: Value,
    grace: Option<i64>,
    precondition: Option<u64>,
) -> Result<Value, ApiError> {
    let already = is_deleting(&object);
    let finalizers = has_finalizers(&object);
    match resource.kind {
        "Pod" if resource.group.is_empty() => {
            let spec_grace = object["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            let grace = grace.unwrap_or(spec_grace).max(0);
            let scheduled = object["spec"]
                .get("nodeName")
                .is_some_and(|n| n.is_string());
            if (grace == 0 || !scheduled) && !finalizers {
                return Ok(state.store.delete(key, precondition)?);
            }
            if already
                && grace
                    >= object["metadata"]["deletionGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(i64::MAX)
            {
                return Ok(object);
            }
            Ok(state.store.update_with(key, |o| {
                let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
                o["metadata"]["deletionTimestamp"] =
                    json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Ok(())
            })?)
        }
        "Namespace" => {
            let ns = key.name.clone();
            let marked = state.store.update_with(key, |o| {
                o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                o["status"]["phase"] = json!("Terminating");
                Ok(())
            })?;
            delete_namespace_contents(state, &ns)?;
            Ok(marked)
        }
        _ if finalizers => {
            if already {
                return Ok(object);
            }
            Ok(state.store.update_with(key, |o| {
                o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                Ok(())
            })?)
        }
        _ => Ok(state.store.delete(key, precondition)?),
    }
}

/// Deletes everything in a namespace; the namespace itself goes once no pod is left (the node
/// controller finishes it, see `finish_namespaces`).
fn delete_namespace_contents(state: &ApiState, ns: &str) -> Result<(), ApiError> {
    for resource in super::registry::RESOURCES.iter().filter(|r| r.namespaced) {
        let items = state
            .store
            .list(&resource.store_name(), Some(ns), &ListOptions::default())?
            .items;
        for item in items {
            let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = ObjectKey {
                resource: resource.store_name(),
                namespace: Some(ns.to_string()),
                name,
            };
            match delete_object(state, resource, &key, item, None, None) {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    finish_namespaces(state)
}

/// Removes namespaces that are Terminating and empty.
pub fn finish_namespaces(state: &ApiState) -> Result<(), ApiError> {
    let namespaces = state
        .store
        .list("namespaces", None, &ListOptions::default())?
        .items;
    for ns in namespaces.iter().filter(|n| is_deleting(n)) {
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let mut empty = true;
        for resource in super::registry::RESOURCES.iter().filter(|r| r.namespaced) {
            if !state
                .store
                .list(
                    &resource.store_name(),
                    Some(name),
                    &ListOptions {
                        limit: Some(1),
                        ..Default::default()
                    },
                )?
                .items
                .is_empty()
            {
                empty = false;
                break;
            }
        }
        if empty {
            let key = ObjectKey {
                resource: "namespaces".into(),
                namespace: None,
                name: name.to_string(),
            };
            match state.store.delete(&key, None) {
                Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn delete_collection(
    state: &ApiState,
    target: &Target,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let mut opts = list_options(params);
    opts.limit = None;
    let items = state
        .store
        .list(
            &target.resource.store_name(),
            target.namespace.as_deref(),
            &opts,
        )?
        .items;
    let mut deleted = Vec::new();
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = ObjectKey {
            resource: target.resource.store_name(),
            namespace: item["metadata"]["namespace"].as_str().map(str::to_string),
            name,
        };
        deleted.push(delete_object(
            state,
            target.resource,
            &key,
            item,
            None,
            None,
        )?);
    }
    let list = json!({"kind": format!("{}List", target.resource.kind), "apiVersion": target.resource.api_version(), "metadata": {}, "items": deleted});
    Ok(json(StatusCode::OK, &list))
}
