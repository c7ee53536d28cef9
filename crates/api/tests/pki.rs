//! The PKI end to end on loopback: reloading keeps the CA; TLS client-certificate authentication
//! through the server config (admin identified, anonymous allowed through to the HTTP layer,
//! foreign certificates refused at the handshake); the kubeconfig as YAML and as the real kubectl
//! reads it against a tiny HTTPS server.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use peapod_api::pki::{client_identity, Identity, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The kubectl releases peapod answers (the issue's e2e range), newest first.
const KUBECTLS: [&str; 7] = ["1.33", "1.32", "1.31", "1.30", "1.29", "1.28", "1.27"];
const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "admin.crt",
    "admin.key",
];
const VERSION: &str = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#;

fn snapshot(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("read pki file"))
        .collect()
}

fn roots(pki: &Pki) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).expect("pem"))
        .expect("add the ca");
    roots
}

/// A client trusting `pki`'s CA and presenting no certificate.
fn anonymous_client(pki: &Pki) -> Arc<ClientConfig> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots(pki))
            .with_no_client_auth();
    Arc::new(config)
}

type Handshake = Result<Option<Identity>, io::Error>;

/// A TLS server on 127.0.0.1:0 that writes the client's identity as one line and closes. Each
/// server-side handshake outcome is also sent on the returned channel.
async fn identity_echo(pki: &Pki) -> (SocketAddr, mpsc::UnboundedReceiver<Handshake>) {
    let acceptor = TlsAcceptor::from(pki.server_config().expect("server config"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let identity = client_identity(tls.get_ref().1);
                        let line = match &identity {
                            Some(id) => format!("{} {}\n", id.user, id.groups.join(",")),
                            None => "anonymous\n".to_owned(),
                        };
                        let _ = tls.write_all(line.as_bytes()).await;
                        let _ = tls.shutdown().await;
                        let _ = tx.send(Ok(identity));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn fetch_line(config: Arc<ClientConfig>, addr: SocketAddr, name: &str) -> io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Handshake>) -> Handshake {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("handshake within 10 s")
        .expect("echo server running")
}

#[test]
fn reloading_keeps_the_ca_and_every_file() {
    let tmp = tempfile::tempdir().expect("create tempdir");
    let extra = vec!["10.1.2.3".to_owned(), "peapod.example".to_owned()];
    let first = Pki::load_or_create(tmp.path(), &extra).expect("load or create pki");
    let before = snapshot(tmp.path());
    let second = Pki::load_or_create(tmp.path(), &extra).expect("load or create pki");
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(before, snapshot(tmp.path()));
    // Fewer requested names than the certificate has is fine too.
    Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
    assert_eq!(before, snapshot(tmp.path()));
}

#[tokio::test]
async fn admin_client_is_identified_under_every_name() {
    let tmp = tempfile::tempdir().expect("create tempdir");
    let pki = Pki::load_or_create(
        tmp.path(),
        &["10.1.2.3".to_owned(), "peapod.example".to_owned()],
    )
    .expect("load or create pki");
    let (addr, mut handshakes) = identity_echo(&pki).await;
    let names = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes.default.svc.cluster.local",
        "10.1.2.3",
        "peapod.example",
    ];
    for name in names {
        let line = fetch_line(pki.client_config().expect("client config"), addr, name)
            .await
            .expect("tls exchange");
        assert_eq!(line, "peapod-admin system:masters\n", "{name}");
        let identity = next(&mut handshakes).await.expect("handshake accepted");
        let want = Identity {
            user: "peapod-admin".to_owned(),
            groups: vec!["system:masters".to_owned()],
        };
        assert_eq!(identity, Some(want));
    }
    let err = fetch_line(
        pki.client_config().expect("client config"),
        addr,
        "not-in-the-cert.example",
    )
    .await
    .expect_err("a name not in the certificate is refused");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn client_without_certificate_gets_through_as_anonymous() {
    let tmp = tempfile::tempdir().expect("create tempdir");
    let pki = Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
    let (addr, mut handshakes) = identity_echo(&pki).await;
    let line = fetch_line(anonymous_client(&pki), addr, "localhost")
        .await
        .expect("tls exchange");
    assert_eq!(line, "anonymous\n");
    assert_eq!(
        next(&mut handshakes).await.expect("handshake accepted"),
        None
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let (ours, theirs) = (
        tempfile::tempdir().expect("create tempdir"),
        tempfile::tempdir().expect("create tempdir"),
    );
    let pki = Pki::load_or_create(ours.path(), &[]).expect("load or create pki");
    Pki::load_or_create(theirs.path(), &[]).expect("load or create pki");
    let cert = CertificateDer::from_pem_file(theirs.path().join("admin.crt")).expect("pem file");
    let key = PrivateKeyDer::from_pem_file(theirs.path().join("admin.key")).expect("pem file");
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots(&pki))
            .with_client_auth_cert(vec![cert], key)
            .expect("client auth cert");
    let (addr, mut handshakes) = identity_echo(&pki).await;
    // With TLS 1.3 the client may finish its side first; the refusal arrives as an alert.
    let client = fetch_line(Arc::new(config), addr, "localhost").await;
    assert!(client.is_err(), "{client:?}");
    let server = next(&mut handshakes).await.expect_err("handshake refused");
    let tls_error = server
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(tls_error, Some(rustls::Error::InvalidCertificate(_))),
        "{server:?}"
    );
}

#[test]
fn kubeconfig_is_yaml_with_decodable_pem() {
    let tmp = tempfile::tempdir().expect("create tempdir");
    let pki = Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
    let url = "https://127.0.0.1:6443/odd: \"path\" #x";
    let config: serde_json::Value =
        serde_saphyr::from_str(&pki.kubeconfig(url)).expect("kubeconfig is yaml");
    assert_eq!(config["current-context"], "peapod");
    assert_eq!(config["contexts"][0]["context"]["namespace"], "default");
    assert_eq!(config["contexts"][0]["context"]["user"], "peapod-admin");
    let cluster = &config["clusters"][0];
    assert_eq!(cluster["name"], "peapod");
    assert_eq!(cluster["cluster"]["server"], url);
    let decode = |v: &serde_json::Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("string value"))
            .expect("base64");
        String::from_utf8(bytes).expect("utf-8 pem")
    };
    assert_eq!(
        decode(&cluster["cluster"]["certificate-authority-data"]),
        pki.ca_pem()
    );
    let user = &config["users"][0]["user"];
    let cert = decode(&user["client-certificate-data"]);
    let key = decode(&user["client-key-data"]);
    assert!(
        CertificateDer::from_pem_slice(cert.as_bytes()).is_ok(),
        "{cert}"
    );
    assert!(PrivateKeyDer::from_pem_slice(key.as_bytes()).is_ok());
}

fn status(code: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code.as_u16(),
    });
    json(code, body.to_string())
}

fn json(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// An HTTPS server on 127.0.0.1:0 answering `GET /version` to authenticated clients and 401 with
/// a Status to everyone else, over HTTP/1.1 or HTTP/2 as ALPN decides.
async fn version_server(pki: &Pki) -> SocketAddr {
    let acceptor = TlsAcceptor::from(pki.server_config().expect("server config"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let identity = client_identity(tls.get_ref().1);
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = match (&identity, req.uri().path()) {
                        (None, _) => status(StatusCode::UNAUTHORIZED, "Unauthorized"),
                        (Some(_), "/version") => json(StatusCode::OK, VERSION.to_owned()),
                        (Some(_), _) => status(StatusCode::NOT_FOUND, "NotFound"),
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

async fn kubectl(release: &str, home: &Path, kubeconfig: &Path) -> std::process::Output {
    let kubectl = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{release}"));
    assert!(
        kubectl.exists(),
        "{} is needed: the kubeconfig is checked against the real kubectl",
        kubectl.display()
    );
    let run = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["version", "-o", "json"])
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("kubectl within 60 s")
        .expect("run kubectl")
}

#[tokio::test]
async fn real_kubectl_accepts_the_kubeconfig() {
    let tmp = tempfile::tempdir().expect("create tempdir");
    let pki = Pki::load_or_create(&tmp.path().join("pki"), &[]).expect("load or create pki");
    let addr = version_server(&pki).await;
    let kubeconfig = tmp.path().join("admin.conf");
    std::fs::write(&kubeconfig, pki.kubeconfig(&format!("https://{addr}")))
        .expect("write kubeconfig");

    for release in KUBECTLS {
        let out = kubectl(release, tmp.path(), &kubeconfig).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {release} failed: {stderr}");
        let version: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("kubectl prints json");
        assert_eq!(
            version["serverVersion"]["minor"], "33",
            "kubectl {release}: {version}"
        );
    }

    // The same cluster without the client certificate: kubectl sees the 401.
    let anonymous = tmp.path().join("anonymous.conf");
    let mut config: serde_json::Value =
        serde_saphyr::from_str(&pki.kubeconfig(&format!("https://{addr}")))
            .expect("kubeconfig is yaml");
    // Some credential is needed, or kubectl prompts for a password on stdin.
    config["users"][0]["user"] = serde_json::json!({ "token": "not-a-client-certificate" });
    std::fs::write(&anonymous, config.to_string()).expect("write kubeconfig");
    let out = kubectl(KUBECTLS[0], tmp.path(), &anonymous).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // `version` reads the body raw, so kubectl reports the 401 generically, as with a real server.
    assert!(
        stderr.contains("You must be logged in to the server"),
        "{stderr}"
    );
}
