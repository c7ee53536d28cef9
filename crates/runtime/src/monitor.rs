//! The per-container monitor process (`peapod __monitor <dir>`), like conmon or a containerd
//! shim: it creates the container with libcontainer, owns its stdio, writes its log, reaps it
//! and records how it ended.
//!
//! It runs in its own session, single-threaded, and outlives the daemon that started it, so
//! the daemon can crash or be upgraded without stopping a container or losing a log line.

use crate::container::{ContainerDir, ContainerId, Exited, Started};
use crate::error::{io, Result, RuntimeError};
use crate::log::{format_entry, now_rfc3339_nano, LineSplitter, RotatingLog, Stream};
use crate::spec::{oci_spec, ContainerConfig};
use crate::{atomic, cgroup, youki};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use peapod_sys::process::{self as sysproc, Exit};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The root of every cgroup peapod makes, removed when the last one goes.
pub const CGROUP_ROOT: &str = "/peapod";

/// How long to keep draining the container's pipes after it exited (a process that escaped the
/// PID namespace could hold them open forever).
const DRAIN_AFTER_EXIT_MS: u16 = 2000;

/// Runs the monitor for the container in `dir`; returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    let Some(id) = dir
        .file_name()
        .and_then(|n| ContainerId::parse(&n.to_string_lossy()))
    else {
        report_ready(&format!(
            "failed {} is not a container directory",
            dir.display()
        ));
        return 2;
    };
    let dir = ContainerDir {
        id,
        path: dir.to_path_buf(),
    };
    match run(&dir) {
        Ok(()) => 0,
        Err(e) => {
            let message = error_chain(&e);
            // The Debug form too: libcontainer's Display of an I/O error omits the path.
            let _ = writeln!(std::io::stderr(), "monitor: {message}");
            tracing::error!(error = ?e, "container failed");
            report_ready(&format!("failed {message}"));
            1
        }
    }
}

fn run(dir: &ContainerDir) -> Result<()> {
    sysproc::new_session()?;
    sysproc::set_child_subreaper()?;
    let config: ContainerConfig =
        atomic::read_json(&dir.config())?.ok_or_else(|| RuntimeError::StartFailed {
            container: dir.id.to_string(),
            message: "config.json is missing".into(),
        })?;
    let layers: Vec<&Path> = config.layers.iter().rev().map(PathBuf::as_path).collect();
    peapod_sys::mount::overlay(&layers, &dir.upper(), &dir.work(), &dir.rootfs())?;
    let (started, out_r, err_r) = match start(dir, &config) {
        Ok(v) => v,
        Err(e) => {
            cleanup(dir, &config);
            return Err(e);
        }
    };
    report_ready(&format!("started {}", started.pid));
    sysproc::stdout_to_null()?;
    // Supervise from a fresh image of the binary: the pages libcontainer touched are not kept
    // resident for the container's whole life (see `supervise_main`).
    let error = exec_supervisor(dir, &out_r, &err_r);
    tracing::warn!(%error, "re-exec of the monitor failed; supervising in place");
    finish(dir, &config, started, out_r, err_r)
}

/// Pumps the container's output until it exits, cleans up, records the exit.
fn finish(
    dir: &ContainerDir,
    config: &ContainerConfig,
    started: Started,
    out_r: OwnedFd,
    err_r: OwnedFd,
) -> Result<()> {
    let result = pump(dir, config, started, out_r, err_r);
    cleanup(dir, config);
    let exited = result?;
    atomic::write_json(&dir.exited(), &exited)
}

/// Replaces this process with `peapod __monitor <dir> --supervise <out> <err>`, the pipes kept
/// open across the exec. Keeps the PID (so the container stays our child) and the child
/// subreaper flag. Returns only on failure.
fn exec_supervisor(dir: &ContainerDir, out_r: &OwnedFd, err_r: &OwnedFd) -> std::io::Error {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    for fd in [out_r, err_r] {
        if let Err(e) = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        ) {
            return std::io::Error::from(e);
        }
    }
    std::process::Command::new("/proc/self/exe")
        .arg(crate::container::MONITOR_SUBCOMMAND)
        .arg(&dir.path)
        .arg("--supervise")
        .arg(out_r.as_raw_fd().to_string())
        .arg(err_r.as_raw_fd().to_string())
        .exec()
}

/// `peapod __monitor <dir> --supervise <out fd> <err fd>`: the second half of the monitor,
/// after the re-exec: output, exit, cleanup.
pub fn supervise_main(dir: &Path, out_fd: i32, err_fd: i32) -> i32 {
    let Some(id) = dir
        .file_name()
        .and_then(|n| ContainerId::parse(&n.to_string_lossy()))
    else {
        return 2;
    };
    let dir = ContainerDir {
        id,
        path: dir.to_path_buf(),
    };
    let (Ok(Some(config)), Ok(Some(started))) = (
        atomic::read_json::<ContainerConfig>(&dir.config()),
        atomic::read_json::<Started>(&dir.started()),
    ) else {
        let _ = writeln!(
            std::io::stderr(),
            "monitor: config.json or started.json missing after re-exec"
        );
        return 1;
    };
    let (Some(out_r), Some(err_r)) = (
        peapod_sys::process::adopt_fd(out_fd),
        peapod_sys::process::adopt_fd(err_fd),
    ) else {
        return 1;
    };
    match finish(&dir, &config, started, out_r, err_r) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "monitor: {}", error_chain(&e));
            1
        }
    }
}

/// Creates and starts the container; returns its start record and the read ends of its
/// stdout and stderr.
fn start(dir: &ContainerDir, config: &ContainerConfig) -> Result<(Started, OwnedFd, OwnedFd)> {
    let mut config = config.clone();
    config.resources.oom_score_adj = config.resources.oom_score_adj.map(allowed_oom_score_adj);
    let config = &config;
    let spec = oci_spec(config, "rootfs");
    atomic::write_json(&dir.bundle().join("config.json"), &spec)?;
    if let Some(parent) = config.log_path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdin: OwnedFd = File::open("/dev/null").map_err(io("/dev/null"))?.into();
    let stdio = youki::Stdio {
        stdin,
        stdout: out_w,
        stderr: err_w,
    };
    sysproc::reset_signal_dispositions();
    let created = youki::create_and_start(dir.id.as_str(), &dir.state_root(), &dir.bundle(), stdio);
    sysproc::ignore_sigpipe()?;
    let pid = created?;
    let started = Started {
        pid,
        started_at: now_rfc3339_nano(),
        monitor_pid: std::process::id() as i32,
    };
    atomic::write_json(&dir.started(), &started)?;
    // Block signals only now: libcontainer's children inherit the mask, and a container must
    // start with none blocked. A SIGCHLD that came earlier is caught by the first reap.
    drop(sysproc::signal_fd(&[
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ])?);
    Ok((started, out_r, err_r))
}

/// Pumps the container's output into its log until it exited and its pipes are drained.
fn pump(
    dir: &ContainerDir,
    config: &ContainerConfig,
    started: Started,
    out_r: OwnedFd,
    err_r: OwnedFd,
) -> Result<Exited> {
    let pid = started.pid;
    let limits = config.log_limits;
    let mut log = RotatingLog::open(&config.log_path, limits.max_size, limits.max_files)
        .map_err(io(&config.log_path))?;
    let signals = sysproc::signal_fd(&[
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ])?;
    let mut pipes = [
        Some((File::from(out_r), Stream::Stdout, LineSplitter::default())),
        Some((File::from(err_r), Stream::Stderr, LineSplitter::default())),
    ];
    let mut exit: Option<(Exit, String)> = None;
    let mut log_failed_marked = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        for (reaped, how) in sysproc::reap_exited() {
            if reaped == pid {
                exit = Some((how, now_rfc3339_nano()));
            }
        }
        if exit.is_some() && pipes.iter().all(Option::is_none) {
            break;
        }
        let timeout = if exit.is_some() {
            PollTimeout::from(DRAIN_AFTER_EXIT_MS)
        } else {
            PollTimeout::NONE
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let open: Vec<usize> = (0..pipes.len()).filter(|i| pipes[*i].is_some()).collect();
        for i in &open {
            if let Some((file, _, _)) = &pipes[*i] {
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            }
        }
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(peapod_sys::SysError {
                    op: "poll",
                    path: "monitor".into(),
                    source: e,
                }
                .into())
            }
        };
        if ready == 0 {
            break; // drained long enough after the exit
        }
        let revents: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if revents[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo != Signal::SIGCHLD as i32 && exit.is_none() {
                    if let Ok(sig) = Signal::try_from(signo) {
                        sysproc::kill(pid, sig)?;
                    }
                }
            }
        }
        for (slot, i) in open.iter().enumerate() {
            if !revents[slot + 1] {
                continue;
            }
            let Some((file, stream, splitter)) = pipes[*i].as_mut() else {
                continue;
            };
            let n = file.read(&mut buf).unwrap_or(0);
            let now = now_rfc3339_nano();
            let mut entries = splitter.push(&buf[..n]);
            if n == 0 {
                entries.extend(splitter.flush());
            }
            let lines: Vec<Vec<u8>> = entries
                .iter()
                .map(|entry| format_entry(&now, *stream, entry))
                .collect();
            log.write_lines(lines.iter().map(Vec::as_slice));
            if log.dropped > 0 && !log_failed_marked {
                // Best effort: on the same full disk this fails too.
                log_failed_marked = File::create(dir.log_failed()).is_ok();
            }
            if n == 0 {
                pipes[*i] = None;
            }
        }
    }
    for (file, stream, mut splitter) in pipes.into_iter().flatten() {
        drop(file);
        if let Some(entry) = splitter.flush() {
            log.write_line(&format_entry(&now_rfc3339_nano(), stream, &entry));
        }
    }
    log.sync();
    if log.dropped > 0 {
        tracing::warn!(
            dropped = log.dropped,
            "log lines could not be written (disk full?)"
        );
    }
    let (how, finished_at) = exit.unwrap_or((Exit::Signal(9), now_rfc3339_nano()));
    let (exit_code, signal) = match how {
        Exit::Code(c) => (c, None),
        Exit::Signal(s) => (128 + s, Some(s)),
    };
    let oom_killed = cgroup::oom_kills(&config.cgroup_path) > 0;
    Ok(Exited {
        exit_code,
        signal,
        oom_killed,
        started_at: started.started_at,
        finished_at,
    })
}

/// Cleans up after a monitor that died (was killed) before recording its container's exit:
/// the container must not run on untracked, so it is killed, then everything the monitor would
/// have removed is removed and the exit is recorded as a SIGKILL. Runs as `peapod __monitor
/// <dir> --orphan`, a single-threaded process like the monitor itself.
pub fn cleanup_orphan(dir: &Path) -> i32 {
    let Some(id) = dir
        .file_name()
        .and_then(|n| ContainerId::parse(&n.to_string_lossy()))
    else {
        return 2;
    };
    let dir = ContainerDir {
        id,
        path: dir.to_path_buf(),
    };
    if dir.exited().exists() {
        return 0;
    }
    let Ok(Some(config)) = atomic::read_json::<ContainerConfig>(&dir.config()) else {
        return 1;
    };
    let started: Option<Started> = atomic::read_json(&dir.started()).ok().flatten();
    if let Some(s) = &started {
        let _ = sysproc::kill(s.pid, Signal::SIGKILL);
        // Not our child: wait for it to be gone (reaped by whoever inherited it).
        for _ in 0..500 {
            if !sysproc::alive(s.pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    cleanup(&dir, &config);
    let exited = Exited {
        exit_code: 137,
        signal: Some(9),
        oom_killed: false,
        started_at: started.map(|s| s.started_at).unwrap_or_default(),
        finished_at: now_rfc3339_nano(),
    };
    match atomic::write_json(&dir.exited(), &exited) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Deletes libcontainer's state and the cgroups, unmounts the rootfs. Best effort: each step
/// runs even if an earlier one failed, and failures go to the monitor's log.
fn cleanup(dir: &ContainerDir, config: &ContainerConfig) {
    if let Err(e) = youki::delete(dir.id.as_str(), &dir.state_root()) {
        let _ = writeln!(std::io::stderr(), "monitor: {}", error_chain(&e));
    }
    cgroup::remove(&config.cgroup_path, CGROUP_ROOT);
    if let Err(e) = peapod_sys::mount::unmount(&dir.rootfs()) {
        let _ = writeln!(std::io::stderr(), "monitor: {}", error_chain(&e));
    }
}

/// Lowering an OOM score below our own needs CAP_SYS_RESOURCE in the initial user namespace,
/// which a nested or sandboxed node may not have: then the container gets our own score, the
/// lowest it can have, instead of failing to start.
fn allowed_oom_score_adj(wanted: i32) -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(wanted);
    if wanted >= own || peapod_sys::process::can_lower_oom_score() {
        wanted
    } else {
        own
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
        peapod_sys::SysError {
            op: "pipe",
            path: "monitor".into(),
            source: e,
        }
        .into()
    })
}

fn report_ready(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
