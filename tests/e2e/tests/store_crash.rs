//! The store under a crash (issue 8, item 4): `peapod serve` is SIGKILLed in the middle of a
//! stream of concurrent writes (ConfigMap creates and updates from several threads, each on its
//! own HTTPS connection), then started again on the same root. Every write that was answered
//! 2xx is there with the content and resourceVersion it was answered with (or a later update of
//! it), every stored object is whole (its payload matches its name), revisions handed out are
//! unique and increasing per client, and writes after the restart get higher revisions than any
//! before it. Two crash rounds on one root.
//!
//! No pod runs (`PEAPOD_NETWORK=none`). The binary is `PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`. Runs as root. Waits poll with deadlines.

use peapod_e2e::{poll_until, root_tempdir, ApiClient, Daemon, Leftovers};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITERS: usize = 6;
/// Acknowledged writes (all threads) before the kill.
const WRITES_BEFORE_KILL: usize = 500;
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// What a writer was told: name -> (revision, payload) of its last acknowledged write.
type Acked = BTreeMap<String, (u64, String)>;

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The payload of write `seq` to `name`: long enough to span pages, checkable from the name.
fn payload(name: &str, seq: usize) -> String {
    format!("{name}:{seq}:").repeat(40)
}

/// Writes until the connection fails (the daemon died): creates `r<round>-w<t>-<i>`, and every
/// fifth write updates `r<round>-w<t>-counter` with a PUT naming the last revision.
fn writer(
    api: ApiClient,
    round: usize,
    t: usize,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (Acked, Vec<u64>) {
    let mut acked = Acked::new();
    let mut revisions = Vec::new();
    let Ok(mut conn) = api.connect() else {
        return (acked, revisions);
    };
    let counter = format!("r{round}-w{t}-counter");
    let mut counter_object: Option<Value> = None;
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (method, path, name, body) = if i % 5 == 4 {
            let data = payload(&counter, i);
            match &counter_object {
                None => (
                    "POST",
                    CONFIGMAPS.to_string(),
                    counter.clone(),
                    json!({"metadata": {"name": counter}, "data": {"p": data}}),
                ),
                Some(current) => {
                    let mut next = current.clone();
                    next["data"]["p"] = json!(data);
                    (
                        "PUT",
                        format!("{CONFIGMAPS}/{counter}"),
                        counter.clone(),
                        next,
                    )
                }
            }
        } else {
            let name = format!("r{round}-w{t}-{i}");
            let body = json!({"metadata": {"name": name}, "data": {"p": payload(&name, i)}});
            ("POST", CONFIGMAPS.to_string(), name, body)
        };
        let Ok(r) = conn.request(method, &path, Some(&body)) else {
            break;
        };
        assert!(
            r.status == 200 || r.status == 201,
            "{method} {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let stored = r.json();
        let revision = rv(&stored);
        revisions.push(revision);
        acked.insert(name.clone(), (revision, body["data"]["p"].to_string()));
        if name == counter {
            counter_object = Some(stored);
        }
        count.fetch_add(1, Ordering::SeqCst);
    }
    (acked, revisions)
}

/// Lists every ConfigMap of the namespace: name -> (revision, payload as JSON text).
fn stored(api: &ApiClient) -> (u64, BTreeMap<String, (u64, String)>) {
    let r = api
        .request("GET", CONFIGMAPS, None)
        .expect("list configmaps");
    assert_eq!(r.status, 200);
    let list = r.json();
    let items = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            (name, (rv(o), o["data"]["p"].to_string()))
        })
        .collect();
    (rv(&list), items)
}

#[test]
fn acknowledged_writes_survive_a_sigkill() {
    let dir = root_tempdir("peapod-storecrash-");
    let mut d = Daemon::new(dir, Leftovers::Peapod);
    let env = [("PEAPOD_NETWORK", "none")];
    d.serve(&env);
    let mut highest_before = 0;
    let mut all_acked = Acked::new();
    for round in 0..2 {
        let api = ApiClient::new(&d.root, &d.server);
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (api, count, stop) = (api.clone(), count.clone(), stop.clone());
                std::thread::spawn(move || writer(api, round, t, count, stop))
            })
            .collect();
        let enough = poll_until(Instant::now() + Duration::from_secs(120), || {
            (count.load(Ordering::SeqCst) >= WRITES_BEFORE_KILL).then_some(())
        });
        // The crash, with writes in flight.
        d.kill();
        stop.store(true, Ordering::SeqCst);
        assert!(enough.is_some(), "writes too slow\n{}", d.log());
        let mut max_acked = 0;
        for w in writers {
            let (acked, revisions) = w.join().expect("writer");
            assert!(
                revisions.windows(2).all(|p| p[0] < p[1]),
                "revisions of one client not increasing: {revisions:?}"
            );
            assert!(
                revisions.iter().all(|r| *r > highest_before),
                "a revision from before the restart handed out again"
            );
            max_acked = max_acked.max(revisions.last().copied().unwrap_or(0));
            all_acked.extend(acked);
        }
        d.serve(&env);
        let api = ApiClient::new(&d.root, &d.server);
        let (list_rv, objects) = stored(&api);
        assert!(
            list_rv >= max_acked,
            "revision {list_rv} < acknowledged {max_acked}"
        );
        for (name, (revision, data)) in &all_acked {
            let Some((stored_rv, stored_data)) = objects.get(name) else {
                panic!("acknowledged {name} at {revision} is missing\n{}", d.log());
            };
            // A counter's update that was in flight at the kill may have been committed
            // without its answer arriving: then the stored one is newer.
            if name.ends_with("-counter") && stored_rv > revision {
                continue;
            }
            assert_eq!(stored_data, data, "{name}: content differs");
            assert_eq!(stored_rv, revision, "{name}: revision differs");
        }
        // Nothing half-written: every object is one a writer sent, whole.
        let mut revisions: Vec<u64> = Vec::new();
        for (name, (revision, data)) in &objects {
            let p: String = serde_json::from_str(data).unwrap_or_default();
            let seq = p.split(':').nth(1).unwrap_or("");
            let ok = seq
                .parse::<usize>()
                .is_ok_and(|seq| p == payload(name, seq));
            assert!(ok, "{name} holds {data}");
            revisions.push(*revision);
        }
        revisions.sort_unstable();
        assert!(
            revisions.windows(2).all(|p| p[0] < p[1]),
            "two objects share a revision"
        );
        // New writes go on from there.
        let after = format!("after-{round}");
        let r = api
            .request(
                "POST",
                CONFIGMAPS,
                Some(&json!({"metadata": {"name": after}, "data": {"p": payload(&after, 0)}})),
            )
            .expect("create after restart");
        assert_eq!(r.status, 201);
        assert!(rv(&r.json()) > list_rv, "revision went back after restart");
        highest_before = rv(&r.json());
        eprintln!(
            "round {round}: {} objects acknowledged before the kill, all present",
            all_acked.len()
        );
    }
    d.finish();
}
