//! One veth pair per pod: the host end (`pp<ip in hex>`) on the bridge, the other end moved
//! into the pod's network namespace and renamed `eth0`, with the pod's address and a default
//! route via the bridge (ip-link(8) `type veth`, veth(4)). The host end is in hairpin mode:
//! with `br_netfilter` loaded, a pod's connection to a Service that lands on the pod itself
//! is translated on the bridge and must go back out of the port it came in by (as the CNI
//! bridge plugin's `hairpinMode`).
//!
//! The host end is named after the address, so two data roots sharing a bridge can never hand
//! out the same address: the second finds the device already there and picks another.

use crate::cmd;
use crate::config::NetworkConfig;
use crate::error::NetError;
use std::net::Ipv4Addr;
use std::path::Path;

/// The host end's name for a pod address (10 characters; devices allow 15).
pub fn host_name(ip: Ipv4Addr) -> String {
    format!("pp{:08x}", u32::from(ip))
}

/// The pod end's name while it is still on the host.
fn peer_name(ip: Ipv4Addr) -> String {
    format!("{}p", host_name(ip))
}

/// Creates the pair on the host (replacing a leftover of the same address).
pub(crate) fn create(ip: Ipv4Addr) -> Result<(), NetError> {
    delete(ip)?;
    let (host, peer) = (host_name(ip), peer_name(ip));
    cmd::ip_batch(&[format!("link add {host} type veth peer name {peer}")])
}

/// The lines run inside the pod's namespace once its end arrived there.
pub(crate) fn pod_lines(c: &NetworkConfig, ip: Ipv4Addr) -> Vec<String> {
    vec![
        format!("link set {} name eth0", peer_name(ip)),
        format!("addr add {ip}/{} dev eth0", c.pod_cidr.prefix()),
        "link set eth0 up".to_string(),
        format!("route add default via {}", c.gateway()),
    ]
}

/// Moves the pod end into the namespace pinned at `netns` and plugs the host end into the
/// bridge. Call with the bridge's lock held.
pub(crate) fn connect(c: &NetworkConfig, ip: Ipv4Addr, netns: &Path) -> Result<(), NetError> {
    let ns = netns.to_string_lossy();
    let peer = peer_name(ip);
    cmd::run("ip", &["link", "set", &peer, "netns", &ns], None)?;
    let host = host_name(ip);
    cmd::ip_batch(&[
        format!("link set {host} master {}", c.bridge),
        format!("link set {host} type bridge_slave hairpin on"),
        format!("link set {host} up"),
    ])?;
    cmd::ip_batch_in(netns, &pod_lines(c, ip))
}

/// Deletes the pair (both ends go together); nothing to do when it is gone.
pub(crate) fn delete(ip: Ipv4Addr) -> Result<(), NetError> {
    let host = host_name(ip);
    if !crate::bridge::device_exists(&host) {
        return Ok(());
    }
    match cmd::run("ip", &["link", "del", &host], None) {
        Ok(_) => Ok(()),
        Err(e) if cmd::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_pod_side() {
        let ip = Ipv4Addr::new(10, 88, 0, 2);
        assert_eq!(host_name(ip), "pp0a580002");
        let c = NetworkConfig::defaults(Path::new("/r"));
        assert_eq!(
            pod_lines(&c, ip),
            vec![
                "link set pp0a580002p name eth0",
                "addr add 10.88.0.2/16 dev eth0",
                "link set eth0 up",
                "route add default via 10.88.0.1",
            ]
        );
    }
}
