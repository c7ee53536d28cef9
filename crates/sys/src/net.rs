//! Sockets: bringing up loopback in a new network namespace (netdevice(7)), holding a port.

use crate::{Result, SysError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket(2) has no memory-safety preconditions; the result is checked below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(SysError::new("socket", "lo", nix::Error::last()));
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq that outlives the call; SIOCGIFFLAGS writes ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(SysError::new("SIOCGIFFLAGS", "lo", nix::Error::last()));
    }
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(SysError::new("SIOCSIFFLAGS", "lo", nix::Error::last()));
    }
    Ok(())
}

/// The transport of a port held with [`hold_port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// A socket bound to `addr` and nothing more (no `listen`, no `SO_REUSEADDR`): while it is
/// open no other socket can bind the port, and a TCP connection that reaches it is refused.
/// `EADDRINUSE` when something else has the port. The kubelet held host ports the same way.
pub fn hold_port(transport: Transport, addr: std::net::SocketAddrV4) -> Result<OwnedFd> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let kind = match transport {
        Transport::Tcp => SockType::Stream,
        Transport::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| SysError::new("socket", addr, e))?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr)).map_err(|e| SysError::new("bind", addr, e))?;
    Ok(fd)
}
