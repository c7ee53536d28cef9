//! What a pod's sandbox holds, decided from its spec (pure): hostname, /etc/hosts,
//! /etc/resolv.conf and the volumes to create; plus writing ConfigMap and Secret volumes.

use crate::context::PodContext;
use crate::worker::Node;
use peapod_api::quantity::parse_quantity;
use peapod_runtime::monitor::{error_chain, CGROUP_ROOT};
use peapod_runtime::sandbox;
use peapod_runtime::sandbox::{MemoryVolume, SandboxConfig, SandboxDir};
use tracing::warn;

/// The sandbox config of a pod: `host_resolv` is the host's /etc/resolv.conf.
pub fn sandbox_config(ctx: &PodContext, host_resolv: &str) -> SandboxConfig {
    let spec = ctx.pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| ctx.name().to_string());
    let mut disk_volumes = Vec::new();
    let mut memory_volumes = Vec::new();
    for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        match &v.empty_dir {
            Some(ed) if ed.medium.as_deref() == Some("Memory") => {
                memory_volumes.push(MemoryVolume {
                    name: v.name.clone(),
                    size_limit: ed.size_limit.as_ref().and_then(|q| parse_quantity(&q.0)),
                })
            }
            Some(_) => disk_volumes.push(v.name.clone()),
            None if v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some() =>
            {
                disk_volumes.push(v.name.clone())
            }
            None => {}
        }
    }
    SandboxConfig {
        hosts: hosts_file(&hostname, ctx.pod_ip.as_deref()),
        resolv_conf: resolv_conf(host_resolv),
        hostname,
        disk_volumes,
        memory_volumes,
        share_process_namespace: crate::translate::shares_pids(ctx),
    }
}

/// The kubelet's managed /etc/hosts
/// (<https://kubernetes.io/docs/tasks/network/customize-hosts-file-for-pods/>).
pub fn hosts_file(hostname: &str, pod_ip: Option<&str>) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    text.push_str(&format!("{}\t{hostname}\n", pod_ip.unwrap_or("127.0.1.1")));
    text
}

/// The host's resolv.conf without loopback nameservers, which a pod's network namespace
/// cannot reach (the kubelet's `dnsPolicy: Default` with the same filtering as
/// systemd-resolved setups need).
pub fn resolv_conf(host: &str) -> String {
    host.lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            !(words.next() == Some("nameserver")
                && words
                    .next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Creates the pod's sandbox; with the daemon's pod network, the pod gets an address while its
/// namespaces are made (/etc/hosts and the downward API carry it), then its veth.
pub(crate) async fn create_sandbox(
    node: &Node,
    ctx: &PodContext,
    dir: &SandboxDir,
) -> Result<(), String> {
    let network = peapod_net::installed();
    let mut ctx = ctx.clone();
    // The directory first: a daemon collecting addresses of vanished pods keeps this one.
    std::fs::create_dir_all(&dir.path)
        .map_err(|e| format!("create {}: {e}", dir.path.display()))?;
    let mut config = sandbox_config(&ctx, &node.host_resolv);
    // The namespaces need no address: they are made while the pod network picks one.
    let (ns_dir, ns_config) = (dir.clone(), config.clone());
    let namespaces = tokio::task::spawn_blocking(move || {
        sandbox::create(&ns_dir, &ns_config).map_err(|e| error_chain(&e))
    });
    let allocated = match &network {
        Some(net) => net.allocate(ctx.uid()).await.map(Some),
        None => Ok(None),
    };
    namespaces.await.map_err(|e| e.to_string())??;
    if let Some(ip) = allocated.map_err(|e| error_chain(&e))? {
        ctx.pod_ip = Some(ip.to_string());
        config.hosts = hosts_file(&config.hostname, ctx.pod_ip.as_deref());
        tracing::debug!(%ip, "pod address allocated");
    }
    let policy = ctx.pod.spec.as_ref().and_then(|s| s.dns_policy.as_deref());
    if let (Some(net), None | Some("ClusterFirst")) = (&network, policy) {
        let c = net.config();
        config.resolv_conf =
            peapod_net::dns::resolv_conf(ctx.namespace(), c.gateway(), &c.cluster_domain);
    }
    // The files and volumes are written while the veth is made: both only need the namespaces
    // and the address.
    let (task_ctx, task_dir) = (ctx.clone(), dir.clone());
    let exe = node.runtime.exe().to_path_buf();
    let files = tokio::task::spawn_blocking(move || {
        sandbox::write_files(&task_dir, &config).map_err(|e| error_chain(&e))?;
        if config.share_process_namespace {
            let cmd = sandbox::pod_init_command(&exe, &task_dir);
            sandbox::run_helper(cmd, &task_dir).map_err(|e| error_chain(&e))?;
        }
        crate::projected::write_all(&task_ctx, &task_dir)
            .map_err(|e| format!("write configMap/secret volume: {e}"))
    });
    let connected = match &network {
        Some(net) => net
            .connect(ctx.uid(), &dir.sandbox_ref().net)
            .await
            .map(drop)
            .map_err(|e| error_chain(&e)),
        None => Ok(()),
    };
    files.await.map_err(|e| e.to_string())??;
    tracing::debug!("pod namespaces and volumes made");
    connected
}

pub(crate) async fn remove_sandbox(node: &Node, dir: &SandboxDir) {
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
    if let (Some(net), Some(uid)) = (peapod_net::installed(), dir.path.file_name()) {
        if let Err(e) = net.release(&uid.to_string_lossy()).await {
            warn!(error = %error_chain(&e), "release pod address");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volumes_by_medium() {
        let pod = serde_json::from_value(
            json!({"metadata": {"name": "web"}, "spec": {"containers": [], "volumes": [
                {"name": "disk", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "host", "hostPath": {"path": "/tmp"}},
            ]}}),
        )
        .expect("pod");
        let cfg = sandbox_config(
            &PodContext::new(pod, vec![], vec![]),
            "nameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch x\n",
        );
        assert_eq!(cfg.hostname, "web");
        assert_eq!(cfg.disk_volumes, vec!["disk".to_string()]);
        assert_eq!(cfg.memory_volumes[0].size_limit, Some(1 << 20));
        assert_eq!(cfg.resolv_conf, "nameserver 10.0.0.1\nsearch x\n");
        assert!(cfg.hosts.ends_with("127.0.1.1\tweb\n"));
        assert!(!cfg.share_process_namespace);
    }
}
