//! Running a command to its end under a deadline ([`run_command`]): a hung kubectl or pip fails
//! its test rather than the whole suite; or in the background, line by line ([`Running`]).
//! Output is read on threads, so a command that fills a pipe cannot stall.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished command printed.
pub struct Out {
    /// The command as a person would type it, for messages.
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Whether it was killed at its deadline.
    pub timed_out: bool,
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

impl Out {
    /// stdout, after checking the command succeeded.
    pub fn ok(self) -> String {
        assert!(self.status.success(), "command failed\n{self}");
        self.stdout
    }

    /// stderr, after checking the command failed.
    pub fn err(self) -> String {
        assert!(!self.status.success(), "command succeeded\n{self}");
        self.stderr
    }
}

/// Reads a pipe to its end on another thread.
pub fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to its end, killing it after `timeout`; a timeout is an error.
pub fn run_command(cmd: Command, what: String, timeout: Duration) -> Result<Out, String> {
    let out = run_with_input(cmd, what, timeout, None)?;
    if out.timed_out {
        return Err(format!("timed out after {timeout:?}\n{out}"));
    }
    Ok(out)
}

/// Runs `cmd` with `input` on its stdin (else none), killing it after `timeout`; what it
/// printed until then, `timed_out` set if it was killed. Errors only when it cannot be run.
pub fn run_with_input(
    mut cmd: Command,
    what: String,
    timeout: Duration,
    input: Option<Vec<u8>>,
) -> Result<Out, String> {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        // Closed when written, so the command sees the end of its input.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
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
        // Our own child, not yet reaped: the waiter thread still holds it.
        let _ = kill(pid, Signal::SIGKILL);
    }
    let status = waiter
        .join()
        .map_err(|_| format!("waiter of {what} panicked"))?
        .map_err(|e| format!("wait for {what}: {e}"))?;
    Ok(Out {
        what,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out,
    })
}

/// A long-running command (`kubectl get -w`, `logs -f`, `port-forward`) whose stdout lines
/// arrive on a channel; killed when dropped.
pub struct Running {
    /// The command as a person would type it, for messages.
    pub what: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    /// Starts `cmd` with no stdin. Its stdout is read to the end even when the receiver is gone:
    /// kubectl dies of SIGPIPE when it prints ("Handling connection") into a closed pipe.
    pub fn spawn(mut cmd: Command, what: String) -> (Running, mpsc::Receiver<String>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = drain(child.stderr.take());
        let running = Running {
            what,
            child,
            stderr: Some(stderr),
        };
        (running, lines)
    }

    /// Waits for the command to exit on its own; its status and stderr.
    pub fn exited(&mut self, deadline: Instant) -> Option<(ExitStatus, String)> {
        let status = crate::poll_until(deadline, || self.child.try_wait().ok().flatten())?;
        Some((status, self.stop()))
    }

    /// Kills the command; returns its stderr.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
