//! The container configuration peapod hands to the runtime, and its translation into an OCI
//! runtime spec (pure).
//!
//! Defaults follow containerd's CRI plugin, which is what a Kubernetes node gives a container:
//! its default capability set, masked and read-only /proc paths, and read-only /sys
//! (<https://github.com/containerd/containerd/blob/main/pkg/oci/spec.go>).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Everything needed to create one container inside an existing pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The container's name inside its pod (for logs and errors).
    pub name: String,
    /// The image reference it was made from.
    pub image: String,
    /// Unpacked image layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// The final argv, after Kubernetes' command/args rules.
    pub args: Vec<String>,
    /// `KEY=value` entries, image env first and container env after.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub mounts: Vec<Mount>,
    pub sandbox: SandboxRef,
    /// Cgroup path relative to each hierarchy's root, e.g. `/peapod/pod<uid>/<id>`.
    pub cgroup_path: String,
    pub read_only_rootfs: bool,
    /// Where the monitor writes the CRI log of this container instance.
    pub log_path: PathBuf,
    /// Its rotation (absent in configs written before it existed: the kubelet's defaults).
    #[serde(default)]
    pub log_limits: crate::log::LogLimits,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub stdio: Stdio,
}

/// The container's stdio beyond its log (`stdin`, `stdinOnce`, `tty` of a Pod's container):
/// what the monitor keeps open for attach.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stdio {
    /// The container reads a stdin that attached clients write to (else /dev/null).
    pub stdin: bool,
    /// stdin is closed when the first attached client's stdin ends.
    pub stdin_once: bool,
    /// The container's stdio is a terminal made in the container.
    pub tty: bool,
}

/// Cgroup limits, already in the kernel's units.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resources {
    pub memory_limit_bytes: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    pub pids_limit: Option<i64>,
    pub oom_score_adj: Option<i32>,
}

/// Privileges of the container's processes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Security {
    /// The capability set (bounding, effective, permitted), `CAP_`-prefixed.
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    /// No masked or read-only paths, /sys writable, every device allowed.
    pub privileged: bool,
    /// The seccomp filter (`securityContext.seccompProfile`); a privileged container has none.
    #[serde(default)]
    pub seccomp: Seccomp,
}

/// Which seccomp filter a container's processes run under.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter (Kubernetes' default unless the pod asks).
    #[default]
    Unconfined,
    /// The runtime's default profile: [`runtime_default_profile`].
    RuntimeDefault,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            no_new_privileges: false,
            privileged: false,
            seccomp: Seccomp::Unconfined,
        }
    }
}

/// The identity the container's process runs as.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A bind mount of a host path (volume, /etc/hosts, /dev/shm) into the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// The pinned namespaces of the pod sandbox a container joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRef {
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
    /// The pod's shared PID namespace (`shareProcessNamespace`); none: the container's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<PathBuf>,
}

/// containerd's default capability set for a non-privileged container.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Builds the OCI runtime spec (`config.json`) for `config`, with the rootfs at `rootfs`.
pub fn oci_spec(config: &ContainerConfig, rootfs: &str) -> Value {
    let caps = &config.security.capabilities;
    let privileged = config.security.privileged;
    let sys_options = if privileged {
        vec!["nosuid", "noexec", "nodev"]
    } else {
        vec!["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
    ];
    for m in &config.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": options,
        }));
    }
    // A terminal's programs expect TERM (containerd sets it for `tty: true` containers too).
    let mut env = config.env.clone();
    if config.stdio.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": config.stdio.tty,
            "user": {
                "uid": config.user.uid,
                "gid": config.user.gid,
                "additionalGids": config.user.additional_gids,
            },
            "args": config.args,
            "env": env,
            "cwd": config.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            // Absent rather than false: libcontainer loads a seccomp filter while the process
            // still holds CAP_SYS_ADMIN only when the field is absent (without no_new_privs,
            // loading it after the capabilities are dropped fails).
            "noNewPrivileges": config.security.no_new_privileges.then_some(true),
            "oomScoreAdj": config.resources.oom_score_adj,
        },
        "root": {"path": rootfs, "readonly": config.read_only_rootfs},
        "mounts": mounts,
        "linux": {
            "namespaces": [
                match &config.sandbox.pid {
                    Some(path) => json!({"type": "pid", "path": path}),
                    None => json!({"type": "pid"}),
                },
                {"type": "mount"},
                {"type": "network", "path": config.sandbox.net},
                {"type": "ipc", "path": config.sandbox.ipc},
                {"type": "uts", "path": config.sandbox.uts},
            ],
            "cgroupsPath": config.cgroup_path,
            "maskedPaths": if privileged { &[][..] } else { &MASKED_PATHS[..] },
            "readonlyPaths": if privileged { &[][..] } else { &READONLY_PATHS[..] },
            "resources": resources(&config.resources, privileged),
            "seccomp": match config.security.seccomp {
                Seccomp::RuntimeDefault if !privileged => runtime_default_profile(caps),
                _ => Value::Null,
            },
        },
    })
}

/// Syscalls the default profile refuses whatever the capabilities: kernel keyrings, kexec,
/// obsolete or 32-bit-only calls, userfaultfd, clock and module calls of other namespaces.
const ALWAYS_DENIED: &[&str] = &[
    "add_key",
    "keyctl",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "nfsservctl",
    "query_module",
    "create_module",
    "get_kernel_syms",
    "uselib",
    "userfaultfd",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
    "swapon",
    "swapoff",
];

/// Syscalls the default profile allows only to a container holding the capability, as
/// containerd's generated profile does.
const DENIED_WITHOUT: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "lookup_dcookie",
            "mount",
            "umount",
            "umount2",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            "name_to_handle_at",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "unshare",
            "pivot_root",
            "syslog",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "pidfd_getfd",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
    ),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// `seccompProfile: RuntimeDefault`: every syscall allowed except those of [`ALWAYS_DENIED`]
/// and, without the capability that makes them safe, [`DENIED_WITHOUT`], which fail with EPERM.
/// The same calls containerd's default profile refuses to an unprivileged container, written
/// as a deny list: containerd lists the ~350 allowed calls instead, so a syscall newer than its
/// list is refused there and allowed here.
/// <https://kubernetes.io/docs/tutorials/security/seccomp/>
pub fn runtime_default_profile(caps: &[String]) -> Value {
    let mut names: Vec<&str> = ALWAYS_DENIED.to_vec();
    for (cap, calls) in DENIED_WITHOUT {
        if !caps.iter().any(|c| c == cap) {
            names.extend_from_slice(calls);
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

/// The OCI `linux.resources` section: cgroup limits and the device allow-list.
fn resources(r: &Resources, privileged: bool) -> Value {
    let mut out = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
    if let Some(limit) = r.memory_limit_bytes {
        out["memory"] = json!({"limit": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota_us {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period_us.unwrap_or(100_000)));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    if let Some(pids) = r.pids_limit {
        out["pids"] = json!({"limit": pids});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerConfig {
        ContainerConfig {
            name: "echo".into(),
            image: "busybox".into(),
            layers: vec![],
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![5],
            },
            mounts: vec![Mount {
                source: "/pods/p/volumes/data".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            sandbox: SandboxRef {
                net: "/n".into(),
                ipc: "/i".into(),
                uts: "/u".into(),
                pid: None,
            },
            cgroup_path: "/peapod/abc".into(),
            read_only_rootfs: false,
            log_path: "/logs/0.log".into(),
            log_limits: Default::default(),
            resources: Resources {
                memory_limit_bytes: Some(1 << 20),
                cpu_shares: Some(512),
                cpu_quota_us: Some(50_000),
                cpu_period_us: Some(100_000),
                pids_limit: None,
                oom_score_adj: None,
            },
            security: Security::default(),
            stdio: Stdio::default(),
        }
    }

    #[test]
    fn spec_parses_as_oci_and_joins_the_sandbox() {
        let value = oci_spec(&config(), "rootfs");
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(value.clone()).expect("valid OCI spec");
        let linux = spec.linux().as_ref().expect("linux section");
        let ns = linux.namespaces().as_ref().expect("namespaces");
        assert_eq!(ns.len(), 5);
        assert_eq!(value["linux"]["namespaces"][2]["path"], "/n");
        assert!(value["linux"]["namespaces"][0].get("path").is_none());
        let mut shared = config();
        shared.sandbox.pid = Some("/p".into());
        let value = oci_spec(&shared, "rootfs");
        assert_eq!(value["linux"]["namespaces"][0]["path"], "/p");
        assert_eq!(value["process"]["user"]["uid"], 1000);
    }

    #[test]
    fn a_terminal_is_asked_for_with_term_set() {
        assert_eq!(oci_spec(&config(), "rootfs")["process"]["terminal"], false);
        let mut tty = config();
        tty.stdio = Stdio {
            stdin: true,
            stdin_once: false,
            tty: true,
        };
        let value = oci_spec(&tty, "rootfs");
        assert_eq!(value["process"]["terminal"], true);
        assert_eq!(value["process"]["env"], json!(["PATH=/bin", "TERM=xterm"]));
        tty.env.push("TERM=vt100".into());
        let env = &oci_spec(&tty, "rootfs")["process"]["env"];
        assert_eq!(env, &json!(["PATH=/bin", "TERM=vt100"]));
    }

    #[test]
    fn resources_and_privileges() {
        let value = oci_spec(&config(), "rootfs");
        assert_eq!(value["linux"]["resources"]["memory"]["limit"], 1 << 20);
        assert_eq!(value["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(value["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(value["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(
            value["linux"]["maskedPaths"].as_array().map(Vec::len),
            Some(MASKED_PATHS.len())
        );
        let mut privileged = config();
        privileged.security.privileged = true;
        let value = oci_spec(&privileged, "rootfs");
        assert_eq!(value["linux"]["maskedPaths"], json!([]));
        assert_eq!(value["linux"]["resources"]["devices"][0]["allow"], true);
        let spec: oci_spec::runtime::Spec = serde_json::from_value(value).expect("valid OCI spec");
        assert!(spec.linux().is_some());
    }

    #[test]
    fn read_only_volume_is_mounted_ro() {
        let value = oci_spec(&config(), "rootfs");
        let mounts = value["mounts"].as_array().expect("mounts");
        let data = mounts
            .iter()
            .find(|m| m["destination"] == "/data")
            .expect("volume mount");
        assert!(data["options"]
            .as_array()
            .expect("options")
            .contains(&json!("ro")));
        let sys = mounts
            .iter()
            .find(|m| m["destination"] == "/sys")
            .expect("sysfs");
        assert!(sys["options"]
            .as_array()
            .expect("options")
            .contains(&json!("ro")));
    }

    /// Whether the spec's seccomp profile refuses `name`.
    fn denies(spec: &serde_json::Value, name: &str) -> bool {
        spec["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == name))
    }

    #[test]
    fn runtime_default_seccomp_depends_on_capabilities_and_privilege() {
        let mut c = config();
        assert!(oci_spec(&c, "/r")["linux"]["seccomp"].is_null());
        c.security.seccomp = Seccomp::RuntimeDefault;
        let spec = oci_spec(&c, "/r");
        let has = |name: &str| denies(&spec, name);
        assert!(has("keyctl") && has("mount") && has("ptrace") && has("unshare"));
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(spec["process"]["noNewPrivileges"].is_null());
        c.security.capabilities.push("CAP_SYS_ADMIN".into());
        let spec = oci_spec(&c, "/r");
        let has = |name: &str| denies(&spec, name);
        assert!(has("keyctl") && !has("mount") && !has("unshare"));
        c.security.privileged = true;
        assert!(oci_spec(&c, "/r")["linux"]["seccomp"].is_null());
    }
}
