//! `hostPort`: connections to `hostIP:hostPort` on the host are translated by the kernel to
//! `podIP:containerPort`, as a NodePort is. The bridge's node table (`nft::guard`) holds two
//! maps, `hostports` (`proto . port`, for every local address, `hostIP` unset) and
//! `hostports_ip` (`addr . proto . port`), and its nat chains look connections up in them in
//! prerouting (from outside and from pods) and output (from the host itself, 127.0.0.1
//! included: the bridge has `route_localnet`, and translated traffic onto the bridge is
//! masqueraded). A pod's entries are map elements written over netlink (`peapod_sys::nftables`),
//! one message each: no `nft` run on a pod's start or delete. This is CNI's portmap plugin
//! (<https://www.cni.dev/plugins/current/meta/portmap/>) with maps in place of per-pod chains.
//!
//! Each port is also held by a bound, non-listening socket for the pod's life (the kubelet's
//! old "hostport holder"): a port something else has is refused before the pod is created,
//! and nothing else can take it while the pod runs.
//!
//! The elements of a pod are recorded in `<ipam dir>/<ip>.hostports` before they are written,
//! so that releasing the address (pod deleted, or found gone by a restarted daemon) removes
//! them.
//!
//! Without a pod network (`PEAPOD_NETWORK=none`) there is no address to translate to: a TCP
//! host port is then a userspace relay into `127.0.0.1:containerPort` in the pod's namespace.

use crate::error::{io, NetError};
use crate::service::rules::Protocol;
use k8s_openapi::api::core::v1::Pod;
use peapod_sys::net::Transport;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The maps of the bridge's node table (see `nft::guard`).
pub(crate) const MAP_ANY: &str = "hostports";
pub(crate) const MAP_IP: &str = "hostports_ip";

#[derive(Debug, thiserror::Error)]
pub enum HostPortError {
    #[error("host port {addr} is already in use")]
    InUse { addr: SocketAddr },
    #[error("listen on host port {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One `hostPort` of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: Protocol,
    /// `None`: every local address (`hostIP` unset or `0.0.0.0`).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// The host ports of `pod` (TCP and UDP; SCTP and IPv6 host addresses are not published).
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|hp| *hp > 0) else {
                continue;
            };
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let host_ip = match p.host_ip.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => match s.parse::<Ipv4Addr>() {
                    Ok(ip) if ip.is_unspecified() => None,
                    Ok(ip) => Some(ip),
                    Err(_) => continue,
                },
            };
            out.push(HostPort {
                protocol,
                host_ip,
                host_port: host_port as u16,
                container_port: p.container_port as u16,
            });
        }
    }
    out
}

impl HostPort {
    fn host_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
        )
    }

    /// The map and key of this port's element: each field padded to 4 bytes, network order.
    pub(crate) fn key(&self) -> (&'static str, Vec<u8>) {
        let proto = match self.protocol {
            Protocol::Tcp => 6u8,
            Protocol::Udp => 17u8,
        };
        let [p0, p1] = self.host_port.to_be_bytes();
        let tail = [proto, 0, 0, 0, p0, p1, 0, 0];
        match self.host_ip {
            None => (MAP_ANY, tail.to_vec()),
            Some(ip) => (MAP_IP, [ip.octets().as_slice(), &tail].concat()),
        }
    }

    /// The element's value: `pod_ip . containerPort`.
    pub(crate) fn value(&self, pod_ip: Ipv4Addr) -> Vec<u8> {
        let [p0, p1] = self.container_port.to_be_bytes();
        [pod_ip.octets().as_slice(), &[p0, p1, 0, 0]].concat()
    }

    /// One line of the record file.
    fn line(&self) -> String {
        let proto = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        format!(
            "{proto} {} {} {}\n",
            self.host_addr().ip(),
            self.host_port,
            self.container_port
        )
    }

    fn parse_line(line: &str) -> Option<HostPort> {
        let mut w = line.split_whitespace();
        let protocol = Protocol::parse(Some(w.next()?))?;
        let ip: Ipv4Addr = w.next()?.parse().ok()?;
        Some(HostPort {
            protocol,
            host_ip: (!ip.is_unspecified()).then_some(ip),
            host_port: w.next()?.parse().ok()?,
            container_port: w.next()?.parse().ok()?,
        })
    }
}

/// Writes the record of `ports` to `record`.
pub(crate) fn write_record(record: &Path, ports: &[HostPort]) -> Result<(), NetError> {
    let text: String = ports.iter().map(HostPort::line).collect();
    std::fs::write(record, text).map_err(io("write", record))
}

/// The ports recorded in `record` (none when there is no record).
pub(crate) fn read_record(record: &Path) -> Vec<HostPort> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(HostPort::parse_line)
        .collect()
}

/// A host port held for a pod: reserved (pod network) or relayed (none).
#[derive(Debug)]
pub struct HostPortHold {
    pub port: HostPort,
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// Bound, not listening: the kernel translates the traffic before it could arrive.
    Reserved {
        _socket: OwnedFd,
    },
    Relay(TcpListener),
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> HostPortError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        HostPortError::InUse { addr }
    } else {
        HostPortError::Bind { addr, source }
    }
}

impl HostPortHold {
    /// Holds `port` with a bound socket while the kernel translates it (pod network).
    pub fn reserve(port: HostPort) -> Result<HostPortHold, HostPortError> {
        let addr = port.host_addr();
        let transport = match port.protocol {
            Protocol::Tcp => Transport::Tcp,
            Protocol::Udp => Transport::Udp,
        };
        let fd = peapod_sys::net::hold_port(transport, addr)
            .map_err(|e| bind_error(addr.into(), e.source.into()))?;
        Ok(HostPortHold {
            port,
            held: Held::Reserved { _socket: fd },
        })
    }

    /// Listens on TCP `port` to relay it into a pod without an address (no pod network).
    pub async fn listen(port: HostPort) -> Result<HostPortHold, HostPortError> {
        let addr = SocketAddr::from(port.host_addr());
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error(addr, e))?;
        Ok(HostPortHold {
            port,
            held: Held::Relay(listener),
        })
    }

    /// For a relayed port: relays every accepted connection into the network namespace pinned
    /// at `netns` until the task is aborted. A reserved port needs no task (`None`).
    pub fn serve(self, netns: &Path) -> Option<JoinHandle<()>> {
        let Held::Relay(listener) = self.held else {
            return None;
        };
        let netns = netns.to_path_buf();
        let port = self.port.container_port;
        Some(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, peer)) = listener.accept().await else {
                    continue;
                };
                let netns = netns.clone();
                tokio::spawn(async move {
                    match dial_in_netns(netns, port).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(error) => {
                            tracing::debug!(%peer, port, %error, "host port connection refused in pod")
                        }
                    }
                });
            }
        }))
    }
}

/// Connects to `127.0.0.1:port` from inside the network namespace pinned at `netns`.
pub async fn dial_in_netns(netns: PathBuf, port: u16) -> std::io::Result<TcpStream> {
    dial_addr_in_netns(netns, Ipv4Addr::LOCALHOST, port).await
}

/// Connects to `addr:port` from inside the network namespace pinned at `netns`.
pub async fn dial_addr_in_netns(
    netns: PathBuf,
    addr: Ipv4Addr,
    port: u16,
) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = peapod_sys::ns::enter_net(&netns)
            .map_err(std::io::Error::other)
            .and_then(|()| std::net::TcpStream::connect((addr, port)));
        let _ = tx.send(result);
    });
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("dialer thread ended"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_keys_values_and_records() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [
            {"name": "a", "ports": [
                {"containerPort": 8000, "hostPort": 18000},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 80},
                {"containerPort": 81, "hostPort": 81, "protocol": "SCTP"},
                {"containerPort": 82, "hostPort": 82, "hostIP": "0.0.0.0"}]}]}}))
        .expect("pod");
        let ports = host_ports(&pod);
        assert_eq!(ports.len(), 3);
        let pod_ip = Ipv4Addr::new(10, 88, 0, 2);
        // What `nft --debug=netlink add element` sends for `tcp . 18000 : 10.88.0.2 . 8000`.
        assert_eq!(
            ports[0].key(),
            (MAP_ANY, vec![6, 0, 0, 0, 0x46, 0x50, 0, 0])
        );
        assert_eq!(ports[0].value(pod_ip), vec![10, 88, 0, 2, 0x1f, 0x40, 0, 0]);
        assert_eq!(
            ports[1].key(),
            (MAP_IP, vec![127, 0, 0, 1, 17, 0, 0, 0, 0x14, 0xe9, 0, 0])
        );
        assert_eq!(ports[2].host_ip, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("10.88.0.2.hostports");
        write_record(&record, &ports).expect("write");
        assert_eq!(read_record(&record), ports);
        assert_eq!(read_record(&dir.path().join("none")), vec![]);
    }
}
