//! What init tells the user about its programs: one line on stderr per lifecycle transition,
//! `peapod-init: web exited with code 1; restarting in 2s`. Decided by the supervisor (so the
//! wording is tested with it), printed by the loop.

use crate::restart::GiveUp;
use crate::status::ExitStatus;
use std::fmt;
use std::time::Duration;

/// Why init stops every program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT.
    Requested,
    /// This program gave up and the policy is `on_give_up: exit`.
    GaveUp(String),
}

/// A lifecycle transition worth one line on init's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Started {
        program: String,
        pid: i32,
    },
    Ready {
        program: String,
    },
    Restarting {
        program: String,
        status: ExitStatus,
        delay: Duration,
    },
    Completed {
        program: String,
    },
    GaveUp {
        program: String,
        status: ExitStatus,
        why: GiveUp,
    },
    DependencyGaveUp {
        program: String,
        dependency: String,
    },
    StoppingAll {
        reason: StopReason,
    },
    Stopping {
        program: String,
        grace: Duration,
    },
    Killing {
        program: String,
        grace: Duration,
    },
    Stopped {
        program: String,
        status: ExitStatus,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| d.as_secs_f64();
        match self {
            Note::Started { program, pid } => write!(f, "{program} started (pid {pid})"),
            Note::Ready { program } => write!(f, "{program} is ready"),
            Note::Restarting {
                program,
                status,
                delay,
            } => write!(
                f,
                "{program} exited with {status}; restarting in {}s",
                secs(delay)
            ),
            Note::Completed { program } => write!(f, "{program} completed"),
            Note::GaveUp {
                program,
                status,
                why: GiveUp::Failed,
            } => write!(
                f,
                "{program} exited with {status}; giving up (restart policy)"
            ),
            Note::GaveUp {
                program,
                status,
                why: GiveUp::TooManyRestarts,
            } => write!(
                f,
                "{program} exited with {status}; giving up (too many restarts in a row)"
            ),
            Note::DependencyGaveUp {
                program,
                dependency,
            } => write!(f, "{program} will not start: {dependency} gave up"),
            Note::StoppingAll {
                reason: StopReason::Requested,
            } => write!(f, "stopping all programs"),
            Note::StoppingAll {
                reason: StopReason::GaveUp(program),
            } => write!(f, "stopping all programs because {program} gave up"),
            Note::Stopping { program, grace } => write!(
                f,
                "stopping {program}: SIGTERM, SIGKILL after {}s",
                secs(grace)
            ),
            Note::Killing { program, grace } => write!(
                f,
                "{program} still running {}s after SIGTERM: SIGKILL",
                secs(grace)
            ),
            Note::Stopped { program, status } => write!(f, "{program} stopped with {status}"),
        }
    }
}
