//! `pods/log`: the API side of `kubectl logs` — options parsed and checked against the pod,
//! then the node streams the text (plain, or followed as a chunked body).

use super::error::ApiError;
use super::objects::Target;
use super::ApiState;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, StatusCode};
use std::collections::HashMap;
use std::pin::Pin;

/// A log body as it streams.
pub type LogStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// What `kubectl logs` asks for (<https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#get-read-log-of-the-specified-pod>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub previous: bool,
    pub follow: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<i64>,
    /// RFC 3339.
    pub since_time: Option<String>,
    pub limit_bytes: Option<usize>,
}

pub async fn logs(
    state: &ApiState,
    target: &Target,
    name: &str,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let key = crate::store::ObjectKey {
        resource: "pods".into(),
        namespace: target.namespace.clone(),
        name: name.to_string(),
    };
    let pod = state.store.get(&key)?.ok_or_else(|| ApiError::NotFound {
        kind: "pods".into(),
        name: name.to_string(),
    })?;
    let names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|g| pod["spec"][g].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match params.get("container").filter(|c| !c.is_empty()) {
        Some(c) if names.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if pod["spec"]["containers"].as_array().map_or(0, Vec::len) == 1 => names[0].clone(),
        None => {
            let list: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                list.join(" ")
            )));
        }
    };
    let flag = |k: &str| params.get(k).is_some_and(|v| v == "true" || v == "1");
    let request = LogRequest {
        namespace: target.namespace.clone().unwrap_or_default(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        container,
        previous: flag("previous"),
        follow: flag("follow"),
        timestamps: flag("timestamps"),
        tail_lines: params.get("tailLines").and_then(|t| t.parse().ok()),
        since_seconds: params.get("sinceSeconds").and_then(|t| t.parse().ok()),
        since_time: params.get("sinceTime").cloned(),
        limit_bytes: params.get("limitBytes").and_then(|t| t.parse().ok()),
    };
    let stream = state.node.logs(request)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response())
}
