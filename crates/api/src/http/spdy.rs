//! SPDY/3.1, the stream multiplexing kubectl speaks after an HTTP upgrade for port-forward (every
//! version, plain or tunnelled in a WebSocket) and for exec before 1.30
//! (<https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/>, shared/kubectl-wire.md
//! §6-§7). Three layers: frames to and from bytes ([`Decoder`], [`Encoder`]: pure, each owning
//! its direction's one zlib context, which the spec primes with a preset dictionary); a
//! [`Session`] that runs one connection (a reader task, a writer task, the streams the client
//! opens, PING answered); and [`upgrade`], the HTTP/1.1 handshake in front of it.
//!
//! What the Go client (`moby/spdystream`) needs and gets: a SYN_REPLY for every SYN_STREAM
//! before any DATA on it, DATA with FIN to half-close, PINGs echoed. It does no flow control,
//! so neither do we: WINDOW_UPDATE and SETTINGS are read and ignored.

use super::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use http::{header, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::debug;

pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes used here (spec §2.6.3).
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
pub const RST_STREAM_IN_USE: u32 = 8;

const VERSION: u16 = 3;
const FRAME_HEADER: usize = 8;
/// Frame lengths are 24 bits.
const MAX_FRAME_BODY: usize = 0xFF_FFFF;
/// The largest DATA frame we send; bigger writes are split.
const MAX_DATA: usize = 64 * 1024;
/// An inflated header block larger than this is refused (kubectl's are a few dozen bytes).
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The words and the tail of the SPDY/3 header-compression dictionary (spec §2.6.10.1): each word
/// goes in as a 32-bit big-endian length and the bytes, the tail as it is. 1423 bytes in all,
/// Adler-32 `e3c6a7c2`: the dictionary id the Go client writes after its zlib header `78 f9`.
#[rustfmt::skip]
const DICTIONARY_WORDS: &[&str] = &[
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server", "te",
    "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
    "public", "set-cookie", "keep-alive", "origin",
];
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412\
413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec \
00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,\
application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,\
deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The SPDY/3 preset dictionary.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            d.extend_from_slice(&(word.len() as u32).to_be_bytes());
            d.extend_from_slice(word.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

/// Why a connection's bytes could not be read as SPDY/3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported SPDY version {version}")]
    Version { version: u16 },
    #[error("control frame type {kind} is too short ({len} bytes)")]
    Short { kind: u16, len: usize },
    #[error("header block does not inflate")]
    Inflate,
    #[error("header block does not deflate")]
    Deflate,
    #[error("malformed header block")]
    HeaderBlock,
    #[error("frame of {len} bytes is too large")]
    TooLarge { len: usize },
}

/// The name/value pairs of a header block; names are lower case on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The value of `name`, compared without regard to case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One SPDY/3.1 frame (spec §2.2, §2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// SETTINGS entries are not used by either side of kubectl's protocols: kept undecoded.
    Settings {
        flags: u8,
        body: Bytes,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type SPDY/3.1 does not define; the spec says to ignore it.
    Unknown {
        kind: u16,
    },
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn id(b: &[u8], at: usize) -> u32 {
    word(b, at) & 0x7FFF_FFFF
}

/// Splits frames off the front of a byte buffer; inflates header blocks in arrival order, as the
/// one zlib context of the direction requires.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// The next whole frame at the front of `buf`, removed from it; `None` until one has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let len = word(buf, 4) as usize & MAX_FRAME_BODY;
        if buf.len() < FRAME_HEADER + len {
            buf.reserve(FRAME_HEADER + len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(FRAME_HEADER);
        let body = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = id(&head, 0);
            let data = body;
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7F, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version { version });
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let min = match kind {
            1 => 10,
            2 | 8 | 6 => 4,
            3 | 7 | 9 => 8,
            _ => 0,
        };
        if body.len() < min {
            return Err(SpdyError::Short {
                kind,
                len: body.len(),
            });
        }
        Ok(Some(match kind {
            1 => Frame::SynStream {
                stream_id: id(&body, 0),
                associated_to: id(&body, 4),
                priority: body[8] >> 5,
                flags,
                headers: self.headers(&body[10..])?,
            },
            2 => Frame::SynReply {
                stream_id: id(&body, 0),
                flags,
                headers: self.headers(&body[4..])?,
            },
            3 => Frame::RstStream {
                stream_id: id(&body, 0),
                status: word(&body, 4),
            },
            4 => Frame::Settings { flags, body },
            6 => Frame::Ping { id: word(&body, 0) },
            7 => Frame::GoAway {
                last_good_stream_id: id(&body, 0),
                status: word(&body, 4),
            },
            8 => Frame::Headers {
                stream_id: id(&body, 0),
                flags,
                headers: self.headers(&body[4..])?,
            },
            9 => Frame::WindowUpdate {
                stream_id: id(&body, 0),
                delta: id(&body, 4),
            },
            kind => Frame::Unknown { kind },
        }))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        parse_block(&self.inflate(block)?)
    }

    /// Inflates one header block (sync-flushed by the sender) with the connection's context,
    /// supplying the preset dictionary when the stream asks for it (the Go client always does).
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::TooLarge { len: out.len() });
                }
                out.reserve(out.len().max(256));
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            input = &input[consumed.min(input.len())..];
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|_| SpdyError::Inflate)?;
                    continue;
                }
                Err(_) => return Err(SpdyError::Inflate),
            }
            let room = out.len() < out.capacity();
            if input.is_empty() && room {
                return Ok(out);
            }
            if consumed == 0 && produced == 0 && room {
                return Err(SpdyError::Inflate);
            }
        }
    }
}

fn parse_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let end = at.checked_add(n).filter(|e| *e <= raw.len());
        let end = end.ok_or(SpdyError::HeaderBlock)?;
        let s = &raw[at..end];
        at = end;
        Ok(s)
    };
    let count = word(take(4)?, 0) as usize;
    let mut pairs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = word(take(4)?, 0) as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let len = word(take(4)?, 0) as usize;
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        pairs.push((name, value));
    }
    Ok(Headers(pairs))
}

/// Writes frames as bytes; deflates header blocks with this direction's one zlib context, primed
/// with the SPDY dictionary as the spec asks (the Go client also reads blocks without it).
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Encoder, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|_| SpdyError::Deflate)?;
        Ok(Encoder { deflate })
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let mut body = BytesMut::new();
        let (kind, flags) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = frame_len(data.len())?;
                out.put_u32(stream_id & 0x7FFF_FFFF);
                out.put_u32((u32::from(*flags) << 24) | len);
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                body.put_u32(*stream_id);
                body.put_u32(*associated_to);
                body.put_u8(priority << 5);
                body.put_u8(0);
                body.extend_from_slice(&self.deflate_block(headers)?);
                (1, *flags)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(*stream_id);
                body.extend_from_slice(&self.deflate_block(headers)?);
                (2, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(*stream_id);
                body.put_u32(*status);
                (3, 0)
            }
            Frame::Settings { flags, body: b } => {
                body.extend_from_slice(b);
                (4, *flags)
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                (6, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                body.put_u32(*last_good_stream_id);
                body.put_u32(*status);
                (7, 0)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(*stream_id);
                body.extend_from_slice(&self.deflate_block(headers)?);
                (8, *flags)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(*stream_id);
                body.put_u32(*delta);
                (9, 0)
            }
            Frame::Unknown { kind } => (*kind, 0),
        };
        let len = frame_len(body.len())?;
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32((u32::from(flags) << 24) | len);
        out.extend_from_slice(&body);
        Ok(())
    }

    fn deflate_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.0.len() as u32);
        for (name, value) in &headers.0 {
            raw.put_u32(name.len() as u32);
            raw.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            raw.put_u32(value.len() as u32);
            raw.extend_from_slice(value.as_bytes());
        }
        let mut input = &raw[..];
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|_| SpdyError::Deflate)?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn frame_len(len: usize) -> Result<u32, SpdyError> {
    if len > MAX_FRAME_BODY {
        return Err(SpdyError::TooLarge { len });
    }
    Ok(len as u32)
}

// ---------------------------------------------------------------------------------------------
// The session.

enum Outgoing {
    Frame(Frame),
    /// Acknowledged once everything queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// The peer reset the stream, or the connection is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spdy stream {stream_id} is closed")]
pub struct StreamClosed {
    pub stream_id: u32,
}

/// A stream the client opened: its headers, the bytes it sends, and a way to answer.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// The client's DATA on one stream.
pub struct StreamReader {
    data: mpsc::Receiver<Bytes>,
    /// Keeps the stream known to the session while only its reader is held.
    _alive: watch::Receiver<bool>,
}

impl StreamReader {
    /// The next bytes; `None` once the client half-closed (FIN), reset the stream, or left.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.data.recv().await
    }
}

/// Sends on one stream. Cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Outgoing>,
    reset: watch::Receiver<bool>,
}

impl StreamWriter {
    fn closed_err(&self) -> StreamClosed {
        StreamClosed { stream_id: self.id }
    }

    async fn send(&self, frame: Frame) -> Result<(), StreamClosed> {
        if *self.reset.borrow() {
            return Err(self.closed_err());
        }
        self.out
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| self.closed_err())
    }

    /// Sends `data` as DATA frames.
    pub async fn write(&self, data: Bytes) -> Result<(), StreamClosed> {
        let mut data = data;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA));
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes our side: an empty DATA frame with FIN.
    pub async fn finish(&self) -> Result<(), StreamClosed> {
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Aborts the stream with RST_STREAM.
    pub async fn reset(&self, status: u32) -> Result<(), StreamClosed> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }

    /// Resolves when the client resets the stream or the connection ends.
    pub async fn closed(&mut self) {
        while !*self.reset.borrow_and_update() {
            if self.reset.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One SPDY connection, server side: the streams the client opens arrive on [`Session::accept`].
/// Dropping it closes the connection and ends every stream.
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Outgoing>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    pub fn new<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(64);
        let (accept, incoming) = mpsc::channel(64);
        let writer = tokio::spawn(write_loop(write, out_rx));
        let reader = tokio::spawn(read_loop(read, out.clone(), accept));
        Session {
            incoming,
            out,
            reader,
            writer,
        }
    }

    /// The next stream the client opens (already answered with SYN_REPLY); `None` once the
    /// connection has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Writes out everything queued, then gives the client up to `grace` to close the connection
    /// itself (kubectl resets its streams and sends GOAWAY first), then closes it.
    pub async fn finish(mut self, grace: Duration) {
        let (ack, acked) = oneshot::channel();
        if self.out.send(Outgoing::Flush(ack)).await.is_ok() {
            let _ = tokio::time::timeout(grace, acked).await;
        }
        let _ = tokio::time::timeout(grace, &mut self.reader).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

async fn write_loop<W: AsyncWrite>(io: W, mut queue: mpsc::Receiver<Outgoing>) {
    let mut io = std::pin::pin!(io);
    let mut encoder = match Encoder::new() {
        Ok(e) => e,
        Err(error) => {
            debug!(%error, "spdy encoder");
            return;
        }
    };
    let mut buf = BytesMut::new();
    let mut acks = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        // Coalesce what is already queued into one write.
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => {
                    if let Err(error) = encoder.encode(&frame, &mut buf) {
                        debug!(%error, "spdy encode");
                        return;
                    }
                }
                Outgoing::Flush(ack) => acks.push(ack),
            }
            if buf.len() < MAX_DATA {
                next = queue.try_recv().ok();
            }
        }
        if io.write_all(&buf).await.is_err() || io.flush().await.is_err() {
            return;
        }
        buf.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = io.shutdown().await;
}

/// What the reader keeps per open stream.
struct Inbound {
    /// `None` once the client half-closed, or stopped being read.
    data: Option<mpsc::Sender<Bytes>>,
    reset: watch::Sender<bool>,
}

async fn read_loop<R: AsyncRead>(io: R, out: mpsc::Sender<Outgoing>, accept: mpsc::Sender<Stream>) {
    let mut io = std::pin::pin!(io);
    let mut decoder = Decoder::default();
    let mut streams: HashMap<u32, Inbound> = HashMap::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'connection: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if !handle(frame, &mut streams, &out, &accept).await {
                        break 'connection;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    debug!(%error, "spdy protocol error");
                    break 'connection;
                }
            }
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    for (_, stream) in streams {
        let _ = stream.reset.send(true);
    }
}

/// Acts on one frame from the client; false when the connection should end.
async fn handle(
    frame: Frame,
    streams: &mut HashMap<u32, Inbound>,
    out: &mpsc::Sender<Outgoing>,
    accept: &mpsc::Sender<Stream>,
) -> bool {
    let send = |frame| out.send(Outgoing::Frame(frame));
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            // Forget streams nobody holds any more.
            streams.retain(|_, s| !s.reset.is_closed());
            if streams.contains_key(&stream_id) || stream_id % 2 == 0 {
                let status = if stream_id % 2 == 0 {
                    RST_PROTOCOL_ERROR
                } else {
                    RST_STREAM_IN_USE
                };
                return send(Frame::RstStream { stream_id, status }).await.is_ok();
            }
            let (data_tx, data) = mpsc::channel(16);
            let (reset_tx, reset) = watch::channel(false);
            let reply = Frame::SynReply {
                stream_id,
                flags: 0,
                headers: Headers::default(),
            };
            if send(reply).await.is_err() {
                return false;
            }
            let stream = Stream {
                id: stream_id,
                headers,
                reader: StreamReader {
                    data,
                    _alive: reset.clone(),
                },
                writer: StreamWriter {
                    id: stream_id,
                    out: out.clone(),
                    reset,
                },
            };
            if accept.send(stream).await.is_err() {
                let status = RST_REFUSED_STREAM;
                return send(Frame::RstStream { stream_id, status }).await.is_ok();
            }
            let fin = flags & FLAG_FIN != 0;
            let data = (!fin).then_some(data_tx);
            streams.insert(
                stream_id,
                Inbound {
                    data,
                    reset: reset_tx,
                },
            );
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let Some(stream) = streams.get_mut(&stream_id) else {
                return true;
            };
            if let Some(tx) = &stream.data {
                if !data.is_empty() && tx.send(data).await.is_err() {
                    stream.data = None;
                }
            }
            if flags & FLAG_FIN != 0 {
                stream.data = None;
            }
        }
        Frame::RstStream { stream_id, .. } => {
            if let Some(stream) = streams.remove(&stream_id) {
                let _ = stream.reset.send(true);
            }
        }
        // Client PINGs have odd ids; an even one would answer a PING of ours, and we send none.
        Frame::Ping { id } if id % 2 == 1 => return send(Frame::Ping { id }).await.is_ok(),
        _ => {}
    }
    true
}

// ---------------------------------------------------------------------------------------------
// The HTTP upgrade.

/// Whether `req` asks to switch to SPDY/3.1.
pub fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("SPDY/3.1"))
}

/// The first protocol the client offers in `X-Stream-Protocol-Version` (in its order of
/// preference) that we support, as client-go's `httpstream.Handshake` picks it.
pub fn negotiate(offered: &[&str], supported: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| s.eq_ignore_ascii_case(o.trim())))
        .copied()
}

/// Answers an `Upgrade: SPDY/3.1` request with 101 and runs `serve` on the SPDY session once the
/// connection has switched. Unsupported protocols are refused with 403 as the kubelet does.
pub fn upgrade<F, Fut>(
    mut req: Request,
    supported: &[&'static str],
    serve: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Session, &'static str) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !is_upgrade(&req) {
        return Err(ApiError::bad_request(
            "unable to upgrade: missing upgrade headers in request",
        ));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let protocol = negotiate(&offered, supported).ok_or_else(|| ApiError::Forbidden {
        message: format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
        ),
    })?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("unable to upgrade: the connection cannot switch"))?;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let session = Session::new(hyper_util::rt::TokioIo::new(upgraded));
                serve(session, protocol).await;
            }
            Err(error) => debug!(%error, "spdy upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order() {
        let supported = &["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"];
        let offered = [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
        ];
        assert_eq!(negotiate(&offered, supported), Some("v4.channel.k8s.io"));
        assert_eq!(
            negotiate(&[" channel.k8s.io"], supported),
            Some("channel.k8s.io")
        );
        assert_eq!(negotiate(&["v9"], supported), None);
        assert_eq!(negotiate(&[], supported), None);
    }

    #[test]
    fn header_blocks_refuse_truncation() {
        assert_eq!(
            parse_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']),
            Err(SpdyError::HeaderBlock)
        );
        assert_eq!(parse_block(&[0, 0, 0, 0]), Ok(Headers::default()));
        assert_eq!(parse_block(&[0, 0]), Err(SpdyError::HeaderBlock));
    }
}
