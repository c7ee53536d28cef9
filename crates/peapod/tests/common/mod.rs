//! The harness of peapod's root integration tests: a data root in a tempdir with busybox loaded
//! through the real binary, a `peapod run` child whose output lines are collected on threads,
//! free host ports, a plain HTTP GET, and the leak checks every test ends with.
//!
//! Nothing here sleeps to wait: every wait polls a condition (or a condvar) with a deadline, and
//! a missed deadline fails the test with everything `peapod run` printed. Dropping a
//! [`TestRoot`] cleans up even after a failed test: processes of the root are killed, mounts
//! under it lazily unmounted, its pods' cgroups removed, the directory deleted.

#![allow(dead_code)] // each test binary uses a part of the harness

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Between two looks at a condition that has no event to wait on.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long cleanup waits for killed processes to disappear.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The image every test pod uses.
pub const BUSYBOX_ARCHIVE: &str = "busybox.oci.tar";
pub const PYTHON_ARCHIVE: &str = "python.oci.tar";

/// The peapod binary cargo built for these tests.
pub fn peapod_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_peapod"))
}

/// `PEAPOD_TEST_IMAGES`, else `<workspace>/images/out`.
pub fn images_dir() -> PathBuf {
    match std::env::var_os("PEAPOD_TEST_IMAGES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/out"),
    }
}

/// An archive of `images/build.py`; fails the test (never skips it) when it is missing.
pub fn image_archive(file: &str) -> PathBuf {
    let path = images_dir().join(file);
    assert!(
        path.is_file(),
        "test image {} is missing: run `python3 images/build.py` first \
         (or point PEAPOD_TEST_IMAGES at the directory that holds it)",
        path.display()
    );
    path
}

/// `timeout` from now.
pub fn deadline_in(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

/// Calls `check` until it returns `Some` or `deadline` passes (then `None`).
/// A directory beside the data root through which a test tells a pod when to go on (a
/// hostPath volume of the pod), created empty.
pub fn control_dir(root: &TestRoot) -> PathBuf {
    let dir = root
        .path()
        .parent()
        .expect("the root is inside a tempdir")
        .join("control");
    std::fs::create_dir_all(&dir).expect("create the control directory");
    dir
}

/// Runs a pod that ends by itself; returns the finished run after checking its exit code and
/// that nothing leaked.
pub fn run_to_completion(root: &TestRoot, manifest: &str, want_code: i32) -> RunningPod {
    let path = root.manifest("pod.yaml", manifest);
    let mut pod = root.run(&path);
    let code = pod.exit_code(deadline_in(Duration::from_secs(60)));
    assert_eq!(code, want_code, "exit code\n{}", pod.transcript());
    pod.assert_no_leaks(root);
    pod
}

pub fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A TCP port free on 127.0.0.1 and 0.0.0.0 right now, never handed out twice by this process,
/// so tests running in parallel do not collide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        // hostPort without hostIP binds every address: make sure that is free too.
        let wildcard_free = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        if wildcard_free && given.insert(port) {
            return port;
        }
    }
}

/// A plain HTTP/1.0 GET of `http://127.0.0.1:<port><path>`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, body.to_string()))
}

/// What the tests saw of a root while pods ran, kept for the leak checks and for cleanup.
#[derive(Debug, Default)]
struct Observed {
    /// Names of the directories under `<root>/pods/`.
    pod_uids: BTreeSet<String>,
    /// Container ID -> its init process (from `started.json`), identified by PID and start time.
    container_procs: BTreeMap<String, Proc>,
    /// Pod addresses allocated under `<root>/ipam/` (their veths are named after them).
    pod_ips: BTreeSet<std::net::Ipv4Addr>,
}

/// A process, identified across PID reuse by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    start_time: u64,
}

impl Proc {
    /// The process `pid` as it is now, if it exists.
    fn now(pid: i32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 22 (starttime), counted after the parenthesised command name.
        let after = &stat[stat.rfind(')')? + 2..];
        let start_time = after.split_whitespace().nth(19)?.parse().ok()?;
        Some(Proc { pid, start_time })
    }

    /// Whether this very process still exists (a zombie counts).
    pub fn alive(&self) -> bool {
        Proc::now(self.pid) == Some(*self)
    }
}

/// A data root in a fresh tempdir. Manifests are written next to it, not inside it.
pub struct TestRoot {
    root: PathBuf,
    observed: Arc<Mutex<Observed>>,
    /// Extra environment of every `peapod` this root runs.
    env: Vec<(String, String)>,
    // Last: removed after `Drop::drop` unmounted everything below it.
    dir: tempfile::TempDir,
}

impl TestRoot {
    /// A root with busybox loaded.
    pub fn new() -> TestRoot {
        let root = TestRoot::empty();
        root.load(&image_archive(BUSYBOX_ARCHIVE));
        root
    }

    /// A root with no image.
    pub fn empty() -> TestRoot {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("peapod-test-")
            .tempdir()
            .expect("create tempdir");
        let root = dir.path().join("root");
        TestRoot {
            root,
            observed: Arc::default(),
            env: Vec::new(),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Sets a variable in the environment of every `peapod` this root runs from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Runs `peapod <args>` against this root to completion.
    pub fn peapod<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run peapod")
    }

    /// Loads an image archive, failing the test if that fails.
    pub fn load(&self, archive: &Path) {
        let out = self.peapod([
            OsStr::new("image"),
            "load".as_ref(),
            "-i".as_ref(),
            archive.as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "peapod image load -i {} failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a manifest next to the root; returns its path.
    pub fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path
    }

    /// Starts `peapod run -f <manifest>` in the background.
    pub fn run(&self, manifest: &Path) -> RunningPod {
        RunningPod::spawn(self, manifest)
    }

    /// `peapod` with this root in its environment and a clean log filter, so stderr holds only
    /// what the command itself prints.
    fn command(&self) -> Command {
        let mut cmd = Command::new(peapod_bin());
        cmd.env("PEAPOD_ROOT", &self.root)
            .env_remove("PEAPOD_LOG")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Entries of `<root>/<sub>/`, sorted (none when it does not exist).
    pub fn entries(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join(sub))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every file and directory below `<root>/<sub>`, relative, sorted.
    pub fn tree(&self, sub: &str) -> Vec<String> {
        let base = self.root.join(sub);
        let mut out = Vec::new();
        let mut todo = vec![base.clone()];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    todo.push(path.clone());
                }
                if let Ok(rel) = path.strip_prefix(&base) {
                    out.push(rel.display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// Mount points at or below the root.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.root)
    }

    /// Processes whose command line mentions the root, or whose environment names it as
    /// `PEAPOD_ROOT` (`peapod run` and its monitors).
    pub fn processes(&self) -> Vec<(i32, String)> {
        processes_of(&self.root)
    }

    /// After a command refused its input: no pod sandbox, no container, no mount.
    pub fn assert_nothing_created(&self) {
        assert_eq!(self.entries("pods"), Vec::<String>::new(), "pods created");
        assert_eq!(
            self.entries("containers"),
            Vec::<String>::new(),
            "containers created"
        );
        assert_eq!(self.mounts(), Vec::<PathBuf>::new(), "mounts left");
    }

    /// After `peapod run` exited: nothing of the root's pods is left on the host.
    fn assert_no_leaks(&self) {
        let mut problems = Vec::new();
        let mounts = self.mounts();
        if !mounts.is_empty() {
            problems.push(format!("mounts left under the root: {mounts:?}"));
        }
        for sub in ["pods", "containers"] {
            let left = self.entries(sub);
            if !left.is_empty() {
                problems.push(format!("{sub}/ not empty: {left:?}"));
            }
        }
        let procs = self.processes();
        if !procs.is_empty() {
            problems.push(format!("processes of the root left: {procs:?}"));
        }
        let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        for (id, proc) in &observed.container_procs {
            if proc.alive() {
                problems.push(format!("process {} of container {id} still runs", proc.pid));
            }
        }
        for uid in &observed.pod_uids {
            let dirs: Vec<PathBuf> = pod_cgroup_dirs(uid)
                .into_iter()
                .filter(|d| d.exists())
                .collect();
            if !dirs.is_empty() {
                problems.push(format!("cgroups of pod {uid} left: {dirs:?}"));
            }
        }
        assert!(problems.is_empty(), "leaks:\n{}", problems.join("\n"));
    }

    /// Records the root's pod UIDs and running container processes as they are now.
    fn sample(root: &Path, observed: &Mutex<Observed>) {
        let uids: Vec<String> = std::fs::read_dir(root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut procs = Vec::new();
        for entry in std::fs::read_dir(root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            let Ok(text) = std::fs::read_to_string(entry.path().join("started.json")) else {
                continue;
            };
            let Some(pid) = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("pid")?.as_i64())
            else {
                continue;
            };
            let pid = pid as i32;
            // Only a process inside a peapod cgroup is the container's (not a reused PID).
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if let (true, Some(proc)) = (cgroup.contains("/peapod/pod"), Proc::now(pid)) {
                procs.push((id, proc));
            }
        }
        let ips: Vec<std::net::Ipv4Addr> = std::fs::read_dir(root.join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|bridge| {
                std::fs::read_dir(bridge.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
            .collect();
        let mut observed = observed.lock().unwrap_or_else(|e| e.into_inner());
        observed.pod_uids.extend(uids);
        observed.pod_ips.extend(ips);
        for (id, proc) in procs {
            observed.container_procs.entry(id).or_insert(proc);
        }
    }

    /// Kills what is left of the root and waits until it is gone.
    fn kill_leftovers(&self) {
        Self::sample(&self.root, &self.observed);
        let (uids, procs) = {
            let o = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            let procs: Vec<Proc> = o.container_procs.values().copied().collect();
            (o.pod_uids.clone(), procs)
        };
        let mut victims: Vec<Proc> = procs.into_iter().filter(Proc::alive).collect();
        for uid in &uids {
            for dir in pod_cgroup_dirs(uid) {
                victims.extend(cgroup_procs(&dir).into_iter().filter_map(Proc::now));
            }
        }
        victims.extend(
            self.processes()
                .into_iter()
                .filter_map(|(pid, _)| Proc::now(pid)),
        );
        for v in &victims {
            let _ = kill(Pid::from_raw(v.pid), Signal::SIGKILL);
        }
        let gone = poll_until(deadline_in(CLEANUP_TIMEOUT), || {
            victims.iter().all(|v| !v.alive()).then_some(())
        });
        if gone.is_none() {
            eprintln!(
                "cleanup: processes of {} survived SIGKILL",
                self.root.display()
            );
        }
        for uid in &uids {
            for dir in pod_cgroup_dirs(uid) {
                remove_cgroup_tree(&dir);
            }
        }
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        self.kill_leftovers();
        // Deepest first; lazily, so a busy mount cannot keep the tempdir alive.
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The tests need root: namespaces, mounts, cgroups.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "peapod's integration tests must run as root"
    );
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Processes (other than this one) whose command line mentions `root` or whose environment has
/// `PEAPOD_ROOT=<root>`.
pub fn processes_of(root: &Path) -> Vec<(i32, String)> {
    let root = root.display().to_string();
    let env_entry = format!("PEAPOD_ROOT={root}");
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let mentions = args
            .iter()
            .any(|a| a == &root || a.contains(&format!("{root}/")));
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let in_env = environ
            .split(|b| *b == 0)
            .any(|e| e == env_entry.as_bytes());
        if mentions || in_env {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// Every place a pod's cgroup can be: `/sys/fs/cgroup/<controller>/peapod/pod<uid>` (v1) and
/// `/sys/fs/cgroup/peapod/pod<uid>` (v2).
pub fn pod_cgroup_dirs(uid: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let pod = format!("pod{uid}");
    let mut dirs = vec![base.join("peapod").join(&pod)];
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dirs.push(entry.path().join("peapod").join(&pod));
        }
    }
    dirs
}

/// The PIDs in a cgroup directory and every cgroup below it.
fn cgroup_procs(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let text = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                todo.push(entry.path());
            }
        }
    }
    pids
}

/// Removes a cgroup directory and the (empty) cgroups below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The names in /sys/class/net: the host's network devices.
pub fn host_net_devices() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !is_pod_network_device(n))
        .collect()
}

/// The shared bridge and the pods' veths (`pp` + the pod IPv4 in 8 hex digits) come and go
/// with other tests running in parallel; a run's own veths are checked through its IPAM
/// records instead (`assert_no_leaks`: none left allocated under the root).
fn is_pod_network_device(n: &str) -> bool {
    // The peer end is briefly `pp<hex>p` on the host before it moves into the pod as `eth0`.
    let veth = n.strip_suffix('p').unwrap_or(n);
    n == "peapod0"
        || (veth.len() == 10
            && veth.starts_with("pp")
            && veth[2..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Which stream of `peapod run` a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<(Stream, String)>,
    /// Streams that reached end of file.
    closed: usize,
}

/// The lines `peapod run` printed so far, with a condvar to wait for more.
#[derive(Debug, Default)]
struct Collected {
    lines: Mutex<Lines>,
    more: Condvar,
}

impl Collected {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Samples the root (pod UIDs, container processes) while `peapod run` runs, so the leak
/// checks know what to look for after it exited.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// `peapod run -f <manifest>`, running in the background.
pub struct RunningPod {
    child: Child,
    root: PathBuf,
    observed: Arc<Mutex<Observed>>,
    output: Arc<Collected>,
    readers: Vec<JoinHandle<()>>,
    sampler: Option<Sampler>,
    net_devices: BTreeSet<String>,
    status: Option<ExitStatus>,
}

impl RunningPod {
    fn spawn(root: &TestRoot, manifest: &Path) -> RunningPod {
        let net_devices = host_net_devices();
        // A run's leak check looks for its own pods' veths: an address an earlier run of this
        // root released may belong to another test's pod by now.
        root.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pod_ips
            .clear();
        let mut child = root
            .command()
            .arg("run")
            .arg("-f")
            .arg(manifest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peapod run");
        let output = Arc::new(Collected::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(read_lines(out, Stream::Stdout, output.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(read_lines(err, Stream::Stderr, output.clone()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, path, observed) = (stop.clone(), root.root.clone(), root.observed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    TestRoot::sample(&path, &observed);
                    std::thread::sleep(POLL_INTERVAL);
                }
            })
        };
        RunningPod {
            child,
            root: root.root.clone(),
            observed: root.observed.clone(),
            output,
            readers,
            sampler: Some(Sampler { stop, thread }),
            net_devices,
            status: None,
        }
    }

    /// Waits until a line of stdout or stderr satisfies `pred`; returns it. Fails the test
    /// with the whole output when `deadline` passes or `peapod run` closed both streams.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, deadline: Instant) -> String {
        let mut lines = self.output.lock();
        loop {
            if let Some((_, line)) = lines.lines.iter().find(|(_, l)| pred(l)) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline || lines.closed == 2 {
                drop(lines);
                let why = if now >= deadline {
                    "timed out"
                } else {
                    "peapod run closed its output"
                };
                panic!("{why} waiting for a line\n{}", self.transcript());
            }
            lines = self
                .output
                .more
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the exact line `line`.
    pub fn wait_for(&self, line: &str, timeout: Duration) -> String {
        self.wait_for_line(|l| l == line, deadline_in(timeout))
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&self) {
        self.signal(Signal::SIGINT);
    }

    /// Sends `signal` to `peapod run`.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal peapod run");
    }

    /// Waits for `peapod run` to exit and for its output to be read to the end. Fails the test
    /// (after killing it) when `deadline` passes.
    pub fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let child = &mut self.child;
        let status = poll_until(deadline, || child.try_wait().expect("wait for peapod run"));
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("peapod run did not exit in time\n{}", self.transcript());
        };
        self.status = Some(status);
        self.stop_sampler();
        // The pipes close when the last holder exits: peapod run, not its monitors.
        let output = self.output.clone();
        let closed = poll_until(deadline_in(Duration::from_secs(5)), || {
            (output.lock().closed == 2).then_some(())
        });
        assert!(
            closed.is_some(),
            "peapod run exited but its stdout/stderr stayed open (inherited by a child?)\n{}",
            self.transcript()
        );
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// The exit code, after [`RunningPod::wait_exit`].
    pub fn exit_code(&mut self, deadline: Instant) -> i32 {
        let status = self.wait_exit(deadline);
        status.code().unwrap_or_else(|| {
            panic!(
                "peapod run was killed by a signal: {status}\n{}",
                self.transcript()
            )
        })
    }

    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.output
            .lock()
            .lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.lines(Stream::Stdout)
    }

    pub fn stderr(&self) -> Vec<String> {
        self.lines(Stream::Stderr)
    }

    /// The log lines of one container, without their `pod/container | ` prefix.
    pub fn container_lines(&self, pod: &str, container: &str) -> Vec<String> {
        let prefix = format!("{pod}/{container} | ");
        self.stdout()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Everything printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        let lines = self.output.lock();
        let mut text = String::from("--- peapod run output (1 = stdout, 2 = stderr):\n");
        for (stream, line) in &lines.lines {
            let n = if *stream == Stream::Stdout { 1 } else { 2 };
            text.push_str(&format!("{n}: {line}\n"));
        }
        text
    }

    /// The container processes seen while the pod ran.
    pub fn container_procs(&self) -> Vec<Proc> {
        let o = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        o.container_procs.values().copied().collect()
    }

    /// The pod UIDs seen while the pod ran.
    pub fn pod_uids(&self) -> Vec<String> {
        let o = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        o.pod_uids.iter().cloned().collect()
    }

    /// Records the root's state now (also done continuously in the background).
    pub fn sample(&self) {
        TestRoot::sample(&self.root, &self.observed);
    }

    /// After exit: no mount under the root, no pod or container directory, no process of the
    /// root, every container process seen is gone, every pod's cgroups are gone, and the host
    /// has the same network devices as before.
    pub fn assert_no_leaks(&self, root: &TestRoot) {
        assert!(self.status.is_some(), "assert_no_leaks before wait_exit");
        assert!(
            !self.pod_uids().is_empty(),
            "no pod directory was ever seen under {}/pods\n{}",
            self.root.display(),
            self.transcript()
        );
        root.assert_no_leaks();
        let ipam = self.root.join("ipam");
        let allocated: Vec<String> = std::fs::read_dir(&ipam)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|bridge| bridge.path().is_dir())
            .flat_map(|bridge| {
                std::fs::read_dir(bridge.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect();
        assert!(
            allocated.is_empty(),
            "pod addresses still allocated under {}: {allocated:?}",
            ipam.display()
        );
        // The run's own veths (named after its pod addresses) are gone; other network devices
        // are not compared, since other programs on the host may add or remove theirs.
        let ips: Vec<std::net::Ipv4Addr> = self
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pod_ips
            .iter()
            .copied()
            .collect();
        let left: Vec<String> = ips
            .iter()
            .flat_map(|ip| {
                let host = format!("pp{:08x}", u32::from(*ip));
                [host.clone(), format!("{host}p")]
            })
            .filter(|name| Path::new("/sys/class/net").join(name).exists())
            // Once released, an address may go straight to another run on the shared bridge:
            // a device of that name is ours only if no other root has reserved the address.
            .filter(|name| {
                let hex = name.trim_start_matches("pp").trim_end_matches('p');
                let ip = u32::from_str_radix(hex, 16).map(std::net::Ipv4Addr::from);
                let owner = ip.ok().and_then(|ip| {
                    std::fs::read_to_string(format!("/run/peapod/peapod0.ips/{ip}")).ok()
                });
                owner.is_none_or(|o| o.starts_with(&*self.root.to_string_lossy()))
            })
            .collect();
        assert!(left.is_empty(), "network devices of the run left: {left:?}");
    }

    fn stop_sampler(&mut self) {
        if let Some(s) = self.sampler.take() {
            s.stop.store(true, Ordering::Relaxed);
            let _ = s.thread.join();
        }
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stop_sampler();
    }
}

/// Reads `pipe` line by line into `output` on a thread of its own.
fn read_lines(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    output: Arc<Collected>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches('\n').to_string();
                    output.lock().lines.push((stream, line));
                    output.more.notify_all();
                }
            }
        }
        output.lock().closed += 1;
        output.more.notify_all();
    })
}

impl RunningPod {
    /// Every line printed so far, both streams, in the order they were read.
    pub fn output(&self) -> Vec<(Stream, String)> {
        self.output.lock().lines.clone()
    }

    /// Waits until `n` lines (of either stream) satisfy `pred`; returns the `n`th. Fails the
    /// test with the whole output when `deadline` passes or `peapod run` closed both streams.
    pub fn wait_for_nth_line(
        &self,
        pred: impl Fn(&str) -> bool,
        n: usize,
        deadline: Instant,
    ) -> String {
        assert!(n >= 1, "lines are counted from 1");
        let mut lines = self.output.lock();
        loop {
            if let Some((_, line)) = lines.lines.iter().filter(|(_, l)| pred(l)).nth(n - 1) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline || lines.closed == 2 {
                drop(lines);
                let why = if now >= deadline {
                    "timed out"
                } else {
                    "peapod run closed its output"
                };
                panic!("{why} waiting for line number {n}\n{}", self.transcript());
            }
            lines = self
                .output
                .more
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
