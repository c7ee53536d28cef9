//! `peapod run -f FILE`: the pods of a manifest in the foreground, on an ephemeral daemon
//! (kubectl works against it meanwhile). Every container's log is streamed prefixed
//! `pod/container | `; the command exits when every pod reached a terminal phase (non-zero if
//! one failed), or on SIGINT/SIGTERM after deleting the pods gracefully.

use super::manifest::{check_references, load, Manifest};
use crate::daemon::{Daemon, Objects};
use anyhow::Context;
use peapod_api::http::admission::{admit_create, FieldValidation};
use peapod_api::http::objects::delete_object;
use peapod_api::http::registry::lookup;
use peapod_api::store::{ObjectKey, Store};
use peapod_api::{FieldError, FieldPath};
use peapod_kubelet::controller::NodeEvent;
use peapod_kubelet::monitor_pool::MonitorPool;
use peapod_kubelet::{Phase, PodEvent};
use peapod_runtime::image::ImageStore;
use peapod_runtime::log::parse_line;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc, watch};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The manifest: Pods, and the ConfigMaps and Secrets they use (multi-document YAML)
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Address the API listens on while the pods run (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// How often a log being followed is read for new lines.
const LOG_POLL: Duration = Duration::from_millis(50);

pub fn run(args: RunArgs, root: &Path) -> anyhow::Result<i32> {
    tracing::debug!("run: started");
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("{}: read", args.file.display()))?;
    let manifest = load(&args.file, &text)?;
    std::fs::create_dir_all(root)
        .with_context(|| format!("create data root {}", root.display()))?;
    let images = ImageStore::open(&root.join("images"))
        .with_context(|| format!("open image store in {}", root.display()))?;
    check_references(&args.file, &manifest, &images)?;
    drop(images);
    tracing::debug!("run: manifest and images checked");
    check_host_ports(&args.file, &manifest)?;
    let state_dir = root.join("run").join(std::process::id().to_string());
    // A monitor for each container the manifest will start, forked now, while this process
    // has no other thread (monitor_pool.rs).
    let monitors = Arc::new(MonitorPool::fork(
        container_count(&manifest),
        crate::pooled_monitor,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start tokio")?;
    let result = rt.block_on(run_pods(root, &state_dir, args.listen, manifest, monitors));
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

/// How many containers the manifest's pods start first (init containers included).
fn container_count(manifest: &Manifest) -> usize {
    manifest
        .pods
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .map(|s| s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len))
        .sum()
}

async fn run_pods(
    root: &Path,
    state_dir: &Path,
    listen: SocketAddr,
    manifest: Manifest,
    monitors: Arc<MonitorPool>,
) -> anyhow::Result<i32> {
    // Before any pod exists, so an early Ctrl-C still deletes what was made.
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    tracing::debug!("run: manifest checked, runtime started");
    let mut daemon = Daemon::start(root, state_dir, listen, Objects::InMemory, monitors).await?;
    let mut events = daemon.controller.events.subscribe();
    let pods = create_objects(&daemon, manifest)?;
    tracing::debug!("run: objects created");
    // The API serves once the certificates are loaded; the pods started meanwhile. Without
    // an API they are deleted again, as after Ctrl-C, and the error is the run's.
    let serve_error = daemon.serving().await.err();
    if serve_error.is_none() {
        eprintln!(
            "peapod: kubectl works meanwhile: export KUBECONFIG={}",
            daemon.kubeconfig.display()
        );
    }
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let mut phases: BTreeMap<String, Phase> =
        pods.iter().map(|k| (k.clone(), Phase::Pending)).collect();
    let mut remaining: HashSet<String> = pods.iter().cloned().collect();
    let mut log_done: BTreeMap<(String, String, u32), watch::Sender<bool>> = BTreeMap::new();
    let mut deleting = false;
    let mut failed = false;
    let mut stdout = std::io::stdout();
    let delete_all = |deleting: &mut bool| {
        if !*deleting {
            *deleting = true;
            delete_pods(&daemon, &pods);
        }
    };
    if serve_error.is_some() {
        delete_all(&mut deleting);
        remove_unstarted(&daemon.api.store, &pods, &mut remaining);
    }
    while !remaining.is_empty() {
        tokio::select! {
            Some(line) = lines.recv() => {
                let _ = stdout.write_all(line.as_bytes());
                let _ = stdout.flush();
            }
            event = events.recv() => {
                let NodeEvent { pod: key, event, .. } = match event {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !phases.contains_key(&key) {
                    continue;
                }
                let short = key.split_once('/').map(|(_, n)| n.to_string()).unwrap_or(key.clone());
                match event {
                    PodEvent::ContainerStarted { container, restart, log_path, .. } => {
                        let (done_tx, done_rx) = watch::channel(false);
                        log_done.insert((key.clone(), container.clone(), restart), done_tx);
                        tokio::spawn(follow_log(log_path, format!("{short}/{container} | "), done_rx, lines_tx.clone()));
                    }
                    PodEvent::ContainerExited { container, restart, exited } => {
                        if let Some(done) = log_done.remove(&(key.clone(), container.clone(), restart)) {
                            let _ = done.send(true);
                        }
                        eprintln!("pod/{short}: container {container} exited with code {} ({})", exited.exit_code, exited.reason());
                    }
                    PodEvent::ContainerFailed { container, reason } => eprintln!("pod/{short}: container {container} failed to start: {reason}"),
                    PodEvent::ContainerReady { container, ready } => {
                        eprintln!("pod/{short}: container {container} {}", if ready { "ready" } else { "not ready" });
                    }
                    PodEvent::PodReady(ready) => eprintln!("pod/{short}: {}", if ready { "Ready" } else { "NotReady" }),
                    PodEvent::Event { reason: "Pulled" | "Created", .. } => {}
                    PodEvent::Event { reason, message } => {
                        eprintln!("pod/{short}: {reason}: {message}");
                        if reason == "FailedScheduling" {
                            failed = true;
                            phases.insert(key.clone(), Phase::Failed);
                        }
                    }
                    PodEvent::SandboxFailed { reason } => {
                        eprintln!("pod/{short}: sandbox failed: {reason}");
                        failed = true;
                        phases.insert(key.clone(), Phase::Failed);
                    }
                    PodEvent::Phase(phase) => {
                        eprintln!("pod/{short}: {}", phase.as_str());
                        phases.insert(key.clone(), phase);
                    }
                    PodEvent::Deleted => {
                        eprintln!("pod/{short}: deleted");
                        remaining.remove(&key);
                    }
                }
                if !deleting && phases.values().all(|p| p.is_terminal()) {
                    failed |= phases.values().any(|p| *p == Phase::Failed);
                    delete_all(&mut deleting);
                    remove_unstarted(&daemon.api.store, &pods, &mut remaining);
                }
            }
            _ = sigint.recv() => { delete_all(&mut deleting); remove_unstarted(&daemon.api.store, &pods, &mut remaining); }
            _ = sigterm.recv() => { delete_all(&mut deleting); remove_unstarted(&daemon.api.store, &pods, &mut remaining); }
        }
    }
    daemon.stop_serving();
    for done in log_done.into_values() {
        let _ = done.send(true);
    }
    drop(lines_tx);
    while let Some(line) = lines.recv().await {
        let _ = stdout.write_all(line.as_bytes());
    }
    let _ = stdout.flush();
    if let Some(error) = serve_error {
        return Err(error);
    }
    Ok(if failed { 1 } else { 0 })
}

/// Pods that never got a worker (their host ports were taken) are simply gone once deleted.
fn remove_unstarted(store: &Store, pods: &[String], remaining: &mut HashSet<String>) {
    for key in pods {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let k = ObjectKey {
            resource: "pods".into(),
            namespace: Some(ns.into()),
            name: name.into(),
        };
        if matches!(store.get(&k), Ok(None)) {
            remaining.remove(key);
        }
    }
}

/// Creates the manifest's namespaces (when missing), ConfigMaps, Secrets and Pods; returns the
/// pods as `namespace/name`.
fn create_objects(daemon: &Daemon, manifest: Manifest) -> anyhow::Result<Vec<String>> {
    let store = &daemon.api.store;
    let mut objects: Vec<(&str, Value)> = Vec::new();
    for cm in manifest.config_maps {
        objects.push(("configmaps", serde_json::to_value(cm)?));
    }
    for s in manifest.secrets {
        objects.push(("secrets", serde_json::to_value(s)?));
    }
    for p in manifest.pods {
        objects.push(("pods", serde_json::to_value(p)?));
    }
    let mut pods = Vec::new();
    for (plural, object) in objects {
        let resource = lookup("", "v1", plural).context("resource registry")?;
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let ns_key = ObjectKey {
            resource: "namespaces".into(),
            namespace: None,
            name: ns.clone(),
        };
        if store.get(&ns_key)?.is_none() {
            let ns_resource = lookup("", "v1", "namespaces").context("resource registry")?;
            let admitted = admit_create(
                ns_resource,
                None,
                serde_json::json!({"metadata": {"name": ns}}),
                FieldValidation::Strict,
                &daemon.api.node_name,
            )
            .map_err(|e| anyhow::anyhow!("{}", e.status()["message"]))?;
            store.create(&ns_key, admitted.object)?;
        }
        let admitted = admit_create(
            resource,
            Some(&ns),
            object,
            FieldValidation::Strict,
            &daemon.api.node_name,
        )
        .map_err(|e| anyhow::anyhow!("{}", e.status()["message"]))?;
        let name = admitted.object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let key = ObjectKey {
            resource: plural.into(),
            namespace: Some(ns.clone()),
            name: name.clone(),
        };
        store
            .create(&key, admitted.object)
            .with_context(|| format!("create {plural} {ns}/{name}"))?;
        if plural == "pods" {
            pods.push(format!("{ns}/{name}"));
        }
    }
    Ok(pods)
}

/// Deletes the pods gracefully, as `kubectl delete` would.
fn delete_pods(daemon: &Daemon, pods: &[String]) {
    let Some(resource) = lookup("", "v1", "pods") else {
        return;
    };
    for key in pods {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let k = ObjectKey {
            resource: "pods".into(),
            namespace: Some(ns.into()),
            name: name.into(),
        };
        if let Ok(Some(object)) = daemon.api.store.get(&k) {
            let _ = delete_object(&daemon.api, resource, &k, object, None, None);
        }
    }
}

/// Checks that every hostPort is free before anything is created, so a taken port is one clear
/// error line.
fn check_host_ports(file: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for pod in &manifest.pods {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        for (i, c) in pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .enumerate()
        {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let Some(host_port) = p.host_port.filter(|hp| *hp > 0) else {
                    continue;
                };
                if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let ip = p.host_ip.as_deref().unwrap_or("0.0.0.0");
                if let Err(e) = std::net::TcpListener::bind((ip, host_port as u16)) {
                    let path = FieldPath::root("spec")
                        .child("containers")
                        .index(i)
                        .child("ports")
                        .index(j)
                        .child("hostPort");
                    let detail = if e.kind() == std::io::ErrorKind::AddrInUse {
                        format!("host port {ip}:{host_port} is already in use")
                    } else {
                        format!("listen on {ip}:{host_port}: {e}")
                    };
                    let err = FieldError::invalid(path, host_port, detail);
                    problems.push(format!("{}: Pod {name:?}: {err}", file.display()));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(super::manifest::ManifestProblems(problems).into());
    }
    Ok(())
}

/// Follows a CRI log file, sending each line prefixed, until `done` and the file is drained.
async fn follow_log(
    path: PathBuf,
    prefix: String,
    mut done: watch::Receiver<bool>,
    out: mpsc::UnboundedSender<String>,
) {
    let mut file = loop {
        // Read `done` before trying: once the container has exited its log is complete on
        // disk, so a failed open after that means there is no log, not "not yet".
        let finished = *done.borrow();
        if let Ok(f) = tokio::fs::File::open(&path).await {
            break f;
        }
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOG_POLL) => {}
            _ = done.changed() => {}
        }
    };
    let mut pending = String::new();
    let mut partial = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let finished = *done.borrow();
        let n = file.read(&mut buf).await.unwrap_or(0);
        if n > 0 {
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(pos) = pending.find('\n') {
                let raw: String = pending.drain(..=pos).collect();
                if let Some(entry) = parse_line(raw.trim_end_matches('\n')) {
                    partial.push_str(entry.text);
                    if entry.full {
                        let _ = out.send(format!("{prefix}{}\n", std::mem::take(&mut partial)));
                    }
                }
            }
            continue;
        }
        // Rotated (10 MiB): the rest is in the new file at the same path.
        let ours = file.metadata().await.map(|m| m.ino()).ok();
        if std::fs::metadata(&path)
            .map(|m| m.ino())
            .ok()
            .is_some_and(|now| Some(now) != ours)
        {
            if let Ok(f) = tokio::fs::File::open(&path).await {
                file = f;
                continue;
            }
        }
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOG_POLL) => {}
            _ = done.changed() => {}
        }
    }
}
