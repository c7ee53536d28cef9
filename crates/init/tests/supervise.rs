//! Supervision mode as PID 1 of a new PID namespace (root): the generator + echo pair of
//! DESIGN.md scenario 1 in one supervision, restarts, giving up, graceful stop, stop order,
//! zombie reaping.

mod common;

use common::{can_run, free_port, http_get, poll, Init};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn busybox() -> &'static str {
    ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is installed (scripts/install-deps)")
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("init.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path.to_string_lossy().into_owned()
}

/// The numbers served, once there are at least `min` of them.
fn numbers(port: u16, min: usize) -> Option<Vec<u32>> {
    let body = http_get(port, "/data")?;
    let numbers: Vec<u32> = body.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (numbers.len() >= min).then_some(numbers)
}

#[test]
fn generator_and_echo_serve_restart_and_stop() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let bb = busybox();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
grace_seconds: 5
programs:
  - name: generator
    command: [{bb}, sh, -c, 'while true; do echo $RANDOM >> {data}; echo wrote; sleep 0.2; done']
    ready: {{exec: 'test -s {data}', period_seconds: 0.1}}
  - name: echo
    command: [{bb}, httpd, -f, -p, '127.0.0.1:{port}', -h, '{dir}']
    after: generator
    ready: {{tcp: {port}, period_seconds: 0.1}}
"#,
            data = data.display(),
            dir = dir.path().display(),
        ),
    );
    let mut init = Init::start(&["--config", &config]);

    // The numbers are served, and they grow.
    let first = poll(WAIT, || numbers(port, 2)).unwrap_or_else(|| panic!("{}", init.output()));
    let more = poll(WAIT, || numbers(port, first.len() + 2));
    assert!(more.is_some(), "numbers do not grow\n{}", init.output());
    assert!(
        init.stdout().contains("generator | wrote"),
        "{}",
        init.output()
    );

    // Killing the echo program restarts it, and it serves again.
    let httpd = |init: &Init| {
        init.processes()
            .into_iter()
            .find(|p| p.cmdline.contains("httpd") && p.state != 'Z')
            .map(|p| p.pid)
    };
    let old = httpd(&init).expect("httpd runs");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill httpd");
    let new = poll(WAIT, || httpd(&init).filter(|&pid| pid != old));
    assert!(new.is_some(), "echo not restarted\n{}", init.output());
    assert!(
        poll(WAIT, || numbers(port, 1)).is_some(),
        "echo does not serve after its restart\n{}",
        init.output()
    );
    assert!(
        init.stderr()
            .contains("echo exited with signal 9 (SIGKILL); restarting in 1s"),
        "{}",
        init.output()
    );

    // SIGTERM stops both, well within the grace period, and init exits 0.
    let asked = Instant::now();
    init.signal(Signal::SIGTERM);
    assert_eq!(
        init.wait(Duration::from_secs(5)),
        Some(0),
        "{}",
        init.output()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let err = init.stderr();
    assert!(
        err.contains("echo stopped with signal 15 (SIGTERM)"),
        "{err}"
    );
    assert!(
        err.contains("generator stopped with signal 15 (SIGTERM)"),
        "{err}"
    );
}

#[test]
fn a_program_that_gives_up_stops_the_others_and_fails_the_container() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        r#"
programs:
  - {name: steady, command: 'while :; do sleep 0.1; done'}
  - {name: broken, command: 'sleep 0.3; echo bye >&2; exit 1', restart: never, after: steady}
"#,
    );
    let mut init = Init::start(&["--config", &config]);
    assert_eq!(init.wait(WAIT), Some(1), "{}", init.output());
    let err = init.stderr();
    assert!(err.contains("broken | bye"), "{err}");
    assert!(
        err.contains("broken exited with code 1; giving up (restart policy)"),
        "{err}"
    );
    assert!(
        err.contains("steady stopped with signal 15 (SIGTERM)"),
        "{err}"
    );
}

#[test]
fn on_failure_restarts_until_max_restarts_then_gives_up() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "programs: [{name: flaky, command: 'echo try; exit 7', restart: on-failure, max_restarts: 1}]",
    );
    let mut init = Init::start(&["--config", &config]);
    assert_eq!(init.wait(WAIT), Some(7), "{}", init.output());
    assert_eq!(
        init.stdout().matches("flaky | try").count(),
        2,
        "{}",
        init.output()
    );
}

#[test]
fn run_arguments_supervise_without_a_file() {
    if !can_run() {
        return;
    }
    let mut init = Init::start(&[
        "--run",
        "a=echo from a; exec sleep 1000",
        "--run",
        "b=echo from b; exec sleep 1000",
    ]);
    assert!(init.wait_stdout("a | from a", WAIT), "{}", init.output());
    assert!(init.wait_stdout("b | from b", WAIT), "{}", init.output());
    init.signal(Signal::SIGINT);
    assert_eq!(init.wait(WAIT), Some(0), "{}", init.output());
}

#[test]
fn a_program_ignoring_sigterm_is_killed_after_its_grace() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        r#"
programs:
  - name: stubborn
    command: "trap '' TERM; echo ignoring; while :; do sleep 0.1; done"
    grace_seconds: 0.5
"#,
    );
    let mut init = Init::start(&["--config", &config]);
    assert!(
        init.wait_stdout("stubborn | ignoring", WAIT),
        "{}",
        init.output()
    );
    let asked = Instant::now();
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait(WAIT), Some(0), "{}", init.output());
    let took = asked.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        init.stderr()
            .contains("stubborn stopped with signal 9 (SIGKILL)"),
        "{}",
        init.output()
    );
}

#[test]
fn programs_stop_in_reverse_start_order() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("order");
    let program = |name: &str, after: &str| {
        format!(
            "  - {{name: {name}, {after} command: \"trap 'echo {name} >> {log}; exit 0' TERM; echo up; while :; do sleep 0.05; done\"}}\n",
            log = log.display()
        )
    };
    let yaml = format!(
        "programs:\n{}{}{}",
        program("first", ""),
        program("second", "after: first,"),
        program("third", "after: second,"),
    );
    let config = write_config(dir.path(), &yaml);
    let mut init = Init::start(&["--config", &config]);
    assert!(init.wait_stdout("third | up", WAIT), "{}", init.output());
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait(WAIT), Some(0), "{}", init.output());
    let order = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(order, "third\nsecond\nfirst\n", "{}", init.output());
}

#[test]
fn a_double_forking_program_leaves_no_zombie() {
    if !can_run() {
        return;
    }
    let mut init = Init::start(&[
        "--run",
        "forker=for i in 1 2 3 4 5; do ( sleep 1 & ); done; echo forked; exec sleep 1000",
    ]);
    assert!(
        init.wait_stdout("forker | forked", WAIT),
        "{}",
        init.output()
    );
    let orphans = init
        .processes()
        .iter()
        .filter(|p| p.ppid == init.pid && p.cmdline == "sleep 1")
        .count();
    assert_eq!(orphans, 5, "{:?}", init.processes());
    // A second later: init and `sleep 1000` only, and no zombie.
    let settled = poll(WAIT, || {
        let procs = init.processes();
        (procs.len() == 2 && procs.iter().all(|p| p.state != 'Z')).then_some(())
    });
    assert!(
        settled.is_some(),
        "{:?}\n{}",
        init.processes(),
        init.output()
    );
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait(WAIT), Some(0), "{}", init.output());
}
