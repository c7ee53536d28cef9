//! `Table` responses for `kubectl get`: the columns the API server prints for each kind, with
//! pod STATUS and READY computed the way kubectl's printer does
//! (<https://github.com/kubernetes/kubernetes/blob/master/pkg/printers/internalversion/printers.go>).

use serde_json::{json, Value};

/// A column: name, type, format, priority (0 = shown by default, 1 = only with `-o wide`).
type Column = (&'static str, &'static str, &'static str, u8);

/// What each row's `object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn from_query(v: Option<&str>) -> IncludeObject {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn columns(resource: &str) -> Vec<Column> {
    match resource {
        "pods" => vec![
            ("Name", "string", "name", 0),
            ("Ready", "string", "", 0),
            ("Status", "string", "", 0),
            ("Restarts", "string", "", 0),
            ("Age", "string", "", 0),
            ("IP", "string", "", 1),
            ("Node", "string", "", 1),
            ("Nominated Node", "string", "", 1),
            ("Readiness Gates", "string", "", 1),
        ],
        "configmaps" => vec![
            ("Name", "string", "name", 0),
            ("Data", "integer", "", 0),
            ("Age", "string", "", 0),
        ],
        "secrets" => vec![
            ("Name", "string", "name", 0),
            ("Type", "string", "", 0),
            ("Data", "integer", "", 0),
            ("Age", "string", "", 0),
        ],
        "namespaces" => vec![
            ("Name", "string", "name", 0),
            ("Status", "string", "", 0),
            ("Age", "string", "", 0),
        ],
        "services" => vec![
            ("Name", "string", "name", 0),
            ("Type", "string", "", 0),
            ("Cluster-IP", "string", "", 0),
            ("External-IP", "string", "", 0),
            ("Port(s)", "string", "", 0),
            ("Age", "string", "", 0),
            ("Selector", "string", "", 1),
        ],
        "events" => vec![
            ("Last Seen", "string", "", 0),
            ("Type", "string", "", 0),
            ("Reason", "string", "", 0),
            ("Object", "string", "", 0),
            ("Subobject", "string", "", 1),
            ("Source", "string", "", 1),
            ("Message", "string", "", 0),
            ("First Seen", "string", "", 1),
            ("Count", "string", "", 1),
            ("Name", "string", "name", 1),
        ],
        "endpoints" => vec![
            ("Name", "string", "name", 0),
            ("Endpoints", "string", "", 0),
            ("Age", "string", "", 0),
        ],
        "endpointslices" => vec![
            ("Name", "string", "name", 0),
            ("AddressType", "string", "", 0),
            ("Ports", "string", "", 0),
            ("Endpoints", "string", "", 0),
            ("Age", "string", "", 0),
        ],
        "storageclasses" => vec![
            ("Name", "string", "name", 0),
            ("Provisioner", "string", "", 0),
            ("ReclaimPolicy", "string", "", 0),
            ("VolumeBindingMode", "string", "", 0),
            ("AllowVolumeExpansion", "string", "", 0),
            ("Age", "string", "", 0),
        ],
        "persistentvolumeclaims" => vec![
            ("Name", "string", "name", 0),
            ("Status", "string", "", 0),
            ("Volume", "string", "", 0),
            ("Capacity", "string", "", 0),
            ("Access Modes", "string", "", 0),
            ("StorageClass", "string", "", 0),
            ("Age", "string", "", 0),
            ("VolumeMode", "string", "", 1),
        ],
        "persistentvolumes" => vec![
            ("Name", "string", "name", 0),
            ("Capacity", "string", "", 0),
            ("Access Modes", "string", "", 0),
            ("Reclaim Policy", "string", "", 0),
            ("Status", "string", "", 0),
            ("Claim", "string", "", 0),
            ("StorageClass", "string", "", 0),
            ("Reason", "string", "", 0),
            ("Age", "string", "", 0),
            ("VolumeMode", "string", "", 1),
        ],
        "nodes" => vec![
            ("Name", "string", "name", 0),
            ("Status", "string", "", 0),
            ("Roles", "string", "", 0),
            ("Age", "string", "", 0),
            ("Version", "string", "", 0),
        ],
        _ => vec![("Name", "string", "name", 0), ("Age", "string", "", 0)],
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn cells(resource: &str, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(s(o, "/metadata/creationTimestamp"), now));
    let count = |ptr: &str| {
        o.pointer(ptr)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match resource {
        "pods" => {
            let row = pod_row(o, now);
            vec![
                name,
                json!(row.ready),
                json!(row.status),
                json!(row.restarts),
                created,
                json!(none_if_empty(s(o, "/status/podIP"))),
                json!(none_if_empty(s(o, "/spec/nodeName"))),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "configmaps" => vec![name, json!(count("/data") + count("/binaryData")), created],
        "secrets" => vec![name, json!(s(o, "/type")), json!(count("/data")), created],
        "namespaces" => vec![name, json!(none_if_empty(s(o, "/status/phase"))), created],
        "services" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let node_port = p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .map(|n| format!(":{n}"))
                        .unwrap_or_default();
                    format!(
                        "{}{node_port}/{}",
                        p.get("port").and_then(Value::as_i64).unwrap_or(0),
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    )
                })
                .collect();
            let selector: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            let cluster_ip = match s(o, "/spec/clusterIP") {
                "" => "<none>",
                ip => ip,
            };
            vec![
                name,
                json!(match s(o, "/spec/type") {
                    "" => "ClusterIP",
                    t => t,
                }),
                json!(cluster_ip),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                created,
                json!(if selector.is_empty() {
                    "<none>".to_string()
                } else {
                    selector.join(",")
                }),
            ]
        }
        "endpoints" => {
            let mut shown = Vec::new();
            for subset in o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = subset["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_i64())
                    .collect();
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    let ip = a["ip"].as_str().unwrap_or("");
                    if ports.is_empty() {
                        shown.push(ip.to_string());
                    }
                    shown.extend(ports.iter().map(|p| format!("{ip}:{p}")));
                }
            }
            vec![name, json!(first_three(&shown)), created]
        }
        "endpointslices" => {
            let ports: Vec<String> = o
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    p["port"]
                        .as_i64()
                        .map_or("<unset>".into(), |n| n.to_string())
                })
                .collect();
            let addresses: Vec<String> = o
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                name,
                json!(s(o, "/addressType")),
                json!(first_three(&ports)),
                json!(first_three(&addresses)),
                created,
            ]
        }
        "storageclasses" => {
            let default = s(
                o,
                "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
            ) == "true";
            let shown = if default {
                format!("{} (default)", s(o, "/metadata/name"))
            } else {
                s(o, "/metadata/name").to_string()
            };
            vec![
                json!(shown),
                json!(s(o, "/provisioner")),
                json!(none_if_empty(s(o, "/reclaimPolicy")).replace("<none>", "Delete")),
                json!(none_if_empty(s(o, "/volumeBindingMode")).replace("<none>", "Immediate")),
                json!(o
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
                created,
            ]
        }
        "persistentvolumeclaims" => vec![
            name,
            json!(phase_or_terminating(o)),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes(o.pointer("/status/accessModes"))),
            json!(s(o, "/spec/storageClassName")),
            created,
            json!(none_if_empty(s(o, "/spec/volumeMode")).replace("<none>", "Filesystem")),
        ],
        "persistentvolumes" => {
            let claim = match (
                s(o, "/spec/claimRef/namespace"),
                s(o, "/spec/claimRef/name"),
            ) {
                (_, "") => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            vec![
                name,
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(phase_or_terminating(o)),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(s(o, "/status/reason")),
                created,
                json!(none_if_empty(s(o, "/spec/volumeMode")).replace("<none>", "Filesystem")),
            ]
        }
        "events" => {
            let last = [
                s(o, "/lastTimestamp"),
                s(o, "/eventTime"),
                s(o, "/metadata/creationTimestamp"),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or("");
            let first = match s(o, "/firstTimestamp") {
                "" => last,
                t => t,
            };
            vec![
                json!(age(last, now)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_lowercase(),
                    s(o, "/involvedObject/name")
                )),
                json!(s(o, "/involvedObject/fieldPath")),
                json!(format!(
                    "{}, {}",
                    s(o, "/source/component"),
                    s(o, "/source/host")
                )),
                json!(s(o, "/message")),
                json!(age(first, now)),
                json!(o.get("count").and_then(Value::as_i64).unwrap_or(1)),
                name,
            ]
        }
        "nodes" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            vec![
                name,
                json!(if ready { "Ready" } else { "NotReady" }),
                json!("<none>"),
                created,
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
            ]
        }
        _ => vec![name, created],
    }
}

/// Access modes as kubectl abbreviates them (`RWO,RWX`).
fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Up to three items joined by commas and `+ N more...`, or `<none>`, as kubectl prints
/// endpoints.
fn first_three(items: &[String]) -> String {
    match items.len() {
        0 => "<none>".into(),
        n if n <= 3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

/// `status.phase`, or `Terminating` once the object is being deleted (as the apiserver
/// prints claims and volumes).
fn phase_or_terminating(o: &Value) -> &str {
    if o["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        "Terminating"
    } else {
        s(o, "/status/phase")
    }
}

fn none_if_empty(v: &str) -> &str {
    if v.is_empty() {
        "<none>"
    } else {
        v
    }
}

/// Builds a Table of `objects`.
pub fn table(
    resource: &str,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    now: i64,
) -> Value {
    let column_definitions: Vec<Value> = columns(resource)
        .into_iter()
        .map(|(name, ty, format, priority)| json!({"name": name, "type": ty, "format": format, "description": format!("{name} column"), "priority": priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(resource, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => row["object"] = o.clone(),
                IncludeObject::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(Value::Null)})
                }
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version}, "columnDefinitions": column_definitions, "rows": rows})
}

/// The READY, STATUS and RESTARTS cells of a pod.
#[derive(Debug, PartialEq, Eq)]
pub struct PodRow {
    pub ready: String,
    pub status: String,
    pub restarts: String,
}

/// Computes a pod's row as kubectl's printer does.
pub fn pod_row(pod: &Value, now: i64) -> PodRow {
    let status = &pod["status"];
    let mut reason = status
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .to_string();
    if let Some(r) = status
        .get("reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        reason = r.to_string();
    }
    let init_specs = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sidecar = |i: usize| {
        init_specs
            .get(i)
            .and_then(|c| c.get("restartPolicy"))
            .and_then(Value::as_str)
            == Some("Always")
    };
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
        + (0..init_specs.len()).filter(|i| sidecar(*i)).count();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut note_restart = |c: &Value| {
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(parse_time)
        {
            last_restart = Some(last_restart.map_or(t, |l: i64| l.max(t)));
        }
    };
    let mut initializing = false;
    let init_statuses = status
        .get("initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        note_restart(c);
        let term = c.pointer("/state/terminated");
        let waiting_reason = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .unwrap_or("");
        if term.is_some_and(|t| t["exitCode"] == 0) {
            continue;
        }
        if sidecar(i) && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        reason = match term {
            Some(t) => match t
                .get("reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                Some(r) => format!("Init:{r}"),
                None if t.get("signal").and_then(Value::as_i64).unwrap_or(0) != 0 => {
                    format!("Init:Signal:{}", t["signal"])
                }
                None => format!("Init:ExitCode:{}", t["exitCode"]),
            },
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        break;
    }
    let initialized = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = 0;
        let mut has_running = false;
        let statuses = status
            .get("containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in statuses.iter().rev() {
            restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            note_restart(c);
            let waiting = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            let term = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = term {
                reason = match t
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) => r.to_string(),
                    None if t.get("signal").and_then(Value::as_i64).unwrap_or(0) != 0 => {
                        format!("Signal:{}", t["signal"])
                    }
                    None => format!("ExitCode:{}", t["exitCode"]),
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = status
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = "Terminating".to_string();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    PodRow {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn parse_time(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp())
}

/// Age of an object, as kubectl prints it; `<unknown>` without a timestamp.
pub fn age(timestamp: &str, now: i64) -> String {
    match parse_time(timestamp) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// apimachinery's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        match secs % 60 {
            0 => format!("{m}m"),
            s => format!("{m}m{s}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            mm => format!("{h}h{mm}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            hh => format!("{d}d{hh}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(init: Value, statuses: Value, init_statuses: Value, conditions: Value) -> Value {
        json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"initContainers": init, "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": statuses, "initContainerStatuses": init_statuses, "conditions": conditions}
        })
    }

    fn running(ready: bool) -> Value {
        json!({"ready": ready, "restartCount": 0, "state": {"running": {}}})
    }

    #[test]
    fn pod_status_column() {
        let now = parse_time("2026-01-01T00:10:00Z").expect("time");
        let cases = vec![
            (
                "running",
                pod(
                    json!([]),
                    json!([running(true), running(true)]),
                    json!([]),
                    json!([]),
                ),
                "2/2",
                "Running",
            ),
            (
                "one not ready",
                pod(
                    json!([]),
                    json!([running(true), running(false)]),
                    json!([]),
                    json!([]),
                ),
                "1/2",
                "Running",
            ),
            (
                "crash loop",
                pod(
                    json!([]),
                    json!([running(true), {"ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
                    json!([]),
                    json!([]),
                ),
                "1/2",
                "CrashLoopBackOff",
            ),
            (
                "init running",
                pod(
                    json!([{"name": "i1"}, {"name": "i2"}]),
                    json!([]),
                    json!([{"state": {"running": {}}}, {"state": {"waiting": {"reason": "PodInitializing"}}}]),
                    json!([]),
                ),
                "0/2",
                "Init:0/2",
            ),
            (
                "init failing",
                pod(
                    json!([{"name": "i1"}]),
                    json!([]),
                    json!([{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]),
                    json!([]),
                ),
                "0/2",
                "Init:Error",
            ),
            (
                "completed",
                pod(
                    json!([]),
                    json!([{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]),
                    json!([]),
                    json!([]),
                ),
                "0/2",
                "Completed",
            ),
            (
                "creating",
                pod(
                    json!([]),
                    json!([{"state": {"waiting": {"reason": "ContainerCreating"}}}, {"state": {"waiting": {"reason": "ContainerCreating"}}}]),
                    json!([]),
                    json!([]),
                ),
                "0/2",
                "ContainerCreating",
            ),
        ];
        for (name, p, ready, status) in cases {
            let row = pod_row(&p, now);
            assert_eq!(
                (row.ready.as_str(), row.status.as_str()),
                (ready, status),
                "{name}"
            );
        }
        let mut terminating = pod(
            json!([]),
            json!([running(true), running(true)]),
            json!([]),
            json!([]),
        );
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:09:00Z");
        assert_eq!(pod_row(&terminating, now).status, "Terminating");
        let restarted = pod(
            json!([]),
            json!([running(true), {"ready": true, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2026-01-01T00:08:00Z"}}}]),
            json!([]),
            json!([]),
        );
        assert_eq!(pod_row(&restarted, now).restarts, "2 (2m ago)");
    }

    #[test]
    fn durations() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn tables_have_rows_and_columns() {
        let p = pod(
            json!([]),
            json!([running(true), running(true)]),
            json!([]),
            json!([]),
        );
        let t = table("pods", &[p], "42", IncludeObject::Metadata, 0);
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(9));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["cells"][1], "2/2");
    }
}
