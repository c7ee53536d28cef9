//! Containers that misbehave (issue 8, items 5 and 7), each beside a well-behaved pod that must
//! not notice, on a `peapod serve` that must keep answering:
//!
//! - a flood of stdout: the log rotates by size (`PEAPOD_CONTAINER_LOG_MAX_SIZE`/`_MAX_FILES`,
//!   here 1Mi × 3) and what is kept stays bounded and ends with the last line; a log follower
//!   that never reads does not slow the container down; and the cost of the log path, measured
//!   as one container's throughput to its log against the same output to /dev/null;
//! - a full filesystem under a container's log directory (a small tmpfs mounted over it): the
//!   container keeps running and writing, a `FailedLogWrite` event says its lines are lost;
//! - a fork bomb, held by the pids limit (`PEAPOD_PIDS_LIMIT`, here 64);
//! - two containers of one pod forking 30 processes each under a pod-level limit
//!   (`PEAPOD_POD_PIDS_LIMIT`, the kubelet's podPidsLimit, here 40): the pod as a whole stops
//!   at 40;
//! - a container filling its emptyDir past `sizeLimit`: the pod is evicted (Failed, reason
//!   `Evicted`, the kubelet's message), its containers killed and not restarted;
//! - a container that exits at once, in a restart loop.
//!
//! No pod network (`PEAPOD_NETWORK=none`). Each test ends by deleting its pods, stopping the
//! daemon and checking that nothing of the root is left. The binary is `PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`; the image is `images/out/busybox.oci.tar`. Runs as root.
//! Waits poll with deadlines.

use peapod_e2e::{
    pod_cgroup_dirs, pod_cgroup_processes, poll_until, root_tempdir, ApiClient, Daemon, Leftovers,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);

use peapod_e2e::pods::{busybox_pod as pod, first_container as container};

fn running(pod: &Value) -> bool {
    container(pod)["state"]["running"].is_object()
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// A steady pod writing `line N` every 50 ms.
const STEADY: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.05; done";

/// Every line of the steady pod's log is the next number.
fn assert_steady(api: &ApiClient) -> usize {
    let log = api.log("steady", "");
    let numbers: Vec<u64> = log
        .lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect();
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "steady's log has a gap or a duplicate");
    }
    numbers.len()
}

/// The steady pod keeps writing: `more` lines after now.
fn steady_goes_on(api: &ApiClient, more: usize) {
    let now = assert_steady(api);
    poll_until(Instant::now() + TIMEOUT, || {
        (assert_steady(api) >= now + more).then_some(())
    })
    .expect("the steady pod stopped writing");
}

/// The daemon and an API client on a fresh root with `env`.
fn start(prefix: &str, env: &[(&str, &str)]) -> (Daemon, ApiClient) {
    let mut d = Daemon::new(root_tempdir(prefix), Leftovers::PeapodAndPodCgroups);
    d.serve(env);
    let api = ApiClient::new(&d.root, &d.server);
    (d, api)
}

/// Ends a test: pods deleted, daemon stopped, nothing left, the pods' cgroups gone.
fn finish(mut d: Daemon, uids: &[String]) {
    d.finish();
    let left: Vec<PathBuf> = uids
        .iter()
        .flat_map(|u| pod_cgroup_dirs(u))
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "pod cgroups left: {left:?}");
}

/// The current instance's log files of container `c` of pod `uid`, with their sizes.
fn log_files(root: &Path, uid: &str) -> Vec<(String, u64)> {
    let dir = root.join("pods").join(uid).join("logs/c");
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    files.sort();
    files
}

/// Seconds between two RFC 3339 times with fractions, from `exit.json` (same day assumed).
fn seconds_between(start: &str, end: &str) -> f64 {
    let secs = |t: &str| -> f64 {
        let time = t.split('T').nth(1).unwrap_or("").trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
        let m: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
        let s: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
        h * 3600.0 + m * 60.0 + s
    };
    secs(end) - secs(start)
}

/// How long the finished container of pod `name` ran, from its exit record.
fn run_seconds(api: &ApiClient, root: &Path, name: &str) -> f64 {
    let p = api.wait_pod(name, "Succeeded", TIMEOUT, |p| {
        (p["status"]["phase"] == "Succeeded").then(|| p.clone())
    });
    let id = container(&p)["containerID"]
        .as_str()
        .expect("containerID")
        .trim_start_matches("peapod://")
        .to_string();
    let exit: Value = serde_json::from_slice(
        &std::fs::read(root.join("containers").join(id).join("exit.json")).expect("exit.json"),
    )
    .expect("exit.json json");
    seconds_between(
        exit["startedAt"].as_str().expect("startedAt"),
        exit["finishedAt"].as_str().expect("finishedAt"),
    )
}

const LINES: u64 = 3_000_000;
const MAX_SIZE: u64 = 1024 * 1024;
const MAX_FILES: usize = 3;
/// A whole number of lines.
const THROUGHPUT_BYTES: u64 = 64_000_000;

#[test]
fn stdout_flood_rotates_within_bounds_and_never_blocks() {
    let (d, api) = start(
        "peapod-logflood-",
        &[
            ("PEAPOD_NETWORK", "none"),
            ("PEAPOD_CONTAINER_LOG_MAX_SIZE", "1Mi"),
            ("PEAPOD_CONTAINER_LOG_MAX_FILES", "3"),
        ],
    );
    let mut uids = vec![uid(&api.create_pod(&pod("steady", STEADY, "Always")))];
    api.wait_pod("steady", "running", TIMEOUT, |p| running(p).then_some(()));
    // The flood waits until a follower that never reads is attached.
    let flood = api.create_pod(&pod(
        "flood",
        &format!("while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 {LINES}; exec sleep 3600"),
        "Always",
    ));
    uids.push(uid(&flood));
    api.wait_pod("flood", "running", TIMEOUT, |p| running(p).then_some(()));
    let stalled = api
        .watch("/api/v1/namespaces/default/pods/flood/log?follow=true")
        .expect("follow the log");
    let exec = d.kubectl(&["exec", "flood", "--", "touch", "/tmp/go"]);
    assert!(exec.is_ok_and(|o| o.status.success()), "exec touch");
    // The whole flood gets through while the follower reads nothing.
    let started = Instant::now();
    let done = poll_until(Instant::now() + TIMEOUT, || {
        (api.try_log("flood", "tailLines=1")?.trim() == LINES.to_string()).then_some(())
    });
    assert!(
        done.is_some(),
        "the flood did not get through with a stalled follower: {:#}\n{}",
        api.pod("flood")["status"],
        d.log()
    );
    eprintln!(
        "flood: {LINES} lines through the log in {:?} with a stalled follower",
        started.elapsed()
    );
    // Bounded: at most MAX_FILES files of at most MAX_SIZE each.
    let files = log_files(&d.root, &uid(&flood));
    assert!(files.len() <= MAX_FILES, "{files:?}");
    assert!(files.iter().all(|(_, len)| *len <= MAX_SIZE), "{files:?}");
    // What is kept is the end of the flood, each line once and in order.
    let kept: Vec<u64> = api
        .log("flood", "")
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("bad line {l:?}")))
        .collect();
    assert_eq!(kept.last(), Some(&LINES));
    assert!(kept.len() > 10_000, "only {} lines kept", kept.len());
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "kept lines not consecutive"
    );
    stalled.close();
    steady_goes_on(&api, 10);

    // The log path's cost: the same bytes to the log and to /dev/null.
    // 100-byte lines: 99 characters and the newline.
    let line = &"0123456789".repeat(10)[..99];
    let generate = format!("yes {line} | head -c {THROUGHPUT_BYTES}");
    uids.push(uid(&api.create_pod(&pod(
        "to-null",
        &format!("{generate} > /dev/null"),
        "Never",
    ))));
    let null_secs = run_seconds(&api, &d.root, "to-null");
    uids.push(uid(&api.create_pod(&pod("to-log", &generate, "Never"))));
    let log_secs = run_seconds(&api, &d.root, "to-log");
    let mb = THROUGHPUT_BYTES as f64 / 1e6;
    eprintln!(
        "log throughput: {:.0} MB/s to the log ({log_secs:.2} s), {:.0} MB/s to /dev/null \
         ({null_secs:.2} s) for {mb:.0} MB of 100-byte lines",
        mb / log_secs,
        mb / null_secs
    );
    let kept = api.log("to-log", "");
    assert!(
        kept.lines().all(|l| l == line),
        "a line of to-log was cut or mixed"
    );
    assert!(
        kept.len() as u64 >= MAX_SIZE,
        "to-log kept {} bytes",
        kept.len()
    );
    steady_goes_on(&api, 10);
    finish(d, &uids);
}

#[test]
fn fork_bomb_full_emptydir_and_instant_crash_loop_leave_the_rest_alone() {
    let (d, api) = start(
        "peapod-hostile-",
        &[("PEAPOD_NETWORK", "none"), ("PEAPOD_PIDS_LIMIT", "64")],
    );
    let mut uids = vec![uid(&api.create_pod(&pod("steady", STEADY, "Always")))];
    api.wait_pod("steady", "running", TIMEOUT, |p| running(p).then_some(()));

    // A fork bomb: forks until it cannot; what it forked stays (under a PID 1 that sleeps),
    // so the pod sits at its limit.
    let bomb = api.create_pod(&pod(
        "bomb",
        "(while true; do sleep 3600 & done) & exec sleep 3600",
        "Always",
    ));
    uids.push(uid(&bomb));
    let mut most = 0;
    let refused = poll_until(Instant::now() + TIMEOUT, || {
        most = most.max(pod_cgroup_processes(&uid(&bomb)).len());
        let refused = api.try_log("bomb", "")?.contains("can't fork");
        (refused && most >= 32).then_some(())
    });
    assert!(
        refused.is_some(),
        "the fork bomb was never refused a fork (at most {most} processes seen)"
    );
    for _ in 0..10 {
        most = most.max(pod_cgroup_processes(&uid(&bomb)).len());
    }
    assert!(most <= 64, "{most} processes past the limit of 64");
    eprintln!("fork bomb: held at the limit (at most {most} processes seen)");
    steady_goes_on(&api, 10);

    // An emptyDir filled past its sizeLimit.
    let mut fill = pod(
        "fill",
        "dd if=/dev/zero of=/data/f bs=1M count=16; echo filled; exec sleep 3600",
        "Always",
    );
    fill["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {"sizeLimit": "4Mi"}}]);
    fill["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    uids.push(uid(&api.create_pod(&fill)));
    let fill_state = api.wait_pod("fill", "evicted", TIMEOUT, |p| {
        (p["status"]["reason"] == "Evicted").then(|| p.clone())
    });
    assert_eq!(fill_state["status"]["phase"], "Failed");
    assert_eq!(
        fill_state["status"]["message"],
        "Usage of EmptyDir volume \"data\" exceeds the limit \"4Mi\". "
    );
    let fill_uid = uid(&fill_state);
    poll_until(Instant::now() + TIMEOUT, || {
        pod_cgroup_processes(&fill_uid).is_empty().then_some(())
    })
    .expect("the evicted pod's processes are gone");
    assert_eq!(container(&api.pod("fill"))["restartCount"], 0, "restarted");

    // A container that exits at once, restarted in a loop.
    uids.push(uid(&api.create_pod(&pod("instant", "exit 1", "Always"))));
    api.wait_pod("instant", "crash-looping", TIMEOUT, |p| {
        (container(p)["restartCount"].as_u64().unwrap_or(0) >= 2).then_some(())
    });

    steady_goes_on(&api, 20);
    let steady = api.pod("steady");
    assert_eq!(container(&steady)["restartCount"], 0);
    assert!(running(&steady));
    finish(d, &uids);
}

#[test]
fn full_log_disk_leaves_the_container_running_and_is_an_event() {
    let (d, api) = start(
        "peapod-logfull-",
        &[
            ("PEAPOD_NETWORK", "none"),
            ("PEAPOD_CONTAINER_LOG_MAX_SIZE", "64Ki"),
        ],
    );
    let mut uids = vec![uid(&api.create_pod(&pod("steady", STEADY, "Always")))];
    let writer = api.create_pod(&pod(
        "writer",
        "i=0; while true; do i=$((i+1)); echo \"line $i of a container whose log disk is full\"; \
         echo $i > /tmp/count; [ $((i % 50)) = 0 ] && sleep 0.01; done",
        "Always",
    ));
    uids.push(uid(&writer));
    api.wait_pod("writer", "running", TIMEOUT, |p| running(p).then_some(()));
    // A full filesystem under the log directory: the next rotation lands on it.
    let logs = d.root.join("pods").join(uid(&writer)).join("logs/c");
    nix::mount::mount(
        Some("tmpfs"),
        &logs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=32k"),
    )
    .expect("mount a small tmpfs over the log directory");
    let unmount = || {
        let _ = nix::mount::umount2(&logs, nix::mount::MntFlags::MNT_DETACH);
    };
    let event = poll_until(Instant::now() + TIMEOUT, || {
        let r = api
            .request("GET", "/api/v1/namespaces/default/events", None)
            .ok()?;
        r.json()["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedLogWrite" && e["involvedObject"]["name"] == "writer")
            .cloned()
    });
    let count = || -> u64 {
        let out = d.kubectl(&["exec", "writer", "--", "cat", "/tmp/count"]);
        out.ok()
            .and_then(|o| o.stdout.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = count();
    let going = poll_until(Instant::now() + TIMEOUT, || {
        (count() > before).then_some(())
    });
    let writer_now = api.pod("writer");
    unmount();
    assert!(event.is_some(), "no FailedLogWrite event\n{}", d.log());
    assert!(going.is_some(), "the container stopped writing");
    assert!(running(&writer_now), "{:#}", writer_now["status"]);
    assert_eq!(container(&writer_now)["restartCount"], 0);
    steady_goes_on(&api, 10);
    finish(d, &uids);
}

#[test]
fn pod_pids_limit_holds_all_containers_of_a_pod_together() {
    let (d, api) = start(
        "peapod-podpids-",
        &[
            ("PEAPOD_NETWORK", "none"),
            ("PEAPOD_PIDS_LIMIT", "-1"),
            ("PEAPOD_POD_PIDS_LIMIT", "40"),
        ],
    );
    // 64 processes wanted (each container: its PID 1, a forking shell, 30 sleepers); each
    // container alone would fit under 40. A refused fork ends only the forking subshell.
    let forks = "(i=0; while [ $i -lt 30 ]; do sleep 3600 & i=$((i+1)); done; wait) & \
                 exec sleep 3600";
    let mut forker = pod("forks", forks, "Always");
    let mut second = forker["spec"]["containers"][0].clone();
    second["name"] = "d".into();
    forker["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(second);
    let uids = vec![uid(&api.create_pod(&forker))];
    api.wait_pod("forks", "both running", TIMEOUT, |p| {
        let statuses = p["status"]["containerStatuses"].as_array()?;
        (statuses.len() == 2 && statuses.iter().all(|c| c["state"]["running"].is_object()))
            .then_some(())
    });
    // The pod's own cgroup in the pids hierarchy (v1) or the unified tree (v2).
    let pod_cgroup = pod_cgroup_dirs(&uids[0])
        .into_iter()
        .find(|dir| dir.join("pids.max").exists())
        .expect("the pod cgroup has a pids.max");
    let read = |file: &str| {
        std::fs::read_to_string(pod_cgroup.join(file))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(read("pids.max"), "40", "the pod cgroup's pids.max");
    // pids.current counts every task below the pod cgroup, the zombies of the forking shells
    // too (the PID 1 sleeps never reap them), which cgroup.procs no longer lists.
    let mut most = 0;
    let held = poll_until(Instant::now() + TIMEOUT, || {
        let now: u64 = read("pids.current").parse().unwrap_or(0);
        most = most.max(now);
        let refused = ["c", "d"].iter().any(|c| {
            api.try_log("forks", &format!("container={c}"))
                .is_some_and(|l| l.contains("can't fork"))
        });
        (refused && now == 40).then_some(())
    });
    assert!(
        held.is_some(),
        "the pod never reached its limit (at most {most} tasks)"
    );
    assert!(most <= 40, "{most} tasks past the pod's limit of 40");
    let statuses = api.pod("forks")["status"]["containerStatuses"].clone();
    for c in statuses.as_array().into_iter().flatten() {
        assert!(c["state"]["running"].is_object(), "{c}");
    }
    finish(d, &uids);
}
