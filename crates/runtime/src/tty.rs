//! Terminals for containers' processes: the console socket on which the OCI runtime hands over
//! the master of the pty it made inside the container (`process.terminal: true`), and the
//! framing of a terminal's input (keystrokes and window sizes) on one byte stream.
//!
//! The pty is allocated inside the container (its `/dev/pts`), as runc and youki do, so the
//! process sees `/dev/pts/N` as its controlling terminal; only the master leaves the
//! container, over the socket. See the OCI runtime spec, `process.terminal` and
//! <https://github.com/opencontainers/runc/blob/main/docs/terminals.md>.

use crate::error::{io, Result, RuntimeError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
pub use peapod_sys::tty::WindowSize;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Kind byte of a frame carrying terminal input (or, without a terminal, stdin bytes).
pub const FRAME_INPUT: u8 = 0;
/// Kind byte of a frame carrying a window size (columns, then rows, big-endian u16 each).
pub const FRAME_RESIZE: u8 = 1;
/// Kind byte of an empty frame saying the client's stdin ended.
pub const FRAME_CLOSE_STDIN: u8 = 2;

/// One message on a terminal's (or an attached client's) input stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyInput {
    Input(Vec<u8>),
    Resize(WindowSize),
    CloseStdin,
}

impl TtyInput {
    /// The message a frame carries; `None` for unknown kinds and malformed sizes.
    pub fn from_frame(kind: u8, payload: Vec<u8>) -> Option<TtyInput> {
        match (kind, payload.as_slice()) {
            (FRAME_INPUT, _) => Some(TtyInput::Input(payload)),
            (FRAME_RESIZE, [c0, c1, r0, r1]) => Some(TtyInput::Resize(WindowSize {
                cols: u16::from_be_bytes([*c0, *c1]),
                rows: u16::from_be_bytes([*r0, *r1]),
            })),
            (FRAME_CLOSE_STDIN, _) => Some(TtyInput::CloseStdin),
            _ => None,
        }
    }
}

/// A frame: the kind byte, the payload's length as a big-endian u32, the payload. (The API
/// server's exec handler writes the same frames; it cannot link this crate.)
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encodes a message as a [`frame`].
pub fn encode(message: &TtyInput) -> Vec<u8> {
    match message {
        TtyInput::Input(data) => frame(FRAME_INPUT, data),
        TtyInput::Resize(size) => {
            let mut p = size.cols.to_be_bytes().to_vec();
            p.extend_from_slice(&size.rows.to_be_bytes());
            frame(FRAME_RESIZE, &p)
        }
        TtyInput::CloseStdin => frame(FRAME_CLOSE_STDIN, &[]),
    }
}

/// Splits a byte stream into frames `(kind, payload)`, however it was chunked.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 5 {
            let kind = self.buf[at];
            let len = u32::from_be_bytes([
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
                self.buf[at + 4],
            ]) as usize;
            if self.buf.len() - at - 5 < len {
                break;
            }
            out.push((kind, self.buf[at + 5..at + 5 + len].to_vec()));
            at += 5 + len;
        }
        self.buf.drain(..at);
        out
    }

    /// [`FrameDecoder::push`], as input messages (unknown ones skipped).
    pub fn push_input(&mut self, bytes: &[u8]) -> Vec<TtyInput> {
        self.push(bytes)
            .into_iter()
            .filter_map(|(kind, payload)| TtyInput::from_frame(kind, payload))
            .collect()
    }
}

/// A listening console socket in a directory of ours; removed when dropped.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens on `dir/<name>`. The name is bound relative to `dir` (entered and left again),
    /// since a unix socket's path is limited to 108 bytes and data roots can be deep.
    pub fn bind(dir: &Path, name: &str) -> Result<ConsoleSocket> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let cwd = std::env::current_dir().map_err(io("."))?;
        std::env::set_current_dir(dir).map_err(io(dir))?;
        let listener = UnixListener::bind(name);
        std::env::set_current_dir(&cwd).map_err(io(&cwd))?;
        Ok(ConsoleSocket {
            listener: listener.map_err(io(&path))?,
            path,
        })
    }

    /// The pty master the runtime sent, waiting at most `timeout_ms`.
    pub fn receive_master(&self, timeout_ms: u16) -> Result<OwnedFd> {
        let failed = |message: String| RuntimeError::StartFailed {
            container: self.path.display().to_string(),
            message,
        };
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(timeout_ms)) {
            Ok(1..) => {}
            Ok(_) => return Err(failed("no terminal came on the console socket".into())),
            Err(e) => return Err(failed(format!("poll console socket: {e}"))),
        }
        let (conn, _) = self.listener.accept().map_err(io(&self.path))?;
        Ok(peapod_sys::tty::recv_fd(conn.as_fd())?)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the symlinks to `socket` that libcontainer leaves in its state directory (one per
/// process started with a terminal).
pub fn remove_links_to(state_dir: &Path, socket: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if std::fs::read_link(entry.path()).is_ok_and(|target| target == socket) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_chunking() {
        let messages = vec![
            TtyInput::Resize(WindowSize {
                cols: 100,
                rows: 40,
            }),
            TtyInput::Input(b"echo hi\r".to_vec()),
            TtyInput::Input(Vec::new()),
            TtyInput::Resize(WindowSize {
                cols: 1,
                rows: 65535,
            }),
        ];
        let bytes: Vec<u8> = messages.iter().flat_map(encode).collect();
        for chunk in [1, 2, 3, 7, bytes.len()] {
            let mut d = FrameDecoder::default();
            let got: Vec<TtyInput> = bytes.chunks(chunk).flat_map(|c| d.push_input(c)).collect();
            assert_eq!(got, messages, "chunks of {chunk}");
        }
    }

    #[test]
    fn unknown_and_malformed_frames_are_skipped() {
        let mut bytes = vec![9, 0, 0, 0, 1, b'x'];
        bytes.extend([FRAME_RESIZE, 0, 0, 0, 1, 7]);
        bytes.extend(encode(&TtyInput::Input(b"a".to_vec())));
        let mut d = FrameDecoder::default();
        assert_eq!(d.push_input(&bytes), vec![TtyInput::Input(b"a".to_vec())]);
    }
}
