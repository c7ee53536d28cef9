//! The cgroup side of a container that libcontainer leaves to us: reading whether the kernel
//! OOM-killed it, removing the directories it leaves behind, and the pod's own cgroup limit
//! (`pids.max`, the kubelet's podPidsLimit).
//!
//! Both layouts are supported: cgroup v2 (`/sys/fs/cgroup` is cgroup2) and v1 or hybrid (one
//! hierarchy per controller under `/sys/fs/cgroup/<controller>`).

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_MAGIC: &str = "cgroup2";

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
}

/// Detects the layout from /proc/self/mountinfo: v2 when /sys/fs/cgroup itself is cgroup2.
pub fn layout() -> Layout {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    layout_from_mountinfo(&info)
}

fn layout_from_mountinfo(info: &str) -> Layout {
    for line in info.lines() {
        let mut halves = line.splitn(2, " - ");
        let left = halves.next().unwrap_or("");
        let right = halves.next().unwrap_or("");
        if left.split(' ').nth(4) == Some(ROOT) && right.split(' ').next() == Some(CGROUP2_MAGIC) {
            return Layout::V2;
        }
    }
    Layout::V1
}

/// Every directory that holds `cgroup_path` (one on v2, one per mounted hierarchy on v1).
pub fn directories(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    match layout() {
        Layout::V2 => vec![Path::new(ROOT).join(rel)],
        Layout::V1 => std::fs::read_dir(ROOT)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path().join(rel))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Sets `pids.max` of `cgroup_path` (creating it): every process below it counts, whichever
/// child cgroup it is in. On v2 the pids controller is enabled down to it first.
pub fn set_pids_max(cgroup_path: &str, max: i64) -> std::io::Result<()> {
    let rel = Path::new(cgroup_path.trim_start_matches('/'));
    let dir = match layout() {
        Layout::V1 => Path::new(ROOT).join("pids").join(rel),
        Layout::V2 => {
            let mut dir = PathBuf::from(ROOT);
            for part in rel.iter() {
                // Already enabled is fine; a parent that refuses shows in the write below.
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+pids");
                dir.push(part);
                std::fs::create_dir_all(&dir)?;
            }
            dir
        }
    };
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("pids.max"), max.to_string())
}

/// How many times the kernel's OOM killer killed a process in the cgroup.
pub fn oom_kills(cgroup_path: &str) -> u64 {
    let rel = cgroup_path.trim_start_matches('/');
    let (file, key) = match layout() {
        Layout::V2 => (Path::new(ROOT).join(rel).join("memory.events"), "oom_kill"),
        Layout::V1 => (
            Path::new(ROOT)
                .join("memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill",
        ),
    };
    std::fs::read_to_string(file)
        .map(|text| counter(&text, key))
        .unwrap_or(0)
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Removes the cgroup directories of `cgroup_path` and then of its parents up to and including
/// `stop_at`, where they are empty. A busy or missing directory is left alone.
pub fn remove(cgroup_path: &str, stop_at: &str) {
    let mut path = PathBuf::from(cgroup_path);
    let mut leaf = true;
    loop {
        for dir in directories(&path.display().to_string()) {
            // Only the leaf waits for its last processes to leave; a parent that is busy is in
            // use by another pod or container.
            if leaf {
                remove_tree_patiently(&dir);
            } else {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        leaf = false;
        if path == Path::new(stop_at) || !path.starts_with(stop_at) || !path.pop() {
            return;
        }
    }
}

/// rmdir of a cgroup fails with EBUSY while a process is still leaving it (an exec helper, a
/// process being reaped) or a child cgroup is left (a container whose monitor could not remove
/// its own): children first, then a few tries; a process still inside after the first tries is
/// a stray of what is being removed (a late exec probe) and is killed.
fn remove_tree_patiently(dir: &Path) {
    for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree_patiently(&child.path());
        }
    }
    for attempt in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if attempt >= 10 {
                    let procs =
                        std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_layouts() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(layout_from_mountinfo(v2), Layout::V2);
        let hybrid = "30 23 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(layout_from_mountinfo(hybrid), Layout::V1);
    }

    #[test]
    fn reads_counters() {
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            3
        );
        assert_eq!(
            counter("low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n", "oom_kill"),
            1
        );
        assert_eq!(counter("", "oom_kill"), 0);
    }
}
