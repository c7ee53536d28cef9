//! A small blocking HTTPS client of a daemon's API, for tests that need many requests, exact
//! status codes or a raw watch stream without a kubectl process each: TLS with the root's admin
//! certificate (`<root>/pki/admin.{crt,key}`, trusting `<root>/pki/ca.crt`), HTTP/1.1 with
//! keep-alive, `Content-Length` and chunked bodies (a watch is one long chunked response).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// What one connection needs: where the server is and the TLS configuration.
#[derive(Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
}

/// A finished response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl ApiClient {
    /// A client of the daemon serving `server` (`https://127.0.0.1:PORT`) from `root`.
    pub fn new(root: &Path, server: &str) -> ApiClient {
        let pki = root.join("pki");
        let read = |f: &str| std::fs::read(pki.join(f)).unwrap_or_else(|e| panic!("read {f}: {e}"));
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&read("ca.crt")).expect("ca pem"))
            .expect("add ca");
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read("admin.crt"))
                .collect::<Result<_, _>>()
                .expect("admin cert pem");
        let key = PrivateKeyDer::from_pem_slice(&read("admin.key")).expect("admin key pem");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("tls versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(certs, key)
                .expect("client cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let addr = server
            .trim_start_matches("https://")
            .parse()
            .expect("server address");
        ApiClient {
            addr,
            config: Arc::new(config),
        }
    }

    /// A new connection (requests on it reuse it).
    pub fn connect(&self) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let conn =
            ClientConnection::new(self.config.clone(), name).map_err(std::io::Error::other)?;
        Ok(Conn {
            stream: BufReader::new(StreamOwned::new(conn, tcp)),
        })
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<Response> {
        self.connect()?.request(method, path, body)
    }

    /// Starts a watch (`path` with `watch=1`); its events come from [`Watch::next_event`].
    pub fn watch(&self, path: &str) -> std::io::Result<Watch> {
        let mut conn = self.connect()?;
        conn.send("GET", path, None)?;
        let (status, headers) = conn.head()?;
        if status != 200 {
            let body = conn.body(&headers)?;
            return Err(std::io::Error::other(format!(
                "watch {path}: {status} {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(Watch {
            conn,
            pending: Vec::new(),
        })
    }
}

/// One keep-alive connection.
pub struct Conn {
    stream: BufReader<Tls>,
}

impl Conn {
    /// Sends a request and reads its whole response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<Response> {
        self.send(method, path, body)?;
        let (status, headers) = self.head()?;
        let body = self.body(&headers)?;
        Ok(Response { status, body })
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<()> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let tls = self.stream.get_mut();
        tls.write_all(request.as_bytes())?;
        tls.flush()
    }

    /// The status line and the headers (names lowercased).
    fn head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                return Ok((status, headers));
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }

    fn body(&mut self, headers: &[(String, String)]) -> std::io::Result<Vec<u8>> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk()? {
                body.extend(chunk);
            }
            return Ok(body);
        }
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body)?;
        Ok(body)
    }

    /// The next chunk of a chunked body; `None` after the last one.
    fn chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        let mut chunk = vec![0; size + 2];
        self.stream.read_exact(&mut chunk)?;
        chunk.truncate(size);
        if size == 0 {
            // The trailer section ends with an empty line, which the read above consumed.
            return Ok(None);
        }
        Ok(Some(chunk))
    }
}

/// An open watch stream.
pub struct Watch {
    conn: Conn,
    pending: Vec<u8>,
}

impl Watch {
    /// The next event (`{"type": ..., "object": ...}`); `None` when the stream ended or broke.
    pub fn next_event(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice(&line) {
                    return Some(v);
                }
                continue;
            }
            let chunk = self.conn.chunk().ok()??;
            self.pending.extend(chunk);
        }
    }

    /// Ends the stream by closing the connection.
    pub fn close(self) {
        let mut tls = self.conn.stream.into_inner();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tls.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Pods in the `default` namespace, through the API.
impl ApiClient {
    /// Creates `pod` (a JSON Pod); returns it as stored.
    pub fn create_pod(&self, pod: &serde_json::Value) -> serde_json::Value {
        let r = self
            .request("POST", "/api/v1/namespaces/default/pods", Some(pod))
            .expect("create pod");
        assert_eq!(
            r.status,
            201,
            "create pod: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// The pod `name`, `Null` when it is not there.
    pub fn pod(&self, name: &str) -> serde_json::Value {
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        match self.request("GET", &path, None) {
            Ok(r) if r.status == 200 => r.json(),
            _ => serde_json::Value::Null,
        }
    }

    /// Polls pod `name` until `check` accepts it; panics with its last status after `timeout`.
    pub fn wait_pod<T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> T {
        let mut last = serde_json::Value::Null;
        crate::poll_until(std::time::Instant::now() + timeout, || {
            last = self.pod(name);
            check(&last)
        })
        .unwrap_or_else(|| panic!("pod {name}: {what} not reached\n{:#}", last["status"]))
    }

    /// `GET .../log` of pod `name` with `query`, `None` unless it answers 200 (the container
    /// has not started yet).
    pub fn try_log(&self, name: &str, query: &str) -> Option<String> {
        let path = format!("/api/v1/namespaces/default/pods/{name}/log?{query}");
        let r = self.request("GET", &path, None).ok()?;
        (r.status == 200).then(|| String::from_utf8_lossy(&r.body).into_owned())
    }

    /// `GET .../log` of pod `name` with `query` (`container=c&tailLines=1`, or empty).
    pub fn log(&self, name: &str, query: &str) -> String {
        let path = format!("/api/v1/namespaces/default/pods/{name}/log?{query}");
        let r = self.request("GET", &path, None).expect("get log");
        assert_eq!(
            r.status,
            200,
            "log of {name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        String::from_utf8_lossy(&r.body).into_owned()
    }
}
