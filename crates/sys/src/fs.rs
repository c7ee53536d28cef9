//! Filesystem helpers for image layers: overlayfs whiteouts and opaque directories, extended
//! attributes, advisory file locks and `syncfs`.
//!
//! Whiteout format follows the kernel's overlayfs documentation
//! (<https://docs.kernel.org/filesystems/overlayfs.html#whiteouts-and-opaque-directories>):
//! a whiteout is a character device with device number 0/0, an opaque directory carries the
//! xattr `trusted.overlay.opaque=y`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// The xattr overlayfs reads to decide that a directory hides the lower layers' contents.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors from the helpers in this module; each names the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("create whiteout {path}")]
    Whiteout {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("set xattr {name} on {path}")]
    SetXattr {
        path: PathBuf,
        name: String,
        #[source]
        source: Errno,
    },
    #[error("get xattr {name} on {path}")]
    GetXattr {
        path: PathBuf,
        name: String,
        #[source]
        source: Errno,
    },
    #[error("path or name contains a nul byte: {path}")]
    Nul { path: PathBuf },
    #[error("open lock file {path}")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("sync filesystem of {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn c_path(path: &Path) -> Result<CString, FsError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| FsError::Nul {
        path: path.to_owned(),
    })
}

fn c_name(path: &Path, name: &str) -> Result<CString, FsError> {
    CString::new(name).map_err(|_| FsError::Nul {
        path: path.to_owned(),
    })
}

/// Creates an overlayfs whiteout (character device 0/0, no permission bits) at `path`.
/// The path must not exist.
pub fn make_whiteout(path: &Path) -> Result<(), FsError> {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|source| FsError::Whiteout {
        path: path.to_owned(),
        source,
    })
}

/// Sets extended attribute `name` on `path` itself, never on a symlink's target (lsetxattr(2)).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), FsError> {
    let c_path = c_path(path)?;
    let c_name = c_name(path, name)?;
    // SAFETY: both pointers come from live CStrings (nul-terminated, valid for the call);
    // `value` is a valid slice whose pointer and length are passed together; flags 0 means
    // "create or replace". The kernel does not keep any pointer after returning.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(FsError::SetXattr {
            path: path.to_owned(),
            name: name.to_owned(),
            source: Errno::last(),
        })
    }
}

/// Reads extended attribute `name` of `path` itself (lgetxattr(2)); `None` when it is not set.
pub fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>, FsError> {
    let c_path = c_path(path)?;
    let c_name = c_name(path, name)?;
    // xattr values are at most 64 KiB (XATTR_SIZE_MAX), so one fixed buffer always suffices.
    let mut buf = vec![0u8; 65536];
    // SAFETY: the path and name pointers come from live CStrings; `buf` is a live, writable
    // allocation of exactly `buf.len()` bytes, and the kernel writes at most that many.
    let rc = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    match usize::try_from(rc) {
        Ok(len) => {
            buf.truncate(len);
            Ok(Some(buf))
        }
        Err(_) => match Errno::last() {
            Errno::ENODATA => Ok(None),
            source => Err(FsError::GetXattr {
                path: path.to_owned(),
                name: name.to_owned(),
                source,
            }),
        },
    }
}

/// Marks directory `dir` opaque for overlayfs: lower layers' entries below it are hidden.
pub fn mark_opaque(dir: &Path) -> Result<(), FsError> {
    set_xattr(dir, OVERLAY_OPAQUE_XATTR, b"y")
}

/// Whether directory `dir` carries the overlayfs opaque marker.
pub fn is_opaque(dir: &Path) -> Result<bool, FsError> {
    Ok(get_xattr(dir, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y".as_slice()))
}

/// Which kind of flock(2) to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// An flock(2) held on an open lock file; released when dropped. flock locks belong to the
/// open file description, so two `FileLock`s in one process exclude each other like two
/// processes do.
pub struct FileLock {
    _flock: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path)
            .finish()
    }
}

impl FileLock {
    /// Opens (creating if needed) `path` and blocks until the lock of `kind` is held.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<FileLock, FsError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| FsError::OpenLock {
                path: path.to_owned(),
                source,
            })?;
        let arg = match kind {
            LockKind::Shared => FlockArg::LockShared,
            LockKind::Exclusive => FlockArg::LockExclusive,
        };
        let flock = Flock::lock(file, arg).map_err(|(_, source)| FsError::Lock {
            path: path.to_owned(),
            source,
        })?;
        Ok(FileLock {
            _flock: flock,
            path: path.to_owned(),
        })
    }
}

/// Flushes everything written to the filesystem holding `path` (syncfs(2)): one call instead
/// of an fsync per file of an unpacked layer.
pub fn sync_filesystem(path: &Path) -> Result<(), FsError> {
    let sync_err = |source| FsError::Sync {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(sync_err)?;
    nix::unistd::syncfs(file.as_raw_fd()).map_err(|errno| sync_err(errno.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn whiteout_is_char_device_zero() {
        if !is_root() {
            return; // mknod of a character device needs CAP_MKNOD
        }
        let dir = std::env::temp_dir().join(format!("peapod-sys-wh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("gone");
        make_whiteout(&path).expect("mknod");
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), 0);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn opaque_xattr_round_trip() {
        if !is_root() {
            return; // trusted.* xattrs need CAP_SYS_ADMIN
        }
        let dir = std::env::temp_dir().join(format!("peapod-sys-opq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(!is_opaque(&dir).expect("get"));
        mark_opaque(&dir).expect("set");
        assert!(is_opaque(&dir).expect("get"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn nul_in_name_is_an_error() {
        let err = set_xattr(Path::new("/nonexistent"), "user.a\0b", b"x");
        assert!(matches!(err, Err(FsError::Nul { .. })));
    }
}
