//! Cluster DNS: records from Services and Endpoints, the wire format, the server, and the
//! resolv.conf a `dnsPolicy: ClusterFirst` pod gets.

pub mod records;
pub mod server;
pub mod wire;

pub use records::Records;
pub use server::DnsServer;

use std::net::Ipv4Addr;

/// A ClusterFirst pod's /etc/resolv.conf
/// (<https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/#pod-s-dns-policy>).
pub fn resolv_conf(namespace: &str, server: Ipv4Addr, domain: &str) -> String {
    format!(
        "search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {server}\noptions ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_first_resolv_conf() {
        assert_eq!(
            resolv_conf("web", Ipv4Addr::new(10, 88, 0, 1), "cluster.local"),
            "search web.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.88.0.1\noptions ndots:5\n"
        );
    }
}
