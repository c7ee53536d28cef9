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

/// A socket bound to `addr` and nothing more (no `listen`): while it is open nothing else can
/// bind the port, and a TCP connection that reaches it is refused. `EADDRINUSE` when something
/// listens on the port or holds it. Connections of an earlier user of the port still in
/// TIME_WAIT would refuse that bind: the port is then bound with `SO_REUSEADDR`, which holds
/// it against listeners without it (most servers set it, and could then take the port). The
/// kubelet held host ports the same way.
pub fn hold_port(transport: Transport, addr: std::net::SocketAddrV4) -> Result<OwnedFd> {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = socket_for(transport, addr)?;
    match bind_to(&fd, addr) {
        Err(e) if e.source == nix::errno::Errno::EADDRINUSE => {
            let fd = socket_for(transport, addr)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)
                .map_err(|e| SysError::new("setsockopt SO_REUSEADDR", addr, e))?;
            bind_to(&fd, addr).map(|()| fd)
        }
        other => other.map(|()| fd),
    }
}

fn socket_for(transport: Transport, addr: std::net::SocketAddrV4) -> Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let kind = match transport {
        Transport::Tcp => SockType::Stream,
        Transport::Udp => SockType::Datagram,
    };
    socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| SysError::new("socket", addr, e))
}

fn bind_to(fd: &OwnedFd, addr: std::net::SocketAddrV4) -> Result<()> {
    nix::sys::socket::bind(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(addr))
        .map_err(|e| SysError::new("bind", addr, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};

    #[test]
    fn a_held_port_refuses_connections_and_listeners() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listener");
        let addr = match listener.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let taken = hold_port(Transport::Tcp, addr).expect_err("a listener has it");
        assert_eq!(taken.source, nix::errno::Errno::EADDRINUSE);
        drop(listener);
        let held = hold_port(Transport::Tcp, addr).expect("hold");
        assert!(TcpListener::bind(addr).is_err(), "no listener while held");
        assert!(TcpStream::connect(addr).is_err(), "connections refused");
        drop(held);
        drop(TcpListener::bind(addr).expect("free again"));
        let udp = hold_port(Transport::Udp, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        assert!(udp.is_ok());
    }
}
