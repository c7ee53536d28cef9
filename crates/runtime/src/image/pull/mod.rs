//! Pulling an image from a registry into the store, as a node's container runtime does:
//! the reference normalised (`busybox` -> `docker.io/library/busybox:latest`), an index
//! resolved to this machine's platform, OCI and Docker v2 schema 2 manifests, every blob's
//! digest and size verified, blobs the store holds not fetched again.
//!
//! Blobs are downloaded without the store lock (a pull may take minutes) into
//! `<store>/downloads/`: `<hex>.partial` while it arrives, renamed to `<hex>` once its size and
//! digest are checked, under an flock on `<hex>.lock` so two pulls of one blob download it
//! once. Only then does [`ImageStore::commit_pulled`] take the exclusive lock to unpack the
//! layers and publish the image, exactly as a load does. A pull killed at any point leaves at
//! most a partial download, never a blob or a name.
//!
//! The registry protocol (bearer-token and basic auth, plain HTTP only for registries listed
//! as insecure) is `oci-client`'s, with rustls on the `ring` provider.

mod auth;
mod fetch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};

pub use auth::{default_auth_file, AuthConfig, AuthError, Credentials};

use super::archive::Staged;
use super::layout::{ArchiveImage, ArchiveLayer};
use super::oci::{host_platform, select_platform, ConfigFile, Descriptor, IndexOrManifest};
use super::reference::{is_sha256_hex, Reference};
use super::{ImageError, ImageStore, ImageSummary};

/// Manifests are parsed in memory; real ones are a few KiB.
const MAX_MANIFEST: usize = 4 << 20;
/// To connect, and between two reads of one response: a registry that stalls longer has
/// failed (`PEAPOD_REGISTRY_TIMEOUT` seconds changes it).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a pull accepts, in the `Accept` header and in the answer.
const ACCEPTED: [&str; 4] = [
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// How registries are reached: which ones speak plain HTTP, which CAs to trust beyond the
/// system's.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host:port` of registries reached over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files with extra root certificates.
    pub ca_files: Vec<PathBuf>,
    /// How long a connection may take, and how long a registry may stay silent mid-answer.
    pub timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            insecure: Vec::new(),
            ca_files: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl RegistryConfig {
    /// `PEAPOD_INSECURE_REGISTRIES=127.0.0.1:5000,localhost:5000`,
    /// `PEAPOD_REGISTRY_CA=/path/ca.pem[:/other.pem]` and `PEAPOD_REGISTRY_TIMEOUT=60`.
    pub fn from_env() -> RegistryConfig {
        let list = |var: &str, sep: char| -> Vec<String> {
            std::env::var(var)
                .unwrap_or_default()
                .split(sep)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        RegistryConfig {
            insecure: list("PEAPOD_INSECURE_REGISTRIES", ','),
            ca_files: list("PEAPOD_REGISTRY_CA", ':')
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            timeout: std::env::var("PEAPOD_REGISTRY_TIMEOUT")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.max(1))),
        }
    }
}

/// What a pull reports as it goes (the CLI draws progress bars from it, the kubelet ignores
/// it).
#[derive(Debug, Clone, Copy)]
pub enum PullEvent<'a> {
    /// The image manifest is known: how many layers, how many bytes to fetch in all.
    Resolved {
        manifest_digest: &'a str,
        layers: usize,
    },
    /// A layer blob is in the store already.
    LayerPresent { digest: &'a str, size: u64 },
    /// `done` of `size` bytes of a layer blob have arrived.
    LayerProgress {
        digest: &'a str,
        done: u64,
        size: u64,
    },
    /// A layer blob is downloaded and verified.
    LayerDone { digest: &'a str, size: u64 },
    /// Every blob is here: unpacking and storing.
    Storing,
}

/// The outcome of a successful pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub image: ImageSummary,
    /// `sha256:` of the image manifest stored (for an index, the one for this platform).
    pub manifest_digest: String,
    /// Bytes downloaded by this pull (blobs the store had are not counted).
    pub fetched_bytes: u64,
    pub elapsed: Duration,
}

/// Why a pull failed. Each message starts with the reference.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry answered with an error: its own words.
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{reference}: cannot reach registry {registry}")]
    Unreachable {
        reference: String,
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("{reference}: index {digest} has no manifest for {platform}")]
    NoPlatform {
        reference: String,
        digest: String,
        platform: String,
    },
    #[error("{reference}: unsupported manifest {what}")]
    Unsupported { reference: String, what: String },
    #[error("{reference}: invalid manifest {digest}")]
    BadManifest {
        reference: String,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{reference}: {what} {digest} has content {actual}")]
    DigestMismatch {
        reference: String,
        what: &'static str,
        digest: String,
        actual: String,
    },
    #[error("{reference}: blob {digest} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        reference: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("{reference}: image config {digest} has {diff_ids} diff ids for {layers} layers")]
    LayerCount {
        reference: String,
        digest: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("{reference}: write {path}")]
    Io {
        reference: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read registry CA {path}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Reference(ImageError),
    #[error("{reference}: store image")]
    Store {
        reference: String,
        #[source]
        source: ImageError,
    },
}

/// Pulls `reference` into `store`. `auth` supplies credentials per registry (none means
/// anonymous, which still follows a registry's bearer-token challenge).
pub async fn pull(
    store: &ImageStore,
    config: &RegistryConfig,
    auth: &AuthConfig,
    reference: &str,
    progress: &(dyn Fn(PullEvent<'_>) + Send + Sync),
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let parsed = Reference::parse(reference).map_err(PullError::Reference)?;
    let remote = Remote::new(&parsed, config, auth)?;
    let name = remote.name.clone();
    let resolved = remote.resolve().await?;
    progress(PullEvent::Resolved {
        manifest_digest: &resolved.digest,
        layers: resolved.layers.len(),
    });
    let downloads = store.downloads_dir();
    std::fs::create_dir_all(&downloads).map_err(|source| PullError::Io {
        reference: name.clone(),
        path: downloads.clone(),
        source,
    })?;
    let fetcher = fetch::Fetcher {
        remote: &remote,
        store,
        dir: &downloads,
        progress,
    };
    let (image, fetched_bytes) = fetch_image(&fetcher, resolved).await?;
    let manifest_digest = image.manifest_digest.clone();
    // Downloads whose blob the store already had are not moved in: dropped after the commit.
    let leftovers: Vec<PathBuf> = std::iter::once(&image.config)
        .chain(image.layers.iter().map(|l| &l.blob))
        .map(|s| s.path.clone())
        .filter(|p| p.starts_with(&downloads))
        .collect();
    progress(PullEvent::Storing);
    let committing = store.clone();
    let key = name.clone();
    let summary = tokio::task::spawn_blocking(move || committing.commit_pulled(image, &key))
        .await
        .map_err(|e| PullError::Io {
            reference: name.clone(),
            path: downloads.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| PullError::Store {
            reference: name.clone(),
            source,
        })?;
    for path in leftovers {
        let _ = std::fs::remove_file(path);
    }
    Ok(PullReport {
        image: summary,
        manifest_digest,
        fetched_bytes,
        elapsed: started.elapsed(),
    })
}

/// The image manifest for this platform, as fetched and parsed.
struct Resolved {
    bytes: bytes::Bytes,
    digest: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Fetches the config and the layers (concurrently) and pairs the layers with their diff ids:
/// an image ready for the store, and the bytes it cost.
async fn fetch_image(
    fetcher: &fetch::Fetcher<'_>,
    resolved: Resolved,
) -> Result<(ArchiveImage, u64), PullError> {
    let name = &fetcher.remote.name;
    let config = fetcher.blob(&resolved.config, fetch::Kind::Config).await?;
    let config_file: ConfigFile = fetcher.read_json(&config)?;
    let diff_ids = &config_file.rootfs.diff_ids;
    if diff_ids.len() != resolved.layers.len() {
        return Err(PullError::LayerCount {
            reference: name.clone(),
            digest: resolved.config.digest,
            layers: resolved.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    if let Some(bad) = diff_ids
        .iter()
        .find(|d| !d.strip_prefix("sha256:").is_some_and(is_sha256_hex))
    {
        return Err(PullError::Store {
            reference: name.clone(),
            source: ImageError::InvalidDigest {
                digest: bad.clone(),
            },
        });
    }
    let blobs = futures_util::future::try_join_all(
        resolved
            .layers
            .iter()
            .map(|desc| fetcher.blob(desc, fetch::Kind::Layer)),
    )
    .await?;
    let fetched = config.fetched + blobs.iter().map(|b| b.fetched).sum::<u64>();
    let layers = blobs
        .into_iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| ArchiveLayer {
            blob: blob.staged,
            diff_id: diff_id.clone(),
        })
        .collect();
    let image = ArchiveImage {
        names: vec![name.clone()],
        manifest: resolved.bytes.to_vec(),
        manifest_digest: resolved.digest,
        config: config.staged,
        layers,
    };
    Ok((image, fetched))
}

/// One registry repository, with its client and credentials.
struct Remote {
    client: oci_client::Client,
    target: oci_client::Reference,
    auth: RegistryAuth,
    /// The normalised reference, for errors.
    name: String,
    registry: String,
}

impl Remote {
    fn new(
        parsed: &Reference,
        config: &RegistryConfig,
        auth: &AuthConfig,
    ) -> Result<Remote, PullError> {
        let (registry, target) = target(parsed);
        Ok(Remote {
            client: client(config)?,
            target,
            auth: match auth.get(&registry) {
                Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                None => RegistryAuth::Anonymous,
            },
            name: parsed.to_string(),
            registry,
        })
    }

    /// The target's image manifest: through an index to this platform's entry.
    async fn resolve(&self) -> Result<Resolved, PullError> {
        let (mut bytes, mut digest) = self.manifest(self.target.digest()).await?;
        let mut doc = self.parse_manifest(&bytes, &digest)?;
        if let Some(manifests) = doc.manifests.take() {
            let platform = host_platform();
            let chosen =
                select_platform(&manifests, platform).ok_or_else(|| PullError::NoPlatform {
                    reference: self.name.clone(),
                    digest: digest.clone(),
                    platform: format!("{}/{}", platform.0, platform.1),
                })?;
            let chosen = chosen.digest.clone();
            (bytes, digest) = self.manifest(Some(&chosen)).await?;
            doc = self.parse_manifest(&bytes, &digest)?;
        }
        match (doc.config, doc.layers, doc.manifests) {
            (Some(config), Some(layers), None) => Ok(Resolved {
                bytes,
                digest,
                config,
                layers,
            }),
            _ => Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("{digest}: neither an image manifest nor an index"),
            }),
        }
    }

    /// The manifest for the target's tag, or for `digest` (then checked against it).
    async fn manifest(&self, digest: Option<&str>) -> Result<(bytes::Bytes, String), PullError> {
        let target = match digest {
            Some(d) => self.target.clone_with_digest(d.to_owned()),
            None => self.target.clone(),
        };
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&target, &self.auth, &ACCEPTED)
            .await
            .map_err(|e| self.error(e))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("of {} bytes", bytes.len()),
            });
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        match digest {
            Some(expected) if expected != actual => Err(PullError::DigestMismatch {
                reference: self.name.clone(),
                what: "manifest",
                digest: expected.to_owned(),
                actual,
            }),
            _ => Ok((bytes, actual)),
        }
    }

    /// Parses an index or image manifest, refusing schema 1 and foreign media types.
    fn parse_manifest(&self, bytes: &[u8], digest: &str) -> Result<IndexOrManifest, PullError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            #[serde(default)]
            schema_version: u32,
            #[serde(default)]
            media_type: Option<String>,
        }
        let bad = |source| PullError::BadManifest {
            reference: self.name.clone(),
            digest: digest.to_owned(),
            source,
        };
        let head: Head = serde_json::from_slice(bytes).map_err(bad)?;
        if head.schema_version != 2 {
            return Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("{digest}: schema version {}", head.schema_version),
            });
        }
        if let Some(media_type) = head.media_type.filter(|m| !ACCEPTED.contains(&m.as_str())) {
            return Err(PullError::Unsupported {
                reference: self.name.clone(),
                what: format!("{digest}: media type {media_type}"),
            });
        }
        serde_json::from_slice(bytes).map_err(bad)
    }

    /// Turns a client error into the registry's own words where it answered, or "cannot
    /// reach" with the transport's cause where it did not.
    fn error(&self, error: OciDistributionError) -> PullError {
        let message = match &error {
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .map(|e| {
                    let detail = match &e.detail {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::Object(m) if m.is_empty() => String::new(),
                        d => format!(" ({d})"),
                    };
                    format!("{}{detail}", e.message)
                })
                .collect::<Vec<_>>()
                .join("; "),
            OciDistributionError::UnauthorizedError { .. } => {
                "401 Unauthorized: the registry wants credentials, or refused the ones given"
                    .to_owned()
            }
            OciDistributionError::AuthenticationFailure(reason) => {
                format!("authentication failed: {}", reason.trim())
            }
            OciDistributionError::ServerError { code, message, .. } => {
                let message = message.trim();
                let message: String = message.chars().take(200).collect();
                format!("registry answered HTTP {code}: {message}")
            }
            OciDistributionError::DigestError(e) => format!("digest: {e}"),
            OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
                return PullError::Unreachable {
                    reference: self.name.clone(),
                    registry: self.registry.clone(),
                    source: error,
                }
            }
            other => other.to_string(),
        };
        PullError::Registry {
            reference: self.name.clone(),
            message,
        }
    }
}

/// The registry host and the client's reference for a normalised reference: a digest wins
/// over a tag, as a pull by `repo:tag@digest` fetches the digest.
fn target(parsed: &Reference) -> (String, oci_client::Reference) {
    let (registry, repository) = parsed
        .repository
        .split_once('/')
        .unwrap_or((parsed.repository.as_str(), ""));
    let (registry, repository) = (registry.to_owned(), repository.to_owned());
    let reference = match (&parsed.digest, &parsed.tag) {
        (Some(digest), _) => {
            oci_client::Reference::with_digest(registry.clone(), repository, digest.clone())
        }
        (None, tag) => oci_client::Reference::with_tag(
            registry.clone(),
            repository,
            tag.clone().unwrap_or_else(|| "latest".to_owned()),
        ),
    };
    (registry, reference)
}

/// A client for `config`: plain HTTP only to the insecure registries, extra CAs trusted,
/// index platforms chosen by us (so the choice is the same as for archives).
fn client(config: &RegistryConfig) -> Result<oci_client::Client, PullError> {
    // reqwest is built without a default provider: ring it is, as everywhere in peapod. Fails
    // harmlessly when a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    for path in &config.ca_files {
        let data = std::fs::read(path).map_err(|source| PullError::Ca {
            path: path.clone(),
            source,
        })?;
        certs.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let protocol = if config.insecure.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(config.insecure.clone())
    };
    Ok(oci_client::Client::new(ClientConfig {
        protocol,
        extra_root_certificates: certs,
        platform_resolver: None,
        connect_timeout: Some(config.timeout),
        read_timeout: Some(config.timeout),
        user_agent: concat!("peapod/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    }))
}

/// A blob ready for the store, and how many bytes fetching it cost.
#[derive(Debug)]
struct Ready {
    staged: Staged,
    fetched: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_registry_repository_and_tag_or_digest() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "127.0.0.1:5000/a/b:1",
                "127.0.0.1:5000",
                "a/b",
                Some("1"),
                None,
            ),
            (
                &*format!("localhost:5000/app:v1@{digest}"),
                "localhost:5000",
                "app",
                None,
                Some(digest.as_str()),
            ),
        ];
        for (input, registry, repository, tag, want_digest) in cases {
            let parsed = Reference::parse(input).expect("valid");
            let (host, reference) = target(&parsed);
            assert_eq!(host, registry, "{input}");
            assert_eq!(reference.registry(), registry, "{input}");
            assert_eq!(reference.repository(), repository, "{input}");
            assert_eq!(reference.tag(), tag, "{input}");
            assert_eq!(reference.digest(), want_digest, "{input}");
        }
    }

    #[test]
    fn a_client_needs_a_readable_ca() {
        let config = RegistryConfig {
            insecure: vec!["127.0.0.1:5000".into()],
            ..RegistryConfig::default()
        };
        assert!(client(&config).is_ok());
        let missing_ca = RegistryConfig {
            ca_files: vec![PathBuf::from("/nonexistent/ca.pem")],
            ..RegistryConfig::default()
        };
        let err = client(&missing_ca).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("read registry CA /nonexistent/ca.pem"));
    }
}
