//! The node controller: runs a pod worker for every pod the store assigns to this node,
//! writes each worker's status back to the pod's status, records the kubelet's events, and
//! finishes graceful deletion (a pod with `deletionTimestamp` is stopped, then removed).

use crate::context::PodContext;
use crate::logs::RunningInstances;
use crate::worker::{Node, PodEvent, PodWorker};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use peapod_api::store::{
    EventKind, Filter, ListOptions, ObjectKey, Store, StoreError, Watch, WatchEvent,
};
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
        let mut watch = Resumable::new(
            &store,
            "pods",
            0,
            Filter::parse(None, Some(&selector)).unwrap_or_default(),
        );
        // ConfigMaps and Secrets: a change reaches the volumes of the running pods that use them.
        let since = store.revision();
        let mut config_maps = Resumable::new(&store, "configmaps", since, Filter::default());
        let mut secrets = Resumable::new(&store, "secrets", since, Filter::default());
        // Claims: a pod waiting for its claims is tried again when one changes.
        let mut claims = Resumable::new(&store, "persistentvolumeclaims", since, Filter::default());
        loop {
            tokio::select! {
                _ = claims.next(&store) => {
                    for (key, _) in pods.waiting.clone().into_values() {
                        if let Ok(Some(object)) = store.get(&key) {
                            self.on_pod(&store, &node, &tx, &mut pods, EventKind::Modified, object).await;
                        }
                    }
                }
                next = config_maps.next(&store) => match next {
                    Next::Event(event) => self.on_config(&store, &pods.running, false, &event.object),
                    Next::StartedOver => self.refresh_all(&store, &pods.running),
                },
                next = secrets.next(&store) => match next {
                    Next::Event(event) => self.on_config(&store, &pods.running, true, &event.object),
                    Next::StartedOver => self.refresh_all(&store, &pods.running),
                },
                next = watch.next(&store) => match next {
                    Next::Event(event) => {
                        self.on_pod(&store, &node, &tx, &mut pods, event.kind, event.object).await;
                    }
                    // Every current pod comes again as ADDED; one deleted meanwhile does not.
                    Next::StartedOver => {
                        let gone: Vec<Value> = pods
                            .running
                            .iter()
                            .filter(|(_, r)| matches!(store.get(&r.key), Ok(None)))
                            .map(|(uid, r)| json!({"metadata": {"uid": uid, "name": r.key.name}}))
                            .collect();
                        for object in gone {
                            self.on_pod(&store, &node, &tx, &mut pods, EventKind::Deleted, object).await;
                        }
                    }
                },
                Some((uid, event)) = rx.recv() => {
                    self.on_worker(&store, &mut pods.running, uid, event);
                }
            }
        }
    }

    /// After a ConfigMap or Secret watch started over: every running pod reads its volumes'
    /// sources again (a change may have been missed).
    fn refresh_all(&self, store: &Store, pods: &HashMap<String, Running>) {
        for running in pods.values().filter(|r| !r.deleting) {
            let ns = running.key.namespace.as_deref().unwrap_or("default");
            running.worker.refresh(
                list_typed(store, "configmaps", ns),
                list_typed(store, "secrets", ns),
            );
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

/// What a [`Resumable`] watch yields.
#[derive(Debug)]
pub(crate) enum Next {
    Event(WatchEvent),
    /// The watch started over from now (the revision log no longer reached back to where it
    /// was): current objects follow as ADDED, and a change meanwhile may have been missed.
    StartedOver,
}

/// A store watch that outlives the store ending it. The store ends a watcher that falls behind
/// rather than buffer without bound; this one resumes from the last revision it was sent, so no
/// change is missed (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>:
/// a client re-watches from its last resourceVersion). When the log was compacted past it,
/// the watch starts over from now and says so ([`Next::StartedOver`]), as a reflector re-lists
/// after 410 Gone. A watch the store refuses is tried again a second later: the node controller
/// never stops over it.
pub(crate) struct Resumable {
    resource: &'static str,
    filter: Filter,
    watch: Option<Watch>,
    /// Every change up to this revision was delivered (0: start from now).
    revision: u64,
}

impl Resumable {
    pub(crate) fn new(store: &Store, resource: &'static str, since: u64, filter: Filter) -> Self {
        let watch = store.watch(resource, None, since, filter.clone()).ok();
        Resumable {
            resource,
            filter,
            watch,
            revision: since,
        }
    }

    /// The next event. Cancel-safe (a dropped call loses nothing, as `Watch::next`).
    pub(crate) async fn next(&mut self, store: &Store) -> Next {
        loop {
            if let Some(watch) = self.watch.as_mut() {
                let event = watch.next().await;
                self.revision = watch.revision();
                match event {
                    Some(event) => return Next::Event(event),
                    None => self.watch = None,
                }
            }
            match store.watch(self.resource, None, self.revision, self.filter.clone()) {
                Ok(watch) => self.watch = Some(watch),
                Err(StoreError::Gone { .. }) => {
                    warn!(
                        resource = self.resource,
                        "watch compacted past; starting over"
                    );
                    self.revision = 0;
                    if let Ok(watch) = store.watch(self.resource, None, 0, self.filter.clone()) {
                        self.watch = Some(watch);
                        return Next::StartedOver;
                    }
                }
                Err(error) => {
                    warn!(resource = self.resource, %error, "cannot watch; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use peapod_api::store::StoreOptions;

    fn store() -> Store {
        let options = StoreOptions {
            watch_capacity: 2,
            ..StoreOptions::default()
        };
        Store::open_in_memory(options).expect("store")
    }

    fn create(store: &Store, name: &str) {
        let key = ObjectKey {
            resource: "configmaps".into(),
            namespace: Some("default".into()),
            name: name.into(),
        };
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
        store.create(&key, cm).expect("create");
    }

    fn name(next: Next) -> String {
        match next {
            Next::Event(e) => e.object["metadata"]["name"].as_str().unwrap_or("").into(),
            Next::StartedOver => "<started over>".into(),
        }
    }

    /// A watcher that falls behind is ended by the store (capacity 2 here); the resumable
    /// watch picks up from its last revision and misses nothing.
    #[tokio::test]
    async fn a_lagging_watch_resumes_without_a_gap() {
        let store = store();
        let mut watch = Resumable::new(&store, "configmaps", store.revision(), Filter::default());
        create(&store, "c0");
        assert_eq!(name(watch.next(&store).await), "c0");
        for i in 1..10 {
            create(&store, &format!("c{i}"));
        }
        let mut got = Vec::new();
        for _ in 1..10 {
            got.push(name(watch.next(&store).await));
        }
        let want: Vec<String> = (1..10).map(|i| format!("c{i}")).collect();
        assert_eq!(got, want);
    }

    /// When the revision log no longer reaches back, the watch starts over from now: it says
    /// so, then brings every current object.
    #[tokio::test]
    async fn a_watch_compacted_past_starts_over() {
        let store = store();
        let mut watch = Resumable::new(&store, "configmaps", store.revision(), Filter::default());
        for i in 0..6 {
            create(&store, &format!("c{i}"));
        }
        store.compact(store.revision()).expect("compact");
        let mut got = vec![name(watch.next(&store).await)];
        while got.len() < 7 {
            got.push(name(watch.next(&store).await));
        }
        // What the first stream had buffered before it lagged, then the start-over with all six.
        let over = got
            .iter()
            .position(|n| n == "<started over>")
            .unwrap_or_else(|| panic!("{got:?}"));
        let mut after: Vec<String> = got[over + 1..].to_vec();
        while after.len() < 6 {
            after.push(name(watch.next(&store).await));
        }
        after.sort();
        let want: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
        assert_eq!(after, want, "{got:?}");
    }
}
