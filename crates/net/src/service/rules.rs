//! From Services and their Endpoints to proxy rules (pure): one rule per (frontend, port),
//! the frontend being the ClusterIP or, for `NodePort` and `LoadBalancer` Services, the node
//! port on every local address. Only ready addresses are backends
//! (<https://kubernetes.io/docs/reference/networking/virtual-ips/>).

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// TCP and UDP; SCTP is not proxied.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    ClusterIp { ip: Ipv4Addr, port: u16 },
    NodePort { port: u16 },
}

/// Traffic to `frontend` goes to one of `backends`, chosen at random per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// `namespace/service:port`, as the rule's comment.
    pub name: String,
    pub protocol: Protocol,
    pub frontend: Frontend,
    pub backends: Vec<SocketAddrV4>,
}

impl ServiceRule {
    /// The rule's line in the `services` chain; none without backends (the traffic is then
    /// rejected by the filter chains, or finds nothing listening on a node port).
    pub fn nft(&self) -> Option<String> {
        let proto = self.protocol.nft();
        let matcher = match self.frontend {
            Frontend::ClusterIp { ip, port } => format!("ip daddr {ip} {proto} dport {port}"),
            Frontend::NodePort { port } => format!("fib daddr type local {proto} dport {port}"),
        };
        let target = match self.backends.as_slice() {
            [] => return None,
            [one] => format!("dnat to {one}"),
            many => {
                let entries: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("{i} : {} . {}", b.ip(), b.port()))
                    .collect();
                format!(
                    "dnat ip addr . port to numgen random mod {} map {{ {} }}",
                    many.len(),
                    entries.join(", ")
                )
            }
        };
        Some(format!("{matcher} {target} comment \"{}\"", self.name))
    }
}

/// The rules for every Service with a ClusterIP, backed by its Endpoints object.
pub fn service_rules(services: &[Service], endpoints: &[Endpoints]) -> Vec<ServiceRule> {
    let by_key: BTreeMap<(&str, &str), &Endpoints> =
        endpoints.iter().map(|e| (key(&e.metadata), e)).collect();
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let (ns, name) = key(&svc.metadata);
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let eps = by_key.get(&(ns, name)).copied();
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let backends = backends(eps, port);
            let label = format!("{ns}/{name}:{}", port.name.as_deref().unwrap_or(""));
            let mut push = |frontend| {
                out.push(ServiceRule {
                    name: label.clone(),
                    protocol,
                    frontend,
                    backends: backends.clone(),
                })
            };
            push(Frontend::ClusterIp {
                ip,
                port: port.port as u16,
            });
            if let Some(np) = port.node_port.filter(|p| node_ports && *p > 0) {
                push(Frontend::NodePort { port: np as u16 });
            }
        }
    }
    out
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or(""),
    )
}

/// The ready addresses of `eps` for the Service port `port` (matched by name, as the
/// Endpoints controller names each endpoint port after its Service port).
fn backends(eps: Option<&Endpoints>, port: &ServicePort) -> Vec<SocketAddrV4> {
    let want = port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for subset in eps.and_then(|e| e.subsets.as_ref()).into_iter().flatten() {
        let Some(ep) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == want)
        else {
            continue;
        };
        for addr in subset.addresses.iter().flatten() {
            if let Ok(ip) = addr.ip.parse::<Ipv4Addr>() {
                out.push(SocketAddrV4::new(ip, ep.port as u16));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn cluster_ip_and_node_port_rules_use_ready_addresses() {
        let services = vec![svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))];
        let endpoints: Vec<Endpoints> = vec![serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "10.88.0.3"}, {"ip": "10.88.0.2"}],
                "notReadyAddresses": [{"ip": "10.88.0.4"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]
            }]
        }))
        .expect("endpoints")];
        let rules = service_rules(&services, &endpoints);
        let lines: Vec<String> = rules.iter().filter_map(ServiceRule::nft).collect();
        assert_eq!(lines, vec![
            "ip daddr 10.96.0.10 tcp dport 80 dnat ip addr . port to numgen random mod 2 map { 0 : 10.88.0.2 . 8080, 1 : 10.88.0.3 . 8080 } comment \"default/web:http\"",
            "fib daddr type local tcp dport 30080 dnat ip addr . port to numgen random mod 2 map { 0 : 10.88.0.2 . 8080, 1 : 10.88.0.3 . 8080 } comment \"default/web:http\"",
            "ip daddr 10.96.0.10 udp dport 53 dnat ip addr . port to numgen random mod 2 map { 0 : 10.88.0.2 . 5353, 1 : 10.88.0.3 . 5353 } comment \"default/web:dns\"",
        ]);
    }

    #[test]
    fn headless_and_endpointless_services_have_no_dnat() {
        let services = vec![
            svc(
                json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
            svc(
                json!({"metadata": {"name": "e"}, "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}}),
            ),
        ];
        let rules = service_rules(&services, &[]);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].nft(), None);
    }
}
