//! The pod's status as the kubelet reports it (pure): phase, conditions, and a status per
//! container with the kubelet's reasons
//! (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions>,
//! <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-states>).

use crate::plan::{is_sidecar, ContainerRecord, ContainerState, Phase};
use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;

/// What the status needs beyond the container records.
#[derive(Debug, Clone, Default)]
pub struct StatusInputs {
    pub phase: Option<Phase>,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<String>,
    pub qos_class: String,
    /// Condition type -> (status, last transition time, RFC 3339).
    pub conditions: BTreeMap<String, (bool, String)>,
    /// Back-off message per container name, when one is waiting it out: a restart's
    /// (`CrashLoopBackOff`) or an image pull's (`ImagePullBackOff`).
    pub backoff: BTreeMap<String, String>,
    /// The pod's own reason and message (`Evicted`, why).
    pub reason: Option<String>,
    pub message: Option<String>,
}

fn time(s: &str) -> Option<Time> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(Time)
}

fn terminated(
    e: &peapod_runtime::Exited,
    container_id: &Option<String>,
    message: Option<String>,
) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: Some(e.reason().to_string()),
        started_at: time(&e.started_at),
        finished_at: time(&e.finished_at),
        container_id: container_id.clone(),
        message,
    }
}

fn waiting(reason: &str, message: Option<String>) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

/// The status of one container from its record. `initializing`: the pod's init containers
/// have not finished (app containers then wait with `PodInitializing`).
pub fn container_status(
    c: &Container,
    record: Option<&ContainerRecord>,
    initializing: bool,
    backoff: Option<&String>,
) -> ContainerStatus {
    let default = ContainerRecord::default();
    let r = record.unwrap_or(&default);
    let d = &r.detail;
    let state = match &r.state {
        ContainerState::Waiting if initializing => waiting("PodInitializing", None),
        ContainerState::Waiting | ContainerState::Starting => waiting("ContainerCreating", None),
        ContainerState::Running { .. } => K8sState {
            running: Some(ContainerStateRunning {
                started_at: d.started_at.as_deref().and_then(time),
            }),
            ..Default::default()
        },
        ContainerState::ImagePullFailed { .. } => match backoff {
            Some(message) => waiting("ImagePullBackOff", Some(message.clone())),
            None => {
                let (reason, message) = d
                    .create_error
                    .clone()
                    .unwrap_or_else(|| ("ErrImagePull".into(), String::new()));
                waiting(&reason, Some(message))
            }
        },
        ContainerState::CreateFailed { .. } => {
            let (reason, message) = d
                .create_error
                .clone()
                .unwrap_or_else(|| ("CreateContainerError".into(), String::new()));
            waiting(&reason, Some(message))
        }
        ContainerState::Exited { .. } => match (backoff, &d.terminated) {
            (Some(message), _) => waiting("CrashLoopBackOff", Some(message.clone())),
            (None, Some(e)) => K8sState {
                terminated: Some(terminated(e, &d.container_id, d.terminated_message.clone())),
                ..Default::default()
            },
            (None, None) => waiting("ContainerCreating", None),
        },
    };
    let last_state = d.last_terminated.as_ref().map(|e| K8sState {
        terminated: Some(terminated(e, &d.last_container_id, None)),
        ..Default::default()
    });
    let running = matches!(r.state, ContainerState::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: d.image_id.clone().unwrap_or_default(),
        container_id: d.container_id.clone(),
        ready: running && r.ready,
        started: Some(running && r.started),
        restart_count: r.restart_count as i32,
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// Whether every regular init container finished and every sidecar started.
pub fn initialized(spec: &PodSpec, records: &BTreeMap<String, ContainerRecord>) -> bool {
    let app_started = spec.containers.iter().any(|c| {
        records
            .get(&c.name)
            .is_some_and(|r| r.state != ContainerState::Waiting)
    });
    app_started
        || spec.init_containers.iter().flatten().all(|c| {
            let state = records.get(&c.name).map(|r| &r.state);
            if is_sidecar(c) {
                matches!(state, Some(ContainerState::Running { .. }))
            } else {
                matches!(state, Some(ContainerState::Exited { exit_code: 0, .. }))
            }
        })
}

/// The whole pod status.
pub fn pod_status(
    spec: &PodSpec,
    records: &BTreeMap<String, ContainerRecord>,
    inputs: &StatusInputs,
) -> PodStatus {
    let initializing = !initialized(spec, records);
    let status_of = |c: &Container| {
        container_status(
            c,
            records.get(&c.name),
            initializing,
            inputs.backoff.get(&c.name),
        )
    };
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let mut s =
                container_status(c, records.get(&c.name), false, inputs.backoff.get(&c.name));
            if records.get(&c.name).is_none() {
                s.state = Some(waiting("PodInitializing", None));
            }
            s
        })
        .collect();
    let conditions: Vec<PodCondition> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .filter_map(|t| {
        inputs.conditions.get(*t).map(|(ok, at)| PodCondition {
            type_: t.to_string(),
            status: if *ok { "True" } else { "False" }.to_string(),
            last_transition_time: time(at),
            ..Default::default()
        })
    })
    .collect();
    PodStatus {
        phase: inputs.phase.map(|p| p.as_str().to_string()),
        conditions: Some(conditions),
        container_statuses: Some(spec.containers.iter().map(status_of).collect()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: Some(inputs.host_ip.clone()),
        pod_ip: inputs.pod_ip.clone(),
        pod_ips: inputs.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: inputs.start_time.as_deref().and_then(time),
        qos_class: Some(inputs.qos_class.clone()),
        reason: inputs.reason.clone(),
        message: inputs.message.clone(),
        ..Default::default()
    }
}

/// The value of each pod condition now (the caller keeps transition times).
pub fn condition_values(
    spec: &PodSpec,
    records: &BTreeMap<String, ContainerRecord>,
    sandbox_ready: bool,
) -> Vec<(&'static str, bool)> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    let containers_ready = spec.containers.iter().chain(sidecars).all(|c| {
        records
            .get(&c.name)
            .is_some_and(|r| r.ready && matches!(r.state, ContainerState::Running { .. }))
    });
    vec![
        ("PodScheduled", true),
        ("PodReadyToStartContainers", sandbox_ready),
        ("Initialized", initialized(spec, records)),
        ("ContainersReady", containers_ready),
        ("Ready", containers_ready),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ContainerDetail;
    use serde_json::json;
    use std::time::Instant;

    fn spec() -> PodSpec {
        serde_json::from_value(json!({
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "busybox"}]
        }))
        .expect("spec")
    }

    fn exited(code: i32) -> peapod_runtime::Exited {
        peapod_runtime::Exited {
            exit_code: code,
            signal: None,
            oom_killed: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
        }
    }

    #[test]
    fn failed_pulls_show_err_image_pull_then_back_off() {
        let c: Container =
            serde_json::from_value(serde_json::json!({"name": "app", "image": "r/x:1"}))
                .expect("container");
        let record = ContainerRecord {
            state: ContainerState::ImagePullFailed {
                at: Instant::now(),
                restart: 0,
            },
            detail: ContainerDetail {
                create_error: Some(("ErrImagePull".into(), "r/x:1: manifest unknown".into())),
                ..Default::default()
            },
            ..Default::default()
        };
        let waiting = |backoff: Option<&String>| {
            let s = container_status(&c, Some(&record), false, backoff);
            let w = s.state.and_then(|s| s.waiting).expect("waiting");
            (w.reason.unwrap_or_default(), w.message.unwrap_or_default())
        };
        assert_eq!(
            waiting(None),
            ("ErrImagePull".into(), "r/x:1: manifest unknown".into())
        );
        let message = "Back-off pulling image \"r/x:1\": ErrImagePull: r/x:1: manifest unknown";
        assert_eq!(
            waiting(Some(&message.to_string())),
            ("ImagePullBackOff".into(), message.into())
        );
    }

    #[test]
    fn waiting_reasons_follow_the_kubelet() {
        let spec = spec();
        let mut records = BTreeMap::new();
        let s = pod_status(&spec, &records, &StatusInputs::default());
        let app = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(
            app.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("PodInitializing")
        );
        let t0 = Instant::now();
        records.insert(
            "init".into(),
            ContainerRecord {
                state: ContainerState::Exited {
                    exit_code: 0,
                    started: t0,
                    finished: t0,
                },
                detail: ContainerDetail {
                    terminated: Some(exited(0)),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let s = pod_status(&spec, &records, &StatusInputs::default());
        let init = &s.init_container_statuses.as_ref().expect("init statuses")[0];
        let term = init
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!(term.reason.as_deref(), Some("Completed"));
        let app = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(
            app.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("ContainerCreating")
        );
    }

    #[test]
    fn crash_loop_and_last_state() {
        let spec = spec();
        let t0 = Instant::now();
        let mut records = BTreeMap::new();
        records.insert(
            "app".to_string(),
            ContainerRecord {
                state: ContainerState::Exited {
                    exit_code: 1,
                    started: t0,
                    finished: t0,
                },
                restart_count: 2,
                detail: ContainerDetail {
                    terminated: Some(exited(1)),
                    last_terminated: Some(exited(1)),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let mut inputs = StatusInputs::default();
        inputs.backoff.insert(
            "app".into(),
            "back-off 20s restarting failed container=app".into(),
        );
        let s = pod_status(&spec, &records, &inputs);
        let app = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(app.restart_count, 2);
        let w = app
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = app
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("last");
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert!(!app.ready);
    }

    #[test]
    fn conditions() {
        let spec = spec();
        let values = condition_values(&spec, &BTreeMap::new(), true);
        assert!(values.contains(&("Initialized", false)));
        assert!(values.contains(&("Ready", false)));
        assert!(values.contains(&("PodReadyToStartContainers", true)));
    }
}
