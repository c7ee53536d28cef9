//! peapod's nftables tables (nft(8)), each written whole in one transaction (`nft -f -` with
//! "add, delete, define", so it replaces atomically). Nothing outside them is touched.
//!
//! - The daemon's table (`ruleset`, named by `NetworkConfig::table`, deleted when the daemon
//!   stops): chain `services` (DNAT of ClusterIP and NodePort traffic, from the `prerouting`
//!   and `output` nat hooks) and `postrouting` (masquerade of translated traffic onto the
//!   bridge, so replies come back through the host even without `br_netfilter`; outbound
//!   masquerade with `Outbound::Masquerade`).
//! - The bridge's guard table (`guard`, `<bridge>_guard`, made with the bridge and removed
//!   with it, so it protects every daemon sharing the bridge whichever of them stops first):
//!   traffic still addressed to the service CIDR found no endpoint and is rejected; with
//!   `Outbound::Isolated` nothing is forwarded between the bridge and other interfaces except
//!   translated connections; 127/8 on the bridge is dropped (the bridge has `route_localnet`
//!   for NodePorts on 127.0.0.1, the kube-proxy mitigation of CVE-2020-8558). It also holds
//!   the node's host ports: the maps `hostports` and `hostports_ip`, whose elements each pod
//!   adds and removes over netlink (`hostport`), and the nat chains that look them up.

use crate::cmd;
use crate::config::{NetworkConfig, Outbound};
use crate::error::NetError;
use crate::service::rules::ServiceRule;
use std::fmt::Write;

/// The daemon's table for `rules`.
pub fn ruleset(c: &NetworkConfig, rules: &[ServiceRule]) -> String {
    let (t, br, pods) = (&c.table, &c.bridge, c.pod_cidr);
    let mut s = format!("table ip {t} {{\n  chain services {{\n");
    for rule in rules {
        if let Some(line) = rule.nft() {
            let _ = writeln!(s, "    {line}");
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n");
    s.push_str(
        "  chain output { type nat hook output priority -100; policy accept; jump services; }\n",
    );
    let _ = write!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; ct status dnat oifname \"{br}\" masquerade;"
    );
    if c.outbound == Outbound::Masquerade {
        let _ = write!(s, " ip saddr {pods} oifname != \"{br}\" masquerade;");
    }
    s.push_str(" }\n}\n");
    s
}

/// The name of the bridge's guard table.
pub fn guard_table(c: &NetworkConfig) -> String {
    format!("{}_guard", c.bridge)
}

/// The bridge's guard table.
pub fn guard(c: &NetworkConfig) -> String {
    let (br, svc) = (&c.bridge, c.service_cidr);
    let reject =
        format!("ip daddr {svc} meta l4proto tcp reject with tcp reset; ip daddr {svc} reject;");
    let mut s = format!("table ip {} {{\n", guard_table(c));
    let _ = write!(
        s,
        "  chain forward {{ type filter hook forward priority filter; policy accept; {reject}"
    );
    if c.outbound == Outbound::Isolated {
        let _ = write!(
            s,
            " ct status dnat accept; iifname \"{br}\" oifname != \"{br}\" drop; oifname \"{br}\" iifname != \"{br}\" drop;"
        );
    }
    s.push_str(" }\n");
    let _ = writeln!(
        s,
        "  chain local_out {{ type filter hook output priority filter; policy accept; {reject} }}"
    );
    let _ = writeln!(
        s,
        "  chain martians {{ type filter hook prerouting priority raw; policy accept; iifname \"{br}\" ip daddr 127.0.0.0/8 drop; iifname \"{br}\" ip saddr 127.0.0.0/8 drop; }}"
    );
    let (any, ip) = (crate::hostport::MAP_ANY, crate::hostport::MAP_IP);
    let _ = writeln!(
        s,
        "  map {any} {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n  map {ip} {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}"
    );
    let _ = writeln!(
        s,
        "  chain hostports {{ dnat ip addr . port to ip daddr . meta l4proto . th dport map @{ip}; fib daddr type local dnat ip addr . port to meta l4proto . th dport map @{any}; }}"
    );
    s.push_str("  chain hostports_in { type nat hook prerouting priority dstnat; policy accept; jump hostports; }\n");
    s.push_str("  chain hostports_out { type nat hook output priority -100; policy accept; jump hostports; }\n");
    let _ = writeln!(
        s,
        "  chain hostports_masquerade {{ type nat hook postrouting priority srcnat; policy accept; ct status dnat oifname \"{br}\" masquerade; }}"
    );
    s.push_str("}\n");
    s
}

/// Replaces table `table` with `ruleset` atomically.
pub(crate) fn replace_table(table: &str, ruleset: &str) -> Result<(), NetError> {
    let text = format!("add table ip {table}\ndelete table ip {table}\n{ruleset}");
    cmd::run("nft", &["-f", "-"], Some(&text)).map(drop)
}

/// Deletes table `table` if it exists.
pub(crate) fn delete_table(table: &str) -> Result<(), NetError> {
    let text = format!("add table ip {table}\ndelete table ip {table}\n");
    cmd::run("nft", &["-f", "-"], Some(&text)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::rules::{Frontend, Protocol};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::Path;

    #[test]
    fn tables_have_services_and_isolation() {
        let c = NetworkConfig::defaults(Path::new("/r"));
        let rules = vec![ServiceRule {
            name: "default/web:http".into(),
            protocol: Protocol::Tcp,
            frontend: Frontend::NodePort { port: 30080 },
            backends: vec![SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 2), 80)],
        }];
        let text = ruleset(&c, &rules);
        assert!(text.starts_with("table ip peapod {\n  chain services {\n    fib daddr type local tcp dport 30080 dnat to 10.88.0.2:80 comment \"default/web:http\"\n  }\n"), "{text}");
        assert!(!text.contains("ip saddr 10.88.0.0/16 oifname"));
        let text = guard(&c);
        assert!(text.starts_with("table ip peapod0_guard {\n"));
        assert!(text.contains("iifname \"peapod0\" oifname != \"peapod0\" drop;"));
        assert!(text.contains("ip daddr 10.96.0.0/16 reject;"));
        assert!(text.contains(
            "fib daddr type local dnat ip addr . port to meta l4proto . th dport map @hostports;"
        ));
        let masq = NetworkConfig {
            outbound: Outbound::Masquerade,
            ..c
        };
        let text = ruleset(&masq, &[]);
        assert!(text.contains("ip saddr 10.88.0.0/16 oifname != \"peapod0\" masquerade;"));
        assert!(!guard(&masq).contains("ct status dnat accept"));
    }
}
