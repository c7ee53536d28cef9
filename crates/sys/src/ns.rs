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
    pin_file(&format!("/proc/thread-self/ns/{}", ns.proc_name()), pin)
}

/// Pins the PID namespace of process `pid` on the file `pin` (created if missing). The pin
/// names the namespace; it does not keep it usable: that takes a live PID 1 in it.
pub fn pin_pid_namespace(pid: i32, pin: &Path) -> Result<()> {
    pin_file(&format!("/proc/{pid}/ns/pid"), pin)
}

fn pin_file(src: &str, pin: &Path) -> Result<()> {
    File::create(pin).map_err(|e| SysError::new("create", pin.display(), io_errno(&e)))?;
    crate::mount::bind(Path::new(src), pin, false)
}

/// Moves the calling (single-threaded) process's future children into a new PID namespace:
/// the first one it starts is that namespace's PID 1.
pub fn unshare_pid() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| SysError::new("unshare", "pid", e))
}

/// Whether process `pid` lives in the PID namespace pinned at `pin` (same nsfs inode); false
/// once it has exited, since a dead process has no namespaces.
pub fn in_pid_namespace(pid: i32, pin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(format!("/proc/{pid}/ns/pid"));
    let pinned = std::fs::metadata(pin);
    matches!((ns, pinned), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
}

/// Moves the calling (single-threaded helper) process into the namespace `ns` pinned at `pin`.
pub fn enter(ns: PodNamespace, pin: &Path) -> Result<()> {
    let file = File::open(pin).map_err(|e| SysError::new("open", pin.display(), io_errno(&e)))?;
    setns(file.as_fd(), ns.flag()).map_err(|e| SysError::new("setns", pin.display(), e))
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
