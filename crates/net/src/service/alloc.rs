//! ClusterIPs and node ports for Services that have none yet (pure). The API server does this
//! at creation; peapod's admission does not yet, so the Service controller fills them in
//! right after: the lowest free address of the service CIDR (index 1, the `kubernetes`
//! Service's address, is kept free) and the lowest free port of the NodePort range
//! (<https://kubernetes.io/docs/concepts/services-networking/cluster-ip-allocation/>).

use crate::cidr::Ipv4Cidr;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// What one Service gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allocation {
    pub cluster_ip: Option<Ipv4Addr>,
    /// (index in `spec.ports`, node port).
    pub node_ports: Vec<(usize, u16)>,
}

/// Why a Service got nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("the service CIDR {cidr} is full")]
    NoClusterIp { cidr: String },
    #[error("the node port range is full")]
    NoNodePort,
}

/// `(namespace, name, allocation)` for every Service that lacks a ClusterIP or a node port.
pub fn allocate(
    services: &[Service],
    cidr: Ipv4Cidr,
    node_ports: RangeInclusive<u16>,
) -> Vec<(String, String, Result<Allocation, AllocError>)> {
    let mut used_ips: BTreeSet<u32> = BTreeSet::from([1]);
    let mut used_ports: BTreeSet<u16> = BTreeSet::new();
    for spec in services.iter().filter_map(|s| s.spec.as_ref()) {
        if let Some(i) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .and_then(|ip| cidr.index_of(ip))
        {
            used_ips.insert(i);
        }
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port.filter(|p| *p > 0) {
                used_ports.insert(np as u16);
            }
        }
    }
    let last = cidr.host_count();
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let mut result = Ok(Allocation::default());
        if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            let free = (2..=last).find(|i| !used_ips.contains(i));
            result = match free.and_then(|i| cidr.nth(i).map(|ip| (i, ip))) {
                Some((i, ip)) => {
                    used_ips.insert(i);
                    Ok(Allocation {
                        cluster_ip: Some(ip),
                        node_ports: vec![],
                    })
                }
                None => Err(AllocError::NoClusterIp {
                    cidr: cidr.to_string(),
                }),
            };
        }
        if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            for (index, p) in spec.ports.iter().flatten().enumerate() {
                if p.node_port.is_some_and(|p| p > 0) {
                    continue;
                }
                let Ok(alloc) = result.as_mut() else { break };
                match node_ports.clone().find(|p| !used_ports.contains(p)) {
                    Some(port) => {
                        used_ports.insert(port);
                        alloc.node_ports.push((index, port));
                    }
                    None => result = Err(AllocError::NoNodePort),
                }
            }
        }
        if result.as_ref().is_ok_and(|a| *a == Allocation::default()) {
            continue;
        }
        let meta = &svc.metadata;
        out.push((
            meta.namespace.clone().unwrap_or_else(|| "default".into()),
            meta.name.clone().unwrap_or_default(),
            result,
        ));
    }
    out
}

/// Writes `alloc` into the Service's JSON, with the defaults the API server would have set
/// (`type`, `sessionAffinity`, ports' `protocol` and `targetPort`, the IP family fields).
/// Only fields still empty are written: a concurrent update by the user wins.
pub fn apply(service: &mut serde_json::Value, alloc: &Allocation) {
    use serde_json::{json, Value};
    let spec = &mut service["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if let Some(ip) = alloc.cluster_ip {
        if spec["clusterIP"].as_str().unwrap_or("").is_empty() {
            spec["clusterIP"] = json!(ip.to_string());
            spec["clusterIPs"] = json!([ip.to_string()]);
        }
    }
    for (key, value) in [
        ("type", "ClusterIP"),
        ("sessionAffinity", "None"),
        ("ipFamilyPolicy", "SingleStack"),
        ("internalTrafficPolicy", "Cluster"),
    ] {
        if spec[key].is_null() {
            spec[key] = json!(value);
        }
    }
    if spec["ipFamilies"].is_null() {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for (i, p) in ports.iter_mut().enumerate() {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
            if let Some((_, np)) = alloc.node_ports.iter().find(|(idx, _)| *idx == i) {
                if p["nodePort"].as_u64().unwrap_or(0) == 0 {
                    p["nodePort"] = Value::from(*np);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn lowest_free_addresses_and_ports() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().expect("cidr");
        let services = vec![
            svc(
                json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.2", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}}),
            ),
            svc(
                json!({"metadata": {"name": "b", "namespace": "x"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}}),
            ),
            svc(
                json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
            svc(json!({"metadata": {"name": "c"}, "spec": {"ports": [{"port": 80}]}})),
        ];
        let got = allocate(&services, cidr, 30000..=32767);
        assert_eq!(
            got,
            vec![
                (
                    "x".into(),
                    "b".into(),
                    Ok(Allocation {
                        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 3)),
                        node_ports: vec![(0, 30001), (1, 30002)]
                    })
                ),
                (
                    "default".into(),
                    "c".into(),
                    Ok(Allocation {
                        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 4)),
                        node_ports: vec![]
                    })
                ),
            ]
        );
    }

    #[test]
    fn exhaustion_is_an_error() {
        let cidr: Ipv4Cidr = "10.96.0.0/30".parse().expect("cidr");
        let services = vec![
            svc(json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}})),
            svc(json!({"metadata": {"name": "b"}, "spec": {"ports": [{"port": 80}]}})),
        ];
        let got = allocate(&services, cidr, 30000..=30000);
        assert!(got[0].2.is_ok());
        assert!(matches!(got[1].2, Err(AllocError::NoClusterIp { .. })));
    }

    #[test]
    fn apply_fills_only_empty_fields() {
        let mut v = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}, {"port": 81}]}});
        apply(
            &mut v,
            &Allocation {
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 9)),
                node_ports: vec![(1, 30005)],
            },
        );
        assert_eq!(v["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(v["spec"]["clusterIPs"], json!(["10.96.0.9"]));
        assert_eq!(v["spec"]["type"], "NodePort");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(v["spec"]["ports"][1]["targetPort"], 81);
        assert_eq!(v["spec"]["ports"][1]["nodePort"], 30005);
        assert!(v["spec"]["ports"][0]["nodePort"].is_null());
    }
}
