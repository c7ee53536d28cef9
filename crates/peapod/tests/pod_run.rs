//! Root integration tests of `peapod run -f`: real pods from manifests written here, run by the
//! real binary against a data root of their own. Most pods are `restartPolicy: Never` and their
//! containers print what they observe from the inside (namespaces, mounts, hostname); the tests
//! assert on the `pod/container | ...` lines. Long-running pods are queried from the host, then
//! interrupted. Every test ends with the leak checks of `common`.
//!
//! Run as root: `cargo test -p peapod --test pod_run`. The images come from
//! `python3 images/build.py` (or `PEAPOD_TEST_IMAGES`).

mod common;

use common::{
    deadline_in, free_port, http_get, image_archive, poll_until, run_to_completion, TestRoot,
};
use std::time::{Duration, Instant};

/// Generous: two cores, tests in parallel, a debug build.
const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);

/// The one line of `lines` that starts with `prefix`, without it.
fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:?}"))
}

const COUPLED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: coupled
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: generator
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'exit 0' TERM
      while true; do
        echo $RANDOM >> /out/data
        echo "wrote $(tail -n 1 /out/data)"
        sleep 1 & wait $!
      done
    volumeMounts:
    - name: data
      mountPath: /out
  - name: echo
    image: busybox
    command: ["httpd", "-f", "-v", "-p", "8000", "-h", "/in"]
    ports:
    - containerPort: 8000
      hostPort: HOST_PORT
    volumeMounts:
    - name: data
      mountPath: /in
      readOnly: true
"#;

/// The README's scenario: what one container writes into a shared emptyDir, the other serves
/// over HTTP on a hostPort; SIGINT deletes the pod and leaves nothing behind.
#[test]
fn generator_data_is_served_by_echo_on_the_host_port() {
    let root = TestRoot::new();
    let port = free_port();
    let path = root.manifest("pod.yaml", &COUPLED.replace("HOST_PORT", &port.to_string()));
    let mut pod = root.run(&path);
    pod.wait_for("pod/coupled: Running", START);
    let numbers = poll_until(deadline_in(START), || match http_get(port, "/data") {
        Ok((200, body)) => {
            let numbers: Vec<String> = body.lines().map(str::to_string).collect();
            let all_numeric = numbers
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            (!numbers.is_empty() && all_numeric).then_some(numbers)
        }
        _ => None,
    })
    .unwrap_or_else(|| panic!("no numbers on :{port}/data\n{}", pod.transcript()));
    // What is served is what the generator wrote.
    let first = format!("coupled/generator | wrote {}", numbers[0]);
    pod.wait_for(&first, START);
    // The kernel translates the port (no relay): an element of the bridge's host port map.
    let element = format!("tcp . {port} : ");
    assert!(
        host_port_map().contains(&element),
        "no {element:?} in\n{}",
        host_port_map()
    );
    pod.interrupt();
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code after SIGINT\n{}", pod.transcript());
    assert!(pod.stderr().contains(&"pod/coupled: deleted".to_string()));
    pod.assert_no_leaks(&root);
    assert!(
        http_get(port, "/data").is_err(),
        "host port {port} still answers after the pod was deleted"
    );
    assert!(
        !host_port_map().contains(&element),
        "{element:?} left after the pod was deleted"
    );
    // The port is free again.
    drop(std::net::TcpListener::bind(("0.0.0.0", port)).expect("host port free again"));
}

/// The elements of the node's host port map (`nft list map`), empty without one.
fn host_port_map() -> String {
    std::process::Command::new("nft")
        .args(["list", "map", "ip", "peapod0_guard", "hostports"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

const SHARING: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sharing
spec:
  restartPolicy: Never
  volumes:
  - name: sync
    emptyDir: {}
  containers:
  - name: server
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      mkdir /www && echo hello-over-loopback > /www/x
      echo written-in-shm > /dev/shm/note
      httpd -f -p 127.0.0.1:9000 -h /www &
      touch /sync/ready
      while [ ! -e /sync/done ]; do sleep 0.05; done
      kill $!
      echo "ipc $(readlink /proc/self/ns/ipc)"
      echo "net $(readlink /proc/self/ns/net)"
      echo "uts $(readlink /proc/self/ns/uts)"
    volumeMounts:
    - name: sync
      mountPath: /sync
  - name: client
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      while [ ! -e /sync/ready ]; do sleep 0.05; done
      for i in $(seq 1 100); do wget -qO- http://127.0.0.1:9000/x && break; sleep 0.05; done
      echo "shm $(cat /dev/shm/note)"
      echo "ipc $(readlink /proc/self/ns/ipc)"
      echo "net $(readlink /proc/self/ns/net)"
      echo "uts $(readlink /proc/self/ns/uts)"
      touch /sync/done
    volumeMounts:
    - name: sync
      mountPath: /sync
"#;

/// The containers of a pod share localhost (an HTTP server on 127.0.0.1 in one is reached from
/// the other), /dev/shm, and the network, IPC and UTS namespaces — which are not the host's.
#[test]
fn containers_share_localhost_dev_shm_and_namespaces() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, SHARING, 0);
    let server = pod.container_lines("sharing", "server");
    let client = pod.container_lines("sharing", "client");
    assert!(
        client.contains(&"hello-over-loopback".to_string()),
        "client did not reach the server on 127.0.0.1:9000: {client:?}"
    );
    assert_eq!(field(&client, "shm "), "written-in-shm");
    for ns in ["ipc", "net", "uts"] {
        let prefix = format!("{ns} ");
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("host namespace");
        let server_ns = field(&server, &prefix);
        assert_eq!(server_ns, field(&client, &prefix), "{ns} namespace differs");
        assert_ne!(
            server_ns,
            host.to_string_lossy(),
            "the pod uses the host's {ns} namespace"
        );
    }
}

const SYSV_IPC: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sysv
spec:
  restartPolicy: Never
  volumes:
  - name: sync
    emptyDir: {}
  containers:
  - name: maker
    image: python:3
    command: ["python3", "-c"]
    args:
    - |
      import ctypes
      libc = ctypes.CDLL(None, use_errno=True)
      IPC_CREAT = 0o1000
      qid = libc.msgget(0x5eed, IPC_CREAT | 0o600)
      print("queue", qid, "errno", ctypes.get_errno(), flush=True)
      open("/sync/ready", "w").close()
    volumeMounts:
    - name: sync
      mountPath: /sync
  - name: reader
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      while [ ! -e /sync/ready ]; do sleep 0.05; done
      awk 'NR > 1 { print "seen key " $1 " id " $2 }' /proc/sysvipc/msg
    volumeMounts:
    - name: sync
      mountPath: /sync
"#;

/// A System V message queue made in one container (msgget, from Python) is visible in the
/// other: they share the IPC namespace. (busybox has no ipcmk/ipcs.)
#[test]
fn containers_share_sysv_ipc() {
    let root = TestRoot::new();
    root.load(&image_archive(common::PYTHON_ARCHIVE));
    let pod = run_to_completion(&root, SYSV_IPC, 0);
    let maker = pod.container_lines("sysv", "maker");
    let reader = pod.container_lines("sysv", "reader");
    let made = field(&maker, "queue ");
    let (qid, errno) = made.split_once(" errno ").expect("queue line");
    assert!(
        qid.parse::<i32>().is_ok_and(|q| q >= 0),
        "msgget failed: {made}"
    );
    assert_eq!(errno, "0");
    let key = 0x5eed.to_string();
    assert!(
        reader.contains(&format!("seen key {key} id {qid}")),
        "queue {qid} (key {key}) not visible in the other container: {reader:?}"
    );
}

const HOSTNAME: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: named-pod
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "hostname; cat /etc/hostname; uname -n; grep -c named-pod /etc/hosts"]
"#;

/// Inside, the hostname is the pod's name (uname, `hostname`, /etc/hostname, /etc/hosts).
#[test]
fn hostname_is_the_pod_name() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, HOSTNAME, 0);
    assert_eq!(
        pod.container_lines("named-pod", "c"),
        ["named-pod", "named-pod", "named-pod", "1"],
        "\n{}",
        pod.transcript()
    );
}

const MEMORY_VOLUME: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: memvol
spec:
  restartPolicy: Never
  volumes:
  - name: mem
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo "mount $(grep ' /mem ' /proc/mounts)"
      if dd if=/dev/zero of=/mem/big bs=1024 count=2048 2>/dev/null; then echo big-ok; else echo big-failed; fi
      rm -f /mem/big
      if dd if=/dev/zero of=/mem/small bs=1024 count=512 2>/dev/null; then echo small-ok; else echo small-failed; fi
    volumeMounts:
    - name: mem
      mountPath: /mem
"#;

/// `emptyDir: {medium: Memory, sizeLimit: 1Mi}` is a tmpfs of 1 MiB: 2 MiB do not fit, 512 KiB do.
#[test]
fn memory_empty_dir_is_a_sized_tmpfs() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, MEMORY_VOLUME, 0);
    let lines = pod.container_lines("memvol", "c");
    let mount = field(&lines, "mount ");
    assert!(mount.starts_with("tmpfs /mem tmpfs "), "{mount}");
    assert!(mount.contains("size=1024k"), "{mount}");
    assert!(lines.contains(&"big-failed".to_string()), "{lines:?}");
    assert!(lines.contains(&"small-ok".to_string()), "{lines:?}");
}

const SUB_PATH: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: subpath
spec:
  restartPolicy: Never
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: writer
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /data/sub
      echo via-full-volume > /data/sub/file
      echo outside > /data/top
      touch /data/sub/ready
    volumeMounts:
    - name: data
      mountPath: /data
  - name: reader
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      while [ ! -e /sub/ready ]; do sleep 0.05; done
      echo "read $(cat /sub/file)"
      if [ -e /sub/top ]; then echo top-visible; else echo top-hidden; fi
      if touch /sub/x 2>/tmp/err; then echo touch-ok; else echo "touch-failed $(cat /tmp/err)"; fi
    volumeMounts:
    - name: data
      mountPath: /sub
      subPath: sub
      readOnly: true
"#;

/// `subPath` mounts a subdirectory of the volume (written through the whole volume by one
/// container, read through the subPath by the other), and `readOnly: true` refuses writes.
#[test]
fn sub_path_mounts_a_subdirectory_read_only() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, SUB_PATH, 0);
    let lines = pod.container_lines("subpath", "reader");
    assert_eq!(field(&lines, "read "), "via-full-volume");
    assert!(lines.contains(&"top-hidden".to_string()), "{lines:?}");
    let touch = field(&lines, "touch-failed ");
    assert!(touch.contains("Read-only file system"), "{touch}");
}

const PID_NAMESPACE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: pids
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo "pids $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
      echo "pid1 $(tr '\0' ' ' < /proc/1/cmdline)"
      if [ -e /proc/$HOST_PID ]; then echo host-pid-visible; else echo host-pid-hidden; fi
      echo "ps $(ps | wc -l)"
    env:
    - name: HOST_PID
      value: "TEST_PID"
"#;

/// A container sees only its own processes: a few PIDs, PID 1 is its command, and a host PID
/// (this test's own) does not exist inside.
#[test]
fn container_cannot_see_host_processes() {
    let me = std::process::id();
    assert!(me > 20, "this test's PID {me} is too small to tell apart");
    let root = TestRoot::new();
    let manifest = PID_NAMESPACE.replace("TEST_PID", &me.to_string());
    let pod = run_to_completion(&root, &manifest, 0);
    let lines = pod.container_lines("pids", "c");
    let pids: Vec<u32> = field(&lines, "pids ")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(pids.len() <= 6, "too many processes visible: {pids:?}");
    assert!(
        field(&lines, "pid1 ").starts_with("sh -c "),
        "PID 1 is not the container's command: {lines:?}"
    );
    assert!(lines.contains(&"host-pid-hidden".to_string()), "{lines:?}");
    let ps: usize = field(&lines, "ps ").parse().expect("ps count");
    assert!(ps <= 6, "ps shows {ps} lines: {lines:?}");
}

const EXITS_ZERO: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: done-ok
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo bye"]
"#;

/// A Never pod whose container exits 0 ends `peapod run` by itself, with exit code 0.
#[test]
fn succeeded_pod_ends_the_run_with_zero() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, EXITS_ZERO, 0);
    assert_eq!(pod.container_lines("done-ok", "c"), ["bye"]);
    let stderr = pod.stderr();
    for want in [
        "pod/done-ok: container c exited with code 0 (Completed)",
        "pod/done-ok: Succeeded",
        "pod/done-ok: deleted",
    ] {
        assert!(
            stderr.contains(&want.to_string()),
            "no {want:?} in {stderr:?}"
        );
    }
}

const SECCOMP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sec
spec:
  restartPolicy: Never
  containers:
  - name: open
    image: busybox
    command: ["sh", "-c", "unshare -U true; echo rc=$?"]
  - name: filtered
    image: busybox
    command: ["sh", "-c", "unshare -U true; echo rc=$?"]
    securityContext:
      seccompProfile:
        type: RuntimeDefault
"#;

/// `seccompProfile: RuntimeDefault` refuses unshare(2) to a container without CAP_SYS_ADMIN;
/// the same call in an unconfined container of the same pod succeeds.
#[test]
fn runtime_default_seccomp_refuses_unshare() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, SECCOMP, 0);
    assert_eq!(pod.container_lines("sec", "open"), ["rc=0"]);
    let filtered = pod.container_lines("sec", "filtered");
    assert!(filtered.iter().any(|l| l == "rc=1"), "{filtered:?}");
    assert!(
        filtered
            .iter()
            .any(|l| l.contains("Operation not permitted")),
        "{filtered:?}"
    );
}

const EXITS_THREE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: done-bad
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo failing; exit 3"]
"#;

/// A container exiting 3 fails the pod: `peapod run` exits 1 and reports the code.
#[test]
fn failed_container_ends_the_run_with_one() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, EXITS_THREE, 1);
    let stderr = pod.stderr();
    for want in [
        "pod/done-bad: container c exited with code 3 (Error)",
        "pod/done-bad: Failed",
        "pod/done-bad: deleted",
    ] {
        assert!(
            stderr.contains(&want.to_string()),
            "no {want:?} in {stderr:?}"
        );
    }
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
      trap '' TERM
      echo ready
      while true; do sleep 1; done
"#;

/// SIGINT on a pod whose PID 1 ignores SIGTERM: after terminationGracePeriodSeconds the
/// container is SIGKILLed (137), `peapod run` exits 0 and nothing is left.
#[test]
fn sigint_kills_a_pod_ignoring_sigterm_after_the_grace_period() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", IGNORES_TERM);
    let mut pod = root.run(&path);
    pod.wait_for("stubborn/c | ready", START);
    pod.sample();
    assert!(
        !pod.container_procs().is_empty(),
        "container process not seen"
    );
    let interrupted = Instant::now();
    pod.interrupt();
    let code = pod.exit_code(deadline_in(EXIT));
    let took = interrupted.elapsed();
    assert_eq!(code, 0, "exit code after SIGINT\n{}", pod.transcript());
    assert!(
        took >= Duration::from_millis(1900),
        "the container was killed before its grace period: {took:?}\n{}",
        pod.transcript()
    );
    let stderr = pod.stderr();
    for want in [
        "pod/stubborn: container c exited with code 137 (Error)",
        "pod/stubborn: deleted",
    ] {
        assert!(
            stderr.contains(&want.to_string()),
            "no {want:?} in {stderr:?}"
        );
    }
    pod.assert_no_leaks(&root);
}

const HANDLES_TERM: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: polite
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo got-term; exit 0' TERM
      echo ready
      while true; do sleep 1 & wait $!; done
"#;

/// SIGTERM to `peapod run` deletes the pod gracefully too: the container gets SIGTERM and
/// exits by itself well within its 30 s grace period.
#[test]
fn sigterm_stops_pods_gracefully() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", HANDLES_TERM);
    let mut pod = root.run(&path);
    pod.wait_for("polite/c | ready", START);
    let signalled = Instant::now();
    pod.signal(nix::sys::signal::Signal::SIGTERM);
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code after SIGTERM\n{}", pod.transcript());
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "the pod waited for its grace period instead of stopping on SIGTERM"
    );
    assert_eq!(pod.container_lines("polite", "c"), ["ready", "got-term"]);
    assert!(pod
        .stderr()
        .contains(&"pod/polite: container c exited with code 0 (Completed)".to_string()));
    pod.assert_no_leaks(&root);
}

const CONFIG_MAP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello-from-configmap
  app.conf: |
    mode=fast
---
apiVersion: v1
kind: Pod
metadata:
  name: configured
spec:
  restartPolicy: Never
  volumes:
  - name: cfg
    configMap:
      name: settings
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      echo "env $GREETING"
      echo "conf $(cat /etc/settings/app.conf)"
      echo "file $(cat /etc/settings/greeting)"
      if touch /etc/settings/x 2>/dev/null; then echo write-ok; else echo write-refused; fi
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef:
          name: settings
          key: greeting
    volumeMounts:
    - name: cfg
      mountPath: /etc/settings
"#;

/// A ConfigMap of the same manifest is mounted as a (read-only) volume, one file per key, and
/// feeds an env var through `valueFrom.configMapKeyRef`.
#[test]
fn config_map_volume_and_env() {
    let root = TestRoot::new();
    let pod = run_to_completion(&root, CONFIG_MAP, 0);
    let lines = pod.container_lines("configured", "c");
    assert_eq!(
        lines,
        [
            "env hello-from-configmap",
            "conf mode=fast",
            "file hello-from-configmap",
            "write-refused"
        ],
        "\n{}",
        pod.transcript()
    );
}

/// The harness itself: killing `peapod run` outright leaves monitors, containers, mounts and
/// cgroups behind; the leak checks must see that, and dropping the root must remove it all.
#[test]
fn leak_checks_catch_a_killed_run_and_drop_cleans_up() {
    let root = TestRoot::new();
    let path = root.manifest("pod.yaml", IGNORES_TERM);
    let mut pod = root.run(&path);
    pod.wait_for("stubborn/c | ready", START);
    pod.sample();
    let procs = pod.container_procs();
    let uids = pod.pod_uids();
    assert!(!procs.is_empty() && !uids.is_empty(), "nothing observed");
    pod.signal(nix::sys::signal::Signal::SIGKILL);
    let status = pod.wait_exit(deadline_in(EXIT));
    assert_eq!(status.code(), None, "peapod run was not killed");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pod.assert_no_leaks(&root);
    }));
    assert!(caught.is_err(), "the leak checks missed a killed run");
    assert!(!root.mounts().is_empty(), "no mount left to clean up");
    let root_path = root.path().to_path_buf();
    drop(pod);
    drop(root);
    assert_eq!(
        common::mounts_under(&root_path),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(common::processes_of(&root_path), Vec::new());
    for p in &procs {
        assert!(
            !p.alive(),
            "container process {} survived the cleanup",
            p.pid
        );
    }
    for uid in &uids {
        for dir in common::pod_cgroup_dirs(uid) {
            assert!(
                !dir.exists(),
                "cgroup {} survived the cleanup",
                dir.display()
            );
        }
    }
    assert!(!root_path.exists(), "{} not removed", root_path.display());
}

const SLEEPER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: early
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: mem
    emptyDir:
      medium: Memory
  containers:
  - name: a
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - name: mem
      mountPath: /mem
  - name: b
    image: busybox
    command: ["sleep", "3600"]
"#;

/// SIGINT while the pod is still being created (sandbox being made, containers being
/// started) deletes what was made so far: exit 0, nothing left.
#[test]
fn sigint_while_the_pod_starts_leaves_nothing() {
    type Reached = fn(&TestRoot) -> bool;
    let stages: [(&str, Reached); 3] = [
        ("a pod directory exists", |r| !r.entries("pods").is_empty()),
        ("a container directory exists", |r| {
            !r.entries("containers").is_empty()
        }),
        ("a container has started", |r| {
            r.entries("containers").iter().any(|c| {
                r.path()
                    .join("containers")
                    .join(c)
                    .join("started.json")
                    .exists()
            })
        }),
    ];
    for (stage, reached) in stages {
        let root = TestRoot::new();
        let path = root.manifest("pod.yaml", SLEEPER);
        let mut pod = root.run(&path);
        poll_until(deadline_in(START), || reached(&root).then_some(()))
            .unwrap_or_else(|| panic!("never saw: {stage}\n{}", pod.transcript()));
        pod.sample();
        pod.interrupt();
        let code = pod.exit_code(deadline_in(EXIT));
        assert_eq!(
            code,
            0,
            "exit code after SIGINT when {stage}\n{}",
            pod.transcript()
        );
        pod.assert_no_leaks(&root);
    }
}

/// `peapod run` forks a monitor for each container of its manifest before its daemon is up
/// (kubelet/src/monitor_pool.rs): each one ends up serving a container, the init container's
/// included, and none is left waiting once the pod runs.
#[test]
fn monitors_started_ahead_each_serve_a_container() {
    let root = TestRoot::new();
    let path = root.manifest(
        "pod.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: ahead
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: setup
    image: busybox
    command: ["sh", "-c", "echo init-done; sleep 1"]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; echo app-up; while true; do sleep 1 & wait $!; done"]
"#,
    );
    let mut pod = root.run(&path);
    pod.wait_for("ahead/setup | init-done", START);
    // A forked monitor waits under its own name until it re-executes itself.
    let waiting = |root: &TestRoot| {
        root.processes()
            .into_iter()
            .filter(|(pid, _)| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim_end() == "peapod-monitor")
            })
            .collect::<Vec<_>>()
    };
    // While the init container runs, the app's monitor is already there, waiting.
    assert_eq!(waiting(&root).len(), 1, "{}", pod.transcript());
    pod.wait_for("ahead/app | app-up", START);
    // Its set-up ran in the idle scheduling class; it copies output in the normal one.
    let normal_class = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/sched")).is_ok_and(|sched| {
            sched
                .lines()
                .any(|l| l.starts_with("policy") && l.split(':').nth(1).map(str::trim) == Some("0"))
        })
    };
    let settled = poll_until(deadline_in(START), || {
        let supervising: Vec<_> = root
            .processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("--supervise"))
            .collect();
        (waiting(&root).is_empty()
            && supervising.len() == 1
            && supervising.iter().all(|(pid, _)| normal_class(pid)))
        .then_some(())
    });
    assert!(
        settled.is_some(),
        "monitors still waiting: {:?}\n{}",
        waiting(&root),
        pod.transcript()
    );
    pod.interrupt();
    assert_eq!(pod.exit_code(deadline_in(EXIT)), 0, "{}", pod.transcript());
    pod.assert_no_leaks(&root);
}
