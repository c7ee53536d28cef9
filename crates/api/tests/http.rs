//! The API server as a component: the real router over a real store in a temp dir, requests
//! sent in-process (no TLS, a fake node). Bad input gets the API server's `Status` codes; the
//! server keeps serving.

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use peapod_api::http::error::ApiError;
use peapod_api::http::logs::{LogRequest, LogStream};
use peapod_api::http::{router, ApiState, Authenticated, NodeBackend};
use peapod_api::pki::Identity;
use peapod_api::store::{ObjectKey, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

struct FakeNode;

impl NodeBackend for FakeNode {
    fn exec_command(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &peapod_api::http::exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError> {
        Err(ApiError::bad_request("no node"))
    }
    fn attach_command(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &peapod_api::http::exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError> {
        Err(ApiError::bad_request("no node"))
    }

    fn dial(&self, _: &str, _: u16) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        Box::pin(async { Err(std::io::Error::other("no node")) })
    }
    fn logs(&self, _: LogRequest) -> Result<LogStream, ApiError> {
        Err(ApiError::bad_request("no node"))
    }
}

struct Api {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("store");
    let key = ObjectKey {
        resource: "namespaces".into(),
        namespace: None,
        name: "default".into(),
    };
    store
        .create(
            &key,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        )
        .expect("ns");
    let state = Arc::new(ApiState {
        store,
        node: Arc::new(FakeNode),
        node_name: "node1".into(),
        server_address: "127.0.0.1:1".into(),
    });
    tokio::spawn(peapod_api::http::gc::run(state.clone()));
    Api {
        router: router(state),
        _dir: dir,
    }
}

fn admin() -> Authenticated {
    Authenticated(Some(Identity {
        user: "peapod-admin".into(),
        groups: vec!["system:masters".into()],
    }))
}

impl Api {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        req.extensions_mut().insert(admin());
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
    /// A JSON body given as text (so it can say things `Value` cannot, like a key twice);
    /// returns the `Warning` header lines too.
    async fn raw_json(&self, method: Method, uri: &str, body: &str) -> (StatusCode, Vec<String>) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        req.extensions_mut().insert(admin());
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_string())
            .collect();
        (resp.status(), warnings)
    }

    async fn json(&self, method: Method, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            method,
            uri,
            "application/json",
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn create_get_list_and_conflicts() {
    let api = api();
    let (code, created) = api.json(Method::POST, PODS, &pod("web")).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(created["spec"]["nodeName"], "node1");
    assert!(created["metadata"]["uid"].is_string());
    let (code, again) = api.json(Method::POST, PODS, &pod("web")).await;
    assert_eq!(
        (code, again["reason"].as_str()),
        (StatusCode::CONFLICT, Some("AlreadyExists"))
    );
    let (code, list) = api
        .json(
            Method::GET,
            &format!("{PODS}?labelSelector=app%3Dweb"),
            &Value::Null,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["containers"][0]["image"] = json!("busybox:2");
    let (code, status) = api.json(Method::PUT, &format!("{PODS}/web"), &stale).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (StatusCode::CONFLICT, Some("Conflict"))
    );
    let (code, status) = api
        .json(Method::GET, &format!("{PODS}/nope"), &Value::Null)
        .await;
    assert_eq!(
        (code, status["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("pods \"nope\" not found"))
    );
}

#[tokio::test]
async fn bad_input_gets_a_status_and_the_server_keeps_serving() {
    let api = api();
    let (code, s) = api
        .send(
            Method::POST,
            PODS,
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(
        (code, s["kind"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Status"))
    );
    let (code, _) = api
        .send(Method::POST, PODS, "text/html", b"<p>".to_vec())
        .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (code, s) = api
        .send(
            Method::POST,
            PODS,
            "application/json",
            vec![b' '; 4 * 1024 * 1024],
        )
        .await;
    assert_eq!(
        (code, s["reason"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("RequestEntityTooLarge"))
    );
    let mut dup = pod("dup");
    dup["spec"]["containers"] = json!([{"name": "c", "image": "x"}, {"name": "c", "image": "x"}]);
    let (code, s) = api.json(Method::POST, PODS, &dup).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        s["details"]["causes"][0]["field"],
        "spec.containers[1].name"
    );
    let mut bad = pod("Bad_Name");
    bad["metadata"]["name"] = json!("Bad_Name");
    let (code, _) = api.json(Method::POST, PODS, &bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let mut unknown = pod("unk");
    unknown["spec"]["containers"][0]["imagee"] = json!("x");
    let (code, s) = api
        .json(
            Method::POST,
            &format!("{PODS}?fieldValidation=Strict"),
            &unknown,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.containers[0].imagee"),
        "{s}"
    );
    let (code, _) = api
        .json(
            Method::GET,
            &format!("{PODS}?labelSelector=a%20in%20(b"),
            &Value::Null,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = api
        .json(
            Method::GET,
            "/api/v1/namespaces/default/widgets",
            &Value::Null,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, s) = api
        .json(Method::POST, "/api/v1/namespaces/missing/pods", &pod("x"))
        .await;
    assert_eq!(
        (code, s["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );
    let (code, _) = api.json(Method::POST, PODS, &pod("still-serving")).await;
    assert_eq!(code, StatusCode::CREATED);
}

/// A key given twice (<https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation>):
/// Strict refuses the request and creates nothing, Warn (the default) warns and keeps the last
/// value, Ignore says nothing.
#[tokio::test]
async fn duplicate_fields_follow_field_validation() {
    let api = api();
    let body = |name: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"a","app":"b"}}}},
            "spec":{{"containers":[{{"name":"c","image":"busybox","image":"busybox"}}]}}}}"#
        )
    };
    let (code, _) = api
        .raw_json(
            Method::POST,
            &format!("{PODS}?fieldValidation=Strict"),
            &body("strict"),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, s) = api
        .send(
            Method::POST,
            &format!("{PODS}?fieldValidation=Strict"),
            "application/json",
            body("strict").into_bytes(),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        s["message"],
        "strict decoding error: duplicate field \"metadata.labels.app\", duplicate field \"spec.containers[0].image\""
    );
    let (code, _) = api
        .json(Method::GET, &format!("{PODS}/strict"), &Value::Null)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "nothing created");

    let (code, warnings) = api.raw_json(Method::POST, PODS, &body("warn")).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(
        warnings,
        [
            "299 - \"duplicate field 'metadata.labels.app'\"",
            "299 - \"duplicate field 'spec.containers[0].image'\""
        ]
    );
    let (_, pod) = api
        .json(Method::GET, &format!("{PODS}/warn"), &Value::Null)
        .await;
    assert_eq!(
        pod["metadata"]["labels"]["app"], "b",
        "the last value is kept"
    );

    let (code, warnings) = api
        .raw_json(
            Method::POST,
            &format!("{PODS}?fieldValidation=Ignore"),
            &body("ignore"),
        )
        .await;
    assert_eq!((code, warnings.len()), (StatusCode::CREATED, 0));

    let patch = r#"{"metadata":{"labels":{"x":"1","x":"2"}}}"#;
    let (code, s) = api
        .send(
            Method::PATCH,
            &format!("{PODS}/warn?fieldValidation=Strict"),
            "application/merge-patch+json",
            patch.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{s}");
    let (_, pod) = api
        .json(Method::GET, &format!("{PODS}/warn"), &Value::Null)
        .await;
    assert!(pod["metadata"]["labels"].get("x").is_none(), "not patched");
}

#[tokio::test]
async fn pod_updates_may_only_change_images() {
    let api = api();
    let (_, created) = api.json(Method::POST, PODS, &pod("web")).await;
    let mut changed = created.clone();
    changed["spec"]["containers"][0]["command"] = json!(["sh"]);
    let (code, s) = api
        .json(Method::PUT, &format!("{PODS}/web"), &changed)
        .await;
    assert_eq!(
        (code, s["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );
    let patch = json!({"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}});
    let (code, patched) = api
        .send(
            Method::PATCH,
            &format!("{PODS}/web"),
            "application/strategic-merge-patch+json",
            serde_json::to_vec(&patch).expect("json"),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(patched["spec"]["containers"][0]["image"], "busybox:2");
}

#[tokio::test]
async fn graceful_deletion_marks_pods_terminating() {
    let api = api();
    api.json(Method::POST, PODS, &pod("web")).await;
    let (code, deleted) = api
        .json(
            Method::DELETE,
            &format!("{PODS}/web"),
            &json!({"propagationPolicy": "Background"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        deleted["metadata"]["deletionTimestamp"].is_string(),
        "{deleted}"
    );
    let (code, _) = api
        .json(Method::GET, &format!("{PODS}/web"), &Value::Null)
        .await;
    assert_eq!(code, StatusCode::OK, "stays until the kubelet removes it");
    let (code, _) = api
        .json(
            Method::DELETE,
            &format!("{PODS}/web?gracePeriodSeconds=0"),
            &Value::Null,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api
        .json(Method::GET, &format!("{PODS}/web"), &Value::Null)
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "a forced deletion is immediate"
    );
}

#[tokio::test]
async fn requests_without_a_client_certificate_are_401() {
    let api = api();
    let mut req = Request::builder()
        .uri("/api/v1/namespaces/default/pods")
        .body(Body::empty())
        .expect("request");
    req.extensions_mut().insert(Authenticated(None));
    let resp = api.router.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let s: Value = serde_json::from_slice(&bytes).expect("status");
    assert_eq!(s["kind"], "Status");
}

#[tokio::test]
async fn protobuf_configmaps_are_accepted() {
    let api = api();
    let body = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1b\x0a\x11\x0a\x01x\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x22\x00".to_vec();
    let (code, cm) = api
        .send(
            Method::POST,
            "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create",
            "application/vnd.kubernetes.protobuf",
            body,
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{cm}");
    assert_eq!(cm["data"]["a"], "b");
}

#[tokio::test]
async fn dependents_follow_their_owner_unless_orphaned() {
    let api = api();
    let cms = "/api/v1/namespaces/default/configmaps";
    let (_, owner) = api
        .json(
            Method::POST,
            cms,
            &json!({"metadata": {"name": "owner"}, "data": {}}),
        )
        .await;
    let uid = owner["metadata"]["uid"].as_str().expect("uid").to_string();
    let reference = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]);
    let (code, _) = api
        .json(
            Method::POST,
            cms,
            &json!({"metadata": {"name": "dep", "ownerReferences": reference}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = api
        .json(
            Method::POST,
            cms,
            &json!({"metadata": {"name": "kept", "ownerReferences": reference}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    // Orphan one dependent by hand first: only "dep" should go with the owner.
    let (code, _) = api
        .send(
            Method::PATCH,
            &format!("{cms}/kept"),
            "application/merge-patch+json",
            br#"{"metadata":{"ownerReferences":null}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api
        .json(
            Method::DELETE,
            &format!("{cms}/owner"),
            &json!({"propagationPolicy": "Background"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, _) = api
            .json(Method::GET, &format!("{cms}/dep"), &Value::Null)
            .await;
        if code == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dependent was not collected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, _) = api
        .json(Method::GET, &format!("{cms}/kept"), &Value::Null)
        .await;
    assert_eq!(code, StatusCode::OK);
}

/// A watch that allows bookmarks gets one shortly before its timeout, carrying a resourceVersion
/// at least as new as every event it was sent; one that does not allow them gets none.
#[tokio::test]
async fn watch_bookmarks_come_before_the_timeout() {
    let api = api();
    let (code, created) = api.json(Method::POST, PODS, &pod("marked")).await;
    assert_eq!(code, StatusCode::CREATED);
    let created_rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("resourceVersion");
    let lines = |allow: bool| {
        let api = &api;
        async move {
            let uri = format!(
                "{PODS}?watch=true&timeoutSeconds=3&allowWatchBookmarks={allow}&resourceVersion=0"
            );
            let mut req = Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request");
            req.extensions_mut().insert(admin());
            let resp = api.router.clone().oneshot(req).await.expect("response");
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("event line"))
                .collect::<Vec<_>>()
        }
    };
    let (with, without) = tokio::join!(lines(true), lines(false));
    let types = |events: &[Value]| {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&with), ["ADDED", "BOOKMARK"], "{with:?}");
    assert_eq!(types(&without), ["ADDED"], "{without:?}");
    let bookmark = &with[1]["object"];
    assert_eq!(
        (bookmark["kind"].as_str(), bookmark["apiVersion"].as_str()),
        (Some("Pod"), Some("v1"))
    );
    let rv: u64 = bookmark["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("bookmark resourceVersion");
    assert!(rv >= created_rv, "{rv} < {created_rv}");
}
