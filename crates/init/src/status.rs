//! How a process ended, and the exit code init reports for it.
//!
//! A shell reports a process killed by signal N as 128+N (bash(1), "EXIT STATUS"); tini,
//! docker and Kubernetes' container statuses follow the same convention, so init does too.

use std::fmt;

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit(2) with this code.
    Code(i32),
    /// A signal with this number killed it.
    Signal(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The code a shell would report: the exit code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signo) => 128 + signo,
        }
    }

    /// The code init exits with when this program made the container fail: never 0, so the
    /// container's restart policy treats it as a failure even if the program exited cleanly
    /// (an `always` program that kept exiting 0).
    pub fn failure_code(self) -> i32 {
        match self.code() {
            0 => 1,
            code => code,
        }
    }
}

impl From<peapod_sys::process::Exit> for ExitStatus {
    fn from(exit: peapod_sys::process::Exit) -> Self {
        match exit {
            peapod_sys::process::Exit::Code(code) => ExitStatus::Code(code),
            peapod_sys::process::Exit::Signal(signo) => ExitStatus::Signal(signo),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "code {code}"),
            ExitStatus::Signal(signo) => match nix::sys::signal::Signal::try_from(*signo) {
                Ok(signal) => write!(f, "signal {signo} ({})", signal.as_str()),
                Err(_) => write!(f, "signal {signo}"),
            },
        }
    }
}
