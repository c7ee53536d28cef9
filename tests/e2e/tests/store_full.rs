//! A full filesystem under the object store (issue 8): `<root>/state.redb` lives on a small
//! tmpfs the test mounts (a symlink from the root) and then fills. Writes are refused with a
//! Kubernetes Status, 500 `InternalError` naming the cause, as the API server answers when etcd
//! is out of space; reads, new watches and a watch already open keep working; the running pod
//! keeps running (exec into it works) and the daemon does not exit. Once space is freed, writes
//! succeed again, the open watch sees them after the acknowledged ones, and nothing refused was
//! half-written — also after a SIGKILL and a restart on the same store.
//!
//! No pod network (`PEAPOD_NETWORK=none`). The binary is `PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`. Runs as root. Waits poll with deadlines.

use peapod_e2e::pods::{busybox_pod, first_container};
use peapod_e2e::{poll_until, root_tempdir, ApiClient, Daemon, Leftovers};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
const ENV: [(&str, &str); 1] = [("PEAPOD_NETWORK", "none")];
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// A tmpfs mounted for the test, detached when dropped (after the daemon that uses it).
struct SmallDisk {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let tmp = root_tempdir("peapod-storedisk-");
        let dir = tmp.path().join("disk");
        std::fs::create_dir(&dir).expect("disk dir");
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .expect("mount a small tmpfs");
        SmallDisk { dir, _tmp: tmp }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // The last partial chunk: fill byte by byte what the page cache still takes.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn configmap(name: &str) -> Value {
    // 32 KiB each, so that the store file soon needs pages the full disk cannot give.
    json!({"metadata": {"name": name}, "data": {"blob": "x".repeat(32 << 10)}})
}

/// ConfigMap names in the store, from a list.
fn stored(api: &ApiClient) -> BTreeSet<String> {
    let r = api.request("GET", CONFIGMAPS, None).expect("list");
    assert_eq!(r.status, 200, "list: {}", String::from_utf8_lossy(&r.body));
    r.json()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string())
        .filter(|n| n.starts_with("cm-"))
        .collect()
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn container_id(api: &ApiClient) -> String {
    first_container(&api.pod("steady"))["containerID"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn exec_echo(d: &Daemon) -> bool {
    d.kubectl(&["exec", "steady", "--", "echo", "alive"])
        .is_ok_and(|o| o.stdout.trim() == "alive")
}

#[test]
fn full_store_disk_refuses_writes_keeps_serving_and_recovers() {
    let disk = SmallDisk::mount("8m");
    let mut d = Daemon::new(
        root_tempdir("peapod-storefull-"),
        Leftovers::PeapodAndPodCgroups,
    );
    std::os::unix::fs::symlink(disk.dir.join("state.redb"), d.root.join("state.redb"))
        .expect("store symlink");
    d.serve(&ENV);
    let api = ApiClient::new(&d.root, &d.server);
    api.create_pod(&busybox_pod("steady", "sleep 3600", "Always"));
    api.wait_pod("steady", "running", TIMEOUT, |p| {
        first_container(p)["state"]["running"]
            .is_object()
            .then_some(())
    });
    let id = container_id(&api);

    let before = api
        .request("POST", CONFIGMAPS, Some(&configmap("cm-before")))
        .expect("create");
    assert_eq!(before.status, 201);
    let mut watch = api
        .watch(&format!(
            "{CONFIGMAPS}?watch=1&resourceVersion={}",
            rv(&before.json())
        ))
        .expect("watch");

    let filler = disk.fill();
    // The store file has some free pages: writes succeed until it must grow.
    let (mut acked, mut refused) = (vec!["cm-before".to_string()], Vec::new());
    for i in 0..400 {
        let name = format!("cm-full-{i}");
        let r = api
            .request("POST", CONFIGMAPS, Some(&configmap(&name)))
            .expect("create");
        match r.status {
            201 => acked.push(name),
            _ => {
                let status = r.json();
                assert_eq!(r.status, 500, "{status}");
                assert_eq!(status["kind"], "Status", "{status}");
                assert_eq!(status["reason"], "InternalError", "{status}");
                let message = status["message"].as_str().unwrap_or("");
                assert!(message.contains("no space left on device"), "{status}");
                refused.push(name);
                if refused.len() == 3 {
                    break;
                }
            }
        }
    }
    assert!(!refused.is_empty(), "no write was refused on a full disk");
    eprintln!(
        "full disk: {} writes acknowledged, then {refused:?} refused",
        acked.len() - 1
    );

    // Reads, a new watch, the running pod and the daemon itself are unaffected.
    let want: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(stored(&api), want, "acknowledged writes, nothing else");
    for name in &refused {
        let r = api
            .request("GET", &format!("{CONFIGMAPS}/{name}"), None)
            .expect("get");
        assert_eq!(r.status, 404, "{name} was refused but is there");
    }
    let mut fresh = api.watch(&format!("{CONFIGMAPS}?watch=1")).expect("watch");
    let mut listed = BTreeSet::new();
    while listed.len() < want.len() {
        let e = fresh
            .next_event()
            .expect("a watch started on a full disk ended");
        listed.insert(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    fresh.close();
    assert_eq!(listed, want);
    assert!(d.is_running(), "the daemon exited\n{}", d.log());
    assert!(exec_echo(&d), "exec into the running pod failed");
    assert_eq!(container_id(&api), id);

    // Space again: writes succeed, and the open watch sees them after the acknowledged ones.
    std::fs::remove_file(&filler).expect("free space");
    let after = poll_until(Instant::now() + TIMEOUT, || {
        let r = api
            .request("POST", CONFIGMAPS, Some(&configmap("cm-after")))
            .ok()?;
        (r.status == 201).then_some(r)
    })
    .unwrap_or_else(|| panic!("writes did not come back\n{}", d.log()));
    acked.push("cm-after".into());
    let mut seen = Vec::new();
    let mut last = rv(&before.json());
    while seen.last().map(String::as_str) != Some("cm-after") {
        let e = watch
            .next_event()
            .unwrap_or_else(|| panic!("the watch ended after {seen:?}"));
        assert_eq!(e["type"], "ADDED", "{e}");
        assert!(rv(&e["object"]) > last, "resourceVersion went back: {e}");
        last = rv(&e["object"]);
        seen.push(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    watch.close();
    assert_eq!(seen, acked[1..], "the open watch's events");
    assert_eq!(rv(&after.json()), last);
    let want: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(stored(&api), want);

    // The same store after a crash: the acknowledged writes, nothing refused.
    d.kill();
    d.serve(&ENV);
    let api = ApiClient::new(&d.root, &d.server);
    assert_eq!(stored(&api), want, "after a restart");
    assert!(exec_echo(&d), "exec after the restart");
    assert_eq!(container_id(&api), id);
    d.finish();
    let dir = disk.dir.clone();
    drop(disk);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(dir.to_str().unwrap_or("?")),
        "the test's tmpfs is still mounted"
    );
}
