//! Unpacking one layer blob into a directory overlayfs can stack as a lowerdir.
//!
//! OCI whiteouts (<https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts>)
//! become overlayfs ones (<https://docs.kernel.org/filesystems/overlayfs.html>): `.wh.<name>`
//! turns into a 0/0 character device `<name>`, `.wh..wh..opq` into the `trusted.overlay.opaque`
//! xattr on its directory. Every path is checked before anything is written: no `..`, no
//! parent that is a symlink, hard links only to files already inside the layer, and files
//! are created with `O_EXCL|O_NOFOLLOW`, so nothing is ever written outside `dest`.
//! Device nodes and FIFOs are skipped: containers get their `/dev` from the runtime.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use tar::{Entry, EntryType, Header};

use super::scratch::remove_path;
use super::{io_err, ImageError};

/// A layer blob's compression, from its first bytes: media types lie often enough (and
/// `docker save` has none) that the magic number decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    pub fn from_magic(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            _ => Compression::None,
        }
    }

    pub fn sniff(path: &Path) -> io::Result<Compression> {
        let mut head = Vec::with_capacity(6);
        File::open(path)?.take(6).read_to_end(&mut head)?;
        Ok(Compression::from_magic(&head))
    }
}

/// What a file name means to the OCI whiteout convention.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Whiteout<'a> {
    /// An ordinary file.
    None,
    /// `.wh.<name>`: `<name>` is deleted from the layers below.
    Remove(&'a OsStr),
    /// `.wh..wh..opq`: the directory hides the layers below.
    Opaque,
    /// Other `.wh..wh.` names are AUFS bookkeeping, never content.
    Meta,
}

pub(super) fn classify_whiteout(name: &OsStr) -> Whiteout<'_> {
    let bytes = name.as_bytes();
    if bytes == b".wh..wh..opq" {
        Whiteout::Opaque
    } else if bytes.starts_with(b".wh..wh.") {
        Whiteout::Meta
    } else if let Some(rest) = bytes.strip_prefix(b".wh.") {
        Whiteout::Remove(OsStr::from_bytes(rest))
    } else {
        Whiteout::None
    }
}

/// Turns an entry's path into one relative to the layer root: leading `/` and `.` dropped,
/// `..` refused (it could only ever point outside the layer or be a needless detour).
pub(super) fn sanitize(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("path has a .. component"),
            Component::Prefix(_) => return Err("path has a prefix"),
        }
    }
    Ok(out)
}

/// Unpacks `blob` into the existing empty directory `dest`, returning the diff id
/// (`sha256:<hex>` of the uncompressed tar stream, read to its very end).
pub(super) fn unpack_layer(blob: &Path, digest: &str, dest: &Path) -> Result<String, ImageError> {
    let read_err = |source| ImageError::ReadLayer {
        digest: digest.to_owned(),
        source,
    };
    let compression = Compression::sniff(blob).map_err(read_err)?;
    let file = BufReader::with_capacity(1 << 16, File::open(blob).map_err(read_err)?);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(MultiGzDecoder::new(file)),
        unsupported => {
            return Err(ImageError::UnsupportedCompression {
                digest: digest.to_owned(),
                compression: match unsupported {
                    Compression::Zstd => "zstd",
                    Compression::Xz => "xz",
                    _ => "bzip2",
                },
            })
        }
    };
    let mut archive = tar::Archive::new(HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    });
    let mut unpacker = Unpacker {
        dest,
        digest,
        dirs: Vec::new(),
    };
    for entry in archive.entries().map_err(read_err)? {
        unpacker.entry(&mut entry.map_err(read_err)?)?;
    }
    unpacker.finish_dirs()?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    Ok(format!("sha256:{}", hex::encode(rest.hasher.finalize())))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Ownership, mode and mtime from a tar header.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: SystemTime,
}

impl Meta {
    fn from_header(header: &Header) -> io::Result<Meta> {
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "id too big"))
        };
        Ok(Meta {
            uid: id(header.uid()?)?,
            gid: id(header.gid()?)?,
            mode: header.mode()? & 0o7777,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(header.mtime()?),
        })
    }
}

struct Unpacker<'a> {
    dest: &'a Path,
    digest: &'a str,
    /// Directory metadata is applied last: a read-only directory must still receive its
    /// entries, and writing entries would bump its mtime.
    dirs: Vec<(PathBuf, Meta)>,
}

impl Unpacker<'_> {
    fn unsafe_path(&self, path: &Path, reason: &'static str) -> ImageError {
        ImageError::UnsafePath {
            digest: self.digest.to_owned(),
            path: path.to_owned(),
            reason,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let read_err = |source| ImageError::ReadLayer {
            digest: self.digest.to_owned(),
            source,
        };
        let raw = entry.path().map_err(read_err)?.into_owned();
        let rel = sanitize(&raw).map_err(|reason| self.unsafe_path(&raw, reason))?;
        let kind = entry.header().entry_type();
        let Some(name) = rel.file_name().map(OsStr::to_owned) else {
            // The layer root itself ("./"): its directory already exists.
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(self.unsafe_path(&raw, "non-directory entry for the layer root")),
            };
        };
        let parent = self.make_parents(&raw, rel.parent().unwrap_or(Path::new("")))?;
        match classify_whiteout(&name) {
            Whiteout::None => {}
            Whiteout::Meta => return Ok(()),
            Whiteout::Opaque => {
                return peapod_sys::fs::mark_opaque(&parent).map_err(|source| ImageError::Overlay {
                    digest: self.digest.to_owned(),
                    source,
                })
            }
            Whiteout::Remove(hidden) => {
                if hidden.is_empty() || hidden == "." || hidden == ".." {
                    return Err(self.unsafe_path(&raw, "whiteout of an invalid name"));
                }
                let target = parent.join(hidden);
                remove_existing(&target)?;
                return peapod_sys::fs::make_whiteout(&target).map_err(|source| {
                    ImageError::Overlay {
                        digest: self.digest.to_owned(),
                        source,
                    }
                });
            }
        }
        let target = parent.join(&name);
        let meta = Meta::from_header(entry.header()).map_err(read_err)?;
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        remove_existing(&target)?;
                        fs::create_dir(&target).map_err(io_err("create directory", &target))?;
                    }
                }
                self.dirs.push((target, meta));
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&target)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io_err("create file", &target))?;
                io::copy(entry, &mut file).map_err(read_err)?;
                file.set_modified(meta.mtime)
                    .map_err(io_err("set mtime", &target))?;
                set_owner_mode(&target, meta)
            }
            EntryType::Symlink => {
                let link = entry.link_name().map_err(read_err)?;
                let link = link.ok_or_else(|| self.unsafe_path(&raw, "symlink without target"))?;
                remove_existing(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io_err("create symlink", &target))?;
                std::os::unix::fs::lchown(&target, Some(meta.uid), Some(meta.gid))
                    .map_err(io_err("chown", &target))
            }
            EntryType::Link => {
                let link = entry.link_name().map_err(read_err)?;
                let link =
                    link.ok_or_else(|| self.unsafe_path(&raw, "hard link without target"))?;
                let source = self.link_source(&raw, &link)?;
                remove_existing(&target)?;
                fs::hard_link(&source, &target).map_err(io_err("create hard link", &target))
            }
            other => {
                tracing::debug!(path = %raw.display(), kind = ?other, "skipping layer entry");
                Ok(())
            }
        }
    }

    /// Creates the missing parents of an entry (0755, root-owned, as `tar` does) and
    /// refuses to go through anything but real directories.
    fn make_parents(&self, raw: &Path, parent: &Path) -> Result<PathBuf, ImageError> {
        let mut current = self.dest.to_path_buf();
        for part in parent.components() {
            current.push(part);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_path(raw, "parent is a symlink"))
                }
                Ok(_) => return Err(self.unsafe_path(raw, "parent is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(io_err("create directory", &current))?;
                    fs::set_permissions(&current, Permissions::from_mode(0o755))
                        .map_err(io_err("chmod", &current))?;
                }
                Err(e) => return Err(io_err("stat", &current)(e)),
            }
        }
        Ok(current)
    }

    /// Where a hard link's target is inside the layer: an existing non-directory reached
    /// through real directories only.
    fn link_source(&self, raw: &Path, link: &Path) -> Result<PathBuf, ImageError> {
        let rel = sanitize(link).map_err(|reason| self.unsafe_path(raw, reason))?;
        let mut current = self.dest.to_path_buf();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            current.push(part);
            let last = parts.peek().is_none();
            match fs::symlink_metadata(&current) {
                Ok(m) if last && !m.is_dir() => return Ok(current),
                Ok(m) if !last && m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_path(raw, "hard link through a symlink"))
                }
                Ok(_) => return Err(self.unsafe_path(raw, "hard link to a directory")),
                Err(_) => return Err(self.unsafe_path(raw, "hard link to a missing file")),
            }
        }
        Err(self.unsafe_path(raw, "hard link to the layer root"))
    }

    fn finish_dirs(&mut self) -> Result<(), ImageError> {
        for (dir, meta) in self.dirs.drain(..).rev() {
            set_owner_mode(&dir, meta)?;
            File::open(&dir)
                .and_then(|f| f.set_modified(meta.mtime))
                .map_err(io_err("set mtime", &dir))?;
        }
        Ok(())
    }
}

/// chown before chmod: chown clears setuid/setgid bits.
fn set_owner_mode(path: &Path, meta: Meta) -> Result<(), ImageError> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
        .map_err(io_err("chown", path))?;
    fs::set_permissions(path, Permissions::from_mode(meta.mode)).map_err(io_err("chmod", path))
}

/// Removes whatever is at `path`: a later entry replaces an earlier one.
fn remove_existing(path: &Path) -> Result<(), ImageError> {
    remove_path(path).map_err(io_err("remove", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        let cases: &[(&str, Whiteout<'_>)] = &[
            ("file", Whiteout::None),
            (".wh.file", Whiteout::Remove(OsStr::new("file"))),
            (".wh..hidden", Whiteout::Remove(OsStr::new(".hidden"))),
            (".wh.", Whiteout::Remove(OsStr::new(""))),
            (".wh..wh..opq", Whiteout::Opaque),
            (".wh..wh.plnk", Whiteout::Meta),
            (".whx", Whiteout::None),
            ("a.wh.b", Whiteout::None),
        ];
        for (name, want) in cases {
            assert_eq!(&classify_whiteout(OsStr::new(name)), want, "{name}");
        }
    }

    #[test]
    fn sanitizes_paths() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("bin/sh", Ok("bin/sh")),
            ("./bin/sh", Ok("bin/sh")),
            ("/etc/passwd", Ok("etc/passwd")),
            ("a//b/./c/", Ok("a/b/c")),
            ("./", Ok("")),
            ("../etc/passwd", Err(())),
            ("a/../../x", Err(())),
            ("a/b/..", Err(())),
            ("/../x", Err(())),
        ];
        for (raw, want) in cases {
            let got = sanitize(Path::new(raw)).map_err(|_| ());
            assert_eq!(got, want.map(PathBuf::from), "{raw}");
        }
    }

    #[test]
    fn compression_magic() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 8, 0], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], Compression::Zstd),
            (b"\xfd7zXZ\x00", Compression::Xz),
            (b"BZh9", Compression::Bzip2),
            (b"bin/", Compression::None),
            (&[], Compression::None),
        ];
        for (head, want) in cases {
            assert_eq!(Compression::from_magic(head), *want, "{head:?}");
        }
    }
}
