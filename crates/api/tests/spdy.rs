//! SPDY/3.1 for exec and port-forward: the framing against byte vectors (two SYN_STREAMs as
//! kubectl 1.29 really sent them, captured off the wire), the session over an in-memory pipe,
//! and the API server end to end on a loopback port with a fake node (an echo server behind
//! `dial`, `sh` behind `exec_command`), driven by a small SPDY client built from the same codec.

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use peapod_api::http::error::ApiError;
use peapod_api::http::logs::{LogRequest, LogStream};
use peapod_api::http::spdy::{self, Decoder, Encoder, Frame, Headers, Session, FLAG_FIN};
use peapod_api::http::{ApiState, NodeBackend};
use peapod_api::store::{ObjectKey, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = decoder.decode(&mut buf).expect("decode") {
        frames.push(f);
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    frames
}

// ---------------------------------------------------------------------------------------------
// Framing.

#[test]
fn dictionary_is_the_spdy3_one() {
    assert_eq!(spdy::dictionary().len(), 1423);
    // zlib writes the dictionary's Adler-32 after its header: the id the Go client also writes.
    let mut encoder = Encoder::new().expect("encoder");
    let mut out = BytesMut::new();
    let reply = Frame::SynReply {
        stream_id: 1,
        flags: 0,
        headers: Headers::default(),
    };
    encoder.encode(&reply, &mut out).expect("encode");
    let block = &out[12..];
    assert_eq!(block[0], 0x78);
    assert_ne!(block[1] & 0x20, 0, "FDICT set");
    assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
}

/// The first two SYN_STREAMs of `kubectl.1.29 port-forward` (one zlib stream across both).
#[test]
fn inflates_what_kubectl_sends() {
    let first = unhex("800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616060c0c0c0c0590489c64c50f2663400000000ffff");
    let second = unhex("800300010000001800000003000000000000c2aa19540e2512d60b000000ffff");
    let mut decoder = Decoder::default();
    let frames = decode_all(&mut decoder, &[first, second].concat());
    let expect = |id, kind| Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: headers(&[("streamtype", kind), ("port", "8000"), ("requestid", "0")]),
    };
    assert_eq!(frames, vec![expect(1, "error"), expect(3, "data")]);
}

#[test]
fn frames_round_trip_through_one_context_per_direction() {
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 2,
            flags: FLAG_FIN,
            headers: headers(&[("streamtype", "stdout")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Headers::default(),
        },
        Frame::Headers {
            stream_id: 3,
            flags: 0,
            headers: headers(&[("streamtype", "stdout"), ("x", "y\0z")]),
        },
        Frame::RstStream {
            stream_id: 5,
            status: 5,
        },
        Frame::Settings {
            flags: 1,
            body: Bytes::from_static(&[0, 0, 0, 0]),
        },
        Frame::Ping { id: 7 },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        },
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 65536,
        },
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Bytes::new(),
        },
    ];
    let mut encoder = Encoder::new().expect("encoder");
    let mut wire = BytesMut::new();
    for f in &frames {
        encoder.encode(f, &mut wire).expect("encode");
    }
    assert_eq!(decode_all(&mut Decoder::default(), &wire), frames);
}

#[test]
fn frames_wait_for_all_their_bytes() {
    let mut encoder = Encoder::new().expect("encoder");
    let mut wire = BytesMut::new();
    let ping = Frame::Ping { id: 1 };
    encoder.encode(&ping, &mut wire).expect("encode");
    assert_eq!(&wire[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = decoder.decode(&mut buf).expect("decode");
        assert_eq!(got.is_some(), i == wire.len() - 1, "after byte {i}");
    }
}

/// A peer compressing without the dictionary, as the capture server did: still readable.
#[test]
fn inflates_blocks_without_the_dictionary() {
    let mut raw = Vec::new();
    raw.extend_from_slice(&1u32.to_be_bytes());
    for s in ["streamtype", "error"] {
        raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
        raw.extend_from_slice(s.as_bytes());
    }
    let mut z = flate2::Compress::new(flate2::Compression::default(), true);
    let mut block = Vec::with_capacity(256);
    z.compress_vec(&raw, &mut block, flate2::FlushCompress::Sync)
        .expect("deflate");
    let mut wire = vec![0x80, 3, 0, 2, 0];
    wire.extend_from_slice(&((block.len() + 4) as u32).to_be_bytes()[1..]);
    wire.extend_from_slice(&1u32.to_be_bytes());
    wire.extend_from_slice(&block);
    let frames = decode_all(&mut Decoder::default(), &wire);
    assert_eq!(
        frames,
        vec![Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: headers(&[("streamtype", "error")])
        }]
    );
}

#[test]
fn refuses_other_versions_and_garbage_blocks() {
    let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
    assert!(Decoder::default().decode(&mut buf).is_err());
    let mut buf = BytesMut::from(&[0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
    assert!(Decoder::default().decode(&mut buf).is_err());
    let mut buf = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1][..]);
    assert!(
        Decoder::default().decode(&mut buf).is_err(),
        "short RST_STREAM"
    );
}

// ---------------------------------------------------------------------------------------------
// A client for the tests: the codec over any byte pipe.

struct Client<T> {
    io: T,
    buf: BytesMut,
    encoder: Encoder,
    decoder: Decoder,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Client<T> {
    fn new(io: T, buf: BytesMut) -> Client<T> {
        Client {
            io,
            buf,
            encoder: Encoder::new().expect("encoder"),
            decoder: Decoder::default(),
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out).expect("encode");
        self.io.write_all(&out).await.expect("write");
    }

    async fn open(&mut self, stream_id: u32, pairs: &[(&str, &str)]) {
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers(pairs),
        })
        .await;
    }

    async fn data(&mut self, stream_id: u32, data: &[u8], flags: u8) {
        let data = Bytes::copy_from_slice(data);
        self.send(Frame::Data {
            stream_id,
            flags,
            data,
        })
        .await;
    }

    /// The next frame; `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        let read = async {
            loop {
                if let Some(f) = self.decoder.decode(&mut self.buf).expect("decode") {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a frame in time")
    }

    /// Reads frames until each of `streams` has been finished by the server; returns their
    /// data. Every stream must have had its SYN_REPLY first.
    async fn until_fin(&mut self, streams: &[u32]) -> HashMap<u32, Vec<u8>> {
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut open: Vec<u32> = streams.to_vec();
        let mut replied = Vec::new();
        while !open.is_empty() {
            match self.next().await.expect("connection open") {
                Frame::SynReply { stream_id, .. } => replied.push(stream_id),
                Frame::Data {
                    stream_id,
                    flags,
                    data: d,
                } => {
                    assert!(replied.contains(&stream_id), "DATA before SYN_REPLY");
                    data.entry(stream_id).or_default().extend_from_slice(&d);
                    if flags & FLAG_FIN != 0 {
                        open.retain(|s| *s != stream_id);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        data
    }
}

// ---------------------------------------------------------------------------------------------
// The session.

#[tokio::test]
async fn session_streams_ping_reset_and_end() {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let mut session = Session::new(server_io);
    let mut client = Client::new(client_io, BytesMut::new());

    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));

    client.open(1, &[("streamtype", "data")]).await;
    let mut stream = session.accept().await.expect("stream");
    assert_eq!(stream.headers.get("StreamType"), Some("data"));
    assert!(matches!(
        client.next().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    client.data(1, b"up", 0).await;
    client.data(1, b"", FLAG_FIN).await;
    assert_eq!(stream.reader.recv().await.as_deref(), Some(&b"up"[..]));
    assert_eq!(stream.reader.recv().await, None, "FIN ends the reader");

    stream
        .writer
        .write(Bytes::from_static(b"down"))
        .await
        .expect("write");
    stream.writer.finish().await.expect("finish");
    let fin = Frame::Data {
        stream_id: 1,
        flags: FLAG_FIN,
        data: Bytes::new(),
    };
    assert!(matches!(client.next().await, Some(Frame::Data { ref data, .. }) if data == "down"));
    assert_eq!(client.next().await, Some(fin));

    // A reset wakes whoever waits on the stream, and writes fail from then on.
    let mut watcher = stream.writer.clone();
    client
        .send(Frame::RstStream {
            stream_id: 1,
            status: 5,
        })
        .await;
    tokio::time::timeout(WAIT, watcher.closed())
        .await
        .expect("reset seen");
    assert!(stream.writer.write(Bytes::from_static(b"x")).await.is_err());

    // The client leaves: the session ends, and so do the streams still held.
    client.open(3, &[("streamtype", "error")]).await;
    let mut other = session.accept().await.expect("stream 3");
    drop(client);
    assert!(session.accept().await.is_none());
    tokio::time::timeout(WAIT, other.writer.closed())
        .await
        .expect("end of connection closes streams");
}

// ---------------------------------------------------------------------------------------------
// The API server with a fake node.

/// `dial(uid, 8000)` reaches an echo server that answers `echo:` + everything it read once the
/// client half-closes; any other port is refused. `exec_command` runs the argv on the host.
struct FakeNode {
    echo: u16,
    refused: u16,
}

impl NodeBackend for FakeNode {
    fn exec_command(
        &self,
        _uid: &str,
        _pod: &str,
        _container: &str,
        exec: &peapod_api::http::exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError> {
        let command = &exec.command;
        let mut cmd = std::process::Command::new(&command[0]);
        cmd.args(&command[1..]);
        Ok(cmd)
    }

    fn attach_command(
        &self,
        _uid: &str,
        _pod: &str,
        _container: &str,
        _attach: &peapod_api::http::exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError> {
        Err(ApiError::bad_request("no attach here"))
    }

    fn dial(&self, _uid: &str, port: u16) -> BoxFuture<'static, std::io::Result<TcpStream>> {
        let to = if port == 8000 {
            self.echo
        } else {
            self.refused
        };
        Box::pin(TcpStream::connect(("127.0.0.1", to)))
    }

    fn logs(&self, _request: LogRequest) -> Result<LogStream, ApiError> {
        Err(ApiError::bad_request("no logs here"))
    }
}

async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if conn.read_to_end(&mut got).await.is_ok() {
                    let _ = conn.write_all(&[b"echo:", &got[..]].concat()).await;
                }
            });
        }
    });
    port
}

struct Server {
    port: u16,
    uid: String,
    _dir: tempfile::TempDir,
}

async fn start_server(phase: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store.redb")).expect("store");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase}});
    let created: Value = store
        .create(&ObjectKey::namespaced("pods", "default", "web"), pod)
        .expect("create pod");
    let uid = created["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let node = Arc::new(FakeNode {
        echo: echo_server().await,
        refused,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = Arc::new(ApiState {
        store,
        node,
        node_name: "node".into(),
        server_address: format!("127.0.0.1:{port}"),
    });
    let router = peapod_api::http::router(state);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = builder.serve_connection_with_upgrades(io, service).await;
            });
        }
    });
    Server {
        port,
        uid,
        _dir: dir,
    }
}

/// Sends an upgrade request; returns the status line, the response head and any bytes after it.
async fn upgrade(port: u16, path: &str, protocols: &[&str]) -> (TcpStream, String, BytesMut) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let versions: String = protocols
        .iter()
        .map(|p| format!("X-Stream-Protocol-Version: {p}\r\n"))
        .collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n{versions}Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut buf = BytesMut::new();
    let head = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf.split_to(end + 4);
            break String::from_utf8_lossy(&head).into_owned();
        }
        let n = tokio::time::timeout(WAIT, tcp.read_buf(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response");
    };
    (tcp, head, buf)
}

#[tokio::test]
async fn port_forward_over_spdy() {
    let server = start_server("Running").await;
    let path = "/api/v1/namespaces/default/pods/web/portforward";
    let (tcp, head, rest) = upgrade(server.port, path, &["portforward.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("x-stream-protocol-version: portforward.k8s.io"));
    let mut client = Client::new(tcp, rest);

    // One connection, as kubectl makes it: error stream (half-closed at once), then data.
    let pf = |kind, port, id| [("streamtype", kind), ("port", port), ("requestid", id)];
    client.open(1, &pf("error", "8000", "0")).await;
    client.data(1, b"", FLAG_FIN).await;
    client.open(3, &pf("data", "8000", "0")).await;
    client.data(3, b"hello", 0).await;
    client.data(3, b"", FLAG_FIN).await;
    let got = client.until_fin(&[1, 3]).await;
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"echo:hello"[..]));
    assert!(got.get(&1).is_none_or(Vec::is_empty), "{got:?}");
    client.send(Frame::Ping { id: 3 }).await;
    assert_eq!(client.next().await, Some(Frame::Ping { id: 3 }));

    // Two at once, their frames interleaved.
    client.open(5, &pf("error", "8000", "1")).await;
    client.open(7, &pf("error", "8000", "2")).await;
    client.open(9, &pf("data", "8000", "2")).await;
    client.open(11, &pf("data", "8000", "1")).await;
    client.data(9, b"two", FLAG_FIN).await;
    client.data(11, b"one", FLAG_FIN).await;
    let got = client.until_fin(&[5, 7, 9, 11]).await;
    assert_eq!(got.get(&9).map(Vec::as_slice), Some(&b"echo:two"[..]));
    assert_eq!(got.get(&11).map(Vec::as_slice), Some(&b"echo:one"[..]));

    // Nothing listening: the reason is on the error stream, and the session goes on.
    client.open(13, &pf("error", "8001", "3")).await;
    client.open(15, &pf("data", "8001", "3")).await;
    let got = client.until_fin(&[13, 15]).await;
    let error = String::from_utf8_lossy(got.get(&13).map(Vec::as_slice).unwrap_or_default());
    assert_eq!(
        error,
        format!(
            "error forwarding port 8001 to pod web, uid {}: dial tcp4 127.0.0.1:8001: connect: connection refused",
            server.uid
        )
    );
    client.open(17, &pf("error", "8000", "4")).await;
    client.open(19, &pf("data", "8000", "4")).await;
    client.data(19, b"again", FLAG_FIN).await;
    let got = client.until_fin(&[17, 19]).await;
    assert_eq!(got.get(&19).map(Vec::as_slice), Some(&b"echo:again"[..]));

    // A stream without a request id is reset.
    client.open(21, &[("streamtype", "data")]).await;
    assert!(matches!(
        client.next().await,
        Some(Frame::SynReply { stream_id: 21, .. })
    ));
    assert!(matches!(
        client.next().await,
        Some(Frame::RstStream { stream_id: 21, .. })
    ));
}

#[tokio::test]
async fn port_forward_refusals() {
    let server = start_server("Pending").await;
    let path = "/api/v1/namespaces/default/pods/web/portforward";
    let (_, head, _) = upgrade(server.port, path, &["portforward.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let server = start_server("Running").await;
    let (_, head, _) = upgrade(server.port, path, &["portforward.k8s.io.v2"]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn exec_over_spdy_v4() {
    let server = start_server("Running").await;
    let script = "read line; echo got:$line; echo oops >%262; exit 3";
    let path = format!(
        "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command={}&stdin=true&stdout=true&stderr=true",
        script.replace(' ', "%20").replace(';', "%3B").replace('>', "%3E")
    );
    let offered = [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];
    let (tcp, head, rest) = upgrade(server.port, &path, &offered).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("x-stream-protocol-version: v4.channel.k8s.io"));
    let mut client = Client::new(tcp, rest);
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
        client.open(id, &[("streamtype", kind)]).await;
    }
    client.data(3, b"hi\n", 0).await;
    client.data(3, b"", FLAG_FIN).await;
    let got = client.until_fin(&[1, 5, 7]).await;
    assert_eq!(got.get(&5).map(Vec::as_slice), Some(&b"got:hi\n"[..]));
    assert_eq!(got.get(&7).map(Vec::as_slice), Some(&b"oops\n"[..]));
    let status: Value = serde_json::from_slice(got.get(&1).map(Vec::as_slice).unwrap_or_default())
        .expect("status JSON");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_over_spdy_v2_reports_failure_as_text() {
    let server = start_server("Running").await;
    let path = "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true";
    let (tcp, head, rest) = upgrade(server.port, path, &["v2.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut client = Client::new(tcp, rest);
    client.open(1, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "stdout")]).await;
    let got = client.until_fin(&[1, 3]).await;
    assert!(got.get(&1).is_none_or(Vec::is_empty), "success is silent");
}
