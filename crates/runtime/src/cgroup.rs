//! The cgroup side of a container that libcontainer leaves to us: reading whether the kernel
//! OOM-killed it, removing the directories it leaves behind, and the pod's own cgroup limit
//! (`pids.max`, the kubelet's podPidsLimit).
//!
//! Both layouts are supported: cgroup v2 (`/sys/fs/cgroup` is cgroup2) and v1 or hybrid (one
//! hierarchy per controller under `/sys/fs/cgroup/<controller>`). [`Cgroupfs`] names the root
//! and layout, so both are tested against directory trees laid out like them
//! (`tests/cgroup_v2.rs`); the free functions use the host's.

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

/// A cgroup filesystem: where it is mounted and how it is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroupfs {
    pub root: PathBuf,
    pub layout: Layout,
}

impl Cgroupfs {
    /// The host's, at /sys/fs/cgroup.
    pub fn host() -> Cgroupfs {
        Cgroupfs {
            root: PathBuf::from(ROOT),
            layout: layout(),
        }
    }

    /// Every directory that holds `cgroup_path` (one on v2, one per mounted hierarchy on v1).
    pub fn directories(&self, cgroup_path: &str) -> Vec<PathBuf> {
        let rel = cgroup_path.trim_start_matches('/');
        match self.layout {
            Layout::V2 => vec![self.root.join(rel)],
            Layout::V1 => std::fs::read_dir(&self.root)
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
    pub fn set_pids_max(&self, cgroup_path: &str, max: i64) -> std::io::Result<()> {
        let rel = Path::new(cgroup_path.trim_start_matches('/'));
        let dir = match self.layout {
            Layout::V1 => self.root.join("pids").join(rel),
            Layout::V2 => {
                let mut dir = self.root.clone();
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

    /// How many times the kernel's OOM killer killed a process in the cgroup: `oom_kill` of
    /// `memory.events` (v2) or of `memory.oom_control` (v1).
    pub fn oom_kills(&self, cgroup_path: &str) -> u64 {
        let rel = cgroup_path.trim_start_matches('/');
        let file = match self.layout {
            Layout::V2 => self.root.join(rel).join("memory.events"),
            Layout::V1 => self
                .root
                .join("memory")
                .join(rel)
                .join("memory.oom_control"),
        };
        std::fs::read_to_string(file)
            .map(|text| counter(&text, "oom_kill"))
            .unwrap_or(0)
    }
}

/// [`Cgroupfs::directories`] of the host's.
pub fn directories(cgroup_path: &str) -> Vec<PathBuf> {
    Cgroupfs::host().directories(cgroup_path)
}

/// [`Cgroupfs::set_pids_max`] of the host's.
pub fn set_pids_max(cgroup_path: &str, max: i64) -> std::io::Result<()> {
    Cgroupfs::host().set_pids_max(cgroup_path, max)
}

/// [`Cgroupfs::oom_kills`] of the host's.
pub fn oom_kills(cgroup_path: &str) -> u64 {
    Cgroupfs::host().oom_kills(cgroup_path)
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

    /// The pod-level pids limit on a fake v2 tree: the pids controller enabled in every parent
    /// on the way down, `pids.max` in the pod's cgroup; on v1 in the pids hierarchy.
    #[test]
    fn pod_pids_limit_on_fake_trees() {
        let root = tempfile::tempdir().expect("tempdir");
        let v2 = Cgroupfs {
            root: root.path().join("v2"),
            layout: Layout::V2,
        };
        std::fs::create_dir_all(&v2.root).expect("mkdir");
        v2.set_pids_max("/peapod/pod1", 40).expect("v2");
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(v2.root.join("peapod/pod1/pids.max")), "40");
        for parent in ["", "peapod"] {
            assert_eq!(
                read(v2.root.join(parent).join("cgroup.subtree_control")),
                "+pids",
                "{parent:?}"
            );
        }
        let v1 = Cgroupfs {
            root: root.path().join("v1"),
            layout: Layout::V1,
        };
        v1.set_pids_max("/peapod/pod1", 7).expect("v1");
        assert_eq!(read(v1.root.join("pids/peapod/pod1/pids.max")), "7");
    }

    #[test]
    fn v1_trees_have_one_directory_per_hierarchy() {
        let root = tempfile::tempdir().expect("tempdir");
        for hierarchy in ["memory", "pids", "cpu,cpuacct"] {
            std::fs::create_dir_all(root.path().join(hierarchy).join("peapod/pod1/c"))
                .expect("mkdir");
        }
        std::fs::create_dir_all(root.path().join("freezer")).expect("mkdir");
        let fs = Cgroupfs {
            root: root.path().to_path_buf(),
            layout: Layout::V1,
        };
        let mut dirs = fs.directories("/peapod/pod1/c");
        dirs.sort();
        let want: Vec<PathBuf> = ["cpu,cpuacct", "memory", "pids"]
            .iter()
            .map(|h| root.path().join(h).join("peapod/pod1/c"))
            .collect();
        assert_eq!(dirs, want);
        let control = root.path().join("memory/peapod/pod1/c/memory.oom_control");
        std::fs::write(&control, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").expect("write");
        assert_eq!(fs.oom_kills("/peapod/pod1/c"), 2);
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
