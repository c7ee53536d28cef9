//! `kubectl port-forward` (1.27, 1.29: plain SPDY; 1.31, 1.33: SPDY tunnelled in a WebSocket)
//! and `kubectl exec` over SPDY (1.27, 1.29, the versions that speak nothing else) against
//! `peapod serve` on a temporary root and a free loopback port. The pod serves files with busybox
//! `httpd` on 8000 and answers the SHA-256 of whatever it is sent on 8001; nothing listens on
//! 8002.
//!
//! A connection to a port nothing listens on is reported by kubectl, which then gives up the
//! whole forward ("lost connection to pod") as client-go has since 1.23, whatever the server:
//! the test checks the report, the exit, and that other forwards and new ones still work.
//!
//! Each test ends by deleting the pod through kubectl, waiting until it is gone, stopping the
//! daemon, and failing if any process that mentions the temporary root is still there (killed as
//! a safety net, also when a test fails). The binary is `PEAPOD_BIN`, else
//! `<workspace>/target/debug/peapod`; the image `images/out/busybox.oci.tar`, or
//! `$PEAPOD_TEST_IMAGES/busybox.oci.tar`. Runs as root.

use peapod_e2e::{
    free_port, pod_cgroup_processes, poll_until, root_tempdir, run_with_input, Daemon, Leftovers,
    Out, Running, COMMAND_TIMEOUT, LATEST, POD_TIMEOUT,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(30);
const BIG: usize = 10 * 1024 * 1024;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: busybox
    command:
    - sh
    - -c
    - >-
      trap 'exit 0' TERM;
      mkdir -p /www && echo hello-from-web > /www/index.html &&
      dd if=/dev/urandom of=/www/big bs=1M count=10 2>/dev/null &&
      httpd -f -p 8000 -h /www & nc -ll -p 8001 -e sha256sum & wait
"#;

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    first_word(&String::from_utf8_lossy(&out.stdout))
}

fn first_word(text: &str) -> String {
    text.split_whitespace().next().unwrap_or("").to_string()
}

/// Runs `cmd` with `input` on its stdin, killing it after `COMMAND_TIMEOUT`.
fn run(cmd: Command, what: String, input: Option<Vec<u8>>) -> Out {
    let out = run_with_input(cmd, what, COMMAND_TIMEOUT, input).unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.timed_out, "timed out\n{out}");
    out
}

// ---------------------------------------------------------------------------------------------
// The daemon and kubectl.

/// A [`Daemon`] whose leftovers are any process that mentions its temporary directory.
struct Cluster {
    d: Daemon,
}

impl Cluster {
    /// `peapod serve` with the busybox image loaded and the pod `web` running and listening.
    fn start() -> Cluster {
        let dir = root_tempdir("peapod-pf-");
        let mut c = Cluster {
            d: Daemon::new(dir, Leftovers::MentioningDir),
        };
        c.d.serve(&[]);
        c.start_pod();
        c
    }

    fn start_pod(&self) {
        let manifest = self.d.dir.path().join("pod.yaml");
        std::fs::write(&manifest, POD).expect("manifest");
        let path = manifest.to_str().expect("utf-8 path");
        self.ok(LATEST, &["apply", "-f", path]);
        let probe =
            "wget -q -O /dev/null http://127.0.0.1:8000/big && netstat -ltn | grep -q :8001";
        let up = poll_until(Instant::now() + POD_TIMEOUT, || {
            let out = self.kubectl(LATEST, &["exec", "web", "--", "sh", "-c", probe], None);
            out.status.success().then_some(())
        });
        if up.is_none() {
            let describe = self.kubectl(LATEST, &["describe", "pod", "web"], None);
            panic!("pod web not serving\n{describe}\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        self.d.log()
    }

    fn command(&self, minor: u32, args: &[&str]) -> (Command, String) {
        self.d.kubectl_command(minor, args)
    }

    fn kubectl(&self, minor: u32, args: &[&str], input: Option<Vec<u8>>) -> Out {
        let (cmd, what) = self.command(minor, args);
        run(cmd, what, input)
    }

    fn ok(&self, minor: u32, args: &[&str]) -> String {
        let out = self.kubectl(minor, args, None);
        assert!(out.status.success(), "{out}\n{}", self.log());
        out.stdout
    }

    /// `kubectl port-forward pod/web LOCAL:REMOTE...`, once it says it listens on every port.
    fn forward(&self, minor: u32, ports: &[(u16, u16)]) -> Running {
        let mut args = vec!["port-forward".to_string(), "pod/web".to_string()];
        args.extend(ports.iter().map(|(l, r)| format!("{l}:{r}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (cmd, what) = self.command(minor, &args);
        let (mut forward, lines) = Running::spawn(cmd, what);
        let deadline = Instant::now() + Duration::from_secs(30);
        for (local, remote) in ports {
            let want = format!("Forwarding from 127.0.0.1:{local} -> {remote}");
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(line) if line == want => break,
                    Ok(_) => {}
                    Err(_) => {
                        let err = forward.stop();
                        panic!("{}: no {want:?}\n{err}\n{}", forward.what, self.log());
                    }
                }
            }
        }
        forward
    }

    /// Deletes the pod through kubectl, waits until it is gone, stops the daemon, and fails on
    /// anything of the root still running.
    fn finish(mut self) {
        self.d.set_finished();
        let uid = self.ok(
            LATEST,
            &["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"],
        );
        self.ok(
            LATEST,
            &["delete", "pod", "web", "--wait=true", "--timeout=60s"],
        );
        let gone = poll_until(Instant::now() + POD_TIMEOUT, || {
            let out = self.kubectl(LATEST, &["get", "pods", "-o", "name"], None);
            (out.status.success() && out.stdout.trim().is_empty()).then_some(())
        });
        assert!(gone.is_some(), "pod web still listed\n{}", self.log());
        let stopped = self.d.stop().ok();
        let mut left = self.d.sweep();
        left.extend(
            pod_cgroup_processes(&uid)
                .into_iter()
                .map(|p| format!("process {p} in the pod's cgroup")),
        );
        let log = self.log();
        assert!(stopped.is_some_and(|s| s.success()), "daemon exit\n{log}");
        assert!(left.is_empty(), "left behind: {left:#?}\n{log}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.d.is_finished() {
            return;
        }
        if self.d.is_running() {
            let _ = self.kubectl(LATEST, &["delete", "pod", "web", "--wait=false"], None);
        }
        let _ = self.d.stop();
        self.d.sweep();
    }
}

// ---------------------------------------------------------------------------------------------
// Talking through a forwarded port.

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to kubectl");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

/// `GET path` over HTTP/1.0; the body, after checking for 200.
fn http_get(port: u16, path: &str) -> Vec<u8> {
    let mut s = connect(port);
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: web\r\n\r\n").as_bytes())
        .expect("send request");
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("read response");
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&response)));
    let head = String::from_utf8_lossy(&response[..end]);
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    response[end + 4..].to_vec()
}

/// Sends `data` to the pod's SHA-256 service, half-closes, returns its answer.
fn pod_sha256(port: u16, data: &[u8]) -> String {
    let mut s = connect(port);
    s.write_all(data).expect("upload");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read sum");
    first_word(&answer)
}

fn port_forward_with(c: &Cluster, minor: u32, big_sum: &str) {
    let v = format!("kubectl 1.{minor}");
    let (web, sink) = (free_port(), free_port());
    let mut good = c.forward(minor, &[(web, 8000), (sink, 8001)]);
    for _ in 0..2 {
        assert_eq!(http_get(web, "/index.html"), b"hello-from-web\n", "{v}");
    }
    let concurrent: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || http_get(web, "/index.html")))
        .collect();
    for t in concurrent {
        assert_eq!(t.join().expect("GET thread"), b"hello-from-web\n", "{v}");
    }
    assert_eq!(sha256(&http_get(web, "/big")), big_sum, "{v}: download");
    let upload = noise(BIG);
    assert_eq!(pod_sha256(sink, &upload), sha256(&upload), "{v}: upload");

    // Nothing listens on 8002: kubectl prints the kubelet-style error and gives up.
    let refused = free_port();
    let mut bad = c.forward(minor, &[(refused, 8002)]);
    let mut s = connect(refused);
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut nothing = Vec::new();
    let _ = s.read_to_end(&mut nothing);
    assert!(nothing.is_empty(), "{v}: got {nothing:?}");
    let (status, stderr) = bad
        .exited(Instant::now() + IO_TIMEOUT)
        .unwrap_or_else(|| panic!("{v}: kubectl kept running after the refused connection"));
    assert!(!status.success(), "{v}: {status}");
    assert!(
        stderr.contains("error forwarding port 8002 to pod web")
            && stderr.contains("connect: connection refused")
            && stderr.contains("lost connection to pod"),
        "{v}: {stderr}"
    );

    // The other forward was not disturbed, and a new one works.
    assert_eq!(http_get(web, "/index.html"), b"hello-from-web\n", "{v}");
    let err = good.stop();
    assert!(!err.contains("error"), "{v}: {err}");
    let again = free_port();
    let _fresh = c.forward(minor, &[(again, 8000)]);
    assert_eq!(http_get(again, "/index.html"), b"hello-from-web\n", "{v}");
}

#[test]
fn port_forward() {
    let c = Cluster::start();
    let big_sum = first_word(&c.ok(LATEST, &["exec", "web", "--", "sha256sum", "/www/big"]));
    for minor in [27, 29, 31, 33] {
        port_forward_with(&c, minor, &big_sum);
    }
    c.finish();
}

#[test]
fn exec_over_spdy() {
    let c = Cluster::start();
    let big_sum = first_word(&c.ok(LATEST, &["exec", "web", "--", "sha256sum", "/www/big"]));
    for minor in [27, 29] {
        let v = format!("kubectl 1.{minor}");
        let out = c.kubectl(
            minor,
            &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"],
            None,
        );
        assert!(out.status.success(), "{v}: {out}");
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("out\n", "err\n"),
            "{v}"
        );

        let out = c.kubectl(minor, &["exec", "web", "--", "sh", "-c", "exit 3"], None);
        assert_eq!(out.status.code(), Some(3), "{v}: {out}");
        assert!(
            out.stderr.contains("command terminated with exit code 3"),
            "{v}: {out}"
        );

        let input = b"piped-in\nsecond line\n".to_vec();
        let out = c.kubectl(minor, &["exec", "-i", "web", "--", "cat"], Some(input));
        assert!(out.status.success(), "{v}: {out}");
        assert_eq!(out.stdout, "piped-in\nsecond line\n", "{v}");

        // 10 MiB each way.
        let (mut cmd, what) = c.command(minor, &["exec", "web", "--", "cat", "/www/big"]);
        let raw = cmd.stdin(Stdio::null()).output().expect(&what);
        assert!(raw.status.success(), "{v}: {raw:?}");
        assert_eq!(sha256(&raw.stdout), big_sum, "{v}: stdout bytes");
        let upload = noise(BIG);
        let out = c.kubectl(
            minor,
            &["exec", "-i", "web", "--", "sha256sum"],
            Some(upload.clone()),
        );
        assert_eq!(first_word(&out.stdout), sha256(&upload), "{v}: {out}");

        let out = c.kubectl(minor, &["exec", "web", "-c", "nope", "--", "true"], None);
        assert!(
            !out.status.success() && out.stderr.contains("nope"),
            "{v}: {out}"
        );
    }
    c.finish();
}
