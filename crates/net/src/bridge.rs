//! The node's bridge: created on first use with the pod CIDR's first address, a fixed MAC (a
//! bridge otherwise takes the lowest MAC of its ports, and the pods' gateway would change its
//! MAC as pods come and go), a route for the service CIDR (so ClusterIP traffic that was not
//! translated stays on the bridge instead of following the host's default route) and two
//! per-device sysctls: `forwarding` (pod -> ClusterIP -> pod is routed through the host) and
//! `route_localnet` (a NodePort reached on 127.0.0.1 is translated to a pod address; the
//! nftables table drops any other 127/8 packet on the bridge, as kube-proxy does for
//! CVE-2020-8558). See ip-link(8), ip-route(8) and the kernel's ip-sysctl.rst.
//!
//! Several daemons may share a bridge (each `peapod run` starts one): every change to the
//! bridge and its ports is made under an exclusive lock on `/run/peapod/net-<bridge>.lock`, and
//! the last daemon to stop removes the bridge only when no port is left on it.

use crate::cmd;
use crate::config::NetworkConfig;
use crate::error::{io, NetError};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub(crate) const LOCK_DIR: &str = "/run/peapod";

/// Holds the bridge's lock until dropped.
pub(crate) struct BridgeLock {
    _file: File,
}

/// Waits for the bridge's cross-process lock.
pub(crate) fn lock(bridge: &str) -> Result<BridgeLock, NetError> {
    std::fs::create_dir_all(LOCK_DIR).map_err(io("create", LOCK_DIR))?;
    let path = Path::new(LOCK_DIR).join(format!("net-{bridge}.lock"));
    let file = File::create(&path).map_err(io("create", &path))?;
    file.lock().map_err(io("lock", &path))?;
    Ok(BridgeLock { _file: file })
}

pub(crate) fn device_exists(name: &str) -> bool {
    sys_net(name).exists()
}

fn sys_net(name: &str) -> PathBuf {
    Path::new("/sys/class/net").join(name)
}

/// A locally administered MAC made from the bridge's address.
pub(crate) fn mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:70:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The `ip` lines that configure an existing bridge (idempotent).
pub(crate) fn setup_lines(c: &NetworkConfig) -> Vec<String> {
    let br = &c.bridge;
    vec![
        format!("link set {br} address {}", mac(c.gateway())),
        format!(
            "addr replace {}/{} dev {br}",
            c.gateway(),
            c.pod_cidr.prefix()
        ),
        format!("link set {br} up"),
        format!("route replace {} dev {br}", c.service_cidr),
    ]
}

/// Creates and configures the bridge and its guard table if needed. Call with the lock held.
pub(crate) fn ensure(c: &NetworkConfig) -> Result<(), NetError> {
    // Fast path (no `nft`, no `ip`: each costs 5–25 ms): the bridge exists, so it was set up
    // completely, guard first, under this same lock, and `remove_if_unused` removes the bridge
    // before its guard — a bridge that exists has its guard.
    if device_exists(&c.bridge) && sys_net(&c.bridge).join("brif").exists() && has_address(c) {
        return Ok(());
    }
    // The guard first: no pod is ever on the bridge without it.
    crate::nft::replace_table(&crate::nft::guard_table(c), &crate::nft::guard(c))?;
    if !device_exists(&c.bridge) {
        cmd::ip_batch(&[format!("link add name {} type bridge", c.bridge)])?;
    }
    cmd::ip_batch(&setup_lines(c))?;
    for (key, value) in [("forwarding", "1"), ("route_localnet", "1")] {
        let path = Path::new("/proc/sys/net/ipv4/conf")
            .join(&c.bridge)
            .join(key);
        std::fs::write(&path, value).map_err(io("write", &path))?;
    }
    Ok(())
}

/// Whether the bridge is up and routes the pod CIDR (it has its address), read from /sys and
/// /proc: no process started.
fn has_address(c: &NetworkConfig) -> bool {
    let up = std::fs::read_to_string(sys_net(&c.bridge).join("flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & 1 == 1);
    let routed = std::fs::read_to_string("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(c.bridge.as_str()));
    up && routed
}

/// The devices attached to the bridge.
pub(crate) fn ports(bridge: &str) -> Vec<String> {
    std::fs::read_dir(sys_net(bridge).join("brif"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Deletes the bridge and its guard table when no port is left on the bridge; whether they
/// are gone. Call with the lock held.
pub(crate) fn remove_if_unused(c: &NetworkConfig) -> Result<bool, NetError> {
    let bridge = &c.bridge;
    if device_exists(bridge) {
        if !ports(bridge).is_empty() {
            return Ok(false);
        }
        match cmd::run("ip", &["link", "del", bridge], None) {
            Ok(_) => {}
            Err(e) if cmd::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    crate::nft::delete_table(&crate::nft::guard_table(c))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_idempotent_commands() {
        let c = NetworkConfig::defaults(Path::new("/r"));
        assert_eq!(
            setup_lines(&c),
            vec![
                "link set peapod0 address 02:70:0a:58:00:01",
                "addr replace 10.88.0.1/16 dev peapod0",
                "link set peapod0 up",
                "route replace 10.96.0.0/16 dev peapod0",
            ]
        );
    }
}
