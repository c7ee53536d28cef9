//! One container instance: its image (`pull.rs`), preparing it (translate, runtime config), starting its
//! monitor, running its postStart hook and probes while it runs, and reporting its exit.

use crate::context::PodContext;
use crate::monitor_pool::MonitorProcess;
use crate::probe::{
    probe_container, run_once, ContainerProbes, ProbeAction, ProbeEvent, ProbeTarget,
};
use crate::translate::container_config;
use crate::worker::{Msg, Node};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use nix::sys::signal::Signal;
use peapod_runtime::container::{parse_ready, ContainerDir};
use peapod_runtime::image::Image;
use peapod_runtime::monitor::{error_chain, CGROUP_ROOT};
use peapod_runtime::sandbox::SandboxDir;
use peapod_runtime::{ContainerId, Exited};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A container ready to start: its ID, its monitor command, and what the worker keeps.
pub(crate) struct Prepared {
    id: ContainerId,
    cmd: std::process::Command,
    log_path: PathBuf,
    stop_signal: Signal,
    image_id: String,
}

/// Parses a stop signal as images write it: `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// The container named `name` in the pod's spec (init containers included).
pub(crate) fn find<'a>(ctx: &'a PodContext, name: &str) -> Option<&'a Container> {
    let spec = ctx.pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == name)
}

/// Creates one container instance and waits for it to exit, reporting to the worker.
pub(crate) fn spawn(
    node: Node,
    ctx: Arc<PodContext>,
    pod_dir: SandboxDir,
    name: String,
    restart: u32,
    tx: mpsc::UnboundedSender<Msg>,
) {
    tokio::spawn(async move {
        let (image, policy) = find(&ctx, &name)
            .map(|c| {
                (
                    c.image.clone().unwrap_or_default(),
                    c.image_pull_policy.clone(),
                )
            })
            .unwrap_or_default();
        let note = |n: crate::pull::PullNote| {
            let _ = tx.send(Msg::Event {
                reason: n.reason,
                message: n.message,
            });
        };
        let found =
            match crate::pull::ensure_image(&node, &ctx, &image, policy.as_deref(), &note).await {
                Ok(found) => found,
                Err(failure) => {
                    let _ = tx.send(Msg::PullFailed {
                        name,
                        reason: failure.reason,
                        message: failure.message,
                    });
                    return;
                }
            };
        tracing::debug!(container = %name, "container image ready");
        let prepared = {
            let (node, ctx, pod_dir, name) =
                (node.clone(), ctx.clone(), pod_dir.clone(), name.clone());
            tokio::task::spawn_blocking(move || {
                prepare(&node, &ctx, &pod_dir, &name, restart, found)
            })
            .await
        };
        let p = match prepared {
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
        tracing::debug!(container = %name, "container prepared");
        let id = p.id.clone();
        let pooled = node.monitors.hand(&node.runtime.dir(&id).path);
        let spawned = match pooled {
            Some(monitor) => Ok(monitor),
            None => tokio::process::Command::from(p.cmd)
                .kill_on_drop(false)
                .spawn()
                .map(MonitorProcess::Spawned),
        };
        let mut child = match spawned {
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
        tracing::debug!(container = %name, "container handed to its monitor");
        let line = child.first_line().await;
        tracing::debug!(container = %name, "container's monitor answered");
        let pid = match parse_ready(&name, &line) {
            Ok(pid) => pid,
            Err(_) => {
                child.wait().await;
                let message = line
                    .trim()
                    .strip_prefix("failed ")
                    .unwrap_or("")
                    .to_string();
                let detail = node.runtime.monitor_diagnostics(&id);
                let reason = match (message.is_empty(), detail.is_empty()) {
                    (true, true) => "the monitor exited before starting the container".to_string(),
                    (true, false) => detail,
                    (false, true) => message,
                    (false, false) => format!("{message} ({detail})"),
                };
                let _ = tx.send(Msg::Failed {
                    name,
                    id: Some(id),
                    reason,
                });
                return;
            }
        };
        let dir = node.runtime.dir(&id);
        let started_at = {
            let (rt, rid) = (node.runtime.clone(), id.clone());
            tokio::task::spawn_blocking(move || rt.started(&rid))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .map(|s| s.started_at)
                .unwrap_or_else(peapod_runtime::log::now_rfc3339_nano)
        };
        let _ = tx.send(Msg::Started {
            name: name.clone(),
            id: id.clone(),
            pid,
            log_path: p.log_path,
            stop_signal: p.stop_signal,
            image_id: p.image_id,
            dir,
            started_at,
        });
        child.wait().await;
        let exited = match record_of_exit(&node, &id).await {
            Some(e) => e,
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

/// The exit the monitor recorded; when it died without recording one (it was killed), the
/// container is killed and cleaned up by the orphan helper first, so nothing runs untracked.
async fn record_of_exit(node: &Node, id: &ContainerId) -> Option<Exited> {
    let rt = node.runtime.clone();
    let rid = id.clone();
    if let Ok(Ok(Some(e))) = tokio::task::spawn_blocking(move || rt.exited(&rid)).await {
        return Some(e);
    }
    tracing::warn!(container = %id, "monitor died without recording an exit; killing the container");
    let cmd = node.runtime.orphan_cleanup_command(id);
    let _ = tokio::process::Command::from(cmd).status().await;
    let rt = node.runtime.clone();
    let rid = id.clone();
    tokio::task::spawn_blocking(move || rt.exited(&rid))
        .await
        .ok()?
        .ok()?
}

/// How often the exit record of an adopted instance is looked for.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// Reports the exit of an instance whose monitor an earlier daemon started (not our child, so
/// its exit is seen when its record appears).
pub(crate) fn watch_adopted_exit(
    node: Node,
    name: String,
    id: ContainerId,
    tx: mpsc::UnboundedSender<Msg>,
) {
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                return;
            }
            let rt = node.runtime.clone();
            let rid = id.clone();
            if let Ok(Ok(Some(exited))) = tokio::task::spawn_blocking(move || rt.exited(&rid)).await
            {
                let _ = tx.send(Msg::Exited { name, id, exited });
                return;
            }
            let monitor = node
                .runtime
                .started(&id)
                .ok()
                .flatten()
                .map(|s| s.monitor_pid)
                .unwrap_or(0);
            if monitor > 0 && !peapod_sys::process::alive(monitor) {
                if let Some(exited) = record_of_exit(&node, &id).await {
                    let _ = tx.send(Msg::Exited { name, id, exited });
                }
                return;
            }
            tokio::time::sleep(ADOPTED_POLL).await;
        }
    });
}

/// Whether an instance's postStart hook is still to run: not for one a restarted daemon
/// adopts (it ran when the instance started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hooks {
    Run,
    AlreadyRan,
}

/// While an instance runs: its postStart hook, then its probes (app containers and sidecars
/// only). Aborted when the instance exits.
pub(crate) fn watch_running(
    ctx: &PodContext,
    name: &str,
    id: &ContainerId,
    target: ProbeTarget,
    tx: mpsc::UnboundedSender<Msg>,
    hooks: Hooks,
    regular_init: bool,
) -> tokio::task::JoinHandle<()> {
    let container = find(ctx, name).cloned();
    let (name, id) = (name.to_string(), id.clone());
    tokio::spawn(async move {
        let Some(c) = container else { return };
        let post_start = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.clone())
            .filter(|_| hooks == Hooks::Run);
        if let Some(hook) = post_start {
            // postStart has no timeout of its own; the kubelet bounds it by the grace period.
            if let Err(message) = run_hook(&hook, &target, Duration::from_secs(30)).await {
                let _ = tx.send(Msg::HookFailed { name, id, message });
                return;
            }
        }
        if regular_init {
            return;
        }
        let probes = match ContainerProbes::of(&c) {
            Ok(p) => p,
            Err(message) => {
                let _ = tx.send(Msg::Probe {
                    name,
                    id,
                    event: ProbeEvent::Unhealthy {
                        kind: crate::probe::ProbeKind::Readiness,
                        message,
                    },
                });
                return;
            }
        };
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let probing = tokio::spawn(probe_container(probes, target, ptx));
        while let Some(event) = prx.recv().await {
            if tx
                .send(Msg::Probe {
                    name: name.clone(),
                    id: id.clone(),
                    event,
                })
                .is_err()
            {
                break;
            }
        }
        probing.abort();
    })
}

/// Runs a lifecycle hook (exec, httpGet, tcpSocket or sleep) with a time limit.
pub(crate) async fn run_hook(
    hook: &LifecycleHandler,
    target: &ProbeTarget,
    limit: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(limit)).await;
        return Ok(());
    }
    let action = if let Some(e) = &hook.exec {
        ProbeAction::Exec(e.command.clone().unwrap_or_default())
    } else if let Some(h) = &hook.http_get {
        let port = match &h.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(p) => {
                p.parse().unwrap_or(0)
            }
        };
        ProbeAction::Http {
            port,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone().unwrap_or_default(),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            https: h.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(t) = &hook.tcp_socket {
        match &t.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => {
                ProbeAction::Tcp { port: *p as u16 }
            }
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(p) => {
                ProbeAction::Tcp {
                    port: p.parse().unwrap_or(0),
                }
            }
        }
    } else {
        return Err("hook has no handler".into());
    };
    run_once(&action, target, limit).await
}

/// Where probes and hooks reach an instance.
pub(crate) fn probe_target(
    node: &Node,
    ctx: &PodContext,
    pod_dir: &SandboxDir,
    dir: &ContainerDir,
) -> ProbeTarget {
    ProbeTarget {
        netns: pod_dir.sandbox_ref().net,
        address: ctx
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
        exe: node.runtime.exe().to_path_buf(),
        container: dir.clone(),
    }
}

/// Resolves the image and translates the container into a runtime config (blocking).
fn prepare(
    node: &Node,
    ctx: &PodContext,
    pod_dir: &SandboxDir,
    name: &str,
    restart: u32,
    found: Option<Image>,
) -> Result<Prepared, String> {
    let spec = ctx.pod.spec.as_ref().ok_or("pod has no spec")?;
    let container = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == name)
        .ok_or_else(|| format!("container {name} not in spec"))?;
    let image = match found {
        Some(image) => image,
        None => {
            let image_name = container.image.clone().unwrap_or_default();
            node.images
                .resolve(&image_name)
                .map_err(|e| format!("ErrImagePull: {}", error_chain(&e)))?
        }
    };
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
    let pod_cgroup = format!("{CGROUP_ROOT}/pod{}", ctx.uid());
    if let Some(max) = node.config.pod_pids_limit {
        peapod_runtime::cgroup::set_pids_max(&pod_cgroup, max)
            .map_err(|e| format!("set the pod's pids limit: {e}"))?;
    }
    let cgroup_path = format!("{pod_cgroup}/{}", ContainerId::random());
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
    config.log_limits = node.config.log_limits;
    config.resources.pids_limit = node.config.pids_limit;
    for m in &mut config.mounts {
        prepare_mount_source(ctx, pod_dir, container, m)?;
    }
    if crate::translate::wants_init(ctx) {
        // A static build (docs/init.md); PEAPOD_INIT_BINARY points elsewhere.
        let binary = std::env::var_os("PEAPOD_INIT_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| node.runtime.exe().with_file_name("peapod-init"));
        if !binary.is_file() {
            return Err(format!(
                "CreateContainerConfigError: {}: {} not found (see docs/init.md)",
                crate::translate::INIT_ANNOTATION,
                binary.display()
            ));
        }
        crate::translate::inject_init(&mut config.args, &mut config.mounts, &binary);
    }
    let log_path = config.log_path.clone();
    let stop_signal = image
        .config
        .stop_signal
        .as_deref()
        .and_then(parse_signal)
        .unwrap_or(Signal::SIGTERM);
    let (id, cmd) = node.runtime.prepare(&config).map_err(|e| error_chain(&e))?;
    Ok(Prepared {
        id,
        cmd,
        log_path,
        stop_signal,
        image_id: image.id.clone(),
    })
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

#[cfg(test)]
mod tests {
    use super::parse_signal;
    use nix::sys::signal::Signal;

    #[test]
    fn stop_signals() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
