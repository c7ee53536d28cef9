//! The pod worker: executes what the planner decides, for one pod, until the pod is deleted.
//!
//! It owns the pod's sandbox and containers. Each container instance is started by spawning
//! its monitor process (`peapod __monitor`), whose one-line answer says whether it runs; the
//! monitor's exit means the container's exit is recorded on disk (see `instance.rs`).

use crate::context::PodContext;
use crate::instance;
use crate::plan::{is_sidecar, plan, ContainerRecord, ContainerState, Phase};
use crate::pod_sandbox::{create_sandbox, remove_sandbox};
use crate::probe::{ProbeEvent, ProbeKind, ProbeTarget};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodStatus, Secret};
use nix::sys::signal::Signal;
use peapod_net::HostPortHold;
use peapod_runtime::container::ContainerDir;
use peapod_runtime::image::ImageStore;
use peapod_runtime::monitor::error_chain;
use peapod_runtime::sandbox::SandboxDir;
use peapod_runtime::{ContainerId, Exited, Runtime};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

/// What the node shares between its pod workers.
#[derive(Debug, Clone)]
pub struct Node {
    pub runtime: Runtime,
    pub images: Arc<ImageStore>,
    /// How pulls reach registries (insecure ones, extra CAs).
    pub registries: peapod_runtime::image::pull::RegistryConfig,
    /// The host's /etc/resolv.conf, read once.
    pub host_resolv: String,
    /// Log rotation and the pids limit of the containers it starts.
    pub config: crate::config::NodeConfig,
    /// Monitors started ahead of their containers (`peapod run`).
    pub monitors: Arc<crate::monitor_pool::MonitorPool>,
}

impl Node {
    pub fn pods_root(&self) -> PathBuf {
        self.runtime.root().join("pods")
    }
}

/// Whether an earlier daemon left the pod's sandbox in place (config written, namespaces
/// still pinned): then a worker adopts it rather than making a new one.
pub fn sandbox_left(node: &Node, uid: &str) -> bool {
    let dir = SandboxDir::new(node.pods_root().join(uid));
    dir.config().exists() && peapod_sys::mount::is_mount_point(&dir.sandbox_ref().net)
}

/// How many times a pod sandbox is tried before the pod is given up.
const SANDBOX_ATTEMPTS: u32 = 3;

/// How a worker reports events.
type Emit<'a> = dyn Fn(PodEvent) + Send + Sync + 'a;

/// What a pod worker tells its observer.
#[derive(Debug, Clone)]
pub enum PodEvent {
    ContainerStarted {
        container: String,
        restart: u32,
        log_path: PathBuf,
        /// The instance's directory under `<root>/containers/` (for exec).
        dir: PathBuf,
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
    ContainerReady {
        container: String,
        ready: bool,
    },
    /// The pod's Ready condition changed.
    PodReady(bool),
    /// A kubelet event (`Unhealthy`, `Killing`, `FailedPostStartHook`, ...).
    Event {
        reason: &'static str,
        message: String,
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
    /// The grace period the deletion asked for (`deletionGracePeriodSeconds`); -1 for none.
    delete_grace: Arc<AtomicI64>,
    refresh: mpsc::UnboundedSender<Refresh>,
    /// The pod's status, as the kubelet would report it, updated on every change.
    pub status: watch::Receiver<PodStatus>,
    pub join: JoinHandle<()>,
}

impl PodWorker {
    /// Starts a worker for `ctx` on `node`; events go to `events`.
    pub fn spawn(
        node: Node,
        ctx: PodContext,
        host_ports: Vec<HostPortHold>,
        events: mpsc::UnboundedSender<(String, PodEvent)>,
    ) -> PodWorker {
        let (delete, deleted) = watch::channel(false);
        let delete_grace = Arc::new(AtomicI64::new(-1));
        let grace_for_worker = delete_grace.clone();
        let (refresh, refreshes) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(PodStatus::default());
        let join = tokio::spawn(async move {
            let key = format!("{}/{}", ctx.namespace(), ctx.name());
            let emit: Box<Emit<'static>> = Box::new(move |e: PodEvent| {
                let _ = events.send((key.clone(), e));
            });
            let span = tracing::info_span!("pod", pod = %ctx.name(), uid = %ctx.uid());
            let channels = Channels {
                deleted,
                delete_grace: grace_for_worker,
                refreshes,
                status: status_tx,
            };
            run(node, ctx, host_ports, channels, &*emit)
                .instrument(span)
                .await;
            emit(PodEvent::Deleted);
        });
        PodWorker {
            delete,
            delete_grace,
            refresh,
            status,
            join,
        }
    }

    /// Asks the worker to delete the pod gracefully (SIGTERM, then SIGKILL after the grace period).
    pub fn delete(&self) {
        let _ = self.delete.send(true);
    }

    /// Deletes with the grace period the API recorded (`kubectl delete --grace-period=N`),
    /// which overrides the pod's terminationGracePeriodSeconds.
    pub fn delete_with_grace(&self, grace: Option<i64>) {
        if let Some(g) = grace {
            self.delete_grace.store(g.max(0), Ordering::SeqCst);
        }
        self.delete();
    }

    /// Hands the worker the current ConfigMaps and Secrets of its namespace: its configMap,
    /// secret and projected volumes are rewritten (atomically) when they changed.
    pub fn refresh(&self, config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) {
        let _ = self.refresh.send(Refresh {
            config_maps,
            secrets,
        });
    }
}

/// New ConfigMaps and Secrets for a running pod.
#[derive(Debug)]
pub struct Refresh {
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
}

/// Messages from a container instance's tasks to its worker.
pub(crate) enum Msg {
    Started {
        name: String,
        id: ContainerId,
        pid: i32,
        log_path: PathBuf,
        stop_signal: Signal,
        image_id: String,
        dir: ContainerDir,
        /// When the process started, as the monitor recorded it (`started.json`): the same
        /// time a daemon that adopts the instance later reads.
        started_at: String,
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
    Probe {
        name: String,
        id: ContainerId,
        event: ProbeEvent,
    },
    HookFailed {
        name: String,
        id: ContainerId,
        message: String,
    },
    /// The image step failed (`ErrImagePull`, `ErrImageNeverPull`, `InvalidImageName`).
    PullFailed {
        name: String,
        reason: &'static str,
        message: String,
    },
    /// A kubelet event from an instance's task (`Pulling`, `Pulled`, `Failed`).
    Event {
        reason: &'static str,
        message: String,
    },
}

/// The current instance of a container.
pub(crate) struct Instance {
    pub id: Option<ContainerId>,
    pub pid: Option<i32>,
    pub restart: u32,
    pub stop_signal: Signal,
    pub target: Option<ProbeTarget>,
    /// postStart hook and probes; aborted when the instance exits.
    pub watcher: Option<JoinHandle<()>>,
}

/// Everything the worker knows about its pod.
pub(crate) struct PodState<'a> {
    pub node: Node,
    pub ctx: Arc<PodContext>,
    pub pod_dir: SandboxDir,
    pub spec: PodSpec,
    pub records: BTreeMap<String, ContainerRecord>,
    pub current: BTreeMap<String, Instance>,
    /// Every container instance ever created, removed with the pod.
    pub all_ids: Vec<ContainerId>,
    pub tx: mpsc::UnboundedSender<Msg>,
    pub emit: &'a Emit<'a>,
    pub pod_ready: Option<bool>,
    pub deleting: bool,
    /// Containers already being stopped (sidecars of a completed pod): never stopped twice.
    pub stopping: HashSet<String>,
    /// Condition type -> (status, last transition time).
    pub conditions: BTreeMap<String, (bool, String)>,
    pub start_time: String,
    /// Why the pod was evicted (the status message), once it was.
    pub evicted: Option<String>,
    /// Instances whose failed log writes were reported.
    pub log_failures: HashSet<ContainerId>,
}

/// How a worker hears from and talks to its handle.
struct Channels {
    deleted: watch::Receiver<bool>,
    delete_grace: Arc<AtomicI64>,
    refreshes: mpsc::UnboundedReceiver<Refresh>,
    status: watch::Sender<PodStatus>,
}

async fn run(
    node: Node,
    ctx: PodContext,
    host_ports: Vec<HostPortHold>,
    channels: Channels,
    emit: &Emit<'_>,
) {
    let Channels {
        mut deleted,
        delete_grace,
        mut refreshes,
        status,
    } = channels;
    // A pod an earlier daemon started keeps its startTime and its conditions' transition
    // times (the kubelet reports them from its status manager, not from its own start).
    let previous = ctx.pod.status.clone().unwrap_or_default();
    let (previous_reason, previous_message) = (previous.reason.clone(), previous.message.clone());
    let start_time = previous
        .start_time
        .map(|t| t.0.to_string())
        .unwrap_or_else(peapod_runtime::log::now_rfc3339_nano);
    let conditions: BTreeMap<String, (bool, String)> = previous
        .conditions
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c.type_,
                (c.status == "True", c.last_transition_time?.0.to_string()),
            ))
        })
        .collect();
    let pod_dir = SandboxDir::new(node.pods_root().join(ctx.uid()));
    tracing::debug!("pod worker started");
    // The sandbox outlived an earlier daemon: adopt it and whatever runs in it (see adopt.rs).
    let adopting = sandbox_left(&node, ctx.uid());
    if adopting {
        info!("re-adopting pod sandbox");
    } else {
        // The kubelet retries a sandbox it could not create (FailedCreatePodSandBox) rather
        // than failing the pod at once; after a few tries this one gives up.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Err(reason) = create_sandbox(&node, &ctx, &pod_dir).await else {
                break;
            };
            info!(%reason, attempt, "pod sandbox failed");
            remove_sandbox(&node, &pod_dir).await;
            if attempt >= SANDBOX_ATTEMPTS || *deleted.borrow() {
                emit(PodEvent::SandboxFailed { reason });
                return;
            }
            emit(PodEvent::Event {
                reason: "FailedCreatePodSandBox",
                message: format!("Failed to create pod sandbox: {reason}"),
            });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1 << attempt)) => {}
                _ = deleted.changed() => {}
            }
        }
    }
    info!("pod sandbox ready");
    // The address the pod network gave it (also found again for an adopted sandbox).
    let ctx = PodContext {
        pod_ip: peapod_net::pod_ip(ctx.uid()).map(|ip| ip.to_string()),
        ..ctx
    };
    // Host ports: translated by the kernel to the pod's address (published again for an
    // adopted pod: idempotent), or relayed without a pod network. The holds are kept until
    // the pod is gone.
    let mut proxies: Vec<JoinHandle<()>> = Vec::new();
    let mut holds = Vec::new();
    if let Some(net) = peapod_net::installed() {
        let ports = host_ports.iter().map(|h| h.port).collect();
        // Written while the containers start (a few hundred microseconds): nothing in the pod
        // can accept a connection before its process runs.
        let uid = ctx.uid().to_string();
        tokio::spawn(
            async move {
                if let Err(e) = net.publish(&uid, ports).await {
                    warn!(error = %error_chain(&e), "publish host ports");
                }
            }
            .instrument(tracing::Span::current()),
        );
        holds = host_ports;
    } else {
        proxies.extend(
            host_ports
                .into_iter()
                .filter_map(|h| h.serve(&pod_dir.sandbox_ref().net)),
        );
    }
    let Some(spec) = ctx.pod.spec.clone() else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut pod = PodState {
        node: node.clone(),
        ctx: Arc::new(ctx),
        pod_dir: pod_dir.clone(),
        spec,
        records: BTreeMap::new(),
        current: BTreeMap::new(),
        all_ids: Vec::new(),
        tx,
        emit,
        pod_ready: None,
        deleting: false,
        stopping: HashSet::new(),
        conditions,
        start_time,
        evicted: None,
        log_failures: HashSet::new(),
    };
    if adopting {
        pod.adopt(crate::adopt::find_instances(&node.runtime, &pod_dir));
    }
    let mut phase = None;
    // An evicted pod stays evicted across a daemon restart.
    if adopting && previous_reason.as_deref() == Some(crate::eviction::REASON) {
        pod.evicted = Some(previous_message.unwrap_or_default());
    }
    let limited = crate::eviction::limited_volumes(&pod.spec);
    // The kubelet's housekeeping: emptyDir usage, log write failures.
    let mut housekeeping = tokio::time::interval(crate::eviction::CHECK_EVERY);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Evicted: nothing is started again; the pod is Failed until it is deleted.
        let plan = plan(&pod.spec, &pod.records, Instant::now());
        let (now_phase, wake_at) = match pod.evicted {
            Some(_) => (Phase::Failed, None),
            None => (plan.phase, plan.wake_at),
        };
        if phase != Some(now_phase) {
            phase = Some(now_phase);
            info!(phase = now_phase.as_str(), "pod phase");
            emit(PodEvent::Phase(now_phase));
        }
        if pod.evicted.is_none() {
            for name in &plan.stop {
                if pod.stopping.insert(name.clone()) {
                    if let Some(inst) = pod.current.get(name) {
                        info!(container = %name, "stopping sidecar of a completed pod");
                        instance_stop(&pod, name, inst);
                    }
                }
            }
            for name in &plan.start {
                pod.stopping.remove(name);
                pod.start(name);
            }
        }
        status.send_replace(pod.status(now_phase));
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let check_storage = !limited.is_empty() && pod.evicted.is_none();
        tokio::select! {
            Some(msg) = rx.recv() => pod.handle(msg),
            _ = deleted.changed() => {}
            Some(refresh) = refreshes.recv() => pod.refresh(refresh).await,
            _ = housekeeping.tick() => {
                pod.report_log_failures();
                if check_storage {
                    let volumes = pod_dir.path.join("volumes");
                    let limited = limited.clone();
                    let over = tokio::task::spawn_blocking(move || {
                        crate::eviction::over_limit(&volumes, &limited)
                    });
                    if let Ok(Some(message)) = over.await {
                        evict(&mut pod, &mut rx, message).await;
                    }
                }
            }
            _ = sleep => {}
        }
        if *deleted.borrow() {
            break;
        }
    }
    let asked = delete_grace.load(Ordering::SeqCst);
    crate::stop::terminate(&mut pod, &mut rx, (asked >= 0).then_some(asked)).await;
    for p in proxies {
        p.abort();
    }
    for id in std::mem::take(&mut pod.all_ids) {
        let rt = node.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || rt.remove(&id)).await;
    }
    remove_sandbox(&node, &pod_dir).await;
    // The ports stay held until their translation is gone with the sandbox.
    drop(holds);
    info!("pod deleted");
}

/// The termination message the kubelet reports: the file at terminationMessagePath (at most
/// 4 KiB), or with `FallbackToLogsOnError` and a failed container the last 80 lines (2 KiB)
/// of its log (<https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/>).
fn termination_message(
    ctx: &PodContext,
    pod_dir: &SandboxDir,
    name: &str,
    restart: u32,
    exit_code: i32,
) -> Option<String> {
    let file = pod_dir
        .path
        .join("termination")
        .join(format!("{name}-{restart}"));
    let mut text = std::fs::read(&file).unwrap_or_default();
    text.truncate(4096);
    if !text.is_empty() {
        return Some(String::from_utf8_lossy(&text).into_owned());
    }
    let policy = instance::find(ctx, name).and_then(|c| c.termination_message_policy.clone());
    if exit_code == 0 || policy.as_deref() != Some("FallbackToLogsOnError") {
        return None;
    }
    let log = std::fs::read_to_string(pod_dir.log(name, restart)).ok()?;
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| peapod_runtime::log::parse_line(l).map(|p| p.text))
        .collect();
    let mut tail = lines[lines.len().saturating_sub(80)..].join("\n");
    if tail.len() > 2048 {
        let mut cut = tail.len() - 2048;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    (!tail.is_empty()).then_some(tail)
}

/// Splits `Reason: message` (as `prepare` words its failures) into the kubelet's waiting reason
/// and message; anything else is a `CreateContainerError`.
fn split_reason(reason: &str) -> (String, String) {
    match reason.split_once(": ") {
        Some((r, m))
            if !r.is_empty()
                && r.chars().all(|c| c.is_ascii_alphabetic())
                && r.starts_with(|c: char| c.is_ascii_uppercase()) =>
        {
            (r.to_string(), m.to_string())
        }
        _ => ("CreateContainerError".to_string(), reason.to_string()),
    }
}

/// Evicts the pod (see eviction.rs): the Evicted event, every container killed at once.
async fn evict(pod: &mut PodState<'_>, rx: &mut mpsc::UnboundedReceiver<Msg>, message: String) {
    info!(%message, "evicting pod");
    (pod.emit)(PodEvent::Event {
        reason: crate::eviction::REASON,
        message: message.clone(),
    });
    crate::stop::terminate(pod, rx, Some(0)).await;
    pod.evicted = Some(message);
}

fn instance_stop(pod: &PodState<'_>, name: &str, inst: &Instance) {
    let grace = Duration::from_secs(
        pod.spec
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64,
    );
    crate::stop::stop_instance(&pod.ctx, name, inst, grace);
}

impl PodState<'_> {
    /// Takes new ConfigMaps and Secrets and rewrites the volumes made from them.
    async fn refresh(&mut self, refresh: Refresh) {
        let mut ctx = (*self.ctx).clone();
        ctx.config_maps = refresh.config_maps;
        ctx.secrets = refresh.secrets;
        self.ctx = Arc::new(ctx);
        let (ctx, dir) = (self.ctx.clone(), self.pod_dir.clone());
        match tokio::task::spawn_blocking(move || crate::projected::write_all(&ctx, &dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "update configMap/secret volumes"),
            Err(error) => tracing::warn!(%error, "update configMap/secret volumes"),
        }
    }

    /// Takes over the instances an earlier daemon started: the newest of each container is
    /// current (its exit is noticed by polling its record, the monitor not being our child),
    /// older ones are only removed with the pod. Times recorded on disk (start, exit) become
    /// the planner's instants, so back-off and the 10-minute reset count from when things
    /// happened, not from the adoption; the back-off level is the restart count, as if this
    /// daemon had made every restart. postStart hooks are not run again.
    fn adopt(&mut self, found: BTreeMap<String, Vec<crate::adopt::FoundInstance>>) {
        use crate::adopt::{instant_of, FoundState};
        let now = Instant::now();
        for (name, mut instances) in found {
            let Some(newest) = instances.pop() else {
                continue;
            };
            let previous = instances.last().and_then(|i| match &i.state {
                FoundState::Exited(e) => Some((e.clone(), format!("peapod://{}", i.dir.id))),
                _ => None,
            });
            self.all_ids.extend(instances.into_iter().map(|i| i.dir.id));
            self.all_ids.push(newest.dir.id.clone());
            let image = self.node.images.resolve(&newest.image).ok();
            let record = self.records.entry(name.clone()).or_default();
            record.restart_count = newest.restart;
            record.backoff_level = newest.restart;
            record.detail.container_id = Some(format!("peapod://{}", newest.dir.id));
            record.detail.image_id = image.as_ref().map(|i| i.id.clone());
            (
                record.detail.last_terminated,
                record.detail.last_container_id,
            ) = previous.unzip();
            let since = newest
                .started_at
                .as_deref()
                .map_or(now, |t| instant_of(now, t));
            let pid = match newest.state {
                FoundState::Exited(exited) => {
                    record.state = ContainerState::Exited {
                        exit_code: exited.exit_code,
                        started: instant_of(now, &exited.started_at),
                        finished: instant_of(now, &exited.finished_at),
                    };
                    record.detail.terminated = Some(exited);
                    continue;
                }
                FoundState::Lost => None,
                FoundState::Running { pid } => Some(pid),
            };
            record.state = ContainerState::Running { since };
            record.detail.started_at = newest.started_at.clone();
            instance::watch_adopted_exit(
                self.node.clone(),
                name.clone(),
                newest.dir.id.clone(),
                self.tx.clone(),
            );
            let stop_signal = image
                .as_ref()
                .and_then(|i| i.config.stop_signal.as_deref())
                .and_then(instance::parse_signal)
                .unwrap_or(Signal::SIGTERM);
            let mut instance = Instance {
                id: Some(newest.dir.id.clone()),
                pid,
                restart: newest.restart,
                stop_signal,
                target: None,
                watcher: None,
            };
            if let Some(pid) = pid {
                info!(container = %name, pid, "re-adopted running container");
                record.started = true;
                record.ready = true;
                let target =
                    instance::probe_target(&self.node, &self.ctx, &self.pod_dir, &newest.dir);
                let regular_init = self.is_regular_init(&name);
                instance.watcher = Some(instance::watch_running(
                    &self.ctx,
                    &name,
                    &newest.dir.id,
                    target.clone(),
                    self.tx.clone(),
                    instance::Hooks::AlreadyRan,
                    regular_init,
                ));
                instance.target = Some(target);
                (self.emit)(PodEvent::ContainerStarted {
                    container: name.clone(),
                    restart: newest.restart,
                    log_path: self.pod_dir.log(&name, newest.restart),
                    dir: newest.dir.path.clone(),
                });
            } else {
                info!(container = %name, "monitor of an adopted container is gone");
            }
            self.current.insert(name.clone(), instance);
        }
    }

    /// One Warning event per running instance whose monitor could not write its log (a full
    /// disk under the log directory): the container keeps running, its lines are lost.
    fn report_log_failures(&mut self) {
        for (name, inst) in &self.current {
            let Some(id) = &inst.id else { continue };
            if self.log_failures.contains(id) || !self.node.runtime.dir(id).log_failed().exists() {
                continue;
            }
            self.log_failures.insert(id.clone());
            let path = self.pod_dir.log(name, inst.restart);
            (self.emit)(PodEvent::Event {
                reason: "FailedLogWrite",
                message: format!(
                    "Lines of container {name} could not be written to {} (disk full?); \
                     the container keeps running",
                    path.display()
                ),
            });
        }
    }

    /// The pod's status now, keeping each condition's last transition time.
    fn status(&mut self, phase: Phase) -> PodStatus {
        let now = peapod_runtime::log::now_rfc3339_nano();
        for (kind, value) in crate::status::condition_values(&self.spec, &self.records, true) {
            let entry = self
                .conditions
                .entry(kind.to_string())
                .or_insert((value, now.clone()));
            if entry.0 != value {
                *entry = (value, now.clone());
            }
        }
        let policy = self.spec.restart_policy.as_deref().unwrap_or("Always");
        let at = Instant::now();
        let mut backoff = BTreeMap::new();
        for (name, r) in &self.records {
            let init = self.is_regular_init(name);
            let policy = if self.is_sidecar(name) {
                "Always"
            } else {
                policy
            };
            if crate::plan::restart_at(policy, r, init).is_some_and(|t| t > at) {
                let secs = crate::plan::backoff(r.backoff_level).as_secs();
                let message = format!(
                    "back-off {secs}s restarting failed container={name} pod={}_{}({})",
                    self.ctx.name(),
                    self.ctx.namespace(),
                    self.ctx.uid()
                );
                backoff.insert(name.clone(), message);
            }
            let pull_error = r
                .detail
                .create_error
                .as_ref()
                .filter(|(reason, _)| reason == "ErrImagePull");
            if let (true, Some((reason, error))) = (crate::plan::in_pull_backoff(r, at), pull_error)
            {
                let image = instance::find(&self.ctx, name)
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                let message = format!("Back-off pulling image {image:?}: {reason}: {error}");
                backoff.insert(name.clone(), message);
            }
        }
        let inputs = crate::status::StatusInputs {
            phase: Some(phase),
            pod_ip: self.ctx.pod_ip.clone(),
            host_ip: "127.0.0.1".into(),
            start_time: Some(self.start_time.clone()),
            qos_class: crate::limits::qos_class(&self.ctx.pod).as_str().to_string(),
            conditions: self.conditions.clone(),
            backoff,
            reason: self
                .evicted
                .as_ref()
                .map(|_| crate::eviction::REASON.to_string()),
            message: self.evicted.clone(),
        };
        crate::status::pod_status(&self.spec, &self.records, &inputs)
    }

    fn is_sidecar(&self, name: &str) -> bool {
        self.spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name && is_sidecar(c))
    }

    /// Starts (or restarts) the container `name`.
    fn start(&mut self, name: &str) {
        let record = self.records.entry(name.to_string()).or_default();
        let restart = match record.state {
            ContainerState::Waiting => 0,
            // No instance was made: the same restart is tried again.
            ContainerState::ImagePullFailed { restart, .. } => restart,
            _ => {
                record.restart_count += 1;
                record.backoff_level += 1;
                record.restart_count
            }
        };
        record.state = ContainerState::Starting;
        record.started = false;
        record.ready = false;
        if let Some(previous) = record.detail.terminated.take() {
            record.detail.last_terminated = Some(previous);
            record.detail.last_container_id = record.detail.container_id.clone();
        }
        instance::spawn(
            self.node.clone(),
            self.ctx.clone(),
            self.pod_dir.clone(),
            name.to_string(),
            restart,
            self.tx.clone(),
        );
        let instance = Instance {
            id: None,
            pid: None,
            restart,
            stop_signal: Signal::SIGTERM,
            target: None,
            watcher: None,
        };
        self.current.insert(name.to_string(), instance);
    }

    fn is_current(&self, name: &str, id: &ContainerId) -> bool {
        self.current
            .get(name)
            .is_some_and(|i| i.id.as_ref() == Some(id))
    }

    /// Applies one message to the pod's state.
    pub(crate) fn handle(&mut self, msg: Msg) {
        let now = Instant::now();
        let emit = self.emit;
        match msg {
            Msg::Started {
                name,
                id,
                pid,
                log_path,
                stop_signal,
                image_id,
                dir,
                started_at,
            } => {
                self.all_ids.push(id.clone());
                let target = instance::probe_target(&self.node, &self.ctx, &self.pod_dir, &dir);
                let regular_init = self.is_regular_init(&name);
                let mut restart = 0;
                if let Some(inst) = self.current.get_mut(&name) {
                    inst.id = Some(id.clone());
                    inst.pid = Some(pid);
                    inst.stop_signal = stop_signal;
                    inst.target = Some(target.clone());
                    restart = inst.restart;
                    if !self.deleting {
                        inst.watcher = Some(instance::watch_running(
                            &self.ctx,
                            &name,
                            &id,
                            target,
                            self.tx.clone(),
                            instance::Hooks::Run,
                            regular_init,
                        ));
                    }
                }
                emit(PodEvent::Event {
                    reason: "Created",
                    message: format!("Created container {name}"),
                });
                emit(PodEvent::ContainerStarted {
                    container: name.clone(),
                    restart,
                    log_path,
                    dir: dir.path.clone(),
                });
                if let Some(r) = self.records.get_mut(&name) {
                    r.state = ContainerState::Running { since: now };
                    r.detail.container_id = Some(format!("peapod://{id}"));
                    r.detail.image_id = Some(image_id);
                    r.detail.started_at = Some(started_at);
                    r.detail.create_error = None;
                    r.pull_failures = 0;
                }
                info!(container = %name, pid, "container started");
            }
            Msg::Event { reason, message } => emit(PodEvent::Event { reason, message }),
            Msg::PullFailed {
                name,
                reason,
                message,
            } => {
                let restart = self.current.remove(&name).map_or(0, |i| i.restart);
                let image = instance::find(&self.ctx, &name)
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                if let Some(r) = self.records.get_mut(&name) {
                    r.state = ContainerState::ImagePullFailed { at: now, restart };
                    r.pull_failures += 1;
                    r.detail.create_error = Some((reason.to_string(), message.clone()));
                }
                info!(container = %name, reason, %message, "image pull failed");
                emit(PodEvent::Event {
                    reason: "BackOff",
                    message: format!("Back-off pulling image {image:?}"),
                });
                emit(PodEvent::ContainerFailed {
                    container: name,
                    reason: format!("{reason}: {message}"),
                });
            }
            Msg::Failed { name, id, reason } => {
                self.all_ids.extend(id);
                self.current.remove(&name);
                if let Some(r) = self.records.get_mut(&name) {
                    r.state = ContainerState::CreateFailed {
                        reason: reason.clone(),
                        at: now,
                    };
                    r.detail.create_error = Some(split_reason(&reason));
                }
                info!(container = %name, %reason, "container failed to start");
                emit(PodEvent::ContainerFailed {
                    container: name,
                    reason,
                });
            }
            Msg::Exited { name, id, exited } => {
                let restart = self.current.get(&name).map(|i| i.restart).unwrap_or(0);
                if self.is_current(&name, &id) {
                    if let Some(inst) = self.current.remove(&name) {
                        inst.watcher.iter().for_each(JoinHandle::abort);
                    }
                }
                if let Some(r) = self.records.get_mut(&name) {
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
                    r.started = false;
                    r.ready = false;
                    r.detail.terminated_message = termination_message(
                        &self.ctx,
                        &self.pod_dir,
                        &name,
                        restart,
                        exited.exit_code,
                    );
                    r.detail.terminated = Some(exited.clone());
                    r.detail.started_at = None;
                }
                info!(container = %name, exit_code = exited.exit_code, reason = exited.reason(), "container exited");
                emit(PodEvent::ContainerExited {
                    container: name,
                    restart,
                    exited,
                });
            }
            Msg::Probe { name, id, event } if self.is_current(&name, &id) => {
                self.probe_event(&name, event)
            }
            Msg::HookFailed { name, id, message } if self.is_current(&name, &id) => {
                emit(PodEvent::Event {
                    reason: "FailedPostStartHook",
                    message: format!("PostStartHook failed: {message}"),
                });
                if let Some(inst) = self.current.get(&name) {
                    instance_stop(self, &name, inst);
                }
            }
            Msg::Probe { .. } | Msg::HookFailed { .. } => {}
        }
        self.update_pod_ready();
    }

    fn probe_event(&mut self, name: &str, event: ProbeEvent) {
        let emit = self.emit;
        match event {
            ProbeEvent::Started => {
                if let Some(r) = self.records.get_mut(name) {
                    r.started = true;
                }
            }
            ProbeEvent::Ready(ready) => {
                if let Some(r) = self.records.get_mut(name) {
                    if r.ready != ready {
                        r.ready = ready;
                        emit(PodEvent::ContainerReady {
                            container: name.to_string(),
                            ready,
                        });
                    }
                }
            }
            ProbeEvent::Unhealthy { kind, message } => {
                emit(PodEvent::Event {
                    reason: "Unhealthy",
                    message: format!("{} probe failed: {message}", kind.as_str()),
                });
            }
            ProbeEvent::Failed { kind, grace, .. } => {
                let what = if kind == ProbeKind::Startup {
                    "startup"
                } else {
                    "liveness"
                };
                emit(PodEvent::Event {
                    reason: "Killing",
                    message: format!("Container {name} failed {what} probe, will be restarted"),
                });
                if let Some(inst) = self.current.get(name) {
                    let pod_grace = Duration::from_secs(
                        self.spec
                            .termination_grace_period_seconds
                            .unwrap_or(30)
                            .max(0) as u64,
                    );
                    crate::stop::stop_instance(&self.ctx, name, inst, grace.unwrap_or(pod_grace));
                }
            }
        }
    }

    fn is_regular_init(&self, name: &str) -> bool {
        self.spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name && !is_sidecar(c))
    }

    /// The pod's Ready condition: every app container (and sidecar) running and ready.
    fn update_pod_ready(&mut self) {
        let sidecars = self
            .spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c));
        let ready = self.spec.containers.iter().chain(sidecars).all(|c| {
            self.records
                .get(&c.name)
                .is_some_and(|r| r.ready && matches!(r.state, ContainerState::Running { .. }))
        });
        if self.pod_ready != Some(ready) {
            if self.pod_ready.is_some() || ready {
                (self.emit)(PodEvent::PodReady(ready));
            }
            self.pod_ready = Some(ready);
        }
    }
}
