//! Streaming sessions leave nothing behind in the daemon (issue 6, "bad input"): after many
//! execs (WebSocket and SPDY, with and without a terminal), attaches and port-forwards, some of
//! them cut off mid-stream by killing kubectl, the daemon's open file descriptors
//! (`/proc/PID/fd`) and threads (`/proc/PID/task`) come back to what they were, no helper
//! process is left, and no process started in the container outlives its session.
//!
//! Starts its own daemon on a temporary root; ends by deleting the pods through kubectl,
//! stopping the daemon and checking nothing of the root is left. Runs as root.

use peapod_e2e::terminal::{drive, Step};
use peapod_e2e::{
    free_port, poll_every, poll_until, root_tempdir, run_with_input, Daemon, Leftovers, Running,
    COMMAND_TIMEOUT, LATEST, POD_TIMEOUT,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: busybox
    stdin: true
    command:
    - sh
    - -c
    - >-
      trap 'exit 0' TERM;
      mkdir -p /www && echo hello > /www/index.html &&
      dd if=/dev/zero of=/www/big bs=1M count=4 2>/dev/null &&
      httpd -f -p 8000 -h /www & cat > /dev/null & wait
"#;

/// How long the daemon may take to close what a session left (tokio's idle blocking threads
/// linger 10 s).
const SETTLE: Duration = Duration::from_secs(60);

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The daemon's child processes (the `__exec` and `__attach` helpers while they run).
fn children(pid: i32) -> Vec<String> {
    // Each thread lists the children it started.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let list: String = tasks
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    list.split_whitespace()
        .map(|p| peapod_e2e::cmdline(p.parse().unwrap_or(0)))
        .filter(|c| c.contains("__exec") || c.contains("__attach"))
        .collect()
}

fn run(d: &Daemon, minor: u32, args: &[&str], input: Option<&[u8]>) -> peapod_e2e::Out {
    let (cmd, what) = d.kubectl_command(minor, args);
    let out = run_with_input(cmd, what, COMMAND_TIMEOUT, input.map(<[u8]>::to_vec))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.timed_out, "timed out\n{out}");
    out
}

/// What runs in the container besides its own processes (the shell, httpd, cat).
fn strays(d: &Daemon) -> Vec<String> {
    let ps = run(d, LATEST, &["exec", "web", "--", "ps", "-o", "args"], None);
    ps.stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("sleep") || l.starts_with("sh -c echo"))
        .map(str::to_string)
        .collect()
}

/// Runs `kubectl args` in the background until `ready` says the session is under way, then
/// kills kubectl (SIGKILL: no goodbye on the wire).
fn cut_off(d: &Daemon, minor: u32, args: &[&str], mut ready: impl FnMut() -> bool) {
    let (cmd, what) = d.kubectl_command(minor, args);
    let (mut session, _lines) = Running::spawn(cmd, what.clone());
    let up = poll_until(Instant::now() + COMMAND_TIMEOUT, || ready().then_some(()));
    let err = session.stop();
    assert!(up.is_some(), "{what} never got going\n{err}\n{}", d.log());
}

fn sessions(d: &Daemon) {
    for minor in [27, LATEST] {
        // Whole sessions.
        for _ in 0..5 {
            assert!(run(d, minor, &["exec", "web", "--", "true"], None)
                .status
                .success());
        }
        let out = run(
            d,
            minor,
            &["exec", "-i", "web", "--", "wc", "-c"],
            Some(&[7u8; 100_000]),
        );
        assert_eq!(out.stdout.trim(), "100000", "{out}");
        let out = run(d, minor, &["exec", "web", "--", "sh", "-c", "exit 4"], None);
        assert_eq!(out.status.code(), Some(4), "{out}");
        let out = run(d, minor, &["exec", "web", "-c", "nope", "--", "true"], None);
        assert!(!out.status.success(), "{out}");
        let s = drive(
            &d.kubectl_command(minor, &["exec", "-it", "web", "--", "sh", "-c", "tty"])
                .0,
            24,
            80,
            &[],
            COMMAND_TIMEOUT,
        );
        assert_eq!(s.code, Some(0), "{s:?}");

        // Cut off mid-stream: the process in the container must go too.
        cut_off(d, minor, &["exec", "web", "--", "sleep", "1001"], || {
            strays(d).iter().any(|s| s == "sleep 1001")
        });
        let s = drive(
            &d.kubectl_command(
                minor,
                &[
                    "exec",
                    "-it",
                    "web",
                    "--",
                    "sh",
                    "-c",
                    "echo rea''dy; sleep 1002",
                ],
            )
            .0,
            24,
            80,
            &[Step::Expect("ready"), Step::Signal(9)],
            COMMAND_TIMEOUT,
        );
        assert_eq!(s.failed, None, "{s:?}");
        cut_off(d, minor, &["attach", "-i", "web"], || {
            // Once the helper is there, the attach is up.
            children(d.pid().unwrap_or(0))
                .iter()
                .any(|c| c.contains("__attach"))
        });

        // Port-forward: requests, a download cut off halfway, then kubectl killed.
        let port = free_port();
        let (cmd, what) =
            d.kubectl_command(minor, &["port-forward", "pod/web", &format!("{port}:8000")]);
        let (mut forward, lines) = Running::spawn(cmd, what.clone());
        let listening = lines.recv_timeout(COMMAND_TIMEOUT).unwrap_or_default();
        assert!(
            listening.contains("Forwarding from"),
            "{what}: {listening}\n{}",
            forward.stop()
        );
        for _ in 0..3 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
                .expect("request");
            let mut body = String::new();
            s.read_to_string(&mut body).expect("response");
            assert!(body.ends_with("hello\n"), "{body}");
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /big HTTP/1.0\r\n\r\n").expect("request");
        let mut some = [0u8; 64 * 1024];
        s.read_exact(&mut some).expect("part of the download");
        drop(s);
        forward.stop();
    }
}

#[test]
fn sessions_leave_no_descriptors_threads_or_processes() {
    let mut d = Daemon::new(root_tempdir("peapod-leak-"), Leftovers::MentioningDir);
    d.serve(&[]);
    let manifest = d.dir.path().join("pod.yaml");
    std::fs::write(&manifest, POD).expect("manifest");
    let out = run(
        &d,
        LATEST,
        &["apply", "-f", manifest.to_str().expect("utf-8")],
        None,
    );
    assert!(out.status.success(), "{out}");
    let serving = poll_until(Instant::now() + POD_TIMEOUT, || {
        let out = run(
            &d,
            LATEST,
            &[
                "exec",
                "web",
                "--",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8000/index.html",
            ],
            None,
        );
        (out.stdout == "hello\n").then_some(())
    });
    assert!(serving.is_some(), "pod not serving\n{}", d.log());
    let pid = d.pid().expect("daemon pid");
    let (fds, tasks) = (format!("/proc/{pid}/fd"), format!("/proc/{pid}/task"));

    // One round first, so what the daemon sets up once (thread pools, TLS sessions, caches)
    // is in the baseline; then the baseline once that round's own leftovers are gone.
    sessions(&d);
    let settled = poll_until(Instant::now() + SETTLE, || {
        children(pid).is_empty().then_some(())
    });
    assert!(settled.is_some(), "helpers left: {:?}", children(pid));
    // Settled: the same counts twice, half a second apart.
    let mut previous = (usize::MAX, usize::MAX);
    let baseline = poll_every(Duration::from_millis(500), Instant::now() + SETTLE, || {
        let sample = (count(fds.clone()), count(tasks.clone()));
        let same = sample == previous;
        previous = sample;
        same.then_some(sample)
    })
    .expect("the daemon settles");

    for _ in 0..3 {
        sessions(&d);
    }
    let mut now = (0, 0);
    let back = poll_until(Instant::now() + SETTLE, || {
        now = (count(fds.clone()), count(tasks.clone()));
        (now.0 <= baseline.0 && now.1 <= baseline.1 && children(pid).is_empty()).then_some(())
    });
    eprintln!("daemon descriptors, threads: {baseline:?} before, {now:?} after");
    assert!(
        back.is_some(),
        "daemon: {now:?} (descriptors, threads) after the sessions, {baseline:?} before; helpers: {:?}\n{}",
        children(pid),
        d.log()
    );
    let left = poll_until(Instant::now() + SETTLE, || {
        let s = strays(&d);
        s.is_empty().then_some(())
    });
    assert!(left.is_some(), "left in the container: {:?}", strays(&d));
    d.finish();
}
