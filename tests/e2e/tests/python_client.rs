//! The Python `kubernetes` client (from PyPI) against `peapod serve` (issue 5): it loads the
//! admin kubeconfig, creates a pod, lists pods, watches until the pod is Running, reads its log,
//! deletes it and waits until it is gone — `python/client_smoke.py` does that; this test
//! provides the client and the daemon and checks that nothing is left afterwards.
//!
//! The client goes into a venv in the test's temporary directory (`python3 -m venv`, then
//! `pip install kubernetes`; pip's own cache makes later runs quick). A failing pip fails the test
//! with pip's output. `PEAPOD_TEST_PYTHON=/path/to/python` uses an interpreter that already has
//! `kubernetes` instead (no pip at all).
//!
//! The binary is `PEAPOD_BIN`, else `<workspace>/target/debug/peapod` (`cargo build -p peapod`
//! first); the image is `images/out/busybox.oci.tar` (`python3 images/build.py`), or
//! `$PEAPOD_TEST_IMAGES/busybox.oci.tar`. kubectl 1.33 checks readiness and cleans up. Runs as
//! root. Waits poll with deadlines. The daemon harness is the crate's [`peapod_e2e::Daemon`].

use peapod_e2e::python::python_with_client;
use peapod_e2e::{root_tempdir, run_command, workspace, Daemon, Leftovers};
use std::process::Command;
use std::time::{Duration, Instant};

const SMOKE_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn python_kubernetes_client_creates_lists_watches_logs_deletes_a_pod() {
    let dir = root_tempdir("peapod-pyclient-");
    let started = Instant::now();
    let python = python_with_client(dir.path());
    eprintln!("python client ready in {:?}", started.elapsed());

    let mut daemon = Daemon::new(dir, Leftovers::Peapod);
    daemon.serve(&[]);
    let started = Instant::now();
    let mut cmd = Command::new(&python);
    cmd.arg(workspace().join("tests/e2e/python/client_smoke.py"))
        .arg(daemon.kubeconfig())
        .args(["default", "pyclient"])
        .env("HOME", daemon.dir.path())
        .env_remove("KUBECONFIG");
    let what = format!("{cmd:?}");
    let out =
        run_command(cmd, what, SMOKE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    eprintln!(
        "client_smoke.py took {:?}:\n{}",
        started.elapsed(),
        out.stdout
    );
    assert!(
        out.status.success() && out.stdout.contains("client_smoke: OK"),
        "{out}\n{}",
        daemon.log()
    );
    for step in [
        "created pyclient",
        "listed",
        "running",
        "log: 'hello from the python client'",
        "gone",
    ] {
        assert!(
            out.stdout.contains(step),
            "no {step:?} in the output\n{out}"
        );
    }
    // The script deleted its pod: the API has none left.
    let pods = daemon
        .kubectl(&["get", "pods", "--all-namespaces", "-o", "name"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pods.status.success() && pods.stdout.trim().is_empty(),
        "{pods}"
    );
    daemon.finish();
}
