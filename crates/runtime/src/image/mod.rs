//! The image store: loading OCI image-layout and `docker save` archives into a
//! content-addressed store, unpacking their layers once for overlayfs, and resolving image
//! names to layer directories plus the image's run configuration.
//!
//! On-disk layout under `<data root>/images`:
//!
//! ```text
//! lock                      flock(2): exclusive for load/remove, shared for list/resolve
//! names.json                name -> manifest digest, config digest, size (written last)
//! blobs/sha256/<hex>        manifests, configs and layer blobs, verified on the way in
//! layers/<diff id hex>/     unpacked layers, whiteouts in overlayfs format
//! tmp/                      staging; emptied at the start of every load
//! downloads/                blobs of pulls in flight (`pull/fetch.rs`); not emptied by loads
//! ```
//!
//! Invariant: anything reachable from `names.json` is complete and verified, because every
//! file and directory is created in `tmp/` and renamed into place before the index that
//! refers to it is written.

mod archive;
pub mod gc;
mod layout;
mod names;
mod oci;
mod prune;
pub mod pull;
mod reference;
mod scratch;
mod store;
mod unpack;

use std::path::{Path, PathBuf};

pub use reference::normalize_reference;
pub use store::ImageStore;

/// One name in the store, as shown by `peapod image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// `sha256:<hex>` of the image config, as Docker's image id.
    pub id: String,
    /// Bytes of the config and the layer blobs as stored (compressed layers count compressed).
    pub size: u64,
    pub source: ImageSource,
}

/// How an image came into the store. A loaded image is the user's own copy: the kubelet's
/// `Always` pull policy does not replace it from a registry (see `peapod-kubelet`'s pull step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// `peapod image load` (an OCI or docker-save archive).
    #[default]
    Loaded,
    /// `peapod image pull`, or a pod's image pull.
    Pulled,
}

/// A resolved image, ready for a container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub id: String,
    /// Unpacked layer directories, bottom first (overlayfs wants `lowerdir` top first).
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    pub source: ImageSource,
}

/// The parts of the OCI image config a container needs
/// (<https://github.com/opencontainers/image-spec/blob/main/config.md>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `STOPSIGNAL`, e.g. `SIGQUIT` or `3`: what the kubelet sends instead of SIGTERM.
    pub stop_signal: Option<String>,
}

/// Errors of the image store. Errors about an archive start with the archive's path.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    #[error("image {name} not found")]
    NotFound { name: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock image store {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: peapod_sys::fs::FsError,
    },
    #[error("{archive}: read archive")]
    ReadArchive {
        archive: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{archive}: not a tar archive")]
    NotTar { archive: PathBuf },
    #[error("{archive}: {path} is truncated")]
    Truncated { archive: PathBuf, path: String },
    #[error("{archive}: unsafe path {path:?} in archive")]
    UnsafeArchivePath { archive: PathBuf, path: String },
    #[error("{archive}: blob {digest} digest mismatch (content is {actual})")]
    DigestMismatch {
        archive: PathBuf,
        digest: String,
        actual: String,
    },
    #[error("{archive}: {path} missing from archive")]
    MissingFile { archive: PathBuf, path: String },
    #[error("{archive}: unsupported digest {digest}")]
    UnsupportedDigest { archive: PathBuf, digest: String },
    #[error("{archive}: neither an OCI image layout nor a docker-save archive")]
    UnknownFormat { archive: PathBuf },
    #[error("{archive}: invalid {path}")]
    BadJson {
        archive: PathBuf,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{archive}: {path} is {size} bytes, more than a JSON document may be")]
    TooLarge {
        archive: PathBuf,
        path: String,
        size: u64,
    },
    #[error("{archive}: index {digest} has no manifest for {platform}")]
    NoPlatform {
        archive: PathBuf,
        digest: String,
        platform: String,
    },
    #[error("image {digest} has {layers} layers but {diff_ids} diff ids")]
    LayerCount {
        digest: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("{archive}: archive holds no image")]
    Empty { archive: PathBuf },
    #[error("{archive}: image {digest} has no name; pass a name")]
    Unnamed { archive: PathBuf, digest: String },
    #[error("{archive}: one name given but the archive holds {count} images")]
    AmbiguousName { archive: PathBuf, count: usize },
    #[error("invalid digest {digest:?}")]
    InvalidDigest { digest: String },
    #[error("layer {digest}: {compression} compression is not supported")]
    UnsupportedCompression {
        digest: String,
        compression: &'static str,
    },
    #[error("layer {digest}: content is {actual}, diff id is {expected}")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("layer {digest}: unsafe path {path:?}: {reason}")]
    UnsafePath {
        digest: String,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("layer {digest}: read layer")]
    ReadLayer {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest}: write overlayfs metadata")]
    Overlay {
        digest: String,
        #[source]
        source: peapod_sys::fs::FsError,
    },
    #[error("flush {what} to disk")]
    Sync {
        what: PathBuf,
        #[source]
        source: peapod_sys::fs::FsError,
    },
    #[error("corrupt image store: {path}")]
    CorruptStore {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("blob {digest} referenced by {name} is missing from the store")]
    MissingBlob { name: String, digest: String },
}

impl ImageError {
    /// The archive this error is about, if any: callers that add their own context use it to
    /// avoid naming the archive twice.
    pub fn archive(&self) -> Option<&Path> {
        use ImageError::*;
        match self {
            ReadArchive { archive, .. }
            | NotTar { archive }
            | Truncated { archive, .. }
            | UnsafeArchivePath { archive, .. }
            | DigestMismatch { archive, .. }
            | MissingFile { archive, .. }
            | UnsupportedDigest { archive, .. }
            | UnknownFormat { archive }
            | BadJson { archive, .. }
            | TooLarge { archive, .. }
            | NoPlatform { archive, .. }
            | Empty { archive }
            | Unnamed { archive, .. }
            | AmbiguousName { archive, .. } => Some(archive),
            _ => None,
        }
    }
}

/// Builds the `map_err` closure for an I/O error on `path`.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
