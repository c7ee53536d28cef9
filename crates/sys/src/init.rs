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
/// The mask is inherited across fork and `execve`: children get an empty one back through
/// [`prepare_child`].
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

/// Sends signal number `signo` (real-time ones included) to every process in group `pgid`.
/// Returns whether the group existed; a group that is already empty is not an error.
pub fn signal_group(pgid: i32, signo: i32) -> Result<bool> {
    if pgid <= 1 {
        // kill(0) and kill(-1) would signal far more than one group.
        return Err(SysError::new("kill", pgid, nix::Error::EINVAL));
    }
    raw_kill(-pgid, signo, "group")
}

/// Sends signal number `signo` to one process. Returns whether it existed.
pub fn signal_process(pid: i32, signo: i32) -> Result<bool> {
    if pid <= 0 {
        return Err(SysError::new("kill", pid, nix::Error::EINVAL));
    }
    raw_kill(pid, signo, "process")
}

fn raw_kill(target: i32, signo: i32, what: &str) -> Result<bool> {
    // SAFETY: kill(2) takes two integers and touches no memory. Callers never pass 0 or -1,
    // which would fan out to the caller's group or to every process.
    let rc = unsafe { libc::kill(target, signo) };
    if rc == 0 {
        return Ok(true);
    }
    match nix::Error::last() {
        nix::Error::ESRCH => Ok(false),
        e => Err(SysError::new("kill", format!("{what} {}", target.abs()), e)),
    }
}

/// What a child does with the controlling terminal before `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// Leave it alone (a supervised program, whose stdin is /dev/null).
    Leave,
    /// When standard input is a terminal, make the child's group its foreground group, so an
    /// interactive program (`kubectl run -it ... -- sh`) can read from it.
    TakeForeground,
}

/// Makes `command` start with an empty signal mask (init blocks every signal it reads from its
/// signalfd, and a blocked mask survives `execve`), as the leader of a new process group, and
/// with the terminal if `terminal` says so.
///
/// The terminal is taken in the child, not by init after the spawn, so the program can never
/// reach a terminal read while still in the background (which would stop it with SIGTTIN).
pub fn prepare_child(command: &mut Command, terminal: Terminal) {
    command.process_group(0);
    let closure = move || {
        // SAFETY: runs in the forked child before execve, so only async-signal-safe calls are
        // made: sigemptyset, sigprocmask, isatty, signal, tcsetpgrp and getpgrp, on integers
        // and on `set`, a sigset_t on this stack frame that sigemptyset initialises before
        // sigprocmask reads it. SIGTTOU is ignored around tcsetpgrp because a background group
        // calling it would otherwise be stopped; it is put back to the default afterwards.
        unsafe {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if terminal == Terminal::TakeForeground && libc::isatty(libc::STDIN_FILENO) == 1 {
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above) and allocates nothing
    // on its success path.
    unsafe {
        command.pre_exec(closure);
    }
}
