//! Attaching to a container's stdio (`kubectl attach`, `kubectl run -it`).
//!
//! The monitor owns the container's stdio for the container's whole life, so it is the monitor
//! that serves attach: it listens on `<container dir>/attach.sock` and, to every client
//! connected, copies what the container writes (as it writes it to the log) and takes the
//! client's input for the container's stdin (`stdin: true`) and its window sizes (`tty: true`).
//! The socket lives as long as the monitor, so attach works across daemon restarts.
//!
//! On the socket, both ways, [`crate::tty::frame`]s: from the client, [`TtyInput`] frames
//! (keystrokes or stdin bytes, window sizes, end of stdin); to the client, the output with kind
//! [`OUT_STDOUT`] or [`OUT_STDERR`] (a terminal has only stdout).
//!
//! `peapod __attach <container dir> [--tty | --no-stdin]` is the daemon's side, run like the `__exec`
//! helper so the API server's exec streaming serves attach too: its stdin goes to the monitor
//! (with `--tty` already framed, else as raw stdin bytes, then end of stdin), the output to its
//! stdout and stderr; it exits 0 when the monitor closes the connection (the container ended).

use crate::error::{io, Result};
use crate::tty::{self, FrameDecoder, TtyInput};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// The socket's name in the container directory.
pub const ATTACH_SOCKET: &str = "attach.sock";
/// The hidden subcommand of the daemon's side.
pub const ATTACH_SUBCOMMAND: &str = "__attach";
/// Kind of an output frame with the container's stdout (or its terminal's output).
pub const OUT_STDOUT: u8 = 1;
/// Kind of an output frame with the container's stderr.
pub const OUT_STDERR: u8 = 2;

/// The helper's flag for a client without stdin.
pub const NO_STDIN_FLAG: &str = "--no-stdin";

/// At most this many clients at once; more are turned away.
const MAX_CLIENTS: usize = 16;
/// A client that falls this far behind is disconnected, so it cannot hold the monitor's memory.
const MAX_PENDING: usize = 4 << 20;
/// How long a leaving monitor tries to hand its clients the last output.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// The monitor's side: the listening socket and the clients connected.
pub struct AttachServer {
    listener: UnixListener,
    clients: Vec<Client>,
}

struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// Output not yet taken by the client.
    pending: Vec<u8>,
}

impl AttachServer {
    /// Listens on `dir/attach.sock`, bound through `/proc/self/fd/<dir>/`: a socket path must
    /// fit in 108 bytes, `dir` need not; and no change of the process's working directory,
    /// which every thread shares.
    pub fn bind(dir: &Path) -> Result<AttachServer> {
        use std::os::fd::AsRawFd;
        let path = dir.join(ATTACH_SOCKET);
        let _ = std::fs::remove_file(&path);
        let handle = std::fs::File::open(dir).map_err(io(dir))?;
        let short = format!("/proc/self/fd/{}/{ATTACH_SOCKET}", handle.as_raw_fd());
        let listener = UnixListener::bind(short).map_err(io(&path))?;
        listener.set_nonblocking(true).map_err(io(&path))?;
        Ok(AttachServer {
            listener,
            clients: Vec::new(),
        })
    }

    /// The listening socket, handed over across the monitor's re-exec.
    pub fn from_fd(fd: OwnedFd) -> AttachServer {
        let listener = UnixListener::from(fd);
        let _ = listener.set_nonblocking(true);
        AttachServer {
            listener,
            clients: Vec::new(),
        }
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The listening socket, to hand over across the monitor's re-exec.
    pub fn into_fd(self) -> OwnedFd {
        self.listener.into()
    }

    /// Appends what to poll: the listener, then each client (readable; writable when output
    /// waits for it).
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        for c in &self.clients {
            let mut events = PollFlags::POLLIN;
            if !c.pending.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), events));
        }
    }

    /// Acts on the poll results for the descriptors [`AttachServer::poll_fds`] added (same
    /// order); returns the clients' input.
    pub fn handle(&mut self, events: &[PollFlags]) -> Vec<TtyInput> {
        let mut input = Vec::new();
        let mut gone = vec![false; self.clients.len()];
        for (i, c) in self.clients.iter_mut().enumerate() {
            let Some(ev) = events.get(i + 1) else { break };
            if ev.contains(PollFlags::POLLOUT) && !c.flush() {
                gone[i] = true;
                continue;
            }
            if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                let mut buf = [0u8; 16 * 1024];
                match c.stream.read(&mut buf) {
                    Ok(0) => gone[i] = true,
                    Ok(n) => input.extend(c.decoder.push_input(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => gone[i] = true,
                }
            }
        }
        let mut i = 0;
        self.clients.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        if events
            .first()
            .is_some_and(|e| e.contains(PollFlags::POLLIN))
        {
            self.accept();
        }
        input
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Client {
                stream,
                decoder: FrameDecoder::default(),
                pending: Vec::new(),
            });
        }
    }

    /// Copies output of the container to every client.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let framed = tty::frame(kind, data);
        self.clients.retain_mut(|c| {
            c.pending.extend_from_slice(&framed);
            c.pending.len() <= MAX_PENDING && c.flush()
        });
    }

    /// The container ended: the clients get what is left for them (briefly), then EOF.
    pub fn close(self) {
        for mut c in self.clients {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(FINAL_FLUSH));
            let _ = c.stream.write_all(&c.pending);
        }
    }
}

impl Client {
    /// Writes what the socket takes now; false if the client is gone.
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// How the `__attach` helper reads its stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachInput {
    /// None: the client only watches (`kubectl attach` without `-i`).
    Nothing,
    /// Raw stdin bytes; their end is the end of the client's stdin.
    Raw,
    /// Frames from the API server (keystrokes and window sizes), passed on as they are.
    Terminal,
}

/// The daemon's attach command for the container in `dir`; the caller sets stdio.
pub fn command(exe: &Path, dir: &Path, input: AttachInput) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(ATTACH_SUBCOMMAND).arg(dir);
    match input {
        AttachInput::Nothing => cmd.arg(NO_STDIN_FLAG),
        AttachInput::Raw => &mut cmd,
        AttachInput::Terminal => cmd.arg(crate::exec::TTY_FLAG),
    };
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Entry point of `peapod __attach <dir> [--tty | --no-stdin]`; returns the exit code.
pub fn helper_main(dir: &Path, input: AttachInput) -> i32 {
    match relay(dir, input) {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "peapod attach: {message}");
            1
        }
    }
}

fn relay(dir: &Path, input: AttachInput) -> std::result::Result<(), String> {
    let _ = peapod_sys::process::ignore_sigpipe();
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    std::env::set_current_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let socket = UnixStream::connect(ATTACH_SOCKET);
    let _ = std::env::set_current_dir(cwd);
    let mut socket = socket.map_err(|_| "the container is not running".to_string())?;
    let mut stdin = (input != AttachInput::Nothing).then(|| std::io::stdin().lock());
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = vec![PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        if let Some(s) = stdin.as_ref() {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let events: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if events[0] {
            let n = socket.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return Ok(());
            }
            for (kind, payload) in decoder.push(&buf[..n]) {
                let _ = match kind {
                    OUT_STDERR => stderr.write_all(&payload).and_then(|()| stderr.flush()),
                    _ => stdout.write_all(&payload).and_then(|()| stdout.flush()),
                };
            }
        }
        if events.get(1) == Some(&true) {
            let n = stdin.as_mut().map_or(0, |s| s.read(&mut buf).unwrap_or(0));
            let message = match (n, input) {
                (0, _) => {
                    stdin = None;
                    tty::encode(&TtyInput::CloseStdin)
                }
                (n, AttachInput::Terminal) => buf[..n].to_vec(),
                (n, _) => tty::encode(&TtyInput::Input(buf[..n].to_vec())),
            };
            if socket.write_all(&message).is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tty::WindowSize;

    /// Polls the server once (as the monitor's loop does) and returns the clients' input.
    fn turn(server: &mut AttachServer) -> Vec<TtyInput> {
        let mut fds = Vec::new();
        server.poll_fds(&mut fds);
        poll(&mut fds, PollTimeout::from(1000u16)).expect("poll");
        let events: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        server.handle(&events)
    }

    #[test]
    fn clients_get_output_and_send_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = AttachServer::bind(dir.path()).expect("bind");
        let mut client = UnixStream::connect(dir.path().join(ATTACH_SOCKET)).expect("connect");
        assert!(turn(&mut server).is_empty()); // accepted
        server.broadcast(OUT_STDOUT, b"hello\n");
        server.broadcast(OUT_STDERR, b"oops\n");
        let mut got = Vec::new();
        let mut decoder = FrameDecoder::default();
        while got.len() < 2 {
            let mut buf = [0u8; 256];
            let n = client.read(&mut buf).expect("read");
            got.extend(decoder.push(&buf[..n]));
        }
        assert_eq!(
            got,
            vec![
                (OUT_STDOUT, b"hello\n".to_vec()),
                (OUT_STDERR, b"oops\n".to_vec())
            ]
        );
        let size = WindowSize { cols: 80, rows: 24 };
        for m in [
            TtyInput::Input(b"ls\n".to_vec()),
            TtyInput::Resize(size),
            TtyInput::CloseStdin,
        ] {
            client.write_all(&tty::encode(&m)).expect("write");
        }
        let mut input = Vec::new();
        while input.len() < 3 {
            input.extend(turn(&mut server));
        }
        assert_eq!(
            input,
            vec![
                TtyInput::Input(b"ls\n".to_vec()),
                TtyInput::Resize(size),
                TtyInput::CloseStdin
            ]
        );
        // A client that leaves is dropped; the server goes on.
        drop(client);
        turn(&mut server);
        assert!(server.clients.is_empty());
        server.broadcast(OUT_STDOUT, b"nobody\n");
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = AttachServer::bind(dir.path()).expect("bind");
        let _client = UnixStream::connect(dir.path().join(ATTACH_SOCKET)).expect("connect");
        turn(&mut server);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(MAX_PENDING / chunk.len() + 64) {
            server.broadcast(OUT_STDOUT, &chunk);
        }
        assert!(server.clients.is_empty());
    }
}
