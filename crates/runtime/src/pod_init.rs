//! The PID 1 of a pod with `shareProcessNamespace: true`: what the pause container is to a
//! Kubernetes node (<https://kubernetes.io/docs/tasks/configure-pod-container/share-process-namespace/>).
//! Its containers join one PID namespace, whose init must live as long as the pod (a PID
//! namespace whose init died takes no new process) and reap the orphans re-parented to it.
//!
//! It is a hidden mode of the peapod binary (`__pod_init`, dispatched before clap, so it keeps
//! few pages resident), started by the sandbox helper right after `unshare(CLONE_NEWPID)` in
//! the pod's network, IPC and UTS namespaces, in its own session: it outlives the daemon like
//! the monitors do, and a restarted daemon finds it through `pod-init.pid` and the pinned
//! `ns/pid`. It installs no signal handler, so nothing inside the pod can signal it; the
//! sandbox's removal kills it from the host, which also kills whatever is left in the pod.
//!
//! What a container sees of it: `ps` shows it as PID 1 named `peapod-pod-init`; it is
//! chrooted into an empty directory and non-dumpable, so its root, cwd, environment and
//! descriptors are not readable without CAP_SYS_PTRACE.

use crate::error::{io, Result, RuntimeError};
use crate::sandbox::SandboxDir;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand.
pub const POD_INIT_SUBCOMMAND: &str = "__pod_init";
/// Its name in the pod's `ps`.
const ARGV0: &str = "peapod-pod-init";
/// How long removal waits for it to be gone after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Entry point of `peapod __pod_init`: never returns unless its setup fails.
pub fn main() -> i32 {
    // Best effort: each step only narrows what a container can see of this process.
    let _ = peapod_sys::process::new_session();
    let _ = nix::unistd::chroot(".");
    let _ = nix::unistd::chdir("/");
    let _ = peapod_sys::process::set_not_dumpable();
    peapod_sys::process::reap_forever()
}

/// From the sandbox helper, after `unshare_pid()`: starts the pod's init (the first child, so
/// PID 1 of the new namespace), pins its namespace on `ns/pid` and records its host PID.
pub(crate) fn start(dir: &SandboxDir) -> Result<()> {
    let root = dir.path.join("pod-init-root");
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let exe = std::env::current_exe().map_err(io("/proc/self/exe"))?;
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(&exe)
            .arg0(ARGV0)
            .arg(POD_INIT_SUBCOMMAND)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| RuntimeError::Spawn { exe, source })?
    };
    let pid = child.id() as i32;
    let pinned = peapod_sys::ns::pin_pid_namespace(pid, &dir.pid_ns())
        .map_err(RuntimeError::from)
        .and_then(|()| {
            std::fs::write(dir.pod_init_pid(), pid.to_string()).map_err(io(dir.pod_init_pid()))
        });
    if pinned.is_err() {
        let _ = peapod_sys::process::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    // Not waited for: its parent, this helper, exits now and the host's init reaps it.
    drop(child);
    pinned
}

/// Kills the pod's init if it still runs (and with it anything left in the pod's PID
/// namespace), then waits until it is gone. A PID reused by another process is left alone:
/// the process must be in the pinned namespace.
pub(crate) fn stop(dir: &SandboxDir) -> Result<()> {
    let Some(pid) = recorded_pid(&dir.pod_init_pid()) else {
        return Ok(());
    };
    let pin = dir.pid_ns();
    if !peapod_sys::ns::in_pid_namespace(pid, &pin) {
        return Ok(());
    }
    peapod_sys::process::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while peapod_sys::ns::in_pid_namespace(pid, &pin) {
        if Instant::now() >= deadline {
            return Err(RuntimeError::Sandbox {
                path: dir.path.clone(),
                message: format!("pod init {pid} still runs after SIGKILL"),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn recorded_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}
