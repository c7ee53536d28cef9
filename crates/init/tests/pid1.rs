//! Tini mode as PID 1 of a new PID namespace (root): exit statuses, signal forwarding, zombie
//! reaping.

mod common;

use common::{can_run, poll, Init};
use nix::sys::signal::Signal;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn exit_status_is_the_childs() {
    if !can_run() {
        return;
    }
    let table = [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -USR1 $$", 128 + 10),
        ("kill -KILL $$", 128 + 9),
    ];
    for (script, want) in table {
        let mut init = Init::start(&["--", "sh", "-c", script]);
        assert_eq!(init.wait(WAIT), Some(want), "{script}\n{}", init.output());
    }
}

#[test]
fn a_command_that_cannot_start_exits_127() {
    if !can_run() {
        return;
    }
    let mut init = Init::start(&["/nonexistent/program"]);
    assert_eq!(init.wait(WAIT), Some(127), "{}", init.output());
    assert!(init.stderr().contains("start /nonexistent/program"));
}

#[test]
fn signals_reach_the_childs_process_group() {
    if !can_run() {
        return;
    }
    // (signal sent to init, the trap that proves the child got it, the exit code it sets)
    let table = [
        (Signal::SIGTERM, "TERM", 0),
        (Signal::SIGINT, "INT", 21),
        (Signal::SIGHUP, "HUP", 22),
        (Signal::SIGQUIT, "QUIT", 23),
        (Signal::SIGUSR1, "USR1", 24),
        (Signal::SIGUSR2, "USR2", 25),
        (Signal::SIGWINCH, "WINCH", 26),
    ];
    for (signal, name, code) in table {
        // The loop's `sleep` is in the same process group: it gets the signal too and dies
        // (or, for WINCH, is ignored and the trap runs when it ends), so the trap runs at once.
        let script =
            format!("trap 'exit {code}' {name}; echo trapped; while :; do sleep 0.1; done");
        let mut init = Init::start(&["--", "sh", "-c", &script]);
        assert!(
            init.wait_stdout("trapped", WAIT),
            "{name}: no trap\n{}",
            init.output()
        );
        init.signal(signal);
        assert_eq!(init.wait(WAIT), Some(code), "{name}\n{}", init.output());
    }
}

#[test]
fn real_time_signals_are_forwarded_too() {
    if !can_run() {
        return;
    }
    // systemd in a container stops on SIGRTMIN+3 (`docker stop` with its STOPSIGNAL); dash
    // cannot trap real-time signals, bash can.
    let script = "trap 'exit 33' RTMIN+3; echo trapped; while :; do sleep 0.1; done";
    let mut init = Init::start(&["--", "bash", "-c", script]);
    assert!(init.wait_stdout("trapped", WAIT), "{}", init.output());
    let rtmin3 = nix::libc::SIGRTMIN() + 3;
    let sent = std::process::Command::new("kill")
        .args([format!("-{rtmin3}"), init.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    assert_eq!(init.wait(WAIT), Some(33), "{}", init.output());
}

#[test]
fn an_untrapped_signal_kills_the_child_and_init_reports_it() {
    if !can_run() {
        return;
    }
    let mut init = Init::start(&["--", "sh", "-c", "echo up; while :; do sleep 0.1; done"]);
    assert!(init.wait_stdout("up", WAIT), "{}", init.output());
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait(WAIT), Some(128 + 15), "{}", init.output());
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    if !can_run() {
        return;
    }
    // Each `( sleep & )` is a double fork: the subshell exits at once, its sleep is orphaned,
    // re-parented to PID 1 and exits 0.3 s later; only init can reap it.
    let script = "for i in 1 2 3 4 5; do ( sleep 1 & ); done; echo forked; exec sleep 1000";
    let mut init = Init::start(&["--", "sh", "-c", script]);
    assert!(init.wait_stdout("forked", WAIT), "{}", init.output());
    let orphans = |procs: &[common::Proc]| procs.iter().filter(|p| p.ppid == init.pid).count();
    // Right after the loop the five orphans are init's children (with `sh`, now `sleep 1000`).
    assert!(orphans(&init.processes()) >= 5, "{:?}", init.processes());
    // A second later they have exited; left: init and `sleep 1000`, and no zombie.
    let settled = poll(WAIT, || {
        let procs = init.processes();
        (procs.len() == 2 && procs.iter().all(|p| p.state != 'Z')).then_some(procs)
    });
    assert!(
        settled.is_some(),
        "processes: {:?}\n{}",
        init.processes(),
        init.output()
    );
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait(WAIT), Some(128 + 15), "{}", init.output());
}
