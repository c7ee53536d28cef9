//! Every call into youki's libcontainer lives here: its API changes between minor releases.
//!
//! Only the single-threaded monitor process calls these (libcontainer forks with raw clone3),
//! after making itself child subreaper so the container's init is re-parented to it.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use std::os::fd::OwnedFd;
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

/// The stdio a container's process gets.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Creates and starts the container described by `bundle/config.json`; returns its init PID.
pub fn create_and_start(
    id: &str,
    state_root: &Path,
    bundle: &Path,
    stdio: Stdio,
) -> Result<i32, YoukiError> {
    let err = |op| {
        move |source| YoukiError {
            op,
            id: id.to_string(),
            source: Box::new(source),
        }
    };
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(err("configure"))?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
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
    let err = |op| {
        move |source| YoukiError {
            op,
            id: id.to_string(),
            source: Box::new(source),
        }
    };
    let mut container = Container::load(dir).map_err(err("load"))?;
    container.delete(true).map_err(err("delete"))
}

/// Starts `args` as a new process inside the running container `id` (its namespaces, cgroup,
/// user, capabilities and environment, from the container's spec); returns its PID. The caller
/// must be child subreaper to reap it.
pub fn exec(
    id: &str,
    state_root: &Path,
    args: Vec<String>,
    stdio: Stdio,
) -> Result<i32, YoukiError> {
    let err = |op| {
        move |source| YoukiError {
            op,
            id: id.to_string(),
            source: Box::new(source),
        }
    };
    let pid = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(err("configure"))?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .as_tenant()
        .with_container_args(args)
        .with_detach(true)
        .build()
        .map_err(err("exec"))?;
    Ok(pid.as_raw())
}
