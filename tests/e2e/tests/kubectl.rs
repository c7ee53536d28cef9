//! The real kubectl against `peapod serve` (issue 5, "Done when"): every test starts its own
//! daemon on a temporary root and a free loopback port, runs the kubectl binaries
//! `/usr/lib/google-cloud-sdk/bin/kubectl.1.27` … `kubectl.1.33` directly (not the version
//! dispatcher) with `--kubeconfig` and a private `--cache-dir`, and finishes by deleting every
//! pod through kubectl, waiting until they are gone, stopping the daemon and checking that no
//! process or mount of the root is left. A failing test still cleans up (`Drop`), then kills what
//! is left of the root and unmounts below it.
//!
//! The commands every kubectl version must pass are in the `v1_27` … `v1_33` modules; the ones
//! checked once, with the newest kubectl, are in `latest`. docs/kubectl-compat.md has the
//! results per version.
//!
//! The binary is `PEAPOD_BIN`, else `<workspace>/target/debug/peapod` (`cargo build -p peapod`
//! first); the image is `images/out/busybox.oci.tar` (`python3 images/build.py`), or
//! `$PEAPOD_TEST_IMAGES/busybox.oci.tar`. Runs as root. Waits poll with deadlines.
//!
//! Pods made here trap SIGTERM and exit at once, so graceful deletion takes well under a second
//! and does not wait out the 30 s default grace period.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peapod_e2e::{
    free_port, kubectl_bin, peapod_bin, peapod_processes_under, poll_until, root_tempdir,
    run_command, Daemon, Leftovers, Out, Running, COMMAND_TIMEOUT, LATEST, POD_TIMEOUT,
};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Kubernetes minor version peapod's `/version` reports.
const SERVER_MINOR: &str = "33";

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// `text` without ANSI colour escapes (kubectl 1.27-1.31 colour `cluster-info` even off a tty).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `s` looks like the RFC 3339 timestamp kubelet logs carry (`2006-01-02T15:04:05.999Z`).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s[19..].contains('+') || s[19..].contains('-'))
        && s[..4].bytes().all(|c| c.is_ascii_digit())
}

/// Whether the monitor of container `id` (from `peapod://ID`) still runs.
fn monitor_running(root: &Path, container_id: &str) -> bool {
    let id = container_id.trim_start_matches("peapod://");
    let needle = format!("{}/containers/{id}", root.display());
    peapod_processes_under(root)
        .iter()
        .any(|(_, cmd)| cmd.contains(&needle))
}

// ---------------------------------------------------------------------------------------------
// Running kubectl.

/// One kubectl version bound to one cluster.
struct Kubectl<'a> {
    cluster: &'a Cluster,
    minor: u32,
}

impl Kubectl<'_> {
    fn command(&self, args: &[&str]) -> (Command, String) {
        self.cluster.d.kubectl_command(self.minor, args)
    }

    fn try_run(&self, args: &[&str]) -> Result<Out, String> {
        let (cmd, what) = self.command(args);
        run_command(cmd, what, COMMAND_TIMEOUT)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.cluster.d.log()))
    }

    /// stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok()
    }

    /// stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        self.run(args).err()
    }

    /// A long-running command (`get -w`, `logs -f`) whose stdout lines arrive on a channel.
    fn stream(&self, args: &[&str]) -> Stream {
        let (cmd, what) = self.command(args);
        let (running, lines) = Running::spawn(cmd, what);
        Stream {
            running,
            lines,
            seen: Vec::new(),
        }
    }

    /// `get <what> -o jsonpath=<path>`.
    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let arg = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", &arg]);
        self.ok(&args)
    }

    /// Polls `get pod NAME -o jsonpath={.status.phase}` until it is `phase`.
    fn wait_phase(&self, pod: &str, phase: &str) {
        let mut last = String::new();
        let started = Instant::now();
        let reached = poll_until(started + POD_TIMEOUT, || {
            last = self.jsonpath(&["pod", pod], "{.status.phase}");
            (last == phase).then_some(())
        });
        if reached.is_none() {
            let describe = self.run(&["describe", "pod", pod]);
            panic!(
                "pod {pod} is {last:?}, not {phase}, after {:?}\n{describe}\n{}",
                started.elapsed(),
                self.cluster.d.log()
            );
        }
    }

    /// Polls until the pod's Ready condition is True: after that the kubelet has no more status
    /// to write, so a PATCH cannot race with it (see `label_right_after_create_never_conflicts`).
    fn wait_ready(&self, pod: &str) {
        self.wait_phase(pod, "Running");
        let path = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        self.ok_until(&["get", "pod", pod, "-o", path], |s| s == "True");
    }

    /// Polls a command until its stdout satisfies `want`; returns that stdout.
    fn ok_until(&self, args: &[&str], want: impl Fn(&str) -> bool) -> String {
        let mut last = None;
        let found = poll_until(Instant::now() + POD_TIMEOUT, || {
            let out = self.run(args);
            let good = out.status.success() && want(&out.stdout);
            let stdout = out.stdout.clone();
            last = Some(out);
            good.then_some(stdout)
        });
        found.unwrap_or_else(|| {
            panic!(
                "no satisfying output within {POD_TIMEOUT:?}; last:\n{}",
                last.map(|o| o.to_string()).unwrap_or_default()
            )
        })
    }

    /// The container ids (`peapod://…`) of a pod's containers, from its status.
    fn container_ids(&self, pod: &str) -> Vec<String> {
        self.jsonpath(
            &["pod", pod],
            "{range .status.containerStatuses[*]}{.containerID}{\"\\n\"}{end}",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
    }

    /// Asserts `get pod NAME` answers NotFound, as kubectl prints it.
    fn assert_pod_gone(&self, pod: &str) {
        let err = self.fails(&["get", "pod", pod]);
        assert!(
            err.contains(&format!(
                "Error from server (NotFound): pods \"{pod}\" not found"
            )),
            "{err}"
        );
    }
}

/// A running kubectl whose stdout is read line by line; killed when dropped.
struct Stream {
    running: Running,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Stream {
    /// The next stdout line that satisfies `want`, waiting until `deadline`.
    fn line_where(&mut self, deadline: Instant, want: impl Fn(&[String], &str) -> bool) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let good = want(&self.seen, &line);
                    self.seen.push(line.clone());
                    if good {
                        return line;
                    }
                }
                Err(_) => {
                    let stderr = self.stop();
                    panic!(
                        "{}: no wanted line before the deadline; lines so far:\n{}\n--- stderr:\n{stderr}",
                        self.running.what,
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Kills the command; returns its stderr.
    fn stop(&mut self) -> String {
        self.running.stop()
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon.

/// A `peapod serve` on a temporary root ([`Daemon`]) and the kubectl versions bound to it.
/// `finish` tears it down and checks nothing is left (the processes in the pods' cgroups too);
/// `Drop` (a failed test) tears it down without checking.
struct Cluster {
    d: Daemon,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = root_tempdir("peapod-kubectl-");
        let mut d = Daemon::new(dir, Leftovers::PeapodAndPodCgroups);
        d.serve(&[]);
        Cluster { d }
    }

    fn kubectl(&self, minor: u32) -> Kubectl<'_> {
        Kubectl {
            cluster: self,
            minor,
        }
    }

    fn latest(&self) -> Kubectl<'_> {
        self.kubectl(LATEST)
    }

    /// Writes a manifest into the test's directory; returns its path as a string for argv.
    fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.d.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.to_str().expect("utf-8 temp path").to_string()
    }

    /// The end of every test: no pods (deleted through kubectl), the daemon stopped by SIGTERM
    /// with status 0, no process or mount of the root left.
    fn finish(mut self) {
        self.d.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests.

/// A container that prints `lines` then idles, exiting as soon as it gets SIGTERM.
fn idle_container(name: &str, lines: &[&str]) -> String {
    let echoes: String = lines.iter().map(|l| format!("echo '{l}'; ")).collect();
    let script = format!("trap 'exit 0' TERM; {echoes}while true; do sleep 0.2; done");
    format!("  - name: {name}\n    image: busybox\n    command: [\"sh\", \"-c\", \"{script}\"]\n")
}

/// A pod with `labels` (`key: value` lines) and the given containers.
fn pod_yaml(name: &str, labels: &[(&str, &str)], containers: &[String]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!("  labels:\n{labels}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{labels}spec:\n  containers:\n{}",
        containers.concat()
    )
}

/// Runs 5 s, then exits 0 (restartPolicy Never): the watch sees it start, then complete.
const WATCHED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: watched
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 5"]
"#;

/// Prints three lines a second apart, then exits 0.
const COUNTER_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: counter
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "sleep 1; for i in 1 2 3; do echo line $i; sleep 1; done"]
"#;

/// The first run leaves a marker in the emptyDir and exits 1; the restarted one idles.
const FLAKY_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: flaky
spec:
  restartPolicy: Always
  volumes:
  - name: marker
    emptyDir: {}
  containers:
  - name: main
    image: busybox
    volumeMounts:
    - name: marker
      mountPath: /marker
    command:
    - sh
    - -c
    - |
      trap 'exit 0' TERM
      if [ -e /marker/once ]; then echo second run; while true; do sleep 0.2; done; fi
      touch /marker/once
      echo first run
      exit 1
"#;

/// PID 1 without a SIGTERM handler ignores SIGTERM: only the SIGKILL at the end of the grace
/// period stops it.
const STUBBORN_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"#;

/// `spec.bogusField` is no Pod field.
const UNKNOWN_FIELD_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: unknown
spec:
  bogusField: 1
  containers:
  - name: main
    image: busybox
"#;

// ---------------------------------------------------------------------------------------------
// The commands every kubectl version must pass.

/// `version`, `api-resources`, `cluster-info`.
fn discovery_commands(minor: u32) {
    let c = Cluster::start();
    let k = c.kubectl(minor);

    let version: Value =
        serde_json::from_str(&k.ok(&["version", "-o", "json"])).expect("version -o json");
    assert_eq!(version["serverVersion"]["major"], "1", "{version}");
    assert_eq!(version["serverVersion"]["minor"], SERVER_MINOR, "{version}");
    assert_eq!(
        version["clientVersion"]["minor"],
        minor.to_string(),
        "{version}"
    );
    let text = k.ok(&["version"]);
    assert!(
        text.contains(&format!("Server Version: v1.{SERVER_MINOR}."))
            || text.contains(&format!("Minor:\"{SERVER_MINOR}\"")),
        "{text}"
    );

    let resources = k.ok(&["api-resources"]);
    let header: Vec<&str> = resources
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{resources}"
    );
    let pods = resources
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("no pods in api-resources:\n{resources}"));
    assert_eq!(
        pods.split_whitespace().collect::<Vec<_>>(),
        ["pods", "po", "v1", "true", "Pod"],
        "{resources}"
    );
    for name in ["configmaps", "secrets", "namespaces", "events", "services"] {
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "no {name} in api-resources:\n{resources}"
        );
    }

    let info = strip_ansi(&k.ok(&["cluster-info"]));
    assert!(
        info.contains(&format!(
            "Kubernetes control plane is running at {}",
            c.d.server
        )),
        "{info}"
    );
    c.finish();
}

/// `apply -f` three times: `created`, `unchanged`, `configured` after a label changed.
fn apply_cycle(minor: u32) {
    let c = Cluster::start();
    let k = c.kubectl(minor);
    let main = idle_container("main", &["applied"]);
    let file = c.manifest(
        "pod.yaml",
        &pod_yaml("applied", &[("app", "x")], std::slice::from_ref(&main)),
    );
    assert_eq!(k.ok(&["apply", "-f", &file]).trim(), "pod/applied created");
    assert_eq!(
        k.ok(&["apply", "-f", &file]).trim(),
        "pod/applied unchanged"
    );
    // The kubelet's status writes are over: the PATCH below cannot race them.
    k.wait_ready("applied");
    c.manifest(
        "pod.yaml",
        &pod_yaml("applied", &[("app", "x"), ("tier", "web")], &[main]),
    );
    assert_eq!(
        k.ok(&["apply", "-f", &file]).trim(),
        "pod/applied configured"
    );
    assert_eq!(
        k.jsonpath(&["pod", "applied"], "{.metadata.labels.tier}"),
        "web"
    );
    let last = k.jsonpath(
        &["pod", "applied"],
        "{.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    );
    assert!(last.contains("\"tier\":\"web\""), "{last}");
    c.finish();
}

/// `create -f` with the default `--validate=strict`.
fn create_file(minor: u32) {
    let c = Cluster::start();
    let k = c.kubectl(minor);
    let file = c.manifest(
        "pod.yaml",
        &pod_yaml("fromfile", &[], &[idle_container("main", &[])]),
    );
    assert_eq!(
        k.ok(&["create", "-f", &file]).trim(),
        "pod/fromfile created"
    );
    k.wait_phase("fromfile", "Running");
    c.finish();
}

/// `delete -f` (the pod made with `create --validate=false -f`, which every version can do).
fn delete_file(minor: u32) {
    let c = Cluster::start();
    let k = c.kubectl(minor);
    let file = c.manifest(
        "pod.yaml",
        &pod_yaml("fromfile", &[], &[idle_container("main", &[])]),
    );
    k.ok(&["create", "--validate=false", "-f", &file]);
    k.wait_phase("fromfile", "Running");
    assert_eq!(
        k.ok(&["delete", "-f", &file]).trim(),
        "pod \"fromfile\" deleted"
    );
    k.assert_pod_gone("fromfile");
    c.finish();
}

/// `get pods` in every output, `describe`, `logs` (`-c`, `--tail`, `--timestamps`),
/// `get events`, graceful `delete pod`.
fn pod_commands(minor: u32) {
    let c = Cluster::start();
    let k = c.kubectl(minor);
    let file = c.manifest(
        "pod.yaml",
        &pod_yaml(
            "web",
            &[("app", "x")],
            &[
                idle_container("main", &["main 1", "main 2", "main 3"]),
                idle_container("side", &["side 1"]),
            ],
        ),
    );
    // Without client-side validation: kubectl 1.27 and 1.28 need /openapi/v2 for it, which
    // `create_f` covers; here the point is what comes after.
    assert_eq!(
        k.ok(&["create", "--validate=false", "-f", &file]).trim(),
        "pod/web created"
    );
    k.wait_phase("web", "Running");

    let table = k.ok_until(&["get", "pods"], |out| {
        out.lines()
            .nth(1)
            .is_some_and(|row| row.split_whitespace().take(3).eq(["web", "2/2", "Running"]))
    });
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .eq(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]),
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(row[..4], ["web", "2/2", "Running", "0"], "{table}");
    assert_eq!(lines.next(), None, "{table}");

    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or("");
    assert!(
        header.split_whitespace().eq([
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]),
        "{wide}"
    );
    let node = k.ok(&["get", "nodes", "-o", "name"]);
    let node = node.trim().trim_start_matches("node/");
    let row: Vec<&str> = wide
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row.get(6), Some(&node), "{wide}");

    let yaml = k.ok(&["get", "pod", "web", "-o", "yaml"]);
    for want in ["kind: Pod", "name: web", "phase: Running", "name: side"] {
        assert!(yaml.contains(want), "no {want:?} in\n{yaml}");
    }
    let list: Value =
        serde_json::from_str(&k.ok(&["get", "pods", "-o", "json"])).expect("get pods -o json");
    assert_eq!(list["kind"], "List", "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "web", "{list}");
    assert_eq!(list["items"][0]["status"]["phase"], "Running", "{list}");
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]).trim(), "pod/web");

    let all = k.ok(&["get", "pods", "-A"]);
    assert!(
        all.lines().next().unwrap_or("").split_whitespace().eq([
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE"
        ]),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.split_whitespace().take(2).eq(["default", "web"])),
        "{all}"
    );
    let selected = k.ok(&["get", "pods", "-l", "app=x", "-o", "name"]);
    assert_eq!(selected.trim(), "pod/web");
    let out = k.run(&["get", "pods", "-l", "app=other"]);
    assert_eq!(out.stdout, "", "{out}");
    assert!(
        out.stderr
            .contains("No resources found in default namespace."),
        "{out}"
    );

    let describe = k.ok_until(&["describe", "pod", "web"], |d| {
        d.contains("Started container main") && d.contains("Started container side")
    });
    for want in ["Name:", "web", "Status:", "Running", "Events:"] {
        assert!(describe.contains(want), "no {want:?} in\n{describe}");
    }

    let main_log = "main 1\nmain 2\nmain 3\n";
    k.ok_until(&["logs", "web", "-c", "main"], |l| l == main_log);
    k.ok_until(&["logs", "web", "-c", "side"], |l| l == "side 1\n");
    // Without -c, kubectl picks the first container (and says so on stderr).
    assert_eq!(k.ok(&["logs", "web"]), main_log);
    assert_eq!(k.ok(&["logs", "web", "-c", "main", "--tail=1"]), "main 3\n");
    let stamped = k.ok(&["logs", "web", "-c", "main", "--timestamps"]);
    let stamped: Vec<(&str, &str)> = stamped
        .lines()
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    assert_eq!(
        stamped.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        ["main 1", "main 2", "main 3"],
        "{stamped:?}"
    );
    assert!(stamped.iter().all(|(t, _)| is_rfc3339(t)), "{stamped:?}");

    let events = k.ok_until(&["get", "events"], |e| {
        e.lines()
            .any(|l| l.contains("Started") && l.contains("pod/web"))
    });
    assert!(
        events
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .eq(["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]),
        "{events}"
    );

    let ids = k.container_ids("web");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(
        k.ok(&["delete", "pod", "web"]).trim(),
        "pod \"web\" deleted"
    );
    // Deletion is graceful: the pod leaves the API only once its containers were stopped.
    k.assert_pod_gone("web");
    for id in &ids {
        assert!(
            poll_until(Instant::now() + Duration::from_secs(10), || {
                (!monitor_running(&c.d.root, id)).then_some(())
            })
            .is_some(),
            "container {id} still running after the pod was deleted"
        );
    }
    c.finish();
}

/// `create configmap`, `create secret generic` (protobuf bodies), `create namespace`,
/// `delete namespace`.
fn create_generators(minor: u32) {
    let c = Cluster::start();
    let k = c.kubectl(minor);
    assert_eq!(
        k.ok(&["create", "configmap", "settings", "--from-literal=a=b"])
            .trim(),
        "configmap/settings created"
    );
    assert_eq!(k.jsonpath(&["configmap", "settings"], "{.data.a}"), "b");
    assert_eq!(
        k.ok(&["create", "secret", "generic", "token", "--from-literal=k=v"])
            .trim(),
        "secret/token created"
    );
    // base64("v")
    assert_eq!(k.jsonpath(&["secret", "token"], "{.data.k}"), "dg==");
    assert_eq!(
        k.ok(&["create", "namespace", "team"]).trim(),
        "namespace/team created"
    );
    assert_eq!(
        k.jsonpath(&["namespace", "team"], "{.status.phase}"),
        "Active"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "configmap",
            "inside",
            "-n",
            "team",
            "--from-literal=x=y"
        ])
        .trim(),
        "configmap/inside created"
    );
    assert_eq!(
        k.ok(&["delete", "namespace", "team"]).trim(),
        "namespace \"team\" deleted"
    );
    k.ok_until(&["get", "namespaces", "-o", "name"], |names| {
        !names.lines().any(|n| n == "namespace/team")
    });
    let err = k.fails(&["get", "namespace", "team"]);
    assert!(err.contains("NotFound"), "{err}");
    let err = k.fails(&["get", "configmap", "inside", "-n", "team"]);
    assert!(err.contains("NotFound"), "{err}");
    c.finish();
}

/// One module per kubectl version, one test per group of commands, so a product bug shows up
/// as an ignored test in exactly the versions it affects.
macro_rules! every_version {
    ($($module:ident: $minor:literal $(, #[$create_attr:meta])*;)*) => {$(
        mod $module {
            #[test]
            fn version_api_resources_cluster_info() {
                super::discovery_commands($minor);
            }

            #[test]
            $(#[$create_attr])*
            fn apply_created_unchanged_configured() {
                super::apply_cycle($minor);
            }

            #[test]
            $(#[$create_attr])*
            fn create_f() {
                super::create_file($minor);
            }

            #[test]
            fn delete_f() {
                super::delete_file($minor);
            }

            #[test]
            fn get_describe_logs_events_delete_pod() {
                super::pod_commands($minor);
            }

            #[test]
            fn create_configmap_secret_namespace() {
                super::create_generators($minor);
            }
        }
    )*};
}

every_version! {
    v1_27: 27;
    v1_28: 28;
    v1_29: 29;
    v1_30: 30;
    v1_31: 31;
    v1_32: 32;
    v1_33: 33;
}

// ---------------------------------------------------------------------------------------------
// The commands checked once, with the newest kubectl.

mod latest {
    use super::*;

    #[test]
    fn get_pods_watch_prints_a_status_change() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest("pod.yaml", WATCHED_POD);
        k.ok(&["create", "-f", &file]);
        let mut watch = k.stream(&["get", "pods", "-w"]);
        let deadline = Instant::now() + POD_TIMEOUT;
        let status = |line: &str| line.split_whitespace().nth(2).map(str::to_string);
        let header = watch.line_where(deadline, |_, _| true);
        assert!(
            header
                .split_whitespace()
                .eq(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]),
            "{header}"
        );
        let first = watch.line_where(deadline, |_, l| l.starts_with("watched "));
        let changed = watch.line_where(deadline, |_, l| {
            l.starts_with("watched ") && status(l) != status(&first)
        });
        watch.stop();
        assert!(
            ["ContainerCreating", "Running", "Completed"]
                .contains(&status(&changed).unwrap_or_default().as_str()),
            "{first}\n{changed}"
        );
        c.finish();
    }

    #[test]
    fn wait_for_condition_ready_then_for_delete() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("waited", &[], &[idle_container("main", &[])]),
        );
        k.ok(&["create", "-f", &file]);
        let out = k.ok(&[
            "wait",
            "--for=condition=Ready",
            "pod/waited",
            "--timeout=90s",
        ]);
        assert_eq!(out.trim(), "pod/waited condition met");
        assert_eq!(
            k.jsonpath(
                &["pod", "waited"],
                "{.status.conditions[?(@.type==\"Ready\")].status}"
            ),
            "True"
        );
        let (cmd, what) = k.command(&["wait", "--for=delete", "pod/waited", "--timeout=90s"]);
        let waiter = std::thread::spawn(move || run_command(cmd, what, COMMAND_TIMEOUT));
        k.ok(&["delete", "pod", "waited", "--wait=false"]);
        let out = waiter
            .join()
            .expect("waiter thread")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{out}");
        k.assert_pod_gone("waited");
        c.finish();
    }

    #[test]
    fn logs_follow_reads_until_the_container_exits() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest("pod.yaml", COUNTER_POD);
        k.ok(&["create", "-f", &file]);
        k.wait_phase("counter", "Running");
        let started = Instant::now();
        let out = k.run(&["logs", "-f", "counter"]);
        assert!(out.status.success(), "{out}");
        assert_eq!(out.stdout, "line 1\nline 2\nline 3\n", "{out}");
        eprintln!("logs -f returned after {:?}", started.elapsed());
        k.wait_phase("counter", "Succeeded");
        c.finish();
    }

    #[test]
    fn logs_previous_after_a_restart() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest("pod.yaml", FLAKY_POD);
        k.ok(&["create", "-f", &file]);
        k.ok_until(
            &[
                "get",
                "pod",
                "flaky",
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount} {.status.phase}",
            ],
            |s| s == "1 Running",
        );
        k.ok_until(&["logs", "flaky"], |l| l == "second run\n");
        assert_eq!(k.ok(&["logs", "flaky", "--previous"]), "first run\n");
        assert_eq!(
            k.ok(&["logs", "flaky", "-c", "main", "-p", "--tail=1"]),
            "first run\n"
        );
        let last_exit = k.jsonpath(
            &["pod", "flaky"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}",
        );
        assert_eq!(last_exit, "1");
        c.finish();
    }

    #[test]
    fn delete_grace_period_zero_force() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("forced", &[], &[idle_container("main", &[])]),
        );
        k.ok(&["create", "-f", &file]);
        k.wait_phase("forced", "Running");
        let ids = k.container_ids("forced");
        let uid = k.jsonpath(&["pod", "forced"], "{.metadata.uid}");
        let out = k.run(&["delete", "pod", "forced", "--grace-period=0", "--force"]);
        assert!(out.status.success(), "{out}");
        assert_eq!(out.stdout.trim(), "pod \"forced\" force deleted", "{out}");
        assert!(
            out.stderr.contains("Immediate deletion does not wait"),
            "{out}"
        );
        // Gone from the API at once, without waiting for the kubelet.
        k.assert_pod_gone("forced");
        // The kubelet still stops the containers (SIGTERM; these exit on it) and removes the
        // sandbox; only then may the daemon stop, or the sandbox's mounts stay behind.
        let deadline = Instant::now() + Duration::from_secs(30);
        for id in &ids {
            assert!(
                poll_until(deadline, || (!monitor_running(&c.d.root, id)).then_some(())).is_some(),
                "container {id} of the force-deleted pod still running"
            );
        }
        let sandbox = c.d.root.join("pods").join(&uid);
        assert!(
            poll_until(deadline, || (!sandbox.exists()).then_some(())).is_some(),
            "sandbox {} of the force-deleted pod still there",
            sandbox.display()
        );
        c.finish();
    }

    #[test]
    fn delete_grace_period_flag_bounds_termination() {
        let c = Cluster::start();
        let k = c.latest();
        // The spec says 30 s, `--grace-period=2` says 2 s.
        let file = c.manifest("pod.yaml", STUBBORN_POD);
        k.ok(&["create", "-f", &file]);
        k.wait_phase("stubborn", "Running");
        let started = Instant::now();
        let out = k.run(&[
            "delete",
            "pod",
            "stubborn",
            "--grace-period=2",
            "--timeout=40s",
        ]);
        let took = started.elapsed();
        assert!(out.status.success(), "{out}");
        assert!(
            took < Duration::from_secs(20),
            "delete --grace-period=2 took {took:?}"
        );
        k.assert_pod_gone("stubborn");
        c.finish();
    }

    /// A second daemon (another root) on the same host, started without pods; stopped with
    /// SIGTERM when dropped.
    struct OtherDaemon(Child);

    impl OtherDaemon {
        fn start(c: &Cluster) -> OtherDaemon {
            let root = c.d.dir.path().join("other-root");
            let port = free_port();
            let log = std::fs::File::create(c.d.dir.path().join("other.log")).expect("log");
            let child = Command::new(peapod_bin())
                .arg("--root")
                .arg(&root)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn the other peapod serve");
            let mut other = OtherDaemon(child);
            let ready = poll_until(Instant::now() + Duration::from_secs(30), || {
                if other.0.try_wait().ok().flatten().is_some() {
                    return Some(false);
                }
                let mut cmd = Command::new(kubectl_bin(LATEST));
                cmd.arg("--kubeconfig")
                    .arg(root.join("kubeconfig"))
                    .args(["get", "--raw", "/readyz"]);
                let out = run_command(cmd, "other readyz".into(), COMMAND_TIMEOUT).ok()?;
                out.status.success().then_some(true)
            });
            assert_eq!(ready, Some(true), "the other daemon did not start");
            other
        }

        fn stop(&mut self) {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
            let stopped = poll_until(Instant::now() + Duration::from_secs(20), || {
                self.0.try_wait().ok().flatten()
            });
            if stopped.is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    impl Drop for OtherDaemon {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Two daemons on one host share the `peapod0` bridge, and one that stops removes it when
    /// no pod is plugged in. Until 90cecc1 that included the moment between the other daemon's
    /// `PodNetwork::allocate` and `PodNetwork::connect` of a pod: the pod then failed with
    /// FailedCreatePodSandBox (`ip -batch -`: "peapod0" does not exist) and, never retried,
    /// stayed Pending. Before the fix 20 rounds hit it in about two runs out of three.
    #[test]
    fn pods_start_while_another_daemon_stops() {
        let c = Cluster::start();
        let k = c.latest();
        for round in 0..20 {
            let mut other = OtherDaemon::start(&c);
            let name = format!("round{round}");
            let file = c.manifest(
                "pod.yaml",
                &pod_yaml(&name, &[], &[idle_container("main", &[])]),
            );
            k.ok(&["create", "-f", &file]);
            other.stop();
            k.wait_phase(&name, "Running");
            k.ok(&["delete", "pod", &name]);
        }
        c.finish();
    }

    #[test]
    fn create_twice_is_already_exists() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("twice", &[], &[idle_container("main", &[])]),
        );
        assert_eq!(k.ok(&["create", "-f", &file]).trim(), "pod/twice created");
        let err = k.fails(&["create", "-f", &file]);
        assert!(
            err.contains("Error from server (AlreadyExists)")
                && err.contains("pods \"twice\" already exists"),
            "{err}"
        );
        c.finish();
    }

    #[test]
    fn apply_server_side() {
        let c = Cluster::start();
        let k = c.latest();
        let main = idle_container("main", &[]);
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("ssa", &[("app", "x")], std::slice::from_ref(&main)),
        );
        assert_eq!(
            k.ok(&["apply", "--server-side", "-f", &file]).trim(),
            "pod/ssa serverside-applied"
        );
        k.wait_ready("ssa");
        c.manifest(
            "pod.yaml",
            &pod_yaml("ssa", &[("app", "x"), ("tier", "web")], &[main]),
        );
        assert_eq!(
            k.ok(&["apply", "--server-side", "-f", &file]).trim(),
            "pod/ssa serverside-applied"
        );
        assert_eq!(
            k.jsonpath(&["pod", "ssa"], "{.metadata.labels.tier}"),
            "web"
        );
        c.finish();
    }

    /// A PATCH without a resourceVersion (`kubectl label`, `patch`, `apply`, `apply
    /// --server-side`) must not fail because the kubelet wrote the pod's status meanwhile: the
    /// API server retries it on the new version. Right after a create the kubelet writes status
    /// several times in a second, so some of these 100 labels race with it.
    #[test]
    fn label_right_after_create_never_conflicts() {
        let c = Cluster::start();
        let k = c.latest();
        let containers: Vec<String> = (0..3)
            .map(|i| idle_container(&format!("c{i}"), &[]))
            .collect();
        for p in 0..10 {
            let name = format!("racer{p}");
            let file = c.manifest("pod.yaml", &pod_yaml(&name, &[], &containers));
            k.ok(&["create", "-f", &file]);
            for n in 0..10 {
                let label = format!("n={n}");
                k.ok(&["label", "pod", &name, &label, "--overwrite"]);
            }
        }
        c.finish();
    }

    #[test]
    fn apply_with_an_unknown_field_is_rejected() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest("pod.yaml", UNKNOWN_FIELD_POD);
        let err = k.fails(&["apply", "-f", &file]);
        assert!(
            err.contains("unknown field") && err.contains("spec.bogusField"),
            "{err}"
        );
        k.assert_pod_gone("unknown");
        c.finish();
    }

    #[test]
    fn duplicate_container_names_are_invalid() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml(
                "dup",
                &[],
                &[idle_container("main", &[]), idle_container("main", &[])],
            ),
        );
        let err = k.fails(&["apply", "-f", &file]);
        assert!(
            err.contains("The Pod \"dup\" is invalid")
                && err.contains("spec.containers[1].name: Duplicate value: \"main\""),
            "{err}"
        );
        let err = k.fails(&["create", "-f", &file, "-o", "name"]);
        assert!(err.contains("is invalid"), "{err}");
        k.assert_pod_gone("dup");
        c.finish();
    }

    #[test]
    fn replace_a_pod() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("replaced", &[("app", "x")], &[idle_container("main", &[])]),
        );
        k.ok(&["create", "-f", &file]);
        k.wait_ready("replaced");
        let mut live: Value =
            serde_json::from_str(&k.ok(&["get", "pod", "replaced", "-o", "json"])).expect("json");
        live["metadata"]["labels"]["app"] = "y".into();
        // Without a resourceVersion kubectl replaces the latest version (it reads it first), so
        // a status write by the kubelet in between is no conflict.
        if let Some(m) = live["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let edited = c.manifest("live.json", &live.to_string());
        assert_eq!(
            k.ok(&["replace", "-f", &edited]).trim(),
            "pod/replaced replaced"
        );
        assert_eq!(
            k.jsonpath(&["pod", "replaced"], "{.metadata.labels.app}"),
            "y"
        );
        c.finish();
    }

    #[test]
    fn replace_with_a_stale_resource_version_is_a_conflict() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("stale", &[("app", "x")], &[idle_container("main", &[])]),
        );
        k.ok(&["create", "-f", &file]);
        k.wait_ready("stale");
        let mut live: Value =
            serde_json::from_str(&k.ok(&["get", "pod", "stale", "-o", "json"])).expect("json");
        let read_at = live["metadata"]["resourceVersion"].clone();
        k.ok(&["label", "pod", "stale", "app=changed", "--overwrite"]);
        live["metadata"]["labels"]["app"] = "mine".into();
        assert_eq!(live["metadata"]["resourceVersion"], read_at);
        let edited = c.manifest("live.json", &live.to_string());
        let err = k.fails(&["replace", "-f", &edited]);
        assert!(
            err.contains("Error from server (Conflict)")
                && err.contains("the object has been modified"),
            "{err}"
        );
        assert_eq!(
            k.jsonpath(&["pod", "stale"], "{.metadata.labels.app}"),
            "changed"
        );
        c.finish();
    }

    #[test]
    fn patch_merge_and_json() {
        let c = Cluster::start();
        let k = c.latest();
        let file = c.manifest(
            "pod.yaml",
            &pod_yaml("patched", &[("app", "x")], &[idle_container("main", &[])]),
        );
        k.ok(&["create", "-f", &file]);
        k.wait_ready("patched");
        assert_eq!(
            k.ok(&[
                "patch",
                "pod",
                "patched",
                "--type=merge",
                "-p",
                r#"{"metadata":{"labels":{"merged":"yes"}}}"#
            ])
            .trim(),
            "pod/patched patched"
        );
        assert_eq!(
            k.ok(&[
                "patch",
                "pod",
                "patched",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"},{"op":"remove","path":"/metadata/labels/app"}]"#
            ])
            .trim(),
            "pod/patched patched"
        );
        let labels: Value =
            serde_json::from_str(&k.jsonpath(&["pod", "patched"], "{.metadata.labels}"))
                .expect("labels json");
        assert_eq!(
            labels,
            serde_json::json!({"merged": "yes", "json": "yes"}),
            "{labels}"
        );
        let err = k.fails(&[
            "patch",
            "pod",
            "patched",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/labels/absent"}]"#,
        ]);
        assert!(err.contains("Error from server"), "{err}");
        c.finish();
    }

    #[test]
    fn get_a_missing_pod_is_not_found() {
        let c = Cluster::start();
        let k = c.latest();
        k.assert_pod_gone("nope");
        let err = k.fails(&["get", "configmap", "nope"]);
        assert!(
            err.contains("Error from server (NotFound): configmaps \"nope\" not found"),
            "{err}"
        );
        c.finish();
    }

    #[test]
    fn run_then_logs() {
        let c = Cluster::start();
        let k = c.latest();
        assert_eq!(
            k.ok(&[
                "run",
                "hi",
                "--image=busybox",
                "--restart=Never",
                "--",
                "echo",
                "hi"
            ])
            .trim(),
            "pod/hi created"
        );
        k.wait_phase("hi", "Succeeded");
        assert_eq!(k.ok(&["logs", "hi"]), "hi\n");
        assert_eq!(k.jsonpath(&["pod", "hi"], "{.metadata.labels.run}"), "hi");
        let table = k.ok(&["get", "pod", "hi"]);
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|r| r.split_whitespace().take(3).eq(["hi", "0/1", "Completed"])),
            "{table}"
        );
        c.finish();
    }
}
