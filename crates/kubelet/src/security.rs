//! securityContext to runtime privileges: capabilities (default set, add, drop), privileged,
//! allowPrivilegeEscalation, runAsNonRoot
//! (<https://kubernetes.io/docs/tasks/configure-pod-container/security-context/>).

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};
use peapod_runtime::spec::DEFAULT_CAPABILITIES;
use peapod_runtime::{Seccomp, Security, User};

/// Every capability a privileged container gets (Linux 6.x).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The seccomp filter for `c`: its `seccompProfile`, else the pod's; `Localhost` profiles are
/// refused (the container is not started, as with a profile file the kubelet cannot find).
pub fn seccomp(c: &Container, pod_sc: Option<&PodSecurityContext>) -> Result<Seccomp, String> {
    let profile = c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
    match profile.map(|p| p.type_.as_str()) {
        None | Some("Unconfined") => Ok(Seccomp::Unconfined),
        Some("RuntimeDefault") => Ok(Seccomp::RuntimeDefault),
        Some(other) => Err(format!("seccomp profile type {other:?} is not supported")),
    }
}

/// The container's privileges from its securityContext.
pub fn security(c: &Container) -> Security {
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let mut caps: Vec<String> = if privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if let Some(cs) = sc.and_then(|s| s.capabilities.as_ref()) {
        let drops: Vec<String> = cs.drop.iter().flatten().map(|d| cap_name(d)).collect();
        if drops.iter().any(|d| d == "CAP_ALL") {
            caps.clear();
        } else {
            caps.retain(|c| !drops.contains(c));
        }
        for add in cs.add.iter().flatten().map(|a| cap_name(a)) {
            if add == "CAP_ALL" {
                caps = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
            } else if !caps.contains(&add) {
                caps.push(add);
            }
        }
    }
    Security {
        capabilities: caps,
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false)
            && !privileged,
        privileged,
        seccomp: Seccomp::Unconfined,
    }
}

/// `runAsNonRoot`: refuses a container that would run as uid 0.
pub fn check_non_root(
    c: &Container,
    pod_sc: Option<&PodSecurityContext>,
    user: &User,
) -> Result<(), String> {
    let required = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root));
    if required == Some(true) && user.uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(sc: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "securityContext": sc})).expect("container")
    }

    #[test]
    fn capabilities_add_and_drop() {
        let s = security(&container(
            json!({"capabilities": {"drop": ["NET_RAW", "chown"], "add": ["SYS_ADMIN"]}}),
        ));
        assert!(!s.capabilities.contains(&"CAP_NET_RAW".to_string()));
        assert!(!s.capabilities.contains(&"CAP_CHOWN".to_string()));
        assert!(s.capabilities.contains(&"CAP_SYS_ADMIN".to_string()));
        let s = security(&container(
            json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        ));
        assert_eq!(s.capabilities, vec!["CAP_NET_BIND_SERVICE".to_string()]);
        let s = security(&container(json!({"privileged": true})));
        assert!(s.privileged);
        assert_eq!(s.capabilities.len(), ALL_CAPABILITIES.len());
        let s = security(&container(json!({"allowPrivilegeEscalation": false})));
        assert!(s.no_new_privileges);
    }

    #[test]
    fn run_as_non_root() {
        let c = container(json!({"runAsNonRoot": true}));
        assert!(check_non_root(&c, None, &User::default()).is_err());
        assert!(check_non_root(
            &c,
            None,
            &User {
                uid: 1000,
                ..Default::default()
            }
        )
        .is_ok());
        assert!(check_non_root(&container(json!({})), None, &User::default()).is_ok());
    }

    #[test]
    fn seccomp_profile_from_container_or_pod() {
        let pod: PodSecurityContext =
            serde_json::from_value(json!({"seccompProfile": {"type": "RuntimeDefault"}}))
                .expect("pod sc");
        let plain = container(json!({}));
        assert_eq!(seccomp(&plain, None), Ok(Seccomp::Unconfined));
        assert_eq!(seccomp(&plain, Some(&pod)), Ok(Seccomp::RuntimeDefault));
        let opted_out = container(json!({"seccompProfile": {"type": "Unconfined"}}));
        assert_eq!(seccomp(&opted_out, Some(&pod)), Ok(Seccomp::Unconfined));
        let local = container(
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}),
        );
        assert!(seccomp(&local, None).is_err());
    }
}
