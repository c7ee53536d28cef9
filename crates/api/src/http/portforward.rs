//! `pods/portforward`: `kubectl port-forward` (shared/kubectl-wire.md §7). kubectl 1.31+ first
//! asks for a WebSocket with the subprotocol `SPDY/3.1+portforward.k8s.io`, a plain byte pipe
//! carrying SPDY; older versions, or any after a refused WebSocket, upgrade straight to SPDY/3.1
//! with `X-Stream-Protocol-Version: portforward.k8s.io`. Either way, per local connection the
//! client opens two streams with the same `requestid`: `error` and `data`. The data stream is
//! relayed to a TCP connection made to `localhost:port` inside the pod's network namespace; a
//! connection that cannot be made is reported as text on the error stream, as the kubelet does
//! (client-go then prints it, and, since 1.23, gives up the whole forward:
//! <https://github.com/kubernetes/kubernetes/pull/103526>).

use super::error::ApiError;
use super::objects::Target;
use super::spdy::{self, Session, Stream, StreamWriter, RST_PROTOCOL_ERROR};
use super::{ApiState, NodeBackend};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::debug;

/// The SPDY protocol of port-forward, and the WebSocket subprotocol that tunnels it.
const PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long the second stream of a pair may keep us waiting (the kubelet's
/// `streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod connections are made into.
#[derive(Clone)]
struct PodTarget {
    node: Arc<dyn NodeBackend>,
    pod: String,
    uid: String,
}

pub async fn portforward(
    state: &ApiState,
    target: &Target,
    name: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let key = crate::store::ObjectKey {
        resource: "pods".into(),
        namespace: target.namespace.clone(),
        name: name.to_string(),
    };
    let pod = state.store.get(&key)?.ok_or_else(|| ApiError::NotFound {
        kind: "pods".into(),
        name: name.to_string(),
    })?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    let to = PodTarget {
        node: state.node.clone(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
    };
    if spdy::is_upgrade(&req) {
        return spdy::upgrade(req, &[PROTOCOL], move |session, _| serve(session, to));
    }
    let (mut parts, _body) = req.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| ApiError::bad_request("port-forward needs a SPDY/3.1 or WebSocket upgrade"))?
        .protocols([TUNNEL_PROTOCOL]);
    // The channel-byte WebSocket protocol (`v4.channel.k8s.io`) is not served: refusing it makes
    // kubectl fall back to SPDY.
    if ws.selected_protocol().is_none() {
        return Err(ApiError::bad_request(format!(
            "port-forward over WebSocket needs the {TUNNEL_PROTOCOL} subprotocol"
        )));
    }
    Ok(ws.on_upgrade(move |socket| tunnel(socket, to)))
}

/// Runs SPDY inside the WebSocket's binary messages: an in-memory pipe between the two, one task
/// per direction so that neither can hold up the other.
async fn tunnel(socket: WebSocket, to: PodTarget) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_pipe, mut to_pipe) = tokio::io::split(theirs);
    let (mut sink, mut source) = socket.split();
    let inbound = async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_pipe.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_pipe.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = from_pipe.read(&mut buf).await {
            let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let close = CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    };
    tokio::join!(inbound, outbound, serve(Session::new(ours), to));
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Stream>>>>;

/// Pairs the streams of each request id and forwards each pair, until the client goes away.
async fn serve(mut session: Session, to: PodTarget) {
    let pending: Pending = Arc::default();
    while let Some(stream) = session.accept().await {
        let request = stream.headers.get("requestid").map(str::to_string);
        let kind = stream.headers.get("streamtype");
        let (Some(request), Some("error" | "data")) = (request, kind) else {
            debug!(headers = ?stream.headers, "port-forward stream without requestid or type");
            let _ = stream.writer.reset(RST_PROTOCOL_ERROR).await;
            continue;
        };
        let waiting = pending.lock().ok().and_then(|mut p| p.remove(&request));
        match waiting {
            Some(partner) => {
                if let Err(stream) = partner.send(stream) {
                    let _ = stream.writer.reset(RST_PROTOCOL_ERROR).await;
                }
            }
            None => {
                let (tx, rx) = oneshot::channel();
                if let Ok(mut p) = pending.lock() {
                    p.insert(request.clone(), tx);
                }
                tokio::spawn(pair(stream, rx, pending.clone(), request, to.clone()));
            }
        }
    }
    // Halves still waiting for a partner give up now rather than at their timeout.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    };
}

/// Waits for the other stream of `first`'s request, then forwards.
async fn pair(
    first: Stream,
    partner: oneshot::Receiver<Stream>,
    pending: Pending,
    request: String,
    to: PodTarget,
) {
    let second = match tokio::time::timeout(STREAM_CREATION_TIMEOUT, partner).await {
        Ok(Ok(second)) => second,
        _ => {
            if let Ok(mut p) = pending.lock() {
                p.remove(&request);
            }
            debug!(request, "port-forward stream pair incomplete");
            let _ = first.writer.reset(RST_PROTOCOL_ERROR).await;
            return;
        }
    };
    let (error, data) = match first.headers.get("streamtype") {
        Some("error") => (first, second),
        _ => (second, first),
    };
    if error.headers.get("streamtype") != Some("error")
        || data.headers.get("streamtype") != Some("data")
    {
        let _ = error.writer.reset(RST_PROTOCOL_ERROR).await;
        let _ = data.writer.reset(RST_PROTOCOL_ERROR).await;
        return;
    }
    forward(error, data, to).await;
}

async fn forward(error: Stream, data: Stream, to: PodTarget) {
    let port = data.headers.get("port").unwrap_or("");
    let dialed = match port.parse::<u16>() {
        Ok(p) if p > 0 => to.node.dial(&to.uid, p).await.map_err(|e| describe(p, &e)),
        _ => Err(format!("invalid port {port:?}")),
    };
    match dialed {
        Ok(conn) => relay(conn, data, error.writer).await,
        Err(reason) => {
            debug!(
                pod = to.pod,
                uid = to.uid,
                port,
                reason,
                "port-forward dial failed"
            );
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {reason}",
                to.pod, to.uid
            );
            let _ = error.writer.write(message.into()).await;
            let _ = error.writer.finish().await;
            let _ = data.writer.finish().await;
        }
    }
}

/// How a failed connection reads in kubelet messages (`dial tcp4 127.0.0.1:8000: connect:
/// connection refused`).
fn describe(port: u16, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(_) => format!("dial tcp4 127.0.0.1:{port}: connect: {}", e.kind()),
        None => e.to_string(),
    }
}

/// Copies both ways. The client's FIN half-closes the pod connection; the pod's end of output
/// FINs the data stream and the error stream (which the client waits on before it lets go of the
/// local connection). A reset, or the end of the session, drops everything.
async fn relay(conn: TcpStream, data: Stream, error: StreamWriter) {
    let (mut pod_read, mut pod_write) = conn.into_split();
    let Stream {
        reader: mut from_client,
        writer: to_client,
        ..
    } = data;
    let mut reset = to_client.clone();
    let upstream = async move {
        while let Some(chunk) = from_client.recv().await {
            if pod_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = pod_write.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = pod_read.read(&mut buf).await {
            if to_client
                .write(Bytes::copy_from_slice(&buf[..n]))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = to_client.finish().await;
        let _ = error.finish().await;
    };
    tokio::select! {
        _ = async { tokio::join!(upstream, downstream) } => {}
        _ = reset.closed() => {}
    }
}
