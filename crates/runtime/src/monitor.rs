//! The per-container monitor process (`peapod __monitor <dir>`), like conmon or a containerd
//! shim: it creates the container with libcontainer, owns its stdio, writes its log, reaps it
//! and records how it ended.
//!
//! It runs in its own session, single-threaded, and outlives the daemon that started it, so
//! the daemon can crash or be upgraded without stopping a container or losing a log line.
//! It serves attach on `attach.sock` (`attach.rs`): the output as it is logged, and with
//! `stdin: true` the container's stdin (a pipe, or the pty's master with `tty: true`) kept
//! open for clients.

use crate::attach::AttachServer;
use crate::container::{ContainerDir, ContainerId, Exited, Started};
use crate::error::{io, Result, RuntimeError};
use crate::log::now_rfc3339_nano;
use crate::spec::{oci_spec, ContainerConfig};
use crate::tty::ConsoleSocket;
use crate::{atomic, cgroup, youki};
use nix::sys::signal::Signal;
use peapod_sys::process as sysproc;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The root of every cgroup peapod makes, removed when the last one goes.
pub const CGROUP_ROOT: &str = "/peapod";

/// What a process that supervises a container's process (the monitor, an exec helper) takes
/// through its signalfd: its child's exits, and the stop signals it passes on to the child.
pub(crate) const SUPERVISOR_SIGNALS: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// How long libcontainer's container init may take to send its terminal's master.
const MASTER_WAIT_MS: u16 = 10_000;

/// How long a monitor waits after its container started before it re-executes itself, unless
/// a supervised signal comes first (the container exited, or the monitor is told to stop).
/// The re-exec (tearing down the forked image, loading the binary again, dropping pages) is a
/// few milliseconds of CPU; done while the container's own processes start, it held back their
/// first answer by about 1.5 ms on two cores, even in the idle scheduling class (bench
/// harness, n=24: command to first HTTP 200 21.3 -> 19.7 ms with the wait). The container's
/// output waits in its pipes meanwhile.
const REEXEC_AFTER_MS: u16 = 100;

/// A monitor forked ahead of its container (`peapod run`) waits here for the container directory it is to
/// monitor, one line on stdin; then stdin is /dev/null and stderr the container's
/// `monitor.log`, as for a monitor started for that container. `None` when stdin closed first
/// (the daemon had no container for it) or the line names no container directory.
pub fn pooled_dir() -> Option<PathBuf> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    let dir = PathBuf::from(line.trim_end_matches('\n'));
    ContainerId::parse(&dir.file_name()?.to_string_lossy())?;
    sysproc::stdio_to(&dir.join("monitor.log")).ok()?;
    Some(dir)
}

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
    let (started, stdio) = match start(dir, &config) {
        Ok(v) => v,
        Err(e) => {
            cleanup(dir, &config);
            return Err(e);
        }
    };
    report_ready(&format!("started {}", started.pid));
    sysproc::stdout_to_null()?;
    let_the_container_start();
    // Supervise from a fresh image of the binary: the pages libcontainer touched are not kept
    // resident for the container's whole life (see `supervise_main`).
    let error = exec_supervisor(dir, &stdio);
    tracing::warn!(%error, "re-exec of the monitor failed; supervising in place");
    finish(dir, &config, started, stdio, false)
}

/// Waits [`REEXEC_AFTER_MS`], or until a supervised signal is pending. Signals are blocked
/// (see `start`) and nothing reads them here: the supervisor gets them after the re-exec.
fn let_the_container_start() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let Ok(signals) = sysproc::signal_fd(&SUPERVISOR_SIGNALS) else {
        return;
    };
    let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(REEXEC_AFTER_MS));
}

/// The monitor's ends of the container's stdio.
pub struct MonitorStdio {
    /// The read end of stdout; with a terminal, the pty's master.
    pub out: OwnedFd,
    /// The read end of stderr; none with a terminal (it writes stderr to the terminal too).
    pub err: Option<OwnedFd>,
    /// With `stdin: true`, the write end of the container's stdin (with a terminal, the master
    /// again), for attached clients.
    pub stdin: Option<OwnedFd>,
    /// The attach socket's listener.
    pub attach: OwnedFd,
}

impl MonitorStdio {
    /// The descriptors in the order `--supervise` passes them (-1 for none).
    fn raw(&self) -> [i32; 4] {
        use std::os::fd::AsRawFd;
        let raw = |fd: Option<&OwnedFd>| fd.map_or(-1, |f| f.as_raw_fd());
        [
            self.out.as_raw_fd(),
            raw(self.err.as_ref()),
            raw(self.stdin.as_ref()),
            self.attach.as_raw_fd(),
        ]
    }
}

/// Pumps the container's output until it exits, cleans up, records the exit.
/// `background`: the monitor is in the idle scheduling class, to leave once set up.
fn finish(
    dir: &ContainerDir,
    config: &ContainerConfig,
    started: Started,
    stdio: MonitorStdio,
    background: bool,
) -> Result<()> {
    let result = crate::pump::pump(dir, config, started, stdio, background);
    cleanup(dir, config);
    let _ = std::fs::remove_file(dir.path.join(crate::attach::ATTACH_SOCKET));
    let exited = result?;
    atomic::write_json(&dir.exited(), &exited)
}

/// Replaces this process with `peapod __monitor <dir> --supervise <out> <err> <in> <attach>`,
/// the descriptors kept open across the exec. Keeps the PID (so the container stays our child)
/// and the child subreaper flag. Returns only on failure.
fn exec_supervisor(dir: &ContainerDir, stdio: &MonitorStdio) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let fds = stdio.raw();
    for fd in fds.into_iter().filter(|fd| *fd >= 0) {
        if let Err(e) = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        ) {
            return std::io::Error::from(e);
        }
    }
    // The re-exec (loading the binary again, about a millisecond and a half of CPU) and the
    // supervisor's set-up are housekeeping: in the idle scheduling class they wait for the
    // container's own start-up, which competes for the same cores (a CPU running only them
    // counts as free for the container's processes). The supervisor returns to the normal
    // class before it starts copying output.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    let background = sysproc::normal_scheduling() && sysproc::set_idle_scheduling(true).is_ok();
    if background {
        cmd.env(BACKGROUND_ENV, "1");
    }
    let error = cmd
        .arg(crate::container::MONITOR_SUBCOMMAND)
        .arg(&dir.path)
        .arg("--supervise")
        .args(fds.map(|fd| fd.to_string()))
        .exec();
    if background {
        let _ = sysproc::set_idle_scheduling(false);
    }
    error
}

/// Tells the supervisor that the re-exec put it in the idle scheduling class, to leave.
const BACKGROUND_ENV: &str = "PEAPOD_MONITOR_BACKGROUND";

/// `peapod __monitor <dir> --supervise <out> <err> <in> <attach>` (descriptor numbers, -1 for
/// none): the second half of the monitor, after the re-exec: output, attach, exit, cleanup.
pub fn supervise_main(dir: &Path, fds: [i32; 4]) -> i32 {
    let background = std::env::var_os(BACKGROUND_ENV).is_some();
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
    let adopt = peapod_sys::process::adopt_fd;
    let (Some(out), Some(attach)) = (adopt(fds[0]), adopt(fds[3])) else {
        return 1;
    };
    let stdio = MonitorStdio {
        out,
        err: adopt(fds[1]),
        stdin: adopt(fds[2]),
        attach,
    };
    match finish(&dir, &config, started, stdio, background) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "monitor: {}", error_chain(&e));
            1
        }
    }
}

/// Creates and starts the container; returns its start record and the monitor's ends of its
/// stdio.
fn start(dir: &ContainerDir, config: &ContainerConfig) -> Result<(Started, MonitorStdio)> {
    let mut config = config.clone();
    config.resources.oom_score_adj = config.resources.oom_score_adj.map(allowed_oom_score_adj);
    let config = &config;
    let spec = oci_spec(config, "rootfs");
    atomic::write_json(&dir.bundle().join("config.json"), &spec)?;
    if let Some(parent) = config.log_path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // The log is there once the container is reported started (`kubectl logs` answers with
    // what it has, not "waiting to start"), though the supervisor copies output into it only
    // after the re-exec.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log_path)
        .map_err(io(&config.log_path))?;
    let attach = AttachServer::bind(&dir.path)?;

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin, stdin_w) = if config.stdio.stdin && !config.stdio.tty {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (
            File::open("/dev/null").map_err(io("/dev/null"))?.into(),
            None,
        )
    };
    let stdio = youki::Stdio {
        stdin,
        stdout: out_w,
        stderr: err_w,
    };
    let console = match config.stdio.tty {
        true => Some(ConsoleSocket::bind(&dir.path, "console.sock")?),
        false => None,
    };
    sysproc::reset_signal_dispositions();
    let created = youki::create_and_start(
        dir.id.as_str(),
        &dir.state_root(),
        &dir.bundle(),
        stdio,
        console.as_ref().map(|c| c.path.as_path()),
    );
    sysproc::ignore_sigpipe()?;
    let pid = created?;
    let stdio = match console {
        Some(console) => {
            let master = console.receive_master(MASTER_WAIT_MS);
            crate::tty::remove_links_to(&dir.state_root().join(dir.id.as_str()), &console.path);
            let master = master?;
            let stdin = match config.stdio.stdin {
                true => Some(master.try_clone().map_err(io("pty master"))?),
                false => None,
            };
            MonitorStdio {
                out: master,
                err: None,
                stdin,
                attach: attach.into_fd(),
            }
        }
        None => MonitorStdio {
            out: out_r,
            err: Some(err_r),
            stdin: stdin_w,
            attach: attach.into_fd(),
        },
    };
    let started = Started {
        pid,
        started_at: now_rfc3339_nano(),
        monitor_pid: std::process::id() as i32,
    };
    atomic::write_json(&dir.started(), &started)?;
    // Block signals only now: libcontainer's children inherit the mask, and a container must
    // start with none blocked. A SIGCHLD that came earlier is caught by the first reap.
    drop(sysproc::signal_fd(&crate::monitor::SUPERVISOR_SIGNALS)?);
    Ok((started, stdio))
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
