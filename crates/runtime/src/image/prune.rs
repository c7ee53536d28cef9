//! `prune`: removing the images no container uses, then the blobs and unpacked layers that
//! nothing needs any more. "Uses" is judged by layers, not names: a container records the
//! layer directories its rootfs stacks (`ContainerConfig::layers`), so every name of the same
//! image content is kept, whichever name the pod gave. Any doubt keeps the image.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use peapod_sys::fs::LockKind;

use super::names::{self, NamesIndex};
use super::oci::{ConfigFile, Manifest};
use super::scratch::remove_path;
use super::{io_err, ImageError, ImageStore, ImageSummary};

/// Downloads untouched for this long belong to no running pull.
pub(super) const STALE_DOWNLOAD: Duration = Duration::from_secs(3600);

/// The names to remove: those whose layer list no container stacks. An image whose layers
/// could not be read (`None`) is kept.
pub(super) fn unused_names(
    images: &[(String, Option<Vec<PathBuf>>)],
    in_use: &[Vec<PathBuf>],
) -> Vec<String> {
    images
        .iter()
        .filter(|(_, layers)| layers.as_ref().is_some_and(|l| !in_use.contains(l)))
        .map(|(name, _)| name.clone())
        .collect()
}

impl ImageStore {
    /// Removes every image whose layers no container in `in_use` (each a container's layer
    /// directories, bottom first) stacks; returns what was removed.
    pub fn prune(&self, in_use: &[Vec<PathBuf>]) -> Result<Vec<ImageSummary>, ImageError> {
        self.clean_downloads(STALE_DOWNLOAD)?;
        self.prune_names(in_use, None)
    }

    /// Removes what pulls left in `downloads/` longer than `age` ago: partial downloads of
    /// killed pulls, verified blobs of pulls that failed to commit, lock files. A pull that
    /// runs meanwhile touches its partial file all the time; at worst it loses its lock file
    /// and a concurrent pull of the same blob downloads it too (each is verified).
    pub(super) fn clean_downloads(&self, age: Duration) -> Result<(), ImageError> {
        let dir = self.downloads_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read directory", &dir)(e)),
        };
        let now = SystemTime::now();
        for entry in entries {
            let path = entry.map_err(io_err("read directory", &dir))?.path();
            let old = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= age));
            if old {
                remove_path(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
    }

    /// `prune`, limited to the names in `only` when given (the collector's choice).
    pub(super) fn prune_names(
        &self,
        in_use: &[Vec<PathBuf>],
        only: Option<&[String]>,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let _lock = self.lock(LockKind::Exclusive)?;
        let mut index = NamesIndex::read(&self.names_path())?;
        let images: Vec<(String, Option<Vec<PathBuf>>)> = index
            .images
            .iter()
            .map(|(name, entry)| (name.clone(), self.layer_dirs(name, &entry.manifest).ok()))
            .collect();
        let mut removed = Vec::new();
        let chosen = unused_names(&images, in_use)
            .into_iter()
            .filter(|name| only.is_none_or(|only| only.contains(name)));
        for name in chosen {
            if let Some(entry) = index.images.remove(&name) {
                removed.push(names::summary(&name, &entry));
            }
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        index.write(&self.names_path(), &self.tmp_dir())?;
        self.collect_garbage(&index)?;
        // Unpacked layers: kept while a remaining image or any container needs them.
        let mut keep: HashSet<PathBuf> = in_use.iter().flatten().cloned().collect();
        for (name, layers) in &images {
            if index.images.contains_key(name) {
                match layers {
                    Some(layers) => keep.extend(layers.iter().cloned()),
                    // A remaining image we cannot read: keep every layer.
                    None => return Ok(removed),
                }
            }
        }
        let dir = self.layer_dir();
        for item in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let path = item.map_err(io_err("read directory", &dir))?.path();
            if !keep.contains(&path) {
                remove_path(&path).map_err(io_err("remove", &path))?;
            }
        }
        names::sync_dir(&dir)?;
        for summary in &removed {
            tracing::info!(image = %summary.name, "image pruned");
        }
        Ok(removed)
    }

    /// The unpacked layer directories of the image whose manifest is `manifest`.
    pub(super) fn layer_dirs(
        &self,
        name: &str,
        manifest: &str,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let manifest: Manifest = self.read_blob_json(name, manifest)?;
        let config: ConfigFile = self.read_blob_json(name, &manifest.config.digest)?;
        config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| self.layer_path(d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_names_by_layers() {
        let (a, b, c) = (
            PathBuf::from("/l/a"),
            PathBuf::from("/l/b"),
            PathBuf::from("/l/c"),
        );
        let images = vec![
            ("base".to_owned(), Some(vec![a.clone()])),
            ("app".to_owned(), Some(vec![a.clone(), b.clone()])),
            ("app-alias".to_owned(), Some(vec![a.clone(), b.clone()])),
            ("other".to_owned(), Some(vec![c.clone()])),
            ("unreadable".to_owned(), None),
        ];
        // A container of `app` keeps both its names, not `base` (a layer subset).
        let in_use = vec![vec![a.clone(), b.clone()]];
        assert_eq!(unused_names(&images, &in_use), vec!["base", "other"]);
        assert_eq!(
            unused_names(&images, &[]),
            vec!["base", "app", "app-alias", "other"]
        );
    }
}
