//! The monitor's loop (`monitor.rs` starts the container, then calls [`pump`]): the container's
//! output into its CRI log and to attached clients (`attach.rs`), the clients' input into its
//! stdin or terminal, signals passed on, until it exited and its output is drained. Never blocks
//! on anything but `poll`: a client or a container that does not keep up has its data queued
//! within bounds.

use crate::attach::{AttachServer, OUT_STDERR, OUT_STDOUT};
use crate::cgroup;
use crate::container::{ContainerDir, Exited, Started};
use crate::error::{io, Result};
use crate::log::{format_entry, now_rfc3339_nano, LineSplitter, RotatingLog, Stream};
use crate::monitor::MonitorStdio;
use crate::spec::ContainerConfig;
use crate::tty::TtyInput;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use peapod_sys::process::{self as sysproc, Exit};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// How long to keep draining the container's pipes after it exited (a process that escaped the
/// PID namespace could hold them open forever).
const DRAIN_AFTER_EXIT_MS: u16 = 2000;
/// When the monitor drops the executable pages it touched a second time (see `pump`).
const SETTLE_RELEASE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Pumps the container's output into its log (and to attached clients) until it exited and its
/// pipes are drained; feeds attached clients' input to its stdin.
pub(crate) fn pump(
    dir: &ContainerDir,
    config: &ContainerConfig,
    started: Started,
    stdio: MonitorStdio,
    background: bool,
) -> Result<Exited> {
    let pid = started.pid;
    let limits = config.log_limits;
    let mut log = RotatingLog::open(&config.log_path, limits.max_size, limits.max_files)
        .map_err(io(&config.log_path))?;
    let signals = sysproc::signal_fd(&crate::monitor::SUPERVISOR_SIGNALS)?;
    let mut attach = AttachServer::from_fd(stdio.attach);
    let mut pipes = [
        Some((
            File::from(stdio.out),
            Stream::Stdout,
            LineSplitter::default(),
        )),
        stdio
            .err
            .map(|e| (File::from(e), Stream::Stderr, LineSplitter::default())),
    ];
    let mut stdin = ContainerStdin::new(stdio.stdin);
    let mut exit: Option<(Exit, String)> = None;
    let mut log_failed_marked = false;
    let mut buf = vec![0u8; 64 * 1024];
    // From here on the monitor only waits, copies and formats log lines: what startup paged
    // in of the binary and its libraries need not stay resident for the container's whole
    // life. Once more when the container has settled: what its first moments touched once
    // (the first log file checks, attach set-up) goes too, and only the loop's own pages
    // come back.
    sysproc::release_clean_file_pages();
    // Set up: from here the container's output waits for this process, which must not wait
    // for a CPU with nothing else to do.
    if background {
        if let Err(error) = sysproc::set_idle_scheduling(false) {
            tracing::warn!(%error, "leave the idle scheduling class");
        }
    }
    let mut settle_release = Some(std::time::Instant::now() + SETTLE_RELEASE_AFTER);
    loop {
        if settle_release.is_some_and(|at| std::time::Instant::now() >= at) {
            sysproc::release_clean_file_pages();
            settle_release = None;
        }
        for (reaped, how) in sysproc::reap_exited() {
            if reaped == pid {
                exit = Some((how, now_rfc3339_nano()));
            }
        }
        if exit.is_some() && pipes.iter().all(Option::is_none) {
            break;
        }
        let timeout = match (exit.is_some(), settle_release) {
            (true, _) => PollTimeout::from(DRAIN_AFTER_EXIT_MS),
            (false, Some(at)) => {
                let ms = at
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis();
                PollTimeout::from(u16::try_from(ms + 1).unwrap_or(u16::MAX))
            }
            (false, None) => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let open: Vec<usize> = (0..pipes.len()).filter(|i| pipes[*i].is_some()).collect();
        for i in &open {
            if let Some((file, _, _)) = &pipes[*i] {
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            }
        }
        let stdin_slot = fds.len();
        stdin.poll_fd(&mut fds);
        let attach_slot = fds.len();
        attach.poll_fds(&mut fds);
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(peapod_sys::SysError {
                    op: "poll",
                    path: "monitor".into(),
                    source: e,
                }
                .into())
            }
        };
        if ready == 0 {
            if exit.is_some() {
                break; // drained long enough after the exit
            }
            continue; // the settle release is due
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !revents[0].is_empty() {
            while let Ok(Some(info)) = signals.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo != Signal::SIGCHLD as i32 && exit.is_none() {
                    if let Ok(sig) = Signal::try_from(signo) {
                        sysproc::kill(pid, sig)?;
                    }
                }
            }
        }
        for (slot, i) in open.iter().enumerate() {
            if revents[slot + 1].is_empty() {
                continue;
            }
            let Some((file, stream, splitter)) = pipes[*i].as_mut() else {
                continue;
            };
            // A terminal's master reports EIO once the container's side is closed.
            let n = match file.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => read.unwrap_or(0),
            };
            let now = now_rfc3339_nano();
            let mut entries = splitter.push(&buf[..n]);
            if n == 0 {
                entries.extend(splitter.flush());
            }
            let lines: Vec<Vec<u8>> = entries
                .iter()
                .map(|entry| format_entry(&now, *stream, entry))
                .collect();
            log.write_lines(lines.iter().map(Vec::as_slice));
            if log.dropped > 0 && !log_failed_marked {
                // Best effort: on the same full disk this fails too.
                log_failed_marked = File::create(dir.log_failed()).is_ok();
            }
            if n == 0 {
                pipes[*i] = None;
            } else {
                let kind = match stream {
                    Stream::Stderr => OUT_STDERR,
                    _ => OUT_STDOUT,
                };
                attach.broadcast(kind, &buf[..n]);
            }
        }
        if stdin_slot < attach_slot {
            stdin.flush(revents[stdin_slot]);
        }
        for input in attach.handle(&revents[attach_slot..]) {
            match input {
                TtyInput::Input(data) => stdin.push(&data),
                TtyInput::Resize(size) if config.stdio.tty => {
                    if let Some((master, _, _)) = &pipes[0] {
                        let _ = peapod_sys::tty::set_window_size(master.as_fd(), size);
                    }
                }
                TtyInput::CloseStdin if config.stdio.stdin_once && !config.stdio.tty => {
                    stdin.close_when_flushed();
                }
                _ => {}
            }
        }
    }
    attach.close();
    for (file, stream, mut splitter) in pipes.into_iter().flatten() {
        drop(file);
        if let Some(entry) = splitter.flush() {
            log.write_line(&format_entry(&now_rfc3339_nano(), stream, &entry));
        }
    }
    log.sync();
    if log.dropped > 0 {
        tracing::warn!(
            dropped = log.dropped,
            "log lines could not be written (disk full?)"
        );
    }
    let (how, finished_at) = exit.unwrap_or((Exit::Signal(9), now_rfc3339_nano()));
    let (exit_code, signal) = match how {
        Exit::Code(c) => (c, None),
        Exit::Signal(s) => (128 + s, Some(s)),
    };
    let oom_killed = cgroup::oom_kills(&config.cgroup_path) > 0;
    Ok(Exited {
        exit_code,
        signal,
        oom_killed,
        started_at: started.started_at,
        finished_at,
    })
}

/// Most input held for a container that does not read its stdin; more is dropped.
const MAX_STDIN_PENDING: usize = 1 << 20;

/// The write end of the container's stdin (or its terminal), written without blocking the
/// monitor: what the container has not read yet waits here.
struct ContainerStdin {
    file: Option<File>,
    pending: Vec<u8>,
    close_when_flushed: bool,
}

impl ContainerStdin {
    fn new(fd: Option<OwnedFd>) -> ContainerStdin {
        let file = fd.map(File::from);
        if let Some(f) = &file {
            let _ = set_nonblocking(f.as_fd());
        }
        ContainerStdin {
            file,
            pending: Vec::new(),
            close_when_flushed: false,
        }
    }

    /// Adds the descriptor to poll when input waits for it.
    fn poll_fd<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(f) = &self.file {
            if !self.pending.is_empty() {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
            }
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.file.is_some() && self.pending.len() + data.len() <= MAX_STDIN_PENDING {
            self.pending.extend_from_slice(data);
            self.flush(PollFlags::POLLOUT);
        }
    }

    fn close_when_flushed(&mut self) {
        self.close_when_flushed = true;
        self.flush(PollFlags::POLLOUT);
    }

    fn flush(&mut self, events: PollFlags) {
        let Some(f) = self.file.as_mut() else { return };
        if events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
            self.file = None;
            return;
        }
        while !self.pending.is_empty() {
            match f.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.file = None;
                    self.pending.clear();
                    return;
                }
            }
        }
        if self.close_when_flushed {
            self.file = None;
        }
    }
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_waits_for_a_slow_reader_within_bounds_then_closes() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut stdin = ContainerStdin::new(Some(w));
        let mut reader = File::from(r);
        // More than a pipe holds: the rest waits, the monitor does not block.
        let chunk = vec![7u8; 256 * 1024];
        stdin.push(&chunk);
        assert!(!stdin.pending.is_empty());
        stdin.push(&vec![1u8; MAX_STDIN_PENDING]); // over the bound: dropped
        assert!(stdin.pending.len() <= MAX_STDIN_PENDING);
        stdin.close_when_flushed();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while stdin.file.is_some() {
            let n = reader.read(&mut buf).expect("read");
            got.extend_from_slice(&buf[..n]);
            stdin.flush(PollFlags::POLLOUT);
        }
        reader.read_to_end(&mut got).expect("read to the end");
        assert_eq!(got, chunk);
    }
}
