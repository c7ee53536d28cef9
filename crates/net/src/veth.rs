//! One veth pair per pod: the host end (`pp<ip in hex>`) on the bridge, the other end created
//! in the pod's network namespace as `eth0`, with the pod's address and a default
//! route via the bridge (ip-link(8) `type veth`, veth(4)). The host end is in hairpin mode:
//! with `br_netfilter` loaded, a pod's connection to a Service that lands on the pod itself
//! is translated on the bridge and must go back out of the port it came in by (as the CNI
//! bridge plugin's `hairpinMode`).
//!
//! Two data roots sharing a bridge never hand out the same address: each address is reserved
//! host-wide when allocated (`network.rs`), and the host end is named after it.

use crate::config::NetworkConfig;
use crate::error::NetError;
use peapod_sys::netlink::Netlink;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The host end's name for a pod address (10 characters; devices allow 15).
pub fn host_name(ip: Ipv4Addr) -> String {
    format!("pp{:08x}", u32::from(ip))
}

fn sys(e: peapod_sys::SysError) -> NetError {
    NetError::Sys(e)
}

/// Makes the pair: the host end up on the bridge in hairpin mode, the other end created in the
/// namespace pinned at `netns` as `eth0`, up, with the pod's address and a default route via
/// the bridge; a leftover host end of the same address (a killed run of this root) is removed
/// first. Over rtnetlink: two sockets (host, pod namespace), no process. Call with the bridge's
/// lock held.
pub(crate) fn connect(c: &NetworkConfig, ip: Ipv4Addr, netns: &Path) -> Result<(), NetError> {
    let host = host_name(ip);
    let mut nl = Netlink::open().map_err(sys)?;
    let missing = |what: &str, path: PathBuf| NetError::Io {
        op: "find device",
        path: path.join(what),
        source: std::io::ErrorKind::NotFound.into(),
    };
    nl.delete_link(&host).map_err(sys)?;
    let bridge = nl
        .link_index(&c.bridge)
        .map_err(sys)?
        .ok_or_else(|| missing(&c.bridge, PathBuf::new()))?;
    nl.add_veth_into(&host, bridge, "eth0", netns)
        .map_err(sys)?;
    let host_index = nl
        .link_index(&host)
        .map_err(sys)?
        .ok_or_else(|| missing(&host, PathBuf::new()))?;
    nl.set_hairpin(host_index).map_err(sys)?;
    let mut pod = Netlink::open_in(netns).map_err(sys)?;
    let eth0 = pod
        .link_index("eth0")
        .map_err(sys)?
        .ok_or_else(|| missing("eth0", netns.to_path_buf()))?;
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
