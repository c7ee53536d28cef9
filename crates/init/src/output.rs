//! The programs' output pipes, read without blocking and copied line by line, prefixed with
//! the program's name, to init's own stdout or stderr.

use crate::lines::Prefixer;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Which of init's own streams a pipe is copied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

#[derive(Debug)]
struct Stream {
    pipe: File,
    target: Target,
    prefixer: Prefixer,
}

/// The open output pipes of every program (and of what they left running).
#[derive(Debug, Default)]
pub struct Streams {
    streams: Vec<Stream>,
}

impl Streams {
    /// Starts copying `pipe` (a program's stdout or stderr) to `target`.
    pub fn add(&mut self, pipe: impl Into<OwnedFd>, name: &str, target: Target) {
        let pipe: OwnedFd = pipe.into();
        // Without O_NONBLOCK a spurious wake-up would block init in read(2). If it cannot be
        // set, reads still only happen after poll(2) said the pipe is readable.
        let _ = fcntl(pipe.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        self.streams.push(Stream {
            pipe: File::from(pipe),
            target,
            prefixer: Prefixer::new(name),
        });
    }

    /// The pipes to poll, in the order [`Streams::read`] takes their indices.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.streams.iter().map(|s| s.pipe.as_fd())
    }

    /// Copies what is available on the pipes whose indices are given; closes those at EOF.
    pub fn read(&mut self, ready: &[usize]) {
        let mut closed = Vec::new();
        for &i in ready {
            if let Some(stream) = self.streams.get_mut(i) {
                if copy_available(stream) == Got::Closed {
                    closed.push(i);
                }
            }
        }
        for i in closed.into_iter().rev() {
            self.streams.swap_remove(i);
        }
    }

    /// Copies everything still buffered in every pipe, and the unfinished last lines.
    pub fn drain(&mut self) {
        for stream in &mut self.streams {
            while copy_available(stream) == Got::Data {}
            let rest = stream.prefixer.finish();
            write(stream.target, &rest);
        }
        self.streams.clear();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Data,
    /// Nothing to read right now.
    Empty,
    /// EOF, or an error: the pipe is done.
    Closed,
}

/// Reads once from `stream` and copies the lines it completes.
fn copy_available(stream: &mut Stream) -> Got {
    let mut buf = [0u8; 16 * 1024];
    match stream.pipe.read(&mut buf) {
        Ok(n) if n > 0 => {
            let lines = stream.prefixer.push(&buf[..n]);
            write(stream.target, &lines);
            Got::Data
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => Got::Data,
        Err(e) if e.kind() == ErrorKind::WouldBlock => Got::Empty,
        _ => {
            let rest = stream.prefixer.finish();
            write(stream.target, &rest);
            Got::Closed
        }
    }
}

/// Writes to init's stdout or stderr. A failure is dropped: there is nowhere else to report
/// it, and init must keep supervising (SIGPIPE is ignored, so a closed stdout gives EPIPE).
fn write(target: Target, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let _ = match target {
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Target::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}
