//! The Service controller: watches Services, Pods and Endpoints in the store and, on every
//! change (a short burst is one change), does the whole job again, level-triggered:
//! ClusterIPs and node ports for new Services, the Endpoints and EndpointSlices of every Service
//! with a selector,
//! the proxy's nftables table, and the DNS records. The endpoints controller, kube-proxy and
//! CoreDNS of a cluster, in one loop.

use super::{alloc, endpoints, rules};
use crate::dns::Records;
use crate::network::PodNetwork;
use crate::nft;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use peapod_api::store::{EventKind, Filter, ListOptions, ObjectKey, Store, Watch, WatchEvent};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Events closer together than this are handled as one change.
const SETTLE: Duration = Duration::from_millis(20);
/// A stream of changes is still handled at least this often.
const MAX_DELAY: Duration = Duration::from_millis(250);

/// Runs until the store goes away. `records` receives the DNS records after every change.
pub async fn run(store: Store, network: PodNetwork, records: watch::Sender<Arc<Records>>) {
    let mut applied: Option<String> = None;
    loop {
        let mut watches = match open_watches(&store) {
            Ok(w) => w,
            Err(error) => {
                warn!(%error, "cannot watch services, pods and endpoints");
                return;
            }
        };
        reconcile(&store, &network, &records, &mut applied).await;
        'events: loop {
            let Some(first) = next(&mut watches).await else {
                break 'events;
            };
            on_event(&store, &first);
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(SETTLE, next(&mut watches)).await {
                    Ok(Some(event)) => on_event(&store, &event),
                    Ok(None) => break 'events,
                    Err(_) => break,
                }
            }
            reconcile(&store, &network, &records, &mut applied).await;
        }
        // A watch ended (this loop fell behind): watch again from a fresh list.
    }
}

fn open_watches(store: &Store) -> Result<[Watch; 3], peapod_api::store::StoreError> {
    let since = store.revision();
    Ok([
        store.watch("services", None, since, Filter::default())?,
        store.watch("pods", None, since, Filter::default())?,
        store.watch("endpoints", None, since, Filter::default())?,
    ])
}

/// The next event of any watch (the Services' first); `None` when one ended.
async fn next(w: &mut [Watch; 3]) -> Option<WatchEvent> {
    let [services, pods, endpoints] = w;
    tokio::select! {
        biased;
        e = services.next() => e,
        e = pods.next() => e,
        e = endpoints.next() => e,
    }
}

/// A deleted Service takes its Endpoints along, as with the endpoints controller.
fn on_event(store: &Store, event: &WatchEvent) {
    if event.kind != EventKind::Deleted || event.object["kind"] != "Service" {
        return;
    }
    let meta = &event.object["metadata"];
    let key = endpoints_key(
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or(""),
    );
    let _ = store.delete(&key, None);
}

fn endpoints_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: "endpoints".into(),
        namespace: Some(ns.to_string()),
        name: name.to_string(),
    }
}

fn list_raw(store: &Store, resource: &str) -> Vec<Value> {
    store
        .list(resource, None, &ListOptions::default())
        .map(|r| r.items)
        .unwrap_or_default()
}

fn list<T: serde::de::DeserializeOwned>(store: &Store, resource: &str) -> Vec<T> {
    list_raw(store, resource)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

async fn reconcile(
    store: &Store,
    network: &PodNetwork,
    records: &watch::Sender<Arc<Records>>,
    applied: &mut Option<String>,
) {
    let c = network.config();
    let mut services: Vec<Service> = list(store, "services");
    if allocate(store, network, &services) {
        services = list(store, "services");
    }
    let pods: Vec<Pod> = list(store, "pods");
    sync_endpoints(store, &services, &pods);
    sync_slices(store, &services, &pods);
    let eps: Vec<Endpoints> = list(store, "endpoints");
    let ruleset = nft::ruleset(c, &rules::service_rules(&services, &eps));
    if applied.as_deref() != Some(ruleset.as_str()) {
        match network.apply_ruleset(ruleset.clone()).await {
            Ok(()) => {
                debug!(table = %c.table, "service rules applied");
                *applied = Some(ruleset);
            }
            Err(error) => warn!(%error, "apply service rules"),
        }
    }
    let new = Records::build(&c.cluster_domain, &services, &eps);
    records.send_if_modified(|current| {
        let changed = **current != new;
        if changed {
            *current = Arc::new(new);
        }
        changed
    });
}

/// Fills in missing ClusterIPs and node ports; whether anything was written.
fn allocate(store: &Store, network: &PodNetwork, services: &[Service]) -> bool {
    let c = network.config();
    let mut wrote = false;
    for (ns, name, result) in alloc::allocate(services, c.service_cidr, c.node_ports.clone()) {
        let allocation = match result {
            Ok(a) => a,
            Err(error) => {
                warn!(service = %name, namespace = %ns, %error, "no cluster IP or node port");
                continue;
            }
        };
        let key = ObjectKey {
            resource: "services".into(),
            namespace: Some(ns.clone()),
            name: name.clone(),
        };
        match store.update_with(&key, |o| {
            alloc::apply(o, &allocation);
            Ok(())
        }) {
            Ok(_) => {
                info!(service = %name, namespace = %ns, cluster_ip = ?allocation.cluster_ip, node_ports = ?allocation.node_ports, "service allocated");
                wrote = true;
            }
            Err(error) => debug!(service = %name, %error, "allocate service"),
        }
    }
    wrote
}

/// Writes the Endpoints of every Service with a selector; deletes the managed Endpoints whose
/// Service is gone or lost its selector.
fn sync_endpoints(store: &Store, services: &[Service], pods: &[Pod]) {
    let existing = list_raw(store, "endpoints");
    let find = |ns: &str, name: &str| {
        existing.iter().find(|e| {
            e["metadata"]["namespace"].as_str() == Some(ns)
                && e["metadata"]["name"].as_str() == Some(name)
        })
    };
    let mut wanted = Vec::new();
    for svc in services {
        let Some(subsets) = endpoints::subsets(svc, pods) else {
            continue;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        wanted.push((ns.to_string(), name.to_string()));
        let subsets = serde_json::to_value(&subsets).unwrap_or(Value::Null);
        let subsets = if subsets.as_array().is_some_and(|a| a.is_empty()) {
            Value::Null
        } else {
            subsets
        };
        let key = endpoints_key(ns, name);
        let (label, managed) = endpoints::MANAGED_BY;
        let result = match find(ns, name) {
            Some(current)
                if current.get("subsets").unwrap_or(&Value::Null) == &subsets
                    && current["metadata"]["labels"][label] == managed =>
            {
                continue
            }
            Some(_) => store.update_with(&key, |o| {
                o["metadata"]["labels"][label] = json!(managed);
                match o.as_object_mut() {
                    Some(m) if subsets.is_null() => {
                        m.remove("subsets");
                    }
                    _ => o["subsets"] = subsets.clone(),
                }
                Ok(())
            }),
            None => {
                let mut object = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "labels": {label: managed}}});
                if !subsets.is_null() {
                    object["subsets"] = subsets.clone();
                }
                store.create(&key, object)
            }
        };
        match result {
            Ok(_) => debug!(service = %name, namespace = %ns, "endpoints updated"),
            Err(error) => debug!(service = %name, %error, "write endpoints"),
        }
    }
    delete_unwanted(
        store,
        "endpoints",
        &existing,
        endpoints::MANAGED_BY,
        &wanted,
    );
}

const SLICES: &str = "endpointslices.discovery.k8s.io";

/// Writes the EndpointSlices of every Service with a selector (the same pods as its
/// Endpoints); deletes the managed slices no Service wants any more.
fn sync_slices(store: &Store, services: &[Service], pods: &[Pod]) {
    let existing = list_raw(store, SLICES);
    let mut wanted: Vec<(String, String)> = Vec::new();
    for svc in services {
        let Some(subsets) = endpoints::subsets(svc, pods) else {
            continue;
        };
        for slice in endpoints::slices(svc, &subsets) {
            let meta = &slice["metadata"];
            let ns = meta["namespace"].as_str().unwrap_or("default").to_string();
            let name = meta["name"].as_str().unwrap_or("").to_string();
            let key = ObjectKey {
                resource: SLICES.into(),
                namespace: Some(ns.clone()),
                name: name.clone(),
            };
            let current = existing.iter().find(|e| {
                e["metadata"]["namespace"].as_str() == Some(&ns)
                    && e["metadata"]["name"].as_str() == Some(&name)
            });
            let fields = ["endpoints", "ports", "addressType"];
            let result = match current {
                Some(c)
                    if fields.iter().all(|f| c.get(*f) == slice.get(*f))
                        && c["metadata"]["labels"] == slice["metadata"]["labels"] =>
                {
                    wanted.push((ns, name));
                    continue;
                }
                Some(_) => store.update_with(&key, |o| {
                    for f in fields {
                        o[f] = slice[f].clone();
                    }
                    o["metadata"]["labels"] = slice["metadata"]["labels"].clone();
                    o["metadata"]["ownerReferences"] = slice["metadata"]["ownerReferences"].clone();
                    Ok(())
                }),
                None => store.create(&key, slice.clone()),
            };
            match result {
                Ok(_) => debug!(slice = %name, namespace = %ns, "endpoint slice updated"),
                Err(error) => debug!(slice = %name, %error, "write endpoint slice"),
            }
            wanted.push((ns, name));
        }
    }
    delete_unwanted(
        store,
        SLICES,
        &existing,
        endpoints::SLICE_MANAGED_BY,
        &wanted,
    );
}

/// Deletes the objects of `existing` labelled `managed_by` whose (namespace, name) is not
/// `wanted`.
fn delete_unwanted(
    store: &Store,
    resource: &str,
    existing: &[Value],
    (label, managed): (&str, &str),
    wanted: &[(String, String)],
) {
    for e in existing {
        let meta = &e["metadata"];
        let (ns, name) = (
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
        );
        if meta["labels"][label] == managed && !wanted.iter().any(|(n, m)| n == ns && m == name) {
            let key = ObjectKey {
                resource: resource.into(),
                namespace: Some(ns.to_string()),
                name: name.to_string(),
            };
            let _ = store.delete(&key, None);
        }
    }
}
