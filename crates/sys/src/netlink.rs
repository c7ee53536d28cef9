//! A minimal rtnetlink client (rtnetlink(7), netlink(7)): the few link, address and route
//! requests a pod's network needs, each one message and one acknowledgement over a socket the
//! caller keeps. It replaces one `ip` process per step (1–25 ms each) with a syscall pair.
//!
//! A netlink socket belongs to the network namespace it was created in, whichever thread uses
//! it later: [`Netlink::open_in`] creates one inside a pinned namespace on a short-lived
//! thread, so no pooled thread ever changes namespace.

use crate::{Result, SysError};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

// Message types and flags (linux/netlink.h, linux/rtnetlink.h).
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;

// Attributes (linux/if_link.h, linux/veth.h, linux/if_addr.h, linux/rtnetlink.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BRPORT_MODE: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;

const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const IFF_UP: u32 = 1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

const HEADER: usize = 16;
/// Set on the type of a nested attribute (linux/netlink.h); nf_tables wants it.
const NLA_F_NESTED: u16 = 0x8000;

/// One rtnetlink socket and its sequence numbers.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        Netlink::open_protocol(SockProtocol::NetlinkRoute)
    }

    /// A socket of netlink family `protocol` in the calling thread's network namespace.
    pub(crate) fn open_protocol(protocol: SockProtocol) -> Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(|e| SysError::new("socket", "netlink", e))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| SysError::new("bind", "netlink", e))?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// A socket in the network namespace pinned at `pin`, made on a thread of its own that
    /// enters the namespace and ends.
    pub fn open_in(pin: &Path) -> Result<Netlink> {
        let pin = pin.to_path_buf();
        std::thread::spawn(move || {
            crate::ns::enter_net(&pin)?;
            Netlink::open()
        })
        .join()
        .unwrap_or_else(|_| Err(SysError::new("thread", "netlink", Errno::EIO)))
    }

    /// Creates the veth pair `host` / `peer` with `host` up on bridge `master` in this socket's
    /// namespace and `peer` made directly in the namespace pinned at `peer_netns`, down: one
    /// request, and no move of a device between namespaces (which waits for an RCU grace
    /// period, ~25 ms). The peer cannot be brought up in the same request: the kernel
    /// configures it before the pair is joined, and opening a veth without its peer fails
    /// (ENOTCONN).
    pub fn add_veth_into(
        &mut self,
        host: &str,
        master: u32,
        peer: &str,
        peer_netns: &Path,
    ) -> Result<()> {
        let ns = std::fs::File::open(peer_netns)
            .map_err(|e| SysError::new("open", peer_netns.display(), crate::ns::io_errno(&e)))?;
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfo(0, IFF_UP);
        m.attr_str(IFLA_IFNAME, host);
        m.attr_u32(IFLA_MASTER, master);
        // One queue each way on both ends. A veth otherwise gets one per possible CPU, and
        // the kernel then lowers both ends to one real queue, each time waiting for an RCU
        // grace period under the rtnl lock (synchronize_net in netif_set_real_num_tx_queues).
        m.attr_u32(IFLA_NUM_TX_QUEUES, 1);
        m.attr_u32(IFLA_NUM_RX_QUEUES, 1);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let peer_info = m.begin(VETH_INFO_PEER);
        m.ifinfo(0, 0);
        m.attr_str(IFLA_IFNAME, peer);
        m.attr_u32(IFLA_NET_NS_FD, ns.as_fd().as_raw_fd() as u32);
        m.attr_u32(IFLA_NUM_TX_QUEUES, 1);
        m.attr_u32(IFLA_NUM_RX_QUEUES, 1);
        m.end(peer_info);
        m.end(data);
        m.end(info);
        self.request(m, host)
    }

    /// Sets device `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.ifinfo(index as i32, IFF_UP);
        self.request(m, &format!("link {index}"))
    }

    /// Puts bridge port `index` in hairpin mode: frames may leave by the port they came in by
    /// (bridge(8) `hairpin on`). Over netlink the request waits for the rtnl lock; a write
    /// to `brport/hairpin_mode` in sysfs instead restarts itself in a busy loop while the
    /// lock is taken (it only tries it), which new devices' own work does right then.
    pub fn set_hairpin(&mut self, index: u32) -> Result<()> {
        let mut m = Message::new(RTM_SETLINK, 0);
        m.ifinfo_of(AF_BRIDGE, index as i32, 0);
        let port = m.begin_nested(IFLA_PROTINFO);
        m.attr(IFLA_BRPORT_MODE, &[1]);
        m.end(port);
        self.request(m, &format!("link {index}"))
    }

    /// The index of device `name`, `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        let mut m = Message::new(RTM_GETLINK, 0);
        m.ifinfo(0, 0);
        m.attr_str(IFLA_IFNAME, name);
        match self.exchange(m, name) {
            Ok(reply) if reply.len() >= HEADER + 8 => {
                let index = &reply[HEADER + 4..HEADER + 8];
                Ok(Some(u32::from_ne_bytes([
                    index[0], index[1], index[2], index[3],
                ])))
            }
            Ok(_) => Err(SysError::new("RTM_GETLINK", name, Errno::EPROTO)),
            Err(e) if e.source == Errno::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `ip/prefix` to device `index` (replacing the same address).
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
        // struct ifaddrmsg: family, prefixlen, flags, scope (universe), index.
        m.bytes(&[AF_INET, prefix, 0, 0]);
        m.bytes(&index.to_ne_bytes());
        m.attr(IFA_LOCAL, &ip.octets());
        m.attr(IFA_ADDRESS, &ip.octets());
        self.request(m, &ip.to_string())
    }

    /// Adds the default route via `gateway` to the main table.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        let mut m = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        m.bytes(&[AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST]);
        m.bytes(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets());
        self.request(m, "default route")
    }

    /// Deletes device `name`; whether it was there.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut m = Message::new(RTM_DELLINK, 0);
        m.ifinfo(0, 0);
        m.attr_str(IFLA_IFNAME, name);
        match self.request(m, name) {
            Ok(()) => Ok(true),
            Err(e) if e.source == Errno::ENODEV => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `m` asking for an acknowledgement and waits for it.
    fn request(&mut self, mut m: Message, what: &str) -> Result<()> {
        m.flags |= NLM_F_ACK;
        self.exchange(m, what).map(drop)
    }

    /// Sends `m` and returns the answer to it: the reply message, or the error of an
    /// acknowledgement (an empty reply for a successful one).
    fn exchange(&mut self, m: Message, what: &str) -> Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let (op, seq) = (m.op(), self.seq);
        let packet = m.finish(seq);
        self.send_and_wait(&packet, seq..=seq, op, what)
    }

    /// The next sequence number.
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `packet` (one or more messages) and returns the first answer to a message of
    /// `seqs`: the reply, or the error of an acknowledgement (empty for a successful one).
    pub(crate) fn send_and_wait(
        &mut self,
        packet: &[u8],
        seqs: std::ops::RangeInclusive<u32>,
        op: &'static str,
        what: &str,
    ) -> Result<Vec<u8>> {
        sendto(
            self.fd.as_raw_fd(),
            packet,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| SysError::new(op, what, e))?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| SysError::new(op, what, e))?;
            for msg in split(&buf[..n]) {
                let Some(header) = Header::parse(msg) else {
                    continue;
                };
                if !seqs.contains(&header.seq) {
                    continue;
                }
                if header.kind != NLMSG_ERROR {
                    return Ok(msg.to_vec());
                }
                let code = msg
                    .get(HEADER..HEADER + 4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-libc::EPROTO);
                return match code {
                    0 => Ok(Vec::new()),
                    c => Err(SysError::new(op, what, Errno::from_raw(-c))),
                };
            }
        }
    }
}

/// The fields of a `struct nlmsghdr` a reply is matched by.
struct Header {
    kind: u16,
    seq: u32,
}

impl Header {
    fn parse(msg: &[u8]) -> Option<Header> {
        let h = msg.get(..HEADER)?;
        Some(Header {
            kind: u16::from_ne_bytes([h[4], h[5]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
        })
    }
}

/// The messages in one datagram, each cut to its own length.
fn split(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = buf
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
        if len < HEADER || len > buf.len() {
            return None;
        }
        let msg = &buf[..len];
        buf = &buf[align(len).min(buf.len())..];
        Some(msg)
    })
}

const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A request being built: header, fixed part, attributes (nested ones by offset).
pub(crate) struct Message {
    kind: u16,
    pub(crate) flags: u16,
    buf: Vec<u8>,
}

impl Message {
    pub(crate) fn new(kind: u16, flags: u16) -> Message {
        Message {
            kind,
            flags: NLM_F_REQUEST | flags,
            buf: vec![0; HEADER],
        }
    }

    fn op(&self) -> &'static str {
        match self.kind {
            RTM_NEWLINK => "RTM_NEWLINK",
            RTM_DELLINK => "RTM_DELLINK",
            RTM_GETLINK => "RTM_GETLINK",
            RTM_SETLINK => "RTM_SETLINK",
            RTM_NEWADDR => "RTM_NEWADDR",
            RTM_NEWROUTE => "RTM_NEWROUTE",
            _ => "netlink",
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// A `struct ifinfomsg` (family unspecified) for device `index` with `flags` changed.
    fn ifinfo(&mut self, index: i32, flags: u32) {
        self.ifinfo_of(0, index, flags);
    }

    /// A `struct ifinfomsg` of address family `family`.
    fn ifinfo_of(&mut self, family: u8, index: i32, flags: u32) {
        self.bytes(&[family, 0, 0, 0]);
        self.bytes(&index.to_ne_bytes());
        self.bytes(&flags.to_ne_bytes());
        self.bytes(&flags.to_ne_bytes());
    }

    pub(crate) fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.bytes(data);
    }

    fn attr_u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_ne_bytes());
    }

    pub(crate) fn attr_str(&mut self, kind: u16, value: &str) {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    /// Opens a nested attribute; `end` sets its length.
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.attr(kind, &[]);
        at
    }

    /// Opens a nested attribute flagged `NLA_F_NESTED`; `end` sets its length.
    pub(crate) fn begin_nested(&mut self, kind: u16) -> usize {
        self.begin(kind | NLA_F_NESTED)
    }

    pub(crate) fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub(crate) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        self.buf[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_whole_length() {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE);
        m.ifinfo(0, IFF_UP);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        m.end(info);
        let p = m.finish(7);
        assert_eq!(p.len(), 16 + 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes([p[0], p[1], p[2], p[3]]), p.len() as u32);
        assert_eq!(
            u16::from_ne_bytes([p[6], p[7]]),
            NLM_F_REQUEST | NLM_F_CREATE
        );
        assert_eq!(u32::from_ne_bytes([p[8], p[9], p[10], p[11]]), 7);
        // The nest holds its header and the 4 + 5 (padded to 8) byte kind.
        assert_eq!(u16::from_ne_bytes([p[32], p[33]]), 16);
        assert_eq!(&p[40..45], b"veth\0");
    }

    #[test]
    fn split_walks_aligned_messages() {
        let mut buf = Vec::new();
        for (len, kind) in [(18u32, 1u16), (16, 2)] {
            let mut m = vec![0u8; align(len as usize)];
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            m[4..6].copy_from_slice(&kind.to_ne_bytes());
            buf.extend(m);
        }
        let kinds: Vec<u16> = split(&buf)
            .filter_map(Header::parse)
            .map(|h| h.kind)
            .collect();
        assert_eq!(kinds, vec![1, 2]);
    }
}
