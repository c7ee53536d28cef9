//! Running the built `peapod-init` as PID 1 of a new PID namespace (`unshare --fork --pid
//! --mount-proc`, util-linux) and looking at that namespace from the host's /proc.
//!
//! Every wait polls with a deadline. Dropping an [`Init`] kills the namespace's PID 1, which
//! makes the kernel kill everything else in it, so no test leaves a process behind.

#![allow(dead_code)] // each test binary uses a different part

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const INIT: &str = env!("CARGO_BIN_EXE_peapod-init");

/// Whether the root tests can run here; prints why not.
pub fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (a new PID namespace)");
        return false;
    }
    if Command::new("unshare")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: needs unshare (util-linux)");
        return false;
    }
    true
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process seen in /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub cmdline: String,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    Some(Proc {
        pid,
        ppid,
        state,
        cmdline: cmdline.trim_end().to_owned(),
    })
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_ns(pid: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// `peapod-init ARGS` running as PID 1 of its own PID namespace.
pub struct Init {
    unshare: Child,
    /// Init's pid as the host sees it.
    pub pid: i32,
    ns: std::path::PathBuf,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    exit: Option<i32>,
}

impl Init {
    pub fn start(args: &[&str]) -> Init {
        let mut unshare = Command::new("unshare")
            .args(["--fork", "--pid", "--mount-proc", "--kill-child", INIT])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let (stdout, out_reader) = collect(unshare.stdout.take().expect("stdout"));
        let (stderr, err_reader) = collect(unshare.stderr.take().expect("stderr"));
        let parent = unshare.id() as i32;
        // Init, or unshare's exit when init was quicker than this look.
        let found = poll(Duration::from_secs(5), || {
            if let Ok(Some(status)) = unshare.try_wait() {
                return Some(Err(status.code().unwrap_or(-1)));
            }
            all_pids().into_iter().find_map(|pid| {
                let p = read_proc(pid)?;
                let ns = pid_ns(pid)?;
                (p.ppid == parent
                    && p.cmdline.contains("peapod-init")
                    && Some(&ns) != pid_ns(parent).as_ref())
                .then_some(Ok((pid, ns)))
            })
        });
        let (pid, ns, exit) = match found {
            Some(Ok((pid, ns))) => (pid, ns, None),
            Some(Err(code)) => (0, Default::default(), Some(code)),
            None => {
                let _ = unshare.kill();
                let _ = unshare.wait();
                panic!("peapod-init did not start under unshare");
            }
        };
        Init {
            unshare,
            pid,
            ns,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            exit,
        }
    }

    /// Sends `signal` to init from the host.
    pub fn signal(&self, signal: Signal) {
        assert!(self.pid > 1, "init has already exited");
        kill(Pid::from_raw(self.pid), signal).expect("signal init");
    }

    /// Waits up to `timeout` for init to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        if self.exit.is_none() {
            let unshare = &mut self.unshare;
            self.exit = poll(timeout, || {
                let status = unshare.try_wait().ok()??;
                Some(status.code().unwrap_or(-1))
            });
        }
        // Once init is gone its pipes close: let the readers copy the last bytes.
        let readers = &self.readers;
        poll(Duration::from_secs(2), || {
            readers.iter().all(|r| r.is_finished()).then_some(())
        });
        self.exit
    }

    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Waits until init's stdout contains `needle`.
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) -> bool {
        poll(timeout, || self.stdout().contains(needle).then_some(())).is_some()
    }

    /// The processes of init's PID namespace (init included), zombies too.
    pub fn processes(&self) -> Vec<Proc> {
        all_pids()
            .into_iter()
            .filter(|&pid| pid_ns(pid).as_ref() == Some(&self.ns))
            .filter_map(read_proc)
            .collect()
    }

    /// Everything init and its programs printed, for assertion messages.
    pub fn output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if self.pid > 1 && self.unshare.try_wait().ok().flatten().is_none() {
            // PID 1 dying takes the whole namespace with it.
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

type Reader = (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>);

fn collect(mut pipe: impl Read + Send + 'static) -> Reader {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&buf);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.lock()
                .expect("output lock")
                .extend_from_slice(&chunk[..n]);
        }
    });
    (buf, reader)
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().expect("output lock")).into_owned()
}

/// A TCP port on the loopback address that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// `GET path` over HTTP/1.0 on the loopback address: the body of a 200 response.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}
