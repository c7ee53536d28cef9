//! The cluster DNS server: UDP and TCP (two-byte length prefix, RFC 1035 4.2.2) on the
//! bridge's address, port 53, answering from the latest [`Records`] the Service controller
//! published. Names outside the cluster domain are forwarded to the host's resolvers (UDP
//! to UDP, TCP to TCP) and their answers relayed as they came; SERVFAIL when none answers.

use super::records::{Lookup, Records};
use super::wire::{self, Rcode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long an idle TCP client is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long one upstream server is given to answer a forwarded query (CoreDNS' `forward`
/// waits up to 2 s before trying the next).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer to one message, `limit` bytes at most (UDP).
pub fn answer(records: &Records, message: &[u8], limit: Option<usize>) -> Option<Vec<u8>> {
    let q = match wire::parse_query(message) {
        Ok(q) => q,
        Err(m) => return m.id.map(wire::format_error),
    };
    if q.opcode != 0 || (q.qclass != 1 && q.qclass != 255) {
        return Some(wire::response(&q, Rcode::NotImp, &[], limit));
    }
    Some(match records.lookup(&q.name, q.qtype) {
        Lookup::Found(r) => wire::response(&q, Rcode::NoError, &r, limit),
        Lookup::NoData => wire::response(&q, Rcode::NoError, &[], limit),
        Lookup::NxDomain => wire::response(&q, Rcode::NxDomain, &[], limit),
    })
}

/// Whether a message goes to the upstream servers: a well-formed query for a name outside
/// the cluster, when there is an upstream to ask.
fn forwarded(records: &Records, message: &[u8], upstreams: &[SocketAddr]) -> bool {
    !upstreams.is_empty()
        && wire::parse_query(message).is_ok_and(|q| q.opcode == 0 && !records.is_local(&q.name))
}

/// SERVFAIL for `message` when no upstream answered.
fn server_failure(message: &[u8], limit: Option<usize>) -> Option<Vec<u8>> {
    let q = wire::parse_query(message).ok()?;
    Some(wire::response(&q, Rcode::ServFail, &[], limit))
}

/// Bound sockets, not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    upstreams: Arc<[SocketAddr]>,
    timeout: Duration,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: any, the same for both is not guaranteed).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(DnsServer {
            udp,
            tcp,
            upstreams: Arc::from(Vec::new()),
            timeout: UPSTREAM_TIMEOUT,
        })
    }

    /// Forwards names outside the cluster to `upstreams`, tried in order, each given
    /// `timeout` (without upstreams such names are NXDOMAIN).
    pub fn forward_to(mut self, upstreams: Vec<SocketAddr>, timeout: Duration) -> DnsServer {
        self.upstreams = Arc::from(upstreams);
        self.timeout = timeout;
        self
    }

    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn tcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Answers until the task is aborted.
    pub fn serve(self, records: watch::Receiver<Arc<Records>>) -> JoinHandle<()> {
        let DnsServer {
            udp,
            tcp,
            upstreams,
            timeout,
        } = self;
        let forward = Forward { upstreams, timeout };
        let (tcp_records, tcp_forward) = (records.clone(), forward.clone());
        tokio::spawn(async move {
            let tcp_loop = async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve_tcp(stream, tcp_records.clone(), tcp_forward.clone()));
                }
            };
            tokio::join!(serve_udp(Arc::new(udp), records, forward), tcp_loop);
        })
    }
}

/// Where names outside the cluster go.
#[derive(Debug, Clone)]
struct Forward {
    upstreams: Arc<[SocketAddr]>,
    timeout: Duration,
}

impl Forward {
    /// The first upstream answer to `message` over UDP (the reply as it came, so the client's
    /// EDNS size and flags hold).
    async fn udp(&self, message: &[u8]) -> Option<Vec<u8>> {
        for upstream in self.upstreams.iter() {
            let local: SocketAddr = if upstream.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = UdpSocket::bind(local).await else {
                continue;
            };
            if sock.connect(upstream).await.is_err() || sock.send(message).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 65535];
            let deadline = tokio::time::Instant::now() + self.timeout;
            // Skip stray datagrams: only a reply with the query's ID counts.
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                if n >= 12 && buf[..2] == message[..2] {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        }
        None
    }

    /// The first upstream answer to `message` over TCP.
    async fn tcp(&self, message: &[u8]) -> Option<Vec<u8>> {
        for upstream in self.upstreams.iter() {
            let exchange = async {
                let mut stream = TcpStream::connect(upstream).await.ok()?;
                let mut framed = (message.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(message);
                stream.write_all(&framed).await.ok()?;
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).await.ok()?;
                let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
                stream.read_exact(&mut reply).await.ok()?;
                Some(reply)
            };
            if let Ok(Some(reply)) = tokio::time::timeout(self.timeout, exchange).await {
                return Some(reply);
            }
        }
        None
    }
}

async fn serve_udp(udp: Arc<UdpSocket>, records: watch::Receiver<Arc<Records>>, forward: Forward) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let snapshot = records.borrow().clone();
        let message = &buf[..n];
        if forwarded(&snapshot, message, &forward.upstreams) {
            // Upstreams may be slow: one task per query keeps the cluster names answered.
            let (udp, forward, message) = (udp.clone(), forward.clone(), message.to_vec());
            tokio::spawn(async move {
                let reply = match forward.udp(&message).await {
                    Some(r) => Some(r),
                    None => server_failure(&message, Some(wire::UDP_LIMIT)),
                };
                if let Some(reply) = reply {
                    let _ = udp.send_to(&reply, peer).await;
                }
            });
            continue;
        }
        if let Some(reply) = answer(&snapshot, message, Some(wire::UDP_LIMIT)) {
            let _ = udp.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    records: watch::Receiver<Arc<Records>>,
    forward: Forward,
) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut message).await.is_err() {
            return;
        }
        let snapshot = records.borrow().clone();
        let reply = if forwarded(&snapshot, &message, &forward.upstreams) {
            match forward.tcp(&message).await {
                Some(r) => Some(r),
                None => server_failure(&message, None),
            }
        } else {
            answer(&snapshot, &message, None)
        };
        let Some(reply) = reply else {
            return;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{query_bytes, TYPE_A};
    use std::net::Ipv4Addr;

    /// One query over a new TCP connection to `addr`; the reply.
    async fn tcp_exchange(addr: SocketAddr, q: &[u8]) -> Vec<u8> {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        tcp.write_all(&framed).await.expect("write");
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.expect("len");
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut reply).await.expect("reply");
        reply
    }

    #[tokio::test]
    async fn answers_over_udp_and_tcp_on_loopback() {
        let server = DnsServer::bind((Ipv4Addr::LOCALHOST, 0).into())
            .await
            .expect("bind");
        let (udp_addr, tcp_addr) = (
            server.udp_addr().expect("udp"),
            server.tcp_addr().expect("tcp"),
        );
        let (_tx, rx) = watch::channel(Arc::new(Records::default()));
        let task = server.serve(rx);
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("client");
        client
            .send_to(&query_bytes(42, "example.com", TYPE_A), udp_addr)
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let (n, _) = client.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..2], &[0, 42]);
        assert_eq!(buf[3] & 0x0f, 3, "NXDOMAIN");
        assert!(n > 12);

        let reply = tcp_exchange(tcp_addr, &query_bytes(43, "cluster.local", TYPE_A)).await;
        assert_eq!(&reply[..2], &[0, 43]);
        task.abort();
    }

    /// An IPv4-only cluster: AAAA for a cluster name is NOERROR with no records (as CoreDNS
    /// answers), so a resolver asking A and AAAA together uses the A record; a name that does
    /// not exist is NXDOMAIN for either type. Neither is forwarded.
    #[test]
    fn aaaa_for_cluster_names_is_no_data_and_unknown_names_nxdomain() {
        use crate::dns::wire::TYPE_AAAA;
        use k8s_openapi::api::core::v1::Service;
        let services: Vec<Service> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.10"}}
        ]))
        .expect("services");
        let records = Records::build("cluster.local", &services, &[]);
        let upstream: [SocketAddr; 1] = [(Ipv4Addr::LOCALHOST, 53).into()];
        // (name, type, rcode, answers)
        let table = [
            ("web.default.svc.cluster.local", TYPE_AAAA, 0, 0),
            ("WEB.default.svc.cluster.local", TYPE_AAAA, 0, 0),
            ("web.default.svc.cluster.local", TYPE_A, 0, 1),
            ("default.svc.cluster.local", TYPE_AAAA, 0, 0),
            ("nope.default.svc.cluster.local", TYPE_AAAA, 3, 0),
            ("nope.default.svc.cluster.local", TYPE_A, 3, 0),
            ("web.nope.svc.cluster.local", TYPE_AAAA, 3, 0),
        ];
        for (name, qtype, rcode, answers) in table {
            let q = query_bytes(7, name, qtype);
            assert!(!forwarded(&records, &q, &upstream), "{name} forwarded");
            let reply = answer(&records, &q, Some(wire::UDP_LIMIT)).expect("reply");
            assert_eq!(reply[3] & 0x0f, rcode, "{name} type {qtype}: rcode");
            assert_eq!(
                u16::from_be_bytes([reply[6], reply[7]]),
                answers,
                "{name} type {qtype}: answers"
            );
        }
    }

    /// A fake upstream on loopback answering every UDP and TCP query with the question and
    /// the QR bit set (no records); counts the queries it got.
    async fn fake_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("udp");
        let addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind(addr).await.expect("tcp on the same port");
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reply = |q: &[u8]| {
            let mut r = q.to_vec();
            r[2] |= 0x80;
            r
        };
        let c = count.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = udp.send_to(&reply(&buf[..n]), peer).await;
            }
        });
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.expect("len");
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut q).await.expect("query");
                let r = reply(&q);
                let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&r);
                s.write_all(&framed).await.expect("write");
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn other_names_are_forwarded_cluster_names_are_not() {
        let (upstream, count) = fake_upstream().await;
        let server = DnsServer::bind((Ipv4Addr::LOCALHOST, 0).into())
            .await
            .expect("bind")
            .forward_to(vec![upstream], UPSTREAM_TIMEOUT);
        let (udp_addr, tcp_addr) = (
            server.udp_addr().expect("udp"),
            server.tcp_addr().expect("tcp"),
        );
        let records = Records::build("cluster.local", &[], &[]);
        let (_tx, rx) = watch::channel(Arc::new(records));
        let task = server.serve(rx);
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("client");
        let mut buf = [0u8; 512];
        // Inside the cluster domain: answered here (NXDOMAIN), not forwarded.
        client
            .send_to(
                &query_bytes(7, "nope.default.svc.cluster.local", TYPE_A),
                udp_addr,
            )
            .await
            .expect("send");
        let (n, _) = client.recv_from(&mut buf).await.expect("recv");
        assert_eq!((&buf[..2], buf[3] & 0x0f), (&[0u8, 7][..], 3));
        assert!(n > 12);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Outside: the upstream's reply comes back as it was sent (RCODE 0, same ID).
        let q = query_bytes(8, "example.org", TYPE_A);
        client.send_to(&q, udp_addr).await.expect("send");
        let (n, _) = client.recv_from(&mut buf).await.expect("recv");
        let mut expected = q.clone();
        expected[2] |= 0x80;
        assert_eq!(&buf[..n], &expected[..]);
        // And over TCP.
        let reply = tcp_exchange(tcp_addr, &query_bytes(9, "example.org", TYPE_A)).await;
        assert_eq!(&reply[..2], &[0, 9]);
        assert_eq!(reply[2] & 0x80, 0x80);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_upstream_is_a_server_failure() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("silent");
        let server = DnsServer::bind((Ipv4Addr::LOCALHOST, 0).into())
            .await
            .expect("bind")
            .forward_to(
                vec![silent.local_addr().expect("addr")],
                Duration::from_millis(200),
            );
        let udp_addr = server.udp_addr().expect("udp");
        let (_tx, rx) = watch::channel(Arc::new(Records::build("cluster.local", &[], &[])));
        let task = server.serve(rx);
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("client");
        client
            .send_to(&query_bytes(10, "example.org", TYPE_A), udp_addr)
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let (_, _) = client.recv_from(&mut buf).await.expect("recv");
        assert_eq!((&buf[..2], buf[3] & 0x0f), (&[0u8, 10][..], 2), "SERVFAIL");
        task.abort();
    }
}
