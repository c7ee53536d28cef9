//! Terminals: the master of a pseudo-terminal received over a unix socket (the OCI runtime's
//! console socket, where the container's process sends the master of the pty it made inside
//! the container), and window sizes.
//!
//! See unix(7) SCM_RIGHTS, ioctl_tty(2) TIOCSWINSZ / TIOCGWINSZ, the OCI runtime spec's
//! `process.terminal` and `--console-socket`.

use crate::{Result, SysError};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// Receives one file descriptor passed with SCM_RIGHTS on the connected unix socket `socket`
/// (close-on-exec in this process); any other descriptors in the message are closed.
pub fn recv_fd(socket: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| SysError::new("recvmsg", "console socket", e))?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg
        .cmsgs()
        .map_err(|e| SysError::new("recvmsg", "console socket", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel installed `fd` in this process for this message
                // (SCM_RIGHTS); nothing else owns it, so it is closed exactly once, here or
                // by its owner.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if received.is_empty() {
        return Err(SysError::new(
            "recvmsg",
            "console socket",
            nix::Error::EBADMSG,
        ));
    }
    Ok(received.swap_remove(0))
}

/// Sets the window size of the terminal `fd` (a pty master or slave); the foreground process
/// group of the terminal gets SIGWINCH.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which points to a live,
    // initialised value for the duration of the call; `fd` is a valid open descriptor.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    if rc < 0 {
        return Err(SysError::new("ioctl TIOCSWINSZ", "tty", nix::Error::last()));
    }
    Ok(())
}

/// The window size of the terminal `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // live value of that type; `fd` is a valid open descriptor.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut libc::winsize,
        )
    };
    if rc < 0 {
        return Err(SysError::new("ioctl TIOCGWINSZ", "tty", nix::Error::last()));
    }
    Ok(WindowSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{
        sendmsg, socketpair, AddressFamily, ControlMessage, SockFlag, SockType,
    };
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_passes_and_a_pty_takes_a_size() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let fds = [pty.master.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"/dev/ptmx")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        let master = recv_fd(b.as_fd()).expect("recv_fd");
        let size = WindowSize {
            cols: 100,
            rows: 40,
        };
        set_window_size(master.as_fd(), size).expect("set size");
        assert_eq!(window_size(pty.slave.as_fd()).expect("get size"), size);
    }
}
