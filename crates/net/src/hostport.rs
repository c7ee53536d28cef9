//! `hostPort`: the host accepts on `hostIP:hostPort` and each connection is relayed to
//! `127.0.0.1:containerPort` inside the pod's network namespace.
//!
//! The choice (a proxy, not veth + NAT) keeps pods without a bridge and needs no firewall rules;
//! the pod sees connections from its own loopback. The socket toward the pod is created on a
//! short-lived `std::thread` that enters the pod's network namespace (a socket belongs to the
//! namespace it was created in), never on a tokio worker. UDP host ports are not relayed yet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

/// A host port bound before the pod starts, so a taken port fails the pod up front.
#[derive(Debug)]
pub struct HostPortListener {
    listener: TcpListener,
    pub host: SocketAddr,
    pub container_port: u16,
}

impl HostPortListener {
    /// Binds `host_ip:host_port` (all addresses when `host_ip` is empty, as Kubernetes does).
    pub async fn bind(
        host_ip: Option<&str>,
        host_port: u16,
        container_port: u16,
    ) -> Result<HostPortListener, HostPortError> {
        let ip: IpAddr = host_ip
            .and_then(|s| s.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let host = SocketAddr::new(ip, host_port);
        let listener = TcpListener::bind(host).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                HostPortError::InUse { addr: host }
            } else {
                HostPortError::Bind { addr: host, source }
            }
        })?;
        Ok(HostPortListener {
            listener,
            host,
            container_port,
        })
    }

    /// Relays every accepted connection into the pod's network namespace pinned at `netns`,
    /// until the returned task is aborted.
    pub fn serve(self, netns: &Path) -> JoinHandle<()> {
        let netns = netns.to_path_buf();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = self.listener.accept().await else {
                    continue;
                };
                let netns = netns.clone();
                let port = self.container_port;
                tokio::spawn(async move {
                    match dial_in_netns(netns, port).await {
                        Ok(outbound) => relay(inbound, outbound).await,
                        Err(error) => {
                            tracing::debug!(%peer, port, %error, "host port connection refused in pod")
                        }
                    }
                });
            }
        })
    }
}

async fn relay(mut inbound: TcpStream, mut outbound: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// Connects to `127.0.0.1:port` from inside the network namespace pinned at `netns`.
pub async fn dial_in_netns(netns: PathBuf, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = peapod_sys::ns::enter_net(&netns)
            .map_err(std::io::Error::other)
            .and_then(|()| std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)));
        let _ = tx.send(result);
    });
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("dialer thread ended"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}
