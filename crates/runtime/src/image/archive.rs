//! Staging an image archive: one streaming pass over the outer tar that copies each regular
//! file into the store's staging directory, hashing it on the way. Files named
//! `blobs/sha256/<hex>` are verified against their name right there, so nothing unverified is
//! ever read back as a blob. The format-specific reading (OCI layout or `docker save`) happens
//! afterwards on the staged copies, because an archive may put `index.json` or
//! `manifest.json` after the blobs.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::reference::is_sha256_hex;
use super::unpack::Compression;
use super::{io_err, ImageError};

/// JSON documents (index, manifests, configs) are parsed in memory; real ones are a few KiB.
const MAX_JSON: u64 = 4 << 20;
const TAR_BLOCK: usize = 512;
/// Symlinks and hard links followed when looking a path up (old `docker save` links
/// identical layers to one another).
const MAX_LINK_DEPTH: usize = 16;

/// A regular file of the archive, copied to the staging directory.
#[derive(Debug, Clone)]
pub(super) struct Staged {
    pub path: PathBuf,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    pub size: u64,
}

/// The archive's files after staging, by their path inside the archive.
#[derive(Debug)]
pub(super) struct StagedArchive {
    pub archive: PathBuf,
    files: HashMap<String, Staged>,
    links: HashMap<String, String>,
}

impl StagedArchive {
    /// Copies every regular file of `archive` into `dir` (which must exist and be empty).
    pub fn stage(archive: &Path, dir: &Path) -> Result<StagedArchive, ImageError> {
        let read_err = |source| ImageError::ReadArchive {
            archive: archive.to_owned(),
            source,
        };
        let file = File::open(archive).map_err(read_err)?;
        let mut tar = tar::Archive::new(open_tar(archive, file)?);
        let mut staged = StagedArchive {
            archive: archive.to_owned(),
            files: HashMap::new(),
            links: HashMap::new(),
        };
        for (n, entry) in tar.entries().map_err(read_err)?.enumerate() {
            let mut entry = entry.map_err(read_err)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = archive_path(&raw).ok_or_else(|| ImageError::UnsafeArchivePath {
                archive: archive.to_owned(),
                path: raw.clone(),
            })?;
            match entry.header().entry_type() {
                EntryType::Regular | EntryType::Continuous => {
                    let dest = dir.join(n.to_string());
                    let expected = entry.size();
                    let (digest, size) = copy_hashed(&mut entry, &dest, archive)?;
                    if size != expected {
                        return Err(ImageError::Truncated {
                            archive: archive.to_owned(),
                            path,
                        });
                    }
                    staged.check_blob_name(&path, &digest)?;
                    staged.files.insert(
                        path,
                        Staged {
                            path: dest,
                            digest,
                            size,
                        },
                    );
                }
                kind @ (EntryType::Symlink | EntryType::Link) => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    let target = String::from_utf8_lossy(&target).into_owned();
                    // A symlink is relative to its own directory, a hard link to the root.
                    let target = match kind {
                        EntryType::Symlink if !target.starts_with('/') => {
                            let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                            format!("{parent}/{target}")
                        }
                        _ => target,
                    };
                    // A link leaving the archive simply resolves to nothing.
                    if let Some(target) = archive_path(&target) {
                        staged.links.insert(path, target);
                    }
                }
                _ => {}
            }
        }
        Ok(staged)
    }

    /// `blobs/sha256/<hex>` must hash to `<hex>`; other digest algorithms are refused because
    /// they could not be verified.
    fn check_blob_name(&self, path: &str, digest: &str) -> Result<(), ImageError> {
        match blob_name_digest(path) {
            BlobName::NotABlob => Ok(()),
            BlobName::Sha256(expected) if expected == digest => Ok(()),
            BlobName::Sha256(expected) => Err(ImageError::DigestMismatch {
                archive: self.archive.clone(),
                digest: expected,
                actual: digest.to_owned(),
            }),
            BlobName::Unsupported => Err(ImageError::UnsupportedDigest {
                archive: self.archive.clone(),
                digest: path.to_owned(),
            }),
        }
    }

    /// Whether the archive has a file at `path` (after following links).
    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_ok()
    }

    /// The staged file at `path` inside the archive, following symlinks and hard links.
    pub fn get(&self, path: &str) -> Result<&Staged, ImageError> {
        let missing = || ImageError::MissingFile {
            archive: self.archive.clone(),
            path: path.to_owned(),
        };
        let mut current = archive_path(path).ok_or_else(missing)?;
        for _ in 0..MAX_LINK_DEPTH {
            if let Some(file) = self.files.get(&current) {
                return Ok(file);
            }
            current = self.links.get(&current).ok_or_else(missing)?.clone();
        }
        Err(missing())
    }

    /// The blob with `digest` (`sha256:<hex>`), from `blobs/sha256/<hex>`.
    pub fn blob(&self, digest: &str) -> Result<&Staged, ImageError> {
        match digest.split_once(':') {
            Some(("sha256", hex)) if is_sha256_hex(hex) => self.get(&format!("blobs/sha256/{hex}")),
            _ => Err(ImageError::UnsupportedDigest {
                archive: self.archive.clone(),
                digest: digest.to_owned(),
            }),
        }
    }

    /// Parses a staged JSON document; `what` names it in errors (a path or a digest).
    pub fn read_json<T: DeserializeOwned>(
        &self,
        file: &Staged,
        what: &str,
    ) -> Result<T, ImageError> {
        if file.size > MAX_JSON {
            return Err(ImageError::TooLarge {
                archive: self.archive.clone(),
                path: what.to_owned(),
                size: file.size,
            });
        }
        let reader = File::open(&file.path).map_err(io_err("open staged file", &file.path))?;
        serde_json::from_reader(BufReader::new(reader)).map_err(|source| ImageError::BadJson {
            archive: self.archive.clone(),
            path: what.to_owned(),
            source,
        })
    }
}

/// The archive's tar stream: `docker load` also takes a gzipped archive, so do we. The first
/// header must carry the ustar magic (every tool writing image archives sets it), which
/// turns "not an archive at all" into one clear error instead of a header parse failure.
fn open_tar(archive: &Path, file: File) -> Result<impl Read, ImageError> {
    let read_err = |source| ImageError::ReadArchive {
        archive: archive.to_owned(),
        source,
    };
    let not_tar = || ImageError::NotTar {
        archive: archive.to_owned(),
    };
    let mut file = BufReader::with_capacity(1 << 16, file);
    let mut stream: Box<dyn Read> =
        match Compression::from_magic(file.fill_buf().map_err(read_err)?) {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(MultiGzDecoder::new(file)),
            _ => return Err(not_tar()),
        };
    let mut head = Vec::with_capacity(TAR_BLOCK);
    (&mut stream)
        .take(TAR_BLOCK as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    if head.get(257..262) != Some(b"ustar".as_slice()) {
        return Err(not_tar());
    }
    Ok(Cursor::new(head).chain(stream))
}

/// Streams `src` into a new file `dest`, returning (`sha256:<hex>`, bytes copied).
fn copy_hashed(
    src: &mut impl Read,
    dest: &Path,
    archive: &Path,
) -> Result<(String, u64), ImageError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(io_err("create staged file", dest))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImageError::ReadArchive {
                    archive: archive.to_owned(),
                    source,
                })
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io_err("write staged file", dest))?;
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// Normalises a path inside the archive: `./a//b` -> `a/b`, a leading `/` dropped; `None`
/// when it has a `..` component.
pub(super) fn archive_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[derive(Debug, PartialEq, Eq)]
enum BlobName {
    NotABlob,
    Sha256(String),
    Unsupported,
}

/// What the name of a file under `blobs/` promises about its content.
fn blob_name_digest(path: &str) -> BlobName {
    let Some(rest) = path.strip_prefix("blobs/") else {
        return BlobName::NotABlob;
    };
    match rest.split_once('/') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => BlobName::Sha256(format!("sha256:{hex}")),
        _ => BlobName::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_archive_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("index.json", Some("index.json")),
            ("./index.json", Some("index.json")),
            ("/blobs//sha256/x", Some("blobs/sha256/x")),
            ("./", Some("")),
            ("a/./b/", Some("a/b")),
            ("../x", None),
            ("a/../../x", None),
        ];
        for (raw, want) in cases {
            assert_eq!(archive_path(raw).as_deref(), *want, "{raw}");
        }
    }

    #[test]
    fn blob_names() {
        let hex = "ab".repeat(32);
        let cases = [
            ("index.json".to_owned(), BlobName::NotABlob),
            ("abc/layer.tar".to_owned(), BlobName::NotABlob),
            (
                format!("blobs/sha256/{hex}"),
                BlobName::Sha256(format!("sha256:{hex}")),
            ),
            ("blobs/sha256/abc".to_owned(), BlobName::Unsupported),
            (format!("blobs/sha512/{hex}"), BlobName::Unsupported),
            (
                format!("blobs/sha256/{}", hex.to_uppercase()),
                BlobName::Unsupported,
            ),
        ];
        for (path, want) in cases {
            assert_eq!(blob_name_digest(&path), want, "{path}");
        }
    }
}
