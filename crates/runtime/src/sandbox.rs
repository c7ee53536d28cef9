//! Pod sandboxes: the namespaces (network, IPC, UTS), `/dev/shm`, `/etc/hosts`,
//! `/etc/resolv.conf` and volumes that a pod's containers share.
//!
//! The namespaces are pinned by bind mounts (see `peapod_sys::ns::pin`), so no pause process
//! is needed. Creation runs on a thread of its own that unshares the namespaces, pins them and
//! exits (never a tokio thread, which would stay in the pod's namespaces); removal runs in a
//! re-executed helper (`peapod __sandbox remove <dir>`), a single-threaded process.
//!
//! A pod with `shareProcessNamespace: true` also gets a PID namespace, which lives only as
//! long as its PID 1 does: the pod's init (`pod_init.rs`), started by the helper
//! `peapod __sandbox pod-init <dir>` in the pod's namespaces, so that it is nobody's child
//! once the helper exits (a thread of the daemon would make it the daemon's).
//!
//! Layout of `<root>/pods/<uid>/`: `sandbox.json`, `ns/{net,ipc,uts}`, `shm/`, `etc/{hosts,
//! hostname,resolv.conf}`, `volumes/<name>/`, `logs/<container>/<restart>.log`; with a shared
//! PID namespace also `ns/pid`, `pod-init.pid` and `pod-init-root/` (its empty root).

use crate::atomic;
use crate::error::{io, Result, RuntimeError};
use peapod_sys::ns::PodNamespace;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The hidden subcommand of the peapod binary that creates and removes sandboxes.
pub const SANDBOX_SUBCOMMAND: &str = "__sandbox";

/// Kubernetes' default size of a pod's /dev/shm (the container runtime's 64 MiB).
pub const DEFAULT_SHM_BYTES: u64 = 64 * 1024 * 1024;

/// What the sandbox helper sets up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub hostname: String,
    pub hosts: String,
    pub resolv_conf: String,
    /// Names of on-disk `emptyDir` volumes.
    pub disk_volumes: Vec<String>,
    /// `emptyDir` volumes with `medium: Memory`: each one tmpfs, with its `sizeLimit`.
    pub memory_volumes: Vec<MemoryVolume>,
    /// `shareProcessNamespace`: one PID namespace for the pod, with the pod's init as PID 1.
    #[serde(default)]
    pub share_process_namespace: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryVolume {
    pub name: String,
    pub size_limit: Option<u64>,
}

/// The files of one pod sandbox.
#[derive(Debug, Clone)]
pub struct SandboxDir {
    pub path: PathBuf,
}

impl SandboxDir {
    pub fn new(path: PathBuf) -> SandboxDir {
        SandboxDir { path }
    }
    pub fn config(&self) -> PathBuf {
        self.path.join("sandbox.json")
    }
    pub fn ns(&self, ns: PodNamespace) -> PathBuf {
        self.path.join("ns").join(ns.proc_name())
    }
    /// The pinned PID namespace of a pod that shares one.
    pub fn pid_ns(&self) -> PathBuf {
        self.path.join("ns").join("pid")
    }
    /// The host PID of the pod's init (shared PID namespace only).
    pub fn pod_init_pid(&self) -> PathBuf {
        self.path.join("pod-init.pid")
    }
    pub fn shm(&self) -> PathBuf {
        self.path.join("shm")
    }
    pub fn etc(&self, file: &str) -> PathBuf {
        self.path.join("etc").join(file)
    }
    pub fn volume(&self, name: &str) -> PathBuf {
        self.path.join("volumes").join(name)
    }
    pub fn log(&self, container: &str, restart: u32) -> PathBuf {
        self.path
            .join("logs")
            .join(container)
            .join(format!("{restart}.log"))
    }
    pub fn sandbox_ref(&self) -> crate::spec::SandboxRef {
        crate::spec::SandboxRef {
            net: self.ns(PodNamespace::Net),
            ipc: self.ns(PodNamespace::Ipc),
            uts: self.ns(PodNamespace::Uts),
            pid: None,
        }
    }
}

/// Creates the sandbox: its directories, its namespaces made and pinned on a thread of their
/// own, `/dev/shm` and the memory-backed volumes mounted. A failure leaves no mount. Needs
/// nothing of `config` that depends on the pod's address: [`write_files`] writes those,
/// before or after (the daemon gets the address meanwhile).
pub fn create(dir: &SandboxDir, config: &SandboxConfig) -> Result<()> {
    for d in [dir.path.join("ns"), dir.shm(), dir.path.join("logs")] {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    for name in config
        .disk_volumes
        .iter()
        .chain(config.memory_volumes.iter().map(|m| &m.name))
    {
        let d = dir.volume(name);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let (task_dir, task_config) = (dir.clone(), config.clone());
    let made = std::thread::Builder::new()
        .name("pod-sandbox".into())
        .spawn(move || {
            make_namespaces(&task_dir, &task_config).inspect_err(|_| {
                let _ = unmount_all(&task_dir);
            })
        })
        .map_err(|source| RuntimeError::Sandbox {
            path: dir.path.clone(),
            message: format!("start a thread: {source}"),
        })?
        .join();
    made.unwrap_or_else(|_| {
        let _ = unmount_all(dir);
        Err(RuntimeError::Sandbox {
            path: dir.path.clone(),
            message: "the sandbox thread panicked".into(),
        })
    })
}

/// Writes the sandbox's `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` (bind-mounted into
/// its containers) and its record.
pub fn write_files(dir: &SandboxDir, config: &SandboxConfig) -> Result<()> {
    let etc = dir.path.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    std::fs::write(dir.etc("hosts"), &config.hosts).map_err(io(dir.etc("hosts")))?;
    std::fs::write(dir.etc("hostname"), format!("{}\n", config.hostname))
        .map_err(io(dir.etc("hostname")))?;
    std::fs::write(dir.etc("resolv.conf"), &config.resolv_conf)
        .map_err(io(dir.etc("resolv.conf")))?;
    atomic::write_json(&dir.config(), config)
}

/// The helper command that unmounts everything of the sandbox and removes its directory. The
/// helper prints `ok` or `failed <message>` on one line and exits.
pub fn remove_command(exe: &Path, dir: &SandboxDir) -> Command {
    helper(exe, "remove", dir)
}

/// The helper command that starts the pod's init in a created sandbox (shared PID namespace).
pub fn pod_init_command(exe: &Path, dir: &SandboxDir) -> Command {
    helper(exe, "pod-init", dir)
}

fn helper(exe: &Path, verb: &str, dir: &SandboxDir) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(SANDBOX_SUBCOMMAND)
        .arg(verb)
        .arg(&dir.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// Runs the sandbox helper and turns its one line into a result.
pub fn run_helper(mut cmd: Command, dir: &SandboxDir) -> Result<()> {
    let exe = PathBuf::from(cmd.get_program());
    let out = cmd
        .output()
        .map_err(|source| RuntimeError::Spawn { exe, source })?;
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.trim();
    if line == "ok" {
        return Ok(());
    }
    let message = line
        .strip_prefix("failed ")
        .unwrap_or("helper exited without a word");
    Err(RuntimeError::Sandbox {
        path: dir.path.clone(),
        message: message.to_string(),
    })
}

/// Entry point of `peapod __sandbox <remove|pod-init> <dir>`; returns the exit code.
pub fn helper_main(verb: &str, dir: &Path) -> i32 {
    let dir = SandboxDir::new(dir.to_path_buf());
    let result = match verb {
        "remove" => remove(&dir),
        "pod-init" => start_pod_init(&dir),
        other => Err(RuntimeError::Sandbox {
            path: dir.path.clone(),
            message: format!("unknown verb {other}"),
        }),
    };
    let mut out = std::io::stdout();
    match result {
        Ok(()) => {
            let _ = writeln!(out, "ok");
            0
        }
        Err(e) => {
            let _ = writeln!(out, "failed {}", crate::monitor::error_chain(&e));
            1
        }
    }
}

/// On the calling thread, which must exit afterwards: new namespaces, the hostname, loopback
/// up, the namespaces pinned, `/dev/shm` and the memory-backed volumes.
fn make_namespaces(dir: &SandboxDir, config: &SandboxConfig) -> Result<()> {
    peapod_sys::ns::unshare_pod_namespaces()?;
    peapod_sys::ns::set_hostname(&config.hostname)?;
    peapod_sys::net::loopback_up()?;
    for ns in PodNamespace::ALL {
        peapod_sys::ns::pin(ns, &dir.ns(ns))?;
    }
    peapod_sys::mount::tmpfs(&dir.shm(), Some(DEFAULT_SHM_BYTES), 0o1777)?;
    for vol in &config.memory_volumes {
        peapod_sys::mount::tmpfs(&dir.volume(&vol.name), vol.size_limit, 0o777)?;
    }
    Ok(())
}

fn unmount_all(dir: &SandboxDir) -> Result<()> {
    for m in peapod_sys::mount::mounts_under(&dir.path) {
        peapod_sys::mount::unmount(&m)?;
    }
    Ok(())
}

/// In the helper: into the pod's namespaces, then a new PID namespace whose PID 1 is the pod's
/// init.
fn start_pod_init(dir: &SandboxDir) -> Result<()> {
    for ns in PodNamespace::ALL {
        peapod_sys::ns::enter(ns, &dir.ns(ns))?;
    }
    peapod_sys::ns::unshare_pid()?;
    crate::pod_init::start(dir)
}

fn remove(dir: &SandboxDir) -> Result<()> {
    crate::pod_init::stop(dir)?;
    unmount_all(dir)?;
    match std::fs::remove_dir_all(&dir.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&dir.path)(e)),
    }
}
