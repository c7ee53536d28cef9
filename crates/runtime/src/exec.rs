//! Running a process inside a running container (`peapod __exec <container dir> -- ARGS`), for
//! exec probes, lifecycle hooks and `kubectl exec` (with a terminal: `exec_tty.rs`).
//!
//! Like the monitor, the helper is a re-executed single-threaded process: it is child
//! subreaper (libcontainer double-forks the new process), passes its own stdio to the process,
//! forwards SIGTERM/SIGINT to it as SIGKILL (a timed-out probe leaves nothing running), and
//! exits with the process's exit code (128 + signal when killed).

use crate::container::ContainerDir;
use crate::youki;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use peapod_sys::process::{self as sysproc, Exit};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

/// The hidden subcommand of the peapod binary that runs a process in a container.
pub const EXEC_SUBCOMMAND: &str = "__exec";

/// Exit code of the helper when the process could not be started at all.
pub const EXEC_FAILED: i32 = 126;

/// The helper's flag for a process with a terminal (`exec_tty.rs`).
pub const TTY_FLAG: &str = "--tty";

/// What the process's stdio is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStdio {
    /// The helper's own stdin, stdout and stderr, passed on.
    Inherited,
    /// A terminal made in the container; the helper's stdin carries framed input
    /// ([`crate::tty::FrameDecoder`]), its stdout the terminal's output.
    Terminal,
}

/// The helper command that runs `args` in the container of `dir`; the caller sets stdio.
pub fn command(exe: &Path, dir: &ContainerDir, args: &[String]) -> Command {
    command_with(exe, dir, args, ExecStdio::Inherited)
}

/// [`command`], with the process's stdio chosen.
pub fn command_with(exe: &Path, dir: &ContainerDir, args: &[String], stdio: ExecStdio) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(EXEC_SUBCOMMAND).arg(&dir.path);
    if stdio == ExecStdio::Terminal {
        cmd.arg(TTY_FLAG);
    }
    cmd.arg("--").args(args).stdin(Stdio::null());
    cmd
}

/// Entry point of `peapod __exec <dir> [--tty] -- ARGS`; returns the exit code.
pub fn helper_main(dir: &Path, stdio: ExecStdio, args: Vec<String>) -> i32 {
    let result = match stdio {
        ExecStdio::Inherited => run(dir, args),
        ExecStdio::Terminal => container_dir(dir).and_then(|d| crate::exec_tty::run(&d, args)),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "peapod exec: {message}");
            EXEC_FAILED
        }
    }
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Result<OwnedFd, String> {
    fd.try_clone_to_owned()
        .map_err(|e| format!("dup stdio: {e}"))
}

/// Writes the container's own process spec (user, groups, working directory, environment,
/// capabilities, no-new-privileges, as its processes have them) with `args` to `path`, with a
/// terminal for [`ExecStdio::Terminal`] (and `TERM`, as a terminal's programs expect it).
pub(crate) fn write_process(
    dir: &ContainerDir,
    args: Vec<String>,
    stdio: ExecStdio,
    path: &Path,
) -> Result<(), String> {
    let bundle = dir.bundle().join("config.json");
    let spec: oci_spec::runtime::Spec = crate::atomic::read_json(&bundle)
        .map_err(|e| crate::monitor::error_chain(&e))?
        .ok_or_else(|| format!("{} is missing", bundle.display()))?;
    let mut process = spec.process().clone().unwrap_or_default();
    let terminal = stdio == ExecStdio::Terminal;
    let mut env = process.env().clone().unwrap_or_default();
    if terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process
        .set_args(Some(args))
        .set_terminal(Some(terminal))
        .set_env(Some(env));
    // A throwaway file read back at once: no fsync (exec probes write one every period).
    let bytes = serde_json::to_vec(&process).map_err(|e| format!("encode process: {e}"))?;
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
}

fn container_dir(dir: &Path) -> Result<ContainerDir, String> {
    let id = dir
        .file_name()
        .and_then(|n| crate::ContainerId::parse(&n.to_string_lossy()))
        .ok_or_else(|| format!("{} is not a container directory", dir.display()))?;
    Ok(ContainerDir {
        id,
        path: dir.to_path_buf(),
    })
}

fn run(dir: &Path, args: Vec<String>) -> Result<i32, String> {
    let dir = container_dir(dir)?;
    if args.is_empty() {
        return Err("no command".into());
    }
    sysproc::set_child_subreaper().map_err(|e| e.to_string())?;
    sysproc::reset_signal_dispositions();
    let stdio = youki::Stdio {
        stdin: dup(std::io::stdin().as_fd())?,
        stdout: dup(std::io::stdout().as_fd())?,
        stderr: dup(std::io::stderr().as_fd())?,
    };
    let process_json = dir.path.join(format!("exec-{}.json", std::process::id()));
    write_process(&dir, args, ExecStdio::Inherited, &process_json)?;
    let created = youki::exec(dir.id.as_str(), &dir.state_root(), &process_json, stdio);
    let _ = sysproc::ignore_sigpipe();
    let _ = std::fs::remove_file(&process_json);
    let pid = created.map_err(|e| crate::monitor::error_chain(&e))?;
    let signals =
        sysproc::signal_fd(&crate::monitor::SUPERVISOR_SIGNALS).map_err(|e| e.to_string())?;
    loop {
        for (reaped, how) in sysproc::reap_exited() {
            if reaped == pid {
                return Ok(match how {
                    Exit::Code(c) => c,
                    Exit::Signal(s) => 128 + s,
                });
            }
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        while let Ok(Some(info)) = signals.read_signal() {
            if info.ssi_signo as i32 != Signal::SIGCHLD as i32 {
                let _ = sysproc::kill(pid, Signal::SIGKILL);
            }
        }
    }
}
