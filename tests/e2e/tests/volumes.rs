//! PersistentVolumeClaims with the real kubectl (issue 7, item 5): the default StorageClass
//! `local-path` provisions a directory per claim and binds it, data survives deleting and
//! recreating the pod, a pod waits in Pending for a claim that does not exist yet, a claim in
//! use stays Terminating until its pod is gone (pvc-protection), and deleting the claim deletes
//! the volume and its directory.

use peapod_e2e::{poll_until, root_tempdir, Daemon, Leftovers, POD_TIMEOUT};
use std::time::Instant;

const CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 64Mi
"#;

/// A pod that mounts claim `data` at /data and waits.
fn pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - name: store
      mountPath: /data
  volumes:
  - name: store
    persistentVolumeClaim:
      claimName: data
"#
    )
}

struct Cluster {
    d: Daemon,
}

impl Cluster {
    fn start() -> Cluster {
        let mut d = Daemon::new(root_tempdir("peapod-volumes-"), Leftovers::Peapod);
        d.serve(&[("PEAPOD_NETWORK", "none")]);
        Cluster { d }
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self.d.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write manifest");
        self.d
            .ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }

    fn running(&self, pod: &str) {
        self.d.ok_until(
            &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
            |s| s == "Running",
        );
    }

    fn volumes_dir(&self) -> Vec<String> {
        std::fs::read_dir(self.d.root.join("volumes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

#[test]
fn claims_are_provisioned_bound_kept_across_pods_and_deleted() {
    let mut c = Cluster::start();
    let classes = c.d.ok(&["get", "storageclass"]);
    assert!(
        classes.contains("local-path (default)"),
        "default class: {classes}"
    );

    // A pod naming a claim that does not exist waits in Pending, and says why.
    c.apply("first.yaml", &pod("first"));
    c.d.ok_until(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=first",
        ],
        |s| s.contains("persistentvolumeclaim \"data\" not found"),
    );
    assert_eq!(
        c.d.ok(&["get", "pod", "first", "-o", "jsonpath={.status.phase}"]),
        "Pending"
    );

    // The claim arrives: it is provisioned and bound, and the pod starts.
    c.apply("claim.yaml", CLAIM);
    c.d.ok_until(
        &["get", "pvc", "data", "-o", "jsonpath={.status.phase}"],
        |s| s == "Bound",
    );
    let volume =
        c.d.ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    assert!(volume.starts_with("pvc-"), "{volume}");
    let pv = c.d.ok(&[
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.status.phase} {.spec.claimRef.name} {.spec.capacity.storage} {.spec.storageClassName}",
    ]);
    assert_eq!(pv, "Bound data 64Mi local-path");
    assert_eq!(c.volumes_dir(), vec![volume.clone()]);
    c.running("first");
    c.d.ok(&[
        "exec",
        "first",
        "--",
        "sh",
        "-c",
        "echo kept > /data/marker",
    ]);

    // The pod goes; a new one finds the data.
    c.d.ok(&["delete", "pod", "first", "--wait=true"]);
    c.apply("second.yaml", &pod("second"));
    c.running("second");
    assert_eq!(
        c.d.ok(&["exec", "second", "--", "cat", "/data/marker"]),
        "kept\n"
    );

    // In-use protection: a claim a pod uses stays Terminating when deleted, with its volume.
    c.d.ok_until(
        &[
            "get",
            "pvc",
            "data",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
        |s| s.contains("kubernetes.io/pvc-protection"),
    );
    c.d.ok_until(
        &[
            "get",
            "pv",
            &volume,
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
        |s| s.contains("kubernetes.io/pv-protection"),
    );
    c.d.ok(&["delete", "pvc", "data", "--wait=false"]);
    c.d.ok_until(&["get", "pvc", "data", "--no-headers"], |s| {
        s.contains("Terminating")
    });
    assert_eq!(
        c.d.ok(&["get", "pv", &volume, "-o", "jsonpath={.status.phase}"]),
        "Bound"
    );
    assert_eq!(
        c.d.ok(&["exec", "second", "--", "cat", "/data/marker"]),
        "kept\n"
    );

    // Once no pod uses it, the claim goes, and with it its volume (reclaimPolicy Delete) and
    // the directory.
    c.d.ok(&["delete", "pod", "second", "--wait=true"]);
    c.d.ok_until(&["get", "pvc", "-o", "name"], |s| s.trim().is_empty());
    c.d.ok_until(&["get", "pv", "-o", "name"], |s| s.trim().is_empty());
    let gone = poll_until(Instant::now() + POD_TIMEOUT, || {
        c.volumes_dir().is_empty().then_some(())
    });
    assert!(gone.is_some(), "left: {:?}", c.volumes_dir());
    c.d.finish();
}
