//! Local storage eviction of one pod, as the kubelet's eviction manager does it
//! (<https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/>): a
//! disk-backed emptyDir whose usage exceeds its `sizeLimit` gets the pod evicted — its
//! containers killed at once, the pod left `Failed` with reason `Evicted` and the kubelet's
//! message, nothing restarted, until it is deleted. (Memory-backed emptyDirs are tmpfs mounts
//! of that size: the kernel holds their limit.) Usage is counted like `du`: allocated blocks,
//! symlinks not followed, other filesystems not entered.

use k8s_openapi::api::core::v1::PodSpec;
use peapod_api::quantity::parse_quantity;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How often usage is measured (the kubelet's eviction monitoring interval).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The reason an evicted pod's status carries.
pub const REASON: &str = "Evicted";

/// A disk-backed emptyDir with a size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedVolume {
    pub name: String,
    pub limit: u64,
    /// The limit as the pod spec wrote it, for the message.
    pub quantity: String,
}

/// The pod's disk-backed emptyDirs that have a `sizeLimit`.
pub fn limited_volumes(spec: &PodSpec) -> Vec<LimitedVolume> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let ed = v.empty_dir.as_ref()?;
            if ed.medium.as_deref() == Some("Memory") {
                return None;
            }
            let quantity = ed.size_limit.as_ref()?.0.clone();
            Some(LimitedVolume {
                name: v.name.clone(),
                limit: parse_quantity(&quantity)?,
                quantity,
            })
        })
        .collect()
}

/// The kubelet's message for a volume over its limit.
pub fn message(v: &LimitedVolume) -> String {
    format!(
        "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
        v.name, v.quantity
    )
}

/// Bytes allocated below `dir` (`du -s`), staying on its filesystem.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let device = top.dev();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    total
}

/// The first volume (under `volumes_dir/<name>`) over its limit, as the eviction message.
pub fn over_limit(volumes_dir: &Path, limited: &[LimitedVolume]) -> Option<String> {
    limited
        .iter()
        .find(|v| disk_usage(&volumes_dir.join(&v.name)) > v.limit)
        .map(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_disk_empty_dirs_with_a_limit_count() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [],
            "volumes": [
                {"name": "a", "emptyDir": {"sizeLimit": "4Mi"}},
                {"name": "b", "emptyDir": {}},
                {"name": "c", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "d", "hostPath": {"path": "/tmp"}},
            ],
        }))
        .expect("spec");
        let limited = limited_volumes(&spec);
        assert_eq!(
            limited,
            vec![LimitedVolume {
                name: "a".into(),
                limit: 4 << 20,
                quantity: "4Mi".into()
            }]
        );
        assert_eq!(
            message(&limited[0]),
            "Usage of EmptyDir volume \"a\" exceeds the limit \"4Mi\". "
        );
    }

    #[test]
    fn usage_is_what_the_files_allocate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volumes = dir.path();
        std::fs::create_dir_all(volumes.join("a/sub")).expect("mkdir");
        std::fs::write(volumes.join("a/sub/f"), vec![1u8; 256 * 1024]).expect("write");
        let used = disk_usage(&volumes.join("a"));
        assert!(used >= 256 * 1024, "{used}");
        let limited = |limit| {
            vec![LimitedVolume {
                name: "a".into(),
                limit,
                quantity: limit.to_string(),
            }]
        };
        assert!(over_limit(volumes, &limited(100 * 1024)).is_some());
        assert_eq!(over_limit(volumes, &limited(1 << 20)), None);
        assert_eq!(disk_usage(&volumes.join("missing")), 0);
    }
}
