//! What of a data root is still on the host, read from `/proc` and `/sys/fs/cgroup`, and
//! [`sweep`], which kills it and lazily unmounts below the root, so that a test leaves nothing
//! behind even when it fails.
//!
//! Mount points come from `/proc/self/mountinfo`, field 5 ("mount point", proc(5)); pod cgroups
//! are `peapod/pod<uid>` below the cgroup v2 root or below any v1 hierarchy.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The process ids in `/proc`, other than this test's own.
pub fn processes() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .collect()
}

/// A process's command line, arguments joined by spaces; empty when it is gone.
pub fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// peapod processes (the monitors, `peapod __monitor ROOT/containers/ID`) working below `root`.
pub fn peapod_processes_under(root: &Path) -> Vec<(i32, String)> {
    let needle = format!("{}/", root.display());
    processes()
        .into_iter()
        .map(|pid| (pid, cmdline(pid)))
        .filter(|(_, cmd)| {
            let argv0 = cmd.split(' ').next().unwrap_or("");
            cmd.contains(&needle) && Path::new(argv0).ends_with("peapod")
        })
        .collect()
}

/// Any process whose command line mentions `dir` (kubectl's `--kubeconfig` too).
pub fn processes_mentioning(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.display().to_string();
    processes()
        .into_iter()
        .map(|pid| (pid, cmdline(pid)))
        .filter(|(_, cmd)| cmd.contains(&needle))
        .collect()
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The names in a directory; none when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Where the cgroups of pod `uid` may be, existing or not: the v2 root's and every hierarchy's.
pub fn pod_cgroup_dirs(uid: &str) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(format!("/sys/fs/cgroup/peapod/pod{uid}"))];
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        dirs.push(h.path().join("peapod").join(format!("pod{uid}")));
    }
    dirs
}

/// The processes in the cgroups of pod `uid` (any hierarchy, any depth), sorted, each once.
pub fn pod_cgroup_processes(uid: &str) -> Vec<i32> {
    let mut dirs = pod_cgroup_dirs(uid);
    let mut pids = Vec::new();
    while let Some(dir) = dirs.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The processes in the cgroups of the pods that `root` holds (`root/pods/<uid>`).
pub fn cgroup_processes(root: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = entries(&root.join("pods"))
        .iter()
        .flat_map(|uid| pod_cgroup_processes(uid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kills what `left` finds (pid, and how to report it) with SIGKILL, waits up to 10 s until it
/// finds nothing, then lazily unmounts everything below `root`, deepest first. Returns what it
/// killed and unmounted, so a test's end can fail on it.
pub fn sweep(root: &Path, left: impl Fn() -> Vec<(i32, String)>) -> Vec<String> {
    let mut found = Vec::new();
    for (pid, what) in left() {
        found.push(what);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = crate::poll_until(Instant::now() + Duration::from_secs(10), || {
        left().is_empty().then_some(())
    });
    let mut mounts = mounts_under(root);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        found.push(format!("mount {}", m.display()));
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    found
}
