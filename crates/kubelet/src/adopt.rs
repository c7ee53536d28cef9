//! Re-adopting a pod after the daemon restarted: its sandbox and the container instances whose
//! monitors kept running while no daemon watched them (they outlive it by design). An instance
//! belongs to the pod whose log directory its config points into; the newest instance of each
//! container is the current one, running or exited, and older ones are kept for removal.

use peapod_runtime::container::{ContainerDir, ContainerId};
use peapod_runtime::sandbox::SandboxDir;
use peapod_runtime::{ContainerConfig, Exited, Runtime};
use std::collections::BTreeMap;

/// One container instance found on disk.
#[derive(Debug, Clone)]
pub struct FoundInstance {
    pub restart: u32,
    pub dir: ContainerDir,
    pub state: FoundState,
    /// The image reference it was created from (for its image ID and stop signal).
    pub image: String,
    /// When its process started (`started.json`), RFC 3339.
    pub started_at: Option<String>,
}

/// The monotonic instant of a wall-clock RFC 3339 time, measured back from `now`: how the
/// planner's clock sees a start or exit that happened while no daemon ran (`now` for a time
/// that cannot be parsed or lies in the future).
pub fn instant_of(now: std::time::Instant, rfc3339: &str) -> std::time::Instant {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return now;
    };
    let age = chrono::Utc::now()
        .signed_duration_since(t)
        .to_std()
        .unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundState {
    Running {
        pid: i32,
    },
    Exited(Exited),
    /// Started, neither running nor with an exit record: its monitor was killed.
    Lost,
}

/// Every instance of the pod's containers, grouped by container name, newest last.
pub fn find_instances(
    runtime: &Runtime,
    pod_dir: &SandboxDir,
) -> BTreeMap<String, Vec<FoundInstance>> {
    let logs = pod_dir.path.join("logs");
    let mut out: BTreeMap<String, Vec<FoundInstance>> = BTreeMap::new();
    let entries = std::fs::read_dir(runtime.containers_root())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok());
    for entry in entries {
        let Some(id) = ContainerId::parse(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let dir = runtime.dir(&id);
        let Ok(Some(config)) = peapod_runtime::atomic::read_json::<ContainerConfig>(&dir.config())
        else {
            continue;
        };
        if !config.log_path.starts_with(&logs) {
            continue;
        }
        let name = config
            .log_path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let restart = config
            .log_path
            .file_stem()
            .and_then(|s| s.to_string_lossy().parse().ok())
            .unwrap_or(0);
        let started = runtime.started(&id);
        let started_at = started
            .as_ref()
            .ok()
            .and_then(|s| s.as_ref())
            .map(|s| s.started_at.clone());
        let state = match (runtime.exited(&id), started) {
            (Ok(Some(exited)), _) => FoundState::Exited(exited),
            (_, Ok(Some(started))) if peapod_sys::process::alive(started.pid) => {
                FoundState::Running { pid: started.pid }
            }
            // Its monitor died before recording an exit: what it leaves (cgroups, rootfs
            // mount, state) is cleaned up and the exit recorded by the orphan helper.
            (_, Ok(Some(_))) => FoundState::Lost,
            // Never started: nothing to adopt but the directory to remove.
            _ => FoundState::Exited(Exited {
                exit_code: 128,
                signal: None,
                oom_killed: false,
                started_at: String::new(),
                finished_at: String::new(),
            }),
        };
        out.entry(name).or_default().push(FoundInstance {
            restart,
            dir,
            state,
            image: config.image.clone(),
            started_at,
        });
    }
    for list in out.values_mut() {
        list.sort_by_key(|i| i.restart);
    }
    out
}
