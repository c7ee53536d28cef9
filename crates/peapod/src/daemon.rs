//! The daemon machinery shared by `peapod serve` and `peapod run`: the store, the API server
//! (TLS, client certificates), the node controller, the pod network with its Service
//! controller and cluster DNS, and the objects every cluster has.

use anyhow::Context;
use peapod_api::http::{router, serve::serve, ApiState};
use peapod_api::pki::Pki;
use peapod_api::store::{ListOptions, ObjectKey, Store, StoreError, StoreOptions};
use peapod_kubelet::controller::NodeController;
use peapod_kubelet::logs::NodeLogs;
use peapod_kubelet::monitor_pool::MonitorPool;
use peapod_kubelet::{Node, NodeConfig};
use peapod_net::dns::{DnsServer, Records};
use peapod_net::{NetworkConfig, PodNetwork};
use peapod_runtime::image::gc::{layers_in_use, GcThresholds};
use peapod_runtime::image::ImageStore;
use peapod_runtime::Runtime;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A running daemon.
pub struct Daemon {
    pub api: Arc<ApiState>,
    pub controller: NodeController,
    pub address: SocketAddr,
    pub kubeconfig: PathBuf,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
    shutdown: watch::Sender<bool>,
    network: Option<(PodNetwork, Vec<JoinHandle<()>>)>,
}

/// Where a daemon keeps its API objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objects {
    /// In `state.redb` in the state directory, every write durable (`peapod serve`).
    OnDisk,
    /// In memory: they end with the process, as `peapod run`'s do (no fsync on the pod start
    /// path; its containers' own records stay on disk).
    InMemory,
}

impl Daemon {
    /// Opens everything under `root` and starts serving on `listen`. The kubeconfig (and the
    /// object store when it is on disk) live in `state_dir` (the root itself for `serve`, a
    /// directory of its own for each `peapod run`).
    pub async fn start(
        root: &Path,
        state_dir: &Path,
        listen: SocketAddr,
        objects: Objects,
        monitors: Arc<MonitorPool>,
    ) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("create {}", state_dir.display()))?;
        // The certificates and the TLS configuration on a thread of their own at the lowest
        // priority: parsing and checking keys is a millisecond of CPU that only the API needs,
        // and the pods' start competes for the same cores (`Daemon::serving` waits for it).
        let pki_dir = root.join("pki");
        let (tls_tx, tls_setup) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("pki".into())
            .spawn(move || {
                let _ = peapod_sys::process::set_idle_scheduling(true);
                let loaded = Pki::load_or_create(&pki_dir, &[])
                    .context("load or create the certificates")
                    .and_then(|pki| {
                        let tls = pki.server_config().context("build the TLS configuration")?;
                        anyhow::Ok((pki, tls))
                    });
                let _ = tls_tx.send(loaded);
            })
            .context("start the certificates thread")?;
        // The store first: on disk it is also the lock that keeps a second daemon off this
        // root (and off its network's table).
        let store = StoreOptions::from_env()
            .and_then(|options| match objects {
                Objects::OnDisk => Store::open_with(&state_dir.join("state.redb"), options),
                Objects::InMemory => Store::open_in_memory(options),
            })
            .with_context(|| format!("open the object store in {}", state_dir.display()))?;
        // The pod network (bridge, nftables table, addresses of vanished pods) is set up while
        // the default objects are written and the rest is opened: kernel work on one core.
        let network_setup = tokio::spawn(set_up_network(root.to_path_buf()));
        let opened = async {
            let node_name = node_name();
            // The default objects are written (one transaction) on a thread of their own while
            // the listener and the image store are opened.
            let bootstrapped = {
                let (store, node_name) = (store.clone(), node_name.clone());
                tokio::task::spawn_blocking(move || {
                    bootstrap(&store, &node_name).context(
                        "create the default namespaces, the node and the default StorageClass",
                    )
                })
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listen on {listen}"))?;
            let address = listener
                .local_addr()
                .context("read the listening address")?;
            let exe = std::env::current_exe().context("find the peapod binary")?;
            let images = ImageStore::open(&root.join("images"))
                .with_context(|| format!("open image store in {}", root.display()))?;
            let node = Node {
                runtime: Runtime::new(root, &exe),
                images: Arc::new(images),
                registries: peapod_kubelet::pull::registries_from_env(),
                host_resolv: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                config: NodeConfig::from_env().context("read the node settings")?,
                monitors,
            };
            tracing::debug!("daemon start: images and node settings read");
            bootstrapped.await.context("create the default objects")??;
            tracing::debug!("daemon start: store ready");
            anyhow::Ok((node_name, listener, address, exe, node))
        }
        .await;
        let (node_name, listener, address, exe, node) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                // Nothing is served: the network set up meanwhile is taken down again.
                if let Ok(Ok(Some(network))) = network_setup.await {
                    let _ = network.stop();
                }
                return Err(error);
            }
        };
        let kubeconfig = state_dir.join("kubeconfig");
        tokio::spawn(collect_images(node.images.clone(), root.join("containers")));
        let network = match network_setup.await.context("set up the pod network")?? {
            Some(network) => Some(serve_network(network, &store, &node.host_resolv).await),
            None => None,
        };
        tracing::debug!("daemon start: pod network ready");
        let controller = NodeController::new();
        let logs = NodeLogs {
            pods_root: node.pods_root(),
            running: controller.running.clone(),
            exe: exe.clone(),
        };
        let api = Arc::new(ApiState {
            store: store.clone(),
            node: Arc::new(logs),
            node_name: node_name.clone(),
            server_address: address.to_string(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Serving waits for the certificates; the pods' start does not (`Daemon::serving`).
        let serving = {
            let (api, kubeconfig) = (api.clone(), kubeconfig.clone());
            tokio::spawn(async move {
                let (pki, tls) = tls_setup.await.context("load the certificates")??;
                let url = format!("https://{address}");
                std::fs::write(&kubeconfig, pki.kubeconfig(&url))
                    .with_context(|| format!("write {}", kubeconfig.display()))?;
                tokio::spawn(serve(listener, tls, router(api), shutdown_rx));
                tracing::debug!("daemon start: serving the API");
                anyhow::Ok(())
            })
        };
        tokio::spawn(compact_periodically(store.clone()));
        tokio::spawn(peapod_api::http::gc::run(api.clone()));
        tokio::spawn(heartbeat(api.store.clone(), api.node_name.clone()));
        tokio::spawn(peapod_kubelet::volumes::run(
            store.clone(),
            root.join("volumes"),
        ));
        tokio::spawn(controller.clone().run(store, node, node_name));
        tracing::debug!("daemon start: pods are being started");
        Ok(Daemon {
            api,
            controller,
            address,
            kubeconfig,
            serving: Some(serving),
            shutdown,
            network,
        })
    }

    /// Waits until the API serves (the certificates load meanwhile on a blocking thread, and
    /// the kubeconfig is written then); an error if they could not be loaded. The node
    /// controller runs before: `peapod run` creates its pods first and waits here after.
    pub async fn serving(&mut self) -> anyhow::Result<()> {
        match self.serving.take() {
            Some(task) => task.await.context("start serving")?,
            None => Ok(()),
        }
    }

    /// Stops the API; stops the Service controller and DNS and removes the nftables table, and
    /// the bridge if no pod is left on it (a few short commands, at shutdown).
    pub fn stop_serving(&self) {
        let _ = self.shutdown.send(true);
        if let Some((network, tasks)) = &self.network {
            for task in tasks {
                task.abort();
            }
            if let Err(error) = network.stop() {
                warn!(error = %format!("{:#}", anyhow::Error::from(error)), "stop the pod network");
            }
        }
    }
}

/// The kubelet's image garbage collection: every interval (the first look one interval after
/// start), unused images go while the store's filesystem is fuller than the high threshold
/// (`peapod_runtime::image::gc`).
async fn collect_images(images: Arc<ImageStore>, containers: PathBuf) {
    let thresholds = GcThresholds::from_env();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + thresholds.interval,
        thresholds.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let (images, containers) = (images.clone(), containers.clone());
        let result = tokio::task::spawn_blocking(move || {
            let in_use = layers_in_use(&containers)?;
            images.collect_for_space(&in_use, thresholds)
        })
        .await;
        match result {
            Ok(Ok(removed)) => {
                for image in removed {
                    info!(image = %image.name, size = image.size, "image garbage-collected");
                }
            }
            Ok(Err(error)) => {
                warn!(error = %format!("{:#}", anyhow::Error::from(error)), "image garbage collection")
            }
            Err(error) => warn!(%error, "image garbage collection"),
        }
    }
}

/// The pod network (bridge, addresses) unless `PEAPOD_NETWORK=none` (see `peapod_net::config`
/// for the variables); addresses of pods that are gone from `root` are released.
async fn set_up_network(root: PathBuf) -> anyhow::Result<Option<PodNetwork>> {
    let Some(config) = NetworkConfig::from_env(&root).context("read the network configuration")?
    else {
        return Ok(None);
    };
    let bridge = config.bridge.clone();
    let network = PodNetwork::start(config)
        .await
        .with_context(|| format!("set up the pod network on bridge {bridge}"))?;
    let pods = root.join("pods");
    match network
        .collect_garbage(move |uid| pods.join(uid).exists())
        .await
    {
        Ok(freed) if !freed.is_empty() => {
            info!(count = freed.len(), "released addresses of removed pods")
        }
        Ok(_) => {}
        Err(error) => {
            warn!(error = %format!("{:#}", anyhow::Error::from(error)), "release addresses of removed pods")
        }
    }
    Ok(Some(network))
}

/// Makes `network` the pods' and starts the Service controller and cluster DNS on the
/// bridge's address.
async fn serve_network(
    network: PodNetwork,
    store: &Store,
    host_resolv: &str,
) -> (PodNetwork, Vec<JoinHandle<()>>) {
    peapod_net::install(network.clone());
    let (records, records_rx) = watch::channel(Arc::new(Records::default()));
    let mut tasks = vec![tokio::spawn(peapod_net::service::controller::run(
        store.clone(),
        network.clone(),
        records,
    ))];
    let dns = SocketAddr::from((network.config().gateway(), 53));
    let upstreams = peapod_net::dns::upstreams(
        std::env::var("PEAPOD_DNS_UPSTREAM").ok().as_deref(),
        host_resolv,
        network.config().gateway(),
    );
    match DnsServer::bind(dns).await {
        Ok(server) => tasks.push(
            server
                .forward_to(upstreams, peapod_net::dns::server::UPSTREAM_TIMEOUT)
                .serve(records_rx),
        ),
        Err(error) => {
            warn!(%error, %dns, "cluster DNS not served (another daemon on this bridge?)")
        }
    }
    (network, tasks)
}

/// How many revisions of history watches can resume from; older ones are compacted away (a
/// watch from before then gets 410 Gone and re-lists, as with the API server's 5-minute window).
const KEEP_REVISIONS: u64 = 10_000;

/// How long an Event is kept after it last happened (the API server's `--event-ttl`): without
/// it every pod start and crash-loop restart adds Events forever, and every full scan (lists,
/// garbage collection) grows with them.
const EVENT_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Compacts the store's revision log and drops expired Events, once a minute.
async fn compact_periodically(store: Store) {
    // The first look a period after start, not during it.
    let period = std::time::Duration::from_secs(60);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        let keep_after = store.revision().saturating_sub(KEEP_REVISIONS);
        if keep_after > 0 {
            if let Err(error) = store.compact(keep_after) {
                tracing::warn!(%error, "compact the store");
            }
        }
        let events = match store.list("events", None, &ListOptions::default()) {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, "list events");
                continue;
            }
        };
        for key in expired_events(&events, chrono::Utc::now(), EVENT_TTL) {
            // Gone already or changed meanwhile: the next pass looks again.
            let _ = store.delete(&key, None);
        }
    }
}

/// The Events whose last occurrence (`lastTimestamp`, `eventTime`, else the creation time) is
/// more than `ttl` before `now`.
fn expired_events(
    events: &[serde_json::Value],
    now: chrono::DateTime<chrono::Utc>,
    ttl: chrono::TimeDelta,
) -> Vec<ObjectKey> {
    events
        .iter()
        .filter(|e| {
            let when = ["lastTimestamp", "eventTime"]
                .iter()
                .find_map(|f| e[*f].as_str())
                .or_else(|| e["metadata"]["creationTimestamp"].as_str());
            when.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| now.signed_duration_since(t) > ttl)
        })
        .filter_map(|e| {
            Some(ObjectKey {
                resource: "events".into(),
                namespace: e["metadata"]["namespace"].as_str().map(str::to_string),
                name: e["metadata"]["name"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// How often the node renews its Lease and its Ready condition's heartbeat.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// The kubelet's heartbeats: a `coordination.k8s.io` Lease in `kube-node-lease` renewed every
/// 10 s, and the Ready condition's `lastHeartbeatTime`
/// (<https://kubernetes.io/docs/concepts/architecture/leases/#node-heart-beats>).
async fn heartbeat(store: Store, node_name: String) {
    let lease = ObjectKey {
        resource: "leases.coordination.k8s.io".into(),
        namespace: Some("kube-node-lease".into()),
        name: node_name.clone(),
    };
    let node = ObjectKey {
        resource: "nodes".into(),
        namespace: None,
        name: node_name.clone(),
    };
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let renewed = store.update_with(&lease, |o| {
            o["spec"]["renewTime"] = json!(now);
            Ok(())
        });
        if let Err(StoreError::NotFound { .. }) = renewed {
            let object = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node_name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node_name, "leaseDurationSeconds": 40, "renewTime": now},
            });
            let _ = store.create(&lease, object);
        }
        let seconds = now
            .split('.')
            .next()
            .map(|s| format!("{s}Z"))
            .unwrap_or_default();
        let _ = store.update_with(&node, |o| {
            for c in o["status"]["conditions"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                c["lastHeartbeatTime"] = json!(seconds);
            }
            Ok(())
        });
    }
}

/// This machine's name, as the node's.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peapod".into())
}

/// The namespaces every cluster has, a `default` service account in each, the default
/// StorageClass and the node: those missing created in one transaction, the node's status
/// brought up to date.
fn bootstrap(store: &Store, node_name: &str) -> Result<(), StoreError> {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut objects = Vec::new();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = ObjectKey {
            resource: "namespaces".into(),
            namespace: None,
            name: ns.into(),
        };
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        objects.push((key, object));
        let sa = ObjectKey {
            resource: "serviceaccounts".into(),
            namespace: Some(ns.into()),
            name: "default".into(),
        };
        objects.push((sa, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}})));
    }
    objects.push(peapod_kubelet::volumes::default_class_object());
    let key = ObjectKey {
        resource: "nodes".into(),
        namespace: None,
        name: node_name.into(),
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let capacity =
        json!({"cpu": cpus.to_string(), "memory": format!("{memory_kib}Ki"), "pods": "110"});
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node_name, "labels": {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "peapod is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node_name}],
            "nodeInfo": {"kubeletVersion": format!("v1.{}.0-peapod", peapod_api::http::discovery::MINOR), "containerRuntimeVersion": "peapod://0.1.0", "operatingSystem": "linux", "architecture": "amd64", "kernelVersion": "", "osImage": "", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}
        }
    });
    let status = node["status"].clone();
    let node_at = objects.len();
    objects.push((key.clone(), node));
    // One transaction for all of them; a node kept from an earlier start gets today's status.
    let created = store.create_missing(objects)?;
    if created.get(node_at) == Some(&false) {
        store.update_with(&key, |o| {
            o["status"] = status.clone();
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_expire_an_hour_after_they_last_happened() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let event = |name: &str, last: Option<&str>, created: &str| {
            json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                   "lastTimestamp": last})
        };
        let events = [
            event("old", Some("2026-01-01T10:59:00Z"), "2026-01-01T09:00:00Z"),
            event(
                "repeated",
                Some("2026-01-01T11:30:00Z"),
                "2026-01-01T09:00:00Z",
            ),
            event("no-last", None, "2026-01-01T10:00:00Z"),
            event("fresh", None, "2026-01-01T11:59:00Z"),
        ];
        let expired: Vec<String> = expired_events(&events, now, EVENT_TTL)
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(expired, ["old", "no-last"]);
    }
}
