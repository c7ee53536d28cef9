//! `peapod serve` on a temporary root and a free loopback port, with kubectl bound to it
//! (`--kubeconfig`, a private `--cache-dir` and `HOME`), and its teardown: [`Daemon::finish`]
//! deletes every pod through kubectl, stops the daemon with SIGTERM and fails on anything of the
//! root left; `Drop` (a failed test) does the same without checking, so nothing outlives a test.

use crate::command::{run_command, Out};
use crate::host::{cgroup_processes, cmdline, peapod_processes_under, processes_mentioning};
use crate::{busybox_archive, free_port, kubectl_bin, peapod_bin, poll_until, LATEST};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest a single kubectl command may run (a hang fails the test rather than the suite).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest a pod may take to reach a phase, or to disappear; generous for two busy cores.
pub const POD_TIMEOUT: Duration = Duration::from_secs(90);

/// Which processes count as left behind by a root once its daemon has stopped.
#[derive(Clone, Copy)]
pub enum Leftovers {
    /// peapod processes working below the root (the monitors).
    Peapod,
    /// Those, and any process in the cgroup of a pod the root still holds.
    PeapodAndPodCgroups,
    /// Any process whose command line mentions the temporary directory, kubectl included.
    MentioningDir,
}

/// A data root in a temporary directory, and the `peapod serve` working on it once
/// [`Daemon::serve`] has started it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    /// `dir/root`.
    pub root: PathBuf,
    /// `https://127.0.0.1:<port>` once serving.
    pub server: String,
    child: Option<Child>,
    /// The binary `serve` starts: [`peapod_bin`] unless [`Daemon::serve_binary`] chose another.
    bin: PathBuf,
    leftovers: Leftovers,
    finished: bool,
}

impl Daemon {
    /// A root in `dir` with the busybox image loaded; no daemon yet.
    pub fn new(dir: tempfile::TempDir, leftovers: Leftovers) -> Daemon {
        let root = dir.path().join("root");
        std::fs::create_dir_all(dir.path().join("home")).expect("home dir");
        let load = Command::new(peapod_bin())
            .arg("--root")
            .arg(&root)
            .args(["image", "load", "-i"])
            .arg(busybox_archive())
            .env_remove("PEAPOD_LOG")
            .output()
            .expect("run peapod image load");
        assert!(load.status.success(), "image load: {load:?}");
        Daemon {
            dir,
            root,
            server: String::new(),
            child: None,
            bin: peapod_bin(),
            leftovers,
            finished: false,
        }
    }

    /// Starts `bin serve` (another build or copy of peapod, as an upgrade in place would) with
    /// `env` added; later [`Daemon::serve`] calls start it too.
    pub fn serve_binary(&mut self, bin: &std::path::Path, env: &[(&str, &str)]) {
        self.bin = bin.to_path_buf();
        self.serve(env);
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILLs the daemon (a crash) and reaps it; what it started keeps running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `peapod serve` with `env` added and waits until it answers `/readyz`.
    pub fn serve(&mut self, env: &[(&str, &str)]) {
        // The port is free when picked but may be taken before the daemon binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            self.server = format!("https://127.0.0.1:{port}");
            // Appended to: a restarted daemon's log follows the killed one's.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("daemon log");
            let err = log.try_clone().expect("daemon log");
            self.child = Some(
                Command::new(&self.bin)
                    .arg("--root")
                    .arg(&self.root)
                    .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                    .env_remove("PEAPOD_LOG")
                    .envs(env.iter().copied())
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(err)
                    .spawn()
                    .expect("spawn peapod serve"),
            );
            if self.wait_ready() {
                return;
            }
            self.child = None;
            assert!(
                self.log().contains("Address already in use"),
                "peapod serve exited\n{}",
                self.log()
            );
        }
        panic!("no free port for peapod serve\n{}", self.log());
    }

    /// Polls until the kubeconfig exists and `/readyz` answers; false if the daemon exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = poll_until(deadline, || {
            let child = self.child.as_mut().expect("daemon started");
            if child.try_wait().expect("try_wait peapod serve").is_some() {
                return Some(false);
            }
            if !self.kubeconfig().is_file() {
                return None;
            }
            let out = self.kubectl(&["get", "--raw", "/readyz"]).ok()?;
            (out.status.success() && out.stdout.trim() == "ok").then_some(true)
        });
        match ready {
            Some(ready) => ready,
            None => panic!("peapod serve not ready in 30 s\n{}", self.log()),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log, headed for a failure message.
    pub fn log(&self) -> String {
        format!(
            "--- peapod serve log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        )
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// kubectl 1.`minor` with `args`, bound to this daemon; and how to name it in messages.
    pub fn kubectl_command(&self, minor: u32, args: &[&str]) -> (Command, String) {
        let mut cmd = Command::new(kubectl_bin(minor));
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join(format!("cache-1.{minor}")))
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path().join("home"))
            .env_remove("KUBECONFIG");
        (cmd, format!("kubectl.1.{minor} {}", args.join(" ")))
    }

    /// Runs the newest kubectl with `args`, for at most [`COMMAND_TIMEOUT`].
    pub fn kubectl(&self, args: &[&str]) -> Result<Out, String> {
        let (cmd, what) = self.kubectl_command(LATEST, args);
        run_command(cmd, what, COMMAND_TIMEOUT)
    }

    /// Deletes every pod through kubectl and waits until the API has none left.
    pub fn delete_all_pods(&self) -> Result<(), String> {
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
        let mut left = String::new();
        poll_until(Instant::now() + POD_TIMEOUT, || {
            let out = self
                .kubectl(&["get", "pods", "--all-namespaces", "-o", "name"])
                .ok()?;
            left = out.stdout.clone();
            (out.status.success() && out.stdout.trim().is_empty()).then_some(())
        })
        .ok_or_else(|| format!("pods still there after delete:\n{left}"))
    }

    /// SIGTERM to the daemon, then waits for it (SIGKILL if it does not stop in 20 s).
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("no daemon".into());
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = poll_until(Instant::now() + Duration::from_secs(20), || {
            child.try_wait().ok().flatten()
        });
        match status {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("peapod serve did not stop within 20 s of SIGTERM".into())
            }
        }
    }

    /// Kills whatever of the root is still running and unmounts below it (see
    /// [`crate::sweep`]). Returns what it found, so `finish` can fail on it.
    pub fn sweep(&self) -> Vec<String> {
        let (root, dir) = (self.root.as_path(), self.dir.path());
        let described = |found: Vec<(i32, String)>| -> Vec<(i32, String)> {
            found
                .into_iter()
                .map(|(pid, cmd)| (pid, format!("process {pid}: {cmd}")))
                .collect()
        };
        crate::sweep(root, || match self.leftovers {
            Leftovers::Peapod => described(peapod_processes_under(root)),
            Leftovers::PeapodAndPodCgroups => {
                let mut found = described(peapod_processes_under(root));
                found.extend(cgroup_processes(root).into_iter().map(|pid| {
                    (
                        pid,
                        format!("process {pid} in a pod cgroup: {}", cmdline(pid)),
                    )
                }));
                found
            }
            Leftovers::MentioningDir => described(processes_mentioning(dir)),
        })
    }

    /// Marks the teardown as the test's own: `Drop` then leaves the pods alone.
    pub fn set_finished(&mut self) {
        self.finished = true;
    }

    /// Whether the test has taken over the teardown ([`Daemon::finish`], `set_finished`).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The end of a test: no pods (deleted through kubectl), the daemon stopped by SIGTERM with
    /// status 0, no process or mount of the root left.
    pub fn finish(&mut self) {
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
        if !self.finished && self.is_running() {
            let _ = self.delete_all_pods();
        }
        let _ = self.stop();
        self.sweep();
    }
}
