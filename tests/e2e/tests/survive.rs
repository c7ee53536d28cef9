//! What survives a daemon that dies (issue 8, items 1–3): `peapod serve` is SIGKILLed while its
//! pods run and started again on the same root — by the same binary, or by a different binary
//! file as an upgrade in place would — and a container's monitor process is SIGKILLed.
//!
//! While the daemon is down, one pod keeps writing numbered lines, one pod's container exits
//! (with code 7, told to by a file the test creates) and one crash-loops. After the restart:
//! the same container IDs, restart counts and start times; the exit that happened while no
//! daemon ran is reported with its code and a finish time inside the outage; restart policies
//! resume; `GET .../log` has every numbered line once; a watch resumed from its last
//! resourceVersion sees every change, also one made before it reconnected. A killed monitor
//! gets its container killed and reported as exit 137, the restart policy applies, and no
//! process or cgroup of the killed instance is left.
//!
//! Each daemon runs on a network of its own (bridge `ppe2elost<n>`, pods 10.126.<2n>.0/24,
//! nftables table `ppe2elost<n>`, see `Net`); every test ends by deleting its pods, stopping
//! the daemon with SIGTERM and checking that no process, mount, cgroup, veth, bridge or table
//! is left. The binary is `PEAPOD_BIN`, else `<workspace>/target/debug/peapod`; the image is
//! `images/out/busybox.oci.tar` (`python3 images/build.py`). Runs as root. Waits poll with
//! deadlines.

use peapod_e2e::{
    peapod_bin, pod_cgroup_dirs, pod_cgroup_processes, poll_until, root_tempdir, ApiClient, Daemon,
    Leftovers, Watch,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The network of one test (tests run in parallel, each on its own): bridge `ppe2elost<n>`,
/// pods 10.126.<2n>.0/24, Services 10.126.<2n+1>.0/24, nftables table `ppe2elost<n>`.
#[derive(Clone, Copy)]
struct Net(u8);

impl Net {
    fn bridge(self) -> String {
        format!("ppe2elost{}", self.0)
    }
    fn table(self) -> String {
        format!("ppe2elost{}", self.0)
    }
    fn pod_cidr(self) -> String {
        format!("10.126.{}.0/24", 2 * self.0)
    }
    fn service_cidr(self) -> String {
        format!("10.126.{}.0/24", 2 * self.0 + 1)
    }
    /// Host ends of pod veths: `pp` + the pod address in hex.
    fn veth_prefix(self) -> String {
        format!("pp0a7e{:02x}", 2 * self.0)
    }
    fn env(self) -> Vec<(&'static str, String)> {
        vec![
            ("PEAPOD_BRIDGE", self.bridge()),
            ("PEAPOD_POD_CIDR", self.pod_cidr()),
            ("PEAPOD_SERVICE_CIDR", self.service_cidr()),
            ("PEAPOD_NFT_TABLE", self.table()),
        ]
    }

    fn table_exists(self) -> bool {
        Command::new("nft")
            .args(["list", "table", "ip", &self.table()])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Removes what an earlier, failed run may have left of this network.
    fn remove(self) {
        for l in links(&self.veth_prefix())
            .into_iter()
            .chain(links(&self.bridge()))
        {
            let _ = Command::new("ip").args(["link", "del", &l]).output();
        }
        for t in [self.table(), format!("{}_guard", self.bridge())] {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &t])
                .output();
        }
        let _ = Command::new("ip")
            .args(["route", "del", &self.service_cidr()])
            .output();
    }
}

fn links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Starts `d` on `net` (with `bin` when given).
fn serve(d: &mut Daemon, net: Net, bin: Option<&Path>) {
    let env = net.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match bin {
        Some(bin) => d.serve_binary(bin, &env),
        None => d.serve(&env),
    }
}

/// A daemon on a temporary root and this test's network, with an API client.
struct Node {
    d: Daemon,
    net: Net,
    api: ApiClient,
    /// Every pod uid seen, for the cgroup check at the end.
    uids: Vec<String>,
}

impl Node {
    fn start(prefix: &str, net: Net, bin: Option<&Path>) -> Node {
        let dir = root_tempdir(prefix);
        let mut d = Daemon::new(dir, Leftovers::PeapodAndPodCgroups);
        net.remove();
        serve(&mut d, net, bin);
        let api = ApiClient::new(&d.root, &d.server);
        Node {
            d,
            net,
            api,
            uids: Vec::new(),
        }
    }

    /// Starts the daemon again after a kill (with `bin` when given), on the same root.
    fn restart(&mut self, bin: Option<&Path>) {
        serve(&mut self.d, self.net, bin);
        self.api = ApiClient::new(&self.d.root, &self.d.server);
    }

    fn create_pod(&mut self, pod: Value) {
        let r = self
            .api
            .request("POST", "/api/v1/namespaces/default/pods", Some(&pod))
            .expect("create pod");
        assert_eq!(
            r.status,
            201,
            "create pod: {}",
            String::from_utf8_lossy(&r.body)
        );
        let uid = r.json()["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.uids.push(uid);
    }

    fn pod(&self, name: &str) -> Value {
        let r = self
            .api
            .request(
                "GET",
                &format!("/api/v1/namespaces/default/pods/{name}"),
                None,
            )
            .expect("get pod");
        assert_eq!(r.status, 200, "get pod {name}");
        r.json()
    }

    /// Polls the pod until `check` accepts it; fails with the last state seen.
    fn wait_pod<T>(&self, name: &str, what: &str, mut check: impl FnMut(&Value) -> Option<T>) -> T {
        let mut last = Value::Null;
        poll_until(Instant::now() + TIMEOUT, || {
            last = self.pod(name);
            check(&last)
        })
        .unwrap_or_else(|| {
            panic!(
                "pod {name}: {what} not reached\n{:#}\n{}",
                last["status"],
                self.d.log()
            )
        })
    }

    /// `GET .../log` of the pod's only container.
    fn log(&self, name: &str) -> String {
        let r = self
            .api
            .request(
                "GET",
                &format!("/api/v1/namespaces/default/pods/{name}/log"),
                None,
            )
            .expect("get log");
        assert_eq!(r.status, 200, "log of {name}");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// The end: pods deleted, daemon stopped, nothing of the root, its cgroups or network left.
    fn finish(mut self) {
        self.d.finish();
        let mut left = Vec::new();
        for uid in &self.uids {
            left.extend(pod_cgroup_dirs(uid).into_iter().filter(|d| d.exists()));
        }
        assert!(left.is_empty(), "pod cgroups left: {left:?}");
        let net = self.net;
        assert_eq!(
            links(&net.veth_prefix()),
            Vec::<String>::new(),
            "veths left"
        );
        assert!(!net.table_exists(), "nftables table {} left", net.table());
        // The bridge is node setup and outlives the daemon until `peapod network remove`.
        assert_eq!(links(&net.bridge()), vec![net.bridge()], "bridge kept");
        let removed = Command::new(peapod_e2e::peapod_bin())
            .args(["network", "remove"])
            .env("PEAPOD_ROOT", &self.d.root)
            .env("PEAPOD_BRIDGE", net.bridge())
            .output()
            .expect("run peapod network remove");
        assert!(removed.status.success(), "{removed:?}");
        assert_eq!(links(&net.bridge()), Vec::<String>::new(), "bridge left");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Daemon's Drop deletes the pods and sweeps; then the network goes.
            self.d.set_finished();
            let _ = self.d.delete_all_pods();
            let _ = self.d.stop();
            self.d.sweep();
            self.net.remove();
        }
    }
}

/// A busybox pod with one container `c` running `script`, with `/trigger` from the host.
fn pod(name: &str, script: &str, restart_policy: &str, trigger: Option<&Path>) -> Value {
    let mut pod = peapod_e2e::pods::busybox_pod(name, script, restart_policy);
    if let Some(dir) = trigger {
        pod["spec"]["volumes"] = json!([{"name": "trigger", "hostPath": {"path": dir}}]);
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "trigger", "mountPath": "/trigger"}]);
    }
    pod
}

use peapod_e2e::pods::first_container as container;

fn restart_count(pod: &Value) -> u64 {
    container(pod)["restartCount"].as_u64().unwrap_or(0)
}

fn running(pod: &Value) -> bool {
    container(pod)["state"]["running"].is_object()
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-11-22T03:04:05Z`, fraction ignored).
fn epoch_secs(t: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The numbers of `line N` lines, in order; fails on anything else.
fn numbered(log: &str) -> Vec<u64> {
    log.lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected log line {l:?}"))
        })
        .collect()
}

/// Lines 1..=n, each once, in order.
fn assert_no_gap(numbers: &[u64]) {
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64 + 1,
            "line {} is `line {n}`: a gap or a duplicate (around {:?})",
            i + 1,
            &numbers[i.saturating_sub(3)..(i + 3).min(numbers.len())]
        );
    }
}

/// A watch on the default namespace's pods that remembers the last resourceVersion it saw and
/// the newest resourceVersion of each pod.
struct PodWatch {
    stream: Option<Watch>,
    last_rv: u64,
    pods: BTreeMap<String, u64>,
    events: Vec<(String, String, u64)>,
}

impl PodWatch {
    fn start(api: &ApiClient, from: u64) -> PodWatch {
        let mut w = PodWatch {
            stream: None,
            last_rv: from,
            pods: BTreeMap::new(),
            events: Vec::new(),
        };
        w.reconnect(api);
        w
    }

    fn reconnect(&mut self, api: &ApiClient) {
        let path = format!(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion={}",
            self.last_rv
        );
        self.stream = Some(api.watch(&path).expect("watch"));
    }

    /// Reads events until one with resourceVersion >= `rv` was seen (or the stream ended).
    fn until(&mut self, rv: u64) {
        while self.last_rv < rv {
            let Some(event) = self.stream.as_mut().and_then(Watch::next_event) else {
                self.stream = None;
                return;
            };
            let kind = event["type"].as_str().unwrap_or("").to_string();
            let object = &event["object"];
            let this: u64 = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(
                this > self.last_rv,
                "watch went back: {kind} {name} at {this} after {}",
                self.last_rv
            );
            self.last_rv = this;
            self.pods.insert(name.clone(), this);
            self.events.push((kind, name, this));
        }
    }
}

/// The list's resourceVersion and each pod's.
fn list_pods(api: &ApiClient) -> (u64, BTreeMap<String, u64>) {
    let r = api
        .request("GET", "/api/v1/namespaces/default/pods", None)
        .expect("list pods");
    let list = r.json();
    let rv = |v: &Value| -> u64 {
        v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let pods = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                rv(p),
            )
        })
        .collect();
    (rv(&list), pods)
}

const STEADY: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done";
/// Waits for /trigger/go, exits 7 once; runs quietly when started again.
const EXITS: &str = "if [ -e /trigger/done ]; then exec sleep 3600; fi; \
    while [ ! -e /trigger/go ]; do sleep 0.05; done; touch /trigger/done; exit 7";
const CRASHES: &str = "echo crash; exit 3";

/// Items 1 and 2: the daemon SIGKILLed while pods run, started again (by `upgrade`, another
/// binary file, when given).
fn daemon_killed(prefix: &str, net: Net, upgrade: bool) {
    let binaries = tempfile::Builder::new()
        .prefix("peapod-bins-")
        .tempdir()
        .expect("tempdir");
    // An upgrade starts from a copy that is removed before the new one starts, as a package
    // upgrade replaces the file; the running monitors keep their (deleted) image.
    let copy = |name: &str| -> PathBuf {
        let dir = binaries.path().join(name);
        std::fs::create_dir_all(&dir).expect("bin dir");
        let bin = dir.join("peapod");
        std::fs::copy(peapod_bin(), &bin).expect("copy peapod");
        bin
    };
    let (old, new) = if upgrade {
        (Some(copy("old")), Some(copy("new")))
    } else {
        (None, None)
    };
    let mut n = Node::start(prefix, net, old.as_deref());
    let trigger = n.d.dir.path().join("trigger");
    std::fs::create_dir_all(&trigger).expect("trigger dir");
    n.create_pod(pod("steady", STEADY, "Always", None));
    n.create_pod(pod("exits", EXITS, "OnFailure", Some(&trigger)));
    n.create_pod(pod("crashes", CRASHES, "Always", None));
    n.create_pod(pod("completes", "echo done", "Never", None));

    let before_steady = n.wait_pod("steady", "running", |p| running(p).then(|| p.clone()));
    let before_exits = n.wait_pod("exits", "running", |p| running(p).then(|| p.clone()));
    // Crash-looping: at least one restart, and exited now (waiting in back-off).
    let before_crashes = n.wait_pod("crashes", "back-off after a restart", |p| {
        let waiting = container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        (restart_count(p) >= 1 && waiting).then(|| p.clone())
    });
    n.wait_pod("completes", "Succeeded", |p| {
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    // Some lines before the kill.
    poll_until(Instant::now() + TIMEOUT, || {
        (numbered(&n.log("steady")).len() >= 20).then_some(())
    })
    .expect("steady writes lines");

    let (rv_at_watch, _) = list_pods(&n.api);
    let mut watch = PodWatch::start(&n.api, rv_at_watch);
    // The watch is live: a label change comes through.
    let r = n
        .api
        .request(
            "PATCH",
            "/api/v1/namespaces/default/pods/steady",
            Some(&json!({"metadata": {"labels": {"phase": "before"}}})),
        )
        .expect("label");
    assert_eq!(r.status, 200);
    let labelled: u64 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("rv");
    watch.until(labelled);
    assert_eq!(watch.last_rv, labelled, "events: {:?}", watch.events);

    // The crash.
    let killed_at = now_secs();
    n.d.kill();
    let lines_at_kill = numbered(
        &std::fs::read_to_string(
            n.d.root
                .join("pods")
                .join(before_steady["metadata"]["uid"].as_str().expect("uid"))
                .join("logs/c/0.log"),
        )
        .expect("log file")
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string() + "\n")
        .collect::<String>(),
    )
    .len();
    // While no daemon runs: `exits` exits 7, `steady` keeps writing, `crashes` stays down.
    std::fs::write(trigger.join("go"), "").expect("trigger");
    poll_until(Instant::now() + TIMEOUT, || {
        trigger.join("done").exists().then_some(())
    })
    .expect("the container exits while the daemon is down");
    let steady_log =
        n.d.root
            .join("pods")
            .join(before_steady["metadata"]["uid"].as_str().expect("uid"))
            .join("logs/c/0.log");
    poll_until(Instant::now() + TIMEOUT, || {
        let lines = std::fs::read_to_string(&steady_log).ok()?.lines().count();
        (lines >= lines_at_kill + 25).then_some(())
    })
    .expect("steady keeps writing while the daemon is down");
    if let Some(old) = &old {
        std::fs::remove_file(old).expect("remove the old binary");
    }

    let restarted = Instant::now();
    n.restart(new.as_deref());
    let restarted_at = now_secs();
    // Adopted: the same container, its restart count and start time.
    let after_steady = n.wait_pod("steady", "re-adopted", |p| {
        (running(p) && container(p)["containerID"] == container(&before_steady)["containerID"])
            .then(|| p.clone())
    });
    let recovery = restarted.elapsed();
    eprintln!("recovery: steady re-adopted {recovery:?} after the restart began");
    assert_eq!(restart_count(&after_steady), 0);
    assert_eq!(
        container(&after_steady)["state"]["running"]["startedAt"],
        container(&before_steady)["state"]["running"]["startedAt"],
        "startedAt changed"
    );
    assert_eq!(
        after_steady["status"]["startTime"], before_steady["status"]["startTime"],
        "pod startTime changed"
    );
    assert_eq!(
        after_steady["status"]["podIP"], before_steady["status"]["podIP"],
        "pod IP changed"
    );

    // The exit while down: code 7, finished inside the outage, then restarted by OnFailure.
    let after_exits = n.wait_pod("exits", "restarted after its exit", |p| {
        (restart_count(p) == 1 && running(p)).then(|| p.clone())
    });
    assert_ne!(
        container(&after_exits)["containerID"],
        container(&before_exits)["containerID"]
    );
    let last = &container(&after_exits)["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 7, "{last:#}");
    assert_eq!(
        last["containerID"],
        container(&before_exits)["containerID"],
        "{last:#}"
    );
    let finished = last["finishedAt"]
        .as_str()
        .and_then(epoch_secs)
        .expect("finishedAt");
    assert!(
        finished >= killed_at - 1 && finished <= restarted_at + 1,
        "finishedAt {} outside the outage {killed_at}..{restarted_at}",
        last["finishedAt"]
    );

    // A pod that had completed stays so, not started again.
    let completed = n.pod("completes");
    assert_eq!(completed["status"]["phase"], "Succeeded");
    assert_eq!(restart_count(&completed), 0);

    // The crash loop resumes: same instance adopted first, then restarted by Always.
    let count = restart_count(&before_crashes);
    let p = n.pod("crashes");
    assert!(restart_count(&p) >= count, "restart count went back");
    // Still backing off from the same exit: the same back-off as before the crash (its level
    // is the restart count, counted from the recorded exit).
    let waiting = &container(&p)["state"]["waiting"];
    if restart_count(&p) == count && waiting["reason"] == "CrashLoopBackOff" {
        let backoff = |w: &Value| {
            w["message"]
                .as_str()
                .and_then(|m| m.split_whitespace().nth(1))
                .map(str::to_string)
        };
        assert_eq!(
            backoff(waiting),
            backoff(&container(&before_crashes)["state"]["waiting"]),
            "back-off changed across the restart"
        );
    }
    n.wait_pod("crashes", "restarted again", |p| {
        (restart_count(p) > count).then_some(())
    });

    // Every numbered line once, across the outage.
    let log = poll_until(Instant::now() + TIMEOUT, || {
        let log = n.log("steady");
        (numbered(&log).len() >= lines_at_kill + 50).then_some(log)
    })
    .expect("log grows after the restart");
    assert_no_gap(&numbered(&log));

    // A write before the watch reconnects, then the watch resumes from its last revision.
    let r = n
        .api
        .request(
            "PATCH",
            "/api/v1/namespaces/default/pods/steady",
            Some(&json!({"metadata": {"labels": {"phase": "after"}}})),
        )
        .expect("label");
    assert_eq!(r.status, 200);
    let relabelled: u64 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("rv");
    assert!(
        relabelled > labelled,
        "revisions went back after the restart"
    );
    watch.until(u64::MAX); // the old stream ends with the old daemon
    watch.reconnect(&n.api);
    watch.until(relabelled);
    assert!(
        watch
            .events
            .iter()
            .any(|(k, name, rv)| k == "MODIFIED" && name == "steady" && *rv == relabelled),
        "the change made before reconnecting was missed: {:?}",
        watch.events
    );
    // Caught up with a list, the watch has the newest revision of each pod changed since it
    // started.
    let (list_rv, listed) = list_pods(&n.api);
    watch.until(list_rv);
    for (name, rv) in listed.iter().filter(|(_, rv)| **rv > rv_at_watch) {
        let seen = watch.pods.get(name).copied().unwrap_or(0);
        assert!(
            seen >= *rv,
            "pod {name} at {rv} in the list, {seen} through the watch"
        );
    }
    if let Some(s) = watch.stream.take() {
        s.close();
    }
    n.finish();
}

#[test]
fn daemon_sigkilled_and_restarted_readopts_everything() {
    daemon_killed("peapod-survive-", Net(0), false);
}

#[test]
fn upgrade_in_place_readopts_everything() {
    daemon_killed("peapod-upgrade-", Net(1), true);
}

/// The PID of the monitor of the pod's only current container.
fn monitor_pid(root: &Path, container_id: &str) -> i32 {
    let id = container_id.trim_start_matches("peapod://");
    let started: Value = serde_json::from_slice(
        &std::fs::read(root.join("containers").join(id).join("started.json"))
            .expect("started.json"),
    )
    .expect("started.json json");
    started["monitorPid"].as_i64().expect("monitorPid") as i32
}

fn container_pid(root: &Path, container_id: &str) -> i32 {
    let id = container_id.trim_start_matches("peapod://");
    let started: Value = serde_json::from_slice(
        &std::fs::read(root.join("containers").join(id).join("started.json"))
            .expect("started.json"),
    )
    .expect("started.json json");
    started["pid"].as_i64().expect("pid") as i32
}

/// The directories of the cgroups named in a `/proc/PID/cgroup` text, in every hierarchy.
fn instance_cgroups(proc_cgroup: &str) -> Vec<PathBuf> {
    let paths: std::collections::BTreeSet<&str> = proc_cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter(|p| p.contains("/peapod/pod"))
        .collect();
    let mut dirs = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for p in &paths {
            dirs.push(h.path().join(p.trim_start_matches('/')));
        }
    }
    for p in &paths {
        dirs.push(Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/')));
    }
    dirs
}

/// Item 3: a monitor SIGKILLed under a running container, with the daemon up — and one killed
/// while the daemon is down.
#[test]
fn killed_monitor_kills_its_container_and_the_restart_policy_applies() {
    let mut n = Node::start("peapod-monitor-", Net(2), None);
    n.create_pod(pod("victim", STEADY, "Always", None));
    n.create_pod(pod("victim2", STEADY, "Always", None));
    let before = n.wait_pod("victim", "running", |p| running(p).then(|| p.clone()));
    let before2 = n.wait_pod("victim2", "running", |p| running(p).then(|| p.clone()));

    for (pod_before, daemon_down) in [(&before, false), (&before2, true)] {
        let name = pod_before["metadata"]["name"].as_str().expect("name");
        let id = container(pod_before)["containerID"]
            .as_str()
            .expect("containerID")
            .to_string();
        let monitor = monitor_pid(&n.d.root, &id);
        let init = container_pid(&n.d.root, &id);
        let cgroup = std::fs::read_to_string(format!("/proc/{init}/cgroup")).expect("cgroup");
        if daemon_down {
            n.d.kill();
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(monitor),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the monitor");
        if daemon_down {
            n.restart(None);
        }
        let after = n.wait_pod(name, "restarted after its monitor died", |p| {
            (restart_count(p) == 1 && running(p)).then(|| p.clone())
        });
        let last = &container(&after)["lastState"]["terminated"];
        assert_eq!(last["exitCode"], 137, "{name}: {last:#}");
        assert_eq!(last["containerID"], id.as_str(), "{name}: {last:#}");
        assert_ne!(container(&after)["containerID"], id.as_str());
        // The killed instance: no process, no cgroup, no rootfs mount.
        let gone = poll_until(Instant::now() + TIMEOUT, || {
            let alive =
                std::fs::read_to_string(format!("/proc/{init}/cgroup")).is_ok_and(|c| c == cgroup);
            (!alive).then_some(())
        });
        assert!(gone.is_some(), "{name}: container init {init} still runs");
        let cid = id.trim_start_matches("peapod://");
        let left: Vec<PathBuf> = instance_cgroups(&cgroup)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        assert!(left.is_empty(), "{name}: cgroups left {left:?}");
        let rootfs = n.d.root.join("containers").join(cid).join("bundle/rootfs");
        assert!(
            !peapod_e2e::mounts_under(&n.d.root).contains(&rootfs),
            "{name}: rootfs still mounted"
        );
        // Only the new instance's processes are in the pod's cgroups.
        let uid_here = pod_before["metadata"]["uid"].as_str().expect("uid");
        let procs = pod_cgroup_processes(uid_here);
        assert!(
            !procs.contains(&init),
            "{name}: {init} still in the pod's cgroups"
        );
    }
    n.finish();
}

/// The PID namespace of host process `pid`, as its nsfs link names it.
fn pid_namespace(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|l| l.display().to_string())
}

/// A pod with `shareProcessNamespace: true` across a SIGKILLed daemon: its init (PID 1 of the
/// pod's PID namespace) keeps running, the restarted daemon adopts the pod, a container that
/// exits afterwards is restarted into the same namespace, and deleting the pod removes the
/// init.
#[test]
fn shared_pid_namespace_survives_a_daemon_restart() {
    let mut n = Node::start("peapod-sharepid-", Net(3), None);
    let trigger = n.d.dir.path().join("trigger");
    std::fs::create_dir_all(&trigger).expect("trigger dir");
    let mut spec = pod("shared", EXITS, "Always", Some(&trigger));
    spec["spec"]["shareProcessNamespace"] = json!(true);
    n.create_pod(spec);
    let before = n.wait_pod("shared", "running", |p| running(p).then(|| p.clone()));
    let uid = before["metadata"]["uid"].as_str().expect("uid");
    let init: i32 = std::fs::read_to_string(n.d.root.join("pods").join(uid).join("pod-init.pid"))
        .expect("pod-init.pid")
        .trim()
        .parse()
        .expect("a PID");
    let ns = pid_namespace(init).expect("the pod's init runs");
    let id = container(&before)["containerID"].as_str().expect("id");
    assert_eq!(
        pid_namespace(container_pid(&n.d.root, id)),
        Some(ns.clone())
    );

    n.d.kill();
    assert_eq!(
        pid_namespace(init),
        Some(ns.clone()),
        "init died with the daemon"
    );
    n.restart(None);
    n.wait_pod("shared", "adopted", |p| {
        (running(p) && container(p)["containerID"] == id).then_some(())
    });
    std::fs::write(trigger.join("go"), "").expect("trigger");
    let after = n.wait_pod("shared", "restarted", |p| {
        (restart_count(p) == 1 && running(p)).then(|| p.clone())
    });
    let new_id = container(&after)["containerID"].as_str().expect("id");
    assert_eq!(
        pid_namespace(container_pid(&n.d.root, new_id)),
        Some(ns.clone()),
        "the new instance is not in the pod's PID namespace"
    );
    n.finish();
    assert_ne!(
        pid_namespace(init),
        Some(ns),
        "the pod's init outlived its pod"
    );
}
