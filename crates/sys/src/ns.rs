//! Namespaces: making a pod sandbox's namespaces, pinning them with bind mounts, entering one.
//!
//! See namespaces(7), unshare(2), setns(2). A pinned namespace is a bind mount of
//! `/proc/self/ns/<kind>` on an ordinary file: it keeps the namespace alive with no process in
//! it, which is why peapod needs no pause container.

use crate::{Result, SysError};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

/// The namespaces a pod's containers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNamespace {
    Net,
    Ipc,
    Uts,
}

impl PodNamespace {
    pub const ALL: [PodNamespace; 3] = [PodNamespace::Net, PodNamespace::Ipc, PodNamespace::Uts];

    /// The name under /proc/PID/ns/ and in the OCI runtime spec's file names.
    pub fn proc_name(self) -> &'static str {
        match self {
            PodNamespace::Net => "net",
            PodNamespace::Ipc => "ipc",
            PodNamespace::Uts => "uts",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            PodNamespace::Net => CloneFlags::CLONE_NEWNET,
            PodNamespace::Ipc => CloneFlags::CLONE_NEWIPC,
            PodNamespace::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// Moves the calling thread into new net, IPC and UTS namespaces (a thread may: unlike mount
/// and user namespaces, these need no single-threaded process). Only for a dedicated
/// `std::thread` that exits afterwards, or a single-threaded helper.
pub fn unshare_pod_namespaces() -> Result<()> {
    let flags = PodNamespace::ALL
        .iter()
        .fold(CloneFlags::empty(), |f, ns| f | ns.flag());
    unshare(flags).map_err(|e| SysError::new("unshare", "net,ipc,uts", e))
}

/// Sets the hostname of the calling process's UTS namespace.
pub fn set_hostname(name: &str) -> Result<()> {
    nix::unistd::sethostname(name).map_err(|e| SysError::new("sethostname", name, e))
}

/// Pins the calling thread's namespace `ns` on the file `pin` (created if missing).
pub fn pin(ns: PodNamespace, pin: &Path) -> Result<()> {
    File::create(pin).map_err(|e| SysError::new("create", pin.display(), io_errno(&e)))?;
    let src = format!("/proc/thread-self/ns/{}", ns.proc_name());
    crate::mount::bind(Path::new(&src), pin, false)
}

/// Moves the calling thread into the network namespace pinned at `pin`.
///
/// Only for a dedicated `std::thread` (or a single-threaded helper), never a tokio worker: the
/// thread stays in that namespace until it exits.
pub fn enter_net(pin: &Path) -> Result<()> {
    let file = File::open(pin).map_err(|e| SysError::new("open", pin.display(), io_errno(&e)))?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| SysError::new("setns net", pin.display(), e))
}

pub(crate) fn io_errno(e: &std::io::Error) -> nix::Error {
    e.raw_os_error()
        .map(nix::Error::from_raw)
        .unwrap_or(nix::Error::EIO)
}
