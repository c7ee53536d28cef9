//! Stopping containers the way the kubelet does: the preStop hook, then the stop signal (the
//! image's STOPSIGNAL, else SIGTERM), then SIGKILL when the grace period is over
//! (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination>).
//! On pod deletion app containers go first and native sidecars after them.

use crate::instance::{find, run_hook};
use crate::plan::{is_sidecar, ContainerState};
use crate::worker::{Instance, Msg, PodState};
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::info;

/// Stops one running instance: preStop within the grace period, the stop signal, SIGKILL at
/// the deadline. Returns at once; the exit arrives as a message.
pub(crate) fn stop_instance(ctx: &crate::PodContext, name: &str, inst: &Instance, grace: Duration) {
    let Some(pid) = inst.pid else { return };
    let hook = find(ctx, name)
        .and_then(|c| c.lifecycle.as_ref())
        .and_then(|l| l.pre_stop.clone());
    let target = inst.target.clone();
    let stop_signal = inst.stop_signal;
    let name = name.to_string();
    tokio::spawn(async move {
        let mut deadline = Instant::now() + grace;
        if let (Some(hook), Some(target)) = (hook, target) {
            info!(container = %name, "running preStop hook");
            if let Err(message) = run_hook(&hook, &target, grace).await {
                info!(container = %name, %message, "preStop hook failed");
            }
            // A hook that used up the grace period gets the kubelet's one-off 2 s extension.
            if Instant::now() >= deadline {
                deadline = Instant::now() + Duration::from_secs(2);
            }
        }
        info!(container = %name, signal = %stop_signal, "killing container");
        let _ = peapod_sys::process::kill(pid, stop_signal);
        tokio::time::sleep_until(deadline).await;
        if peapod_sys::process::alive(pid) {
            info!(container = %name, "grace period over, SIGKILL");
            let _ = peapod_sys::process::kill(pid, Signal::SIGKILL);
        }
    });
}

/// Deletes the pod's containers: app containers (and regular init containers still running)
/// first, sidecars once those are gone, everything killed at the pod's grace deadline.
pub(crate) async fn terminate(
    pod: &mut PodState<'_>,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    grace_seconds: Option<i64>,
) {
    let spec = pod.spec.clone();
    // The deletion's own grace period wins over the pod's (`kubectl delete --grace-period`).
    let grace_seconds = grace_seconds
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(30);
    let grace = Duration::from_secs(grace_seconds.max(0) as u64);
    let deadline = Instant::now() + grace;
    let sidecars: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .map(|c| c.name.clone())
        .collect();
    let alive = |pod: &PodState, sidecar: bool| {
        pod.records.iter().any(|(name, r)| {
            sidecars.contains(name) == sidecar
                && matches!(
                    r.state,
                    ContainerState::Starting | ContainerState::Running { .. }
                )
        })
    };
    let mut stopped: Vec<(String, Option<i32>)> = Vec::new();
    let stop_group = |pod: &PodState, sidecar: bool, stopped: &mut Vec<(String, Option<i32>)>| {
        let remaining = deadline.saturating_duration_since(Instant::now());
        for (name, inst) in pod
            .current
            .iter()
            .filter(|(n, _)| sidecars.contains(n) == sidecar)
        {
            let key = (name.clone(), inst.pid);
            if inst.pid.is_some() && !stopped.contains(&key) && !pod.stopping.contains(name) {
                (pod.emit)(crate::worker::PodEvent::Event {
                    reason: "Killing",
                    message: format!("Stopping container {name}"),
                });
                stop_instance(&pod.ctx, name, inst, remaining);
                stopped.push(key);
            }
        }
    };
    info!(grace_seconds = grace.as_secs(), "stopping containers");
    pod.deleting = true;
    stop_group(pod, false, &mut stopped);
    let mut sidecars_stopping = false;
    let mut killed_all = false;
    while alive(pod, false) || alive(pod, true) {
        if !alive(pod, false) && !sidecars_stopping {
            sidecars_stopping = true;
            stop_group(pod, true, &mut stopped);
        }
        tokio::select! {
            Some(msg) = rx.recv() => {
                pod.handle(msg);
                // A container that was still starting is stopped as soon as it runs.
                stop_group(pod, false, &mut stopped);
                if sidecars_stopping {
                    stop_group(pod, true, &mut stopped);
                }
            }
            _ = tokio::time::sleep_until(deadline + Duration::from_secs(1)), if !killed_all => {
                // stop_instance kills at the deadline; this only guards against a lost exit.
                killed_all = true;
                for inst in pod.current.values() {
                    if let Some(pid) = inst.pid {
                        let _ = peapod_sys::process::kill(pid, Signal::SIGKILL);
                    }
                }
            }
        }
    }
}
