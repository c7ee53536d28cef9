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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundState {
    Running { pid: i32 },
    Exited(Exited),
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
        let state = match (runtime.exited(&id), runtime.started(&id)) {
            (Ok(Some(exited)), _) => FoundState::Exited(exited),
            (_, Ok(Some(started))) if peapod_sys::process::alive(started.pid) => {
                FoundState::Running { pid: started.pid }
            }
            // Its monitor died before recording an exit: reported as killed.
            (_, Ok(Some(started))) => FoundState::Exited(Exited {
                exit_code: 137,
                signal: Some(9),
                oom_killed: false,
                started_at: started.started_at,
                finished_at: peapod_runtime::log::now_rfc3339_nano(),
            }),
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
        });
    }
    for list in out.values_mut() {
        list.sort_by_key(|i| i.restart);
    }
    out
}
