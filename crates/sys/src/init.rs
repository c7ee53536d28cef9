//! Signal plumbing for `peapod-init`, the PID 1 a container can run: a signalfd over every
//! signal it can forward (real-time ones included), raw `kill` for signal numbers `nix` has no
//! name for, and handing the terminal to a child's process group.
//!
//! See signal(7), signalfd(2), kill(2), tcsetpgrp(3). The signal set follows tini
//! (<https://github.com/krallin/tini/blob/master/src/tini.c>, `configure_signals`): every signal
//! is caught except the synchronous ones a faulting thread raises against itself, and SIGTTIN /
//! SIGTTOU, which must keep their default action so a background read stops the reader.

use crate::{Result, SysError};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals `peapod-init` leaves alone: synchronous faults (they only make sense for the thread
/// that caused them), job-control stops on the terminal, SIGPIPE (kept ignored, so a vanished
/// reader of init's own stdout cannot kill it), and the two that cannot be caught at all.
const NOT_CAUGHT: [Signal; 12] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGPIPE,
    Signal::SIGKILL,
    Signal::SIGSTOP,
];

/// Blocks every signal init catches (SIGCHLD and the real-time signals included) and returns a
/// non-blocking, close-on-exec signalfd that reads them.
///
/// Blocked signals are queued even for a PID 1 whose disposition is the default, which is what
/// lets a namespace's init receive them without installing handlers (pid_namespaces(7)).
/// Children started with `std::process::Command` get an empty signal mask back before `execve`.
pub fn catch_signals() -> Result<SignalFd> {
    // `SigSet::all()` is `sigfillset`, which in glibc leaves out its two internal signals.
    let mut set = SigSet::all();
    for s in NOT_CAUGHT {
        set.remove(s);
    }
    set.thread_block()
        .map_err(|e| SysError::new("sigprocmask", "block", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SysError::new("signalfd", "init", e))
}

/// Sends signal number `signo` (real-time ones included) to every process in group `pgid`; a
/// group that is already empty is not an error.
pub fn signal_group(pgid: i32, signo: i32) -> Result<()> {
    if pgid <= 1 {
        // kill(-1) and kill(0) would signal far more than one group.
        return Err(SysError::new("kill", pgid, nix::Error::EINVAL));
    }
    // SAFETY: kill(2) takes two integers and touches no memory; a negative pid names one
    // process group, and `pgid > 1` was checked so it is never 0 or -1 (which fan out).
    let rc = unsafe { libc::kill(-pgid, signo) };
    if rc < 0 {
        let e = nix::Error::last();
        if e != nix::Error::ESRCH {
            return Err(SysError::new("kill", format!("group {pgid}"), e));
        }
    }
    Ok(())
}

/// Makes `command` start as the leader of a new process group which, when standard input is a
/// terminal, becomes the terminal's foreground group before `execve`, so an interactive program
/// (`kubectl run -it ... -- sh`) can read from it.
///
/// This is done in the child, not in init after the spawn, so the program can never reach a
/// terminal read while still in the background (which would stop it with SIGTTIN).
pub fn spawn_in_foreground_group(command: &mut Command) {
    command.process_group(0);
    let closure = || {
        // SAFETY: runs in the forked child before execve, so only async-signal-safe calls are
        // made: isatty, signal, tcsetpgrp and getpgrp, all on integers. SIGTTOU is ignored
        // around tcsetpgrp because a background group calling it would otherwise be stopped;
        // it is put back to the default so the program starts with default dispositions.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) == 1 {
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above) and allocates nothing.
    unsafe {
        command.pre_exec(closure);
    }
}
