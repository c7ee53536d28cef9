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
use crate::ipam::Ipam;
use crate::nft;
use crate::veth;
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

    /// Gives pod `uid` an address and makes its veth pair (the pod end still on the host), under
    /// the bridge's lock: an address whose veth exists is skipped, as another data root sharing
    /// the bridge has it.
    pub async fn allocate(&self, uid: &str) -> Result<Ipv4Addr, NetError> {
        let (n, uid) = (self.clone(), uid.to_string());
        blocking("allocate pod address", move || {
            let c = &n.inner.config;
            let _lock = bridge::lock(&c.bridge)?;
            let ip = n
                .inner
                .ipam
                .allocate(&uid, |ip| bridge::device_exists(&veth::host_name(ip)))?;
            veth::create(ip).inspect_err(|_| {
                let _ = n.inner.ipam.release(&uid);
            })?;
            Ok(ip)
        })
        .await
    }

    /// Plugs pod `uid`'s veth pair in: the host end on the bridge, the other end into the
    /// network namespace pinned at `netns` as `eth0`.
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
            veth::delete(ip)?;
            self.inner.ipam.release(uid)?;
        }
        Ok(())
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
