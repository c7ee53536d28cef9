//! The node controller: runs a pod worker for every pod the store assigns to this node,
//! writes each worker's status back to the pod's status, records the kubelet's events, and
//! finishes graceful deletion (a pod with `deletionTimestamp` is stopped, then removed).

use crate::context::PodContext;
use crate::logs::RunningInstances;
use crate::worker::{Node, PodEvent, PodWorker};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use peapod_api::store::{EventKind, Filter, ListOptions, ObjectKey, Store, StoreError};
use peapod_net::HostPortHold;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

/// A pod event with the pod it concerns (`namespace/name`) and its uid.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    pub pod: String,
    pub uid: String,
    pub event: PodEvent,
}

/// The controller's handle: its event feed (for `peapod run`'s log streaming).
#[derive(Debug, Clone)]
pub struct NodeController {
    pub events: broadcast::Sender<NodeEvent>,
    pub running: RunningInstances,
}

/// The node's pods by uid: those with a worker, and those that wait for their
/// PersistentVolumeClaims to be Bound (with the last reason told).
#[derive(Default)]
struct Pods {
    running: HashMap<String, Running>,
    waiting: HashMap<String, (ObjectKey, String)>,
}

struct Running {
    worker: PodWorker,
    key: ObjectKey,
    pod: Pod,
    deleting: bool,
}

fn pod_key(o: &Value) -> ObjectKey {
    ObjectKey {
        resource: "pods".into(),
        namespace: o["metadata"]["namespace"].as_str().map(str::to_string),
        name: o["metadata"]["name"].as_str().unwrap_or("").to_string(),
    }
}

impl NodeController {
    pub fn new() -> NodeController {
        let (events, _) = broadcast::channel(4096);
        NodeController {
            events,
            running: RunningInstances::default(),
        }
    }

    /// Runs until the store's watch ends.
    pub async fn run(self, store: Store, node: Node, node_name: String) {
        let selector = format!("spec.nodeName={node_name}");
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, PodEvent)>();
        let mut pods = Pods::default();
        let mut watch = match store.watch(
            "pods",
            None,
            0,
            Filter::parse(None, Some(&selector)).unwrap_or_default(),
        ) {
            Ok(w) => w,
            Err(error) => {
                warn!(%error, "cannot watch pods");
                return;
            }
        };
        // ConfigMaps and Secrets: a change reaches the volumes of the running pods that use them.
        let since = store.revision();
        let mut config_maps = store
            .watch("configmaps", None, since, Filter::default())
            .ok();
        let mut secrets = store.watch("secrets", None, since, Filter::default()).ok();
        // Claims: a pod waiting for its claims is tried again when one changes.
        let mut claims = store
            .watch("persistentvolumeclaims", None, since, Filter::default())
            .ok();
        loop {
            tokio::select! {
                Some(_) = next_event(&mut claims) => {
                    for (key, _) in pods.waiting.clone().into_values() {
                        if let Ok(Some(object)) = store.get(&key) {
                            self.on_pod(&store, &node, &tx, &mut pods, EventKind::Modified, object).await;
                        }
                    }
                }
                Some(event) = next_event(&mut config_maps) => self.on_config(&store, &pods.running, false, &event.object),
                Some(event) = next_event(&mut secrets) => self.on_config(&store, &pods.running, true, &event.object),
                event = watch.next() => {
                    let Some(event) = event else {
                        // Re-watch from now (the store ended a lagging watcher).
                        match store.watch("pods", None, 0, Filter::parse(None, Some(&selector)).unwrap_or_default()) {
                            Ok(w) => { watch = w; continue; }
                            Err(_) => return,
                        }
                    };
                    self.on_pod(&store, &node, &tx, &mut pods, event.kind, event.object).await;
                }
                Some((uid, event)) = rx.recv() => {
                    self.on_worker(&store, &mut pods.running, uid, event);
                }
            }
        }
    }

    fn on_config(
        &self,
        store: &Store,
        pods: &HashMap<String, Running>,
        secret: bool,
        object: &Value,
    ) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        for running in pods.values() {
            if running.deleting
                || running.key.namespace.as_deref() != Some(ns)
                || !crate::projected::uses(&running.pod, secret, name)
            {
                continue;
            }
            running.worker.refresh(
                list_typed(store, "configmaps", ns),
                list_typed(store, "secrets", ns),
            );
        }
    }

    async fn on_pod(
        &self,
        store: &Store,
        node: &Node,
        tx: &mpsc::UnboundedSender<(String, PodEvent)>,
        pods: &mut Pods,
        kind: EventKind,
        object: Value,
    ) {
        let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let deleting = kind == EventKind::Deleted
            || object["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|d| !d.is_null());
        if deleting {
            pods.waiting.remove(&uid);
        }
        if let Some(running) = pods.running.get_mut(&uid) {
            if deleting && !running.deleting {
                info!(pod = %running.key.name, "deleting pod");
                running.deleting = true;
                running
                    .worker
                    .delete_with_grace(object["metadata"]["deletionGracePeriodSeconds"].as_i64());
            }
            return;
        }
        if deleting {
            if kind != EventKind::Deleted {
                let _ = store.delete(&pod_key(&object), None);
            }
            return;
        }
        let phase = object["status"]["phase"].as_str().unwrap_or("Pending");
        // A finished pod is not run again; but one whose sandbox an earlier daemon left is
        // adopted (its containers all exited, nothing restarts), so that deleting it removes
        // the sandbox, its mounts and its network.
        if (phase == "Succeeded" || phase == "Failed") && !crate::worker::sandbox_left(node, &uid) {
            return;
        }
        let pod: Pod = match serde_json::from_value(object.clone()) {
            Ok(p) => p,
            Err(error) => {
                warn!(%error, "pod does not decode");
                return;
            }
        };
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let config_maps: Vec<ConfigMap> = list_typed(store, "configmaps", &ns);
        let secrets: Vec<Secret> = list_typed(store, "secrets", &ns);
        let key = pod_key(&object);
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let claims = match crate::volumes::claim_paths(store, &ns, &volumes) {
            Ok(c) => c,
            Err(message) => {
                // As the scheduler would: the pod stays Pending until its claims are Bound.
                let told = pods.waiting.get(&uid).is_some_and(|(_, m)| *m == message);
                if !told {
                    info!(pod = %key.name, %message, "pod waits for its volume claims");
                    let event = PodEvent::Event {
                        reason: "FailedScheduling",
                        message: format!("0/1 nodes are available: {message}"),
                    };
                    record_event(store, &key, &uid, &event);
                }
                pods.waiting.insert(uid, (key, message));
                return;
            }
        };
        pods.waiting.remove(&uid);
        let host_ports = match bind_host_ports(&pod).await {
            Ok(l) => l,
            Err(message) => {
                warn!(pod = %key.name, %message, "host ports taken");
                let event = PodEvent::Event { reason: "FailedScheduling", message: format!("0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports: {message}") };
                record_event(store, &key, &uid, &event);
                let pod_name =
                    format!("{}/{}", key.namespace.clone().unwrap_or_default(), key.name);
                let _ = self.events.send(NodeEvent {
                    pod: pod_name,
                    uid,
                    event,
                });
                return;
            }
        };
        let mut ctx = PodContext::new(pod, config_maps, secrets);
        ctx.claims = claims;
        let forward = tx.clone();
        let uid_for_events = uid.clone();
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((_, e)) = events_rx.recv().await {
                if forward.send((uid_for_events.clone(), e)).is_err() {
                    return;
                }
            }
        });
        let pod_copy = ctx.pod.clone();
        let worker = PodWorker::spawn(node.clone(), ctx, host_ports, events_tx);
        spawn_status_writer(
            store.clone(),
            key.clone(),
            uid.clone(),
            worker.status.clone(),
        );
        pods.running.insert(
            uid,
            Running {
                worker,
                key,
                pod: pod_copy,
                deleting: false,
            },
        );
    }

    fn on_worker(
        &self,
        store: &Store,
        pods: &mut HashMap<String, Running>,
        uid: String,
        event: PodEvent,
    ) {
        let Some(running) = pods.get(&uid) else {
            return;
        };
        let key = running.key.clone();
        match &event {
            PodEvent::ContainerStarted {
                container,
                restart,
                dir,
                ..
            } => self.running.started(&uid, container, *restart, dir),
            PodEvent::ContainerExited {
                container, restart, ..
            } => self.running.exited(&uid, container, *restart),
            PodEvent::Deleted => {
                let asked = pods.remove(&uid).is_some_and(|r| r.deleting);
                // A worker that ended on its own (its sandbox failed) leaves the pod in place,
                // with its events, as the kubelet leaves a pod it cannot run.
                if !asked {
                    record_event(store, &key, &uid, &event);
                    return;
                }
                if let Ok(Some(o)) = store.get(&key) {
                    if o["metadata"]["uid"].as_str() == Some(uid.as_str()) {
                        let _ = store.delete(&key, None);
                    }
                }
            }
            _ => {}
        }
        record_event(store, &key, &uid, &event);
        let pod = format!("{}/{}", key.namespace.clone().unwrap_or_default(), key.name);
        let _ = self.events.send(NodeEvent { pod, uid, event });
    }
}

impl Default for NodeController {
    fn default() -> Self {
        NodeController::new()
    }
}

/// The next event of an optional watch; pending forever without one (or once it ended).
async fn next_event(
    watch: &mut Option<peapod_api::store::Watch>,
) -> Option<peapod_api::store::WatchEvent> {
    match watch {
        Some(w) => match w.next().await {
            Some(e) => Some(e),
            None => {
                *watch = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Holds every hostPort of the pod before anything of it is created, so a port something else
/// has fails the pod up front. With the pod network each port is reserved and translated by
/// the kernel; without one, TCP ports are relayed by the daemon (UDP ones are not).
async fn bind_host_ports(pod: &Pod) -> Result<Vec<HostPortHold>, String> {
    let network = peapod_net::installed().is_some();
    let mut out = Vec::new();
    for port in peapod_net::hostport::host_ports(pod) {
        let hold = if network {
            HostPortHold::reserve(port)
        } else if port.protocol == peapod_net::service::rules::Protocol::Tcp {
            HostPortHold::listen(port).await
        } else {
            continue;
        };
        out.push(hold.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn list_typed<T: serde::de::DeserializeOwned>(store: &Store, resource: &str, ns: &str) -> Vec<T> {
    store
        .list(resource, Some(ns), &ListOptions::default())
        .map(|r| {
            r.items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Copies each new status of a worker into the pod object (same uid only).
fn spawn_status_writer(
    store: Store,
    key: ObjectKey,
    uid: String,
    mut status: tokio::sync::watch::Receiver<k8s_openapi::api::core::v1::PodStatus>,
) {
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let value = match serde_json::to_value(&*status.borrow_and_update()) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let result = store.update_with(&key, |o| {
                if o["metadata"]["uid"].as_str() != Some(uid.as_str()) {
                    return Err(StoreError::NotFound { key: key.clone() });
                }
                o["status"] = value.clone();
                Ok(())
            });
            if let Err(StoreError::NotFound { .. }) = result {
                return;
            }
        }
    });
}

/// The kubelet's events (<https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/>).
fn record_event(store: &Store, key: &ObjectKey, uid: &str, event: &PodEvent) {
    let (type_, reason, message, field) = match event {
        PodEvent::ContainerStarted { container, .. } => (
            "Normal",
            "Started",
            format!("Started container {container}"),
            Some(container),
        ),
        PodEvent::ContainerFailed { container, reason } => (
            "Warning",
            "Failed",
            format!("Error: {reason}"),
            Some(container),
        ),
        PodEvent::ContainerExited { .. } => return,
        PodEvent::Event { reason, message } => {
            let kind = if matches!(*reason, "Killing" | "Pulling" | "Pulled") {
                "Normal"
            } else {
                "Warning"
            };
            (kind, *reason, message.clone(), None)
        }
        PodEvent::SandboxFailed { reason } => {
            ("Warning", "FailedCreatePodSandBox", reason.clone(), None)
        }
        PodEvent::Phase(_)
        | PodEvent::ContainerReady { .. }
        | PodEvent::PodReady(_)
        | PodEvent::Deleted => return,
    };
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ns = key.namespace.clone().unwrap_or_else(|| "default".into());
    let name = format!(
        "{}.{:x}",
        key.name,
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    let mut involved =
        json!({"kind": "Pod", "namespace": ns, "name": key.name, "uid": uid, "apiVersion": "v1"});
    if let Some(c) = field {
        involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
    }
    let object = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "kubelet", "host": "peapod"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": "kubelet",
        "reportingInstance": "peapod",
    });
    let ekey = ObjectKey {
        resource: "events".into(),
        namespace: Some(ns),
        name,
    };
    let _ = store.create(&ekey, object);
}
