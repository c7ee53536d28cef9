//! Cluster DNS: records from Services and Endpoints, the wire format, the server, and the
//! resolv.conf a `dnsPolicy: ClusterFirst` pod gets.

pub mod records;
pub mod server;
pub mod wire;

pub use records::Records;
pub use server::DnsServer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A ClusterFirst pod's /etc/resolv.conf
/// (<https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/#pod-s-dns-policy>).
pub fn resolv_conf(namespace: &str, server: Ipv4Addr, domain: &str) -> String {
    format!(
        "search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {server}\noptions ndots:5\n"
    )
}

/// The servers names outside the cluster go to, as CoreDNS' `forward . /etc/resolv.conf`:
/// `PEAPOD_DNS_UPSTREAM` (`ip[:port],...`) when set (empty: none), else the `nameserver` lines
/// of the host's resolv.conf. `own` (the cluster DNS address itself) is never an upstream. A
/// loopback resolver such as 127.0.0.53 works: the daemon forwards from the host's namespace.
pub fn upstreams(env: Option<&str>, host_resolv: &str, own: Ipv4Addr) -> Vec<SocketAddr> {
    let parse = |s: &str| -> Option<SocketAddr> {
        let s = s.trim();
        s.parse::<SocketAddr>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
    };
    let all: Vec<SocketAddr> = match env {
        Some(list) => list.split(',').filter_map(parse).collect(),
        None => host_resolv
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(parse)
            .collect(),
    };
    all.into_iter()
        .filter(|a| a.ip() != IpAddr::V4(own))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_from_env_or_host_resolv_conf() {
        let own = Ipv4Addr::new(10, 88, 0, 1);
        let host = "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver 10.88.0.1\nnameserver ::1\n";
        assert_eq!(
            upstreams(None, host, own),
            vec![
                "127.0.0.53:53".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
        assert_eq!(
            upstreams(Some("127.0.0.1:5353, 192.0.2.1"), host, own),
            vec![
                "127.0.0.1:5353".parse().expect("addr"),
                "192.0.2.1:53".parse().expect("addr")
            ]
        );
        assert_eq!(upstreams(Some(""), host, own), vec![]);
    }

    #[test]
    fn cluster_first_resolv_conf() {
        assert_eq!(
            resolv_conf("web", Ipv4Addr::new(10, 88, 0, 1), "cluster.local"),
            "search web.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.88.0.1\noptions ndots:5\n"
        );
    }
}
