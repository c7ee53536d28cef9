//! The names index, `names.json`: each image name with its manifest digest, image id and
//! size. It is the store's commit point, so it is replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory) and only after everything it names is in place.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{io_err, ImageError, ImageSource, ImageSummary};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NameEntry {
    /// `sha256:<hex>` of the image manifest blob.
    pub manifest: String,
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    pub size: u64,
    /// How the image came: an index written before pulls existed holds only loaded images.
    #[serde(default)]
    pub source: ImageSource,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct NamesIndex {
    pub images: BTreeMap<String, NameEntry>,
}

impl NamesIndex {
    /// Reads the index; a store that never loaded anything has none and is empty.
    pub fn read(path: &Path) -> Result<NamesIndex, ImageError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(NamesIndex::default()),
            Err(e) => return Err(io_err("open", path)(e)),
        };
        serde_json::from_reader(BufReader::new(file)).map_err(|source| ImageError::CorruptStore {
            path: path.to_owned(),
            source,
        })
    }

    /// Atomically replaces `path` with this index, going through `tmp` (same filesystem).
    pub fn write(&self, path: &Path, tmp: &Path) -> Result<(), ImageError> {
        let temp = tmp.join(format!("names.json.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| ImageError::CorruptStore {
            path: path.to_owned(),
            source,
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_err("create", &temp))?;
        file.write_all(&bytes).map_err(io_err("write", &temp))?;
        file.sync_all().map_err(io_err("fsync", &temp))?;
        std::fs::rename(&temp, path).map_err(io_err("rename into place", path))?;
        sync_dir(path.parent().unwrap_or(Path::new("/")))
    }

    pub fn summaries(&self) -> Vec<ImageSummary> {
        self.images
            .iter()
            .map(|(name, entry)| summary(name, entry))
            .collect()
    }
}

pub(super) fn summary(name: &str, entry: &NameEntry) -> ImageSummary {
    ImageSummary {
        name: name.to_owned(),
        id: entry.id.clone(),
        size: entry.size,
        source: entry.source,
    }
}

/// fsync(2) on a directory makes the renames into it durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("names.json");
        assert!(NamesIndex::read(&path).expect("read").images.is_empty());
        let mut index = NamesIndex::default();
        let entry = NameEntry {
            manifest: "sha256:m".to_owned(),
            id: "sha256:c".to_owned(),
            size: 7,
            source: ImageSource::Pulled,
        };
        index
            .images
            .insert("docker.io/library/a:latest".to_owned(), entry.clone());
        index.write(&path, dir.path()).expect("write");
        let back = NamesIndex::read(&path).expect("read");
        assert_eq!(back.images.get("docker.io/library/a:latest"), Some(&entry));
        assert_eq!(back.summaries()[0].size, 7);
    }

    #[test]
    fn corrupt_index_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("names.json");
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(
            NamesIndex::read(&path),
            Err(ImageError::CorruptStore { .. })
        ));
    }
}
