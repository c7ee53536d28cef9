//! What happens when a supervised program exits: restart after a backoff, done, or give up.
//!
//! The backoff is Kubernetes' CrashLoopBackOff scaled down to one container's programs
//! (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy>): 1 s
//! doubling to 30 s, reset once a program has stayed up for 60 s. Unlike the kubelet, init gives
//! up after `max_restarts` restarts in a row, so the container exits and the kubelet's own,
//! longer backoff and the pod's status take over.

use crate::config::Restart;
use crate::status::ExitStatus;
use std::time::Duration;

/// The first restart delay.
pub const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// The longest restart delay.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// A program up this long is healthy again: its restart count starts over.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// The delay before restart number `restarts + 1` of a run of consecutive restarts.
pub fn delay(restarts: u32) -> Duration {
    let doubled = INITIAL_DELAY.saturating_mul(1u32.checked_shl(restarts).unwrap_or(u32::MAX));
    doubled.min(MAX_DELAY)
}

/// Why a program will not be started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Its restart policy does not restart it after a failure.
    Failed,
    /// It has already been restarted `max_restarts` times in a row.
    TooManyRestarts,
}

/// What to do with a program that just exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`; `restarts` is the new count of consecutive restarts.
    Restart { delay: Duration, restarts: u32 },
    /// It finished successfully and its policy does not restart it.
    Completed,
    /// It failed for good.
    GiveUp(GiveUp),
}

/// Decides what follows an exit. `restarts` is the count of consecutive restarts so far and
/// `up_for` how long this run lasted (a run of [`RESET_AFTER`] or more starts the count over).
pub fn decide(
    policy: Restart,
    max_restarts: u32,
    status: ExitStatus,
    restarts: u32,
    up_for: Duration,
) -> Decision {
    let restarts = if up_for >= RESET_AFTER { 0 } else { restarts };
    let wants_restart = match policy {
        Restart::Always => true,
        Restart::OnFailure => !status.success(),
        Restart::Never => false,
    };
    if !wants_restart {
        return if status.success() {
            Decision::Completed
        } else {
            Decision::GiveUp(GiveUp::Failed)
        };
    }
    if restarts >= max_restarts {
        return Decision::GiveUp(GiveUp::TooManyRestarts);
    }
    Decision::Restart {
        delay: delay(restarts),
        restarts: restarts + 1,
    }
}
