//! The README's scenario end to end, as a user runs it: load busybox with the real `peapod`
//! binary, `peapod run -f examples/appcoup/pod.yaml` (its hostPort moved to a free port), GET
//! the generator's numbers over HTTP until they grow, Ctrl-C, and nothing is left behind.
//!
//! The binary is `PEAPOD_BIN`, else `<workspace>/target/debug/peapod` (`cargo build -p peapod`
//! first); the image is `images/out/busybox.oci.tar` (`python3 images/build.py`), or
//! `$PEAPOD_TEST_IMAGES/busybox.oci.tar`. Runs as root. Waits poll with deadlines.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peapod_e2e::{
    busybox_archive, cmdline, entries, free_port_on, mounts_under, peapod_bin, pod_cgroup_dirs,
    poll_until, processes, root_tempdir, sweep, workspace,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `GET /data` on 127.0.0.1:`port`: the body's lines when the answer is 200.
fn get_numbers(port: u16) -> Option<Vec<u32>> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET /data HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    body.lines().map(|l| l.parse().ok()).collect()
}

/// Processes whose command line mentions `root/` or whose environment has `PEAPOD_ROOT=root`.
fn processes_of(root: &Path) -> Vec<i32> {
    let needle = format!("{}/", root.display());
    let env = format!("PEAPOD_ROOT={}", root.display());
    processes()
        .into_iter()
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cmdline(*pid).contains(&needle)
                || environ.split(|b| *b == 0).any(|e| e == env.as_bytes())
        })
        .collect()
}

fn pod_cgroups(uid: &str) -> Vec<PathBuf> {
    pod_cgroup_dirs(uid)
        .into_iter()
        .filter(|d| d.exists())
        .collect()
}

/// The data root and the `peapod run` child; on drop (a failed test too) kills what is left
/// of the root and unmounts below it before the tempdir goes.
struct Scenario {
    child: Option<Child>,
    root: PathBuf,
    dir: tempfile::TempDir,
}

impl Scenario {
    fn new() -> Scenario {
        let dir = root_tempdir("peapod-e2e-");
        let root = dir.path().join("root");
        Scenario {
            child: None,
            root,
            dir,
        }
    }

    fn peapod(&self) -> Command {
        let mut cmd = Command::new(peapod_bin());
        cmd.env("PEAPOD_ROOT", &self.root).env_remove("PEAPOD_LOG");
        cmd
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn transcript(&self) -> String {
        format!(
            "--- stdout:\n{}--- stderr:\n{}",
            self.log("stdout"),
            self.log("stderr")
        )
    }

    fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        let child = self.child.as_mut().expect("peapod run started");
        let status = poll_until(deadline, || child.try_wait().expect("wait for peapod run"));
        status.unwrap_or_else(|| panic!("peapod run did not exit\n{}", self.transcript()))
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        sweep(&self.root, || {
            processes_of(&self.root)
                .into_iter()
                .map(|pid| (pid, String::new()))
                .collect()
        });
    }
}

#[test]
fn appcoup_serves_growing_numbers_and_cleans_up_on_sigint() {
    let mut s = Scenario::new();
    let load = s
        .peapod()
        .args(["image", "load", "-i"])
        .arg(busybox_archive())
        .output()
        .expect("run peapod image load");
    assert!(load.status.success(), "image load: {load:?}");

    let example = std::fs::read_to_string(workspace().join("examples/appcoup/pod.yaml"))
        .expect("read examples/appcoup/pod.yaml");
    assert_eq!(example.matches("hostPort: 8000").count(), 1, "{example}");
    let port = free_port_on(Ipv4Addr::UNSPECIFIED);
    let manifest = s.dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        example.replace("hostPort: 8000", &format!("hostPort: {port}")),
    )
    .expect("write manifest");

    let stdout = std::fs::File::create(s.dir.path().join("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(s.dir.path().join("stderr")).expect("stderr file");
    s.child = Some(
        s.peapod()
            .arg("run")
            .arg("-f")
            .arg(&manifest)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn peapod run"),
    );

    let first = poll_until(Instant::now() + Duration::from_secs(60), || {
        get_numbers(port).filter(|n| !n.is_empty())
    })
    .unwrap_or_else(|| panic!("no numbers on :{port}/data\n{}", s.transcript()));
    let uids = entries(&s.root.join("pods"));
    assert_eq!(uids.len(), 1, "pods: {uids:?}");
    // The generator appends one number every 2 s.
    let grown = poll_until(Instant::now() + Duration::from_secs(30), || {
        get_numbers(port).filter(|n| n.len() > first.len())
    })
    .unwrap_or_else(|| panic!("numbers did not grow past {first:?}\n{}", s.transcript()));
    assert!(grown.starts_with(&first), "{first:?} then {grown:?}");

    let pid = s.child.as_ref().expect("child").id() as i32;
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("send SIGINT");
    // terminationGracePeriodSeconds is 5 and httpd, as PID 1, ignores SIGTERM.
    let status = s.wait_exit(Instant::now() + Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGINT\n{}",
        s.transcript()
    );

    let out = s.log("stdout");
    assert!(
        out.contains(&format!("appcoup/generator | wrote {}", first[0])),
        "{}",
        s.transcript()
    );
    assert!(s.log("stderr").contains("pod/appcoup: deleted"));
    assert_eq!(mounts_under(&s.root), Vec::<PathBuf>::new(), "mounts left");
    assert_eq!(entries(&s.root.join("pods")), Vec::<String>::new());
    assert_eq!(entries(&s.root.join("containers")), Vec::<String>::new());
    assert_eq!(processes_of(&s.root), Vec::<i32>::new(), "processes left");
    assert_eq!(pod_cgroups(&uids[0]), Vec::<PathBuf>::new(), "cgroups left");
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
        "host port {port} still open"
    );
}
