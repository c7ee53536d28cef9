//! Discovery: `/version`, aggregated discovery (v2 and v2beta1) and the legacy documents, and
//! the small OpenAPI v3 documents that make kubectl use server-side field validation
//! (shared/kubectl-wire.md §1 and §4).

use super::registry::{groups, Resource, RESOURCES, VERBS};
use serde_json::{json, Value};

/// The Kubernetes version whose API peapod serves (the k8s-openapi types it is built with).
pub const MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": format!("v1.{MINOR}.0-peapod"),
        "gitCommit": "peapod",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Which discovery answer the client asked for with its Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    V2,
    V2Beta1,
    Legacy,
}

impl DiscoveryFormat {
    /// Aggregated only when the Accept header names it (old clients only know v2beta1).
    pub fn from_accept(accept: &str) -> DiscoveryFormat {
        let aggregated = |v: &str| {
            accept.split(',').any(|part| {
                let p = part.replace(' ', "");
                p.contains("g=apidiscovery.k8s.io")
                    && p.contains("as=APIGroupDiscoveryList")
                    && p.split(';').any(|kv| kv == format!("v={v}"))
            })
        };
        if aggregated("v2") {
            DiscoveryFormat::V2
        } else if aggregated("v2beta1") {
            DiscoveryFormat::V2Beta1
        } else {
            DiscoveryFormat::Legacy
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            DiscoveryFormat::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
            DiscoveryFormat::Legacy => "application/json",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            DiscoveryFormat::V2Beta1 => "apidiscovery.k8s.io/v2beta1",
            _ => "apidiscovery.k8s.io/v2",
        }
    }
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = r
            .subresources
            .iter()
            .map(|(sub, kind, verbs)| json!({"subresource": sub, "responseKind": {"group": r.group, "version": r.version, "kind": kind}, "verbs": verbs}))
            .collect();
    }
    v
}

fn aggregated_group(name: Option<&str>, version: &str, resources: Vec<Value>) -> Value {
    let mut metadata = json!({"creationTimestamp": null});
    if let Some(name) = name {
        metadata["name"] = json!(name);
    }
    json!({"metadata": metadata, "versions": [{"version": version, "resources": resources, "freshness": "Current"}]})
}

/// `/api`: the core group.
pub fn api(format: DiscoveryFormat, server_address: &str) -> Value {
    match format {
        DiscoveryFormat::Legacy => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }),
        _ => {
            let resources = RESOURCES
                .iter()
                .filter(|r| r.group.is_empty())
                .map(aggregated_resource)
                .collect();
            json!({"kind": "APIGroupDiscoveryList", "apiVersion": format.api_version(), "metadata": {}, "items": [aggregated_group(None, "v1", resources)]})
        }
    }
}

/// `/apis`: the named groups.
pub fn apis(format: DiscoveryFormat) -> Value {
    match format {
        DiscoveryFormat::Legacy => {
            let groups: Vec<Value> = groups()
                .into_iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        _ => {
            let items: Vec<Value> = groups()
                .into_iter()
                .map(|(g, v)| {
                    let resources = RESOURCES
                        .iter()
                        .filter(|r| r.group == g)
                        .map(aggregated_resource)
                        .collect();
                    aggregated_group(Some(g), v, resources)
                })
                .collect();
            json!({"kind": "APIGroupDiscoveryList", "apiVersion": format.api_version(), "metadata": {}, "items": items})
        }
    }
}

/// `/api/v1` or `/apis/<group>/<version>`: the legacy resource list.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let members: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if members.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in members {
        let mut v = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS});
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        for (sub, kind, verbs) in r.subresources {
            resources.push(json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", openapi_hash())}),
    );
    for (g, v) in groups() {
        paths.insert(format!("apis/{g}/{v}"), json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash={}", openapi_hash())}));
    }
    json!({"paths": paths})
}

fn openapi_hash() -> &'static str {
    concat!("peapod-", env!("CARGO_PKG_VERSION"))
}

/// The OpenAPI v3 document of one group version: for each kind a PATCH operation tagged with
/// its group-version-kind and a `fieldValidation` parameter, which is what kubectl reads to
/// decide that the server validates fields itself (schemas are left empty).
pub fn openapi_document(group: &str, version: &str) -> Option<Value> {
    let members: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if members.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for r in members {
        let path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let content: serde_json::Map<String, Value> = [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
        .iter()
        .map(|c| (c.to_string(), json!({"schema": {"type": "object"}})))
        .collect();
        paths.insert(path, json!({
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean"}}
                ],
                "requestBody": {"content": content, "required": true},
                "responses": {"200": {"description": "OK"}}
            }
        }));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v1.{MINOR}.0")}, "paths": paths, "components": {"schemas": {}}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        let both = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(DiscoveryFormat::from_accept(both), DiscoveryFormat::V2);
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(DiscoveryFormat::from_accept(old), DiscoveryFormat::V2Beta1);
        assert_eq!(
            DiscoveryFormat::from_accept("application/json, */*"),
            DiscoveryFormat::Legacy
        );
    }

    #[test]
    fn documents_list_pods() {
        let api = api(DiscoveryFormat::V2, "127.0.0.1:6443");
        let resources = &api["items"][0]["versions"][0]["resources"];
        assert!(resources
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["resource"] == "pods" && r["shortNames"][0] == "po"));
        let legacy = resource_list("", "v1").expect("core");
        assert!(legacy["resources"]
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["name"] == "pods/log"));
        let doc = openapi_document("", "v1").expect("doc");
        let pod = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(pod["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(openapi_root()["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url")
            .starts_with("/openapi/v3/api/v1?hash="));
    }
}
