//! The Endpoints of a Service with a selector (pure): the pods of its namespace whose labels
//! match, that are not terminating and have an IP; Ready ones in `addresses`, the others in
//! `notReadyAddresses` (all in `addresses` with `publishNotReadyAddresses`). Each Service
//! port's `targetPort` is resolved per pod: a number as is, a name through the pod's container
//! ports (a pod without that port is left out of it); pods with the same resolved ports share
//! a subset, as the endpoints controller groups them
//! (<https://kubernetes.io/docs/concepts/services-networking/service/#endpoints>).

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The label the controller puts on the Endpoints it manages.
pub const MANAGED_BY: (&str, &str) = ("endpoints.kubernetes.io/managed-by", "endpoint-controller");

/// The subsets for `service`; `None` when it has no selector (its Endpoints are the user's) or
/// is an ExternalName Service.
pub fn subsets(service: &Service, pods: &[Pod]) -> Option<Vec<EndpointSubset>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        // Only a DNS alias: no endpoints, whatever its selector.
        return None;
    }
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let ns = service.metadata.namespace.as_deref().unwrap_or("default");
    let name = service.metadata.name.as_deref().unwrap_or("");
    let publish_all = spec.publish_not_ready_addresses == Some(true);
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref().unwrap_or("default") != ns
            || pod.metadata.deletion_timestamp.is_some()
            || !selector
                .iter()
                .all(|(k, v)| pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        {
            continue;
        }
        let status = pod.status.as_ref();
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let target = target_port(p, pod)?;
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                Some((p.name.clone().unwrap_or_default(), target, proto))
            })
            .collect();
        if ports.is_empty() && spec.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: pod
                .spec
                .as_ref()
                .filter(|s| s.subdomain.as_deref() == Some(name))
                .and_then(|s| s.hostname.clone()),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: Some(ns.to_string()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let group = groups.entry(ports).or_default();
        if publish_all || is_ready(pod) {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    Some(
        groups
            .into_iter()
            .map(|(ports, (mut ready, mut not_ready))| {
                ready.sort_by(|a, b| a.ip.cmp(&b.ip));
                not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
                EndpointSubset {
                    addresses: (!ready.is_empty()).then_some(ready),
                    not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                    ports: Some(
                        ports
                            .into_iter()
                            .map(|(name, port, protocol)| EndpointPort {
                                name: (!name.is_empty()).then_some(name),
                                port,
                                protocol: Some(protocol),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }
            })
            .collect(),
    )
}

/// The labels of the EndpointSlices the controller manages
/// (<https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/#management>).
pub const SLICE_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const SLICE_MANAGED_BY: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "endpointslice-controller.k8s.io",
);

/// The EndpointSlices (discovery.k8s.io/v1) that say what `subsets` say, for kubectl 1.31+
/// (`describe service` reads slices) and clients that watch slices: one slice per group of
/// pods with the same resolved ports, named `<service>-<5 characters of its uid>[-<n>]`,
/// labelled with the service's name and owned by the Service. An endpoint is `ready` and
/// `serving` when its pod is Ready (or the Service publishes not-ready addresses).
pub fn slices(service: &Service, subsets: &[EndpointSubset]) -> Vec<serde_json::Value> {
    use serde_json::json;
    let meta = &service.metadata;
    let name = meta.name.as_deref().unwrap_or("");
    let uid = meta.uid.as_deref().unwrap_or("");
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(SLICE_SERVICE_NAME.into(), name.into());
    labels.insert(SLICE_MANAGED_BY.0.into(), SLICE_MANAGED_BY.1.into());
    // An empty Service still has one slice with no endpoints, as the controller writes.
    let empty = [EndpointSubset::default()];
    let subsets = if subsets.is_empty() {
        &empty[..]
    } else {
        subsets
    };
    subsets
        .iter()
        .enumerate()
        .map(|(i, subset)| {
            let slice_name = match i {
                0 => format!("{name}-{short}"),
                n => format!("{name}-{short}-{n}"),
            };
            let endpoint = |a: &EndpointAddress, ready: bool| {
                let mut e = json!({
                    "addresses": [a.ip],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                });
                if let Some(h) = &a.hostname {
                    e["hostname"] = json!(h);
                }
                if let Some(n) = &a.node_name {
                    e["nodeName"] = json!(n);
                }
                if let Some(r) = &a.target_ref {
                    e["targetRef"] = json!({"kind": r.kind, "name": r.name, "namespace": r.namespace, "uid": r.uid});
                }
                e
            };
            let endpoints: Vec<_> = subset
                .addresses
                .iter()
                .flatten()
                .map(|a| endpoint(a, true))
                .chain(subset.not_ready_addresses.iter().flatten().map(|a| endpoint(a, false)))
                .collect();
            let ports: Vec<_> = subset
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    let mut port = json!({"port": p.port, "protocol": p.protocol.as_deref().unwrap_or("TCP")});
                    port["name"] = json!(p.name.as_deref().unwrap_or(""));
                    port
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": meta.namespace.as_deref().unwrap_or("default"),
                    "labels": labels,
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Service", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            })
        })
        .collect()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The pod port a Service port sends to: `targetPort` (default: `port`) by number or by the
/// name of one of the pod's container ports.
fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let proto = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name)
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("pod")
    }

    fn service(target: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}
        }))
        .expect("service")
    }

    #[test]
    fn ready_pods_are_addresses_others_not_ready() {
        let pods = vec![
            pod("b", "10.88.0.3", true, "http", 8080),
            pod("a", "10.88.0.2", true, "http", 8080),
            pod("c", "10.88.0.4", false, "http", 8080),
        ];
        let subsets = subsets(&service(json!(8080)), &pods).expect("selector");
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        let ips: Vec<&str> = s
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, vec!["10.88.0.2", "10.88.0.3"]);
        assert_eq!(s.not_ready_addresses.as_ref().map(Vec::len), Some(1));
        assert_eq!(s.ports.as_ref().expect("ports")[0].port, 8080);
        let r = s.addresses.as_ref().expect("addresses")[0]
            .target_ref
            .clone()
            .expect("ref");
        assert_eq!(r.name.as_deref(), Some("a"));
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let pods = vec![
            pod("a", "10.88.0.2", true, "web", 8080),
            pod("b", "10.88.0.3", true, "web", 9090),
            pod("c", "10.88.0.4", true, "other", 80),
        ];
        let subsets = subsets(&service(json!("web")), &pods).expect("selector");
        let ports: Vec<i32> = subsets
            .iter()
            .map(|s| s.ports.as_ref().expect("p")[0].port)
            .collect();
        assert_eq!(ports, vec![8080, 9090]);
    }

    #[test]
    fn slices_mirror_subsets_with_conditions_labels_and_owner() {
        let pods = vec![
            pod("a", "10.88.0.2", true, "http", 8080),
            pod("c", "10.88.0.4", false, "http", 8080),
        ];
        let mut svc = service(json!(8080));
        svc.metadata.uid = Some("1234abcd-0000".into());
        let subsets = subsets(&svc, &pods).expect("selector");
        let made = slices(&svc, &subsets);
        assert_eq!(made.len(), 1);
        let s = &made[0];
        assert_eq!(s["metadata"]["name"], "web-1234a");
        assert_eq!(s["metadata"]["labels"][SLICE_SERVICE_NAME], "web");
        assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "1234abcd-0000");
        assert_eq!(
            s["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(s["endpoints"][0]["addresses"], json!(["10.88.0.2"]));
        assert_eq!(s["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(s["endpoints"][0]["targetRef"]["name"], "a");
        assert_eq!(s["endpoints"][1]["conditions"]["ready"], false);
        // No pods: one empty slice.
        let none = slices(&svc, &[]);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0]["endpoints"], json!([]));
        // A typed EndpointSlice reads it back.
        let typed: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(s.clone()).expect("typed");
        assert_eq!(typed.address_type, "IPv4");
    }

    #[test]
    fn no_selector_no_endpoints_and_other_labels_left_out() {
        let mut s = service(json!(80));
        let mut other = pod("x", "10.88.0.9", true, "http", 80);
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        assert_eq!(subsets(&s, &[other]), Some(vec![]));
        s.spec.as_mut().expect("spec").selector = None;
        assert_eq!(subsets(&s, &[]), None);
    }
}
