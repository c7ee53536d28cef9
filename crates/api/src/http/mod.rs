//! The HTTP API that kubectl talks to: routing, authentication, content negotiation. Handlers
//! live one file per concern (`objects.rs` CRUD, `watch.rs`, `logs.rs`, `discovery.rs`,
//! `table.rs`); every error becomes a `Status` in `error.rs`.

pub mod admission;
pub mod discovery;
pub mod error;
pub mod exec;
pub mod exec_spdy;
pub mod gc;
pub mod logs;
pub mod objects;
pub mod portforward;
pub mod registry;
pub mod serve;
pub mod spdy;
pub mod table;
pub mod watch;

use crate::store::Store;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use error::ApiError;
use http::{header, Method, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;

/// What the node (kubelet) offers the API: container logs.
pub trait NodeBackend: Send + Sync + 'static {
    /// The command that runs `exec.command` inside the running container (`kubectl exec`); its
    /// stdio is the caller's to set. With `exec.tty` the process gets a terminal: the command's
    /// stdin then carries [`exec::tty_frame`]s, its stdout is the terminal's output.
    fn exec_command(
        &self,
        uid: &str,
        pod: &str,
        container: &str,
        exec: &exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError>;

    /// The command that attaches to the running container's own stdio (`kubectl attach`), set
    /// up like [`NodeBackend::exec_command`]'s: stdin (framed with `attach.tty`), stdout and
    /// stderr; it ends when the container does.
    fn attach_command(
        &self,
        uid: &str,
        pod: &str,
        container: &str,
        attach: &exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError>;

    /// A TCP connection to `localhost:port` inside the pod's network namespace (port-forward).
    fn dial(
        &self,
        uid: &str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>;

    /// The log of a container of a pod, already in the plain form `kubectl logs` prints.
    fn logs(&self, request: logs::LogRequest) -> Result<logs::LogStream, ApiError>;
}

/// Shared by every request.
pub struct ApiState {
    pub store: Store,
    pub node: Arc<dyn NodeBackend>,
    /// The one node's name; every pod is assigned to it when created.
    pub node_name: String,
    /// `host:port` clients reach the server at.
    pub server_address: String,
}

/// The largest request body accepted (the API server's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The router: every path goes through one handler that parses it.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

/// The identity a request authenticated with (a verified client certificate).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Option<crate::pki::Identity>);

async fn handle(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let authenticated = req
        .extensions()
        .get::<Authenticated>()
        .map(|a| a.0.is_some())
        .unwrap_or(true);
    let path = req.uri().path().to_string();
    if !authenticated && !matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return ApiError::Unauthorized.into_response();
    }
    match route(state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn json_response(code: StatusCode, content_type: &str, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        code,
        [(header::CONTENT_TYPE, content_type.to_string())],
        body,
    )
        .into_response()
}

/// A JSON body with the plain JSON content type.
pub fn json(code: StatusCode, value: &serde_json::Value) -> Response {
    json_response(code, "application/json", value)
}

fn query(req: &Request) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

/// Decodes `%XX` escapes and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    unescape_percent(s, true)
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (query components; not
/// gRPC's `grpc-message`, for one). A `%` not followed by two hex digits stays as it is.
pub fn unescape_percent(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) if plus_is_space => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(state: Arc<ApiState>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if req.method() == Method::GET {
        match segments.as_slice() {
            ["version"] => return Ok(json(StatusCode::OK, &discovery::version())),
            ["healthz"] | ["livez"] | ["readyz"] => {
                return Ok((StatusCode::OK, "ok").into_response())
            }
            ["api"] => {
                let format = discovery::DiscoveryFormat::from_accept(&accept);
                return Ok(json_response(
                    StatusCode::OK,
                    format.content_type(),
                    &discovery::api(format, &state.server_address),
                ));
            }
            ["apis"] => {
                let format = discovery::DiscoveryFormat::from_accept(&accept);
                return Ok(json_response(
                    StatusCode::OK,
                    format.content_type(),
                    &discovery::apis(format),
                ));
            }
            ["api", version] => {
                return discovery::resource_list("", version)
                    .map(|v| json(StatusCode::OK, &v))
                    .ok_or_else(not_found_path)
            }
            ["apis", group, version] => {
                return discovery::resource_list(group, version)
                    .map(|v| json(StatusCode::OK, &v))
                    .ok_or_else(not_found_path)
            }
            ["openapi", "v3"] => return Ok(json(StatusCode::OK, &discovery::openapi_root())),
            // kubectl 1.27/1.28 read the v2 document (protobuf) to validate: an empty document
            // (no definitions) makes them skip client-side validation of kinds it lacks.
            ["openapi", "v2"] => {
                return Ok((
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    )],
                    Vec::<u8>::new(),
                )
                    .into_response())
            }
            ["openapi", "v3", "api", version] => {
                return discovery::openapi_document("", version)
                    .map(|v| json(StatusCode::OK, &v))
                    .ok_or_else(not_found_path)
            }
            ["openapi", "v3", "apis", group, version] => {
                return discovery::openapi_document(group, version)
                    .map(|v| json(StatusCode::OK, &v))
                    .ok_or_else(not_found_path)
            }
            _ => {}
        }
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found_path()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, rest @ ..] => {
            (Some(ns.to_string()), [&[*resource][..], rest].concat())
        }
        other => (None, other.to_vec()),
    };
    // `/api/v1/namespaces/<name>/status|finalize` are subresources of the namespace object.
    let (namespace, rest) = match (namespace, rest.as_slice()) {
        (Some(ns), [sub]) if group.is_empty() && matches!(*sub, "status" | "finalize") => {
            (None, vec!["namespaces".to_string(), ns, sub.to_string()])
        }
        (ns, _) => (ns, rest.iter().map(|s| s.to_string()).collect()),
    };
    let resource_name = rest.first().ok_or_else(not_found_path)?;
    let resource = registry::lookup(group, version, resource_name).ok_or_else(not_found_path)?;
    let name = rest.get(1).cloned();
    let sub = rest.get(2).cloned();
    if rest.len() > 3 {
        return Err(not_found_path());
    }
    let target = objects::Target {
        resource,
        namespace: namespace.filter(|_| resource.namespaced),
        name,
        sub,
    };
    let params = query(&req);
    objects::dispatch(&state, target, params, req).await
}

fn not_found_path() -> ApiError {
    ApiError::NotFound {
        kind: "path".into(),
        name: "the server could not find the requested resource".into(),
    }
}

/// Builds a streaming response from a body stream.
pub fn streaming(content_type: &str, body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type.to_string())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, unescape_percent};

    #[test]
    fn decodes_queries() {
        assert_eq!(percent_decode("metadata.name%3Dweb"), "metadata.name=web");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%"), "end%");
        assert_eq!(
            percent_decode("%a\u{e9}"),
            "%a\u{e9}",
            "an escape cut by a multi-byte char"
        );
        assert_eq!(unescape_percent("a+b%2B", false), "a+b+");
    }
}
