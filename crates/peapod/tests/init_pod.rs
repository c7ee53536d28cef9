//! Root integration tests of `peapod-init` in a real pod (docs/init.md, issue 10): a pod
//! annotated `peapod.dev/init: "true"` gets the binary mounted at `/run/peapod-init`, and its
//! container asks for supervision mode with `command: [/run/peapod-init, --config, ...]`, the
//! config coming from a ConfigMap of the same manifest. The container's processes are inspected
//! from the host's /proc (matched by their PID namespace); `peapod run`'s output carries init's
//! own lines (`pod/container | peapod-init: ...`) and the kubelet's (`pod/NAME: container ...`).
//!
//! The injected binary is `target/debug/peapod-init` (next to the peapod binary under test):
//! build it with `cargo build -p peapod-init` (scripts/test does). It is dynamically linked, so
//! the pods use the `python:3` image of `python3 images/build.py`, which carries the host's
//! glibc and libgcc_s; busybox (`/bin/sh`, `httpd`) is in it too.
//!
//! Not covered here: the static build in a libc-less image (documented and tried by hand in
//! docs/init.md; a static build is not part of the test build) and `CreateContainerConfigError`
//! for a missing binary (`PEAPOD_INIT_BINARY` would have to differ per `peapod run`, and the
//! harness gives every run the test process's environment).
//!
//! Run as root: `cargo build -p peapod-init && cargo test -p peapod --test init_pod`.

mod common;

use common::{deadline_in, free_port, http_get, image_archive, poll_until, RunningPod, TestRoot};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Generous: two cores, tests in parallel, a debug build.
const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);
/// For something that follows within a second or two once the pod runs.
const SOON: Duration = Duration::from_secs(15);
/// The pods' `terminationGracePeriodSeconds`.
const GRACE: Duration = Duration::from_secs(5);

/// `peapod run -f` of `manifest`, returned once pod `pod` is Running (its sandbox set up).
fn start(root: &TestRoot, manifest: &str, pod: &str) -> RunningPod {
    let path = root.manifest("pod.yaml", manifest);
    let run = root.run(&path);
    run.wait_for(&format!("pod/{pod}: Running"), START);
    run
}

/// SIGINT to `peapod run`; its exit code.
fn interrupt(run: &mut RunningPod) -> i32 {
    run.interrupt();
    run.exit_code(deadline_in(EXIT))
}

/// A root with busybox and python loaded, after checking that peapod-init was built.
fn python_root() -> TestRoot {
    let init = common::peapod_bin().with_file_name("peapod-init");
    assert!(
        init.is_file(),
        "{} is missing: run `cargo build -p peapod-init` (the binary peapod injects)",
        init.display()
    );
    let root = TestRoot::new();
    root.load(&image_archive(common::PYTHON_ARCHIVE));
    root
}

/// One line of init's own, as `peapod run` prints it for container `both` of `pod`.
fn init_line(pod: &str, text: &str) -> String {
    format!("{pod}/both | peapod-init: {text}")
}

/// Waits for the `n`th start of init's program `program` in `pod`.
fn wait_for_start(run: &RunningPod, pod: &str, program: &str, n: usize) -> String {
    let prefix = init_line(pod, &format!("{program} started (pid "));
    run.wait_for_nth_line(|l| l.starts_with(&prefix), n, deadline_in(START))
}

/// A process as the host's /proc shows it.
#[derive(Debug, Clone)]
struct HostProc {
    pid: i32,
    ppid: i32,
    state: char,
    cmdline: String,
}

impl HostProc {
    fn read(pid: i32) -> Option<HostProc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised command name: state, ppid, ...
        let mut after = stat[stat.rfind(')')? + 2..].split_whitespace();
        let state = after.next()?.chars().next()?;
        let ppid = after.next()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Some(HostProc {
            pid,
            ppid,
            state,
            cmdline,
        })
    }
}

/// The host PID of the running container's PID 1 (peapod-init), as started.json names it and
/// /proc confirms (`NSpid` ends in 1).
fn container_init(run: &RunningPod) -> i32 {
    poll_until(deadline_in(START), || {
        run.sample();
        run.container_procs()
            .into_iter()
            .filter(|p| p.alive())
            .map(|p| p.pid)
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .is_some_and(|ids| ids.split_whitespace().last() == Some("1"))
            })
    })
    .unwrap_or_else(|| panic!("no running container init seen\n{}", run.transcript()))
}

/// Every process in the PID namespace of host process `init` (itself included).
fn namespace_procs(init: i32) -> Vec<HostProc> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(want) = ns(&init.to_string()) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| ns(&pid.to_string()).as_ref() == Some(&want))
        .filter_map(HostProc::read)
        .collect()
}

/// The numbers served on the host port, once there are at least `min` of them.
fn numbers(port: u16, min: usize) -> Option<Vec<u32>> {
    let (status, body) = http_get(port, "/data").ok()?;
    let numbers: Option<Vec<u32>> = body.lines().map(|l| l.parse().ok()).collect();
    numbers.filter(|n| status == 200 && n.len() >= min)
}

/// DESIGN.md scenario 1 in ONE container: the generator appends `$RANDOM` every 0.2 s, busybox
/// httpd serves the file; both under init, started in order (echo `after` generator is ready).
const PAIR: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: pair-init
data:
  init.yaml: |
    grace_seconds: 2
    programs:
      - name: generator
        command: 'mkdir -p /tmp/out; while true; do echo $RANDOM >> /tmp/out/data; sleep 0.2; done'
        ready: {exec: 'test -s /tmp/out/data', period_seconds: 0.1}
      - name: echo
        command: [httpd, -f, -p, "8000", -h, /tmp/out]
        after: generator
        ready: {tcp: 8000, period_seconds: 0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: pair
  annotations:
    peapod.dev/init: "true"
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: init
    configMap:
      name: pair-init
  containers:
  - name: both
    image: python:3
    command: [/run/peapod-init, --config, /etc/init/init.yaml]
    volumeMounts:
    - name: init
      mountPath: /etc/init
    ports:
    - containerPort: 8000
      hostPort: HOST_PORT
"#;

/// The generator + echo pair serves growing numbers on the host port; SIGKILL to httpd makes
/// init restart it and it serves again; SIGINT to `peapod run` stops both programs by SIGTERM,
/// in reverse order, well within the grace period, and the container exits 0 (docs/init.md,
/// "Stopping": init exits 0 after a requested stop).
#[test]
fn generator_and_echo_serve_restart_and_stop() {
    let root = python_root();
    let port = free_port();
    let mut run = start(&root, &PAIR.replace("HOST_PORT", &port.to_string()), "pair");

    // Numbers are served, and more of them later (the file only grows).
    let first = poll_until(deadline_in(START), || numbers(port, 1))
        .unwrap_or_else(|| panic!("no numbers on :{port}/data\n{}", run.transcript()));
    let more = poll_until(deadline_in(SOON), || numbers(port, first.len() + 3))
        .unwrap_or_else(|| panic!("the numbers do not grow: {first:?}\n{}", run.transcript()));
    assert!(more.starts_with(&first), "{first:?} then {more:?}");
    run.wait_for(&init_line("pair", "generator is ready"), SOON);
    run.wait_for(&init_line("pair", "echo is ready"), SOON);

    // SIGKILL to the echo program (init's child running httpd, in this container's PID
    // namespace): init restarts it, and it serves again.
    let init = container_init(&run);
    let find_httpd = || {
        namespace_procs(init)
            .into_iter()
            .find(|p| p.ppid == init && p.state != 'Z' && p.cmdline.starts_with("httpd -f -p 8000"))
    };
    let httpd =
        find_httpd().unwrap_or_else(|| panic!("no httpd under init {init}\n{}", run.transcript()));
    kill(Pid::from_raw(httpd.pid), Signal::SIGKILL).expect("kill httpd");
    run.wait_for(
        &init_line(
            "pair",
            "echo exited with signal 9 (SIGKILL); restarting in 1s",
        ),
        SOON,
    );
    wait_for_start(&run, "pair", "echo", 2);
    let again = poll_until(deadline_in(SOON), || numbers(port, more.len() + 1))
        .unwrap_or_else(|| panic!("httpd does not serve again\n{}", run.transcript()));
    assert!(again.starts_with(&more), "{more:?} then {again:?}");
    let second = find_httpd().expect("the restarted httpd");
    assert_ne!(second.pid, httpd.pid, "httpd was not restarted");
    assert_eq!(container_init(&run), init, "the container itself restarted");

    // SIGINT: the kubelet sends SIGTERM to init, which stops echo then generator.
    let interrupted = Instant::now();
    run.interrupt();
    run.wait_for(
        "pod/pair: container both exited with code 0 (Completed)",
        EXIT,
    );
    let stopped_in = interrupted.elapsed();
    let code = run.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code after SIGINT\n{}", run.transcript());
    assert!(
        stopped_in < GRACE,
        "the container took {stopped_in:?} to stop, more than its grace period\n{}",
        run.transcript()
    );
    let lines = run.container_lines("pair", "both");
    let stop_lines: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .skip_while(|l| *l != "peapod-init: stopping all programs")
        .filter(|l| l.starts_with("peapod-init: "))
        .collect();
    assert_eq!(
        stop_lines,
        [
            "peapod-init: stopping all programs",
            "peapod-init: stopping echo: SIGTERM, SIGKILL after 2s",
            "peapod-init: echo stopped with signal 15 (SIGTERM)",
            "peapod-init: stopping generator: SIGTERM, SIGKILL after 2s",
            "peapod-init: generator stopped with signal 15 (SIGTERM)",
        ],
        "\n{}",
        run.transcript()
    );
    assert!(run.stderr().contains(&"pod/pair: deleted".to_string()));
    run.assert_no_leaks(&root);
    assert!(
        http_get(port, "/data").is_err(),
        "host port {port} still answers after the pod was deleted"
    );
    eprintln!("pair: stopped {stopped_in:?} after SIGINT");
}

/// A program that gives up (`restart: never`, exits 1) next to one that would run forever.
const GIVES_UP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: quit-init
data:
  init.yaml: |
    grace_seconds: 2
    programs:
      - name: keeper
        command: 'exec sleep 3600'
      - name: quitter
        command: 'echo quitting; exit 1'
        restart: never
        after: keeper
---
apiVersion: v1
kind: Pod
metadata:
  name: quit
  annotations:
    peapod.dev/init: "true"
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  volumes:
  - name: init
    configMap:
      name: quit-init
  containers:
  - name: both
    image: python:3
    command: [/run/peapod-init, --config, /etc/init/init.yaml]
    volumeMounts:
    - name: init
      mountPath: /etc/init
"#;

/// A program that gives up makes init stop the others gracefully and exit with its code, so
/// the container fails (exit 1, `Error`) and the pod's `restartPolicy: Always` starts it again;
/// SIGINT then deletes the pod: exit 0, nothing left.
#[test]
fn a_program_giving_up_fails_the_container_and_the_pod_restarts_it() {
    let root = python_root();
    let mut run = start(&root, GIVES_UP, "quit");
    run.wait_for(
        &init_line(
            "quit",
            "quitter exited with code 1; giving up (restart policy)",
        ),
        START,
    );
    run.wait_for(
        &init_line("quit", "stopping all programs because quitter gave up"),
        SOON,
    );
    run.wait_for(
        &init_line("quit", "keeper stopped with signal 15 (SIGTERM)"),
        SOON,
    );
    run.wait_for("pod/quit: container both exited with code 1 (Error)", SOON);
    // The kubelet's restart: a second instance of init starts both programs again.
    wait_for_start(&run, "quit", "keeper", 2);
    wait_for_start(&run, "quit", "quitter", 2);
    run.wait_for_nth_line(
        |l| l == "quit/both | quitter | quitting",
        2,
        deadline_in(SOON),
    );
    run.sample();
    let uids = run.pod_uids();
    assert_eq!(uids.len(), 1, "the pod itself was recreated: {uids:?}");

    let code = interrupt(&mut run);
    assert_eq!(code, 0, "exit code after SIGINT\n{}", run.transcript());
    assert!(run.stderr().contains(&"pod/quit: deleted".to_string()));
    run.assert_no_leaks(&root);
}

/// A program that double-forks: the background `sleep 30` is orphaned and re-parented to init
/// (PID 1); when the program's shell exits, init kills what is left of its group and must reap
/// it. `max_restarts` is high so that `always` keeps cycling (1 s runs, backoff 1, 2, 4 s).
const DOUBLE_FORK: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: forks-init
data:
  init.yaml: |
    grace_seconds: 2
    programs:
      - name: keeper
        command: 'exec sleep 3600'
      - name: forker
        command: '(sleep 30 &) ; sleep 1; exit 0'
        restart: always
        max_restarts: 100
---
apiVersion: v1
kind: Pod
metadata:
  name: forks
  annotations:
    peapod.dev/init: "true"
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: init
    configMap:
      name: forks-init
  containers:
  - name: both
    image: python:3
    command: [/run/peapod-init, --config, /etc/init/init.yaml]
    volumeMounts:
    - name: init
      mountPath: /etc/init
"#;

/// A double-forking program's orphan is adopted by init; after three cycles no process of the
/// container's PID namespace is a zombie (in particular none whose parent is init) and no
/// orphan is left over.
#[test]
fn a_double_forking_program_leaves_no_zombie() {
    let root = python_root();
    let mut run = start(&root, DOUBLE_FORK, "forks");
    wait_for_start(&run, "forks", "forker", 1);
    let init = container_init(&run);
    let is_orphan = |p: &HostProc| p.ppid == init && p.cmdline == "sleep 30";
    // The scenario happens: an orphaned `sleep 30` is init's child.
    poll_until(deadline_in(SOON), || {
        namespace_procs(init).iter().any(is_orphan).then_some(())
    })
    .unwrap_or_else(|| panic!("no orphan adopted by init {init}\n{}", run.transcript()));
    // The third exit (backoff 1, 2, then 4 s).
    run.wait_for(
        &init_line("forks", "forker exited with code 0; restarting in 4s"),
        START,
    );
    assert_eq!(container_init(&run), init, "the container restarted");

    // During the 4 s backoff: the leftover `sleep 30`s were SIGKILLed with their group
    // (docs/init.md, "Process groups") and reaped. A zombie lives only until init's next
    // wake-up: allow for that, not for more.
    let leftovers = |procs: &[HostProc]| -> Vec<HostProc> {
        procs
            .iter()
            .filter(|p| p.state == 'Z' || is_orphan(p))
            .cloned()
            .collect()
    };
    let clean = poll_until(deadline_in(Duration::from_secs(2)), || {
        leftovers(&namespace_procs(init)).is_empty().then_some(())
    });
    assert!(
        clean.is_some(),
        "zombies or orphans in the container after 3 cycles: {:?}\n{}",
        leftovers(&namespace_procs(init)),
        run.transcript()
    );

    let code = interrupt(&mut run);
    assert_eq!(code, 0, "exit code after SIGINT\n{}", run.transcript());
    assert!(run
        .stderr()
        .contains(&"pod/forks: container both exited with code 0 (Completed)".to_string()));
    run.assert_no_leaks(&root);
}

/// Tini mode: with the annotation and an ordinary command, the container's argv is prefixed
/// with `/run/peapod-init --`, the mount is read-only, and init exits with the command's code.
const TINI: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: tini
  annotations:
    peapod.dev/init: "true"
spec:
  restartPolicy: Never
  containers:
  - name: both
    image: python:3
    command: ["sh", "-c"]
    args:
    - |
      echo "pid1 $(tr '\0' ' ' < /proc/1/cmdline)"
      echo "me $$ $(cut -d' ' -f4 /proc/$$/stat)"
      if touch /run/peapod-init 2>/dev/null; then echo write-ok; else echo write-refused; fi
      exit 3
"#;

#[test]
fn tini_mode_prefixes_the_command_and_passes_its_exit_code() {
    let root = python_root();
    let path = root.manifest("pod.yaml", TINI);
    let mut run = root.run(&path);
    let code = run.exit_code(deadline_in(EXIT));
    assert_ne!(
        code,
        0,
        "a failed pod must fail the run\n{}",
        run.transcript()
    );
    let lines = run.container_lines("tini", "both");
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("pid1 /run/peapod-init -- sh -c echo ")),
        "PID 1 is not the injected init: {lines:?}\n{}",
        run.transcript()
    );
    let me = lines
        .iter()
        .find_map(|l| l.strip_prefix("me "))
        .and_then(|l| l.split_once(' '))
        .unwrap_or_else(|| panic!("no `me` line: {lines:?}"));
    assert!(
        me.0 != "1" && me.1 == "1",
        "the command is not init's child: pid {}, ppid {}",
        me.0,
        me.1
    );
    assert!(lines.contains(&"write-refused".to_string()), "{lines:?}");
    assert!(run
        .stderr()
        .contains(&"pod/tini: container both exited with code 3 (Error)".to_string()));
    run.assert_no_leaks(&root);
}
