//! Probes, run by peapod itself and never by tools in the image: exec (through the `__exec`
//! helper, in the container's namespaces), httpGet, tcpSocket and grpc (dialled inside the pod's
//! network namespace; grpc in `grpc_probe.rs`).
//!
//! Semantics follow the kubelet: a startup probe gates liveness and readiness; a result
//! changes only after `successThreshold` successes or `failureThreshold` failures in a row
//! (<https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/>).

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use peapod_runtime::container::ContainerDir;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec(Vec<String>),
    Http {
        port: u16,
        path: String,
        host: String,
        headers: Vec<(String, String)>,
        https: bool,
    },
    Tcp {
        port: u16,
    },
    /// `grpc.health.v1.Health/Check` of `service` (empty: the server as a whole).
    Grpc {
        port: u16,
        service: String,
    },
}

/// A probe with its timing, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// Probe-level terminationGracePeriodSeconds (liveness and startup only).
    pub termination_grace: Option<Duration>,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// What the probe task tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe succeeded (or there is none): the container counts as started.
    Started,
    Ready(bool),
    /// A probe failed once (the kubelet's `Unhealthy` event).
    Unhealthy {
        kind: ProbeKind,
        message: String,
    },
    /// Liveness or startup failed `failureThreshold` times: the container must be restarted.
    Failed {
        kind: ProbeKind,
        message: String,
        grace: Option<Duration>,
    },
}

fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) if (1..=65535).contains(n) => Ok(*n as u16),
        IntOrString::Int(n) => Err(format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port as u16)
            .ok_or_else(|| format!("port {name:?} not found in the container's ports")),
    }
}

fn secs(v: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(v.map_or(default, |v| v.max(0) as u64).max(min))
}

/// The probe spec with the API's defaults: period 10 s, timeout 1 s, thresholds 1 and 3.
pub fn probe_spec(probe: &Probe, c: &Container) -> Result<ProbeSpec, String> {
    let action = if let Some(e) = &probe.exec {
        ProbeAction::Exec(e.command.clone().unwrap_or_default())
    } else if let Some(h) = &probe.http_get {
        ProbeAction::Http {
            port: port(&h.port, c)?,
            path: h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            // Empty: the pod's IP, known when the probe runs (`ProbeTarget::address`).
            host: h.host.clone().unwrap_or_default(),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            https: h.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(t) = &probe.tcp_socket {
        ProbeAction::Tcp {
            port: port(&t.port, c)?,
        }
    } else if let Some(g) = &probe.grpc {
        ProbeAction::Grpc {
            port: u16::try_from(g.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {}", g.port))?,
            service: g.service.clone().unwrap_or_default(),
        }
    } else {
        return Err("probe has no handler".into());
    };
    Ok(ProbeSpec {
        action,
        initial_delay: secs(probe.initial_delay_seconds, 0, 0),
        period: secs(probe.period_seconds, 10, 1),
        timeout: secs(probe.timeout_seconds, 1, 1),
        success_threshold: probe.success_threshold.map_or(1, |v| v.max(1) as u32),
        failure_threshold: probe.failure_threshold.map_or(3, |v| v.max(1) as u32),
        termination_grace: probe
            .termination_grace_period_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
    })
}

/// Consecutive results; a result flips only past its threshold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Records one result; returns the new verdict when a threshold was just reached.
    pub fn observe(&mut self, ok: bool, spec: &ProbeSpec) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes == spec.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures == spec.failure_threshold).then_some(false)
        }
    }
}

/// Where probes reach the container.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub netns: PathBuf,
    /// What network probes and hooks dial when they name no host: the pod's IP, as the kubelet
    /// dials (a server bound to 127.0.0.1 only fails them, as on a node); 127.0.0.1 for a pod
    /// without a network of its own.
    pub address: std::net::Ipv4Addr,
    pub exe: PathBuf,
    pub container: ContainerDir,
}

/// Runs one probe; `Err` carries the kubelet-style failure message.
pub async fn run_once(
    action: &ProbeAction,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    // One deadline for the whole attempt: the gRPC probe words its own timeouts as the kubelet
    // does and, polled first, reaches the same deadline first.
    let deadline = tokio::time::Instant::now() + timeout;
    let attempt = async {
        match action {
            ProbeAction::Exec(args) => exec(args, target).await,
            ProbeAction::Tcp { port } => peapod_net::hostport::dial_addr_in_netns(
                target.netns.clone(),
                target.address,
                *port,
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("dial tcp {}:{port}: {e}", target.address)),
            ProbeAction::Http {
                port,
                path,
                host,
                headers,
                https,
            } => {
                if *https {
                    return Err("HTTPS probes are not supported yet".into());
                }
                http_get(target, *port, path, host, headers).await
            }
            ProbeAction::Grpc { port, service } => {
                let addr = std::net::SocketAddrV4::new(target.address, *port);
                let dial = peapod_net::hostport::dial_addr_in_netns(
                    target.netns.clone(),
                    target.address,
                    *port,
                );
                crate::grpc_probe::probe(dial, addr, service, timeout, deadline).await
            }
        }
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

async fn exec(args: &[String], target: &ProbeTarget) -> Result<(), String> {
    let cmd = peapod_runtime::exec::command(&target.exe, &target.container, args);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| format!("exec probe: {e}"))?;
    let pid = child.id();
    // On timeout this future is dropped: tell the helper to kill the probe's process.
    let guard = KillOnDrop(pid);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("exec probe: {e}"))?;
    std::mem::forget(guard);
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.truncate(10 * 1024);
    Err(format!(
        "command {:?} exited with {}: {}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        text.trim()
    ))
}

struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = peapod_sys::process::kill(pid as i32, nix::sys::signal::Signal::SIGTERM);
        }
    }
}

async fn http_get(
    target: &ProbeTarget,
    port: u16,
    path: &str,
    host: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    // No host: the pod's IP (the kubelet's default); a host that is an address is dialled
    // from the pod's network namespace.
    let host = if host.is_empty() {
        target.address.to_string()
    } else {
        host.to_string()
    };
    let addr = host.parse().unwrap_or(target.address);
    let url = format!("http://{host}:{port}{path}");
    let mut stream = peapod_net::hostport::dial_addr_in_netns(target.netns.clone(), addr, port)
        .await
        .map_err(|e| format!("Get {url:?}: dial tcp: {e}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status =
        parse_status(&head).ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// The probes of one container instance.
#[derive(Debug, Clone, Default)]
pub struct ContainerProbes {
    pub startup: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
}

impl ContainerProbes {
    pub fn of(c: &Container) -> Result<ContainerProbes, String> {
        let spec = |p: &Option<Probe>| p.as_ref().map(|p| probe_spec(p, c)).transpose();
        Ok(ContainerProbes {
            startup: spec(&c.startup_probe)?,
            liveness: spec(&c.liveness_probe)?,
            readiness: spec(&c.readiness_probe)?,
        })
    }
}

/// Probes one container instance until it exits (the caller aborts the task) or a liveness or
/// startup probe gives up.
pub async fn probe_container(
    probes: ContainerProbes,
    target: ProbeTarget,
    events: mpsc::UnboundedSender<ProbeEvent>,
) {
    if let Some(spec) = &probes.startup {
        if let Err(e) = until_verdict(ProbeKind::Startup, spec, &target, &events).await {
            let _ = events.send(ProbeEvent::Failed {
                kind: ProbeKind::Startup,
                message: e,
                grace: spec.termination_grace,
            });
            return;
        }
    }
    let _ = events.send(ProbeEvent::Started);
    if probes.readiness.is_none() {
        let _ = events.send(ProbeEvent::Ready(true));
    }
    let liveness = async {
        let Some(spec) = &probes.liveness else {
            return std::future::pending().await;
        };
        if let Err(message) = until_verdict(ProbeKind::Liveness, spec, &target, &events).await {
            let _ = events.send(ProbeEvent::Failed {
                kind: ProbeKind::Liveness,
                message,
                grace: spec.termination_grace,
            });
        }
    };
    let readiness = async {
        let Some(spec) = &probes.readiness else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(spec.initial_delay).await;
        let mut streak = Streak::default();
        loop {
            let result = run_once(&spec.action, &target, spec.timeout).await;
            if let Err(message) = &result {
                let _ = events.send(ProbeEvent::Unhealthy {
                    kind: ProbeKind::Readiness,
                    message: message.clone(),
                });
            }
            if let Some(verdict) = streak.observe(result.is_ok(), spec) {
                let _ = events.send(ProbeEvent::Ready(verdict));
            }
            tokio::time::sleep(spec.period).await;
        }
    };
    tokio::select! {
        _ = liveness => {}
        _ = readiness => {}
    }
}

/// Startup: runs until success (`Ok`) or `failureThreshold` failures (`Err`). Liveness: runs
/// until `failureThreshold` failures in a row (`Err`).
async fn until_verdict(
    kind: ProbeKind,
    spec: &ProbeSpec,
    target: &ProbeTarget,
    events: &mpsc::UnboundedSender<ProbeEvent>,
) -> Result<(), String> {
    tokio::time::sleep(spec.initial_delay).await;
    let mut streak = Streak::default();
    loop {
        let result = run_once(&spec.action, target, spec.timeout).await;
        if let Err(message) = &result {
            let _ = events.send(ProbeEvent::Unhealthy {
                kind,
                message: message.clone(),
            });
        }
        match (streak.observe(result.is_ok(), spec), kind) {
            (Some(true), ProbeKind::Startup) => return Ok(()),
            (Some(false), _) => return Err(result.err().unwrap_or_default()),
            _ => {}
        }
        tokio::time::sleep(spec.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    #[test]
    fn defaults_and_named_ports() {
        let c = container(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}}}),
        );
        let spec = probe_spec(c.liveness_probe.as_ref().expect("probe"), &c).expect("spec");
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
        assert!(
            matches!(spec.action, ProbeAction::Http { port: 8080, ref path, .. } if path == "/healthz")
        );
        let bad =
            container(json!({"name": "c", "readinessProbe": {"tcpSocket": {"port": "nope"}}}));
        assert!(probe_spec(bad.readiness_probe.as_ref().expect("probe"), &bad).is_err());
    }

    #[test]
    fn streaks_flip_at_thresholds() {
        let c = container(
            json!({"name": "c", "readinessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2, "failureThreshold": 2}}),
        );
        let spec = probe_spec(c.readiness_probe.as_ref().expect("probe"), &c).expect("spec");
        let mut s = Streak::default();
        let seen: Vec<Option<bool>> = [true, true, true, false, true, false, false, false]
            .iter()
            .map(|ok| s.observe(*ok, &spec))
            .collect();
        assert_eq!(
            seen,
            vec![None, Some(true), None, None, None, None, Some(false), None]
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"garbage"), None);
    }
}
