//! Tini mode: run one command as init's only child, forward signals, reap zombies, exit with
//! its status.
//!
//! Follows tini (<https://github.com/krallin/tini>) with `-g`: signals go to the child's process
//! group, so a shell script's own children get them too; init exits as soon as the child does
//! (as PID 1 of a PID namespace, the kernel then kills whatever is left, pid_namespaces(7)).

use crate::signals;
use crate::status::ExitStatus;
use crate::InitError;
use nix::poll::{PollFd, PollFlags};
use peapod_sys::init::Terminal;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::process::Command;

const SIGCHLD: i32 = nix::sys::signal::Signal::SIGCHLD as i32;

/// Runs `argv` (non-empty) and returns init's exit code.
pub fn run(argv: &[OsString]) -> Result<i32, InitError> {
    let signals = signals::setup()?;
    let Some((program, args)) = argv.split_first() else {
        return Ok(0);
    };
    let mut command = Command::new(program);
    command.args(args);
    peapod_sys::init::prepare_child(&mut command, Terminal::TakeForeground);
    let child = command.spawn().map_err(|source| InitError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    })?;
    // Pids fit in an i32 (pid_max is at most 2^22), and the child is never waited through
    // `child`: every exit is collected by the reaping loop below.
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    drop(child);
    loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        signals::wait(&mut fds, None)?;
        for signo in signals::drain(&signals)? {
            if signo != SIGCHLD {
                signals::forward(pid, signo);
            }
        }
        let mut status = None;
        for (reaped, exit) in peapod_sys::process::reap_exited() {
            if reaped == pid {
                status = Some(ExitStatus::from(exit));
            }
        }
        if let Some(status) = status {
            return Ok(status.code());
        }
    }
}
