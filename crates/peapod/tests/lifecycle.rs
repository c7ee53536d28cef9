//! Root integration tests of the pod lifecycle (issue 4) through `peapod run -f`: init
//! containers, restart policies and CrashLoopBackOff, probes, lifecycle hooks, graceful
//! termination, memory limits, securityContext and native sidecars — each observed from the
//! status lines on stderr, the containers' own log lines on stdout (what they see from the
//! inside), and the clock. The tests never sleep: they wait for lines with deadlines, and tell
//! long-running containers when to act through a hostPath control directory. Every test ends
//! with the leak checks of `common`.
//!
//! `peapod run` prints no pod status object, so restartCount is observed as numbered container
//! instances (a counter in an emptyDir) and backoff as the time between exit lines. Tests of
//! product bugs are `#[ignore]`d with the bug in one line; `--include-ignored` runs them.
//!
//! Run as root: `cargo test -p peapod --test lifecycle`. The images come from
//! `python3 images/build.py` (or `PEAPOD_TEST_IMAGES`).

mod common;

use common::{control_dir, deadline_in, run_to_completion, RunningPod, TestRoot};
use std::time::{Duration, Instant};

/// Generous: two cores, tests in parallel, a debug build.
const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);

/// SIGINT, then: exit code 0, the pod reported deleted, nothing left behind.
fn interrupt_and_check(root: &TestRoot, pod: &mut RunningPod, name: &str) {
    pod.interrupt();
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code after SIGINT\n{}", pod.transcript());
    assert_has(pod, &format!("pod/{name}: deleted"));
    pod.assert_no_leaks(root);
}

/// Fails unless `pod` printed exactly `line` (on either stream).
fn assert_has(pod: &RunningPod, line: &str) {
    let found = pod.output().iter().any(|(_, l)| l == line);
    assert!(found, "no line {line:?}\n{}", pod.transcript());
}

/// Where the first line equal to `line` is in `lines`; fails the test when there is none.
fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in {lines:?}"))
}

/// Where the first line starting with `prefix` is in `lines`; fails the test when there is none.
fn position_of_prefix(lines: &[String], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:?}"))
}

/// Every line printed so far, both streams, in the order they were read.
fn all_lines(pod: &RunningPod) -> Vec<String> {
    pod.output().into_iter().map(|(_, l)| l).collect()
}

const INIT_ORDER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: init-order
spec:
  restartPolicy: Never
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: i1
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo i1-start >> /work/order
      sleep 1
      echo i1-end >> /work/order
    volumeMounts:
    - name: work
      mountPath: /work
  - name: i2
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo i2-start >> /work/order
      echo i2-end >> /work/order
    volumeMounts:
    - name: work
      mountPath: /work
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo \"order $(tr '\\n' ' ' < /work/order)\""]
    volumeMounts:
    - name: work
      mountPath: /work
"#;

/// Init containers run one at a time, in order, each to completion before the next (i2 does
/// not start while i1 sleeps), and the app container only after the last one.
#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, INIT_ORDER, 0);
    assert_eq!(
        pod.container_lines("init-order", "app"),
        ["order i1-start i1-end i2-start i2-end "],
        "\n{}",
        pod.transcript()
    );
    let stderr = pod.stderr();
    let i1 = position(
        &stderr,
        "pod/init-order: container i1 exited with code 0 (Completed)",
    );
    let i2 = position(
        &stderr,
        "pod/init-order: container i2 exited with code 0 (Completed)",
    );
    let app = position(
        &stderr,
        "pod/init-order: container app exited with code 0 (Completed)",
    );
    assert!(i1 < i2 && i2 < app, "exits out of order: {stderr:?}");
    position(&stderr, "pod/init-order: Succeeded");
}

const INIT_RETRY: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: init-retry
spec:
  restartPolicy: OnFailure
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: flaky
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      if [ -e /work/tried ]; then echo second-try; exit 0; fi
      touch /work/tried
      echo first-try
      exit 1
    volumeMounts:
    - name: work
      mountPath: /work
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo app-ran"]
"#;

/// Under restartPolicy OnFailure a failing init container is retried (at once, the first
/// time), and once it succeeds the app container runs and the pod succeeds.
#[test]
fn failing_init_container_is_retried_under_on_failure() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, INIT_RETRY, 0);
    assert_eq!(
        pod.container_lines("init-retry", "flaky"),
        ["first-try", "second-try"],
        "\n{}",
        pod.transcript()
    );
    assert_eq!(pod.container_lines("init-retry", "app"), ["app-ran"]);
    let stderr = pod.stderr();
    let failed = position(
        &stderr,
        "pod/init-retry: container flaky exited with code 1 (Error)",
    );
    let retried = position(
        &stderr,
        "pod/init-retry: container flaky exited with code 0 (Completed)",
    );
    let app = position(
        &stderr,
        "pod/init-retry: container app exited with code 0 (Completed)",
    );
    assert!(failed < retried && retried < app, "{stderr:?}");
    position(&stderr, "pod/init-retry: Succeeded");
}

const INIT_NEVER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: init-never
spec:
  restartPolicy: Never
  initContainers:
  - name: broken
    image: busybox
    command: ["sh", "-c", "echo init-failing; exit 1"]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo app-must-not-run"]
"#;

/// Under restartPolicy Never a failing init container fails the pod: it is not retried, the
/// app container never starts, `peapod run` exits 1.
#[test]
fn failing_init_container_fails_the_pod_under_never() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, INIT_NEVER, 1);
    assert_eq!(
        pod.container_lines("init-never", "broken"),
        ["init-failing"]
    );
    assert_eq!(
        pod.container_lines("init-never", "app"),
        Vec::<String>::new(),
        "the app container ran\n{}",
        pod.transcript()
    );
    let stderr = pod.stderr();
    let exits: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("pod/init-never: container "))
        .collect();
    assert_eq!(
        exits,
        ["pod/init-never: container broken exited with code 1 (Error)"],
        "\n{}",
        pod.transcript()
    );
    position(&stderr, "pod/init-never: Failed");
}

const CRASH_LOOP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: crashloop
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  volumes:
  - name: state
    emptyDir: {}
  containers:
  - name: crash
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      n=$(( $(cat /state/n 2>/dev/null || echo 0) + 1 ))
      echo $n > /state/n
      echo "instance $n"
      exit 1
    volumeMounts:
    - name: state
      mountPath: /state
"#;

/// CrashLoopBackOff on a real container: the first restart is immediate, the second waits
/// the kubelet's initial back-off of 10 s. SIGINT during the back-off ends the run at once and
/// no further instance starts.
#[test]
fn crash_looping_container_backs_off() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", CRASH_LOOP);
    let mut pod = root.run(&path);
    let exited = |l: &str| l == "pod/crashloop: container crash exited with code 1 (Error)";
    pod.wait_for_nth_line(exited, 1, deadline_in(START));
    let first = Instant::now();
    let deadline = deadline_in(Duration::from_secs(40));
    pod.wait_for_nth_line(exited, 2, deadline);
    let second = Instant::now();
    pod.wait_for_nth_line(exited, 3, deadline);
    let third = Instant::now();
    let (gap1, gap2) = (second - first, third - second);
    assert!(
        gap1 < Duration::from_secs(5),
        "the first restart was not immediate: {gap1:?}\n{}",
        pod.transcript()
    );
    assert!(
        gap2 >= Duration::from_secs(9) && gap2 < Duration::from_secs(18),
        "the second restart did not wait the 10 s back-off: {gap2:?}\n{}",
        pod.transcript()
    );
    pod.wait_for("crashloop/crash | instance 3", START);
    interrupt_and_check(&root, &mut pod, "crashloop");
    assert_eq!(
        pod.container_lines("crashloop", "crash"),
        ["instance 1", "instance 2", "instance 3"],
        "\n{}",
        pod.transcript()
    );
}

const LIVENESS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: liveness
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - name: state
    emptyDir: {}
  initContainers:
  - name: setup
    image: busybox
    command: ["touch", "/state/healthy"]
    volumeMounts:
    - name: state
      mountPath: /state
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo got-TERM; exit 0' TERM
      n=$(( $(cat /state/n 2>/dev/null || echo 0) + 1 ))
      echo $n > /state/n
      echo "started $n"
      if [ $n = 1 ]; then
        sleep 1
        rm /state/healthy
        echo removed-healthy
      else
        touch /state/healthy
      fi
      while true; do sleep 1 & wait $!; done
    livenessProbe:
      exec:
        command: ["cat", "/state/healthy"]
      periodSeconds: 1
      failureThreshold: 2
    volumeMounts:
    - name: state
      mountPath: /state
"#;

/// A failing liveness probe restarts the container: `Unhealthy`, then `Killing`, the
/// instance gets its stop signal and exits, and a new instance starts.
#[test]
fn failing_liveness_probe_restarts_the_container() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", LIVENESS);
    let mut pod = root.run(&path);
    pod.wait_for("liveness/app | started 1", START);
    pod.wait_for("liveness/app | started 2", START);
    let stderr = pod.stderr();
    let unhealthy = position_of_prefix(&stderr, "pod/liveness: Unhealthy: Liveness probe failed: ");
    let killing = position(
        &stderr,
        "pod/liveness: Killing: Container app failed liveness probe, will be restarted",
    );
    let exit = position(
        &stderr,
        "pod/liveness: container app exited with code 0 (Completed)",
    );
    assert!(unhealthy < killing && killing < exit, "{stderr:?}");
    assert!(
        stderr[unhealthy].contains("/state/healthy"),
        "the failure does not name the probed file: {}",
        stderr[unhealthy]
    );
    interrupt_and_check(&root, &mut pod, "liveness");
    let lines = pod.container_lines("liveness", "app");
    let want = ["started 1", "removed-healthy", "got-TERM", "started 2"];
    assert!(
        lines.len() >= want.len() && lines[..want.len()] == want,
        "the container's lines do not begin with {want:?}\n{}",
        pod.transcript()
    );
}

const READINESS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: readiness
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - name: control
    hostPath:
      path: CONTROL_DIR
      type: Directory
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'exit 0' TERM
      mkdir -p /www && echo ok > /www/index.html
      httpd -f -p 8080 -h /www &
      until [ -e /control/remove ]; do sleep 0.1; done
      rm /www/index.html && echo removed
      until [ -e /control/restore ]; do sleep 0.1; done
      echo ok > /www/index.html && echo restored
      while true; do sleep 1 & wait $!; done
    readinessProbe:
      httpGet:
        path: /index.html
        port: 8080
      periodSeconds: 1
      failureThreshold: 1
    volumeMounts:
    - name: control
      mountPath: /control
"#;

/// An httpGet readiness probe drives the container's ready flag and the pod's Ready
/// condition both ways: ready while the file is served, not ready once the container removed
/// it, ready again once it is back. The test says when through a hostPath volume.
#[test]
fn readiness_probe_flips_ready() {
    let root = TestRoot::new();
    let control = control_dir(&root);
    let manifest = READINESS.replace("CONTROL_DIR", &control.display().to_string());
    let path = root.manifest("pod.yaml", &manifest);
    let mut pod = root.run(&path);
    let ready = |l: &str| l == "pod/readiness: container web ready";
    let pod_ready = |l: &str| l == "pod/readiness: Ready";
    pod.wait_for_nth_line(ready, 1, deadline_in(START));
    pod.wait_for_nth_line(pod_ready, 1, deadline_in(START));

    std::fs::write(control.join("remove"), "").expect("write control file");
    pod.wait_for("readiness/web | removed", START);
    pod.wait_for("pod/readiness: container web not ready", START);
    pod.wait_for("pod/readiness: NotReady", START);

    std::fs::write(control.join("restore"), "").expect("write control file");
    pod.wait_for("readiness/web | restored", START);
    pod.wait_for_nth_line(ready, 2, deadline_in(START));
    pod.wait_for_nth_line(pod_ready, 2, deadline_in(START));

    let stderr = pod.stderr();
    let not_ready = position(&stderr, "pod/readiness: NotReady");
    let unhealthy = position(
        &stderr,
        "pod/readiness: Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404",
    );
    assert!(
        unhealthy < not_ready,
        "NotReady before a failed probe: {stderr:?}"
    );
    interrupt_and_check(&root, &mut pod, "readiness");
    assert_has(
        &pod,
        "pod/readiness: container web exited with code 0 (Completed)",
    );
}

const LOOPBACK_ONLY: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: loopback
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'exit 0' TERM
      mkdir -p /www && echo ok > /www/index.html
      httpd -f -p 127.0.0.1:8080 -h /www &
      echo serving
      while true; do sleep 1 & wait $!; done
    readinessProbe:
      httpGet:
        path: /index.html
        port: 8080
      periodSeconds: 1
"#;

/// Network probes dial the pod's IP, as the kubelet does: a server bound to 127.0.0.1 only is
/// not reached, so the container is never ready — on a node it would not be either.
#[test]
fn probes_dial_the_pod_ip_not_loopback() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", LOOPBACK_ONLY);
    let mut pod = root.run(&path);
    pod.wait_for("loopback/web | serving", START);
    let failed = pod.wait_for_line(
        |l| l.starts_with("pod/loopback: Unhealthy: Readiness probe failed: Get \"http://"),
        deadline_in(START),
    );
    assert!(!failed.contains("127.0.0.1"), "{failed}");
    assert!(
        !pod.stderr()
            .iter()
            .any(|l| l == "pod/loopback: container web ready"),
        "{}",
        pod.transcript()
    );
    interrupt_and_check(&root, &mut pod, "loopback");
}

const OOM: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo filling
      head -c 100000000 /dev/zero | tail
    resources:
      limits:
        memory: 16Mi
"#;

/// A container going over its 16Mi memory limit (tail holding 100 MB without a newline) is
/// OOM-killed: exit code 137, reason OOMKilled, the pod Failed.
#[test]
fn container_over_its_memory_limit_is_oom_killed() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, OOM, 1);
    let lines = pod.container_lines("oom", "hog");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("filling"),
        "{lines:?}"
    );
    let stderr = pod.stderr();
    position(
        &stderr,
        "pod/oom: container hog exited with code 137 (OOMKilled)",
    );
    position(&stderr, "pod/oom: Failed");
}

const PRE_STOP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: prestop
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo TERM; exit 0' TERM
      echo ready
      while true; do sleep 1 & wait $!; done
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo PRESTOP > /proc/1/fd/1; sleep 1; echo PRESTOP-END > /proc/1/fd/1"]
"#;

/// On deletion the preStop hook runs, to its end, before the stop signal is sent; the
/// container then exits by itself well within its grace period.
#[test]
fn pre_stop_hook_runs_before_the_stop_signal() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", PRE_STOP);
    let mut pod = root.run(&path);
    pod.wait_for("prestop/c | ready", START);
    let interrupted = Instant::now();
    interrupt_and_check(&root, &mut pod, "prestop");
    assert!(
        interrupted.elapsed() < Duration::from_secs(25),
        "the container waited for its grace period\n{}",
        pod.transcript()
    );
    assert_eq!(
        pod.container_lines("prestop", "c"),
        ["ready", "PRESTOP", "PRESTOP-END", "TERM"],
        "\n{}",
        pod.transcript()
    );
    assert_has(
        &pod,
        "pod/prestop: container c exited with code 0 (Completed)",
    );
}

const IGNORES_TERM: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo TERM-ignored' TERM
      echo ready
      while true; do sleep 1 & wait $!; done
"#;

/// A container that receives SIGTERM and ignores it is SIGKILLed once its
/// terminationGracePeriodSeconds (2 s) are over, not before and not after the default 30 s.
#[test]
fn sigterm_ignoring_container_is_killed_after_its_grace_period() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", IGNORES_TERM);
    let mut pod = root.run(&path);
    pod.wait_for("stubborn/c | ready", START);
    let interrupted = Instant::now();
    pod.interrupt();
    pod.wait_for("stubborn/c | TERM-ignored", START);
    pod.wait_for(
        "pod/stubborn: container c exited with code 137 (Error)",
        START,
    );
    let killed_after = interrupted.elapsed();
    let code = pod.exit_code(deadline_in(EXIT));
    let exited_after = interrupted.elapsed();
    assert_eq!(code, 0, "exit code after SIGINT\n{}", pod.transcript());
    assert!(
        killed_after >= Duration::from_millis(1800),
        "killed before its grace period: {killed_after:?}\n{}",
        pod.transcript()
    );
    assert!(
        killed_after < Duration::from_secs(15),
        "not killed at the end of its 2 s grace period: {killed_after:?}\n{}",
        pod.transcript()
    );
    assert!(exited_after >= killed_after);
    assert_has(&pod, "pod/stubborn: deleted");
    pod.assert_no_leaks(&root);
}

const NON_ROOT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: nonroot-container
spec:
  restartPolicy: Never
  volumes:
  - name: control
    hostPath:
      path: CONTROL_DIR
      type: Directory
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo must-not-run"]
    securityContext:
      runAsNonRoot: true
  - name: witness
    image: busybox
    command: ["sh", "-c", "until [ -e /control/done ]; do sleep 0.1; done; echo \"uid $(id -u)\""]
    securityContext:
      runAsUser: 1000
    volumeMounts:
    - name: control
      mountPath: /control
---
apiVersion: v1
kind: Pod
metadata:
  name: nonroot-pod
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
  volumes:
  - name: control
    hostPath:
      path: CONTROL_DIR
      type: Directory
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo must-not-run"]
  - name: witness
    image: busybox
    command: ["sh", "-c", "until [ -e /control/done ]; do sleep 0.1; done; echo \"uid $(id -u)\""]
    securityContext:
      runAsUser: 1000
    volumeMounts:
    - name: control
      mountPath: /control
"#;

/// runAsNonRoot (on the container, or on the whole pod) refuses the busybox image, which runs
/// as root: that container never starts and the pod fails, `peapod run` exits 1. Beside it a
/// `witness` container with runAsUser 1000 is accepted under the same rule and keeps the pod
/// alive until the test has seen the refusal.
#[test]
fn run_as_non_root_refuses_a_root_image() {
    let root = TestRoot::new();
    let control = control_dir(&root);
    let manifest = NON_ROOT.replace("CONTROL_DIR", &control.display().to_string());
    let path = root.manifest("pod.yaml", &manifest);
    let mut pod = root.run(&path);
    for name in ["nonroot-container", "nonroot-pod"] {
        let prefix = format!("pod/{name}: container c failed to start: ");
        let failed = pod.wait_for_line(|l| l.starts_with(&prefix), deadline_in(START));
        assert!(
            failed.ends_with("container has runAsNonRoot and image will run as root"),
            "{failed}"
        );
    }
    pod.sample();
    std::fs::write(control.join("done"), "").expect("write control file");
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 1, "exit code\n{}", pod.transcript());
    pod.assert_no_leaks(&root);
    let stderr = pod.stderr();
    for name in ["nonroot-container", "nonroot-pod"] {
        assert_eq!(
            pod.container_lines(name, "c"),
            Vec::<String>::new(),
            "a refused container ran\n{}",
            pod.transcript()
        );
        assert_eq!(pod.container_lines(name, "witness"), ["uid 1000"]);
        position(&stderr, &format!("pod/{name}: Failed"));
    }
}

const SECURED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: secured
spec:
  restartPolicy: Never
  volumes:
  - name: shared
    emptyDir: {}
  initContainers:
  - name: setup
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo secret > /shared/owned
      chown 1000:1000 /shared/owned && chmod 600 /shared/owned && echo setup-ok
    volumeMounts:
    - name: shared
      mountPath: /shared
  containers:
  - name: plain
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      awk '/^(CapEff|CapBnd|NoNewPrivs):/ { print $1, $2 }' /proc/self/status
      out=$(touch /x 2>&1) && echo touch-ok || echo "touch-failed $out"
      touch /tmp/mine && chown 1000 /tmp/mine && echo chown-ok
      echo "uid $(id -u)"
  - name: readonly
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      out=$(touch /x 2>&1) && echo touch-ok || echo "touch-failed $out"
      touch /shared/from-readonly && echo volume-writable
    securityContext:
      readOnlyRootFilesystem: true
    volumeMounts:
    - name: shared
      mountPath: /shared
  - name: nocaps
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      awk '/^(CapEff|CapBnd):/ { print $1, $2 }' /proc/self/status
      out=$(chown 0 /shared/owned 2>&1) && echo chown-ok || echo "chown-failed $out"
      out=$(cat /shared/owned 2>&1) && echo "read $out" || echo "read-failed $out"
      echo "uid $(id -u)"
    securityContext:
      capabilities:
        drop: ["ALL"]
    volumeMounts:
    - name: shared
      mountPath: /shared
  - name: user
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo "uid $(id -u) gid $(id -g)"
      out=$(cat /shared/owned 2>&1) && echo "read $out" || echo "read-failed $out"
    securityContext:
      runAsUser: 1000
      runAsGroup: 1000
      runAsNonRoot: true
    volumeMounts:
    - name: shared
      mountPath: /shared
  - name: nnp
    image: busybox
    command: ["sh", "-c", "awk '/^NoNewPrivs:/ { print $1, $2 }' /proc/self/status"]
    securityContext:
      allowPrivilegeEscalation: false
"#;

/// securityContext enforced, as seen from inside the containers (a plain container beside
/// them shows the defaults): readOnlyRootFilesystem refuses writes to / but not to a volume;
/// dropping ALL capabilities leaves none (effective and bounding), so root cannot chown or
/// read another uid's file; runAsUser/runAsGroup set the ids (and runAsNonRoot accepts them);
/// allowPrivilegeEscalation false sets NoNewPrivs.
#[test]
fn security_context_is_enforced_inside_the_container() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, SECURED, 0);
    let lines = |c: &str| pod.container_lines("secured", c);
    assert_eq!(lines("setup"), ["setup-ok"], "\n{}", pod.transcript());

    let plain = lines("plain");
    assert!(
        plain.contains(&"NoNewPrivs: 0".to_string())
            && plain.contains(&"touch-ok".to_string())
            && plain.contains(&"chown-ok".to_string())
            && plain.contains(&"uid 0".to_string()),
        "the defaults changed: {plain:?}"
    );
    let plain_caps = &plain[position_of_prefix(&plain, "CapEff: ")];
    assert_ne!(plain_caps, "CapEff: 0000000000000000", "{plain:?}");

    let readonly = lines("readonly");
    assert_eq!(
        readonly,
        [
            "touch-failed touch: /x: Read-only file system",
            "volume-writable"
        ],
        "\n{}",
        pod.transcript()
    );

    let nocaps = lines("nocaps");
    assert_eq!(
        nocaps,
        [
            "CapEff: 0000000000000000",
            "CapBnd: 0000000000000000",
            "chown-failed chown: /shared/owned: Operation not permitted",
            "read-failed cat: can't open '/shared/owned': Permission denied",
            "uid 0",
        ],
        "\n{}",
        pod.transcript()
    );

    assert_eq!(
        lines("user"),
        ["uid 1000 gid 1000", "read secret"],
        "\n{}",
        pod.transcript()
    );
    assert_eq!(lines("nnp"), ["NoNewPrivs: 1"], "\n{}", pod.transcript());
    position(&pod.stderr(), "pod/secured: Succeeded");
}

const SIDECAR: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
  volumes:
  - name: shared
    emptyDir: {}
  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c"]
    args:
    - |
      trap 'if [ -e /shared/app-done ]; then echo "got TERM after app done"; else echo "got TERM early"; fi; exit 0' TERM
      echo side-up
      touch /shared/side-up
      while true; do sleep 1 & wait $!; done
    volumeMounts:
    - name: shared
      mountPath: /shared
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      until [ -e /shared/side-up ]; do sleep 0.1; done
      echo "sidecar is up"
      echo done
      touch /shared/app-done
    volumeMounts:
    - name: shared
      mountPath: /shared
"#;

/// A native sidecar (an init container with restartPolicy Always) runs beside the app
/// container without blocking completion: the app exits 0, the pod Succeeds, and only then
/// the sidecar gets its SIGTERM (it sees the app's marker file) and exits; `peapod run` exits 0
/// without waiting out the grace period.
#[test]
fn native_sidecar_is_stopped_after_the_app_completes() {
    let root = TestRoot::new();
    let started = Instant::now();
    let pod = run_to_completion(&root, SIDECAR, 0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run waited for the sidecar's grace period\n{}",
        pod.transcript()
    );
    assert_eq!(
        pod.container_lines("sidecar", "app"),
        ["sidecar is up", "done"]
    );
    // Exactly one SIGTERM is what native_sidecar_pre_stop_hook_runs_once asks for (ignored:
    // today the sidecar may get two, so its trap may print twice).
    let side = pod.container_lines("sidecar", "side");
    assert!(
        side.len() >= 2
            && side[0] == "side-up"
            && side[1..].iter().all(|l| l == "got TERM after app done"),
        "\n{}",
        pod.transcript()
    );
    let all = all_lines(&pod);
    let done = position(&all, "sidecar/app | done");
    let term = position(&all, "sidecar/side | got TERM after app done");
    assert!(done < term, "{all:?}");
    let stderr = pod.stderr();
    let app = position(
        &stderr,
        "pod/sidecar: container app exited with code 0 (Completed)",
    );
    let succeeded = position(&stderr, "pod/sidecar: Succeeded");
    let side = position(
        &stderr,
        "pod/sidecar: container side exited with code 0 (Completed)",
    );
    assert!(app < succeeded && app < side, "{stderr:?}");
}

const SIDECAR_DELETED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar-deleted
spec:
  terminationGracePeriodSeconds: 30
  volumes:
  - name: shared
    emptyDir: {}
  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c"]
    args:
    - |
      trap 'if [ -e /shared/app-gone ]; then echo "got TERM after the app"; else echo "got TERM before the app"; fi; exit 0' TERM
      echo side-up
      while true; do sleep 1 & wait $!; done
    volumeMounts:
    - name: shared
      mountPath: /shared
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo got TERM; sleep 1; touch /shared/app-gone; exit 0' TERM
      echo app-up
      while true; do sleep 1 & wait $!; done
    volumeMounts:
    - name: shared
      mountPath: /shared
"#;

/// Deleting a running pod stops its app containers first and its native sidecars only once
/// those are gone: the sidecar's SIGTERM comes after the app (slow to stop: 1 s) exited.
#[test]
fn native_sidecar_is_stopped_after_the_app_on_deletion() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", SIDECAR_DELETED);
    let mut pod = root.run(&path);
    pod.wait_for("sidecar-deleted/side | side-up", START);
    pod.wait_for("sidecar-deleted/app | app-up", START);
    interrupt_and_check(&root, &mut pod, "sidecar-deleted");
    assert_eq!(
        pod.container_lines("sidecar-deleted", "side"),
        ["side-up", "got TERM after the app"],
        "\n{}",
        pod.transcript()
    );
    let stderr = pod.stderr();
    let app = position(
        &stderr,
        "pod/sidecar-deleted: container app exited with code 0 (Completed)",
    );
    let side = position(
        &stderr,
        "pod/sidecar-deleted: container side exited with code 0 (Completed)",
    );
    assert!(app < side, "{stderr:?}");
}

const SIDECAR_PRE_STOP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar-prestop
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo got-TERM; exit 0' TERM
      echo side-up
      while true; do sleep 1 & wait $!; done
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo PRESTOP > /proc/1/fd/1; sleep 1"]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo done"]
"#;

/// The sidecar of a completed pod is stopped once: its preStop hook runs once, then one
/// SIGTERM.
#[test]
fn native_sidecar_pre_stop_hook_runs_once() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, SIDECAR_PRE_STOP, 0);
    assert_eq!(
        pod.container_lines("sidecar-prestop", "side"),
        ["side-up", "PRESTOP", "got-TERM"],
        "\n{}",
        pod.transcript()
    );
}

const SIDECAR_STARTUP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar-startup
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
  volumes:
  - name: shared
    emptyDir: {}
  - name: control
    hostPath:
      path: CONTROL_DIR
      type: Directory
  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c"]
    args:
    - |
      trap 'exit 0' TERM
      echo side-up
      until [ -e /control/go ]; do sleep 0.1; done
      touch /shared/side-started
      while true; do sleep 1 & wait $!; done
    startupProbe:
      exec:
        command: ["test", "-e", "/shared/side-started"]
      periodSeconds: 1
      failureThreshold: 60
    volumeMounts:
    - name: shared
      mountPath: /shared
    - name: control
      mountPath: /control
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      if [ -e /shared/side-started ]; then echo after-sidecar-started; else echo before-sidecar-started; fi
    volumeMounts:
    - name: shared
      mountPath: /shared
"#;

/// A sidecar with a startupProbe holds back the containers after it until the probe
/// succeeded (its `started` flag), not merely until its process runs
/// (<https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/>).
#[test]
fn app_waits_for_the_sidecar_startup_probe() {
    let root = TestRoot::new();
    let control = control_dir(&root);
    let manifest = SIDECAR_STARTUP.replace("CONTROL_DIR", &control.display().to_string());
    let path = root.manifest("pod.yaml", &manifest);
    let mut pod = root.run(&path);
    pod.wait_for("sidecar-startup/side | side-up", START);
    pod.wait_for_line(
        |l| l.starts_with("pod/sidecar-startup: Unhealthy: Startup probe failed: "),
        deadline_in(START),
    );
    std::fs::write(control.join("go"), "").expect("write control file");
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code\n{}", pod.transcript());
    pod.assert_no_leaks(&root);
    assert_eq!(
        pod.container_lines("sidecar-startup", "app"),
        ["after-sidecar-started"],
        "\n{}",
        pod.transcript()
    );
}

const POST_START: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: poststart
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo got-TERM; exit 3' TERM
      echo running
      while true; do sleep 1 & wait $!; done
    lifecycle:
      postStart:
        exec:
          command: ["false"]
"#;

/// A failing postStart hook is reported (`FailedPostStartHook`) and kills the container: it
/// gets its stop signal and exits, and with restartPolicy Never the pod fails.
#[test]
fn failing_post_start_hook_kills_the_container() {
    let root = TestRoot::new();
    let started = Instant::now();
    let pod = run_to_completion(&root, POST_START, 1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the container was not stopped at once\n{}",
        pod.transcript()
    );
    let stderr = pod.stderr();
    let hook = position_of_prefix(&stderr, "pod/poststart: FailedPostStartHook: ");
    let exit = position(
        &stderr,
        "pod/poststart: container c exited with code 3 (Error)",
    );
    assert!(hook < exit, "{stderr:?}");
    position(&stderr, "pod/poststart: Failed");
    let lines = pod.container_lines("poststart", "c");
    assert!(
        lines.contains(&"got-TERM".to_string()),
        "the container did not get its stop signal: {lines:?}"
    );
}
