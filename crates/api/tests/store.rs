//! Integration tests of the object store on a temporary redb file: resourceVersions and
//! optimistic concurrency, generation rules, lists with selectors and paging, watches (replay,
//! live, filtered transitions, lag), compaction, reopening, and concurrent writers.

use std::time::{Duration, Instant};

use peapod_api::store::{
    EventKind, Filter, ListOptions, ObjectKey, Store, StoreError, StoreOptions, Watch, WatchEvent,
};
use serde_json::{json, Value};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store.redb")).expect("open");
    (dir, store)
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::namespaced("pods", ns, name)
}

fn pod(app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}})
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("resourceVersion")
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().expect("name")
}

fn set_label(app: &'static str) -> impl FnMut(&mut Value) -> Result<(), StoreError> {
    move |o| {
        o["metadata"]["labels"]["app"] = app.into();
        Ok(())
    }
}

/// The next event, failing the test if none arrives before the deadline.
async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event before the deadline")
        .expect("the stream is open")
}

fn summary(event: &WatchEvent) -> (EventKind, String, u64) {
    (event.kind, name(&event.object).to_string(), event.revision)
}

#[test]
fn handles_are_shareable_across_threads_and_tasks() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    fn sendable<T: Send + std::fmt::Debug>() {}
    shareable::<Store>();
    sendable::<Watch>();
    sendable::<StoreError>();
}

#[test]
fn create_get_update_delete_with_resource_versions() {
    let (_dir, store) = open();
    assert_eq!(store.revision(), 0);
    let created = store
        .create(&key("default", "web"), pod("web"))
        .expect("create");
    let meta = &created["metadata"];
    assert_eq!(
        (
            &meta["name"],
            &meta["namespace"],
            &meta["resourceVersion"],
            &meta["generation"]
        ),
        (&json!("web"), &json!("default"), &json!("1"), &json!(1))
    );
    let uid = meta["uid"].as_str().expect("uid");
    assert!(uid.len() == 36 && uid.as_bytes()[14] == b'4', "{uid}");
    let ts = meta["creationTimestamp"]
        .as_str()
        .expect("creationTimestamp");
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    assert_eq!(
        store.get(&key("default", "web")).expect("get"),
        Some(created.clone())
    );
    assert_eq!(store.get(&key("default", "nope")).expect("get"), None);
    assert!(matches!(
        store.create(&key("default", "web"), pod("web")),
        Err(StoreError::AlreadyExists { .. })
    ));

    let mut changed = created.clone();
    changed["status"]["phase"] = "Running".into();
    let updated = store
        .update(&key("default", "web"), changed)
        .expect("update");
    assert_eq!(rv(&updated), 2);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(store.revision(), 2);

    let deleted = store
        .delete(&key("default", "web"), Some(2))
        .expect("delete");
    assert_eq!(rv(&deleted), 3);
    assert_eq!(deleted["status"]["phase"], "Running");
    assert_eq!(store.get(&key("default", "web")).expect("get"), None);
    assert_eq!(store.revision(), 3);
    for result in [
        store.delete(&key("default", "web"), None),
        store.update(&key("default", "web"), pod("web")),
        store.update_with(&key("default", "web"), set_label("x")),
    ] {
        assert!(matches!(result, Err(StoreError::NotFound { .. })));
    }
    assert_eq!(store.revision(), 3, "failed writes take no revision");
}

#[test]
fn stale_resource_version_conflicts() {
    let (_dir, store) = open();
    let k = key("default", "web");
    let v1 = store.create(&k, pod("web")).expect("create");
    let v2 = store.update(&k, v1.clone()).expect("no-op update");
    assert_eq!(rv(&v2), 1, "an update that changes nothing writes nothing");
    let mut next = v1.clone();
    next["spec"]["containers"][0]["image"] = "i2".into();
    let v2 = store
        .update(&k, next.clone())
        .expect("update at the current version");
    assert!(matches!(
        store.update(&k, next.clone()),
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    assert!(matches!(
        store.delete(&k, Some(1)),
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    let mut bad = v2.clone();
    bad["metadata"]["resourceVersion"] = "abc".into();
    assert!(matches!(
        store.update(&k, bad),
        Err(StoreError::InvalidResourceVersion { .. })
    ));
    let mut unconditional = next;
    unconditional["metadata"]["resourceVersion"] = "".into();
    unconditional["status"]["phase"] = "Running".into();
    assert_eq!(
        rv(&store.update(&k, unconditional).expect("unconditional")),
        3
    );
    assert_eq!(store.revision(), 3);
}

#[test]
fn generation_bumps_only_for_spec_changes() {
    let (_dir, store) = open();
    let k = key("default", "web");
    let mut obj = store.create(&k, pod("web")).expect("create");
    let mut step = |f: &dyn Fn(&mut Value)| {
        f(&mut obj);
        obj = store.update(&k, obj.clone()).expect("update");
        obj["metadata"]["generation"].as_i64().expect("generation")
    };
    assert_eq!(step(&|o| o["metadata"]["labels"]["tier"] = "fe".into()), 1);
    assert_eq!(step(&|o| o["status"]["phase"] = "Running".into()), 1);
    assert_eq!(
        step(&|o| o["spec"]["containers"][0]["image"] = "i2".into()),
        2
    );
    assert_eq!(step(&|o| o["metadata"]["generation"] = 40.into()), 2);
    assert_eq!(step(&|o| o["spec"]["restartPolicy"] = "Never".into()), 3);
    let with = store
        .update_with(&k, |o| {
            o["spec"]["nodeName"] = "n1".into();
            Ok(())
        })
        .expect("update_with");
    assert_eq!(with["metadata"]["generation"], 4);
}

#[test]
fn update_with_is_atomic_and_aborts_on_error() {
    let (_dir, store) = open();
    let k = key("default", "web");
    store.create(&k, pod("web")).expect("create");
    let updated = store.update_with(&k, set_label("db")).expect("update_with");
    assert_eq!(updated["metadata"]["labels"]["app"], "db");
    assert_eq!(rv(&updated), 2);
    let err = store.update_with(&k, |o| {
        o["spec"] = json!({});
        Err(StoreError::InvalidObject {
            key: key("default", "web"),
            reason: "refused".into(),
        })
    });
    assert!(matches!(err, Err(StoreError::InvalidObject { .. })));
    assert_eq!(store.revision(), 2);
    assert_eq!(store.get(&k).expect("get"), Some(updated));
}

#[test]
fn invalid_keys_and_objects() {
    let (_dir, store) = open();
    let empty_ns = ObjectKey::namespaced("pods", "", "x");
    assert!(matches!(
        store.get(&empty_ns),
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.list("", None, &ListOptions::default()),
        Err(StoreError::InvalidKey { .. })
    ));
    let mut other = pod("web");
    other["metadata"]["name"] = "other".into();
    assert!(matches!(
        store.create(&key("default", "web"), other),
        Err(StoreError::InvalidObject { .. })
    ));
    let node = store
        .create(
            &ObjectKey::cluster("nodes", "n1"),
            json!({"metadata": {"namespace": "x"}}),
        )
        .expect("cluster-scoped create");
    assert_eq!(node["metadata"].get("namespace"), None);
    assert_eq!(store.revision(), 1);
}

fn seed(store: &Store) {
    for ns in ["ns-b", "ns-a"] {
        for i in (0..5).rev() {
            let mut obj = pod(if i % 2 == 0 { "web" } else { "db" });
            obj["status"]["phase"] = if i < 2 { "Running" } else { "Pending" }.into();
            store
                .create(&key(ns, &format!("p{i}")), obj)
                .expect("create");
        }
    }
    store
        .create(&ObjectKey::cluster("nodes", "n1"), json!({}))
        .expect("node");
}

fn names(items: &[Value]) -> Vec<String> {
    let ns = |o: &Value| {
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    items
        .iter()
        .map(|o| format!("{}/{}", ns(o), name(o)))
        .collect()
}

#[test]
fn list_filters_by_namespace_and_selectors() {
    let (_dir, store) = open();
    seed(&store);
    let list = |ns: Option<&str>, labels: Option<&str>, fields: Option<&str>| {
        let opts = ListOptions {
            label_selector: labels.map(String::from),
            field_selector: fields.map(String::from),
            ..ListOptions::default()
        };
        store.list("pods", ns, &opts)
    };
    let all = list(None, None, None).expect("list");
    assert_eq!(all.items.len(), 10);
    assert_eq!(all.resource_version, 11);
    assert_eq!((all.continue_token.clone(), all.remaining), (None, None));
    assert_eq!(
        names(&all.items)[..2],
        ["ns-a/p0", "ns-a/p1"],
        "ordered by namespace, name"
    );
    let cases = [
        (
            Some("ns-a"),
            None,
            None,
            vec!["ns-a/p0", "ns-a/p1", "ns-a/p2", "ns-a/p3", "ns-a/p4"],
        ),
        (
            Some("ns-b"),
            Some("app=db"),
            None,
            vec!["ns-b/p1", "ns-b/p3"],
        ),
        (
            None,
            Some("app in (db), app!=web"),
            Some("status.phase=Running"),
            vec!["ns-a/p1", "ns-b/p1"],
        ),
        (
            None,
            None,
            Some("metadata.namespace=ns-b,metadata.name!=p0,status.phase==Running"),
            vec!["ns-b/p1"],
        ),
        (Some("ns-c"), None, None, vec![]),
    ];
    for (ns, labels, fields, want) in cases {
        let got = list(ns, labels, fields).expect("list");
        assert_eq!(names(&got.items), want, "{ns:?} {labels:?} {fields:?}");
    }
    let nodes = store
        .list("nodes", None, &ListOptions::default())
        .expect("nodes");
    assert_eq!(names(&nodes.items), ["/n1"]);
    assert!(matches!(
        list(None, Some("app in ()"), None),
        Err(StoreError::InvalidSelector { .. })
    ));
    assert!(matches!(
        list(None, None, Some("status.phase")),
        Err(StoreError::InvalidSelector { .. })
    ));
}

#[test]
fn list_pages_are_complete_and_stable() {
    let (_dir, store) = open();
    seed(&store);
    let mut opts = ListOptions {
        limit: Some(3),
        ..ListOptions::default()
    };
    let mut seen = Vec::new();
    let mut remaining = Vec::new();
    let mut versions = Vec::new();
    loop {
        let page = store.list("pods", None, &opts).expect("page");
        seen.extend(names(&page.items));
        if seen.len() == 3 {
            // Writes between pages: one before the cursor (not seen), one after (seen).
            store
                .create(&key("ns-a", "a-early"), pod("web"))
                .expect("create");
            store
                .create(&key("ns-b", "z-late"), pod("web"))
                .expect("create");
        }
        remaining.push(page.remaining);
        versions.push(page.resource_version);
        match page.continue_token {
            Some(token) => opts.continue_token = Some(token),
            None => break,
        }
    }
    let mut want: Vec<String> = ["ns-a", "ns-b"]
        .iter()
        .flat_map(|ns| (0..5).map(move |i| format!("{ns}/p{i}")))
        .collect();
    want.push("ns-b/z-late".into());
    assert_eq!(seen, want);
    assert_eq!(remaining, [Some(7), Some(5), Some(2), None]);
    assert_eq!(
        versions,
        [11, 11, 11, 11],
        "every page reports the first page's revision"
    );

    let filtered = ListOptions {
        limit: Some(2),
        label_selector: Some("app=web".into()),
        ..ListOptions::default()
    };
    let page = store.list("pods", Some("ns-a"), &filtered).expect("page");
    assert_eq!(names(&page.items), ["ns-a/a-early", "ns-a/p0"]);
    assert_eq!(page.remaining, Some(2));
    let token = page.continue_token.expect("more");
    let bad = |ns: Option<&str>, token: &str| {
        let opts = ListOptions {
            continue_token: Some(token.to_string()),
            ..ListOptions::default()
        };
        store.list("pods", ns, &opts)
    };
    assert!(matches!(
        bad(Some("ns-b"), &token),
        Err(StoreError::InvalidContinue)
    ));
    assert!(matches!(bad(None, "%%%"), Err(StoreError::InvalidContinue)));
    let next = ListOptions {
        continue_token: Some(token),
        ..filtered
    };
    let page = store.list("pods", Some("ns-a"), &next).expect("page");
    assert_eq!(names(&page.items), ["ns-a/p2", "ns-a/p4"]);
    assert_eq!((page.continue_token, page.remaining), (None, None));
}

#[tokio::test]
async fn watch_replays_from_an_old_revision_then_streams_live() {
    let (_dir, store) = open();
    let a = key("default", "a");
    store.create(&a, pod("web")).expect("create a"); // 1
    store
        .create(&key("default", "b"), pod("web"))
        .expect("create b"); // 2
    store
        .create(&key("other", "c"), pod("web"))
        .expect("create c"); // 3
    store.update_with(&a, set_label("x")).expect("modify a"); // 4
    store.delete(&key("default", "b"), None).expect("delete b"); // 5
    store
        .create(&ObjectKey::namespaced("podsx", "default", "z"), json!({}))
        .expect("podsx"); // 6

    let mut w = store
        .watch("pods", Some("default"), 1, Filter::default())
        .expect("watch");
    let mut all = store
        .watch("pods", None, 1, Filter::default())
        .expect("watch");
    assert_eq!(
        summary(&next(&mut w).await),
        (EventKind::Added, "b".into(), 2)
    );
    assert_eq!(
        summary(&next(&mut w).await),
        (EventKind::Modified, "a".into(), 4)
    );
    let deleted = next(&mut w).await;
    assert_eq!(summary(&deleted), (EventKind::Deleted, "b".into(), 5));
    assert_eq!(rv(&deleted.object), 5);
    assert_eq!(
        w.revision(),
        6,
        "caught up with the store once the replay is done"
    );
    let kinds: Vec<_> = [
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Added, "b".into(), 2),
            (EventKind::Added, "c".into(), 3),
            (EventKind::Modified, "a".into(), 4)
        ],
        "all namespaces, but not the resource podsx"
    );

    store
        .create(&key("other", "d"), pod("web"))
        .expect("create d"); // 7
    store.update_with(&a, set_label("y")).expect("modify a"); // 8
    assert_eq!(
        summary(&next(&mut w).await),
        (EventKind::Modified, "a".into(), 8)
    );
    assert_eq!(w.revision(), 8);
    assert_eq!(
        summary(&next(&mut all).await),
        (EventKind::Deleted, "b".into(), 5)
    );
    assert_eq!(
        summary(&next(&mut all).await),
        (EventKind::Added, "d".into(), 7)
    );
    assert_eq!(
        summary(&next(&mut all).await),
        (EventKind::Modified, "a".into(), 8)
    );

    let mut now = store
        .watch("pods", None, 0, Filter::default())
        .expect("watch from 0");
    let initial: Vec<_> = [
        next(&mut now).await,
        next(&mut now).await,
        next(&mut now).await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        initial,
        [
            (EventKind::Added, "a".into(), 8),
            (EventKind::Added, "c".into(), 8),
            (EventKind::Added, "d".into(), 8)
        ]
    );
    store.delete(&key("other", "c"), None).expect("delete c"); // 9
    assert_eq!(
        summary(&next(&mut now).await),
        (EventKind::Deleted, "c".into(), 9)
    );
}

/// Label transitions of one object, seen through an `app=web` watch.
fn transitions(store: &Store) -> Vec<(EventKind, u64)> {
    let k = key("default", "t");
    store.create(&k, pod("web")).expect("create"); // Added
    store.update_with(&k, set_label("db")).expect("db"); // stops matching: Deleted
    store
        .update_with(&k, |o| {
            o["spec"]["nodeName"] = "n".into();
            Ok(())
        })
        .expect("unseen"); // nothing
    store.update_with(&k, set_label("web")).expect("web"); // starts matching: Added
    store
        .update_with(&k, |o| {
            o["status"]["phase"] = "Running".into();
            Ok(())
        })
        .expect("status"); // Modified
    store
        .create(&key("default", "other"), pod("db"))
        .expect("other"); // nothing
    store.delete(&k, None).expect("delete"); // Deleted
    vec![
        (EventKind::Added, 0),
        (EventKind::Deleted, 1),
        (EventKind::Added, 3),
        (EventKind::Modified, 4),
        (EventKind::Deleted, 6),
    ]
}

#[tokio::test]
async fn filtered_watch_turns_label_changes_into_added_and_deleted() {
    let filter = || Filter::parse(Some("app=web"), None).expect("filter");
    // Live: the watch exists before the writes.
    let (_dir, store) = open();
    store
        .create(&key("default", "first"), pod("db"))
        .expect("seed");
    let base = store.revision();
    let mut live = store.watch("pods", None, base, filter()).expect("watch");
    let want = transitions(&store);
    // Replayed: the same writes, read back from the log.
    let mut replayed = store.watch("pods", None, base, filter()).expect("watch");
    for w in [&mut live, &mut replayed] {
        for (kind, offset) in &want {
            let event = next(w).await;
            assert_eq!((event.kind, event.revision), (*kind, base + 1 + offset));
            assert_eq!(name(&event.object), "t");
        }
    }
}

#[tokio::test]
async fn compaction_makes_old_revisions_gone() {
    let (_dir, store) = open();
    for i in 0..5 {
        store
            .create(&key("default", &format!("p{i}")), pod("web"))
            .expect("create");
    }
    let opts = ListOptions {
        limit: Some(2),
        ..ListOptions::default()
    };
    let page = store.list("pods", None, &opts).expect("page");
    assert_eq!(page.resource_version, 5);
    store
        .create(&key("default", "p5"), pod("web"))
        .expect("create"); // 6
    store.compact(5).expect("compact");
    assert_eq!(store.compacted().expect("compacted"), 5);
    assert!(matches!(
        store.watch("pods", None, 4, Filter::default()),
        Err(StoreError::Gone {
            requested: 4,
            oldest: 5
        })
    ));
    let mut w = store
        .watch("pods", None, 5, Filter::default())
        .expect("watch at the point");
    assert_eq!(
        summary(&next(&mut w).await),
        (EventKind::Added, "p5".into(), 6)
    );
    assert!(store.watch("pods", None, 0, Filter::default()).is_ok());
    let continued = ListOptions {
        continue_token: page.continue_token.clone(),
        ..opts.clone()
    };
    assert!(
        store.list("pods", None, &continued).is_ok(),
        "token at the compaction point"
    );
    store.compact(100).expect("compact past the head");
    assert_eq!(
        store.compacted().expect("compacted"),
        6,
        "capped at the current revision"
    );
    store.compact(1).expect("compacting backwards is a no-op");
    assert_eq!(store.compacted().expect("compacted"), 6);
    assert!(matches!(
        store.list("pods", None, &continued),
        Err(StoreError::Gone {
            requested: 5,
            oldest: 6
        })
    ));
}

#[tokio::test]
async fn reopening_keeps_objects_log_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = Store::open(&path).expect("open");
    let a = store
        .create(&key("default", "a"), pod("web"))
        .expect("create");
    store
        .create(&key("default", "b"), pod("web"))
        .expect("create");
    store.delete(&key("default", "b"), None).expect("delete");
    store.compact(1).expect("compact");
    assert!(
        matches!(Store::open(&path), Err(StoreError::Open { .. })),
        "the file is locked while open"
    );
    drop(store);

    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.revision(), 3);
    assert_eq!(store.compacted().expect("compacted"), 1);
    assert_eq!(store.get(&key("default", "a")).expect("get"), Some(a));
    assert_eq!(store.get(&key("default", "b")).expect("get"), None);
    let c = store
        .create(&key("default", "c"), pod("web"))
        .expect("create");
    assert_eq!(rv(&c), 4);
    let mut w = store
        .watch("pods", None, 1, Filter::default())
        .expect("watch");
    let events: Vec<_> = [next(&mut w).await, next(&mut w).await, next(&mut w).await]
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        events,
        [
            (EventKind::Added, "b".into(), 2),
            (EventKind::Deleted, "b".into(), 3),
            (EventKind::Added, "c".into(), 4)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_all_durable_and_gapless() {
    const THREADS: usize = 8;
    const WRITES: usize = 15;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = Store::open(&path).expect("open");
    let mut live = store
        .watch("pods", None, 0, Filter::default())
        .expect("watch");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let k = key("default", &format!("t{t}"));
                let mut revisions = vec![rv(&store.create(&k, pod("web")).expect("create"))];
                for i in 1..WRITES {
                    let obj = store
                        .update_with(&k, |o| {
                            o["status"]["count"] = i.into();
                            Ok(())
                        })
                        .expect("update");
                    revisions.push(rv(&obj));
                }
                revisions
            })
        })
        .collect();
    let mut acknowledged: Vec<u64> = Vec::new();
    for handle in handles {
        let revisions = handle.join().expect("writer thread");
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
        acknowledged.extend(revisions);
    }
    let total = (THREADS * WRITES) as u64;
    acknowledged.sort();
    assert_eq!(acknowledged, (1..=total).collect::<Vec<_>>());
    assert_eq!(store.revision(), total);

    let live_revisions: Vec<u64> = {
        let mut out = Vec::new();
        for _ in 0..total {
            out.push(next(&mut live).await.revision);
        }
        out
    };
    assert_eq!(
        live_revisions,
        (1..=total).collect::<Vec<_>>(),
        "live events in order"
    );
    drop(live);
    drop(store);

    let store = Store::open(&path).expect("reopen");
    for t in 0..THREADS {
        let obj = store
            .get(&key("default", &format!("t{t}")))
            .expect("get")
            .expect("present");
        assert_eq!(obj["status"]["count"], WRITES - 1);
    }
    let mut replay = store
        .watch("pods", None, 1, Filter::default())
        .expect("watch");
    let mut previous = 1;
    for _ in 1..total {
        let event = next(&mut replay).await;
        assert_eq!(event.revision, previous + 1, "no gap in the log");
        previous = event.revision;
    }
}

#[tokio::test]
async fn a_lagging_watcher_is_ended_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        watch_capacity: 3,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&dir.path().join("store.redb"), options).expect("open");
    let mut w = store
        .watch("pods", None, 0, Filter::default())
        .expect("watch");
    for i in 0..5 {
        store
            .create(&key("default", &format!("p{i}")), pod("web"))
            .expect("create");
    }
    let mut delivered = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("no hang")
    {
        delivered.push(event.revision);
    }
    assert_eq!(
        delivered,
        [1, 2, 3],
        "what was buffered, in order, then the end"
    );
    assert!(w.lagged());
    let mut again = store
        .watch("pods", None, 3, Filter::default())
        .expect("re-watch");
    assert_eq!(next(&mut again).await.revision, 4);
    assert_eq!(next(&mut again).await.revision, 5);
    assert!(!again.lagged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_opened_during_writes_neither_skip_nor_repeat() {
    const TOTAL: u64 = 150;
    let (_dir, store) = open();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 1..=TOTAL {
                store
                    .create(&key("default", &format!("p{i}")), pod("web"))
                    .expect("create");
            }
        })
    };
    // Open watches while the writer runs: one from the revision just read, one from 0.
    let mut watches = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut target = 0;
    while target < TOTAL - 5 {
        while store.revision() < target {
            assert!(Instant::now() < deadline, "writer stalled");
            std::thread::yield_now();
        }
        let since = store.revision();
        watches.push((
            since,
            store
                .watch("pods", None, since, Filter::default())
                .expect("watch"),
        ));
        watches.push((
            0,
            store
                .watch("pods", None, 0, Filter::default())
                .expect("watch"),
        ));
        target = since + 7;
    }
    writer.join().expect("writer");
    for (since, mut w) in watches {
        let mut revisions = Vec::new();
        let mut names = Vec::new();
        let count = if since == 0 { TOTAL } else { TOTAL - since };
        for _ in 0..count {
            let event = next(&mut w).await;
            assert_eq!(event.kind, EventKind::Added);
            revisions.push(event.revision);
            names.push(name(&event.object).to_string());
        }
        // From `since`: exactly the later revisions. From 0: the R objects that existed at
        // some revision R, each reported at R, then exactly the revisions after R.
        let start = if since == 0 { revisions[0] } else { since };
        let mut want: Vec<u64> = if since == 0 {
            vec![start; start as usize]
        } else {
            vec![]
        };
        want.extend(start + 1..=TOTAL);
        assert_eq!(revisions, want, "watch from {since}");
        let first = if since == 0 { 1 } else { since + 1 };
        let want: Vec<String> = (first..=TOTAL).map(|i| format!("p{i}")).collect();
        names.sort_by_key(|n| n[1..].parse::<u64>().unwrap_or(0));
        assert_eq!(names, want, "each object once, watch from {since}");
        assert_eq!(w.revision(), TOTAL);
    }
}

#[test]
fn cache_size_from_the_environment() {
    let with = |v: Option<&str>| {
        StoreOptions::from_lookup(|k| {
            v.filter(|_| k == "PEAPOD_STORE_CACHE_SIZE")
                .map(String::from)
        })
    };
    assert_eq!(with(None).expect("default").cache_bytes, 64 << 20);
    assert_eq!(with(Some("4Mi")).expect("4Mi").cache_bytes, 4 << 20);
    let err = with(Some("lots")).expect_err("lots");
    assert_eq!(
        err.to_string(),
        "PEAPOD_STORE_CACHE_SIZE=\"lots\": not a quantity such as 64Mi"
    );
}

/// Optimistic concurrency under group commit: writers racing on one object with the
/// resourceVersion they read either win (and their increment is kept) or get a Conflict; no
/// update is lost, whichever batch it shared.
#[test]
fn racing_updates_with_preconditions_lose_nothing() {
    let (_dir, store) = open();
    let k = key("default", "counter");
    let mut initial = pod("web");
    initial["status"]["count"] = 0.into();
    store.create(&k, initial).expect("create");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, k) = (store.clone(), k.clone());
            std::thread::spawn(move || {
                let (mut won, mut conflicts) = (0, 0);
                while won < 10 {
                    let mut obj = store.get(&k).expect("get").expect("present");
                    let n = obj["status"]["count"].as_u64().unwrap_or(0);
                    obj["status"]["count"] = (n + 1).into();
                    match store.update(&k, obj) {
                        Ok(_) => won += 1,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("update: {e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let obj = store.get(&k).expect("get").expect("present");
    assert_eq!(obj["status"]["count"], 80);
    assert_eq!(store.revision(), 81);
}

/// The daemon's start-up objects: those missing are created in one transaction, a revision
/// each, and watchers get them all; one that is refused leaves nothing written.
#[tokio::test]
async fn create_missing_writes_only_what_is_missing_in_one_transaction() {
    let (_dir, store) = open();
    store
        .create(&key("ns", "b"), pod("kept"))
        .expect("create b");
    let base = store.revision();
    let mut watch = store
        .watch("pods", None, base, Filter::default())
        .expect("watch");
    let created = store
        .create_missing(vec![
            (key("ns", "a"), pod("new")),
            (key("ns", "b"), pod("new")),
            (key("ns", "c"), pod("new")),
        ])
        .expect("create the missing");
    assert_eq!(created, vec![true, false, true]);
    assert_eq!(store.revision(), base + 2);
    let get = |n: &str| store.get(&key("ns", n)).expect("get").expect("there");
    assert_eq!(rv(&get("a")), base + 1);
    assert_eq!(rv(&get("c")), base + 2);
    assert_eq!(get("b")["metadata"]["labels"]["app"], "kept");
    for want in [("a", base + 1), ("c", base + 2)] {
        let event = next(&mut watch).await;
        assert_eq!(
            summary(&event),
            (EventKind::Added, want.0.to_string(), want.1)
        );
    }
    let mut misnamed = pod("x");
    misnamed["metadata"]["name"] = "other".into();
    store
        .create_missing(vec![(key("ns", "d"), pod("d")), (key("ns", "e"), misnamed)])
        .expect_err("a name that is not the key's");
    assert!(store.get(&key("ns", "d")).expect("get").is_none());
    assert_eq!(store.revision(), base + 2);
    let again = store
        .create_missing(vec![(key("ns", "a"), pod("again"))])
        .expect("nothing to create");
    assert_eq!(again, vec![false]);
    assert_eq!(store.revision(), base + 2);
}
