//! Every call into youki's libcontainer lives here: its API changes between minor releases.
//!
//! Only the single-threaded monitor process calls these (libcontainer forks with raw clone3),
//! after making itself child subreaper so the container's init is re-parented to it.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use peapod_sys::tty::WindowSize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A libcontainer failure, with the container it concerned.
#[derive(Debug, thiserror::Error)]
#[error("libcontainer {op} of container {id}")]
pub struct YoukiError {
    pub op: &'static str,
    pub id: String,
    #[source]
    pub source: Box<libcontainer::error::LibcontainerError>,
}

/// A maker of the error of step `op` on container `id`, for `map_err`.
fn failed(
    op: &'static str,
    id: &str,
) -> impl FnOnce(libcontainer::error::LibcontainerError) -> YoukiError {
    let id = id.to_string();
    move |source| YoukiError {
        op,
        id,
        source: Box::new(source),
    }
}

/// The stdio a container's process gets.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Creates and starts the container described by `bundle/config.json`; returns its init PID.
/// With `console_socket` (the spec asks for a terminal) the container's stdio is a pty made in
/// the container, whose master is sent to that listening socket, and `stdio` is unused.
pub fn create_and_start(
    id: &str,
    state_root: &Path,
    bundle: &Path,
    stdio: Stdio,
    console_socket: Option<&Path>,
) -> Result<i32, YoukiError> {
    let err = |op| failed(op, id);
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(err("configure"))?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .with_console_socket(console_socket)
        .validate_id()
        .map_err(err("validate"))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(err("create"))?;
    container.start().map_err(err("start"))?;
    Ok(container.pid().map(|p| p.as_raw()).unwrap_or(0))
}

/// Deletes the container's state and cgroup (forcefully: kills what is left).
pub fn delete(id: &str, state_root: &Path) -> Result<(), YoukiError> {
    let dir = state_root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    let err = |op| failed(op, id);
    let mut container = Container::load(dir).map_err(err("load"))?;
    container.delete(true).map_err(err("delete"))
}

/// Starts the process described by `process_json` (an OCI `process`: the container's own, with
/// other arguments) inside the running container `id` (its namespaces and cgroup); returns its
/// PID. The caller must be child subreaper to reap it.
pub fn exec(
    id: &str,
    state_root: &Path,
    process_json: &Path,
    stdio: Stdio,
) -> Result<i32, YoukiError> {
    let err = |op| failed(op, id);
    let pid = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(err("configure"))?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .as_tenant()
        .with_process(Some(process_json))
        .with_detach(true)
        .build();
    remove_stale_tenant_sockets(&state_root.join(id));
    Ok(pid.map_err(err("exec"))?.as_raw())
}

/// How old a tenant's notify socket must be to be taken for a leftover: a tenant's `build`
/// is done with its socket within seconds.
const STALE_TENANT_SOCKET: std::time::Duration = std::time::Duration::from_secs(60);

/// libcontainer leaves one `tenant-notify-<random>.sock` in the container's state directory per
/// process started in it (exec probes make one every period); those of finished starts go.
/// Their names are random, so age tells ours from a concurrent start's.
fn remove_stale_tenant_sockets(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("tenant-notify-") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TENANT_SOCKET);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Starts the process described by `process_json` (an OCI `process` with `terminal: true`)
/// inside the running container `id`, with a pty made inside the container as its controlling
/// terminal and stdio; the master goes to the listening unix socket `console_socket`. The
/// terminal gets `size` before the process's program runs, so it never sees 0x0. Returns its
/// PID; the caller must be child subreaper to reap it.
pub fn exec_with_terminal(
    id: &str,
    state_root: &Path,
    process_json: &Path,
    console_socket: &Path,
    size: Option<WindowSize>,
) -> Result<i32, YoukiError> {
    let err = |op| failed(op, id);
    let pid = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(err("configure"))?
        .with_console_socket(Some(console_socket))
        .with_executor(SizedTerminal { size })
        .as_tenant()
        .with_process(Some(process_json))
        .with_detach(true)
        .build();
    remove_stale_tenant_sockets(&state_root.join(id));
    Ok(pid.map_err(err("exec"))?.as_raw())
}

/// libcontainer's default executor, after setting the terminal's size: it runs in the new
/// process, once its stdio is the pty's slave, just before `execvp`.
#[derive(Clone)]
struct SizedTerminal {
    size: Option<WindowSize>,
}

impl Executor for SizedTerminal {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        if let Some(size) = self.size {
            let _ = peapod_sys::tty::set_window_size(std::io::stdin().as_fd(), size);
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
