//! gRPC probes as the kubelet runs them (`pkg/probe/grpc`): one unary call of the standard
//! health service, `grpc.health.v1.Health/Check`, over cleartext HTTP/2, dialled inside the
//! pod's network namespace like the httpGet and tcpSocket probes. `SERVING` is a success;
//! any other answer, an RPC error, a connection error or the timeout is a failure with the
//! kubelet's message
//! (<https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/#define-a-grpc-liveness-probe>,
//! <https://github.com/grpc/grpc/blob/master/doc/health-checking.md>).
//!
//! The two messages are a handful of bytes, so they are encoded by hand
//! (<https://protobuf.dev/programming-guides/encoding/>), framed as gRPC over HTTP/2 says
//! (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>).

use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The method every gRPC probe calls.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// A health answer is two bytes; anything this big is not one.
const MAX_MESSAGE: usize = 64 * 1024;

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

/// `HealthCheckRequest{service}` as protobuf: field 1, a length-delimited string, left out
/// when empty (proto3 omits defaults).
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// The `status` of a `HealthCheckResponse` (0, UNKNOWN, when absent); other fields skipped.
pub fn decode_response(mut msg: &[u8]) -> Result<i32, String> {
    let mut status = 0;
    while !msg.is_empty() {
        let key = take_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            // The low 32 bits, as protobuf reads an enum from a varint.
            (1, 0) => status = take_varint(&mut msg)? as i32,
            (_, 0) => {
                take_varint(&mut msg)?;
            }
            (_, 1) => skip(&mut msg, 8)?,
            (_, 2) => {
                let len = take_varint(&mut msg)?;
                skip(&mut msg, usize::try_from(len).map_err(|_| truncated())?)?;
            }
            (_, 5) => skip(&mut msg, 4)?,
            (_, wire) => return Err(format!("unsupported wire type {wire}")),
        }
    }
    Ok(status)
}

/// The name of a serving status as Go's generated `String()` prints it.
pub fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// A message with gRPC's length prefix: a compressed flag (0) and a big-endian length.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The first whole message of a response body: `None` until it has all arrived.
pub fn unframe(body: &[u8]) -> Result<Option<&[u8]>, String> {
    let Some(head) = body.get(..5) else {
        return Ok(None);
    };
    if head[0] != 0 {
        return Err("compressed response message".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(format!("response message of {len} bytes"));
    }
    Ok(body.get(5..5 + len))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(msg: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = msg.split_first().ok_or_else(truncated)?;
        *msg = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn skip(msg: &mut &[u8], n: usize) -> Result<(), String> {
    *msg = msg.get(n..).ok_or_else(truncated)?;
    Ok(())
}

fn truncated() -> String {
    "truncated protobuf message".into()
}

/// gRPC status codes by number, as Go's `codes.Code` prints them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| (*n).to_string())
}

const UNIMPLEMENTED: u32 = 12;
const DEADLINE_EXCEEDED: u32 = 4;

/// How an RPC failed before a health answer came back.
#[derive(Debug)]
enum RpcError {
    /// A gRPC status other than OK (`grpc-status`, `grpc-message`).
    Status(u32, String),
    /// HTTP/2 or framing trouble, already phrased.
    Transport(String),
}

impl RpcError {
    /// The kubelet's message for a failed health RPC.
    fn message(self, timeout: Duration) -> String {
        match self {
            RpcError::Status(UNIMPLEMENTED, desc) => format!(
                "error: this server does not implement the grpc health protocol \
                 (grpc.health.v1.Health): {desc}"
            ),
            RpcError::Status(DEADLINE_EXCEEDED, _) => format!(
                "timeout: health rpc did not complete within {}",
                go_duration(timeout)
            ),
            RpcError::Status(code, desc) => format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {desc}",
                code_name(code)
            ),
            RpcError::Transport(e) => format!("error: health rpc probe failed: {e}"),
        }
    }
}

fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The probe: dial with `dial` (into the pod's network namespace), then one health check of
/// `service`, everything before `deadline`; `Err` carries the kubelet's failure message.
pub async fn probe<S, F>(
    dial: F,
    addr: std::net::SocketAddrV4,
    service: &str,
    timeout: Duration,
    deadline: Instant,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: std::future::Future<Output = std::io::Result<S>>,
{
    let addr = addr.to_string();
    let io = match tokio::time::timeout_at(deadline, dial).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return Err(format!("error: failed to connect service at {addr:?}: {e}")),
        Err(_) => {
            return Err(format!(
                "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
                go_duration(timeout)
            ))
        }
    };
    match tokio::time::timeout_at(deadline, check(io, &addr, service)).await {
        Ok(Ok(SERVING)) => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "service unhealthy (responded with {:?})",
            status_name(status)
        )),
        Ok(Err(e)) => Err(e.message(timeout)),
        Err(_) => Err(RpcError::Status(DEADLINE_EXCEEDED, String::new()).message(timeout)),
    }
}

/// One `Check` call on a fresh HTTP/2 connection over `io`; the serving status it answered.
/// The connection is driven beside the call and dropped (closed) with it.
async fn check<S>(io: S, addr: &str, service: &str) -> Result<i32, RpcError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let transport = |e: h2::Error| RpcError::Transport(format!("connection error: {e}"));
    let (client, connection) = h2::client::handshake(io).await.map_err(transport)?;
    let call = async move {
        let mut client = client.ready().await.map_err(transport)?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{CHECK_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "kube-probe/1.33")
            .body(())
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let (response, mut send) = client.send_request(request, false).map_err(transport)?;
        send.send_data(Bytes::from(frame(&encode_request(service))), true)
            .map_err(transport)?;
        let response = response.await.map_err(transport)?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(RpcError::Transport(format!(
                "rpc error: code = Unknown desc = unexpected HTTP status code received from \
                 server: {}",
                status.as_u16()
            )));
        }
        // A "trailers-only" answer carries grpc-status in its headers.
        grpc_status(response.headers())?;
        let mut body = response.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
            if data.len() > MAX_MESSAGE + 5 {
                return Err(RpcError::Transport("response too large".into()));
            }
        }
        match body.trailers().await.map_err(transport)? {
            Some(trailers) => grpc_status(&trailers)?,
            None => {
                return Err(RpcError::Status(
                    13,
                    "server closed the stream without sending trailers".into(),
                ))
            }
        }
        let msg = unframe(&data)
            .map_err(RpcError::Transport)?
            .ok_or_else(|| RpcError::Transport("no response message".into()))?;
        decode_response(msg).map_err(RpcError::Transport)
    };
    tokio::select! {
        result = call => result,
        ended = connection => Err(RpcError::Transport(match ended {
            Ok(()) => "connection closed".into(),
            Err(e) => format!("connection error: {e}"),
        })),
    }
}

/// `Err` for a `grpc-status` other than 0 in `headers`; `Ok` when it is 0 or absent.
fn grpc_status(headers: &http::HeaderMap) -> Result<(), RpcError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code: u32 = code.to_str().ok().and_then(|c| c.parse().ok()).unwrap_or(2);
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    // `grpc-message` is percent-encoded (`+` is itself).
    Err(RpcError::Status(
        code,
        peapod_api::http::unescape_percent(message, false),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_as_protobuf() {
        assert_eq!(encode_request(""), Vec::<u8>::new());
        assert_eq!(encode_request("ab"), vec![0x0a, 2, b'a', b'b']);
        let long = "s".repeat(200);
        let encoded = encode_request(&long);
        assert_eq!(&encoded[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(encoded.len(), 203);
    }

    #[test]
    fn responses_decode_as_protobuf() {
        let cases: [(&[u8], Result<i32, ()>); 9] = [
            (&[], Ok(0)),
            (&[0x08, 0x01], Ok(1)),
            (&[0x08, 0x02], Ok(2)),
            (&[0x08, 0x03], Ok(3)),
            // Unknown fields of every wire type are skipped; the last status wins.
            (
                &[
                    0x10, 0x05, 0x08, 0x02, 0x1a, 0x01, b'x', 0x25, 0, 0, 0, 0, 0x08, 0x01,
                ],
                Ok(1),
            ),
            (&[0x29, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x07], Ok(7)),
            (&[0x08], Err(())),
            (&[0x1a, 0x05, b'x'], Err(())),
            (&[0x0b], Err(())),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_response(bytes).map_err(|_| ()), want, "{bytes:?}");
        }
    }

    #[test]
    fn status_names_as_go_prints_them() {
        let names: Vec<String> = [0, 1, 2, 3, 9].into_iter().map(status_name).collect();
        assert_eq!(
            names,
            ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", "9"]
        );
        assert_eq!(code_name(12), "Unimplemented");
        assert_eq!(code_name(40), "Code(40)");
    }

    #[test]
    fn messages_are_framed() {
        assert_eq!(frame(&[0x08, 0x01]), vec![0, 0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 0x08]), Ok(None));
        assert_eq!(
            unframe(&[0, 0, 0, 0, 2, 0x08, 0x01, 0xff]),
            Ok(Some(&[0x08, 0x01][..]))
        );
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert_eq!(
            peapod_api::http::unescape_percent("unknown%20service%3A x", false),
            "unknown service: x"
        );
    }

    /// What the test server answers.
    #[derive(Clone, Copy)]
    enum Answer {
        Status(i32),
        /// A trailers-only response with this grpc-status.
        Error(u32),
        /// Never answers.
        Silent,
    }

    /// An HTTP/2 health server on 127.0.0.1 answering every call with `answer`; its port and
    /// the service names it was asked about.
    async fn server(answer: Answer) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (asked, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            let mut conn = h2::server::handshake(socket).await.expect("handshake");
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                assert_eq!(request.uri().path(), CHECK_PATH);
                let mut body = request.into_body();
                let mut data = Vec::new();
                while let Some(Ok(chunk)) = body.data().await {
                    data.extend_from_slice(&chunk);
                }
                let msg = unframe(&data).expect("frame").expect("whole");
                let service = String::from_utf8(msg.get(2..).unwrap_or(&[]).to_vec());
                let _ = asked.send(service.expect("utf-8"));
                let head = http::Response::builder().header("content-type", "application/grpc");
                match answer {
                    Answer::Silent => std::future::pending::<()>().await,
                    Answer::Error(code) => {
                        let head = head
                            .header("grpc-status", code.to_string())
                            .header("grpc-message", "unknown%20service")
                            .body(())
                            .expect("response");
                        respond.send_response(head, true).expect("send");
                    }
                    Answer::Status(status) => {
                        let head = head.body(()).expect("response");
                        let mut send = respond.send_response(head, false).expect("send");
                        let reply = frame(&[0x08, status as u8]);
                        send.send_data(reply.into(), false).expect("data");
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        send.send_trailers(trailers).expect("trailers");
                    }
                }
            }
        });
        (port, seen)
    }

    async fn probe_port(port: u16, service: &str) -> Result<(), String> {
        let timeout = Duration::from_secs(1);
        let dial = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
        probe(dial, addr, service, timeout, Instant::now() + timeout).await
    }

    #[tokio::test]
    async fn answers_become_the_kubelets_results() {
        let cases = [
            (Answer::Status(1), Ok(())),
            (
                Answer::Status(2),
                Err("service unhealthy (responded with \"NOT_SERVING\")".to_string()),
            ),
            (
                Answer::Error(12),
                Err(
                    "error: this server does not implement the grpc health protocol \
                     (grpc.health.v1.Health): unknown service"
                        .to_string(),
                ),
            ),
            (
                Answer::Error(5),
                Err(
                    "error: health rpc probe failed: rpc error: code = NotFound desc = \
                     unknown service"
                        .to_string(),
                ),
            ),
            (
                Answer::Silent,
                Err("timeout: health rpc did not complete within 1s".to_string()),
            ),
        ];
        for (answer, want) in cases {
            let (port, mut asked) = server(answer).await;
            assert_eq!(probe_port(port, "shop").await, want);
            assert_eq!(asked.recv().await.as_deref(), Some("shop"));
        }
    }

    #[tokio::test]
    async fn a_closed_port_fails_to_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = probe_port(port, "").await.expect_err("nothing listens");
        assert!(
            err.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{port}\": "
            )),
            "{err}"
        );
    }
}
