//! The cluster DNS server: UDP and TCP (two-byte length prefix, RFC 1035 4.2.2) on the
//! bridge's address, port 53, answering from the latest [`Records`] the Service controller
//! published.

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

/// Bound sockets, not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: any, the same for both is not guaranteed).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(DnsServer { udp, tcp })
    }

    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn tcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Answers until the task is aborted.
    pub fn serve(self, records: watch::Receiver<Arc<Records>>) -> JoinHandle<()> {
        let DnsServer { udp, tcp } = self;
        let tcp_records = records.clone();
        tokio::spawn(async move {
            let tcp_loop = async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve_tcp(stream, tcp_records.clone()));
                }
            };
            tokio::join!(serve_udp(udp, records), tcp_loop);
        })
    }
}

async fn serve_udp(udp: UdpSocket, records: watch::Receiver<Arc<Records>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let snapshot = records.borrow().clone();
        if let Some(reply) = answer(&snapshot, &buf[..n], Some(wire::UDP_LIMIT)) {
            let _ = udp.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(mut stream: TcpStream, records: watch::Receiver<Arc<Records>>) {
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
        let Some(reply) = answer(&snapshot, &message, None) else {
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

        let mut tcp = TcpStream::connect(tcp_addr).await.expect("connect");
        let q = query_bytes(43, "cluster.local", TYPE_A);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).await.expect("write");
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.expect("len");
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut reply).await.expect("reply");
        assert_eq!(&reply[..2], &[0, 43]);
        task.abort();
    }
}
