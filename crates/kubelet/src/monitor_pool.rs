//! Monitor processes made ahead of their containers. `peapod run` knows from its manifest how
//! many containers it is about to start, and forks that many copies of itself before it starts
//! any thread ([`MonitorPool::fork`]): each waits for one line on its stdin, the directory of
//! its container, and then is that container's monitor (`peapod_runtime::monitor::main`). A
//! fork of the small process `peapod run` still is at that point (~0.25 ms) costs a fifth of
//! what executing the binary again does (loading it, the dynamic linker, glibc's start-up:
//! 1.3 ms of CPU each), and it is paid before the daemon starts, not after the pod's sandbox. Once its container runs, the monitor re-executes itself as any monitor does,
//! which drops what it inherited. A container that finds none (every restart, every pod of
//! `peapod serve`) starts its monitor as a new process as before. Nothing is kept beyond what
//! was asked for: an unused one exits when the daemon does (its stdin closes).

use peapod_sys::process::{self as sysproc, Forked};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::signal::unix::{signal, SignalKind};

/// The thread name a forked monitor waits under (`ps` shows it instead of `peapod run`'s
/// command line, which it shares until it re-executes itself).
pub const POOLED_NAME: &std::ffi::CStr = c"peapod-monitor";

#[derive(Debug, Default)]
pub struct MonitorPool {
    idle: Mutex<Vec<Forked>>,
}

impl MonitorPool {
    /// Forks `n` monitors, each running `monitor` in the child (it reads its container's
    /// directory from stdin and returns the exit code). Only while the process has no other
    /// thread: before the tokio runtime starts. Best effort: one that cannot be forked is simply
    /// not there (its container starts its own monitor).
    pub fn fork(n: usize, monitor: fn() -> i32) -> MonitorPool {
        // std detects the CPU's features on first use (memchr asks, in libcontainer's init),
        // with a dozen `cpuid`s that a VM traps (~6 us each here): detected once here, the
        // monitors and the processes libcontainer clones from them inherit the answer.
        #[cfg(target_arch = "x86_64")]
        let _ = std::arch::is_x86_feature_detected!("avx2");
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            match sysproc::fork_with_pipes(POOLED_NAME, monitor) {
                Ok(forked) => idle.push(forked),
                Err(error) => tracing::debug!(%error, "fork a monitor ahead of its container"),
            }
        }
        MonitorPool {
            idle: Mutex::new(idle),
        }
    }

    /// A waiting monitor, told to monitor the container in `dir`; `None` when none is left (or
    /// the one taken is gone: it is reaped and the next one tried).
    pub(crate) fn hand(&self, dir: &Path) -> Option<MonitorProcess> {
        loop {
            let forked = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            // One short line into an empty pipe: written at once, never blocks.
            let mut stdin = std::fs::File::from(forked.stdin);
            let written = writeln!(stdin, "{}", dir.display()).is_ok();
            drop(stdin);
            let process = MonitorProcess::forked(forked.pid, forked.stdout);
            match process {
                Ok(p) if written => return Some(p),
                _ => {
                    let _ = sysproc::kill(forked.pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(forked.pid), None);
                }
            }
        }
    }
}

/// A container's monitor process as the kubelet waits on it: started for its container, or
/// forked ahead and handed the container ([`MonitorPool::hand`]).
pub(crate) enum MonitorProcess {
    Spawned(tokio::process::Child),
    Forked {
        pid: i32,
        stdout: Option<tokio::net::unix::pipe::Receiver>,
    },
}

impl MonitorProcess {
    /// A forked monitor with its stdout; needs the tokio runtime (the pipe is registered with
    /// its reactor).
    fn forked(pid: i32, stdout: std::os::fd::OwnedFd) -> std::io::Result<MonitorProcess> {
        Ok(MonitorProcess::Forked {
            pid,
            stdout: Some(tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?),
        })
    }

    /// The first line the monitor writes (`started <pid>` or `failed <why>`); empty when it
    /// closed its stdout first. Only the first call reads.
    pub(crate) async fn first_line(&mut self) -> String {
        let stdout: Option<Box<dyn AsyncRead + Unpin + Send>> = match self {
            MonitorProcess::Spawned(child) => child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
            MonitorProcess::Forked { stdout, .. } => stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
        };
        let mut line = String::new();
        if let Some(stdout) = stdout {
            let _ = BufReader::new(stdout).read_line(&mut line).await;
        }
        line
    }

    /// Waits for the monitor to exit, and reaps it.
    pub(crate) async fn wait(&mut self) {
        match self {
            MonitorProcess::Spawned(child) => {
                let _ = child.wait().await;
            }
            MonitorProcess::Forked { pid, .. } => {
                // Listening before looking: an exit between the two still wakes the loop.
                let mut sigchld = signal(SignalKind::child()).ok();
                while !sysproc::try_reap(*pid) {
                    let woken = match sigchld.as_mut() {
                        Some(s) => s.recv().await.is_some(),
                        None => false,
                    };
                    if !woken {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}
