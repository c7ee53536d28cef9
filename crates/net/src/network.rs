//! The pod network of one daemon: the bridge, pod addresses and veths, and the nftables table
//! that the Service proxy fills. Every method that runs commands is async and does its work on
//! a blocking thread; `stop` runs at shutdown.
//!
//! The daemon installs its network once per process ([`install`]); the kubelet finds it with
//! [`installed`] when it creates and removes pod sandboxes. Without one (unit and component
//! tests, `PEAPOD_NETWORK=none`) pods have loopback only, as before.

use crate::bridge;
use crate::config::{NetworkConfig, Outbound};
use crate::error::{io, NetError};
use crate::hostport::{self, HostPort};
use crate::ipam::Ipam;
use crate::nft;
use crate::veth;
use nix::errno::Errno;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NetworkConfig,
    ipam: Ipam,
    /// Held while the table is written; true once stopped, so a ruleset still on its way
    /// cannot bring the table back after `stop` deleted it.
    table: Mutex<bool>,
    /// The ruleset last written to the table: an unchanged one is not written again (each
    /// `nft` run costs 5–25 ms).
    applied: Mutex<Option<String>>,
}

static INSTALLED: OnceLock<PodNetwork> = OnceLock::new();

/// Makes `network` the one the kubelet uses in this process (the first call wins).
pub fn install(network: PodNetwork) {
    let _ = INSTALLED.set(network);
}

/// The network the daemon installed, if any.
pub fn installed() -> Option<PodNetwork> {
    INSTALLED.get().cloned()
}

/// The address of pod `uid` on the installed network (a file read, no command).
pub fn pod_ip(uid: &str) -> Option<Ipv4Addr> {
    INSTALLED.get().and_then(|n| n.pod_ip(uid))
}

async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| NetError::Join { op })?
}

impl PodNetwork {
    /// Creates (or adopts) the bridge. The daemon's nftables table is written only once it has
    /// something to do (a Service, or outbound masquerade): a `peapod run` of plain pods starts
    /// and stops without running `nft` at all. A table left by a daemon that was killed is
    /// deleted here (its marker file says it was written).
    pub async fn start(config: NetworkConfig) -> Result<PodNetwork, NetError> {
        config.validate()?;
        let ipam = Ipam::open(&config.ipam_dir, config.pod_cidr)?;
        let network = PodNetwork {
            inner: Arc::new(Inner {
                config,
                ipam,
                table: Mutex::new(false),
                applied: Mutex::new(None),
            }),
        };
        let n = network.clone();
        blocking("start network", move || {
            let c = &n.inner.config;
            {
                let _lock = bridge::lock(&c.bridge)?;
                bridge::ensure(c)?;
            }
            let marker = n.table_marker();
            if marker.exists() {
                nft::delete_table(&c.table)?;
                std::fs::remove_file(&marker).map_err(io("remove", &marker))?;
            }
            if c.outbound == Outbound::Masquerade {
                n.write_table(nft::ruleset(c, &[]))?;
            }
            Ok(())
        })
        .await?;
        Ok(network)
    }

    /// `<root>/ipam/<bridge>.table`: present while the daemon's table may be in the kernel.
    fn table_marker(&self) -> PathBuf {
        self.inner.config.ipam_dir.with_extension("table")
    }

    /// Writes `ruleset` as the daemon's table (the marker first, so a crash cannot leave a
    /// table that no marker names).
    fn write_table(&self, ruleset: String) -> Result<(), NetError> {
        let mut applied = self.inner.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.as_deref() == Some(ruleset.as_str()) {
            return Ok(());
        }
        let c = &self.inner.config;
        if applied.is_none() {
            if ruleset == nft::ruleset(c, &[]) && c.outbound == Outbound::Isolated {
                // Nothing to translate: no table is the same as an empty one.
                return Ok(());
            }
            let marker = self.table_marker();
            std::fs::write(&marker, c.table.as_bytes()).map_err(io("write", &marker))?;
        }
        nft::replace_table(&c.table, &ruleset)?;
        *applied = Some(ruleset);
        Ok(())
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.inner.config
    }

    /// Gives pod `uid` an address, reserved host-wide under the bridge's lock: an address that
    /// another data root sharing the bridge holds (its reservation names an allocation file
    /// that exists, or its veth is there) is skipped. The veth is made by `connect`.
    pub async fn allocate(&self, uid: &str) -> Result<Ipv4Addr, NetError> {
        let (n, uid) = (self.clone(), uid.to_string());
        blocking("allocate pod address", move || {
            let c = &n.inner.config;
            let _lock = bridge::lock(&c.bridge)?;
            let ip = n.inner.ipam.allocate(&uid, |ip| {
                bridge::device_exists(&veth::host_name(ip)) || n.reserved_elsewhere(ip)
            })?;
            n.reserve(ip).inspect_err(|_| {
                let _ = n.inner.ipam.release(&uid);
            })?;
            Ok(ip)
        })
        .await
    }

    /// `/run/peapod/<bridge>.ips/<ip>`: holds the path of the allocation file of the data root
    /// that has the address (tmpfs: gone with a reboot, as are the pods).
    fn reservation(&self, ip: Ipv4Addr) -> PathBuf {
        Path::new(bridge::LOCK_DIR)
            .join(format!("{}.ips", self.inner.config.bridge))
            .join(ip.to_string())
    }

    fn allocation_file(&self, ip: Ipv4Addr) -> PathBuf {
        self.inner.config.ipam_dir.join(ip.to_string())
    }

    /// Whether another data root holds `ip`: its reservation names an allocation file (not
    /// ours) that still exists. A reservation whose file is gone is stale.
    fn reserved_elsewhere(&self, ip: Ipv4Addr) -> bool {
        std::fs::read_to_string(self.reservation(ip)).is_ok_and(|owner| {
            Path::new(&owner) != self.allocation_file(ip) && Path::new(&owner).exists()
        })
    }

    fn reserve(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        let path = self.reservation(ip);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let owner = self.allocation_file(ip);
        std::fs::write(&path, owner.to_string_lossy().as_bytes()).map_err(io("write", &path))
    }

    /// Removes our reservation of `ip` (not another root's).
    fn unreserve(&self, ip: Ipv4Addr) {
        let path = self.reservation(ip);
        if std::fs::read_to_string(&path).is_ok_and(|o| Path::new(&o) == self.allocation_file(ip)) {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Makes pod `uid`'s veth pair: the host end on the bridge, the other end in the network
    /// namespace pinned at `netns` as `eth0`.
    pub async fn connect(&self, uid: &str, netns: &Path) -> Result<Ipv4Addr, NetError> {
        let (n, uid, netns) = (self.clone(), uid.to_string(), netns.to_path_buf());
        blocking("connect pod", move || {
            let c = &n.inner.config;
            let ip = n.inner.ipam.lookup(&uid)?.ok_or_else(|| NetError::Io {
                op: "find address of pod",
                path: PathBuf::from(&uid),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            let _lock = bridge::lock(&c.bridge)?;
            // Someone may have deleted the bridge by hand (`peapod network remove`).
            bridge::ensure(c)?;
            veth::connect(c, ip, &netns)?;
            Ok(ip)
        })
        .await
    }

    /// Deletes pod `uid`'s veth pair and frees its address (nothing to do if it has none).
    pub async fn release(&self, uid: &str) -> Result<(), NetError> {
        let (n, uid) = (self.clone(), uid.to_string());
        blocking("release pod address", move || n.release_blocking(&uid)).await
    }

    fn release_blocking(&self, uid: &str) -> Result<(), NetError> {
        if let Some(ip) = self.inner.ipam.lookup(uid)? {
            self.unpublish(ip)?;
            veth::delete(ip)?;
            self.unreserve(ip);
            self.inner.ipam.release(uid)?;
        }
        Ok(())
    }

    /// `<ipam dir>/<ip>.hostports`: the host ports published for the pod at `ip`.
    fn host_port_record(&self, ip: Ipv4Addr) -> PathBuf {
        self.inner.config.ipam_dir.join(format!("{ip}.hostports"))
    }

    /// Translates `ports` of the host to pod `uid` (elements of the bridge's node table, over
    /// netlink; see `hostport`). Idempotent: an adopted pod publishes its ports again. The
    /// caller holds each port (`HostPortHold::reserve`), so an element with the same key and
    /// another pod's address is stale and replaced.
    pub async fn publish(&self, uid: &str, ports: Vec<HostPort>) -> Result<(), NetError> {
        if ports.is_empty() {
            return Ok(());
        }
        let (n, uid) = (self.clone(), uid.to_string());
        blocking("publish host ports", move || {
            let ip = n.inner.ipam.lookup(&uid)?.ok_or_else(|| NetError::Io {
                op: "find address of pod",
                path: PathBuf::from(&uid),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            // The record first: whatever is in the kernel is in the record.
            let record = n.host_port_record(ip);
            let mut all = hostport::read_record(&record);
            all.extend(
                ports
                    .iter()
                    .filter(|p| !all.contains(p))
                    .copied()
                    .collect::<Vec<_>>(),
            );
            hostport::write_record(&record, &all)?;
            let c = &n.inner.config;
            let table = crate::nft::guard_table(c);
            let mut nl = peapod_sys::nftables::Nftables::open()?;
            for port in &ports {
                let (map, key) = port.key();
                let value = port.value(ip);
                match nl.add_element(&table, map, &key, &value) {
                    Ok(()) => {}
                    Err(e) if e.source == Errno::EBUSY => {
                        nl.delete_element(&table, map, &key)?;
                        nl.add_element(&table, map, &key, &value)?;
                    }
                    Err(e) if e.source == Errno::ENOENT => {
                        // A node table from before host ports were translated: write it again
                        // (it has no elements to lose), then retry.
                        let _lock = bridge::lock(&c.bridge)?;
                        if nl.add_element(&table, map, &key, &value).is_err() {
                            nft::replace_table(&table, &nft::guard(c))?;
                            nl.add_element(&table, map, &key, &value)?;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes the host port elements recorded for the pod at `ip`, then the record.
    fn unpublish(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        let record = self.host_port_record(ip);
        let ports = hostport::read_record(&record);
        if !ports.is_empty() {
            let table = crate::nft::guard_table(&self.inner.config);
            let mut nl = peapod_sys::nftables::Nftables::open()?;
            for port in &ports {
                let (map, key) = port.key();
                nl.delete_element(&table, map, &key)?;
            }
        }
        match std::fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &record)(e)),
            _ => Ok(()),
        }
    }

    /// The address of pod `uid`, if it has one.
    pub fn pod_ip(&self, uid: &str) -> Option<Ipv4Addr> {
        self.inner.ipam.lookup(uid).ok().flatten()
    }

    /// Frees the addresses whose owner is not `live` (pods removed while no daemon ran).
    pub async fn collect_garbage(
        &self,
        live: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Vec<Ipv4Addr>, NetError> {
        let n = self.clone();
        blocking("collect pod addresses", move || {
            let mut freed = Vec::new();
            for (ip, owner) in n.inner.ipam.allocations()? {
                if !live(&owner) {
                    n.release_blocking(&owner)?;
                    freed.push(ip);
                }
            }
            Ok(freed)
        })
        .await
    }

    /// Replaces the daemon's nftables table with `ruleset` (one atomic transaction).
    pub async fn apply_ruleset(&self, ruleset: String) -> Result<(), NetError> {
        let n = self.clone();
        blocking("apply nftables ruleset", move || {
            let stopped = n.inner.table.lock().unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return Ok(());
            }
            n.write_table(ruleset)
        })
        .await
    }

    /// At daemon shutdown: deletes the daemon's nftables table if it wrote one. The bridge and
    /// its guard table stay, as a node keeps its CNI bridge: the next daemon starts without
    /// recreating them, and running pods keep their network. `remove_bridge` takes them away.
    pub fn stop(&self) -> Result<(), NetError> {
        let c = &self.inner.config;
        let mut stopped = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        let mut applied = self.inner.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.take().is_some() {
            nft::delete_table(&c.table)?;
            let marker = self.table_marker();
            std::fs::remove_file(&marker).map_err(io("remove", &marker))?;
        }
        Ok(())
    }
}

/// Deletes the bridge of `c` and its guard table when no pod is plugged into it; whether they
/// are gone (`peapod network remove`, and tests that made a bridge of their own).
pub fn remove_bridge(c: &NetworkConfig) -> Result<bool, NetError> {
    let _lock = bridge::lock(&c.bridge)?;
    bridge::remove_if_unused(c)
}
