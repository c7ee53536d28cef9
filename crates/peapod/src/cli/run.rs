//! `peapod run -f FILE`: the pods of a manifest in the foreground. Every container's log is
//! streamed prefixed `pod/container | `; the command exits when every pod reached a terminal
//! phase (non-zero if one failed), or on SIGINT/SIGTERM after deleting the pods gracefully.

use super::manifest::{check_references, load, Manifest};
use anyhow::Context;
use peapod_api::{FieldError, FieldPath};
use peapod_kubelet::{Node, Phase, PodContext, PodEvent, PodWorker};
use peapod_net::HostPortListener;
use peapod_runtime::image::ImageStore;
use peapod_runtime::log::parse_line;
use peapod_runtime::Runtime;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The manifest: Pods, and the ConfigMaps and Secrets they use (multi-document YAML)
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
}

/// How often a log being followed is read for new lines.
const LOG_POLL: Duration = Duration::from_millis(50);

pub fn run(args: RunArgs, root: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("{}: read", args.file.display()))?;
    let manifest = load(&args.file, &text)?;
    std::fs::create_dir_all(root)
        .with_context(|| format!("create data root {}", root.display()))?;
    let images = ImageStore::open(&root.join("images"))
        .with_context(|| format!("open image store in {}", root.display()))?;
    check_references(&args.file, &manifest, &images)?;
    let exe = std::env::current_exe().context("find the peapod binary")?;
    let node = Node {
        runtime: Runtime::new(root, &exe),
        images: Arc::new(images),
        host_resolv: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start tokio")?;
    rt.block_on(run_pods(&args.file, node, manifest))
}

async fn run_pods(file: &Path, node: Node, manifest: Manifest) -> anyhow::Result<i32> {
    let host_ports = bind_host_ports(file, &manifest).await?;
    // Before any pod exists, so an early Ctrl-C still deletes what was made.
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let mut workers: BTreeMap<String, PodWorker> = BTreeMap::new();
    let mut phases: BTreeMap<String, Phase> = BTreeMap::new();
    let mut log_done: BTreeMap<(String, String, u32), watch::Sender<bool>> = BTreeMap::new();
    for (mut pod, ports) in manifest.pods.into_iter().zip(host_ports) {
        pod.metadata.uid = Some(new_uid());
        let ctx = PodContext::new(pod, manifest.config_maps.clone(), manifest.secrets.clone());
        let key = format!("{}/{}", ctx.namespace(), ctx.name());
        phases.insert(key.clone(), Phase::Pending);
        workers.insert(
            key,
            PodWorker::spawn(node.clone(), ctx, ports, events_tx.clone()),
        );
    }
    drop(events_tx);
    let mut deleting = false;
    let mut failed = false;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            Some(line) = lines.recv() => {
                let _ = stdout.write_all(line.as_bytes());
                let _ = stdout.flush();
            }
            event = events.recv() => {
                let Some((key, event)) = event else { break };
                let short = key.split_once('/').map(|(_, n)| n.to_string()).unwrap_or(key.clone());
                match event {
                    PodEvent::ContainerStarted { container, restart, log_path } => {
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
                    PodEvent::ContainerFailed { container, reason } => {
                        eprintln!("pod/{short}: container {container} failed to start: {reason}");
                    }
                    PodEvent::ContainerReady { container, ready } => {
                        eprintln!("pod/{short}: container {container} {}", if ready { "ready" } else { "not ready" });
                    }
                    PodEvent::PodReady(ready) => {
                        eprintln!("pod/{short}: {}", if ready { "Ready" } else { "NotReady" });
                    }
                    PodEvent::Event { reason, message } => {
                        eprintln!("pod/{short}: {reason}: {message}");
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
                        workers.remove(&key);
                    }
                }
                if !deleting && phases.values().all(|p| p.is_terminal()) {
                    failed |= phases.values().any(|p| *p == Phase::Failed);
                    deleting = true;
                    workers.values().for_each(PodWorker::delete);
                }
                if workers.is_empty() {
                    break;
                }
            }
            _ = sigint.recv() => { deleting = true; workers.values().for_each(PodWorker::delete); }
            _ = sigterm.recv() => { deleting = true; workers.values().for_each(PodWorker::delete); }
        }
    }
    for done in log_done.into_values() {
        let _ = done.send(true);
    }
    drop(lines_tx);
    while let Some(line) = lines.recv().await {
        let _ = stdout.write_all(line.as_bytes());
    }
    let _ = stdout.flush();
    Ok(if failed { 1 } else { 0 })
}

/// Binds every hostPort before anything is created, so a taken port is a clear error.
async fn bind_host_ports(
    file: &Path,
    manifest: &Manifest,
) -> anyhow::Result<Vec<Vec<HostPortListener>>> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for pod in &manifest.pods {
        let mut listeners = Vec::new();
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
                match HostPortListener::bind(
                    p.host_ip.as_deref(),
                    host_port as u16,
                    p.container_port as u16,
                )
                .await
                {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        let path = FieldPath::root("spec")
                            .child("containers")
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort");
                        let err = FieldError::invalid(path, host_port, e);
                        problems.push(format!("{}: Pod {name:?}: {err}", file.display()));
                    }
                }
            }
        }
        all.push(listeners);
    }
    if !problems.is_empty() {
        return Err(super::manifest::ManifestProblems(problems).into());
    }
    Ok(all)
}

/// Follows a CRI log file, sending each line prefixed, until `done` and the file is drained.
async fn follow_log(
    path: PathBuf,
    prefix: String,
    mut done: watch::Receiver<bool>,
    out: mpsc::UnboundedSender<String>,
) {
    let mut file = loop {
        if let Ok(f) = tokio::fs::File::open(&path).await {
            break f;
        }
        if *done.borrow() {
            return;
        }
        tokio::time::sleep(LOG_POLL).await;
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
        if finished {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOG_POLL) => {}
            _ = done.changed() => {}
        }
    }
}

/// A random UID in the 8-4-4-4-12 form Kubernetes uses.
fn new_uid() -> String {
    let hex = peapod_runtime::ContainerId::random().to_string();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
