//! `peapod serve` under load (issue 8, item 6), three rounds on one daemon: 100 pods created
//! at once from parallel clients, 20 watchers following every pod event, and API writes
//! (ConfigMap creates, updates and deletes) from parallel clients, then every pod deleted. No
//! request fails, every watcher sees each pod added and deleted with increasing
//! resourceVersions, and after each round the daemon's open file descriptors and threads come
//! back to where they were before the first (read from /proc). At the end the daemon is
//! SIGKILLed with 50 pods running and a new one started: the time until it has re-adopted them
//! all is printed, as are the write latencies (p50/p99) and the daemon's resident memory after
//! each round; durations and memory are not asserted.
//!
//! No pod network (`PEAPOD_NETWORK=none`). The binary is `PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`. Runs as root. Waits poll with deadlines.

use peapod_e2e::{poll_every, root_tempdir, ApiClient, Daemon, Leftovers};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PODS: usize = 100;
const WATCHERS: usize = 20;
const WRITERS: usize = 8;
/// Writes per writer per round: 8 × 210 × 3 rounds ≈ 5,000.
const WRITES: usize = 210;
const ROUNDS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(180);
/// What the daemon may hold above its baseline after a round (lazily opened files, a
/// connection being closed).
const FD_SLACK: usize = 8;
const THREAD_SLACK: usize = 4;
/// Pods running when the daemon is SIGKILLed for the recovery figure.
const RECOVERY_PODS: usize = 50;

fn poll_until<T>(deadline: Instant, check: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(Duration::from_millis(250), deadline, check)
}

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Open descriptors and threads of process `pid`, and its resident memory in KiB.
fn usage(pid: i32) -> (usize, usize, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
        rss,
    )
}

fn sleeper(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "load"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
        },
    })
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Runs `f(i)` for i in 0..n on `threads` threads; returns what each call returned.
fn parallel<T: Send + 'static>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || (t..n).step_by(threads).map(|i| f(i)).collect::<Vec<T>>())
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker thread"))
        .collect()
}

/// Pods in the namespace: name -> container ID of the running container (None otherwise).
fn running_pods(api: &ApiClient) -> BTreeMap<String, Option<String>> {
    let Ok(r) = api.request("GET", "/api/v1/namespaces/default/pods", None) else {
        return BTreeMap::new();
    };
    r.json()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let c = &p["status"]["containerStatuses"][0];
            let id = c["state"]["running"]
                .is_object()
                .then(|| c["containerID"].as_str().unwrap_or("").to_string());
            (p["metadata"]["name"].as_str().unwrap_or("").to_string(), id)
        })
        .collect()
}

/// One writer's round: create, update and delete its own ConfigMaps; the latency of each write.
fn writes(api: &ApiClient, round: usize, w: usize) -> Vec<Duration> {
    let mut conn = api.connect().expect("connect");
    let mut latencies = Vec::with_capacity(WRITES);
    let base = "/api/v1/namespaces/default/configmaps";
    let mut write = |method: &str, path: &str, body: Option<&Value>, want: u16| {
        let started = Instant::now();
        let r = conn.request(method, path, body).expect("write");
        latencies.push(started.elapsed());
        assert_eq!(
            r.status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    };
    for i in 0..WRITES / 3 {
        let name = format!("load-{round}-{w}-{i}");
        let cm = json!({"metadata": {"name": name}, "data": {"n": i.to_string()}});
        write("POST", base, Some(&cm), 201);
        let patch = json!({"data": {"n": format!("{i}-updated")}});
        write("PATCH", &format!("{base}/{name}"), Some(&patch), 200);
        write("DELETE", &format!("{base}/{name}"), None, 200);
    }
    latencies
}

/// One watcher: follows pod events from `from` until it saw every pod of the round deleted.
fn watch_round(api: &ApiClient, from: u64) -> Result<usize, String> {
    let mut w = api
        .watch(&format!(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion={from}"
        ))
        .map_err(|e| e.to_string())?;
    let (mut added, mut deleted, mut events, mut last) = (0, 0, 0, from);
    while deleted < PODS {
        let Some(e) = w.next_event() else {
            return Err(format!(
                "watch ended after {events} events ({added} added, {deleted} deleted)"
            ));
        };
        events += 1;
        let this = rv(&e["object"]);
        if this <= last {
            return Err(format!("resourceVersion went from {last} to {this}"));
        }
        last = this;
        match e["type"].as_str() {
            Some("ADDED") => added += 1,
            Some("DELETED") => deleted += 1,
            Some("MODIFIED") => {}
            other => return Err(format!("unexpected event {other:?}: {e}")),
        }
    }
    w.close();
    if added != PODS {
        return Err(format!("{added} pods added, {PODS} expected"));
    }
    Ok(events)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn hundred_pods_twenty_watchers_and_thousands_of_writes_three_times() {
    let mut d = Daemon::new(root_tempdir("peapod-load-"), Leftovers::PeapodAndPodCgroups);
    let env = [("PEAPOD_NETWORK", "none")];
    d.serve(&env);
    let api = ApiClient::new(&d.root, &d.server);
    let (fds0, threads0, rss0) = usage(d.pid().expect("pid"));
    eprintln!("baseline: {fds0} fds, {threads0} threads, {rss0} KiB");
    let mut latencies = Vec::new();
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let from = rv(&api
            .request("GET", "/api/v1/namespaces/default/pods", None)
            .expect("list")
            .json());
        let watchers: Vec<_> = (0..WATCHERS)
            .map(|_| {
                let api = api.clone();
                std::thread::spawn(move || watch_round(&api, from))
            })
            .collect();
        let started = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let api = api.clone();
                std::thread::spawn(move || writes(&api, round, w))
            })
            .collect();
        let creator = api.clone();
        parallel(PODS, 10, move |i| {
            creator.create_pod(&sleeper(&format!("load-{i}")));
        });
        for w in writers {
            latencies.extend(w.join().expect("writer"));
        }
        let all_running = poll_until(Instant::now() + TIMEOUT, || {
            let pods = running_pods(&api);
            (pods.len() == PODS && pods.values().all(Option::is_some)).then_some(pods)
        })
        .unwrap_or_else(|| panic!("not every pod running\n{}", d.log()));
        eprintln!(
            "round {round}: {PODS} pods running and {} writes done in {:?}",
            WRITERS * WRITES,
            started.elapsed()
        );
        let deleter = api.clone();
        parallel(PODS, 10, move |i| {
            let r = deleter
                .request(
                    "DELETE",
                    &format!("/api/v1/namespaces/default/pods/load-{i}"),
                    None,
                )
                .expect("delete");
            assert!(r.status == 200 || r.status == 202, "delete: {}", r.status);
        });
        poll_until(Instant::now() + TIMEOUT, || {
            running_pods(&api).is_empty().then_some(())
        })
        .unwrap_or_else(|| panic!("pods not deleted\n{}", d.log()));
        drop(all_running);
        for w in watchers {
            let events = w
                .join()
                .expect("watcher")
                .unwrap_or_else(|e| panic!("watcher: {e}"));
            assert!(events >= 2 * PODS);
        }
        let pid = d.pid().expect("pid");
        let mut now = usage(pid);
        let back = poll_until(Instant::now() + Duration::from_secs(60), || {
            now = usage(pid);
            (now.0 <= fds0 + FD_SLACK && now.1 <= threads0 + THREAD_SLACK).then_some(())
        });
        eprintln!(
            "after round {round}: {} fds, {} threads, {} KiB",
            now.0, now.1, now.2
        );
        rss.push(now.2);
        assert!(
            back.is_some(),
            "round {round}: {} fds and {} threads, baseline {fds0} and {threads0}",
            now.0,
            now.1
        );
    }
    // Resident memory is printed, not asserted: it does not come back to the baseline (redb's
    // cache, the allocator's arenas, the Events each pod leaves for an hour) and still varies
    // by 10–25 MiB from round to round; it grew by ~17 MiB per round, steadily, while the
    // garbage collector listed every object every 2 s.
    eprintln!("resident memory after each round: {rss:?} KiB (baseline {rss0} KiB)");
    latencies.sort_unstable();
    eprintln!(
        "write latency over {} writes: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );

    // A crash with RECOVERY_PODS running: how long until a new daemon has re-adopted them all.
    let creator = api.clone();
    parallel(RECOVERY_PODS, 10, move |i| {
        creator.create_pod(&sleeper(&format!("crash-{i}")));
    });
    let all_running = poll_until(Instant::now() + TIMEOUT, || {
        let pods = running_pods(&api);
        (pods.len() == RECOVERY_PODS && pods.values().all(Option::is_some)).then_some(pods)
    })
    .unwrap_or_else(|| panic!("not every pod running\n{}", d.log()));
    d.kill();
    let restarted = Instant::now();
    d.serve(&env);
    let api = ApiClient::new(&d.root, &d.server);
    let readopted = poll_until(Instant::now() + TIMEOUT, || {
        (running_pods(&api) == all_running).then_some(restarted.elapsed())
    })
    .unwrap_or_else(|| panic!("pods not re-adopted\n{}", d.log()));
    eprintln!("recovery: {RECOVERY_PODS} pods re-adopted {readopted:?} after the restart began");
    d.finish();
}
