//! The signal and wait plumbing both loops share: one-time setup, draining the signalfd,
//! waiting on it and the output pipes, forwarding a signal to a process group.

use crate::InitError;
use nix::poll::{PollFd, PollTimeout};
use nix::sys::signalfd::SignalFd;
use std::time::Duration;

/// Prepares init's own process: every signal back to its default disposition (ignored ones
/// would be inherited by the programs, and an ignored SIGCHLD would make the kernel reap
/// children before init sees their status), SIGPIPE ignored for init itself, child subreaper
/// when not PID 1 (so orphans are re-parented to init, prctl(2)), and every catchable signal
/// blocked and read from a signalfd.
pub fn setup() -> Result<SignalFd, InitError> {
    peapod_sys::process::reset_signal_dispositions();
    peapod_sys::process::ignore_sigpipe().map_err(InitError::Signals)?;
    if std::process::id() != 1 {
        peapod_sys::process::set_child_subreaper().map_err(InitError::Subreaper)?;
    }
    peapod_sys::init::catch_signals().map_err(InitError::Signals)
}

/// Every signal number queued on the signalfd, in arrival order.
pub fn drain(signals: &SignalFd) -> Result<Vec<i32>, InitError> {
    let mut out = Vec::new();
    loop {
        match signals.read_signal() {
            Ok(Some(info)) => out.push(info.ssi_signo as i32),
            Ok(None) => return Ok(out),
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(InitError::ReadSignal(e)),
        }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no timeout).
pub fn wait(fds: &mut [PollFd], timeout: Option<Duration>) -> Result<(), InitError> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Round up, so a deadline 0.4 ms away does not spin with a 0 ms timeout.
        Some(t) => PollTimeout::try_from(t.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX),
    };
    match nix::poll::poll(fds, timeout) {
        Ok(_) | Err(nix::Error::EINTR) => Ok(()),
        Err(e) => Err(InitError::Poll(e)),
    }
}

/// Forwards signal `signo` to process group `pgid`, or to process `pgid` if it left the group
/// it leads. A failure is reported and otherwise ignored: one program's oddity must not stop
/// init.
pub fn forward(pgid: i32, signo: i32) {
    let result = match peapod_sys::init::signal_group(pgid, signo) {
        Ok(false) => peapod_sys::init::signal_process(pgid, signo).map(|_| ()),
        other => other.map(|_| ()),
    };
    if let Err(e) = result {
        eprintln!("peapod-init: forward signal {signo}: {e}");
    }
}
