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
//! root. Waits poll with deadlines. (The daemon harness is a smaller copy of the one in
//! `kubectl.rs`: test targets cannot share a module without a file outside this test's remit.)

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
const SMOKE_TIMEOUT: Duration = Duration::from_secs(300);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peapod_bin() -> PathBuf {
    let bin = std::env::var_os("PEAPOD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/peapod"));
    assert!(
        bin.is_file(),
        "peapod binary {} not found: run `cargo build -p peapod` first, or set PEAPOD_BIN",
        bin.display()
    );
    bin
}

fn busybox_archive() -> PathBuf {
    let dir = std::env::var_os("PEAPOD_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("images/out"));
    let archive = dir.join("busybox.oci.tar");
    assert!(
        archive.is_file(),
        "test image {} is missing: run `python3 images/build.py` first",
        archive.display()
    );
    archive
}

/// Calls `check` until it returns `Some` or `deadline` passes.
fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// What a finished command printed.
struct Out {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n{}\n--- stdout:\n{}--- stderr:\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to its end, killing it after `timeout`.
fn run_command(mut cmd: Command, timeout: Duration) -> Result<Out, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let status = waiter
        .join()
        .map_err(|_| format!("waiter of {what} panicked"))?
        .map_err(|e| format!("wait for {what}: {e}"))?;
    let out = Out {
        what,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if timed_out {
        return Err(format!("timed out after {timeout:?}\n{out}"));
    }
    Ok(out)
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// peapod processes (the monitors) working below `root`.
fn processes_of(root: &Path) -> Vec<(i32, String)> {
    let needle = format!("{}/", root.display());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32)
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .filter(|(_, cmd)| {
            let argv0 = cmd.split(' ').next().unwrap_or("");
            cmd.contains(&needle) && Path::new(argv0).ends_with("peapod")
        })
        .collect()
}

/// A `peapod serve` on a temporary root; `finish` deletes every pod through kubectl, stops the
/// daemon and checks nothing is left, `Drop` (a failed test) does the same without checking.
struct Daemon {
    child: Option<Child>,
    root: PathBuf,
    finished: bool,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(dir: tempfile::TempDir) -> Daemon {
        let root = dir.path().join("root");
        let load = Command::new(peapod_bin())
            .arg("--root")
            .arg(&root)
            .args(["image", "load", "-i"])
            .arg(busybox_archive())
            .output()
            .expect("run peapod image load");
        assert!(load.status.success(), "image load: {load:?}");
        let mut daemon = Daemon {
            child: None,
            root,
            finished: false,
            dir,
        };
        // The port is free when picked but may be taken before the daemon binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(daemon.log_path()).expect("daemon log");
            let err = log.try_clone().expect("daemon log");
            daemon.child = Some(
                Command::new(peapod_bin())
                    .arg("--root")
                    .arg(&daemon.root)
                    .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                    .env_remove("PEAPOD_LOG")
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err)
                    .spawn()
                    .expect("spawn peapod serve"),
            );
            let ready = poll_until(Instant::now() + Duration::from_secs(30), || {
                let child = daemon.child.as_mut().expect("daemon started");
                if child.try_wait().expect("try_wait").is_some() {
                    return Some(false);
                }
                if !daemon.kubeconfig().is_file() {
                    return None;
                }
                let out = daemon.kubectl(&["get", "--raw", "/readyz"]).ok()?;
                (out.status.success() && out.stdout.trim() == "ok").then_some(true)
            });
            match ready {
                Some(true) => return daemon,
                Some(false) => {
                    daemon.child = None;
                    assert!(
                        daemon.log().contains("Address already in use"),
                        "peapod serve exited\n{}",
                        daemon.log()
                    );
                }
                None => panic!("peapod serve not ready in 30 s\n{}", daemon.log()),
            }
        }
        panic!("no free port for peapod serve\n{}", daemon.log());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn log(&self) -> String {
        format!(
            "--- peapod serve log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        )
    }

    fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    fn kubectl(&self, args: &[&str]) -> Result<Out, String> {
        let mut cmd = Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        run_command(cmd, COMMAND_TIMEOUT)
    }

    fn delete_all_pods(&self) -> Result<(), String> {
        let out = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--wait=true",
            "--timeout=60s",
        ])?;
        if !out.status.success() {
            return Err(format!("delete all pods failed\n{out}"));
        }
        poll_until(Instant::now() + Duration::from_secs(90), || {
            let out = self
                .kubectl(&["get", "pods", "--all-namespaces", "-o", "name"])
                .ok()?;
            (out.status.success() && out.stdout.trim().is_empty()).then_some(())
        })
        .ok_or_else(|| "pods still there after delete".to_string())
    }

    fn stop(&mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("no daemon".into());
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        match poll_until(Instant::now() + Duration::from_secs(20), || {
            child.try_wait().ok().flatten()
        }) {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("peapod serve did not stop within 20 s of SIGTERM".into())
            }
        }
    }

    /// Kills what of the root still runs and unmounts below it; returns what it found.
    fn sweep(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (pid, cmd) in processes_of(&self.root) {
            found.push(format!("process {pid}: {cmd}"));
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = poll_until(Instant::now() + Duration::from_secs(10), || {
            processes_of(&self.root).is_empty().then_some(())
        });
        let mut mounts = mounts_under(&self.root);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            found.push(format!("mount {}", m.display()));
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        found
    }

    fn finish(mut self) {
        self.finished = true;
        let deleted = self.delete_all_pods();
        let stopped = self.stop();
        let left = self.sweep();
        let log = self.log();
        if let Err(e) = deleted {
            panic!("cleanup: {e}\n{log}");
        }
        match stopped {
            Ok(status) => assert!(status.success(), "peapod serve exited {status}\n{log}"),
            Err(e) => panic!("{e}\n{log}"),
        }
        assert!(left.is_empty(), "left behind: {left:#?}\n{log}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.child.is_some() {
            let _ = self.delete_all_pods();
        }
        let _ = self.stop();
        self.sweep();
    }
}

/// A Python interpreter that can `import kubernetes`: `PEAPOD_TEST_PYTHON`, else a fresh venv
/// in `dir` with the client installed from PyPI.
fn python_with_client(dir: &Path) -> PathBuf {
    if let Some(python) = std::env::var_os("PEAPOD_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = dir.join("venv");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&venv);
    let out = run_command(cmd, PIP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "python3 -m venv failed\n{out}");
    let python = venv.join("bin/python");
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "kubernetes",
    ]);
    let out = run_command(cmd, PIP_TIMEOUT).unwrap_or_else(|e| panic!("pip install: {e}"));
    assert!(out.status.success(), "pip install kubernetes failed\n{out}");
    python
}

#[test]
fn python_kubernetes_client_creates_lists_watches_logs_deletes_a_pod() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "e2e tests must run as root"
    );
    let dir = tempfile::Builder::new()
        .prefix("peapod-pyclient-")
        .tempdir()
        .expect("tempdir");
    let started = Instant::now();
    let python = python_with_client(dir.path());
    eprintln!("python client ready in {:?}", started.elapsed());

    let daemon = Daemon::start(dir);
    let started = Instant::now();
    let mut cmd = Command::new(&python);
    cmd.arg(workspace().join("tests/e2e/python/client_smoke.py"))
        .arg(daemon.kubeconfig())
        .args(["default", "pyclient"])
        .env("HOME", daemon.dir.path())
        .env_remove("KUBECONFIG");
    let out = run_command(cmd, SMOKE_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
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
