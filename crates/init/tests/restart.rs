//! Backoff delays and restart decisions.

use peapod_init::config::Restart::{Always, Never, OnFailure};
use peapod_init::restart::{decide, delay, Decision, GiveUp};
use peapod_init::status::ExitStatus;
use std::time::Duration;

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn delay_doubles_from_one_second_to_thirty() {
    let table = [
        (0, 1),
        (1, 2),
        (2, 4),
        (3, 8),
        (4, 16),
        (5, 30),
        (6, 30),
        (40, 30),
    ];
    for (restarts, secs) in table {
        assert_eq!(delay(restarts), S(secs), "restarts {restarts}");
    }
}

#[test]
fn decisions() {
    use ExitStatus::*;
    let restart = |secs, restarts| Decision::Restart {
        delay: S(secs),
        restarts,
    };
    // (policy, max_restarts, status, restarts so far, up for, decision)
    let table = [
        (Always, 5, Code(0), 0, S(1), restart(1, 1)),
        (Always, 5, Code(1), 0, S(1), restart(1, 1)),
        (Always, 5, Signal(9), 2, S(1), restart(4, 3)),
        (
            Always,
            5,
            Code(1),
            5,
            S(1),
            Decision::GiveUp(GiveUp::TooManyRestarts),
        ),
        // A minute up resets the count.
        (Always, 5, Code(1), 5, S(60), restart(1, 1)),
        (Always, 5, Code(1), 4, S(59), restart(16, 5)),
        (
            Always,
            0,
            Code(1),
            0,
            S(1),
            Decision::GiveUp(GiveUp::TooManyRestarts),
        ),
        (OnFailure, 5, Code(0), 3, S(1), Decision::Completed),
        (OnFailure, 5, Code(2), 0, S(1), restart(1, 1)),
        (OnFailure, 5, Signal(15), 1, S(1), restart(2, 2)),
        (
            OnFailure,
            2,
            Code(2),
            2,
            S(1),
            Decision::GiveUp(GiveUp::TooManyRestarts),
        ),
        (Never, 5, Code(0), 0, S(1), Decision::Completed),
        (Never, 5, Code(1), 0, S(1), Decision::GiveUp(GiveUp::Failed)),
        (
            Never,
            5,
            Signal(9),
            0,
            S(100),
            Decision::GiveUp(GiveUp::Failed),
        ),
    ];
    for (policy, max, status, restarts, up_for, want) in table {
        assert_eq!(
            decide(policy, max, status, restarts, up_for),
            want,
            "{policy:?} max {max} {status} after {restarts} restarts, up {up_for:?}"
        );
    }
}

#[test]
fn exit_codes() {
    use ExitStatus::*;
    let table = [
        (Code(0), 0, 1),
        (Code(3), 3, 3),
        (Signal(9), 137, 137),
        (Signal(15), 143, 143),
    ];
    for (status, code, failure) in table {
        assert_eq!(status.code(), code, "{status}");
        assert_eq!(status.failure_code(), failure, "{status}");
    }
    assert_eq!(Signal(9).to_string(), "signal 9 (SIGKILL)");
    assert_eq!(Code(2).to_string(), "code 2");
}
