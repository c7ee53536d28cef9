//! The pod worker: executes what the planner decides, for one pod, until the pod is deleted.
//!
//! It owns the pod's sandbox and containers. Each container instance is started by spawning
//! its monitor process (`peapod __monitor`), whose one-line answer says whether it runs; the
//! monitor's exit means the container's exit is recorded on disk.

use crate::context::PodContext;
use crate::plan::{is_sidecar, plan, ContainerRecord, ContainerState, Phase};
use crate::pod_sandbox;
use crate::translate::container_config;
use nix::sys::signal::Signal;
use peapod_net::HostPortListener;
use peapod_runtime::container::parse_ready;
use peapod_runtime::image::ImageStore;
use peapod_runtime::monitor::{error_chain, CGROUP_ROOT};
use peapod_runtime::sandbox::{self, SandboxDir};
use peapod_runtime::{ContainerId, Exited, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

/// What the node shares between its pod workers.
#[derive(Debug, Clone)]
pub struct Node {
    pub runtime: Runtime,
    pub images: Arc<ImageStore>,
    /// The host's /etc/resolv.conf, read once.
    pub host_resolv: String,
}

impl Node {
    pub fn pods_root(&self) -> PathBuf {
        self.runtime.root().join("pods")
    }
}

/// How a worker reports events.
type Emit<'a> = dyn Fn(PodEvent) + Sync + 'a;

/// What a pod worker tells its observer.
#[derive(Debug, Clone)]
pub enum PodEvent {
    ContainerStarted {
        container: String,
        restart: u32,
        log_path: PathBuf,
    },
    ContainerExited {
        container: String,
        restart: u32,
        exited: Exited,
    },
    ContainerFailed {
        container: String,
        reason: String,
    },
    Phase(Phase),
    /// The pod is gone: containers stopped, sandbox removed.
    Deleted,
    SandboxFailed {
        reason: String,
    },
}

/// The handle on a running pod worker.
#[derive(Debug)]
pub struct PodWorker {
    delete: watch::Sender<bool>,
    pub join: JoinHandle<()>,
}

impl PodWorker {
    /// Starts a worker for `ctx` on `node`; events go to `events`.
    pub fn spawn(
        node: Node,
        ctx: PodContext,
        host_ports: Vec<HostPortListener>,
        events: mpsc::UnboundedSender<(String, PodEvent)>,
    ) -> PodWorker {
        let (delete, deleted) = watch::channel(false);
        let join = tokio::spawn(async move {
            let key = format!("{}/{}", ctx.namespace(), ctx.name());
            let emit = |e: PodEvent| {
                let _ = events.send((key.clone(), e));
            };
            let span = tracing::info_span!("pod", pod = %ctx.name(), uid = %ctx.uid());
            run(node, ctx, host_ports, deleted, &emit)
                .instrument(span)
                .await;
            emit(PodEvent::Deleted);
        });
        PodWorker { delete, join }
    }

    /// Asks the worker to delete the pod gracefully (SIGTERM, then SIGKILL after the grace period).
    pub fn delete(&self) {
        let _ = self.delete.send(true);
    }
}

/// Messages from a container instance's task to its worker.
enum Msg {
    Started {
        name: String,
        id: ContainerId,
        pid: i32,
        log_path: PathBuf,
    },
    Failed {
        name: String,
        id: Option<ContainerId>,
        reason: String,
    },
    Exited {
        name: String,
        id: ContainerId,
        exited: Exited,
    },
}

struct Instance {
    id: Option<ContainerId>,
    pid: Option<i32>,
    restart: u32,
}

async fn run(
    node: Node,
    ctx: PodContext,
    host_ports: Vec<HostPortListener>,
    mut deleted: watch::Receiver<bool>,
    emit: &Emit<'_>,
) {
    let pod_dir = SandboxDir::new(node.pods_root().join(ctx.uid()));
    if let Err(reason) = create_sandbox(&node, &ctx, &pod_dir).await {
        warn!(%reason, "pod sandbox failed");
        emit(PodEvent::SandboxFailed { reason });
        remove_sandbox(&node, &pod_dir).await;
        return;
    }
    info!("pod sandbox ready");
    let proxies: Vec<JoinHandle<()>> = host_ports
        .into_iter()
        .map(|l| l.serve(&pod_dir.sandbox_ref().net))
        .collect();
    let Some(spec) = ctx.pod.spec.clone() else {
        return;
    };
    let ctx = Arc::new(ctx);
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut records: BTreeMap<String, ContainerRecord> = BTreeMap::new();
    let mut current: BTreeMap<String, Instance> = BTreeMap::new();
    let mut all_ids: Vec<ContainerId> = Vec::new();
    let mut phase = None;
    let mut stopping = std::collections::HashSet::new();

    loop {
        let now = Instant::now();
        let plan = plan(&spec, &records, now);
        if phase != Some(plan.phase) {
            phase = Some(plan.phase);
            info!(phase = plan.phase.as_str(), "pod phase");
            emit(PodEvent::Phase(plan.phase));
        }
        for name in &plan.stop {
            if let Some(pid) = current.get(name).and_then(|i| i.pid) {
                if stopping.insert(name.clone()) {
                    info!(container = %name, "stopping sidecar of a completed pod");
                    let _ = peapod_sys::process::kill(pid, Signal::SIGTERM);
                }
            }
        }
        for name in &plan.start {
            stopping.remove(name);
            let record = records.entry(name.clone()).or_default();
            let restart = match record.state {
                ContainerState::Waiting => 0,
                _ => {
                    record.restart_count += 1;
                    record.backoff_level += 1;
                    record.restart_count
                }
            };
            record.state = ContainerState::Starting;
            spawn_instance(
                node.clone(),
                ctx.clone(),
                pod_dir.clone(),
                name.clone(),
                restart,
                tx.clone(),
            );
            current.insert(
                name.clone(),
                Instance {
                    id: None,
                    pid: None,
                    restart,
                },
            );
        }
        let sleep = async {
            match plan.wake_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(msg) = rx.recv() => handle(msg, &mut records, &mut current, &mut all_ids, emit),
            _ = deleted.changed() => break,
            _ = sleep => {}
        }
        if *deleted.borrow() {
            break;
        }
    }

    terminate(
        &spec,
        &mut rx,
        &mut records,
        &mut current,
        &mut all_ids,
        emit,
    )
    .await;
    for p in proxies {
        p.abort();
    }
    for id in all_ids {
        let rt = node.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || rt.remove(&id)).await;
    }
    remove_sandbox(&node, &pod_dir).await;
    info!("pod deleted");
}

fn handle(
    msg: Msg,
    records: &mut BTreeMap<String, ContainerRecord>,
    current: &mut BTreeMap<String, Instance>,
    all_ids: &mut Vec<ContainerId>,
    emit: &Emit<'_>,
) {
    let now = Instant::now();
    match msg {
        Msg::Started {
            name,
            id,
            pid,
            log_path,
        } => {
            all_ids.push(id.clone());
            let mut restart = 0;
            if let Some(inst) = current.get_mut(&name) {
                inst.id = Some(id);
                inst.pid = Some(pid);
                restart = inst.restart;
            }
            emit(PodEvent::ContainerStarted {
                container: name.clone(),
                restart,
                log_path,
            });
            if let Some(r) = records.get_mut(&name) {
                r.state = ContainerState::Running { since: now };
            }
            info!(container = %name, pid, "container started");
        }
        Msg::Failed { name, id, reason } => {
            all_ids.extend(id);
            current.remove(&name);
            if let Some(r) = records.get_mut(&name) {
                r.state = ContainerState::CreateFailed {
                    reason: reason.clone(),
                    at: now,
                };
            }
            warn!(container = %name, %reason, "container failed to start");
            emit(PodEvent::ContainerFailed {
                container: name,
                reason,
            });
        }
        Msg::Exited { name, id, exited } => {
            let restart = current.get(&name).map(|i| i.restart).unwrap_or(0);
            if current
                .get(&name)
                .is_some_and(|i| i.id.as_ref() == Some(&id))
            {
                current.remove(&name);
            }
            if let Some(r) = records.get_mut(&name) {
                let started = match r.state {
                    ContainerState::Running { since } => since,
                    _ => now,
                };
                if now.duration_since(started) >= crate::plan::BACKOFF_RESET_AFTER {
                    r.backoff_level = 0;
                }
                r.state = ContainerState::Exited {
                    exit_code: exited.exit_code,
                    started,
                    finished: now,
                };
            }
            info!(container = %name, exit_code = exited.exit_code, reason = exited.reason(), "container exited");
            emit(PodEvent::ContainerExited {
                container: name,
                restart,
                exited,
            });
        }
    }
}

/// Creates one container instance and waits for it to exit, reporting to the worker.
fn spawn_instance(
    node: Node,
    ctx: Arc<PodContext>,
    pod_dir: SandboxDir,
    name: String,
    restart: u32,
    tx: mpsc::UnboundedSender<Msg>,
) {
    tokio::spawn(async move {
        let prepared = {
            let (node, ctx, pod_dir, name) =
                (node.clone(), ctx.clone(), pod_dir.clone(), name.clone());
            tokio::task::spawn_blocking(move || prepare(&node, &ctx, &pod_dir, &name, restart))
                .await
        };
        let (id, cmd, log_path) = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(reason)) => {
                let _ = tx.send(Msg::Failed {
                    name,
                    id: None,
                    reason,
                });
                return;
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed {
                    name,
                    id: None,
                    reason: e.to_string(),
                });
                return;
            }
        };
        let mut child = match tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Msg::Failed {
                    name,
                    id: Some(id),
                    reason: format!("spawn monitor: {e}"),
                });
                return;
            }
        };
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = tokio::io::BufReader::new(stdout).read_line(&mut line).await;
        }
        match parse_ready(&name, &line) {
            Ok(pid) => {
                let _ = tx.send(Msg::Started {
                    name: name.clone(),
                    id: id.clone(),
                    pid,
                    log_path,
                });
            }
            Err(e) => {
                let _ = child.wait().await;
                let detail = node.runtime.monitor_diagnostics(&id);
                let reason = match (line.trim(), detail.is_empty()) {
                    (_, true) => error_chain(&e),
                    ("", false) => format!("{}: {detail}", error_chain(&e)),
                    (_, false) => format!("{} ({detail})", error_chain(&e)),
                };
                let _ = tx.send(Msg::Failed {
                    name,
                    id: Some(id),
                    reason,
                });
                return;
            }
        }
        let _ = child.wait().await;
        let rt = node.runtime.clone();
        let rid = id.clone();
        let exited = tokio::task::spawn_blocking(move || rt.exited(&rid)).await;
        let exited = match exited {
            Ok(Ok(Some(e))) => e,
            _ => Exited {
                exit_code: 137,
                signal: Some(9),
                oom_killed: false,
                started_at: String::new(),
                finished_at: peapod_runtime::log::now_rfc3339_nano(),
            },
        };
        let _ = tx.send(Msg::Exited { name, id, exited });
    });
}

/// Resolves the image and translates the container into a runtime config (blocking).
fn prepare(
    node: &Node,
    ctx: &PodContext,
    pod_dir: &SandboxDir,
    name: &str,
    restart: u32,
) -> Result<(ContainerId, std::process::Command, PathBuf), String> {
    let spec = ctx.pod.spec.as_ref().ok_or("pod has no spec")?;
    let container = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == name)
        .ok_or_else(|| format!("container {name} not in spec"))?;
    let image_name = container.image.clone().unwrap_or_default();
    let image = node
        .images
        .resolve(&image_name)
        .map_err(|e| format!("ErrImageNeverPull: {}", error_chain(&e)))?;
    let read_top = |file: &str| {
        image
            .layers
            .iter()
            .rev()
            .find_map(|l| std::fs::read_to_string(l.join(file)).ok())
            .unwrap_or_default()
    };
    let (passwd, group) = (read_top("etc/passwd"), read_top("etc/group"));
    let term_log = pod_dir
        .path
        .join("termination")
        .join(format!("{name}-{restart}"));
    if let Some(parent) = term_log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::File::create(&term_log).map_err(|e| e.to_string())?;
    let cgroup_path = format!("{CGROUP_ROOT}/pod{}/{}", ctx.uid(), ContainerId::random());
    let mut config = container_config(
        container,
        ctx,
        &image,
        pod_dir,
        &passwd,
        &group,
        restart,
        cgroup_path,
        &term_log,
    )
    .map_err(|e| format!("CreateContainerConfigError: {e}"))?;
    for m in &mut config.mounts {
        prepare_mount_source(ctx, pod_dir, container, m)?;
    }
    let log_path = config.log_path.clone();
    let (id, cmd) = node.runtime.prepare(&config).map_err(|e| error_chain(&e))?;
    Ok((id, cmd, log_path))
}

/// Makes sure a mount's source exists: subPath directories inside volumes are created, as the
/// kubelet does, and must not lead outside their volume through a symlink.
fn prepare_mount_source(
    ctx: &PodContext,
    pod_dir: &SandboxDir,
    container: &k8s_openapi::api::core::v1::Container,
    m: &peapod_runtime::Mount,
) -> Result<(), String> {
    let Some(vm) = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.mount_path == m.destination)
    else {
        return Ok(());
    };
    let volume = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == vm.name));
    if let Some(hp) = volume.and_then(|v| v.host_path.as_ref()) {
        let path = std::path::Path::new(&hp.path);
        match hp.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => {
                std::fs::create_dir_all(path).map_err(|e| format!("hostPath {}: {e}", hp.path))?
            }
            "FileOrCreate" if !path.exists() => {
                std::fs::File::create(path).map_err(|e| format!("hostPath {}: {e}", hp.path))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    hp.path
                ))
            }
            "File" if !path.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    hp.path
                ))
            }
            "" if !path.exists() => {
                std::fs::create_dir_all(path).map_err(|e| format!("hostPath {}: {e}", hp.path))?
            }
            _ => {}
        }
    }
    if vm.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
        let base =
            crate::translate::volume_source(ctx, pod_dir, &vm.name).ok_or("volume missing")?;
        if !m.source.exists() {
            std::fs::create_dir_all(&m.source)
                .map_err(|e| format!("subPath {}: {e}", m.source.display()))?;
        }
        let real = m
            .source
            .canonicalize()
            .map_err(|e| format!("subPath {}: {e}", m.source.display()))?;
        let real_base = base
            .canonicalize()
            .map_err(|e| format!("volume {}: {e}", base.display()))?;
        if !real.starts_with(&real_base) {
            return Err(format!(
                "subPath {} leads outside its volume",
                vm.sub_path.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(())
}

/// Stops every container: SIGTERM, then SIGKILL once the grace period is over; waits for all
/// of them (and any start still under way) to be reported.
async fn terminate(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    records: &mut BTreeMap<String, ContainerRecord>,
    current: &mut BTreeMap<String, Instance>,
    all_ids: &mut Vec<ContainerId>,
    emit: &Emit<'_>,
) {
    let grace =
        Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
    let deadline = tokio::time::Instant::now() + grace;
    let sidecars: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .map(|c| c.name.clone())
        .collect();
    let alive = |records: &BTreeMap<String, ContainerRecord>, sidecar: bool| {
        records.iter().any(|(name, r)| {
            sidecars.contains(name) == sidecar
                && matches!(
                    r.state,
                    ContainerState::Starting | ContainerState::Running { .. }
                )
        })
    };
    // App containers first; sidecars once those are gone
    // (<https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/#termination>).
    let signal = |current: &BTreeMap<String, Instance>, sidecar: bool, sig: Signal| {
        for (name, inst) in current
            .iter()
            .filter(|(n, _)| sidecars.contains(n) == sidecar)
        {
            if let Some(pid) = inst.pid {
                info!(container = %name, signal = %sig, "killing container");
                let _ = peapod_sys::process::kill(pid, sig);
            }
        }
    };
    info!(grace_seconds = grace.as_secs(), "stopping containers");
    let mut killed = false;
    let mut sidecars_signalled = false;
    signal(current, false, Signal::SIGTERM);
    while alive(records, false) || alive(records, true) {
        if !alive(records, false) && !sidecars_signalled {
            sidecars_signalled = true;
            signal(current, true, Signal::SIGTERM);
        }
        tokio::select! {
            Some(msg) = rx.recv() => {
                let started = matches!(msg, Msg::Started { .. });
                handle(msg, records, current, all_ids, emit);
                if started {
                    let sig = if killed { Signal::SIGKILL } else { Signal::SIGTERM };
                    signal(current, false, sig);
                    if sidecars_signalled || killed {
                        signal(current, true, sig);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if !killed => {
                info!("grace period over");
                killed = true;
                signal(current, false, Signal::SIGKILL);
                signal(current, true, Signal::SIGKILL);
            }
        }
    }
}

async fn create_sandbox(node: &Node, ctx: &PodContext, dir: &SandboxDir) -> Result<(), String> {
    let config = pod_sandbox::sandbox_config(ctx, &node.host_resolv);
    let exe = node.runtime.exe().to_path_buf();
    let (ctx, dir) = (ctx.clone(), dir.clone());
    tokio::task::spawn_blocking(move || {
        let cmd = sandbox::prepare(&exe, &dir, &config).map_err(|e| error_chain(&e))?;
        sandbox::run_helper(cmd, &dir).map_err(|e| error_chain(&e))?;
        pod_sandbox::write_projected_volumes(&ctx, &dir)
            .map_err(|e| format!("write configMap/secret volume: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn remove_sandbox(node: &Node, dir: &SandboxDir) {
    let exe = node.runtime.exe().to_path_buf();
    let helper_dir = dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        sandbox::run_helper(sandbox::remove_command(&exe, &helper_dir), &helper_dir)
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %error_chain(&e), "remove pod sandbox"),
        Err(e) => warn!(error = %e, "remove pod sandbox"),
    }
    let cgroup = format!(
        "{CGROUP_ROOT}/pod{}",
        dir.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    peapod_runtime::cgroup::remove(&cgroup, CGROUP_ROOT);
}
