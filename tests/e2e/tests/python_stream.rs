//! The Python `kubernetes` client's `stream()` exec (issue 6, "Done when"):
//! `python/stream_exec.py` runs a command, reads stdout and stderr apart with the exit code,
//! pipes stdin, and drives a terminal session, against a busybox pod of `peapod serve`.
//! The client comes from [`peapod_e2e::python::python_with_client`]. Runs as root.

use peapod_e2e::python::python_with_client;
use peapod_e2e::{
    poll_until, root_tempdir, run_command, workspace, Daemon, Leftovers, POD_TIMEOUT,
};
use std::process::Command;
use std::time::{Duration, Instant};

use peapod_e2e::pods::SHELL_POD as POD;

#[test]
fn python_client_stream_exec() {
    let dir = root_tempdir("peapod-pystream-");
    let python = python_with_client(dir.path());
    let mut d = Daemon::new(dir, Leftovers::MentioningDir);
    d.serve(&[]);
    let manifest = d.dir.path().join("pod.yaml");
    std::fs::write(&manifest, POD).expect("manifest");
    let out = d
        .kubectl(&["apply", "-f", manifest.to_str().expect("utf-8")])
        .expect("kubectl apply");
    assert!(out.status.success(), "{out}");
    let ready = poll_until(Instant::now() + POD_TIMEOUT, || {
        let out = d.kubectl(&["exec", "shell", "--", "true"]).ok()?;
        out.status.success().then_some(())
    });
    assert!(ready.is_some(), "pod not running\n{}", d.log());

    let mut cmd = Command::new(&python);
    cmd.arg(workspace().join("tests/e2e/python/stream_exec.py"))
        .arg(d.kubeconfig())
        .args(["default", "shell"])
        .env("HOME", d.dir.path())
        .env_remove("KUBECONFIG");
    let what = format!("{cmd:?}");
    let out = run_command(cmd, what, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert!(
        out.status.success() && out.stdout.contains("stream_exec: OK"),
        "{out}\n{}",
        d.log()
    );
    d.finish();
}
