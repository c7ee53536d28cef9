//! `peapod __exec <container dir> --tty -- ARGS`: a process in a running container with a
//! terminal (`kubectl exec -it`).
//!
//! The pty is made inside the container by libcontainer (`process.terminal: true`, the
//! container's own process spec with other arguments), so the process has `/dev/pts/N` of the
//! container as its controlling terminal and as stdin, stdout and stderr. Its master comes back
//! over a console socket, and this helper, single-threaded like `__exec`, copies between it and
//! its own stdio: stdin carries frames ([`crate::tty::FrameDecoder`]: keystrokes and window
//! sizes), stdout gets what the terminal shows (stderr is merged in by the terminal, as
//! `kubectl exec -t` expects). The first window size is waited for (briefly) before the
//! process starts, so its first `stty size` is right.

use crate::container::ContainerDir;
use crate::exec::ExecStdio;
use crate::tty::{self, ConsoleSocket, FrameDecoder, TtyInput, WindowSize};
use crate::youki;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use peapod_sys::process::{self as sysproc, Exit};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long to wait for the client's first window size before starting anyway.
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(1);
/// How long the terminal's last output may take once the process exited (a background process
/// still holding the terminal would keep it open for ever).
const DRAIN_AFTER_EXIT_MS: u16 = 500;
/// How long libcontainer's process may take to send the terminal's master.
const MASTER_WAIT_MS: u16 = 10_000;

/// Runs `args` in the container of `dir` on a new terminal; returns the exit code.
pub fn run(dir: &ContainerDir, args: Vec<String>) -> Result<i32, String> {
    sysproc::set_child_subreaper().map_err(|e| e.to_string())?;
    sysproc::reset_signal_dispositions();
    let mut input = Input {
        stdin: Some(dup_file(std::io::stdin().as_fd())?),
        decoder: FrameDecoder::default(),
        pending: Vec::new(),
        size: None,
    };
    input.wait_for_size(FIRST_SIZE_WAIT);

    let me = std::process::id();
    let process_json = dir.path.join(format!("exec-{me}.json"));
    crate::exec::write_process(dir, args, ExecStdio::Terminal, &process_json)?;
    let socket = ConsoleSocket::bind(&dir.path, &format!("tty-{me}.sock"))
        .map_err(|e| crate::monitor::error_chain(&e))?;
    let created = youki::exec_with_terminal(
        dir.id.as_str(),
        &dir.state_root(),
        &process_json,
        &socket.path,
        input.size,
    );
    let _ = sysproc::ignore_sigpipe();
    let _ = std::fs::remove_file(&process_json);
    tty::remove_links_to(&dir.state_root().join(dir.id.as_str()), &socket.path);
    let pid = created.map_err(|e| crate::monitor::error_chain(&e))?;
    let master = socket.receive_master(MASTER_WAIT_MS);
    drop(socket);
    let master = match master {
        Ok(m) => m,
        Err(e) => {
            let _ = sysproc::kill(pid, Signal::SIGKILL);
            return Err(crate::monitor::error_chain(&e));
        }
    };
    pump(pid, master, input)
}

fn dup_file(fd: std::os::fd::BorrowedFd<'_>) -> Result<File, String> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|e| format!("dup stdio: {e}"))
}

/// The helper's stdin, decoded: keystrokes not yet written to the terminal, the last size.
struct Input {
    stdin: Option<File>,
    decoder: FrameDecoder,
    pending: Vec<u8>,
    size: Option<WindowSize>,
}

impl Input {
    /// Reads what stdin has; false at its end.
    fn read(&mut self) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 16 * 1024];
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.stdin = None;
                return false;
            }
            Ok(n) => n,
        };
        for message in self.decoder.push_input(&buf[..n]) {
            match message {
                TtyInput::Input(data) => self.pending.extend_from_slice(&data),
                TtyInput::Resize(size) => self.size = Some(size),
                TtyInput::CloseStdin => {}
            }
        }
        true
    }

    fn wait_for_size(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.size.is_none() {
            let Some(stdin) = self.stdin.as_ref() else {
                return;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => return,
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => return,
            }
            if !self.read() {
                return;
            }
        }
    }
}

/// Copies between the helper's stdio and the terminal until the process exited and the
/// terminal's output is drained; returns the exit code (128 + signal when killed).
fn pump(pid: i32, master: OwnedFd, mut input: Input) -> Result<i32, String> {
    let flags = fcntl(master.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    fcntl(
        master.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| e.to_string())?;
    let mut master = File::from(master);
    let mut applied = input.size;
    let mut stdout = Some(dup_file(std::io::stdout().as_fd())?);
    let signals =
        sysproc::signal_fd(&crate::monitor::SUPERVISOR_SIGNALS).map_err(|e| e.to_string())?;
    let mut exit: Option<i32> = None;
    let mut master_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        for (reaped, how) in sysproc::reap_exited() {
            if reaped == pid {
                exit = Some(match how {
                    Exit::Code(c) => c,
                    Exit::Signal(s) => 128 + s,
                });
            }
        }
        if let (Some(code), false) = (exit, master_open) {
            return Ok(code);
        }
        if input.size != applied {
            if let Some(size) = input.size {
                let _ = peapod_sys::tty::set_window_size(master.as_fd(), size);
            }
            applied = input.size;
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let mut master_events = PollFlags::POLLIN;
        if !input.pending.is_empty() && exit.is_none() {
            master_events |= PollFlags::POLLOUT;
        }
        let master_slot = master_open.then_some(fds.len());
        if master_open {
            fds.push(PollFd::new(master.as_fd(), master_events));
        }
        let stdin_slot = fds.len();
        if let Some(stdin) = input.stdin.as_ref() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if exit.is_some() {
            PollTimeout::from(DRAIN_AFTER_EXIT_MS)
        } else {
            PollTimeout::NONE
        };
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        };
        if ready == 0 {
            if let Some(code) = exit {
                return Ok(code);
            }
        }
        let events: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !events[0].is_empty() {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo as i32 != Signal::SIGCHLD as i32 {
                    let _ = sysproc::kill(pid, Signal::SIGKILL);
                }
            }
        }
        let master_events = master_slot.map_or(PollFlags::empty(), |i| events[i]);
        if !master_events.is_empty() {
            if master_events.contains(PollFlags::POLLOUT) {
                match master.write(&input.pending) {
                    Ok(n) => {
                        input.pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => input.pending.clear(),
                }
            }
            loop {
                match master.read(&mut buf) {
                    Ok(0) => master_open = false,
                    Ok(n) => {
                        let written = stdout.as_mut().map(|o| o.write_all(&buf[..n]));
                        if let Some(Err(_)) = written {
                            // Nobody reads any more (the client left): end the process.
                            stdout = None;
                            let _ = sysproc::kill(pid, Signal::SIGKILL);
                        }
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // EIO: every slave descriptor is closed.
                    Err(_) => master_open = false,
                }
                break;
            }
        }
        if events.len() > stdin_slot && !events[stdin_slot].is_empty() {
            input.read();
        }
        if exit.is_some() {
            input.pending.clear();
        }
    }
}
