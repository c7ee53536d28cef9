//! Server-side apply's field ownership with the real kubectl (issue 6): `managedFields` per
//! field manager, a conflicting apply answered 409 with the fields and their owner (kubectl prints
//! the API server's message and its advice), `--force-conflicts` moving the fields, and fields a
//! manager stops applying removed when nobody else owns them.
//!
//! Each test starts its own daemon on a temporary root and ends by deleting the pods through
//! kubectl, stopping the daemon and checking nothing of the root is left. Runs as root.

use peapod_e2e::{
    poll_until, root_tempdir, run_with_input, Daemon, Leftovers, Out, COMMAND_TIMEOUT, LATEST,
    POD_TIMEOUT,
};
use serde_json::Value;
use std::time::Instant;

fn start() -> Daemon {
    let mut d = Daemon::new(root_tempdir("peapod-ssa-"), Leftovers::MentioningDir);
    d.serve(&[]);
    d
}

/// kubectl 1.`minor` with `args`, the manifest on stdin (`-f -`).
fn kubectl(d: &Daemon, minor: u32, args: &[&str], input: &str) -> Out {
    let (cmd, what) = d.kubectl_command(minor, args);
    let out = run_with_input(cmd, what, COMMAND_TIMEOUT, Some(input.as_bytes().to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.timed_out, "timed out\n{out}");
    out
}

fn apply(d: &Daemon, minor: u32, manager: &str, force: bool, manifest: &str) -> Out {
    let manager = format!("--field-manager={manager}");
    let mut args = vec!["apply", "--server-side", manager.as_str(), "-f", "-"];
    if force {
        args.push("--force-conflicts");
    }
    kubectl(d, minor, &args, manifest)
}

fn get_json(d: &Daemon, what: &str) -> Value {
    let out = kubectl(
        d,
        LATEST,
        &["get", what, "-o", "json", "--show-managed-fields"],
        "",
    );
    assert!(out.status.success(), "{out}");
    serde_json::from_str(&out.stdout).expect("json")
}

/// The managers whose `fieldsV1` has `path` (a list of keys).
fn owners(object: &Value, path: &[&str]) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let mut at = &e["fieldsV1"];
            path.iter().all(|k| {
                at = &at[*k];
                !at.is_null()
            })
        })
        .map(|e| e["manager"].as_str().unwrap_or("").to_string())
        .collect()
}

fn config_map(name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata: {data}\n")
}

#[test]
fn conflicts_and_force_every_version() {
    let mut d = start();
    for minor in 27..=33 {
        let v = format!("kubectl 1.{minor}");
        let name = format!("ssa-{minor}");
        let out = apply(
            &d,
            minor,
            "a",
            false,
            &config_map(&name, "{color: red, size: big}"),
        );
        assert!(out.status.success(), "{v}: {out}");
        assert!(out.stdout.contains("serverside-applied"), "{v}: {out}");

        // b wants another color: a conflict with a, nothing changes.
        let blue = config_map(&name, "{color: blue}");
        let out = apply(&d, minor, "b", false, &blue);
        assert!(!out.status.success(), "{v}: {out}");
        assert!(
            out.stderr.contains(
                r#"Apply failed with 1 conflict: conflict with "a" using v1: .data.color"#
            ),
            "{v}: {out}"
        );
        let cm = get_json(&d, &format!("configmap/{name}"));
        assert_eq!(cm["data"]["color"], "red", "{v}");

        // The same value is shared without a conflict.
        let out = apply(&d, minor, "c", false, &config_map(&name, "{size: big}"));
        assert!(out.status.success(), "{v}: {out}");

        // Forced: b takes the color.
        let out = apply(&d, minor, "b", true, &blue);
        assert!(out.status.success(), "{v}: {out}");
        let cm = get_json(&d, &format!("configmap/{name}"));
        assert_eq!(cm["data"]["color"], "blue", "{v}");
        assert_eq!(owners(&cm, &["f:data", "f:color"]), ["b"], "{v}: {cm}");
        let mut size = owners(&cm, &["f:data", "f:size"]);
        size.sort();
        assert_eq!(size, ["a", "c"], "{v}: {cm}");

        // a stops applying its fields: the color stays (b's), size stays (c's too)...
        let out = apply(&d, minor, "a", false, &config_map(&name, "{}"));
        assert!(out.status.success(), "{v}: {out}");
        let cm = get_json(&d, &format!("configmap/{name}"));
        assert_eq!(
            (&cm["data"]["color"], &cm["data"]["size"]),
            (&"blue".into(), &"big".into()),
            "{v}: {cm}"
        );
        // ... until c stops too: then nobody owns size and it goes.
        let out = apply(&d, minor, "c", false, &config_map(&name, "{}"));
        assert!(out.status.success(), "{v}: {out}");
        let cm = get_json(&d, &format!("configmap/{name}"));
        assert!(cm["data"].get("size").is_none(), "{v}: {cm}");
        assert_eq!(cm["data"]["color"], "blue", "{v}");
    }
    d.finish();
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: owned
  labels: {tier: web}
spec:
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;

/// A container's field conflicts by the container's name (its list's merge key), as the API
/// server prints it; a forced label moves, the pod keeps running.
#[test]
fn pod_fields_conflict_by_merge_key() {
    let mut d = start();
    let out = apply(&d, LATEST, "a", false, POD);
    assert!(out.status.success(), "{out}");
    let ready = poll_until(Instant::now() + POD_TIMEOUT, || {
        let out = kubectl(
            &d,
            LATEST,
            &["get", "pod", "owned", "-o", "jsonpath={.status.phase}"],
            "",
        );
        (out.stdout == "Running").then_some(())
    });
    assert!(ready.is_some(), "pod not running\n{}", d.log());

    let other = POD
        .replace("image: busybox", "image: busybox:other")
        .replace("tier: web", "tier: db");
    let out = apply(&d, LATEST, "b", false, &other);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains(r#"Apply failed with 2 conflicts: conflicts with "a" using v1:"#)
            && out.stderr.contains(r#"- .metadata.labels.tier"#)
            && out
                .stderr
                .contains(r#"- .spec.containers[name="main"].image"#),
        "{out}"
    );
    assert!(
        out.stderr.contains("--force-conflicts"),
        "kubectl's advice: {out}"
    );

    let relabel = POD.replace("tier: web", "tier: db");
    let out = apply(&d, LATEST, "b", true, &relabel);
    assert!(out.status.success(), "{out}");
    let pod = get_json(&d, "pod/owned");
    assert_eq!(pod["metadata"]["labels"]["tier"], "db");
    assert_eq!(
        owners(&pod, &["f:metadata", "f:labels", "f:tier"]),
        ["b"],
        "{pod}"
    );
    assert!(
        owners(
            &pod,
            &["f:spec", "f:containers", r#"k:{"name":"main"}"#, "f:image"]
        )
        .contains(&"a".to_string()),
        "{pod}"
    );
    d.finish();
}

/// From client-side to server-side apply: the fields `kubectl apply` wrote belong to
/// `kubectl-client-side-apply`, so changing one server-side conflicts with it; forced, kubectl
/// moves the rest of them over, and the field the new manifest dropped goes.
#[test]
fn client_side_then_server_side_apply() {
    let mut d = start();
    for minor in [27, LATEST] {
        let v = format!("kubectl 1.{minor}");
        let name = format!("csa-{minor}");
        let out = kubectl(
            &d,
            minor,
            &["apply", "-f", "-"],
            &config_map(&name, "{a: '1', b: x}"),
        );
        assert!(out.status.success(), "{v}: {out}");
        let changed = config_map(&name, "{a: '2'}");
        let out = apply(&d, minor, "kubectl", false, &changed);
        assert!(
            out.stderr.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.a"#),
            "{v}: {out}"
        );
        let out = apply(&d, minor, "kubectl", true, &changed);
        assert!(out.status.success(), "{v}: {out}");
        let cm = get_json(&d, &format!("configmap/{name}"));
        assert_eq!(cm["data"], serde_json::json!({"a": "2"}), "{v}: {cm}");
        assert_eq!(owners(&cm, &["f:data", "f:a"]), ["kubectl"], "{v}: {cm}");
    }
    d.finish();
}
