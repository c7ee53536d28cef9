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
/// How long a failed pull shows `ErrImagePull` before `ImagePullBackOff`, as the kubelet's
/// next sync would report it.
pub const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(2);

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
    /// Its image could not be had (`ErrImagePull`, `ErrImageNeverPull`): retried with the
    /// image back-off whatever the restart policy, as `restart` again (no instance was made).
    ImagePullFailed {
        at: Instant,
        restart: u32,
    },
}

/// A container's record across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub state: ContainerState,
    pub restart_count: u32,
    /// Consecutive crashes that count for the back-off.
    pub backoff_level: u32,
    /// Consecutive failed image pulls (the image back-off's level).
    pub pull_failures: u32,
    /// The startup probe succeeded (or there is none) for the running instance.
    pub started: bool,
    /// The readiness probe says ready (or there is none) for the running instance.
    pub ready: bool,
    /// What the status reports and the planner ignores.
    pub detail: ContainerDetail,
}

/// Status details of a container's current and previous instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDetail {
    /// `peapod://<id>` of the current (or last) instance.
    pub container_id: Option<String>,
    pub image_id: Option<String>,
    /// RFC 3339 start time of the running instance.
    pub started_at: Option<String>,
    /// How the current instance ended, while it is not restarted.
    pub terminated: Option<peapod_runtime::Exited>,
    /// Its termination message (terminationMessagePath, or the log's tail on error).
    pub terminated_message: Option<String>,
    /// How the previous instance ended (`lastState.terminated`).
    pub last_terminated: Option<peapod_runtime::Exited>,
    /// `peapod://<id>` of that previous instance.
    pub last_container_id: Option<String>,
    /// Why it could not be created: (reason, message).
    pub create_error: Option<(String, String)>,
}

impl ContainerRecord {
    pub fn new() -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::Waiting,
            restart_count: 0,
            backoff_level: 0,
            pull_failures: 0,
            started: false,
            ready: false,
            detail: ContainerDetail::default(),
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
    /// Running containers to stop now (sidecars of a pod whose app containers are done).
    pub stop: Vec<String>,
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
pub fn restart_at(policy: &str, record: &ContainerRecord, init: bool) -> Option<Instant> {
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

/// When a container whose image could not be had is tried again: 10 s after the first failure,
/// doubling to 300 s, as the kubelet's image back-off.
pub fn pull_retry_at(record: &ContainerRecord) -> Option<Instant> {
    match record.state {
        ContainerState::ImagePullFailed { at, .. } => Some(at + backoff(record.pull_failures)),
        _ => None,
    }
}

/// Whether a failed pull is shown as `ImagePullBackOff` now (after a moment of
/// `ErrImagePull`).
pub fn in_pull_backoff(record: &ContainerRecord, now: Instant) -> bool {
    match record.state {
        ContainerState::ImagePullFailed { at, .. } => now >= at + ERR_IMAGE_PULL_SHOWN,
        _ => false,
    }
}

/// Schedules the retry of a failed pull, and a wake-up when its status turns to back-off.
fn schedule_pull(
    name: &str,
    record: &ContainerRecord,
    now: Instant,
    start: &mut Vec<String>,
    wake_at: &mut Option<Instant>,
) {
    if let ContainerState::ImagePullFailed { at, .. } = record.state {
        let shown = at + ERR_IMAGE_PULL_SHOWN;
        if shown > now {
            *wake_at = Some(wake_at.map_or(shown, |w| w.min(shown)));
        }
    }
    schedule(name, pull_retry_at(record), now, start, wake_at);
}

/// Whether an init container is a native sidecar (`restartPolicy: Always` on the init
/// container): it starts in order, keeps running beside the app containers and does not block
/// completion (<https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/>).
pub fn is_sidecar(c: &k8s_openapi::api::core::v1::Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Adds a start or a wake-up for an exited or failed container that should restart.
fn schedule(
    name: &str,
    at: Option<Instant>,
    now: Instant,
    start: &mut Vec<String>,
    wake_at: &mut Option<Instant>,
) -> bool {
    match at {
        Some(t) if t <= now => {
            start.push(name.to_string());
            true
        }
        Some(t) => {
            *wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
            true
        }
        None => false,
    }
}

/// Decides the next step for a pod that is not being deleted.
pub fn plan(spec: &PodSpec, records: &BTreeMap<String, ContainerRecord>, now: Instant) -> Plan {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let get = |name: &str| records.get(name).cloned().unwrap_or_default();
    let mut start = Vec::new();
    let mut stop = Vec::new();
    let mut wake_at: Option<Instant> = None;
    let pending = |start, wake_at| Plan {
        start,
        stop: vec![],
        wake_at,
        phase: Phase::Pending,
    };

    // Init containers, in order, until the app containers have started once: a regular one must
    // exit 0 before the next starts; a sidecar must be running.
    let initialized = spec
        .containers
        .iter()
        .any(|c| get(&c.name).state != ContainerState::Waiting);
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|_| !initialized)
    {
        let record = get(&c.name);
        let sidecar = is_sidecar(c);
        match &record.state {
            ContainerState::Exited { exit_code: 0, .. } if !sidecar => continue,
            // A sidecar counts once started (its startupProbe passed), not merely running
            // (<https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/>).
            ContainerState::Running { .. } if sidecar && record.started => continue,
            ContainerState::Waiting => {
                start.push(c.name.clone());
                return pending(start, wake_at);
            }
            ContainerState::Starting | ContainerState::Running { .. } => {
                return pending(start, wake_at)
            }
            ContainerState::ImagePullFailed { .. } => {
                schedule_pull(&c.name, &record, now, &mut start, &mut wake_at);
                return pending(start, wake_at);
            }
            ContainerState::Exited { .. } | ContainerState::CreateFailed { .. } => {
                let policy = if sidecar { "Always" } else { policy };
                if !schedule(
                    &c.name,
                    restart_at(policy, &record, !sidecar),
                    now,
                    &mut start,
                    &mut wake_at,
                ) {
                    return Plan {
                        start,
                        stop,
                        wake_at,
                        phase: Phase::Failed,
                    };
                }
                return pending(start, wake_at);
            }
        }
    }

    let (mut running, mut will_restart, mut failed, mut waiting) = (false, false, false, false);
    for c in &spec.containers {
        let record = get(&c.name);
        match &record.state {
            ContainerState::Waiting => {
                waiting = true;
                start.push(c.name.clone());
            }
            ContainerState::Starting => waiting = true,
            ContainerState::ImagePullFailed { .. } => {
                waiting = true;
                schedule_pull(&c.name, &record, now, &mut start, &mut wake_at);
            }
            ContainerState::Running { .. } => running = true,
            ContainerState::Exited { exit_code, .. } => {
                if schedule(
                    &c.name,
                    restart_at(policy, &record, false),
                    now,
                    &mut start,
                    &mut wake_at,
                ) {
                    will_restart = true;
                } else {
                    failed |= *exit_code != 0;
                }
            }
            ContainerState::CreateFailed { .. } => {
                if schedule(
                    &c.name,
                    restart_at(policy, &record, false),
                    now,
                    &mut start,
                    &mut wake_at,
                ) {
                    waiting = true;
                } else {
                    failed = true;
                }
            }
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
    // Sidecars: restarted while the app containers need them, stopped once the pod is done.
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
    {
        let record = get(&c.name);
        if phase.is_terminal() {
            if matches!(
                record.state,
                ContainerState::Running { .. } | ContainerState::Starting
            ) {
                stop.push(c.name.clone());
            }
        } else if matches!(record.state, ContainerState::ImagePullFailed { .. }) {
            schedule_pull(&c.name, &record, now, &mut start, &mut wake_at);
        } else if matches!(
            record.state,
            ContainerState::Exited { .. } | ContainerState::CreateFailed { .. }
        ) {
            schedule(
                &c.name,
                restart_at("Always", &record, false),
                now,
                &mut start,
                &mut wake_at,
            );
        }
    }
    Plan {
        start,
        stop,
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
            ..Default::default()
        }
    }

    fn running(t0: Instant) -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::Running { since: t0 },
            started: true,
            ..Default::default()
        }
    }

    fn pull_failed(at: Instant, failures: u32) -> ContainerRecord {
        ContainerRecord {
            state: ContainerState::ImagePullFailed { at, restart: 0 },
            pull_failures: failures,
            ..Default::default()
        }
    }

    #[test]
    fn failed_pulls_retry_with_backoff_whatever_the_restart_policy() {
        let t0 = Instant::now();
        for policy in ["Never", "OnFailure", "Always"] {
            let spec = spec(policy, &[], &["app"]);
            let records = BTreeMap::from([("app".to_string(), pull_failed(t0, 2))]);
            // Pending, not Failed: first a wake-up when ErrImagePull turns to back-off...
            let p = plan(&spec, &records, t0);
            assert_eq!(p.phase, Phase::Pending, "{policy}");
            assert!(p.start.is_empty());
            assert_eq!(p.wake_at, Some(t0 + ERR_IMAGE_PULL_SHOWN));
            // ...then the retry, 20 s after the second failure.
            let p = plan(&spec, &records, t0 + Duration::from_secs(5));
            assert_eq!(p.wake_at, Some(t0 + Duration::from_secs(20)));
            let p = plan(&spec, &records, t0 + Duration::from_secs(20));
            assert_eq!(p.start, vec!["app".to_string()], "{policy}");
        }
        // An init container waits the same way, holding back the app containers.
        let spec = spec("Never", &["init"], &["app"]);
        let records = BTreeMap::from([("init".to_string(), pull_failed(t0, 1))]);
        let p = plan(&spec, &records, t0 + Duration::from_secs(10));
        assert_eq!(
            (p.phase, p.start),
            (Phase::Pending, vec!["init".to_string()])
        );
        assert!(!in_pull_backoff(&pull_failed(t0, 1), t0));
        assert!(in_pull_backoff(
            &pull_failed(t0, 1),
            t0 + ERR_IMAGE_PULL_SHOWN
        ));
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

    fn with_sidecar(policy: &str, app: &[&str]) -> PodSpec {
        let apps: Vec<_> = app
            .iter()
            .map(|n| json!({"name": n, "image": "x"}))
            .collect();
        serde_json::from_value(json!({
            "restartPolicy": policy,
            "initContainers": [
                {"name": "init", "image": "x"},
                {"name": "side", "image": "x", "restartPolicy": "Always"},
                {"name": "after", "image": "x"}
            ],
            "containers": apps,
        }))
        .expect("spec")
    }

    #[test]
    fn sidecars() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let spec = with_sidecar("Never", &["a"]);
        let rec = |pairs: Vec<(&str, ContainerRecord)>| -> BTreeMap<String, ContainerRecord> {
            pairs.into_iter().map(|(n, r)| (n.to_string(), r)).collect()
        };
        // The sidecar starts after the first init container completed...
        let p = plan(&spec, &rec(vec![("init", exited(0, t0, 1, 0))]), at(1));
        assert_eq!(p.start, vec!["side".to_string()]);
        // ...and the next init container starts once the sidecar runs, without waiting for it.
        let p = plan(
            &spec,
            &rec(vec![("init", exited(0, t0, 1, 0)), ("side", running(t0))]),
            at(1),
        );
        assert_eq!(p.start, vec!["after".to_string()]);
        // ...but only once its startup probe passed.
        let unstarted = ContainerRecord {
            started: false,
            ..running(t0)
        };
        let p = plan(
            &spec,
            &rec(vec![("init", exited(0, t0, 1, 0)), ("side", unstarted)]),
            at(1),
        );
        assert!(p.start.is_empty());
        // A crashed sidecar is restarted even under restartPolicy Never.
        let records = rec(vec![
            ("init", exited(0, t0, 1, 0)),
            ("side", exited(1, t0, 1, 0)),
            ("after", exited(0, t0, 1, 0)),
            ("a", running(t0)),
        ]);
        let p = plan(&spec, &records, at(2));
        assert_eq!(p.start, vec!["side".to_string()]);
        assert_eq!(p.phase, Phase::Running);
        // It does not block completion: the app container is done, so the sidecar is stopped.
        let records = rec(vec![
            ("init", exited(0, t0, 1, 0)),
            ("side", running(t0)),
            ("after", exited(0, t0, 1, 0)),
            ("a", exited(0, t0, 3, 0)),
        ]);
        let p = plan(&spec, &records, at(4));
        assert_eq!(p.phase, Phase::Succeeded);
        assert_eq!(p.stop, vec!["side".to_string()]);
        assert!(p.start.is_empty());
    }
}
