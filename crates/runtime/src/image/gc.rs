//! Automatic image garbage collection, as the kubelet's image GC does it
//! (<https://kubernetes.io/docs/concepts/architecture/garbage-collection/#containers-images>):
//! when the filesystem holding the store is used above `high` percent, unused images are
//! removed, oldest first, until the usage is expected to drop to `low` percent. "Unused" and
//! "in use" are [`ImageStore::prune`]'s; an image's age is when its manifest entered the store
//! (peapod records no last-use time), and an image younger than `min_age` is never removed
//! (the kubelet's `imageMinimumGCAge`), which also spares an image between its pull and the
//! creation of the container that wanted it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use peapod_sys::fs::LockKind;

use super::names::NamesIndex;
use super::prune::unused_names;
use super::{io_err, ImageError, ImageStore, ImageSummary};
use crate::spec::ContainerConfig;

/// The kubelet's defaults: `imageGCHighThresholdPercent` 85, `imageGCLowThresholdPercent` 80,
/// `imageMinimumGCAge` 2 min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcThresholds {
    pub high: u8,
    pub low: u8,
    pub min_age: Duration,
    /// Between two looks at the disk.
    pub interval: Duration,
}

impl GcThresholds {
    /// `PEAPOD_IMAGE_GC_HIGH`, `PEAPOD_IMAGE_GC_LOW` (percent), `PEAPOD_IMAGE_GC_MIN_AGE` and
    /// `PEAPOD_IMAGE_GC_INTERVAL` (seconds); a value that does not parse keeps the default.
    pub fn from_env() -> GcThresholds {
        let get = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let high = get("PEAPOD_IMAGE_GC_HIGH").map_or(85, |v| v.min(100) as u8);
        let low = get("PEAPOD_IMAGE_GC_LOW").map_or(80, |v| v.min(100) as u8);
        GcThresholds {
            high,
            low: low.min(high),
            min_age: Duration::from_secs(get("PEAPOD_IMAGE_GC_MIN_AGE").unwrap_or(120)),
            interval: Duration::from_secs(get("PEAPOD_IMAGE_GC_INTERVAL").unwrap_or(300).max(1)),
        }
    }
}

/// Bytes of the filesystem, as statvfs(2) reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    pub fn of(path: &Path) -> Result<DiskUsage, ImageError> {
        let stat = nix::sys::statvfs::statvfs(path).map_err(|e| ImageError::Io {
            op: "statvfs",
            path: path.to_owned(),
            source: e.into(),
        })?;
        let unit = stat.fragment_size() as u64;
        Ok(DiskUsage {
            capacity: stat.blocks() as u64 * unit,
            available: stat.blocks_available() as u64 * unit,
        })
    }
}

/// An image the collector may remove: name, bytes it is expected to free, when it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub name: String,
    pub size: u64,
    pub added: SystemTime,
}

/// The names to remove for `usage` under `thresholds` at `now`: nothing below `high`, else the
/// oldest candidates past the minimum age until the bytes freed bring the usage to `low`.
pub(super) fn plan(
    candidates: &[Candidate],
    usage: DiskUsage,
    thresholds: GcThresholds,
    now: SystemTime,
) -> Vec<String> {
    if usage.capacity == 0 {
        return Vec::new();
    }
    let used = usage.capacity.saturating_sub(usage.available);
    if used.saturating_mul(100) < usage.capacity.saturating_mul(u64::from(thresholds.high)) {
        return Vec::new();
    }
    let target = usage.capacity / 100 * u64::from(thresholds.low);
    let mut to_free = used.saturating_sub(target);
    let mut sorted: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.added + thresholds.min_age <= now)
        .collect();
    sorted.sort_by_key(|c| c.added);
    let mut names = Vec::new();
    for candidate in sorted {
        if to_free == 0 {
            break;
        }
        names.push(candidate.name.clone());
        to_free = to_free.saturating_sub(candidate.size.max(1));
    }
    names
}

/// The layer directories of every container record under `containers_root`: what the
/// collector and `prune` must keep. A record that cannot be read is an error, since the image
/// it uses is then unknown; one that disappears meanwhile (a container being removed) is not.
pub fn layers_in_use(containers_root: &Path) -> Result<Vec<Vec<PathBuf>>, ImageError> {
    let entries = match std::fs::read_dir(containers_root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read directory", containers_root)(e)),
    };
    let mut layers = Vec::new();
    for entry in entries {
        let config = entry
            .map_err(io_err("read directory", containers_root))?
            .path()
            .join("config.json");
        let text = match std::fs::read(&config) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &config)(e)),
        };
        let parsed: ContainerConfig =
            serde_json::from_slice(&text).map_err(|source| ImageError::CorruptStore {
                path: config,
                source,
            })?;
        layers.push(parsed.layers);
    }
    Ok(layers)
}

impl ImageStore {
    /// One look at the disk: removes unused images if the store's filesystem is used above the
    /// high threshold. Returns what was removed.
    pub fn collect_for_space(
        &self,
        in_use: &[Vec<PathBuf>],
        thresholds: GcThresholds,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        self.clean_downloads(super::prune::STALE_DOWNLOAD)?;
        let usage = DiskUsage::of(self.root())?;
        let candidates = {
            let _lock = self.lock(LockKind::Shared)?;
            let index = NamesIndex::read(&self.names_path())?;
            let images: Vec<(String, Option<Vec<PathBuf>>)> = index
                .images
                .iter()
                .map(|(name, entry)| (name.clone(), self.layer_dirs(name, &entry.manifest).ok()))
                .collect();
            let unused = unused_names(&images, in_use);
            index
                .images
                .iter()
                .filter(|(name, _)| unused.contains(name))
                .map(|(name, entry)| Candidate {
                    name: name.clone(),
                    size: entry.size,
                    added: self
                        .blob_path(&entry.manifest)
                        .ok()
                        .and_then(|p| p.metadata().ok())
                        .and_then(|m| m.modified().ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                })
                .collect::<Vec<_>>()
        };
        let names = plan(&candidates, usage, thresholds, SystemTime::now());
        if names.is_empty() {
            return Ok(Vec::new());
        }
        tracing::info!(
            capacity = usage.capacity,
            available = usage.available,
            high = thresholds.high,
            images = names.len(),
            "image store above the high threshold"
        );
        // `prune_names` checks use again under the exclusive lock.
        self.prune_names(in_use, Some(&names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, size: u64, age_secs: u64) -> Candidate {
        Candidate {
            name: name.to_owned(),
            size,
            added: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_secs),
        }
    }

    #[test]
    fn removes_oldest_until_low() {
        let thresholds = GcThresholds {
            high: 85,
            low: 80,
            min_age: Duration::from_secs(50),
            interval: Duration::from_secs(1),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let candidates = [
            candidate("new", 10, 60),
            candidate("old", 4, 100),
            candidate("older", 3, 200),
            candidate("too-young", 50, 10),
        ];
        let usage = |used: u64| DiskUsage {
            capacity: 100,
            available: 100 - used,
        };
        assert!(plan(&candidates, usage(84), thresholds, now).is_empty());
        // 85 used, 80 wanted: 5 bytes, the two oldest (3 + 4).
        assert_eq!(
            plan(&candidates, usage(85), thresholds, now),
            ["older", "old"]
        );
        // Everything past the minimum age, never the young one.
        let all = plan(&candidates, usage(100), thresholds, now);
        assert_eq!(all, ["older", "old", "new"]);
        let zero = DiskUsage {
            capacity: 0,
            available: 0,
        };
        assert!(plan(&candidates, zero, thresholds, now).is_empty());
    }
}
