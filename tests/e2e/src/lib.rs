//! The end-to-end tests' shared harness; the tests themselves live in `tests/` and start the real
//! `peapod` binary and the real kubectl.
//!
//! - [`binaries`]: where the peapod binary, the busybox test image and the kubectl bundle are.
//! - [`command`]: running a command to its end under a deadline, its output as [`Out`]; or in
//!   the background, its stdout line by line ([`Running`]).
//! - [`host`]: what of a data root is still on the host (processes, mounts, pod cgroups) and
//!   the sweep that removes it.
//! - [`daemon`]: `peapod serve` on a temporary root, kubectl bound to it, and its teardown.
//! - [`client`]: a blocking HTTPS client of the daemon's API (many requests, raw watches).
//! - [`expect`]: kubectl commands that must succeed (now, or within a deadline); a GET.
//! - [`python`]: the Python `kubernetes` client in a venv.
//! - [`terminal`]: a program driven on a pseudo-terminal (`kubectl exec -it`, `attach -it`).
//!
//! Waits poll with deadlines ([`poll_until`]), never a bare `sleep`.

pub mod binaries;
pub mod client;
pub mod command;
pub mod daemon;
pub mod expect;
pub mod host;
pub mod pods;
pub mod python;
pub mod terminal;

pub use binaries::{busybox_archive, kubectl_bin, peapod_bin, workspace, KUBECTL_DIR, LATEST};
pub use client::{ApiClient, Conn, Response, Watch};
pub use command::{drain, run_command, run_with_input, Out, Running};
pub use daemon::{Daemon, Leftovers, COMMAND_TIMEOUT, POD_TIMEOUT};
pub use expect::http_get;
pub use host::{
    cgroup_processes, cmdline, entries, mounts_under, peapod_processes_under, pod_cgroup_dirs,
    pod_cgroup_processes, processes, processes_mentioning, sweep,
};

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// How often [`poll_until`] checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `check` until it returns `Some` or `deadline` passes.
pub fn poll_until<T>(deadline: Instant, check: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(POLL_INTERVAL, deadline, check)
}

/// [`poll_until`], checking every `interval`.
pub fn poll_every<T>(
    interval: Duration,
    deadline: Instant,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// A TCP port free on loopback when asked (it may be taken again before it is used).
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A TCP port free on `addr` when asked; `Ipv4Addr::UNSPECIFIED` for a pod's hostPort, which
/// binds every address.
pub fn free_port_on(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Fails the test unless it runs as root (namespaces, mounts, cgroups).
pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "e2e tests must run as root"
    );
}

/// After [`assert_root`], a fresh temporary directory named `<prefix>XXXXXX`.
pub fn root_tempdir(prefix: &str) -> tempfile::TempDir {
    assert_root();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}
