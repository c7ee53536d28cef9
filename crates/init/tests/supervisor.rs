//! The supervisor's decisions over simulated time: start order, readiness, restarts, giving
//! up, stopping in reverse order with grace periods.

use peapod_init::config::parse;
use peapod_init::status::ExitStatus::{self, Code, Signal};
use peapod_init::supervisor::{Action, Note, Run, StopReason, StopSignal, Supervisor};
use std::time::{Duration, Instant};

fn supervisor(yaml: &str) -> Supervisor {
    Supervisor::new(parse(yaml, &[]).expect("valid config"))
}

/// The actions due at `now`, without the notes.
fn step(s: &mut Supervisor, now: Instant) -> Vec<Action> {
    s.step(now)
        .into_iter()
        .filter(|a| !matches!(a, Action::Note(_)))
        .collect()
}

fn notes(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Note(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn term(pgid: i32) -> Action {
    Action::Signal {
        pgid,
        signal: StopSignal::Term,
    }
}

fn kill(pgid: i32) -> Action {
    Action::Signal {
        pgid,
        signal: StopSignal::Kill,
    }
}

const PAIR: &str = r#"
programs:
  - name: generator
    command: gen
    ready: {exec: test -s data, period_seconds: 0.5, timeout_seconds: 2}
  - name: echo
    command: httpd
    after: generator
    ready: {tcp: 8000}
  - name: cron
    command: crond
"#;

#[test]
fn after_waits_for_readiness() {
    let t0 = Instant::now();
    let mut s = supervisor(PAIR);
    assert_eq!(step(&mut s, t0), [Action::Spawn(0), Action::Spawn(2)]);
    assert_eq!(s.run(1), Run::Waiting);
    s.spawned(0, Ok(10), t0);
    s.spawned(2, Ok(30), t0);
    // The first check runs at once; cron has no check and is ready when started.
    assert_eq!(step(&mut s, t0), [Action::StartCheck(0)]);
    s.check_started(0, 11, t0);
    assert_eq!(s.next_deadline(), Some(t0 + ms(2000)));
    s.exited(11, Code(1), t0 + ms(100));
    // What the check left in its process group goes with it.
    assert_eq!(step(&mut s, t0 + ms(100)), [Action::KillCheck { pgid: 11 }]);
    assert_eq!(s.next_deadline(), Some(t0 + ms(600)));
    assert_eq!(step(&mut s, t0 + ms(600)), [Action::StartCheck(0)]);
    s.check_started(0, 12, t0 + ms(600));
    s.exited(12, Code(0), t0 + ms(700));
    let actions = s.step(t0 + ms(700));
    assert_eq!(notes(&actions), ["generator is ready"]);
    assert!(actions.contains(&Action::Spawn(1)));
    s.spawned(1, Ok(20), t0 + ms(700));
    assert_eq!(step(&mut s, t0 + ms(700)), [Action::StartCheck(1)]);
    s.check_result(1, true, t0 + ms(700));
    assert_eq!(step(&mut s, t0 + ms(700)), []);
    assert_eq!(s.start_order(), [0, 2, 1]);
    assert_eq!(s.next_deadline(), None);
    let mut groups = s.running_groups();
    groups.sort();
    assert_eq!(groups, [10, 20, 30]);
}

#[test]
fn a_slow_check_is_killed_and_retried() {
    let t0 = Instant::now();
    let mut s = supervisor(PAIR);
    step(&mut s, t0);
    s.spawned(0, Ok(10), t0);
    s.spawned(2, Ok(30), t0);
    assert_eq!(step(&mut s, t0), [Action::StartCheck(0)]);
    s.check_started(0, 11, t0);
    assert_eq!(step(&mut s, t0 + ms(1999)), []);
    assert_eq!(
        step(&mut s, t0 + ms(2000)),
        [Action::KillCheck { pgid: 11 }]
    );
    assert_eq!(step(&mut s, t0 + ms(2100)), []);
    s.exited(11, Signal(9), t0 + ms(2100));
    assert_eq!(
        step(&mut s, t0 + ms(2100)),
        [Action::KillCheck { pgid: 11 }]
    );
    assert_eq!(step(&mut s, t0 + ms(2599)), []);
    assert_eq!(step(&mut s, t0 + ms(2600)), [Action::StartCheck(0)]);
    assert_eq!(s.run(1), Run::Waiting);
}

#[test]
fn restarts_back_off_then_give_up_and_stop_the_rest() {
    let t0 = Instant::now();
    let mut s = supervisor(
        "programs: [{name: flaky, command: x, max_restarts: 2}, {name: web, command: y}]",
    );
    assert_eq!(step(&mut s, t0), [Action::Spawn(0), Action::Spawn(1)]);
    s.spawned(0, Ok(10), t0);
    s.spawned(1, Ok(20), t0);
    assert_eq!(step(&mut s, t0), []);
    let mut now = t0;
    for (pid, delay) in [(10, 1000), (11, 2000)] {
        now += ms(100);
        s.exited(pid, Code(1), now);
        let actions = s.step(now);
        // What the program left in its group is killed with it.
        assert!(actions.contains(&kill(pid)), "{actions:?}");
        assert_eq!(
            notes(&actions),
            [format!(
                "flaky exited with code 1; restarting in {}s",
                delay / 1000
            )]
        );
        assert_eq!(s.next_deadline(), Some(now + ms(delay)));
        assert_eq!(step(&mut s, now + ms(delay - 1)), []);
        now += ms(delay);
        assert_eq!(step(&mut s, now), [Action::Spawn(0)]);
        s.spawned(0, Ok(pid + 1), now);
        assert_eq!(step(&mut s, now), []);
    }
    // The third exit in a row is one too many: stop web, then exit with flaky's code.
    now += ms(100);
    s.exited(12, Code(3), now);
    let actions = s.step(now);
    assert_eq!(
        notes(&actions),
        [
            "flaky exited with code 3; giving up (too many restarts in a row)",
            "stopping all programs because flaky gave up",
            "stopping web: SIGTERM, SIGKILL after 10s",
        ]
    );
    assert!(actions.contains(&term(20)), "{actions:?}");
    assert_eq!(s.run(0), Run::GaveUp { code: 3 });
    assert_eq!(step(&mut s, now), []);
    s.exited(20, Signal(15), now + ms(50));
    assert_eq!(step(&mut s, now + ms(50)), [kill(20), Action::Exit(3)]);
}

#[test]
fn a_minute_up_resets_the_backoff() {
    let t0 = Instant::now();
    let mut s = supervisor("programs: [{name: a, command: x}]");
    step(&mut s, t0);
    s.spawned(0, Ok(10), t0);
    s.exited(10, Code(1), t0 + ms(10));
    step(&mut s, t0 + ms(10));
    assert_eq!(step(&mut s, t0 + ms(1010)), [Action::Spawn(0)]);
    s.spawned(0, Ok(11), t0 + ms(1010));
    let later = t0 + ms(1010) + Duration::from_secs(60);
    s.exited(11, Code(1), later);
    step(&mut s, later);
    assert_eq!(
        s.run(0),
        Run::BackOff {
            until: later + ms(1000)
        }
    );
}

#[test]
fn stop_goes_in_reverse_start_order_with_grace() {
    let t0 = Instant::now();
    let mut s = supervisor(
        r#"
grace_seconds: 2
programs:
  - {name: db, command: x, grace_seconds: 5}
  - {name: app, command: y, after: db}
  - {name: proxy, command: z, after: app}
"#,
    );
    let mut now = t0;
    for (i, pid) in [(0, 10), (1, 20), (2, 30)] {
        assert_eq!(step(&mut s, now), [Action::Spawn(i)]);
        s.spawned(i, Ok(pid), now);
        now += ms(1);
    }
    s.stop();
    assert_eq!(step(&mut s, now), [term(30)]);
    s.stop(); // a second SIGTERM changes nothing
    assert_eq!(step(&mut s, now + ms(1999)), []);
    assert_eq!(s.next_deadline(), Some(now + ms(2000)));
    now += ms(2000);
    let actions = s.step(now);
    assert!(actions.contains(&kill(30)), "{actions:?}");
    assert_eq!(
        notes(&actions),
        ["proxy still running 2s after SIGTERM: SIGKILL"]
    );
    s.exited(30, Signal(9), now);
    assert_eq!(step(&mut s, now), [kill(30), term(20)]);
    s.exited(20, Code(0), now + ms(10));
    assert_eq!(step(&mut s, now + ms(10)), [kill(20), term(10)]);
    assert_eq!(
        s.next_deadline(),
        Some(now + ms(10) + Duration::from_secs(5))
    );
    s.exited(10, Code(0), now + ms(20));
    assert_eq!(step(&mut s, now + ms(20)), [kill(10), Action::Exit(0)]);
    assert_eq!(step(&mut s, now + ms(30)), []);
}

#[test]
fn stop_skips_programs_not_running() {
    let t0 = Instant::now();
    let mut s = supervisor(
        "programs: [{name: a, command: x}, {name: b, command: y, after: a, ready: {tcp: 1}}, {name: c, command: z, after: b}]",
    );
    step(&mut s, t0);
    s.spawned(0, Ok(10), t0);
    step(&mut s, t0);
    s.spawned(1, Ok(20), t0);
    // b crashes and is backing off; c never started.
    s.exited(20, Code(1), t0);
    step(&mut s, t0);
    s.stop();
    let actions = s.step(t0);
    assert_eq!(
        notes(&actions),
        [
            "stopping all programs",
            "stopping a: SIGTERM, SIGKILL after 10s"
        ]
    );
    assert_eq!(s.run(1), Run::Stopped);
    assert_eq!(s.run(2), Run::Stopped);
    s.exited(10, Code(0), t0);
    assert_eq!(step(&mut s, t0), [kill(10), Action::Exit(0)]);
}

#[test]
fn completed_programs_end_init_with_zero() {
    let t0 = Instant::now();
    let mut s = supervisor(
        "programs: [{name: migrate, command: x, restart: never}, {name: job, command: y, restart: on-failure, after: migrate}]",
    );
    assert_eq!(step(&mut s, t0), [Action::Spawn(0)]);
    s.spawned(0, Ok(10), t0);
    // Ready as soon as started (no check), so job starts too.
    assert_eq!(step(&mut s, t0), [Action::Spawn(1)]);
    s.spawned(1, Ok(20), t0);
    s.exited(10, Code(0), t0);
    assert_eq!(step(&mut s, t0), [kill(10)]);
    assert_eq!(s.run(0), Run::Completed);
    s.exited(20, Code(0), t0);
    assert_eq!(step(&mut s, t0), [kill(20), Action::Exit(0)]);
}

#[test]
fn continue_policy_keeps_the_others_and_exits_non_zero_at_the_end() {
    let t0 = Instant::now();
    let mut s = supervisor(
        r#"
on_give_up: continue
programs:
  - {name: a, command: x, restart: never, ready: {tcp: 1}}
  - {name: b, command: y, after: a}
  - {name: c, command: z, restart: never}
"#,
    );
    assert_eq!(step(&mut s, t0), [Action::Spawn(0), Action::Spawn(2)]);
    s.spawned(0, Ok(10), t0);
    s.spawned(2, Ok(30), t0);
    step(&mut s, t0);
    s.exited(10, Signal(9), t0);
    let actions = s.step(t0);
    assert_eq!(
        notes(&actions),
        [
            "a exited with signal 9 (SIGKILL); giving up (restart policy)",
            "b will not start: a gave up",
        ]
    );
    assert_eq!(s.run(1), Run::GaveUp { code: 1 });
    assert_eq!(
        s.run(2),
        Run::Up {
            pid: 30,
            since: t0,
            ready: true
        }
    );
    s.exited(30, Code(0), t0);
    assert_eq!(step(&mut s, t0), [kill(30), Action::Exit(137)]);
}

#[test]
fn a_failed_start_counts_as_exit_127() {
    let t0 = Instant::now();
    let mut s = supervisor("programs: [{name: a, command: x, restart: on-failure}]");
    assert_eq!(step(&mut s, t0), [Action::Spawn(0)]);
    s.spawned(0, Err(()), t0);
    let actions = s.step(t0);
    assert_eq!(
        notes(&actions),
        ["a exited with code 127; restarting in 1s"]
    );
    assert!(s.start_order().is_empty());
}

#[test]
fn stop_before_anything_started_exits_at_once() {
    let t0 = Instant::now();
    let mut s = supervisor("programs: [{name: a, command: x}]");
    s.stop();
    assert_eq!(step(&mut s, t0), [Action::Exit(0)]);
}

#[test]
fn unknown_pids_are_orphans_and_change_nothing() {
    let t0 = Instant::now();
    let mut s = supervisor("programs: [{name: a, command: x}]");
    step(&mut s, t0);
    s.spawned(0, Ok(10), t0);
    s.exited(999, Code(0), t0);
    assert_eq!(step(&mut s, t0), []);
    assert_eq!(
        s.run(0),
        Run::Up {
            pid: 10,
            since: t0,
            ready: true
        }
    );
}

#[test]
fn notes_read_well() {
    let table: Vec<(Note, &str)> = vec![
        (
            Note::Started {
                program: "web".into(),
                pid: 7,
            },
            "web started (pid 7)",
        ),
        (
            Note::Stopped {
                program: "web".into(),
                status: ExitStatus::Signal(15),
            },
            "web stopped with signal 15 (SIGTERM)",
        ),
        (
            Note::StoppingAll {
                reason: StopReason::GaveUp("db".into()),
            },
            "stopping all programs because db gave up",
        ),
    ];
    for (note, want) in table {
        assert_eq!(note.to_string(), want);
    }
}
