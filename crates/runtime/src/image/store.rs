//! [`ImageStore`]: load, list, remove and resolve images on disk (layout in the module doc).
//!
//! Cross-process safety comes from flock(2) on `<root>/lock`: a daemon and a
//! `peapod image load` may share a root. Load and remove hold the exclusive lock for their
//! whole run, so a long load delays resolves; in exchange `tmp/` can be emptied at the start
//! of each load without knowing who left what there.
//!
//! `remove` deletes blobs no name references any more but keeps unpacked layer directories:
//! running containers may still have them as overlayfs lowerdirs. A layer directory without a
//! blob is harmless and is reused if the same layer is loaded again.

use std::collections::HashSet;
use std::fs::{self, File, Permissions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use peapod_sys::fs::{FileLock, LockKind};
use serde::de::DeserializeOwned;

use super::archive::StagedArchive;
use super::layout::{self, ArchiveImage};
use super::names::{self, NameEntry, NamesIndex};
use super::oci::{ConfigFile, Manifest};
use super::reference::{is_sha256_hex, Reference};
use super::scratch::{remove_path, Created, Scratch};
use super::unpack::unpack_layer;
use super::{io_err, Image, ImageError, ImageSource, ImageSummary};

/// Metadata blobs (manifests, configs) read back from the store are at most this big.
const MAX_JSON: u64 = 4 << 20;

/// The image store rooted at `<data root>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens the store at `root`, creating its directories if missing.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_owned(),
        };
        for dir in [store.blob_dir(), store.layer_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(store)
    }

    /// Loads every image of an OCI layout or `docker save` archive. `name` replaces the
    /// archive's own names and is only accepted for an archive with a single image.
    pub fn load(
        &self,
        archive: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let name = name
            .map(|n| Reference::parse(n).map(|r| r.to_string()))
            .transpose()?;
        let _lock = self.lock(LockKind::Exclusive)?;
        self.clean_tmp()?;
        let staging = Scratch::create(&self.tmp_dir(), "load")?;
        let files = staging.path().join("files");
        fs::create_dir(&files).map_err(io_err("create directory", &files))?;
        let staged = StagedArchive::stage(archive, &files)?;
        let mut images = layout::read_images(&staged)?;
        assign_names(archive, &mut images, name)?;
        self.commit(&images, archive, ImageSource::Loaded)
    }

    /// Puts a pulled image in place under the exclusive lock: its blobs were downloaded and
    /// verified into `downloads/` (or are in the store already), so only unpacking, renames
    /// and the names index remain.
    pub(super) fn commit_pulled(
        &self,
        mut image: ArchiveImage,
        reference: &str,
    ) -> Result<ImageSummary, ImageError> {
        let _lock = self.lock(LockKind::Exclusive)?;
        // A concurrent pull of the same blob may have moved its download into the store, or
        // a concurrent load may have put it there: either copy is verified.
        let blobs =
            std::iter::once(&mut image.config).chain(image.layers.iter_mut().map(|l| &mut l.blob));
        for blob in blobs {
            if !blob.path.exists() {
                let stored = self.blob_path(&blob.digest)?;
                if !stored.is_file() {
                    return Err(ImageError::MissingBlob {
                        name: reference.to_owned(),
                        digest: blob.digest.clone(),
                    });
                }
                blob.path = stored;
            }
        }
        let mut summaries =
            self.commit(std::slice::from_ref(&image), reference, ImageSource::Pulled)?;
        summaries.pop().ok_or_else(|| ImageError::NotFound {
            name: reference.to_owned(),
        })
    }

    /// Whether the store holds this blob (`sha256:<hex>`) already.
    pub(super) fn has_blob(&self, digest: &str) -> Result<bool, ImageError> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Where pulls download blobs before they are committed: never emptied by a load, since a
    /// pull downloads without holding the store lock.
    pub(super) fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Unpacks the images' layers, moves their blobs into place and records their names,
    /// all under the exclusive lock the caller holds; rolls back what it put in place if it
    /// fails. `what` (an archive or a reference) names a flush failure.
    fn commit(
        &self,
        images: &[ArchiveImage],
        what: impl AsRef<Path>,
        source: ImageSource,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let staging = Scratch::create(&self.tmp_dir(), "commit")?;
        let mut created = Created::default();
        for layer in images.iter().flat_map(|i| &i.layers) {
            if let Some(dir) =
                self.ensure_layer(&layer.blob.path, &layer.blob.digest, &layer.diff_id)?
            {
                created.0.push(dir);
            }
        }
        for (i, image) in images.iter().enumerate() {
            let manifest = staging.path().join(format!("manifest-{i}"));
            fs::write(&manifest, &image.manifest).map_err(io_err("write", &manifest))?;
        }
        // Blob contents reach the disk before the renames that publish them.
        self.sync(what)?;
        for (i, image) in images.iter().enumerate() {
            let manifest = staging.path().join(format!("manifest-{i}"));
            let layers = image
                .layers
                .iter()
                .map(|l| (l.blob.path.as_path(), &l.blob.digest));
            let blobs = [
                (manifest.as_path(), &image.manifest_digest),
                (image.config.path.as_path(), &image.config.digest),
            ];
            for (path, digest) in blobs.into_iter().chain(layers) {
                if let Some(dest) = self.put_blob(path, digest)? {
                    created.0.push(dest);
                }
            }
        }
        names::sync_dir(&self.blob_dir())?;

        let mut index = NamesIndex::read(&self.names_path())?;
        let (mut summaries, mut replaced) = (Vec::new(), false);
        for image in images {
            let entry = NameEntry {
                manifest: image.manifest_digest.clone(),
                id: image.config.digest.clone(),
                size: image.config.size + image.layers.iter().map(|l| l.blob.size).sum::<u64>(),
                source,
            };
            for name in &image.names {
                summaries.push(names::summary(name, &entry));
                let old = index.images.insert(name.clone(), entry.clone());
                replaced |= old.is_some_and(|old| old.manifest != entry.manifest);
            }
        }
        index.write(&self.names_path(), &self.tmp_dir())?;
        created.commit();
        if replaced {
            // A name moved to another image: the old one's blobs may be unreferenced now.
            self.collect_garbage(&index)?;
        }
        for summary in &summaries {
            tracing::info!(image = %summary.name, id = %summary.id, ?source, "image stored");
        }
        Ok(summaries)
    }

    /// All names in the store, sorted.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let _lock = self.lock(LockKind::Shared)?;
        Ok(NamesIndex::read(&self.names_path())?.summaries())
    }

    /// Removes one name, then the blobs no remaining name needs.
    pub fn remove(&self, name: &str) -> Result<ImageSummary, ImageError> {
        let key = Reference::parse(name)?.to_string();
        let _lock = self.lock(LockKind::Exclusive)?;
        let mut index = NamesIndex::read(&self.names_path())?;
        let entry = index
            .images
            .remove(&key)
            .ok_or_else(|| ImageError::NotFound { name: key.clone() })?;
        index.write(&self.names_path(), &self.tmp_dir())?;
        self.collect_garbage(&index)?;
        tracing::info!(image = %key, "image removed");
        Ok(names::summary(&key, &entry))
    }

    /// Finds an image by name (normalised first) or by `repository@digest` of its manifest,
    /// unpacking any layer directory that has gone missing.
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        let reference = Reference::parse(name)?;
        let key = reference.to_string();
        let _lock = self.lock(LockKind::Shared)?;
        let index = NamesIndex::read(&self.names_path())?;
        let found = index.images.get_key_value(&key).or_else(|| {
            let digest = reference.digest.as_ref()?;
            index.images.iter().find(|(n, e)| {
                &e.manifest == digest
                    && Reference::parse(n).is_ok_and(|r| r.repository == reference.repository)
            })
        });
        let (found_name, entry) = found.ok_or(ImageError::NotFound { name: key })?;
        let manifest: Manifest = self.read_blob_json(found_name, &entry.manifest)?;
        let config: ConfigFile = self.read_blob_json(found_name, &manifest.config.digest)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::LayerCount {
                digest: entry.manifest.clone(),
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let dir = self.layer_path(diff_id)?;
            if !dir.is_dir() {
                let blob = self.blob_path(&desc.digest)?;
                if !blob.is_file() {
                    return Err(ImageError::MissingBlob {
                        name: found_name.clone(),
                        digest: desc.digest.clone(),
                    });
                }
                self.ensure_layer(&blob, &desc.digest, diff_id)?;
            }
            layers.push(dir);
        }
        Ok(Image {
            name: found_name.clone(),
            id: entry.id.clone(),
            layers,
            config: config.image_config(),
            source: entry.source,
        })
    }

    pub(super) fn lock(&self, kind: LockKind) -> Result<FileLock, ImageError> {
        let path = self.root.join("lock");
        FileLock::acquire(&path, kind).map_err(|source| ImageError::Lock { path, source })
    }

    /// syncfs(2) on the store's filesystem; `what` (an archive or a layer) names the failure.
    fn sync(&self, what: impl AsRef<Path>) -> Result<(), ImageError> {
        peapod_sys::fs::sync_filesystem(&self.root).map_err(|source| ImageError::Sync {
            what: what.as_ref().to_owned(),
            source,
        })
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(super) fn layer_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(super) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(super) fn names_path(&self) -> PathBuf {
        self.root.join("names.json")
    }

    pub(super) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blob_dir().join(digest_hex(digest)?))
    }

    pub(super) fn layer_path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.layer_dir().join(digest_hex(diff_id)?))
    }

    /// Empties `tmp/`: whatever is there was left by a load or resolve that died. Only
    /// called under the exclusive lock, when nobody else can be using it.
    fn clean_tmp(&self) -> Result<(), ImageError> {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io_err("read directory", &tmp))? {
            let path = entry.map_err(io_err("read directory", &tmp))?.path();
            remove_path(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }

    /// Unpacks a layer into `layers/<diff id hex>` unless it is there already; returns the
    /// directory when this call created it. The layer is flushed to disk before it is
    /// renamed into place, so an existing directory is always complete.
    fn ensure_layer(
        &self,
        blob: &Path,
        digest: &str,
        diff_id: &str,
    ) -> Result<Option<PathBuf>, ImageError> {
        let dest = self.layer_path(diff_id)?;
        if dest.is_dir() {
            return Ok(None);
        }
        let work = Scratch::create(&self.tmp_dir(), "layer")?;
        let actual = unpack_layer(blob, digest, work.path())?;
        if actual != diff_id {
            return Err(ImageError::DiffIdMismatch {
                digest: digest.to_owned(),
                expected: diff_id.to_owned(),
                actual,
            });
        }
        fs::set_permissions(work.path(), Permissions::from_mode(0o755))
            .map_err(io_err("chmod", work.path()))?;
        self.sync(digest)?;
        match fs::rename(work.path(), &dest) {
            Ok(()) => {
                work.keep();
                names::sync_dir(&self.layer_dir())?;
                Ok(Some(dest))
            }
            // A concurrent resolve (shared lock) unpacked the same layer first.
            Err(e) if dest.is_dir() && is_exists_error(&e) => Ok(None),
            Err(e) => Err(io_err("rename into place", &dest)(e)),
        }
    }

    /// Moves a verified staged file to `blobs/sha256/<hex>`; returns the path if it was new.
    fn put_blob(&self, staged: &Path, digest: &str) -> Result<Option<PathBuf>, ImageError> {
        let dest = self.blob_path(digest)?;
        if dest.exists() {
            return Ok(None);
        }
        fs::rename(staged, &dest).map_err(io_err("rename into place", &dest))?;
        Ok(Some(dest))
    }

    pub(super) fn read_blob_json<T: DeserializeOwned>(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<T, ImageError> {
        let path = self.blob_path(digest)?;
        let missing = || ImageError::MissingBlob {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
        let file = File::open(&path).map_err(|_| missing())?;
        // A document cut off at the cap fails to parse, which is what it deserves.
        serde_json::from_reader(BufReader::new(file).take(MAX_JSON))
            .map_err(|source| ImageError::CorruptStore { path, source })
    }

    /// Deletes blobs that no name in `index` reaches. Any doubt (an unreadable manifest)
    /// keeps everything: a leaked blob costs disk, a wrongly deleted one breaks an image.
    pub(super) fn collect_garbage(&self, index: &NamesIndex) -> Result<(), ImageError> {
        let mut keep = HashSet::new();
        for (name, entry) in &index.images {
            let manifest: Manifest = match self.read_blob_json(name, &entry.manifest) {
                Ok(manifest) => manifest,
                Err(error) => {
                    tracing::warn!(%error, "skipping blob garbage collection");
                    return Ok(());
                }
            };
            keep.insert(entry.manifest.clone());
            keep.insert(manifest.config.digest);
            keep.extend(manifest.layers.into_iter().map(|l| l.digest));
        }
        let dir = self.blob_dir();
        for item in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let item = item.map_err(io_err("read directory", &dir))?;
            let digest = format!("sha256:{}", item.file_name().to_string_lossy());
            if !keep.contains(&digest) {
                let path = item.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }
}

/// Gives every image its names: `name` (if given) for the archive's single image, else the
/// archive's own, which every image must have.
fn assign_names(
    archive: &Path,
    images: &mut [ArchiveImage],
    name: Option<String>,
) -> Result<(), ImageError> {
    if let Some(name) = name {
        let distinct: HashSet<&str> = images.iter().map(|i| i.manifest_digest.as_str()).collect();
        if distinct.len() != 1 {
            return Err(ImageError::AmbiguousName {
                archive: archive.to_owned(),
                count: distinct.len(),
            });
        }
        for image in images.iter_mut() {
            image.names = vec![name.clone()];
        }
        return Ok(());
    }
    match images.iter().find(|i| i.names.is_empty()) {
        Some(unnamed) => Err(ImageError::Unnamed {
            archive: archive.to_owned(),
            digest: unnamed.manifest_digest.clone(),
        }),
        None => Ok(()),
    }
}

fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(ImageError::InvalidDigest {
            digest: digest.to_owned(),
        }),
    }
}

fn is_exists_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
}
