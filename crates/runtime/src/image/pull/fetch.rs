//! Downloading one blob into `<store>/downloads/`: streamed to `<hex>.partial`, its size and
//! sha256 checked as it arrives, fsynced, renamed to `<hex>`. An flock on `<hex>.lock` makes
//! concurrent pulls of the same blob (two pods, two CLIs) wait for one download instead of
//! fetching it twice; a pull killed mid-way leaves only a `.partial` that the next download of
//! that blob truncates.

use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use oci_client::manifest::OciDescriptor;
use peapod_sys::fs::{FileLock, LockKind};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::super::archive::Staged;
use super::super::oci::Descriptor;
use super::super::reference::is_sha256_hex;
use super::super::{ImageError, ImageStore};
use super::{PullError, PullEvent, Ready, Remote, MAX_MANIFEST};

/// Bytes between two progress reports.
const PROGRESS_STEP: u64 = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Config,
    Layer,
}

pub(super) struct Fetcher<'a> {
    pub remote: &'a Remote,
    pub store: &'a ImageStore,
    pub dir: &'a Path,
    pub progress: &'a (dyn Fn(PullEvent<'_>) + Send + Sync),
}

impl Fetcher<'_> {
    /// The blob `desc` names, from the store if it has it, else downloaded and verified.
    pub async fn blob(&self, desc: &Descriptor, kind: Kind) -> Result<Ready, PullError> {
        let name = &self.remote.name;
        let hex = match desc.digest.strip_prefix("sha256:") {
            Some(hex) if is_sha256_hex(hex) => hex.to_owned(),
            _ => {
                return Err(PullError::Store {
                    reference: name.clone(),
                    source: ImageError::InvalidDigest {
                        digest: desc.digest.clone(),
                    },
                })
            }
        };
        let lock_path = self.dir.join(format!("{hex}.lock"));
        let _lock = tokio::task::spawn_blocking({
            let path = lock_path.clone();
            move || FileLock::acquire(&path, LockKind::Exclusive)
        })
        .await
        .map_err(|e| self.io(&lock_path, std::io::Error::other(e)))?
        .map_err(|e| self.io(&lock_path, std::io::Error::other(e)))?;

        let done = self.dir.join(&hex);
        let present = self.store.has_blob(&desc.digest).unwrap_or(false);
        if present || done.is_file() {
            if kind == Kind::Layer {
                (self.progress)(PullEvent::LayerPresent {
                    digest: &desc.digest,
                    size: desc.size,
                });
            }
            let path = match present {
                true => self.store_blob_path(&hex),
                false => done,
            };
            return Ok(Ready {
                staged: Staged {
                    path,
                    digest: desc.digest.clone(),
                    size: desc.size,
                },
                fetched: 0,
            });
        }
        let partial = self.dir.join(format!("{hex}.partial"));
        let size = self.download(desc, kind, &partial).await?;
        tokio::fs::rename(&partial, &done)
            .await
            .map_err(|e| self.io(&done, e))?;
        if kind == Kind::Layer {
            (self.progress)(PullEvent::LayerDone {
                digest: &desc.digest,
                size,
            });
        }
        Ok(Ready {
            staged: Staged {
                path: done,
                digest: desc.digest.clone(),
                size,
            },
            fetched: size,
        })
    }

    /// Streams the blob into `partial`, checking its size on the way and its digest at the end.
    async fn download(
        &self,
        desc: &Descriptor,
        kind: Kind,
        partial: &Path,
    ) -> Result<u64, PullError> {
        let remote = self.remote;
        let oci_desc = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size as i64,
            ..OciDescriptor::default()
        };
        let mut stream = remote
            .client
            .pull_blob_stream(&remote.target, &oci_desc)
            .await
            .map_err(|e| remote.error(e))?;
        let mut file = tokio::fs::File::create(partial)
            .await
            .map_err(|e| self.io(partial, e))?;
        let mut hasher = Sha256::new();
        let (mut done, mut reported) = (0u64, 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e)
                    if e.get_ref()
                        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) =>
                {
                    // The client checks the digest too; ours below names both sides.
                    break;
                }
                Err(e) => {
                    return Err(PullError::Unreachable {
                        reference: remote.name.clone(),
                        registry: remote.registry.clone(),
                        source: e.into(),
                    })
                }
            };
            done += chunk.len() as u64;
            if done > desc.size {
                return Err(self.size_mismatch(desc, done));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| self.io(partial, e))?;
            if kind == Kind::Layer && (done - reported >= PROGRESS_STEP || done == desc.size) {
                reported = done;
                (self.progress)(PullEvent::LayerProgress {
                    digest: &desc.digest,
                    done,
                    size: desc.size,
                });
            }
        }
        if done != desc.size {
            return Err(self.size_mismatch(desc, done));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            return Err(PullError::DigestMismatch {
                reference: remote.name.clone(),
                what: "blob",
                digest: desc.digest.clone(),
                actual,
            });
        }
        file.sync_all().await.map_err(|e| self.io(partial, e))?;
        Ok(done)
    }

    /// Parses a small JSON blob (the image config) that `blob` returned.
    pub fn read_json<T: DeserializeOwned>(&self, ready: &Ready) -> Result<T, PullError> {
        let path = &ready.staged.path;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_MANIFEST as u64).read_to_end(&mut bytes))
            .map_err(|e| self.io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| PullError::BadManifest {
            reference: self.remote.name.clone(),
            digest: ready.staged.digest.clone(),
            source,
        })
    }

    fn store_blob_path(&self, hex: &str) -> PathBuf {
        self.store.blob_dir().join(hex)
    }

    fn size_mismatch(&self, desc: &Descriptor, actual: u64) -> PullError {
        PullError::SizeMismatch {
            reference: self.remote.name.clone(),
            digest: desc.digest.clone(),
            expected: desc.size,
            actual,
        }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> PullError {
        PullError::Io {
            reference: self.remote.name.clone(),
            path: path.to_owned(),
            source,
        }
    }
}
