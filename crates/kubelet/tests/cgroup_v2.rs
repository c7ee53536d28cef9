//! The cgroup v2 path of a container's limits, end to end but without a cgroup v2 host (this
//! machine's memory, cpu and pids controllers are on v1): a pod's `resources` go through the
//! kubelet's arithmetic (`limits::container_resources`), the OCI spec peapod writes
//! (`spec::oci_spec`) and libcontainer's own cgroup v2 manager — the code that writes the
//! files when a container starts on a v2 host — applied to a temporary directory laid out like
//! a cgroup2 mount. The files it writes are read back and compared with what a Kubernetes node
//! shows (<https://kubernetes.io/docs/concepts/architecture/cgroups/>): `memory.max`,
//! `cpu.weight` from the CPU shares with the conversion runc 1.3.2 and the kubelet adopted
//! (1024 shares, one CPU, is weight 100; <https://github.com/kubernetes/kubernetes/issues/131216>),
//! `cpu.max` from quota and period, `pids.max`. An OOM kill is read back from `memory.events`
//! as the monitor reads it to report OOMKilled.
//!
//! No root needed: nothing here touches the real cgroupfs.

use libcgroups::common::{CgroupManager, ControllerOpt};
use peapod_kubelet::limits::{container_resources, qos_class};
use peapod_runtime::cgroup::{Cgroupfs, Layout};
use peapod_runtime::spec::oci_spec;
use peapod_runtime::ContainerConfig;
use serde_json::json;
use std::path::Path;

const CGROUP: &str = "/peapod/podabc/c1";

/// The interface files the controllers enabled below write, with the kernel's defaults. The
/// fake files start empty (libcontainer writes without truncating, as the kernel needs no
/// truncation) and an empty file reads as its default.
const FILES: [(&str, &str); 8] = [
    ("cgroup.procs", ""),
    ("cgroup.subtree_control", ""),
    ("memory.max", "max"),
    ("memory.events", "oom_kill 0"),
    ("cpu.weight", "100"),
    ("cpu.max", "max 100000"),
    ("pids.max", "max"),
    ("cpu.idle", "0"),
];

/// A temporary cgroup2 tree with the controllers of the host root and the container's
/// directory already made (libcontainer's manager writes into files that must exist).
fn fake_cgroupfs() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").expect("write");
    let mut dir = root.path().to_path_buf();
    for part in CGROUP.trim_start_matches('/').split('/') {
        dir = dir.join(part);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, _) in FILES {
            std::fs::write(dir.join(name), "").expect("write");
        }
    }
    root
}

/// A container of a pod with `resources`, as peapod's OCI spec describes it.
fn spec_resources(resources: serde_json::Value) -> oci_spec::runtime::LinuxResources {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
    }))
    .expect("pod");
    let container = &pod.spec.as_ref().expect("spec").containers[0];
    let mut config: ContainerConfig = serde_json::from_value(json!({
        "name": "c", "image": "busybox", "layers": [], "args": ["sh"], "env": [], "cwd": "/",
        "user": {"uid": 0, "gid": 0, "additional_gids": []}, "mounts": [],
        "sandbox": {"net": "/n", "ipc": "/i", "uts": "/u"},
        "cgroup_path": CGROUP, "read_only_rootfs": false, "log_path": "/l",
    }))
    .expect("container config");
    config.resources = container_resources(container, qos_class(&pod));
    // The node's default pids limit (`PEAPOD_PIDS_LIMIT`), set by the worker.
    config.resources.pids_limit = Some(2048);
    let spec = oci_spec(&config, "rootfs");
    serde_json::from_value(spec["linux"]["resources"].clone()).expect("OCI linux.resources")
}

/// What libcontainer's cgroup v2 manager writes for `resources` under `root`.
fn apply_v2(root: &Path, resources: &oci_spec::runtime::LinuxResources) {
    let manager = libcgroups::v2::manager::Manager::new(root.to_path_buf(), CGROUP.into())
        .expect("v2 manager");
    let opt = ControllerOpt {
        resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    };
    manager.apply(&opt).expect("apply to the fake cgroupfs");
}

/// A file of the container's cgroup as the kernel would show it.
fn read(root: &Path, file: &str) -> String {
    let path = root.join(CGROUP.trim_start_matches('/')).join(file);
    let text = std::fs::read_to_string(path).expect("read");
    match text.trim() {
        "" => FILES
            .iter()
            .find(|(name, _)| *name == file)
            .map_or("", |(_, default)| *default)
            .to_string(),
        written => written.to_string(),
    }
}

#[test]
fn pod_resources_become_cgroup_v2_files() {
    // (resources, memory.max, cpu.weight, cpu.max)
    let cases = [
        // Guaranteed: shares 512, quota 50000 of 100000.
        (
            json!({"limits": {"cpu": "500m", "memory": "64Mi"}}),
            "67108864",
            "59",
            "50000 100000",
        ),
        // One CPU requested: 1024 shares, the v2 default weight.
        (
            json!({"requests": {"cpu": "1"}}),
            "max",
            "100",
            "max 100000",
        ),
        (
            json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "2", "memory": "1Gi"}}),
            "1073741824",
            "35",
            "200000 100000",
        ),
        // The quota never goes under 1 ms per period.
        (json!({"limits": {"cpu": "1m"}}), "max", "1", "1000 100000"),
        // BestEffort: the minimum shares, 2, are weight 1.
        (json!({}), "max", "1", "max 100000"),
        // 64 CPUs: 65536 shares.
        (
            json!({"requests": {"cpu": "64"}}),
            "max",
            "3023",
            "max 100000",
        ),
    ];
    for (resources, memory_max, cpu_weight, cpu_max) in cases {
        let root = fake_cgroupfs();
        apply_v2(root.path(), &spec_resources(resources.clone()));
        let got = [
            read(root.path(), "memory.max"),
            read(root.path(), "cpu.weight"),
            read(root.path(), "cpu.max"),
            read(root.path(), "pids.max"),
        ];
        assert_eq!(
            got,
            [memory_max, cpu_weight, cpu_max, "2048"],
            "resources {resources}"
        );
    }
}

#[test]
fn oom_kills_are_read_from_memory_events() {
    let root = fake_cgroupfs();
    let fs = Cgroupfs {
        root: root.path().to_path_buf(),
        layout: Layout::V2,
    };
    assert_eq!(fs.oom_kills(CGROUP), 0);
    let events = root
        .path()
        .join(CGROUP.trim_start_matches('/'))
        .join("memory.events");
    std::fs::write(
        &events,
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    )
    .expect("write");
    assert_eq!(fs.oom_kills(CGROUP), 1);
    assert_eq!(fs.oom_kills("/peapod/podabc/missing"), 0);
    assert_eq!(
        fs.directories(CGROUP),
        vec![root.path().join("peapod/podabc/c1")]
    );
}
