//! `peapod serve` under load (issue 8, item 6), three rounds on one daemon: 100 pods created
//! at once from parallel clients, 20 watchers following every pod event, and API writes
//! (ConfigMap creates, updates and deletes) from parallel clients, then every pod deleted. No
//! request fails, every watcher sees each pod added and deleted with increasing
//! resourceVersions, and after each round, once the daemon is idle, its open file descriptors,
//! threads and child processes come back to where they were before the first round and its
//! anonymous memory (from /proc/<pid>/smaps_rollup) stays within [`MEMORY_SLACK_KIB`] of what
//! it was after the first round. At the end the daemon is SIGKILLed with 50 pods
//! running and a new one started: the time until it has re-adopted them all is printed, as are
//! the write latencies (p50/p99); durations are not asserted.
//!
//! No pod network (`PEAPOD_NETWORK=none`). The binary is `PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`; a release binary gives the latency figures of the notes.
//! `PEAPOD_LOAD_ROUNDS` runs more rounds (to see whether memory keeps growing). Runs as root.
//! Waits poll with deadlines.

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
/// How much more anonymous memory (heap, from /proc/<pid>/smaps_rollup) the idle daemon may
/// hold after a later round than after the first. Measured (each round's Events deleted,
/// redb's cache at 4 MiB, 2 malloc arenas): debug, 25.3 MiB after round 1, then +1.8, +4.6,
/// +4.1, +5.5 MiB over rounds 2–5; release, 22.5–23.3 MiB, then +4.4, +4.4 and +4.4, +3.1 —
/// a plateau (allocator retention, fragmentation), not a trend. Without those settings the
/// heap grew ~5 MiB a round: the Events each pod leaves for an hour (`--event-ttl`) and redb's
/// page cache filling towards its 64 MiB as the store file grows, both bounded and neither a
/// leak. A leak of anything per pod, per request or per watch (a kubelet map, a watch buffer,
/// a list of events, a revision log never compacted) adds its size every round: 10 MiB over
/// rounds 2 and 3 passes the noise and catches one of ≳3 MiB a round (30 KiB per pod, or
/// 2 KiB per API write).
const MEMORY_SLACK_KIB: u64 = 10 << 10;
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

/// What the daemon holds, from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    /// Child processes (monitors, exec helpers, sandbox helpers not yet reaped).
    children: usize,
    rss_kib: u64,
    pss_kib: u64,
    /// Resident anonymous memory (the heap): unlike RSS and PSS, not moved by how many other
    /// processes map the same binary.
    anon_kib: u64,
}

/// A `Name:   123 kB` line of a /proc file.
fn kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn children(pid: i32) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid ...`; comm may hold spaces, so read after the last ')'.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .count()
}

fn usage(pid: i32) -> Usage {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Usage {
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        children: children(pid),
        rss_kib: kib(&smaps, "Rss"),
        pss_kib: kib(&smaps, "Pss"),
        anon_kib: kib(&smaps, "Anonymous"),
    }
}

/// The daemon's usage once it is idle: descriptors, threads and children back to `baseline`
/// (with slack) and its heap no longer moving (two readings a second apart within 256 KiB),
/// or what it is at the deadline.
fn settled(pid: i32, baseline: Usage) -> (Usage, bool) {
    let back = |u: Usage| {
        u.fds <= baseline.fds + FD_SLACK
            && u.threads <= baseline.threads + THREAD_SLACK
            && u.children <= baseline.children
    };
    let mut last = usage(pid);
    let mut now = last;
    let idle = poll_every(
        Duration::from_secs(1),
        Instant::now() + Duration::from_secs(60),
        || {
            now = usage(pid);
            let steady = now.anon_kib.abs_diff(last.anon_kib) <= 256;
            last = now;
            (back(now) && steady).then_some(())
        },
    );
    (now, idle.is_some())
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

/// Deletes the Events the round's pods left, as the API server's `--event-ttl` (1 h) would
/// later: kept, they are what the store legitimately holds more after each round.
fn delete_events(api: &ApiClient) {
    let list = api
        .request("GET", "/api/v1/namespaces/default/events", None)
        .expect("list events")
        .json();
    let names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["metadata"]["name"].as_str().map(String::from))
        .collect();
    let n = names.len();
    let names = std::sync::Arc::new(names);
    let api = api.clone();
    parallel(n, 8, move |i| {
        let path = format!("/api/v1/namespaces/default/events/{}", names[i]);
        let r = api.request("DELETE", &path, None).expect("delete event");
        assert!(
            r.status == 200 || r.status == 404,
            "delete event: {}",
            r.status
        );
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn hundred_pods_twenty_watchers_and_thousands_of_writes_three_times() {
    let mut d = Daemon::new(root_tempdir("peapod-load-"), Leftovers::PeapodAndPodCgroups);
    // redb's page cache is bounded by its setting (64 MiB by default) and fills as the store file
    // grows, and glibc keeps up to 8 arenas per core, each holding on to what its threads
    // freed: a small cache and 2 arenas keep both from hiding the daemon's own memory.
    let env = [
        ("PEAPOD_NETWORK", "none"),
        ("PEAPOD_STORE_CACHE_SIZE", "4Mi"),
        ("MALLOC_ARENA_MAX", "2"),
    ];
    d.serve(&env);
    let api = ApiClient::new(&d.root, &d.server);
    let baseline = usage(d.pid().expect("pid"));
    eprintln!("baseline: {baseline:?}");
    let rounds = std::env::var("PEAPOD_LOAD_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS);
    let mut latencies = Vec::new();
    let mut memory = Vec::new();
    for round in 0..rounds {
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
        delete_events(&api);
        for w in watchers {
            let events = w
                .join()
                .expect("watcher")
                .unwrap_or_else(|e| panic!("watcher: {e}"));
            assert!(events >= 2 * PODS);
        }
        let (now, idle) = settled(d.pid().expect("pid"), baseline);
        let store = std::fs::metadata(d.root.join("state.redb")).map_or(0, |m| m.len() >> 10);
        eprintln!("after round {round}: {now:?}, store file {store} KiB");
        assert!(idle, "round {round}: {now:?} is not back to {baseline:?}");
        memory.push(now.anon_kib);
    }
    eprintln!("anonymous memory after each round: {memory:?} KiB, baseline {baseline:?}");
    for (round, anon) in memory.iter().enumerate().skip(1) {
        assert!(
            *anon <= memory[0] + MEMORY_SLACK_KIB,
            "round {round}: the daemon holds {anon} KiB, {} KiB after the first round: a leak?",
            memory[0]
        );
    }
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
