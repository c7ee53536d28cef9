//! What the node's network looks like: bridge, pod and service CIDRs, the nftables table, the
//! NodePort range, the cluster domain and outbound NAT. Validated once, here.
//!
//! The daemon reads it from the environment (`PEAPOD_BRIDGE`, `PEAPOD_POD_CIDR`,
//! `PEAPOD_SERVICE_CIDR`, `PEAPOD_NFT_TABLE`, `PEAPOD_MASQUERADE=1`, `PEAPOD_NETWORK=none`),
//! so tests can give each daemon a network of its own that never touches a developer's.

use crate::cidr::Ipv4Cidr;
use crate::error::NetError;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// The Kubernetes default NodePort range (`--service-node-port-range`).
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

/// What happens to pod traffic for addresses outside the pod and service CIDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Dropped at the bridge: pods reach each other, the host and Services only.
    Isolated,
    /// Forwarded with the host's address (nftables `masquerade`).
    Masquerade,
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The Linux bridge the pods' veths attach to; holds the first address of `pod_cidr`.
    pub bridge: String,
    pub pod_cidr: Ipv4Cidr,
    /// ClusterIPs come from here; the block is routed to the bridge so nothing addressed to
    /// it ever leaves the machine.
    pub service_cidr: Ipv4Cidr,
    /// The nftables `ip` table this daemon owns (rewritten whole, deleted on stop).
    pub table: String,
    pub node_ports: RangeInclusive<u16>,
    pub cluster_domain: String,
    pub outbound: Outbound,
    /// Allocation files, one per address (`<root>/ipam/<bridge>/`).
    pub ipam_dir: PathBuf,
}

impl NetworkConfig {
    /// The defaults for a data root: `peapod0`, 10.88.0.0/16, 10.96.0.0/16, table `peapod`.
    pub fn defaults(root: &Path) -> NetworkConfig {
        NetworkConfig {
            bridge: "peapod0".into(),
            pod_cidr: Ipv4Cidr::literal([10, 88, 0, 0], 16),
            service_cidr: Ipv4Cidr::literal([10, 96, 0, 0], 16),
            table: "peapod".into(),
            node_ports: NODE_PORTS,
            cluster_domain: "cluster.local".into(),
            outbound: Outbound::Isolated,
            ipam_dir: root.join("ipam").join("peapod0"),
        }
    }

    /// The defaults with the environment's overrides; `None` when `PEAPOD_NETWORK=none`.
    pub fn from_env(root: &Path) -> Result<Option<NetworkConfig>, NetError> {
        Self::from_lookup(root, |k| std::env::var(k).ok())
    }

    /// As [`NetworkConfig::from_env`], reading variables through `var`.
    pub fn from_lookup(
        root: &Path,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<NetworkConfig>, NetError> {
        if var("PEAPOD_NETWORK").as_deref() == Some("none") {
            return Ok(None);
        }
        let mut c = NetworkConfig::defaults(root);
        if let Some(b) = var("PEAPOD_BRIDGE") {
            c.ipam_dir = root.join("ipam").join(&b);
            c.bridge = b;
        }
        if let Some(v) = var("PEAPOD_POD_CIDR") {
            c.pod_cidr = parse_cidr("PEAPOD_POD_CIDR", &v)?;
        }
        if let Some(v) = var("PEAPOD_SERVICE_CIDR") {
            c.service_cidr = parse_cidr("PEAPOD_SERVICE_CIDR", &v)?;
        }
        if let Some(t) = var("PEAPOD_NFT_TABLE") {
            c.table = t;
        }
        if var("PEAPOD_MASQUERADE").is_some_and(|v| v == "1" || v == "true") {
            c.outbound = Outbound::Masquerade;
        }
        c.validate()?;
        Ok(Some(c))
    }

    /// The bridge's address: the pods' default gateway and the cluster DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.pod_cidr.first_host()
    }

    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |field, value: &str, reason| NetError::Config {
            field,
            value: value.to_string(),
            reason,
        };
        if !is_name(&self.bridge, 15) {
            return Err(bad("bridge", &self.bridge, "must be 1-15 of [A-Za-z0-9_-]"));
        }
        if !is_name(&self.table, 64) {
            return Err(bad("table", &self.table, "must be 1-64 of [A-Za-z0-9_-]"));
        }
        if self.pod_cidr.prefix() > 30 {
            return Err(bad("pod CIDR", &self.pod_cidr.to_string(), "is too small"));
        }
        if self.service_cidr.prefix() > 30 {
            let v = self.service_cidr.to_string();
            return Err(bad("service CIDR", &v, "is too small"));
        }
        if self.pod_cidr.overlaps(&self.service_cidr) {
            let v = self.service_cidr.to_string();
            return Err(bad("service CIDR", &v, "overlaps the pod CIDR"));
        }
        Ok(())
    }
}

fn parse_cidr(field: &'static str, value: &str) -> Result<Ipv4Cidr, NetError> {
    value.parse().map_err(|_| NetError::Config {
        field,
        value: value.to_string(),
        reason: "is not an IPv4 CIDR",
    })
}

/// A device or table name that needs no quoting anywhere.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides() {
        let env = |k: &str| match k {
            "PEAPOD_BRIDGE" => Some("pp-test0".to_string()),
            "PEAPOD_POD_CIDR" => Some("10.123.0.0/24".to_string()),
            "PEAPOD_SERVICE_CIDR" => Some("10.123.1.0/24".to_string()),
            "PEAPOD_MASQUERADE" => Some("1".to_string()),
            _ => None,
        };
        let c = NetworkConfig::from_lookup(Path::new("/r"), env)
            .expect("valid")
            .expect("enabled");
        assert_eq!(c.bridge, "pp-test0");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 123, 0, 1));
        assert_eq!(c.ipam_dir, Path::new("/r/ipam/pp-test0"));
        assert_eq!(c.outbound, Outbound::Masquerade);
        assert_eq!(c.table, "peapod");
    }

    #[test]
    fn rejects_bad_values() {
        let with = |key: &'static str, value: &'static str| {
            NetworkConfig::from_lookup(Path::new("/r"), move |k| {
                (k == key).then(|| value.to_string())
            })
        };
        assert!(with("PEAPOD_BRIDGE", "a-name-that-is-too-long").is_err());
        assert!(with("PEAPOD_BRIDGE", "br;x").is_err());
        assert!(with("PEAPOD_SERVICE_CIDR", "10.88.128.0/24").is_err());
        assert!(with("PEAPOD_POD_CIDR", "10.0.0.0/31").is_err());
        assert!(with("PEAPOD_NETWORK", "none").expect("ok").is_none());
    }
}
