//! The interactive half of kubectl against `peapod serve` (issue 6): `exec -it` on a terminal
//! (WebSocket for kubectl 1.30+, SPDY before), `attach` (`-i`, `-it`, across a daemon restart),
//! `run -it --rm`, `cp` both ways. kubectl runs on a
//! pseudo-terminal made by a small Python driver (`peapod_e2e::terminal`), which sets the
//! terminal's size, types and waits for output under deadlines.
//!
//! Each test starts its own daemon on a temporary root and ends by deleting the pods through
//! kubectl, stopping the daemon and failing on any process that mentions the root. The binary
//! is `PEAPOD_BIN`, else `<workspace>/target/debug/peapod`; the image
//! `images/out/busybox.oci.tar`, or `$PEAPOD_TEST_IMAGES/busybox.oci.tar`. Runs as root.

use peapod_e2e::terminal::{drive, Session, Step};
use peapod_e2e::{
    poll_until, root_tempdir, run_with_input, Daemon, Leftovers, Out, COMMAND_TIMEOUT, LATEST,
    POD_TIMEOUT,
};
use std::process::Command;
use std::time::{Duration, Instant};

const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

use peapod_e2e::pods::SHELL_POD as SHELL;

struct Cluster {
    d: Daemon,
}

impl Cluster {
    /// `peapod serve` with the pods of `manifest` created and Ready.
    fn start(manifest: &str) -> Cluster {
        let dir = root_tempdir("peapod-tty-");
        let mut c = Cluster {
            d: Daemon::new(dir, Leftovers::MentioningDir),
        };
        c.d.serve(&[]);
        let path = c.d.dir.path().join("pods.yaml");
        std::fs::write(&path, manifest).expect("manifest");
        c.ok(LATEST, &["apply", "-f", path.to_str().expect("utf-8 path")]);
        let ready = poll_until(Instant::now() + POD_TIMEOUT, || {
            let out = c.kubectl(
                LATEST,
                &[
                    "wait",
                    "--for=condition=Ready",
                    "pods",
                    "--all",
                    "--timeout=5s",
                ],
                None,
            );
            out.status.success().then_some(())
        });
        if ready.is_none() {
            let describe = c.kubectl(LATEST, &["describe", "pods"], None);
            panic!("pods not ready\n{describe}\n{}", c.d.log());
        }
        c
    }

    fn command(&self, minor: u32, args: &[&str]) -> Command {
        self.d.kubectl_command(minor, args).0
    }

    fn kubectl(&self, minor: u32, args: &[&str], input: Option<Vec<u8>>) -> Out {
        let (cmd, what) = self.d.kubectl_command(minor, args);
        let out =
            run_with_input(cmd, what, COMMAND_TIMEOUT, input).unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.timed_out, "timed out\n{out}");
        out
    }

    fn ok(&self, minor: u32, args: &[&str]) -> String {
        let out = self.kubectl(minor, args, None);
        assert!(out.status.success(), "{out}\n{}", self.d.log());
        out.stdout
    }

    /// kubectl 1.`minor` with `args` on a terminal of `rows` x `cols`, through `steps`.
    fn on_terminal(&self, minor: u32, args: &[&str], size: (u16, u16), steps: &[Step]) -> Session {
        drive(
            &self.command(minor, args),
            size.0,
            size.1,
            steps,
            SESSION_TIMEOUT,
        )
    }

    fn finish(mut self) {
        self.d.finish();
    }
}

/// `exec -it` gets a terminal made in the container: `tty` names it, `stty size` shows the
/// client's size from the start, and the exit code comes back.
#[test]
fn exec_with_a_terminal_every_version() {
    let c = Cluster::start(SHELL);
    for minor in 27..=33 {
        let v = format!("kubectl 1.{minor}");
        let s = c.on_terminal(
            minor,
            &[
                "exec",
                "-it",
                "shell",
                "--",
                "sh",
                "-c",
                "tty; stty size; exit 3",
            ],
            (40, 100),
            &[],
        );
        assert_eq!(s.failed, None, "{v}: {s:?}\n{}", c.d.log());
        assert!(s.output.contains("/dev/pts/"), "{v}: {s:?}");
        assert!(s.output.contains("40 100"), "{v}: {s:?}");
        assert_eq!(s.code, Some(3), "{v}: {s:?}");
    }
    c.finish();
}

/// An interactive shell: keystrokes, a window resize reaching the process, Ctrl-C interrupting
/// the foreground job (the terminal is the shell's controlling terminal), `exit`.
#[test]
fn exec_terminal_session() {
    let c = Cluster::start(SHELL);
    // 1.27 speaks SPDY (a `resize` stream), 1.33 WebSocket (channel 4).
    for minor in [27, LATEST] {
        let v = format!("kubectl 1.{minor}");
        let s = c.on_terminal(
            minor,
            &["exec", "-it", "shell", "--", "sh"],
            (30, 90),
            &[
                Step::Expect("# "),
                Step::Send("stty size\r"),
                Step::Expect("30 90"),
                Step::Resize(50, 120),
                Step::SendUntil("stty size\r", "50 120"),
                // ^C once the shell runs the job (again until the prompt is back: the job may
                // not be the terminal's foreground yet).
                Step::Send("echo slee$((1+1))ping; sleep 1000\r"),
                Step::Expect("slee2ping"),
                Step::SendUntil("\x03", "# "),
                Step::SendUntil("echo after-$((6*7))\r", "after-42"),
                Step::Send("exit 7\r"),
            ],
        );
        assert_eq!(s.failed, None, "{v}: {s:?}\n{}", c.d.log());
        assert_eq!(s.code, Some(7), "{v}: {s:?}");
    }
    // No `sleep` is left behind by the interrupted job.
    let ps = c.ok(LATEST, &["exec", "shell", "--", "ps", "-o", "args"]);
    assert!(!ps.lines().any(|l| l.trim() == "sleep 1000"), "{ps}");
    c.finish();
}

/// A pod named `name` whose container reads stdin (`stdinOnce`: it ends with the first attached
/// client's stdin) and answers every line.
fn talker(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  containers:
  - name: talk
    image: busybox
    stdin: true
    stdinOnce: true
    command: [sh, -c, "while read x; do echo got $x; done; echo stdin closed"]
"#
    )
}

/// `attach -i` with piped input reaches the container's stdin (kept by its monitor), the
/// answers come back, and the attach ends when the container does.
#[test]
fn attach_with_piped_stdin_every_version() {
    let manifest: Vec<String> = (27..=33).map(|m| talker(&format!("talk-{m}"))).collect();
    let c = Cluster::start(&manifest.join("---\n"));
    for minor in 27..=33 {
        let v = format!("kubectl 1.{minor}");
        let pod = format!("talk-{minor}");
        let out = c.kubectl(
            minor,
            &["attach", "-i", &pod],
            Some(b"hello\nworld\n".to_vec()),
        );
        assert!(out.status.success(), "{v}: {out}\n{}", c.d.log());
        assert!(
            out.stdout.contains("got hello\ngot world\nstdin closed\n"),
            "{v}: {out}"
        );
        let phase = poll_until(Instant::now() + POD_TIMEOUT, || {
            let phase = c.ok(
                LATEST,
                &["get", "pod", &pod, "-o", "jsonpath={.status.phase}"],
            );
            (phase == "Succeeded").then_some(phase)
        });
        assert!(phase.is_some(), "{v}: {pod} did not succeed\n{}", c.d.log());
    }
    c.finish();
}

/// `attach` without `-i` to a container without stdin streams its output as it comes, stdout
/// and stderr apart; the monitor's attach socket survives a daemon restart.
#[test]
fn attach_streams_output_across_a_daemon_restart() {
    let ticker = r#"apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  containers:
  - name: tick
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; i=0; while :; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done"]
"#;
    let mut c = Cluster::start(&format!("{ticker}---\n{}", talker("talk")));
    for round in ["before", "after"] {
        if round == "after" {
            let status = c.d.stop().expect("stop the daemon");
            assert!(status.success(), "daemon exit {status}\n{}", c.d.log());
            c.d.serve(&[]);
        }
        for minor in [27, LATEST] {
            let (cmd, what) = c.d.kubectl_command(minor, &["attach", "ticker"]);
            let (mut attach, lines) = peapod_e2e::Running::spawn(cmd, what);
            let deadline = Instant::now() + Duration::from_secs(30);
            let ticks = poll_until(deadline, || {
                let got: Vec<String> = lines
                    .try_iter()
                    .filter(|l| l.starts_with("tick "))
                    .collect();
                (!got.is_empty()).then_some(got)
            });
            let err = attach.stop();
            assert!(
                ticks.is_some(),
                "{round}, 1.{minor}: no ticks\n{err}\n{}",
                c.d.log()
            );
            assert!(err.contains("tock "), "{round}, 1.{minor}: stderr {err}");
        }
    }
    // The stdin the monitor kept open still reaches the container after the restart.
    let out = c.kubectl(LATEST, &["attach", "-i", "talk"], Some(b"again\n".to_vec()));
    assert!(out.status.success(), "{out}\n{}", c.d.log());
    assert!(out.stdout.contains("got again\nstdin closed\n"), "{out}");
    c.finish();
}

/// `attach -it` to a `stdin: true, tty: true` container: its terminal takes the client's size
/// and keystrokes, the session shows in `kubectl logs`, `exit` ends container and attach.
#[test]
fn attach_to_a_terminal() {
    let term = r#"apiVersion: v1
kind: Pod
metadata:
  name: term
spec:
  restartPolicy: Never
  containers:
  - name: term
    image: busybox
    stdin: true
    tty: true
    command: [sh]
"#;
    let c = Cluster::start(term);
    for minor in [27, LATEST] {
        let v = format!("kubectl 1.{minor}");
        let steps = [
            Step::SendUntil("\r", "# "),
            Step::SendUntil("stty size\r", "35 95"),
            Step::Send("echo hi-$((2+3))\r"),
            Step::Expect("hi-5"),
        ];
        let mut steps: Vec<Step> = steps.into_iter().collect();
        if minor == LATEST {
            steps.push(Step::Send("exit 0\r"));
        } else {
            // Leaving without ending the container (kubectl has no detach key).
            steps.push(Step::Signal(nix::sys::signal::Signal::SIGTERM as i32));
        }
        let s = c.on_terminal(minor, &["attach", "-it", "term"], (35, 95), &steps);
        assert_eq!(s.failed, None, "{v}: {s:?}\n{}", c.d.log());
    }
    let phase = poll_until(Instant::now() + POD_TIMEOUT, || {
        let phase = c.ok(
            LATEST,
            &["get", "pod", "term", "-o", "jsonpath={.status.phase}"],
        );
        (phase == "Succeeded").then_some(phase)
    });
    assert!(phase.is_some(), "term did not succeed\n{}", c.d.log());
    let logs = c.ok(LATEST, &["logs", "term"]);
    assert!(logs.contains("hi-5"), "{logs}");
    c.finish();
}

/// `kubectl run -it --rm`: a pod with stdin and a terminal, attached as soon as it runs, deleted
/// after the session.
#[test]
fn run_interactive_and_remove() {
    let c = Cluster::start(SHELL);
    let s = c.on_terminal(
        LATEST,
        &[
            "run",
            "-it",
            "--rm",
            "once",
            "--image=busybox",
            "--restart=Never",
            "--",
            "sh",
        ],
        (24, 80),
        &[
            Step::SendUntil("\r", "# "),
            Step::SendUntil("echo run-$((3+4))\r", "run-7"),
            Step::Send("exit 0\r"),
            Step::Expect("deleted"),
        ],
    );
    assert_eq!(s.failed, None, "{s:?}\n{}", c.d.log());
    assert_eq!(s.code, Some(0), "{s:?}");
    let gone = poll_until(Instant::now() + POD_TIMEOUT, || {
        let out = c.kubectl(LATEST, &["get", "pod", "once"], None);
        (!out.status.success()).then_some(())
    });
    assert!(gone.is_some(), "pod once still there");
    c.finish();
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `kubectl cp` (tar over exec) both ways: a directory tree with a binary file, and a single
/// file, byte for byte.
#[test]
fn cp_both_ways_every_version() {
    let c = Cluster::start(SHELL);
    let work = c.d.dir.path().join("cp");
    for minor in 27..=33 {
        let v = format!("kubectl 1.{minor}");
        let local = work.join(format!("up-{minor}"));
        std::fs::create_dir_all(local.join("sub")).expect("mkdir");
        let big = noise(1 << 20, minor as u64);
        std::fs::write(local.join("sub/big.bin"), &big).expect("write");
        std::fs::write(local.join("small.txt"), format!("hello {minor}\n")).expect("write");
        let remote = format!("shell:/tmp/up-{minor}");
        c.ok(minor, &["cp", local.to_str().expect("utf-8"), &remote]);
        let listed = c.ok(
            minor,
            &[
                "exec",
                "shell",
                "--",
                "sh",
                "-c",
                &format!("cd /tmp/up-{minor} && cat small.txt && wc -c < sub/big.bin"),
            ],
        );
        assert_eq!(listed, format!("hello {minor}\n1048576\n"), "{v}");

        let back = work.join(format!("down-{minor}"));
        c.ok(minor, &["cp", &remote, back.to_str().expect("utf-8")]);
        assert_eq!(
            std::fs::read(back.join("sub/big.bin")).expect("read"),
            big,
            "{v}"
        );
        assert_eq!(
            std::fs::read_to_string(back.join("small.txt")).expect("read"),
            format!("hello {minor}\n"),
            "{v}"
        );

        let single = work.join(format!("single-{minor}.bin"));
        c.ok(
            minor,
            &[
                "cp",
                &format!("{remote}/sub/big.bin"),
                single.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(std::fs::read(&single).expect("read"), big, "{v}");
    }
    c.finish();
}

/// An exec'd process is one of the container's: its user and group, working directory,
/// environment and capabilities, with or without a terminal.
#[test]
fn exec_runs_as_the_containers_own_processes() {
    let pod = r#"apiVersion: v1
kind: Pod
metadata:
  name: user
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000}
  containers:
  - name: user
    image: busybox
    workingDir: /tmp
    env: [{name: FOO, value: bar}]
    securityContext: {capabilities: {drop: [ALL]}}
    command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;
    let c = Cluster::start(pod);
    let script = "id -u; id -g; pwd; echo $FOO; grep CapEff /proc/self/status";
    let want = "1000\n3000\n/tmp\nbar\nCapEff:\t0000000000000000\n";
    for minor in [27, LATEST] {
        let out = c.ok(minor, &["exec", "user", "--", "sh", "-c", script]);
        assert_eq!(out, want, "1.{minor}");
        let s = c.on_terminal(
            minor,
            &["exec", "-it", "user", "--", "sh", "-c", script],
            (24, 80),
            &[],
        );
        assert_eq!(s.code, Some(0), "{s:?}");
        assert_eq!(s.output.replace("\r\n", "\n"), want, "1.{minor}: {s:?}");
    }
    c.finish();
}

/// A container that has not started yet (its init container still runs) is a clear error for
/// exec (WebSocket and SPDY) and for attach, not a hang or a dropped connection.
#[test]
fn exec_and_attach_into_a_container_not_running() {
    let pod = r#"apiVersion: v1
kind: Pod
metadata:
  name: waiting
spec:
  initContainers:
  - name: first
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
"#;
    let dir = root_tempdir("peapod-tty-");
    let mut c = Cluster {
        d: Daemon::new(dir, Leftovers::MentioningDir),
    };
    c.d.serve(&[]);
    let path = c.d.dir.path().join("pod.yaml");
    std::fs::write(&path, pod).expect("manifest");
    c.ok(LATEST, &["apply", "-f", path.to_str().expect("utf-8 path")]);
    // The init container runs: exec into it works, into main does not.
    let up = poll_until(Instant::now() + POD_TIMEOUT, || {
        let out = c.kubectl(
            LATEST,
            &["exec", "waiting", "-c", "first", "--", "true"],
            None,
        );
        out.status.success().then_some(())
    });
    assert!(up.is_some(), "init container not running\n{}", c.d.log());
    for minor in [27, LATEST] {
        let out = c.kubectl(
            minor,
            &["exec", "waiting", "-c", "main", "--", "true"],
            None,
        );
        assert!(
            !out.status.success()
                && out
                    .stderr
                    .contains("container main is not running in pod waiting"),
            "1.{minor}: {out}"
        );
        let out = c.kubectl(
            minor,
            &[
                "attach",
                "waiting",
                "-c",
                "main",
                "--pod-running-timeout=5s",
            ],
            None,
        );
        assert!(!out.status.success(), "1.{minor}: {out}");
    }
    c.finish();
}

/// `kubectl run -i --rm` with piped input: the pod's stdin (`stdinOnce`) gets it, ends with it,
/// the output comes back and the pod is deleted.
#[test]
fn run_with_piped_stdin_and_remove() {
    let c = Cluster::start(SHELL);
    for minor in [27, LATEST] {
        let name = format!("piped-{minor}");
        let out = c.kubectl(
            minor,
            &[
                "run",
                "-i",
                "--rm",
                &name,
                "--image=busybox",
                "--restart=Never",
                "--",
                "sh",
                "-c",
                "cat; echo done",
            ],
            Some(b"line one\nline two\n".to_vec()),
        );
        assert!(out.status.success(), "1.{minor}: {out}\n{}", c.d.log());
        assert!(
            out.stdout.contains("line one\nline two\ndone\n"),
            "1.{minor}: {out}"
        );
        assert!(
            out.stdout.contains(&format!("pod \"{name}\" deleted")),
            "1.{minor}: {out}"
        );
    }
    c.finish();
}

/// A process that writes a lot before it reads its stdin, while the client sends a lot: the
/// output must keep flowing while the input waits, or both sides wait for ever.
#[test]
fn exec_output_flows_while_stdin_waits() {
    let c = Cluster::start(SHELL);
    let script = "dd if=/dev/zero bs=1M count=8 2>/dev/null; wc -c";
    for minor in [27, LATEST] {
        let (mut cmd, what) =
            c.d.kubectl_command(minor, &["exec", "-i", "shell", "--", "sh", "-c", script]);
        let out = run_with_input(
            std::mem::replace(&mut cmd, Command::new("true")),
            what,
            COMMAND_TIMEOUT,
            Some(vec![b'x'; 8 << 20]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.timed_out, "1.{minor}: stuck\n{}", c.d.log());
        assert!(out.status.success(), "1.{minor}: {}", out.stderr);
        assert!(
            out.stdout.ends_with("\08388608\n"),
            "1.{minor}: {:?}",
            &out.stdout[out.stdout.len().saturating_sub(20)..]
        );
    }
    c.finish();
}
