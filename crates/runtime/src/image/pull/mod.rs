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
mod remote;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oci_client::errors::OciDistributionError;

pub use auth::{default_auth_file, AuthConfig, AuthError, Credentials};

use super::archive::Staged;
use super::layout::{ArchiveImage, ArchiveLayer};
use super::oci::ConfigFile;
use super::reference::{is_sha256_hex, Reference};
use super::{ImageError, ImageStore, ImageSummary};
use remote::{Remote, Resolved};

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
/// A blob ready for the store, and how many bytes fetching it cost.
#[derive(Debug)]
struct Ready {
    staged: Staged,
    fetched: u64,
}
