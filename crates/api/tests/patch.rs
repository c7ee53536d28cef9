//! Patch application as the HTTP layer sees it: the bodies kubectl actually sends for
//! `kubectl apply` and `kubectl patch`, every JSON patch operation with its errors, and
//! properties that must hold for any object.

use peapod_api::patch::{
    apply_patch, json_patch, merge_patch, strategic_merge_patch, PatchError, PatchType,
};
use serde_json::{json, Value};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Pod as the store holds it, with the given containers.
fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "env": "prod"},
            "annotations": {LAST_APPLIED: "{\"old\":true}\n"},
            "finalizers": ["example.com/a", "example.com/b"],
            "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": true}]
        },
        "spec": {
            "containers": containers,
            "restartPolicy": "Always",
            "securityContext": {"runAsUser": 1000},
            "volumes": [{"name": "data", "emptyDir": {}}]
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ]
        }
    })
}

fn two_containers() -> Value {
    pod(json!([
        {"name": "a", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "b", "image": "busybox:0", "command": ["sleep", "3600"]}
    ]))
}

/// `two_containers()` with `edit` applied to it, for stating expected results as differences.
fn edited(edit: impl FnOnce(&mut Value)) -> Value {
    let mut pod = two_containers();
    edit(&mut pod);
    pod
}

fn smp(kind: &str, original: &Value, patch: &Value) -> Value {
    match strategic_merge_patch(kind, original, patch) {
        Ok(v) => v,
        Err(e) => panic!("patch {patch} failed: {e}"),
    }
}

#[test]
fn strategic_merge_pod_patches_from_kubectl() {
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "apply: a container's image changes (three-way patch)",
            json!({"metadata": {"annotations": {LAST_APPLIED: "{\"new\":true}\n"}},
                   "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                            "containers": [{"image": "busybox:1", "name": "b"}]}}),
            edited(|p| {
                p["metadata"]["annotations"][LAST_APPLIED] = json!("{\"new\":true}\n");
                p["spec"]["containers"][1]["image"] = json!("busybox:1");
            }),
        ),
        (
            "apply: an env var is added between two others",
            json!({"spec": {"containers": [{"$setElementOrder/env": [{"name": "A"}, {"name": "N"}, {"name": "B"}],
                                            "env": [{"name": "N", "value": "new"}], "name": "a"}]}}),
            edited(|p| {
                p["spec"]["containers"][0]["env"] = json!([
                    {"name": "A", "value": "1"}, {"name": "N", "value": "new"}, {"name": "B", "value": "2"}
                ]);
            }),
        ),
        (
            "apply: an env var is removed",
            json!({"spec": {"containers": [{"$setElementOrder/env": [{"name": "A"}],
                                            "env": [{"$patch": "delete", "name": "B"}], "name": "a"}]}}),
            edited(|p| p["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}])),
        ),
        (
            "apply: an env var switches from value to valueFrom",
            json!({"spec": {"containers": [{"env": [{"name": "A", "value": null,
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}], "name": "a"}]}}),
            edited(|p| {
                p["spec"]["containers"][0]["env"][0] =
                    json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}});
            }),
        ),
        (
            "a port is added, merged by containerPort",
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 443}]}]}}),
            edited(|p| {
                p["spec"]["containers"][0]["ports"] =
                    json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]);
            }),
        ),
        (
            "a container is deleted with $patch: delete",
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}],
                            "containers": [{"$patch": "delete", "name": "b"}]}}),
            edited(|p| {
                let a = p["spec"]["containers"][0].clone();
                p["spec"]["containers"] = json!([a]);
            }),
        ),
        (
            "a container is added; directives inside it are applied, not stored",
            json!({"spec": {"containers": [{"name": "c", "image": "c:1", "workingDir": null,
                "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "x"}]}]}}),
            edited(|p| {
                let list = p["spec"]["containers"].as_array_mut().expect("containers");
                list.push(
                    json!({"name": "c", "image": "c:1", "env": [{"name": "X", "value": "x"}]}),
                );
            }),
        ),
        (
            "the container list is replaced with {\"$patch\": \"replace\"}",
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c:1"}]}}),
            edited(|p| p["spec"]["containers"] = json!([{"name": "c", "image": "c:1"}])),
        ),
        (
            "only the order changes",
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
            edited(|p| {
                let list = p["spec"]["containers"].as_array_mut().expect("containers");
                list.reverse();
            }),
        ),
        (
            "a list without a merge strategy (command) is replaced",
            json!({"spec": {"containers": [{"name": "b", "command": ["sh"]}]}}),
            edited(|p| p["spec"]["containers"][1]["command"] = json!(["sh"])),
        ),
        (
            "null deletes map keys, at any depth",
            json!({"metadata": {"labels": {"env": null, "tier": "front"}},
                   "spec": {"containers": [{"name": "b", "command": null}]}}),
            edited(|p| {
                p["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
                p["spec"]["containers"][1] = json!({"name": "b", "image": "busybox:0"});
            }),
        ),
        (
            "a map is replaced with $patch: replace",
            json!({"metadata": {"labels": {"$patch": "replace", "tier": "front"}}}),
            edited(|p| p["metadata"]["labels"] = json!({"tier": "front"})),
        ),
        (
            "a map is deleted with $patch: delete",
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
            edited(|p| {
                p["spec"]
                    .as_object_mut()
                    .expect("spec")
                    .remove("securityContext");
            }),
        ),
        (
            "$patch: merge is the default",
            json!({"metadata": {"labels": {"$patch": "merge", "tier": "front"}}}),
            edited(|p| p["metadata"]["labels"]["tier"] = json!("front")),
        ),
        (
            "finalizers are a set: union",
            json!({"metadata": {"finalizers": ["example.com/b", "example.com/c"]}}),
            edited(|p| {
                p["metadata"]["finalizers"] =
                    json!(["example.com/a", "example.com/b", "example.com/c"]);
            }),
        ),
        (
            "$deleteFromPrimitiveList removes finalizers",
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}}),
            edited(|p| p["metadata"]["finalizers"] = json!(["example.com/b"])),
        ),
        (
            "apply: finalizers delete, add and reorder at once",
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"],
                                "$setElementOrder/finalizers": ["example.com/c", "example.com/b"],
                                "finalizers": ["example.com/c"]}}),
            edited(|p| p["metadata"]["finalizers"] = json!(["example.com/c", "example.com/b"])),
        ),
        (
            "owner references merge by uid",
            json!({"metadata": {"ownerReferences": [{"uid": "u1", "controller": false},
                                                    {"uid": "u2", "kind": "Job", "name": "j"}]}}),
            edited(|p| {
                p["metadata"]["ownerReferences"] = json!([
                    {"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": false},
                    {"uid": "u2", "kind": "Job", "name": "j"}
                ]);
            }),
        ),
        (
            "$retainKeys switches a volume's source",
            json!({"spec": {"volumes": [{"$retainKeys": ["configMap", "name"],
                                         "configMap": {"name": "cm"}, "name": "data"}]}}),
            edited(|p| {
                p["spec"]["volumes"] = json!([{"name": "data", "configMap": {"name": "cm"}}])
            }),
        ),
        (
            "kubelet status patch: conditions merge by type",
            json!({"status": {"$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
                              "conditions": [{"status": "True", "type": "Ready"}]}}),
            edited(|p| p["status"]["conditions"][1]["status"] = json!("True")),
        ),
        (
            "an empty patch changes nothing",
            json!({}),
            two_containers(),
        ),
        (
            "$patch: delete at the top leaves nothing",
            json!({"$patch": "delete"}),
            json!({}),
        ),
    ];
    for (name, patch, want) in cases {
        assert_eq!(smp("Pod", &two_containers(), &patch), want, "{name}");
    }
}

#[test]
fn strategic_merge_other_kinds() {
    let cases: Vec<(&str, &str, Value, Value, Value)> = vec![
        (
            "Deployment: template container image, like for a Pod",
            "Deployment",
            json!({"spec": {"replicas": 1, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                   "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "side", "image": "s:1"}]}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                                                  "containers": [{"image": "app:2", "name": "app"}]}}}}),
            json!({"spec": {"replicas": 1, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                   "template": {"spec": {"containers": [{"name": "app", "image": "app:2"}, {"name": "side", "image": "s:1"}]}}}}),
        ),
        (
            "Deployment: $retainKeys drops the old strategy's fields",
            "Deployment",
            json!({"spec": {"replicas": 1, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            json!({"spec": {"replicas": 1, "strategy": {"type": "Recreate"}}}),
        ),
        (
            "Service: ports merge by port",
            "Service",
            json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9090}, {"name": "https", "port": 443}]}}),
        ),
        (
            "Endpoints: subsets are replaced",
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}, {"addresses": [{"ip": "10.0.0.2"}]}]}),
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.3"}]}]}),
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.3"}]}]}),
        ),
        (
            "Node: addresses merge by type",
            "Node",
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n"}]}}),
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n"}]}}),
        ),
        (
            "ConfigMap: data is a map, null deletes a key",
            "ConfigMap",
            json!({"metadata": {"name": "cm"}, "data": {"k": "v", "gone": "x"}}),
            json!({"data": {"k": "v2", "gone": null, "new": "n"}}),
            json!({"metadata": {"name": "cm"}, "data": {"k": "v2", "new": "n"}}),
        ),
        (
            "unknown kind: lists are replaced, metadata still merges",
            "Widget",
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "a", "v": 1}, {"name": "b"}]}}),
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "a", "v": 2}]}}),
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"items": [{"name": "a", "v": 2}]}}),
        ),
        (
            "a field changing type is replaced",
            "Widget",
            json!({"spec": {"x": "scalar", "y": {"a": 1}}}),
            json!({"spec": {"x": {"b": 2, "c": null}, "y": [1]}}),
            json!({"spec": {"x": {"b": 2}, "y": [1]}}),
        ),
    ];
    for (name, kind, original, patch, want) in cases {
        assert_eq!(smp(kind, &original, &patch), want, "{name}");
    }
}

#[test]
fn strategic_merge_errors() {
    let original = two_containers();
    let cases: Vec<(Value, PatchError, &str)> = vec![
        (
            json!({"spec": {"$patch": "bogus"}}),
            PatchError::UnknownPatchDirective { path: "spec".into(), value: "\"bogus\"".into() },
            "spec: unknown $patch directive \"bogus\", expected \"replace\", \"delete\" or \"merge\"",
        ),
        (
            json!({"spec": {"containers": [{"image": "x"}]}}),
            PatchError::MissingMergeKey { path: "spec.containers".into(), index: 0, key: "name" },
            "spec.containers: item 0 has no merge key \"name\"",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "A"}, {"value": "v"}]}]}}),
            PatchError::MissingMergeKey { path: "spec.containers[name=a].env".into(), index: 1, key: "name" },
            "spec.containers[name=a].env: item 1 has no merge key \"name\"",
        ),
        (
            json!({"spec": {"containers": ["a"]}}),
            PatchError::ItemNotAnObject { path: "spec.containers".into(), index: 0, key: "name" },
            "spec.containers: item 0 must be an object because the list is merged by \"name\"",
        ),
        (
            json!({"spec": {"$retainKeys": "restartPolicy"}}),
            PatchError::MalformedDirective { path: "spec".into(), directive: "$retainKeys".into(), expected: "a list of field names" },
            "spec: $retainKeys must be a list of field names",
        ),
        (
            json!({"spec": {"$retainKeys": ["containers"], "restartPolicy": "Never"}}),
            PatchError::NotInRetainKeys { path: "spec".into(), key: "restartPolicy".into() },
            "spec: \"restartPolicy\" is in the patch but not in $retainKeys",
        ),
        (
            json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
            PatchError::MalformedDirective { path: "spec".into(), directive: "$setElementOrder/containers".into(), expected: "a list" },
            "spec: $setElementOrder/containers must be a list",
        ),
        (
            json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}}),
            PatchError::MalformedDirective {
                path: "spec".into(),
                directive: "$setElementOrder/containers".into(),
                expected: "a list of objects with the merge key",
            },
            "spec: $setElementOrder/containers must be a list of objects with the merge key",
        ),
        (
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "example.com/a"}}),
            PatchError::MalformedDirective {
                path: "metadata".into(),
                directive: "$deleteFromPrimitiveList/finalizers".into(),
                expected: "a list",
            },
            "metadata: $deleteFromPrimitiveList/finalizers must be a list",
        ),
        (
            json!({"$patch": 1}),
            PatchError::UnknownPatchDirective { path: "<root>".into(), value: "1".into() },
            "<root>: unknown $patch directive 1, expected \"replace\", \"delete\" or \"merge\"",
        ),
        (
            json!([{"op": "add"}]),
            PatchError::NotAnObject { what: "strategic merge patch", found: "array" },
            "strategic merge patch must be a JSON object, got array",
        ),
    ];
    for (patch, want, message) in cases {
        let got = strategic_merge_patch("Pod", &original, &patch).expect_err("patch must fail");
        assert_eq!(got, want, "{patch}");
        assert_eq!(got.to_string(), message);
    }
}

/// RFC 7386 Appendix A, every row.
#[test]
fn rfc_7386_appendix_a() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (original, patch, want) in cases {
        assert_eq!(merge_patch(&original, &patch), want, "{original} + {patch}");
    }
}

/// The document the JSON patch cases start from.
fn deployment() -> Value {
    json!({
        "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a~b": "tilde"}},
        "spec": {"replicas": 3, "containers": [{"name": "a", "image": "nginx:1"}, {"name": "b"}]}
    })
}

fn with(edit: impl FnOnce(&mut Value)) -> Result<Value, PatchError> {
    let mut doc = deployment();
    edit(&mut doc);
    Ok(doc)
}

#[test]
fn json_patch_operations() {
    let a = json!({"name": "a", "image": "nginx:1"});
    let b = json!({"name": "b"});
    let cases: Vec<(Value, Result<Value, PatchError>)> = vec![
        (json!([]), Ok(deployment())),
        (
            json!([{"op": "add", "path": "/metadata/labels/tier", "value": "front"}]),
            with(|d| d["metadata"]["labels"]["tier"] = json!("front")),
        ),
        (
            json!([{"op": "add", "path": "/metadata/labels/app", "value": "x"}]),
            with(|d| d["metadata"]["labels"]["app"] = json!("x")),
        ),
        (
            json!([{"op": "add", "path": "/metadata/annotations/example.com~1owner", "value": "me"}]),
            with(|d| d["metadata"]["annotations"]["example.com/owner"] = json!("me")),
        ),
        (
            json!([{"op": "add", "path": "/spec/containers/1", "value": {"name": "c"}}]),
            with(|d| d["spec"]["containers"] = json!([a, {"name": "c"}, b])),
        ),
        (
            json!([{"op": "add", "path": "/spec/containers/-", "value": {"name": "c"}}]),
            with(|d| d["spec"]["containers"] = json!([a, b, {"name": "c"}])),
        ),
        (
            json!([{"op": "add", "path": "/spec/containers/2", "value": {"name": "c"}}]),
            with(|d| d["spec"]["containers"] = json!([a, b, {"name": "c"}])),
        ),
        (
            json!([{"op": "add", "path": "/spec/paused", "value": null}]),
            with(|d| d["spec"]["paused"] = json!(null)),
        ),
        (
            json!([{"op": "add", "path": "", "value": {"x": 1}}]),
            Ok(json!({"x": 1})),
        ),
        (
            json!([{"op": "remove", "path": "/metadata/annotations/a~0b"}]),
            with(|d| d["metadata"]["annotations"] = json!({})),
        ),
        (
            json!([{"op": "remove", "path": "/spec/containers/0"}]),
            with(|d| d["spec"]["containers"] = json!([b])),
        ),
        (
            json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:2"}]),
            with(|d| d["spec"]["containers"][0]["image"] = json!("nginx:2")),
        ),
        (
            json!([{"op": "move", "from": "/metadata/labels/app", "path": "/metadata/labels/name"}]),
            with(|d| d["metadata"]["labels"] = json!({"name": "web"})),
        ),
        (
            json!([{"op": "move", "from": "/spec/containers/0", "path": "/spec/containers/-"}]),
            with(|d| d["spec"]["containers"] = json!([b, a])),
        ),
        (
            json!([{"op": "move", "from": "/spec", "path": "/spec"}]),
            Ok(deployment()),
        ),
        (
            json!([{"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/-"}]),
            with(|d| d["spec"]["containers"] = json!([a, b, a])),
        ),
        (
            json!([{"op": "test", "path": "/spec/replicas", "value": 3.0},
                   {"op": "replace", "path": "/spec/replicas", "value": 5}]),
            with(|d| d["spec"]["replicas"] = json!(5)),
        ),
        (
            json!([{"op": "test", "path": "/spec/containers/0", "value": {"image": "nginx:1", "name": "a"}}]),
            Ok(deployment()),
        ),
    ];
    for (ops, want) in cases {
        assert_eq!(json_patch(&deployment(), &ops), want, "{ops}");
    }
}

#[test]
fn json_patch_errors() {
    let not_found = |index, op, path: &str| PatchError::PathNotFound {
        index,
        op,
        path: path.into(),
    };
    let cases: Vec<(Value, PatchError, &str)> = vec![
        (
            json!([{"op": "remove", "path": "/metadata/labels/nope"}]),
            not_found(0, "remove", "/metadata/labels/nope"),
            "json patch operation 0 (remove): path \"/metadata/labels/nope\" does not exist",
        ),
        (
            json!([{"op": "add", "path": "/metadata/labels/x", "value": 1},
                   {"op": "test", "path": "/spec/replicas", "value": 4}]),
            PatchError::TestFailed { index: 1, path: "/spec/replicas".into() },
            "json patch operation 1 (test): value at \"/spec/replicas\" is not the expected value",
        ),
        (
            json!([{"op": "test", "path": "/spec/paused", "value": false}]),
            not_found(0, "test", "/spec/paused"),
            "json patch operation 0 (test): path \"/spec/paused\" does not exist",
        ),
        (
            json!([{"op": "add", "path": "/spec/missing/x", "value": 1}]),
            not_found(0, "add", "/spec/missing/x"),
            "json patch operation 0 (add): path \"/spec/missing/x\" does not exist",
        ),
        (
            json!([{"op": "replace", "path": "/spec/paused", "value": true}]),
            not_found(0, "replace", "/spec/paused"),
            "json patch operation 0 (replace): path \"/spec/paused\" does not exist",
        ),
        (
            json!([{"op": "move", "from": "/spec/nope", "path": "/spec/x"}]),
            not_found(0, "move", "/spec/nope"),
            "json patch operation 0 (move): path \"/spec/nope\" does not exist",
        ),
        (
            json!([{"op": "copy", "from": "/spec/containers/5", "path": "/spec/x"}]),
            PatchError::BadArrayIndex { index: 0, op: "copy", path: "/spec/containers/5".into(), token: "5".into(), len: 2 },
            "json patch operation 0 (copy): path \"/spec/containers/5\": \"5\" is not a valid index into an array of length 2",
        ),
        (
            json!([{"op": "add", "path": "/spec/containers/3", "value": {}}]),
            PatchError::BadArrayIndex { index: 0, op: "add", path: "/spec/containers/3".into(), token: "3".into(), len: 2 },
            "json patch operation 0 (add): path \"/spec/containers/3\": \"3\" is not a valid index into an array of length 2",
        ),
        (
            json!([{"op": "remove", "path": "/spec/containers/-"}]),
            PatchError::BadArrayIndex { index: 0, op: "remove", path: "/spec/containers/-".into(), token: "-".into(), len: 2 },
            "json patch operation 0 (remove): path \"/spec/containers/-\": \"-\" is not a valid index into an array of length 2",
        ),
        (
            json!([{"op": "replace", "path": "/spec/containers/01/name", "value": "x"}]),
            PatchError::BadArrayIndex { index: 0, op: "replace", path: "/spec/containers/01/name".into(), token: "01".into(), len: 2 },
            "json patch operation 0 (replace): path \"/spec/containers/01/name\": \"01\" is not a valid index into an array of length 2",
        ),
        (
            json!([{"op": "add", "path": "/spec/replicas/x", "value": 1}]),
            PatchError::NotAContainer { index: 0, op: "add", path: "/spec/replicas/x".into(), found: "number" },
            "json patch operation 0 (add): path \"/spec/replicas/x\" goes through a number",
        ),
        (
            json!([{"op": "move", "from": "/spec", "path": "/spec/inner"}]),
            PatchError::MoveIntoChild { index: 0, from: "/spec".into(), path: "/spec/inner".into() },
            "json patch operation 0 (move): cannot move \"/spec\" into its own child \"/spec/inner\"",
        ),
        (
            json!([{"op": "remove", "path": ""}]),
            PatchError::RemoveRoot { index: 0, op: "remove" },
            "json patch operation 0 (remove): cannot remove the whole document",
        ),
        (
            json!([{"op": "replace", "path": "spec/replicas", "value": 1}]),
            PatchError::InvalidPointer { index: 0, op: "replace", pointer: "spec/replicas".into(), problem: "must be empty or start with \"/\"" },
            "json patch operation 0 (replace): invalid JSON pointer \"spec/replicas\": must be empty or start with \"/\"",
        ),
        (
            json!([{"op": "remove", "path": "/metadata/annotations/a~2b"}]),
            PatchError::InvalidPointer { index: 0, op: "remove", pointer: "/metadata/annotations/a~2b".into(), problem: "\"~\" must be followed by \"0\" or \"1\"" },
            "json patch operation 0 (remove): invalid JSON pointer \"/metadata/annotations/a~2b\": \"~\" must be followed by \"0\" or \"1\"",
        ),
        (
            json!([{"op": "merge", "path": "/spec"}]),
            PatchError::UnknownOp { index: 0, op: "merge".into() },
            "json patch operation 0: unknown op \"merge\", expected add, remove, replace, move, copy or test",
        ),
        (
            json!([{"path": "/spec"}]),
            PatchError::OpFieldMissing { index: 0, field: "op" },
            "json patch operation 0: \"op\" is missing or not a string",
        ),
        (
            json!([{"op": "add", "path": 3, "value": 1}]),
            PatchError::OpFieldMissing { index: 0, field: "path" },
            "json patch operation 0: \"path\" is missing or not a string",
        ),
        (
            json!([{"op": "copy", "path": "/x"}]),
            PatchError::OpFieldMissing { index: 0, field: "from" },
            "json patch operation 0: \"from\" is missing or not a string",
        ),
        (
            json!([{"op": "add", "path": "/x"}]),
            PatchError::OpValueMissing { index: 0, op: "add" },
            "json patch operation 0 (add): \"value\" is missing",
        ),
        (
            json!([{"op": "test", "path": "/spec"}]),
            PatchError::OpValueMissing { index: 0, op: "test" },
            "json patch operation 0 (test): \"value\" is missing",
        ),
        (
            json!([[]]),
            PatchError::OpNotAnObject { index: 0 },
            "json patch operation 0: must be a JSON object",
        ),
        (
            json!({"op": "add", "path": "/x", "value": 1}),
            PatchError::NotAnOperationList { found: "object" },
            "json patch must be a JSON array of operations, got object",
        ),
    ];
    for (ops, want, message) in cases {
        let got = json_patch(&deployment(), &ops).expect_err("patch must fail");
        assert_eq!(got, want, "{ops}");
        assert_eq!(got.to_string(), message);
    }
}

#[test]
fn apply_patch_dispatches_on_the_patch_type() {
    let original = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
    let add_b = json!({"spec": {"containers": [{"name": "b", "image": "y"}]}});
    let cases: Vec<(PatchType, Value, Result<Value, PatchError>)> = vec![
        (
            PatchType::StrategicMerge,
            add_b.clone(),
            Ok(
                json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}),
            ),
        ),
        (PatchType::Merge, add_b.clone(), Ok(add_b)),
        (
            PatchType::Json,
            json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "z"}]),
            Ok(json!({"spec": {"containers": [{"name": "a", "image": "z"}]}})),
        ),
        (
            PatchType::Merge,
            json!(["x"]),
            Err(PatchError::NotAnObject {
                what: "merge patch",
                found: "array",
            }),
        ),
        (
            PatchType::Json,
            json!([{"op": "replace", "path": "", "value": "x"}]),
            Err(PatchError::NotAnObject {
                what: "patched object",
                found: "string",
            }),
        ),
    ];
    for (patch_type, patch, want) in cases {
        assert_eq!(
            apply_patch("Pod", &original, &patch, patch_type),
            want,
            "{patch_type:?} {patch}"
        );
    }
}

/// A small deterministic generator of JSON values (no dependency needed for a few hundred
/// cases): keys are drawn from names the merge-key table knows so that merged lists are hit.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    /// A value; objects never hold `null` when `nulls_in_objects` is false.
    fn value(&mut self, depth: u32, nulls_in_objects: bool) -> Value {
        const KEYS: [&str; 8] = [
            "spec",
            "metadata",
            "containers",
            "finalizers",
            "name",
            "env",
            "a",
            "b",
        ];
        let leaf = depth == 0 || self.next(4) == 0;
        match (leaf, self.next(4)) {
            (true, 0) => json!(null),
            (true, 1) => json!(self.next(100)),
            (true, 2) => json!(self.next(2) == 0),
            (true, _) => json!(format!("s{}", self.next(5))),
            (false, 0 | 1) => Value::Array(
                (0..self.next(4))
                    .map(|_| self.value(depth - 1, nulls_in_objects))
                    .collect(),
            ),
            (false, _) => {
                let mut map = serde_json::Map::new();
                for _ in 0..=self.next(4) {
                    let key = KEYS[self.next(KEYS.len() as u64) as usize].to_string();
                    let value = self.value(depth - 1, nulls_in_objects);
                    if nulls_in_objects || !value.is_null() {
                        map.insert(key, value);
                    }
                }
                Value::Object(map)
            }
        }
    }

    fn object(&mut self, nulls_in_objects: bool) -> Value {
        loop {
            if let object @ Value::Object(_) = self.value(4, nulls_in_objects) {
                return object;
            }
        }
    }
}

#[test]
fn an_empty_patch_is_the_identity() {
    let mut gen = Gen(7);
    let mut samples: Vec<Value> = (0..300).map(|_| gen.object(true)).collect();
    samples.extend([two_containers(), deployment()]);
    for original in samples {
        for kind in ["Pod", "Deployment", "Widget"] {
            for (patch_type, empty) in [
                (PatchType::StrategicMerge, json!({})),
                (PatchType::Merge, json!({})),
                (PatchType::Json, json!([])),
            ] {
                let got = apply_patch(kind, &original, &empty, patch_type);
                assert_eq!(
                    got.as_ref(),
                    Ok(&original),
                    "{kind} {patch_type:?} {original}"
                );
            }
        }
    }
}

#[test]
fn merging_an_object_into_itself_is_the_identity() {
    let mut gen = Gen(11);
    // RFC 7386 gives null in an object the meaning "delete", so the property needs objects
    // without null members (nulls inside arrays are fine).
    let mut samples: Vec<Value> = (0..300).map(|_| gen.object(false)).collect();
    samples.extend([two_containers(), deployment()]);
    for original in &samples {
        assert_eq!(&merge_patch(original, original), original, "{original}");
    }
    // A strategic merge patch merges lists by key, so it needs well-formed objects: keys unique.
    for original in [two_containers(), deployment()] {
        assert_eq!(smp("Pod", &original, &original), original);
    }
}
