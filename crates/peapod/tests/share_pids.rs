//! Root integration test of `shareProcessNamespace: true` (issue 4) through `peapod run -f`:
//! the pod's containers join one PID namespace whose PID 1 is the pod's init
//! (`runtime/src/pod_init.rs`), as the pause container is on a Kubernetes node
//! (<https://kubernetes.io/docs/tasks/configure-pod-container/share-process-namespace/>).
//! Container `b` reports from the inside what it sees; the test checks the host's side: the
//! pod's init, its namespace shared by both containers, and nothing of it left afterwards.
//!
//! Run as root: `cargo test -p peapod --test share_pids`. The busybox image comes from
//! `python3 images/build.py` (or `PEAPOD_TEST_IMAGES`).

mod common;

use common::{deadline_in, poll_until, TestRoot};
use std::time::Duration;

/// Generous: two cores, tests in parallel, a debug build.
const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);

const SHARED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  restartPolicy: Never
  shareProcessNamespace: true
  volumes:
  - name: control
    hostPath:
      path: CONTROL_DIR
      type: Directory
  containers:
  - name: a
    image: busybox
    command:
    - sh
    - -c
    - "trap 'echo a-got-TERM; exit 0' TERM; echo a-pid $$$$; while true; do sleep 1 & wait $!; done"
    - container-a
  # `$$$$` is `$$` after Kubernetes' `$(VAR)` expansion.
  - name: b
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      until a=$(ps -o pid,args | awk '/contain[e]r-a/ {print $1}') && [ -n "$a" ]; do sleep 0.1; done
      echo "b-pid $$$$"
      echo "pid1 $(tr '\0' ' ' < /proc/1/cmdline)"
      ls /proc/1/root/ >/dev/null 2>&1 && echo pid1-root-visible || echo pid1-root-hidden
      kill -9 1; [ -e /proc/1 ] && echo pid1-survived
      (sleep 0.2 & echo $! > /tmp/orphan)
      o=$(cat /tmp/orphan)
      until [ ! -e /proc/$o ]; do sleep 0.1; done
      echo orphan-reaped
      kill -TERM $a && echo "b-killed $a"
      until [ -e /control/done ]; do sleep 0.1; done
    volumeMounts:
    - name: control
      mountPath: /control
"#;

/// The PID namespace of host process `pid`, as its nsfs link names it.
fn pid_ns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|l| l.display().to_string())
}

/// Two containers in one PID namespace: `b` finds `a`'s shell with `ps` and kills
/// it (a traps the SIGTERM), neither is PID 1, PID 1 is the pod's init, which `b` can neither
/// kill nor look into, and which reaps `b`'s orphan. The pod ends Succeeded; the init, its
/// mounts and the pod's cgroups are gone afterwards.
#[test]
fn containers_share_one_pid_namespace_with_a_reaping_init() {
    let root = TestRoot::new();
    let control = common::control_dir(&root);
    let manifest = SHARED.replace("CONTROL_DIR", &control.display().to_string());
    let mut pod = root.run(&root.manifest("pod.yaml", &manifest));
    let killed = pod.wait_for_line(
        |l| l.starts_with("shared/b | b-killed "),
        deadline_in(START),
    );
    pod.wait_for("shared/a | a-got-TERM", START);

    // The host's side while the pod runs: the init and both containers in its namespace.
    pod.sample();
    let uid = root
        .entries("pods")
        .into_iter()
        .next()
        .expect("a pod directory");
    let pid_file = root.path().join("pods").join(uid).join("pod-init.pid");
    let init: i32 = std::fs::read_to_string(&pid_file)
        .expect("pod-init.pid")
        .trim()
        .parse()
        .expect("a PID");
    let cmdline = std::fs::read(format!("/proc/{init}/cmdline")).expect("the init runs");
    assert!(
        cmdline.starts_with(b"peapod-pod-init\0__pod_init\0"),
        "{cmdline:?}"
    );
    let ns = pid_ns(init).expect("the init's namespace");
    // Nobody's child: not the daemon's, whose exit would otherwise leave it a zombie there.
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).expect("stat");
    let ppid = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .nth(1)
        .expect("ppid")
        .to_string();
    let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    assert_ne!(
        parent.trim(),
        "peapod",
        "the pod's init is a child of peapod {ppid}"
    );
    let procs = pod.container_procs();
    assert_eq!(procs.len(), 2, "{}", pod.transcript());
    for p in &procs {
        if p.alive() {
            assert_eq!(pid_ns(p.pid).as_deref(), Some(ns.as_str()));
        }
    }
    std::fs::write(control.join("done"), "").expect("write control file");
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code\n{}", pod.transcript());

    let a = pod.container_lines("shared", "a");
    let b = pod.container_lines("shared", "b");
    let a_pid = a
        .iter()
        .find_map(|l| l.strip_prefix("a-pid "))
        .unwrap_or_else(|| panic!("no a-pid line\n{}", pod.transcript()));
    assert_eq!(killed, format!("shared/b | b-killed {a_pid}"));
    assert_ne!(a_pid, "1");
    let b_pid = b
        .iter()
        .find_map(|l| l.strip_prefix("b-pid "))
        .expect("b-pid");
    assert_ne!(b_pid, "1");
    for want in [
        "pid1 peapod-pod-init __pod_init ",
        "pid1-root-hidden",
        "pid1-survived",
        "orphan-reaped",
    ] {
        assert!(
            b.iter().any(|l| l == want),
            "b did not say {want:?}\n{}",
            pod.transcript()
        );
    }
    pod.assert_no_leaks(&root);
    let gone = poll_until(deadline_in(EXIT), || {
        (pid_ns(init) != Some(ns.clone())).then_some(())
    });
    assert!(gone.is_some(), "the pod's init {init} is still there");
}
