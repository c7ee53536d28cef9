//! The cluster's PKI: a CA, the API server's serving certificate, an admin client certificate,
//! the rustls configurations built from them and the kubeconfig that hands them to kubectl.
//!
//! Files live in one directory with kubeadm's names (`ca.crt`, `apiserver.crt`, `admin.crt`, each
//! with a `.key`); see <https://kubernetes.io/docs/setup/best-practices/certificates/>. Whatever
//! is missing, expiring or no longer fits is (re)issued on load; a CA that is present is never
//! overwritten unless its key is gone or it is about to expire, because every kubeconfig handed
//! out embeds it.
//!
//! Users are authenticated the way the API server does it for X.509 client certificates: the
//! subject's CN is the user name and each O is a group
//! (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates>).
//! Reading the subject needs only a few DER elements, so a small reader lives in `der` instead
//! of a full X.509 parser; all chain, name and expiry checks are left to webpki (through rustls).
//!
//! Every rustls object is built with the `ring` provider passed explicitly, never a process-wide
//! default, so aws-lc-sys is never needed.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVING_CERT: &str = "apiserver.crt";
const SERVING_KEY: &str = "apiserver.key";
const ADMIN_CERT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";

const CA_NAME: &str = "peapod-ca";
const SERVING_NAME: &str = "peapod-apiserver";
const ADMIN_USER: &str = "peapod-admin";
const ADMIN_GROUP: &str = "system:masters";

/// The names every serving certificate carries: what kubectl, pods (through the `kubernetes`
/// Service) and the host itself use to reach the API server.
const DEFAULT_SANS: [&str; 8] = [
    "localhost",
    "peapod",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "127.0.0.1",
    "::1",
];

const CA_LIFETIME: TimeDelta = TimeDelta::days(3650);
const LEAF_LIFETIME: TimeDelta = TimeDelta::days(365);
/// Anything expiring sooner than this is replaced on load.
const RENEW_BEFORE: TimeDelta = TimeDelta::days(30);
/// Certificates start an hour in the past so a clock that is slightly behind still accepts them.
const BACKDATE: TimeDelta = TimeDelta::hours(1);

/// An error loading or creating the PKI, or building a TLS configuration from it.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("creating directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("locking {path}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("decoding pem in {path}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("loading ca key {path} (a PKCS#8 key is required)")]
    CaKey { path: PathBuf, source: rcgen::Error },
    #[error("ca key {path} does not match the ca certificate")]
    CaKeyMismatch {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("ca certificate {path} is not a well-formed certificate with a reissuable subject")]
    CaCertificate { path: PathBuf },
    #[error("invalid subject alternative name {san:?}")]
    InvalidSan {
        san: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("generating {what}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("newly issued certificate {path} is unusable")]
    Unusable { path: PathBuf, source: CertProblem },
    #[error("building {what}")]
    Tls {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("building the client certificate verifier")]
    Verifier {
        source: rustls::server::VerifierBuilderError,
    },
}

/// Why a leaf certificate on disk is (re)issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertProblem {
    #[error("missing")]
    Missing,
    #[error("not valid pem")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("not a well-formed certificate")]
    Malformed,
    #[error("key is unusable or does not match the certificate")]
    Key(#[source] rustls::Error),
    #[error("expires at {not_after}, within the renewal window")]
    ExpiresSoon { not_after: DateTime<Utc> },
    #[error("rejected for {purpose} under the current ca")]
    Rejected {
        purpose: String,
        source: rustls::Error,
    },
    #[error("subject is not CN={ADMIN_USER}, O={ADMIN_GROUP}")]
    WrongSubject,
    #[error("not valid for the server name {name}")]
    MissingName { name: String },
}

/// Who a client is, from its verified certificate: CN as the user, each O as a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// Reads the identity from a DER certificate; None if it is malformed or has no (or an
    /// empty) CN, which the API server treats as unauthenticated too. As in Go's `pkix.Name`, the
    /// last CN wins and every O counts. The certificate must already have been verified.
    pub fn from_certificate(der: &[u8]) -> Option<Identity> {
        Identity::from_subject(&der::parse_certificate(der)?.subject)
    }

    fn from_subject(subject: &[der::Attribute<'_>]) -> Option<Identity> {
        let mut user = None;
        let mut groups = Vec::new();
        for attr in subject {
            if attr.oid == der::OID_COMMON_NAME {
                user = Some(attr.text()?);
            } else if attr.oid == der::OID_ORGANIZATION {
                groups.push(attr.text()?);
            }
        }
        let user = user.filter(|u| !u.is_empty())?;
        Some(Identity { user, groups })
    }
}

/// Who the peer of a finished handshake is, from its client certificate (verified against the CA
/// by the server config's verifier); None when it sent none.
pub fn client_identity(conn: &rustls::ServerConnection) -> Option<Identity> {
    let leaf = conn.peer_certificates()?.first()?;
    Identity::from_certificate(leaf)
}

/// A certificate and its key, as PEM (for the kubeconfig) and DER (for rustls).
struct CertAndKey {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// The loaded PKI. Debug shows where it lives, never key material.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca: CertificateDer<'static>,
    serving: CertAndKey,
    admin: CertAndKey,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads `<dir>/{ca,apiserver,admin}.{crt,key}`, creating the directory (0700) and anything
    /// missing: a CA first (10 years), then a serving certificate for `localhost`, `peapod`,
    /// `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
    /// `kubernetes.default.svc.cluster.local`, 127.0.0.1 and ::1 plus `extra_sans` (IPs or DNS
    /// names) and an admin client certificate (CN `peapod-admin`,
    /// O `system:masters`), both for 1 year. A leaf that does not verify against the CA, lacks a
    /// requested name, expires within 30 days or does not match its key is reissued. Keys are
    /// written 0600, every file atomically, under an exclusive lock on `<dir>/.lock`.
    ///
    /// Blocking: call it from `spawn_blocking` or before the runtime starts.
    pub fn load_or_create(dir: &Path, extra_sans: &[String]) -> Result<Pki, PkiError> {
        load_or_create_at(dir, extra_sans, Utc::now())
    }

    /// The rustls server configuration: the serving certificate; client certificates verified
    /// against the CA but optional (`allow_unauthenticated`), so that the HTTP layer can answer
    /// 401 with a Kubernetes Status; ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|source| PkiError::Verifier { source })?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err("the server config"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.serving.cert.clone()],
                self.serving.key.clone_key(),
            )
            .map_err(tls_err("the server config"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration trusting the CA and presenting the admin certificate (for tests and
    /// the e2e harness). No ALPN is offered; clone it and set `alpn_protocols` to choose one.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, PkiError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err("the client config"))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.admin.cert.clone()], self.admin.key.clone_key())
            .map_err(tls_err("the client config"))?;
        Ok(Arc::new(config))
    }

    /// An admin kubeconfig (YAML): cluster `peapod` at `server_url`, user `peapod-admin` with the
    /// admin certificate inline, context `peapod` (namespace `default`) as the current context.
    pub fn kubeconfig(&self, server_url: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // A JSON string is a valid YAML double-quoted scalar, whatever the URL contains.
        let server = serde_json::Value::from(server_url);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: peapod
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {ADMIN_USER}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: peapod
  context:
    cluster: peapod
    user: {ADMIN_USER}
    namespace: default
current-context: peapod
preferences: {{}}
",
            ca = b64(&self.ca_pem),
            cert = b64(&self.admin.cert_pem),
            key = b64(&self.admin.key_pem),
        )
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, PkiError> {
        roots(&self.ca)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &'static str) -> impl FnOnce(rustls::Error) -> PkiError {
    move |source| PkiError::Tls { what, source }
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(tls_err("the ca trust store"))?;
    Ok(Arc::new(roots))
}

fn load_or_create_at(
    dir: &Path,
    extra_sans: &[String],
    now: DateTime<Utc>,
) -> Result<Pki, PkiError> {
    let sans = requested_sans(extra_sans)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    let lock_path = dir.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|source| PkiError::Lock {
            path: lock_path,
            source,
        })?;

    let ca = load_or_create_ca(dir, now)?;
    let trust = Trust::new(&ca.cert)?;
    let not_after = ca.not_after.min(now + LEAF_LIFETIME);
    let serving = Leaf {
        cert_file: SERVING_CERT,
        key_file: SERVING_KEY,
        purpose: Purpose::Serving(&sans),
    }
    .load_or_issue(dir, &ca, &trust, now, not_after)?;
    let admin = Leaf {
        cert_file: ADMIN_CERT,
        key_file: ADMIN_KEY,
        purpose: Purpose::Admin,
    }
    .load_or_issue(dir, &ca, &trust, now, not_after)?;
    drop(lock);
    Ok(Pki {
        dir: dir.to_owned(),
        ca_pem: ca.cert_pem,
        ca: ca.cert,
        serving,
        admin,
    })
}

/// A name the serving certificate must be valid for, normalized (lowercase, no trailing dot,
/// canonical IP text) and already accepted as a server name, as kubectl will use it.
struct San {
    text: String,
    name: ServerName<'static>,
}

/// The default names plus `extra` (IPs or DNS names), deduplicated.
fn requested_sans(extra: &[String]) -> Result<Vec<San>, PkiError> {
    let mut sans: Vec<San> = Vec::new();
    for san in DEFAULT_SANS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        let invalid = |source| PkiError::InvalidSan {
            san: san.to_owned(),
            source,
        };
        let text = match san.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => DnsName::try_from(san)
                .map_err(invalid)?
                .as_ref()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        };
        let name = ServerName::try_from(text.clone()).map_err(invalid)?;
        if !sans.iter().any(|s| s.text == text) {
            sans.push(San { text, name });
        }
    }
    Ok(sans)
}

/// The CA as loaded: its certificate and what rcgen needs to sign with it.
struct Ca {
    cert_pem: String,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_after: DateTime<Utc>,
}

fn load_or_create_ca(dir: &Path, now: DateTime<Utc>) -> Result<Ca, PkiError> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let Some(key_pem) = read_optional(&key_path)? else {
        if cert_path.exists() {
            warn!(path = %key_path.display(), "ca key missing, replacing the ca");
        }
        return create_ca(dir, None, now);
    };
    tighten_key_mode(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::CaKey {
        path: key_path.clone(),
        source,
    })?;
    let Some(cert_pem) = read_optional(&cert_path)? else {
        info!(path = %cert_path.display(), "ca certificate missing, reissuing it with the ca key");
        return create_ca(dir, Some(key), now);
    };
    let cert =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| PkiError::Pem {
            path: cert_path.clone(),
            source,
        })?;
    let info = der::parse_certificate(&cert).ok_or_else(|| PkiError::CaCertificate {
        path: cert_path.clone(),
    })?;
    let key_der =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| PkiError::Pem {
            path: key_path.clone(),
            source,
        })?;
    keys_match(&cert, key_der).map_err(|source| PkiError::CaKeyMismatch {
        path: key_path,
        source,
    })?;
    if info.not_after - now < RENEW_BEFORE {
        warn!(not_after = %info.not_after, "ca expires soon, replacing it");
        return create_ca(dir, None, now);
    }
    let mut params = ca_params(now);
    params.distinguished_name = der::distinguished_name(&info.subject)
        .ok_or_else(|| PkiError::CaCertificate { path: cert_path })?;
    Ok(Ca {
        not_after: info.not_after,
        cert_pem,
        cert: cert.into_owned(),
        issuer: Issuer::new(params, key),
    })
}

fn ca_params(now: DateTime<Utc>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    // Path length 0: this CA signs leaf certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity_and_serial(&mut params, now - BACKDATE, now + CA_LIFETIME);
    params
}

/// Self-signs a CA with `key` (keeping the key keeps leaves issued under it valid) or a new one.
fn create_ca(dir: &Path, key: Option<KeyPair>, now: DateTime<Utc>) -> Result<Ca, PkiError> {
    let gen = |source| PkiError::Generate {
        what: "the ca",
        source,
    };
    let key = match key {
        Some(key) => key,
        None => {
            // Drop the old certificate first: a crash before the new one is written then leaves a
            // key without a certificate, which the next load reissues, never a mismatched pair.
            remove_optional(&dir.join(CA_CERT))?;
            let key = KeyPair::generate().map_err(gen)?;
            write_atomic(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
            key
        }
    };
    let params = ca_params(now);
    let cert = params.self_signed(&key).map_err(gen)?;
    let cert_pem = cert.pem();
    write_atomic(&dir.join(CA_CERT), &cert_pem, 0o644)?;
    info!(not_after = %(now + CA_LIFETIME), "ca issued");
    Ok(Ca {
        cert_pem,
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
        not_after: now + CA_LIFETIME,
    })
}

/// Verifiers for the current CA, used to judge leaves the same way a peer would.
struct Trust {
    provider: Arc<CryptoProvider>,
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
}

impl Trust {
    fn new(ca: &CertificateDer<'static>) -> Result<Trust, PkiError> {
        let provider = provider();
        let roots = roots(ca)?;
        let server =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|source| PkiError::Verifier { source })?;
        let client = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|source| PkiError::Verifier { source })?;
        Ok(Trust {
            provider,
            server,
            client,
        })
    }
}

enum Purpose<'a> {
    /// A serving certificate valid for each of these names.
    Serving(&'a [San]),
    /// The admin client certificate.
    Admin,
}

struct Leaf<'a> {
    cert_file: &'static str,
    key_file: &'static str,
    purpose: Purpose<'a>,
}

impl Leaf<'_> {
    fn load_or_issue(
        &self,
        dir: &Path,
        ca: &Ca,
        trust: &Trust,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<CertAndKey, PkiError> {
        let (cert_path, key_path) = (dir.join(self.cert_file), dir.join(self.key_file));
        let cert_pem = read_optional(&cert_path)?;
        let key_pem = read_optional(&key_path)?;
        let problem = match (cert_pem, key_pem) {
            (Some(cert_pem), Some(key_pem)) => match self.check(cert_pem, key_pem, trust, now) {
                Ok(loaded) => {
                    tighten_key_mode(&key_path)?;
                    return Ok(loaded);
                }
                Err(problem) => problem,
            },
            _ => CertProblem::Missing,
        };
        info!(path = %cert_path.display(), reason = %problem, "issuing certificate");
        let (cert_pem, key_pem) = self.issue(ca, now, not_after)?;
        write_atomic(&key_path, &key_pem, 0o600)?;
        write_atomic(&cert_path, &cert_pem, 0o644)?;
        // Judge what was just issued by the same rules: a mistake here must not reach kubectl.
        self.check(cert_pem, key_pem, trust, now)
            .map_err(|source| PkiError::Unusable {
                path: cert_path,
                source,
            })
    }

    fn issue(
        &self,
        ca: &Ca,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<(String, String), PkiError> {
        let gen = |source| PkiError::Generate {
            what: self.cert_file,
            source,
        };
        let mut params = match self.purpose {
            Purpose::Serving(sans) => {
                let names: Vec<String> = sans.iter().map(|s| s.text.clone()).collect();
                let mut params = CertificateParams::new(names).map_err(gen)?;
                params.distinguished_name = DistinguishedName::new();
                params
                    .distinguished_name
                    .push(DnType::CommonName, SERVING_NAME);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params
            }
            Purpose::Admin => {
                let mut params = CertificateParams::default();
                params.distinguished_name = DistinguishedName::new();
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, ADMIN_GROUP);
                params
                    .distinguished_name
                    .push(DnType::CommonName, ADMIN_USER);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params
            }
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity_and_serial(&mut params, now - BACKDATE, not_after);
        let key = KeyPair::generate().map_err(gen)?;
        let cert = params.signed_by(&key, &ca.issuer).map_err(gen)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Whether a leaf on disk is still good for its purpose under the current CA.
    fn check(
        &self,
        cert_pem: String,
        key_pem: String,
        trust: &Trust,
        now: DateTime<Utc>,
    ) -> Result<CertAndKey, CertProblem> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(CertProblem::Pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(CertProblem::Pem)?;
        let signing_key = trust
            .provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(CertProblem::Key)?;
        CertifiedKey::new(vec![cert.clone()], signing_key)
            .keys_match()
            .map_err(CertProblem::Key)?;
        let info = der::parse_certificate(&cert).ok_or(CertProblem::Malformed)?;
        if info.not_after - now < RENEW_BEFORE {
            return Err(CertProblem::ExpiresSoon {
                not_after: info.not_after,
            });
        }
        let at = unix_time(now);
        match self.purpose {
            Purpose::Serving(sans) => {
                // The chain, validity and usage once, with the first name (an ECDSA signature
                // check each time, ~0.1 ms on every start); the other names only need to be in
                // the certificate.
                let mut sans = sans.iter();
                if let Some(san) = sans.next() {
                    trust
                        .server
                        .verify_server_cert(&cert, &[], &san.name, &[], at)
                        .map_err(|source| CertProblem::Rejected {
                            purpose: format!("server name {}", san.text),
                            source,
                        })?;
                }
                let end_entity =
                    webpki::EndEntityCert::try_from(&cert).map_err(|_| CertProblem::Malformed)?;
                for san in sans {
                    end_entity
                        .verify_is_valid_for_subject_name(&san.name)
                        .map_err(|_| CertProblem::MissingName {
                            name: san.text.clone(),
                        })?;
                }
            }
            Purpose::Admin => {
                trust
                    .client
                    .verify_client_cert(&cert, &[], at)
                    .map_err(|source| CertProblem::Rejected {
                        purpose: "client authentication".to_owned(),
                        source,
                    })?;
                let wanted = Identity {
                    user: ADMIN_USER.to_owned(),
                    groups: vec![ADMIN_GROUP.to_owned()],
                };
                if Identity::from_certificate(&cert) != Some(wanted) {
                    return Err(CertProblem::WrongSubject);
                }
            }
        }
        Ok(CertAndKey {
            cert_pem,
            key_pem,
            cert: cert.into_owned(),
            key,
        })
    }
}

fn keys_match(cert: &CertificateDer<'_>, key: PrivateKeyDer<'static>) -> Result<(), rustls::Error> {
    let signing_key = provider().key_provider.load_private_key(key)?;
    CertifiedKey::new(vec![cert.clone().into_owned()], signing_key).keys_match()
}

/// Sets the validity and a fresh serial number. rcgen's default serial is a hash of the public
/// key, which would repeat when the CA certificate is reissued with its old key; RFC 5280 4.1.2.2
/// wants serials unique per issuer. Time plus std's per-process random hasher keys suffice: the
/// serial need not be secret, only never reused.
fn set_validity_and_serial(params: &mut CertificateParams, from: DateTime<Utc>, to: DateTime<Utc>) {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let noise = RandomState::new().build_hasher().finish();
    let mut serial = [nanos.to_be_bytes(), noise.to_be_bytes()].concat();
    serial[0] &= 0x7f; // positive, as an INTEGER must be
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = |t: DateTime<Utc>| Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0));
    params.not_before = epoch + secs(from);
    params.not_after = epoch + secs(to);
}

fn unix_time(t: DateTime<Utc>) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(t.timestamp()).unwrap_or(0),
    ))
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_optional(path: &Path) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(PkiError::Write {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Resets a key readable by others to 0600 (someone copied or restored it carelessly).
fn tighten_key_mode(path: &Path) -> Result<(), PkiError> {
    let write_err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(write_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        let mode = format!("{:o}", mode & 0o777);
        warn!(path = %path.display(), mode, "key readable by others, setting 0600");
        fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(write_err)?;
    }
    Ok(())
}

/// Writes through a temporary file in the same directory and renames it over `path`, so a crash
/// leaves either the old file or the new one. The temporary is created exclusively with its final
/// mode, so a key is never readable by others, not even briefly.
fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let write_err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    remove_optional(&tmp)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(write_err)?;
    // The rename is durable only once the directory itself is synced.
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Just enough DER (X.690) to read a certificate's validity and subject (RFC 5280 section 4.1):
/// `Certificate ::= SEQUENCE { tbsCertificate, .. }`, `TBSCertificate ::= SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity, subject, .. }`, `Name ::= SEQUENCE OF SET
/// OF SEQUENCE { type OID, value ANY }`. Anything unexpected yields None.
mod der {
    use chrono::{DateTime, NaiveDate, Utc};
    use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString};
    use rcgen::{DistinguishedName, DnType, DnValue};

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const INTEGER: u8 = 0x02;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const TELETEX_STRING: u8 = 0x14;
    const IA5_STRING: u8 = 0x16;
    const BMP_STRING: u8 = 0x1e;

    /// 2.5.4.3 and 2.5.4.10, DER-encoded.
    pub(super) const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    pub(super) const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

    pub(super) struct CertInfo<'a> {
        pub(super) not_after: DateTime<Utc>,
        pub(super) subject: Vec<Attribute<'a>>,
    }

    /// One AttributeTypeAndValue of a Name; `rdn` numbers the SET it came from.
    pub(super) struct Attribute<'a> {
        pub(super) rdn: usize,
        pub(super) oid: &'a [u8],
        pub(super) tag: u8,
        pub(super) value: &'a [u8],
    }

    impl Attribute<'_> {
        /// The value as text, for the string types found in names.
        pub(super) fn text(&self) -> Option<String> {
            match self.tag {
                UTF8_STRING => String::from_utf8(self.value.to_vec()).ok(),
                // ASCII types; Go rejects other bytes in them, so an identity must too.
                PRINTABLE_STRING | IA5_STRING if self.value.is_ascii() => {
                    String::from_utf8(self.value.to_vec()).ok()
                }
                // T.61 read as Latin-1, like Go's crypto/x509 reads it.
                TELETEX_STRING => Some(self.value.iter().map(|&b| char::from(b)).collect()),
                BMP_STRING => {
                    let units: Vec<u16> = self
                        .value
                        .chunks(2)
                        .map(|c| match c {
                            [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                            _ => None,
                        })
                        .collect::<Option<_>>()?;
                    String::from_utf16(&units).ok()
                }
                _ => None,
            }
        }
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        /// The next element's tag and contents.
        fn next(&mut self) -> Option<(u8, &'a [u8])> {
            let (&tag, rest) = self.0.split_first()?;
            if tag & 0x1f == 0x1f {
                return None; // multi-byte tags never occur in the structures read here
            }
            let (&first, mut rest) = rest.split_first()?;
            let len = if first < 0x80 {
                usize::from(first)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 {
                    return None; // indefinite length is BER, not DER
                }
                let (bytes, after) = rest.split_at_checked(n)?;
                rest = after;
                bytes.iter().fold(0, |acc, &b| acc << 8 | usize::from(b))
            };
            let (body, rest) = rest.split_at_checked(len)?;
            self.0 = rest;
            Some((tag, body))
        }

        fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
            self.next().filter(|(t, _)| *t == tag).map(|(_, body)| body)
        }

        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    pub(super) fn parse_certificate(der: &[u8]) -> Option<CertInfo<'_>> {
        let mut outer = Reader(der);
        let cert = outer.expect(SEQUENCE)?;
        if !outer.is_empty() {
            return None;
        }
        let mut tbs = Reader(Reader(cert).expect(SEQUENCE)?);
        let (mut tag, _) = tbs.next()?;
        if tag == VERSION {
            (tag, _) = tbs.next()?;
        }
        if tag != INTEGER {
            return None; // serialNumber
        }
        tbs.expect(SEQUENCE)?; // signature algorithm
        tbs.expect(SEQUENCE)?; // issuer
        let mut validity = Reader(tbs.expect(SEQUENCE)?);
        validity.next()?; // notBefore
        let (tag, time) = validity.next()?;
        let not_after = parse_time(tag, time)?;
        let subject = parse_name(tbs.expect(SEQUENCE)?)?;
        Some(CertInfo { not_after, subject })
    }

    fn parse_name(der: &[u8]) -> Option<Vec<Attribute<'_>>> {
        let mut rdns = Reader(der);
        let mut out = Vec::new();
        let mut rdn = 0;
        while !rdns.is_empty() {
            let mut set = Reader(rdns.expect(SET)?);
            while !set.is_empty() {
                let mut atv = Reader(set.expect(SEQUENCE)?);
                let oid = atv.expect(OID)?;
                let (tag, value) = atv.next()?;
                if !atv.is_empty() {
                    return None;
                }
                out.push(Attribute {
                    rdn,
                    oid,
                    tag,
                    value,
                });
            }
            rdn += 1;
        }
        Some(out)
    }

    /// UTCTime `YYMMDDHHMMSSZ` (years 50-99 are 19xx, RFC 5280 4.1.2.5.1) or GeneralizedTime
    /// `YYYYMMDDHHMMSSZ`.
    pub(super) fn parse_time(tag: u8, bytes: &[u8]) -> Option<DateTime<Utc>> {
        let digits = bytes.strip_suffix(b"Z")?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let num = |s: &[u8]| {
            s.iter()
                .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
        };
        let (year, rest) = match (tag, digits.len()) {
            (UTC_TIME, 12) => {
                let yy = num(&digits[..2]);
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
            }
            (GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
            _ => return None,
        };
        let field = |i: usize| num(&rest[i * 2..i * 2 + 2]);
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, field(0), field(1))?
            .and_hms_opt(field(2), field(3), field(4))
            .map(|t| t.and_utc())
    }

    /// The components of a DER OID body (X.690 8.19).
    pub(super) fn oid_components(bytes: &[u8]) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        let mut acc: u64 = 0;
        for &b in bytes {
            if acc > u64::MAX >> 7 {
                return None;
            }
            acc = acc << 7 | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                if out.is_empty() {
                    let first = (acc / 40).min(2);
                    out.extend([first, acc - first * 40]);
                } else {
                    out.push(acc);
                }
                acc = 0;
            }
        }
        (bytes.last().is_some_and(|b| b & 0x80 == 0)).then_some(out)
    }

    /// A subject as rcgen will write it again byte for byte, so a leaf's issuer matches the CA's
    /// subject. None for what rcgen cannot reproduce: multi-valued RDNs, repeated attribute
    /// types, unusual string types.
    pub(super) fn distinguished_name(attrs: &[Attribute<'_>]) -> Option<DistinguishedName> {
        let mut name = DistinguishedName::new();
        for (i, attr) in attrs.iter().enumerate() {
            let ty = DnType::from_oid(&oid_components(attr.oid)?);
            if attr.rdn != i || name.get(&ty).is_some() {
                return None;
            }
            let value = match attr.tag {
                UTF8_STRING => DnValue::Utf8String(attr.text()?),
                PRINTABLE_STRING => {
                    DnValue::PrintableString(PrintableString::try_from(attr.text()?).ok()?)
                }
                IA5_STRING => DnValue::Ia5String(Ia5String::try_from(attr.text()?).ok()?),
                TELETEX_STRING => {
                    DnValue::TeletexString(TeletexString::try_from(attr.text()?).ok()?)
                }
                BMP_STRING => {
                    DnValue::BmpString(BmpString::from_utf16be(attr.value.to_vec()).ok()?)
                }
                _ => return None,
            };
            name.push(ty, value);
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::string::{BmpString, PrintableString};
    use rcgen::DnValue;

    const FILES: [&str; 6] = [
        CA_CERT,
        CA_KEY,
        SERVING_CERT,
        SERVING_KEY,
        ADMIN_CERT,
        ADMIN_KEY,
    ];

    fn snapshot(dir: &Path) -> Vec<Vec<u8>> {
        FILES
            .iter()
            .map(|f| fs::read(dir.join(f)).expect("read pki file"))
            .collect()
    }

    /// Which of the six files differ between two snapshots.
    fn changed(before: &[Vec<u8>], after: &[Vec<u8>]) -> Vec<&'static str> {
        FILES
            .iter()
            .zip(before.iter().zip(after))
            .filter(|(_, (b, a))| b != a)
            .map(|(f, _)| *f)
            .collect()
    }

    fn self_signed(dn: DistinguishedName) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("generate key");
        params.self_signed(&key).expect("self-sign").der().clone()
    }

    /// Identity from certificates rcgen makes, one per string type.
    #[test]
    fn identity_from_certificate() {
        let utf16: Vec<u8> = "zoë".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let cases = [
            (DnValue::from("jane"), Some("jane")),
            (
                DnValue::PrintableString(PrintableString::try_from("bob").expect("printable")),
                Some("bob"),
            ),
            (
                DnValue::BmpString(BmpString::from_utf16be(utf16).expect("bmp")),
                Some("zoë"),
            ),
            (DnValue::from(""), None),
        ];
        for (cn, want) in cases {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CountryName, "DE");
            dn.push(DnType::OrganizationName, "system:masters");
            dn.push(DnType::CommonName, cn.clone());
            let got = Identity::from_certificate(&self_signed(dn));
            let want = want.map(|user| Identity {
                user: user.to_owned(),
                groups: vec!["system:masters".to_owned()],
            });
            assert_eq!(got, want, "{cn:?}");
        }
    }

    type Subject = Vec<der::Attribute<'static>>;
    type Want = Option<(&'static str, &'static [&'static str])>;

    /// Subjects rcgen cannot write (repeated types), as attributes: every O is a group, the last
    /// CN wins (Go's pkix.Name), an undecodable CN or O means no identity.
    #[test]
    fn identity_from_subject() {
        const CN: &[u8] = der::OID_COMMON_NAME;
        const O: &[u8] = der::OID_ORGANIZATION;
        const C: &[u8] = &[0x55, 0x04, 0x06];
        let attr = |rdn, oid, tag, value: &'static [u8]| der::Attribute {
            rdn,
            oid,
            tag,
            value,
        };
        let cases: [(Subject, Want); 7] = [
            (vec![attr(0, CN, 0x0c, b"jane")], Some(("jane", &[]))),
            (
                vec![
                    attr(0, O, 0x0c, b"a"),
                    attr(1, O, 0x13, b"b"),
                    attr(2, CN, 0x0c, b"u"),
                ],
                Some(("u", &["a", "b"])),
            ),
            (
                vec![attr(0, CN, 0x0c, b"first"), attr(0, CN, 0x16, b"last")],
                Some(("last", &[])),
            ),
            (
                vec![attr(0, C, 0x13, b"DE"), attr(1, CN, 0x14, b"caf\xe9")],
                Some(("caf\u{e9}", &[])),
            ),
            (
                vec![attr(0, O, 0x0c, b"\xff"), attr(1, CN, 0x0c, b"u")],
                None,
            ),
            (vec![attr(0, O, 0x0c, b"devs")], None),
            (vec![attr(0, CN, 0x16, b"caf\xc3\xa9")], None),
        ];
        for (subject, want) in cases {
            let want = want.map(|(user, groups)| Identity {
                user: user.to_owned(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            });
            assert_eq!(Identity::from_subject(&subject), want);
        }
    }

    #[test]
    fn der_reader_rejects_malformed_input_without_panicking() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0x00, 0x00],    // indefinite length
            &[0x30, 0x85, 1, 0, 0, 0, 0], // length of length > 4
            &[0x30, 0x82, 0x01],          // truncated length
            &[0x30, 0x05, 0x30, 0x03],    // truncated body
            &[0x1f, 0x01, 0x00],          // multi-byte tag
            &[0x30, 0x00, 0x00],          // trailing data
        ] {
            assert!(der::parse_certificate(bad).is_none(), "{bad:02x?}");
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "peapod-admin");
        let cert = self_signed(dn);
        assert!(der::parse_certificate(&cert).is_some());
        for len in 0..cert.len() {
            assert!(
                der::parse_certificate(&cert[..len]).is_none(),
                "prefix {len}"
            );
        }
        for i in 0..cert.len() {
            for bit in [0x01, 0x80] {
                let mut flipped = cert.to_vec();
                flipped[i] ^= bit;
                let _ = der::parse_certificate(&flipped);
                let _ = Identity::from_certificate(&flipped);
            }
        }
    }

    #[test]
    fn times() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("rfc3339 time")
                .to_utc()
        };
        let cases: [(u8, &str, Option<DateTime<Utc>>); 9] = [
            (0x17, "491231235959Z", Some(at("2049-12-31T23:59:59Z"))),
            (0x17, "500101000000Z", Some(at("1950-01-01T00:00:00Z"))),
            (0x18, "20991231235959Z", Some(at("2099-12-31T23:59:59Z"))),
            (0x17, "20991231235959Z", None),
            (0x18, "491231235959Z", None),
            (0x17, "4912312359590", None),
            (0x17, "+91231235959Z", None),
            (0x17, "491331235959Z", None),
            (0x04, "491231235959Z", None),
        ];
        for (tag, text, want) in cases {
            assert_eq!(der::parse_time(tag, text.as_bytes()), want, "{text}");
        }
    }

    #[test]
    fn oids() {
        let cases: [(&[u8], Option<Vec<u64>>); 5] = [
            (&[0x55, 0x04, 0x03], Some(vec![2, 5, 4, 3])),
            (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d],
                Some(vec![1, 2, 840, 113549]),
            ),
            (&[0x88, 0x37], Some(vec![2, 999])),
            (&[0x2a, 0x86], None),
            (&[], None),
        ];
        for (bytes, want) in cases {
            assert_eq!(der::oid_components(bytes), want, "{bytes:02x?}");
        }
    }

    #[test]
    fn ca_subject_is_reproduced_exactly() {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString(PrintableString::try_from("DE").expect("printable string")),
        );
        dn.push(DnType::OrganizationName, "Crab Widgets");
        dn.push(DnType::CommonName, "kubernetes");
        let cert = self_signed(dn.clone());
        let info = der::parse_certificate(&cert).expect("parse certificate");
        assert_eq!(der::distinguished_name(&info.subject), Some(dn));

        // Two attributes in one RDN cannot be written back by rcgen.
        let mut multi = der::parse_certificate(&cert)
            .expect("parse certificate")
            .subject;
        multi[1].rdn = 0;
        assert_eq!(der::distinguished_name(&multi), None);
    }

    #[test]
    fn creates_files_with_private_keys() {
        let tmp = tempfile::tempdir().expect("create tempdir");
        let dir = tmp.path().join("pki");
        Pki::load_or_create(&dir, &[]).expect("load or create pki");
        assert_eq!(
            fs::metadata(&dir).expect("stat").permissions().mode() & 0o777,
            0o700
        );
        for (file, mode) in [
            (CA_KEY, 0o600),
            (SERVING_KEY, 0o600),
            (ADMIN_KEY, 0o600),
            (CA_CERT, 0o644),
        ] {
            let got = fs::metadata(dir.join(file))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(got, mode, "{file}");
        }
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn renews_leaves_about_to_expire_but_keeps_the_ca() {
        let now = Utc::now();
        let tmp = tempfile::tempdir().expect("create tempdir");
        load_or_create_at(tmp.path(), &[], now - TimeDelta::days(340)).expect("issue back then");
        let before = snapshot(tmp.path());
        load_or_create_at(tmp.path(), &[], now).expect("load or create pki");
        let want = [SERVING_CERT, SERVING_KEY, ADMIN_CERT, ADMIN_KEY];
        assert_eq!(changed(&before, &snapshot(tmp.path())), want);
    }

    struct Renewal {
        name: &'static str,
        damage: fn(&Path),
        extra: &'static [&'static str],
        reissued: &'static [&'static str],
    }

    #[test]
    fn reissues_what_no_longer_fits_and_nothing_else() {
        let cases = [
            Renewal {
                name: "nothing to do",
                damage: |_| {},
                extra: &[],
                reissued: &[],
            },
            Renewal {
                name: "a new extra name",
                damage: |_| {},
                extra: &["10.9.8.7"],
                reissued: &[SERVING_CERT, SERVING_KEY],
            },
            Renewal {
                name: "serving key replaced",
                damage: |d| {
                    fs::copy(d.join(ADMIN_KEY), d.join(SERVING_KEY)).expect("copy key");
                },
                extra: &[],
                reissued: &[SERVING_CERT, SERVING_KEY],
            },
            Renewal {
                name: "admin cert garbage",
                damage: |d| fs::write(d.join(ADMIN_CERT), "junk").expect("write junk"),
                extra: &[],
                reissued: &[ADMIN_CERT, ADMIN_KEY],
            },
            Renewal {
                name: "admin key lost",
                damage: |d| fs::remove_file(d.join(ADMIN_KEY)).expect("remove file"),
                extra: &[],
                reissued: &[ADMIN_CERT, ADMIN_KEY],
            },
            Renewal {
                name: "ca cert lost: reissued with the same key, leaves still chain",
                damage: |d| fs::remove_file(d.join(CA_CERT)).expect("remove file"),
                extra: &[],
                reissued: &[CA_CERT],
            },
            Renewal {
                name: "ca key lost: new ca, new leaves",
                damage: |d| fs::remove_file(d.join(CA_KEY)).expect("remove file"),
                extra: &[],
                reissued: &FILES,
            },
        ];
        let tmp = tempfile::tempdir().expect("create tempdir");
        let dir = tmp.path();
        Pki::load_or_create(dir, &[]).expect("load or create pki");
        for case in cases {
            let before = snapshot(dir);
            (case.damage)(dir);
            let extra: Vec<String> = case.extra.iter().map(|s| (*s).to_owned()).collect();
            Pki::load_or_create(dir, &extra).expect(case.name);
            assert_eq!(
                changed(&before, &snapshot(dir)),
                case.reissued,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn replaces_a_ca_about_to_expire() {
        let now = Utc::now();
        let tmp = tempfile::tempdir().expect("create tempdir");
        load_or_create_at(tmp.path(), &[], now - CA_LIFETIME + TimeDelta::days(20))
            .expect("load or create pki");
        let before = snapshot(tmp.path());
        load_or_create_at(tmp.path(), &[], now).expect("load or create pki");
        assert_eq!(changed(&before, &snapshot(tmp.path())), FILES);
    }

    #[test]
    fn leaves_never_outlive_the_ca() {
        let now = Utc::now();
        let tmp = tempfile::tempdir().expect("create tempdir");
        load_or_create_at(tmp.path(), &[], now - CA_LIFETIME + TimeDelta::days(100))
            .expect("load or create pki");
        let ca = CertificateDer::from_pem_file(tmp.path().join(CA_CERT)).expect("pem file");
        let admin = CertificateDer::from_pem_file(tmp.path().join(ADMIN_CERT)).expect("pem file");
        let (ca, admin) = (
            der::parse_certificate(&ca).expect("parse certificate"),
            der::parse_certificate(&admin).expect("parse certificate"),
        );
        assert!(admin.not_after <= ca.not_after);
    }

    /// Two daemons (or `peapod kubeconfig` during `peapod serve`) starting at once agree on one CA.
    #[test]
    fn concurrent_first_loads_agree_on_one_ca() {
        let tmp = tempfile::tempdir().expect("create tempdir");
        let cas: Vec<String> = std::thread::scope(|s| {
            let loads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| Pki::load_or_create(tmp.path(), &[]).map(|p| p.ca_pem)))
                .collect();
            loads
                .into_iter()
                .map(|l| l.join().expect("thread").expect("load or create pki"))
                .collect()
        });
        let on_disk = fs::read_to_string(tmp.path().join(CA_CERT)).expect("read ca");
        assert!(cas.iter().all(|ca| *ca == on_disk));
    }

    #[test]
    fn refuses_a_ca_key_that_does_not_match() {
        let tmp = tempfile::tempdir().expect("create tempdir");
        Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
        fs::write(
            tmp.path().join(CA_KEY),
            KeyPair::generate().expect("generate key").serialize_pem(),
        )
        .expect("replace ca key");
        let err = Pki::load_or_create(tmp.path(), &[]).expect_err("a mismatched ca key is refused");
        assert!(matches!(err, PkiError::CaKeyMismatch { .. }), "{err:?}");
    }

    #[test]
    fn tightens_a_key_readable_by_others() {
        let tmp = tempfile::tempdir().expect("create tempdir");
        Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
        let key = tmp.path().join(ADMIN_KEY);
        fs::set_permissions(&key, Permissions::from_mode(0o644)).expect("chmod");
        Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
        assert_eq!(
            fs::metadata(&key).expect("stat").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn validates_and_normalizes_extra_names() {
        let texts = |extra: &[&str]| {
            let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
            requested_sans(&extra).map(|sans| sans.into_iter().map(|s| s.text).collect::<Vec<_>>())
        };
        let defaults = texts(&[]).expect("valid names");
        assert_eq!(defaults.len(), DEFAULT_SANS.len());
        assert_eq!(
            texts(&["LOCALHOST", "localhost.", "0:0::1"]).expect("valid names"),
            defaults
        );
        assert_eq!(
            texts(&["Node-1.Example.", "10.0.0.1"]).expect("valid names")[8..],
            ["node-1.example", "10.0.0.1"]
        );
        for bad in ["", "*.example.com", "bad name", "[::1]", "-x"] {
            let err = texts(&[bad]).expect_err("invalid name refused");
            assert!(matches!(err, PkiError::InvalidSan { .. }), "{bad}: {err:?}");
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let tmp = tempfile::tempdir().expect("create tempdir");
        let pki = Pki::load_or_create(tmp.path(), &[]).expect("load or create pki");
        let shown = format!("{pki:?}");
        assert!(shown.starts_with("Pki {"), "{shown}");
        assert!(
            !shown.contains("PRIVATE") && !shown.contains("key"),
            "{shown}"
        );
    }
}
