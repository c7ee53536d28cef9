//! One veth pair per pod: the host end (`pp<ip in hex>`) on the bridge, the other end created
//! in the pod's network namespace as `eth0`, with the pod's address and a default
//! route via the bridge (ip-link(8) `type veth`, veth(4)). The host end is in hairpin mode:
//! with `br_netfilter` loaded, a pod's connection to a Service that lands on the pod itself
//! is translated on the bridge and must go back out of the port it came in by (as the CNI
//! bridge plugin's `hairpinMode`).
//!
//! The host end is named after the address, so two data roots sharing a bridge can never hand
//! out the same address: the second finds the device already there and picks another.

use crate::config::NetworkConfig;
use crate::error::NetError;
use peapod_sys::netlink::Netlink;
use std::net::Ipv4Addr;
use std::path::Path;

/// The host end's name for a pod address (10 characters; devices allow 15).
pub fn host_name(ip: Ipv4Addr) -> String {
    format!("pp{:08x}", u32::from(ip))
}

fn sys(e: peapod_sys::SysError) -> NetError {
    NetError::Sys(e)
}

/// The pod end's name while it is still on the host.
fn peer_name(ip: Ipv4Addr) -> String {
    format!("{}p", host_name(ip))
}

/// Creates the pair on the host, both ends down. Made when the address is allocated (under
/// the bridge's lock) so that another data root sharing the bridge sees the address taken at
/// once. Call with the bridge's lock held.
pub(crate) fn create(ip: Ipv4Addr) -> Result<(), NetError> {
    let mut nl = Netlink::open().map_err(sys)?;
    nl.add_veth(&host_name(ip), &peer_name(ip)).map_err(sys)
}

/// Plugs the host end into the bridge (up, hairpin mode) and moves the pod end into the
/// namespace pinned at `netns` as `eth0`, up, with the pod's address and a default route via
/// the bridge. Over rtnetlink: two sockets (host, pod namespace), no process. Call with the
/// bridge's lock held.
pub(crate) fn connect(c: &NetworkConfig, ip: Ipv4Addr, netns: &Path) -> Result<(), NetError> {
    let (host, peer) = (host_name(ip), peer_name(ip));
    let mut nl = Netlink::open().map_err(sys)?;
    let missing = |what: &str| NetError::Io {
        op: "find device",
        path: what.into(),
        source: std::io::ErrorKind::NotFound.into(),
    };
    let bridge = nl
        .link_index(&c.bridge)
        .map_err(sys)?
        .ok_or_else(|| missing(&c.bridge))?;
    let host_index = nl
        .link_index(&host)
        .map_err(sys)?
        .ok_or_else(|| missing(&host))?;
    let peer_index = nl
        .link_index(&peer)
        .map_err(sys)?
        .ok_or_else(|| missing(&peer))?;
    nl.set_master_up(host_index, bridge).map_err(sys)?;
    let hairpin = Path::new("/sys/class/net")
        .join(&host)
        .join("brport/hairpin_mode");
    std::fs::write(&hairpin, "1").map_err(crate::error::io("write", &hairpin))?;
    nl.move_to(peer_index, netns, "eth0").map_err(sys)?;
    let mut pod = Netlink::open_in(netns).map_err(sys)?;
    let eth0 = pod
        .link_index("eth0")
        .map_err(sys)?
        .ok_or_else(|| missing("eth0"))?;
    pod.set_up(eth0).map_err(sys)?;
    pod.add_address(eth0, ip, c.pod_cidr.prefix())
        .map_err(sys)?;
    pod.add_default_route(c.gateway()).map_err(sys)?;
    Ok(())
}

/// Deletes the pair (both ends go together); nothing to do when it is gone.
pub(crate) fn delete(ip: Ipv4Addr) -> Result<(), NetError> {
    let host = host_name(ip);
    if !crate::bridge::device_exists(&host) {
        return Ok(());
    }
    Netlink::open()
        .and_then(|mut nl| nl.delete_link(&host))
        .map(drop)
        .map_err(sys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_end_is_named_after_the_address() {
        assert_eq!(host_name(Ipv4Addr::new(10, 88, 0, 2)), "pp0a580002");
    }
}
