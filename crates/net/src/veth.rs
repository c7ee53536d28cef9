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

/// Creates the pair with its pod end already in the namespace pinned at `netns` as `eth0`
/// (up, with the pod's address and a default route via the bridge) and its host end up on the
/// bridge in hairpin mode; a leftover pair of the same address is replaced. Over rtnetlink: two
/// sockets (host, pod namespace), six requests, no process. Call with the bridge's lock held.
pub(crate) fn connect(c: &NetworkConfig, ip: Ipv4Addr, netns: &Path) -> Result<(), NetError> {
    let host = host_name(ip);
    let mut nl = Netlink::open().map_err(sys)?;
    nl.delete_link(&host).map_err(sys)?;
    let bridge = nl
        .link_index(&c.bridge)
        .map_err(sys)?
        .ok_or_else(|| NetError::Io {
            op: "find bridge",
            path: c.bridge.clone().into(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    nl.add_veth(&host, bridge, "eth0", netns).map_err(sys)?;
    let hairpin = Path::new("/sys/class/net")
        .join(&host)
        .join("brport/hairpin_mode");
    std::fs::write(&hairpin, "1").map_err(crate::error::io("write", &hairpin))?;
    let mut pod = Netlink::open_in(netns).map_err(sys)?;
    let eth0 = pod
        .link_index("eth0")
        .map_err(sys)?
        .ok_or_else(|| NetError::Io {
            op: "find eth0 in",
            path: netns.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
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
