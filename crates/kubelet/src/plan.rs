//! The pod worker's planner (pure): from the pod spec, what each container is doing, and now,
//! decide what to do next. Level-triggered: it never asks why it was woken.
//!
//! Follows the kubelet: init containers one at a time in order, each to exit 0; then every app
//! container; exits handled per `restartPolicy` with CrashLoopBackOff — restarts after 0, 10,
//! 20, 40 ... seconds, capped at 300, forgotten once a container ran for 10 minutes
//! (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy>).

use k8s_openapi::api::core::v1::PodSpec;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// What one container (by name) is doing, as the worker observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Never started yet.
    Waiting,
    /// Being created or started.
    Starting,
    Running {
        since: Instant,
    },
    Exited {
        exit_code: i32,
        started: Instant,
        finished: Instant,
    },
    /// Could not be created (`CreateContainerConfigError`, `CreateContainerError`).
    CreateFailed {
        reason: String,
        at: Instant,
    },
}

/// A container's record across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub state: ContainerState,
    pub restart_count: u32,
    /// Consecutive crashes that count for the back-off.
    pub backoff_level: u32,
}

impl ContainerRecord {
    pub fn new() -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::Waiting,
            restart_count: 0,
            backoff_level: 0,
        }
    }
}

impl Default for ContainerRecord {
    fn default() -> Self {
        ContainerRecord::new()
    }
}

/// The pod's phase, computed, never stored
/// (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-phase>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the worker should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Containers to (re)start now, in order.
    pub start: Vec<String>,
    /// When to look again even if nothing happens (a back-off ending).
    pub wake_at: Option<Instant>,
    pub phase: Phase,
}

/// The back-off before restart number `level + 1`.
pub fn backoff(level: u32) -> Duration {
    if level == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(level - 1).unwrap_or(u32::MAX);
    BACKOFF_INITIAL
        .checked_mul(factor)
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

/// When an exited container may start again, or `None` if it must not.
fn restart_at(policy: &str, record: &ContainerRecord, init: bool) -> Option<Instant> {
    let (code, started, finished) = match &record.state {
        ContainerState::Exited {
            exit_code,
            started,
            finished,
        } => (*exit_code, *started, *finished),
        ContainerState::CreateFailed { at, .. } => (-1, *at, *at),
        _ => return None,
    };
    let wants = match policy {
        "Always" => !(init && code == 0),
        "OnFailure" => code != 0,
        _ => false,
    };
    if !wants {
        return None;
    }
    let level = if finished.duration_since(started) >= BACKOFF_RESET_AFTER {
        0
    } else {
        record.backoff_level
    };
    Some(finished + backoff(level))
}

/// Decides the next step for a pod that is not being deleted.
pub fn plan(spec: &PodSpec, records: &BTreeMap<String, ContainerRecord>, now: Instant) -> Plan {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let get = |name: &str| records.get(name).cloned().unwrap_or_default();
    let mut wake_at: Option<Instant> = None;
    let mut wake = |t: Instant| wake_at = Some(wake_at.map_or(t, |w: Instant| w.min(t)));

    for c in spec.init_containers.iter().flatten() {
        let record = get(&c.name);
        match &record.state {
            ContainerState::Exited { exit_code: 0, .. } => continue,
            ContainerState::Waiting => {
                return Plan {
                    start: vec![c.name.clone()],
                    wake_at: None,
                    phase: Phase::Pending,
                }
            }
            ContainerState::Starting | ContainerState::Running { .. } => {
                return Plan {
                    start: vec![],
                    wake_at: None,
                    phase: Phase::Pending,
                }
            }
            ContainerState::Exited { .. } | ContainerState::CreateFailed { .. } => {
                return match restart_at(policy, &record, true) {
                    None => Plan {
                        start: vec![],
                        wake_at: None,
                        phase: Phase::Failed,
                    },
                    Some(t) if t <= now => Plan {
                        start: vec![c.name.clone()],
                        wake_at: None,
                        phase: Phase::Pending,
                    },
                    Some(t) => Plan {
                        start: vec![],
                        wake_at: Some(t),
                        phase: Phase::Pending,
                    },
                };
            }
        }
    }

    let mut start = Vec::new();
    let (mut running, mut will_restart, mut failed, mut waiting) = (false, false, false, false);
    for c in &spec.containers {
        let record = get(&c.name);
        match &record.state {
            ContainerState::Waiting => {
                waiting = true;
                start.push(c.name.clone());
            }
            ContainerState::Starting => waiting = true,
            ContainerState::Running { .. } => running = true,
            ContainerState::Exited { exit_code, .. } => match restart_at(policy, &record, false) {
                Some(t) if t <= now => {
                    will_restart = true;
                    start.push(c.name.clone());
                }
                Some(t) => {
                    will_restart = true;
                    wake(t);
                }
                None => failed |= *exit_code != 0,
            },
            ContainerState::CreateFailed { .. } => match restart_at(policy, &record, false) {
                Some(t) if t <= now => {
                    waiting = true;
                    start.push(c.name.clone());
                }
                Some(t) => {
                    waiting = true;
                    wake(t);
                }
                None => failed = true,
            },
        }
    }
    let phase = if waiting && !running && !will_restart {
        Phase::Pending
    } else if running || will_restart || waiting {
        Phase::Running
    } else if failed {
        Phase::Failed
    } else {
        Phase::Succeeded
    };
    Plan {
        start,
        wake_at,
        phase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(policy: &str, init: &[&str], app: &[&str]) -> PodSpec {
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "x"}))
                .collect::<Vec<_>>()
        };
        serde_json::from_value(
            json!({"restartPolicy": policy, "initContainers": list(init), "containers": list(app)}),
        )
        .expect("spec")
    }

    fn exited(code: i32, t0: Instant, ran: u64, level: u32) -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::Exited {
                exit_code: code,
                started: t0,
                finished: t0 + Duration::from_secs(ran),
            },
            restart_count: level,
            backoff_level: level,
        }
    }

    fn running(t0: Instant) -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::Running { since: t0 },
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (0..8).map(|l| backoff(l).as_secs()).collect();
        assert_eq!(secs, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(200), BACKOFF_MAX);
    }

    #[test]
    fn table() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        type Case = (
            &'static str,
            PodSpec,
            Vec<(&'static str, ContainerRecord)>,
            Instant,
            Vec<&'static str>,
            Phase,
            Option<Instant>,
        );
        let cases: Vec<Case> = vec![
            (
                "fresh pod starts its first init container only",
                spec("Always", &["i1", "i2"], &["a"]),
                vec![],
                t0,
                vec!["i1"],
                Phase::Pending,
                None,
            ),
            (
                "second init container after the first succeeded",
                spec("Always", &["i1", "i2"], &["a"]),
                vec![("i1", exited(0, t0, 1, 0))],
                t0,
                vec!["i2"],
                Phase::Pending,
                None,
            ),
            (
                "running init container blocks the rest",
                spec("Always", &["i1"], &["a"]),
                vec![("i1", running(t0))],
                t0,
                vec![],
                Phase::Pending,
                None,
            ),
            (
                "failed init container with Never fails the pod",
                spec("Never", &["i1"], &["a"]),
                vec![("i1", exited(1, t0, 1, 0))],
                at(5),
                vec![],
                Phase::Failed,
                None,
            ),
            (
                "failed init container is retried at once the first time",
                spec("OnFailure", &["i1"], &["a"]),
                vec![("i1", exited(1, t0, 1, 0))],
                at(1),
                vec!["i1"],
                Phase::Pending,
                None,
            ),
            (
                "failed init container waits out its back-off",
                spec("Always", &["i1"], &["a"]),
                vec![("i1", exited(1, t0, 1, 1))],
                at(5),
                vec![],
                Phase::Pending,
                Some(at(11)),
            ),
            (
                "all app containers start together after init",
                spec("Always", &["i1"], &["a", "b"]),
                vec![("i1", exited(0, t0, 1, 0))],
                t0,
                vec!["a", "b"],
                Phase::Pending,
                None,
            ),
            (
                "running pod has nothing to do",
                spec("Always", &[], &["a", "b"]),
                vec![("a", running(t0)), ("b", running(t0))],
                t0,
                vec![],
                Phase::Running,
                None,
            ),
            (
                "Always restarts a clean exit",
                spec("Always", &[], &["a"]),
                vec![("a", exited(0, t0, 1, 0))],
                at(1),
                vec!["a"],
                Phase::Running,
                None,
            ),
            (
                "CrashLoopBackOff waits 20 s at level 2",
                spec("Always", &[], &["a"]),
                vec![("a", exited(1, t0, 1, 2))],
                at(2),
                vec![],
                Phase::Running,
                Some(at(21)),
            ),
            (
                "back-off is forgotten after 10 minutes running",
                spec("Always", &[], &["a"]),
                vec![("a", exited(1, t0, 700, 5))],
                at(700),
                vec!["a"],
                Phase::Running,
                None,
            ),
            (
                "OnFailure leaves a clean exit alone",
                spec("OnFailure", &[], &["a"]),
                vec![("a", exited(0, t0, 1, 0))],
                at(1),
                vec![],
                Phase::Succeeded,
                None,
            ),
            (
                "Never with all exits 0 succeeds",
                spec("Never", &[], &["a", "b"]),
                vec![("a", exited(0, t0, 1, 0)), ("b", exited(0, t0, 1, 0))],
                at(1),
                vec![],
                Phase::Succeeded,
                None,
            ),
            (
                "Never with one failure fails",
                spec("Never", &[], &["a", "b"]),
                vec![("a", exited(0, t0, 1, 0)), ("b", exited(2, t0, 1, 0))],
                at(1),
                vec![],
                Phase::Failed,
                None,
            ),
            (
                "Never with one still running runs",
                spec("Never", &[], &["a", "b"]),
                vec![("a", exited(2, t0, 1, 0)), ("b", running(t0))],
                at(1),
                vec![],
                Phase::Running,
                None,
            ),
        ];
        for (name, spec, records, now, start, phase, wake) in cases {
            let records: BTreeMap<String, ContainerRecord> = records
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect();
            let plan = plan(&spec, &records, now);
            let want: Vec<String> = start.iter().map(|s| s.to_string()).collect();
            assert_eq!(plan.start, want, "{name}");
            assert_eq!(plan.phase, phase, "{name}");
            assert_eq!(plan.wake_at, wake, "{name}");
        }
    }
}
