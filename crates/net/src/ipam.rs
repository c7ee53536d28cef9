//! Pod IP address management: one file per allocated address, `<dir>/<ip>`, holding the
//! owner (the pod's uid). Files survive daemon restarts; allocation is atomic across processes
//! because an address is taken by `link(2)`-ing a fully written temporary file to its name,
//! which fails with EEXIST when another process got there first (the scheme of CNI's
//! host-local plugin, <https://www.cni.dev/plugins/current/ipam/host-local/>, without its lock).
//!
//! The search starts after the last address handed out (`<dir>/last`), so a released address
//! is not reused at once while stale conntrack entries or ARP caches may still point at it.

use crate::cidr::Ipv4Cidr;
use crate::error::{io, NetError};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Cidr,
}

impl Ipam {
    /// Opens (creating) the allocation directory for addresses of `cidr`. The network, first
    /// (gateway) and broadcast addresses are never handed out.
    pub fn open(dir: &Path, cidr: Ipv4Cidr) -> Result<Ipam, NetError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            cidr,
        })
    }

    /// The address of `owner`, allocating one when it has none. `taken` vetoes addresses used
    /// outside this directory (another data root on the same bridge).
    pub fn allocate(
        &self,
        owner: &str,
        taken: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.lookup(owner)? {
            return Ok(ip);
        }
        let tmp = self.dir.join(format!(".{owner}.{}", std::process::id()));
        std::fs::write(&tmp, owner).map_err(io("write", &tmp))?;
        let result = self.claim(&tmp, taken);
        let _ = std::fs::remove_file(&tmp);
        let ip = result?;
        let last = self.dir.join("last");
        overwrite(&last, ip.to_string().as_bytes()).map_err(io("write", &last))?;
        Ok(ip)
    }

    fn claim(&self, tmp: &Path, taken: impl Fn(Ipv4Addr) -> bool) -> Result<Ipv4Addr, NetError> {
        let hosts = self.cidr.host_count();
        // Index 1 is the gateway: candidates are 2..=hosts.
        let candidates = hosts.saturating_sub(1);
        let start = std::fs::read_to_string(self.dir.join("last"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .and_then(|ip| self.cidr.index_of(ip))
            .filter(|i| (2..=hosts).contains(i))
            .map_or(0, |i| i - 1);
        for step in 0..candidates {
            let index = 2 + (start + step) % candidates;
            let Some(ip) = self.cidr.nth(index) else {
                continue;
            };
            let path = self.path(ip);
            if path.exists() || taken(ip) {
                continue;
            }
            match std::fs::hard_link(tmp, &path) {
                Ok(()) => return Ok(ip),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("link", &path)(e)),
            }
        }
        Err(NetError::Exhausted {
            cidr: self.cidr.to_string(),
        })
    }

    /// The address allocated to `owner`, if any.
    pub fn lookup(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    /// Frees the address of `owner`; returns it.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let Some(ip) = self.lookup(owner)? else {
            return Ok(None);
        };
        let path = self.path(ip);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(Some(ip)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Every allocation: address and owner.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io("read", &self.dir))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if let Ok(owner) = std::fs::read_to_string(entry.path()) {
                out.push((ip, owner));
            }
        }
        out.sort();
        Ok(out)
    }

    fn path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }
}

/// Writes `bytes` over the start of `path` and cuts it there, without truncating it to zero
/// first: the file keeps its block, so a filesystem mounted with `discard` (this machine's
/// ext4) does not issue a synchronous discard for the freed block on every pod start.
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, cidr: &str) -> Ipam {
        Ipam::open(dir, cidr.parse().expect("cidr")).expect("open")
    }

    #[test]
    fn overwrite_replaces_longer_and_shorter_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("last");
        overwrite(&path, b"10.88.0.123").expect("first");
        overwrite(&path, b"10.88.0.9").expect("shorter");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "10.88.0.9");
        overwrite(&path, b"10.88.0.100").expect("longer");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "10.88.0.100");
    }

    #[test]
    fn allocates_distinct_addresses_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ipam(dir.path(), "10.123.0.0/24");
        let first = a.allocate("pod-a", |_| false).expect("a");
        let second = a.allocate("pod-b", |_| false).expect("b");
        assert_eq!(first, Ipv4Addr::new(10, 123, 0, 2));
        assert_eq!(second, Ipv4Addr::new(10, 123, 0, 3));
        assert_eq!(a.allocate("pod-a", |_| false).expect("again"), first);
        let reopened = ipam(dir.path(), "10.123.0.0/24");
        assert_eq!(reopened.lookup("pod-b").expect("lookup"), Some(second));
        assert_eq!(reopened.release("pod-a").expect("release"), Some(first));
        assert_eq!(reopened.release("pod-a").expect("twice"), None);
        // Round robin: the next one is after the last handed out, not the freed one.
        let third = reopened.allocate("pod-c", |_| false).expect("c");
        assert_eq!(third, Ipv4Addr::new(10, 123, 0, 4));
    }

    #[test]
    fn skips_vetoed_addresses_and_reports_exhaustion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ipam(dir.path(), "10.123.0.0/29");
        let vetoed = Ipv4Addr::new(10, 123, 0, 2);
        let got: Vec<Ipv4Addr> = (0..4)
            .map(|i| {
                a.allocate(&format!("p{i}"), |ip| ip == vetoed)
                    .expect("alloc")
            })
            .collect();
        assert!(!got.contains(&vetoed));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 123, 0, 6)));
        assert!(matches!(
            a.allocate("p4", |ip| ip == vetoed),
            Err(NetError::Exhausted { .. })
        ));
        a.release("p0").expect("release");
        assert_eq!(a.allocate("p5", |ip| ip == vetoed).expect("reuse"), got[0]);
    }

    #[test]
    fn concurrent_allocators_never_share_an_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let a = ipam(dir.path(), "10.123.0.0/24");
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| a.allocate(&format!("t{t}-{i}"), |_| false).expect("alloc"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 80);
    }
}
