//! Scratch space and rollback for the store: every new file or directory is built under
//! `tmp/` and renamed into place, and whatever a failed load had already put in place is
//! removed again, so a failure leaves the store as it was.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{io_err, ImageError};

/// Removes a file, symlink (not its target) or directory tree; a missing path is fine.
pub(super) fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A uniquely named directory under `tmp/`, removed on drop unless kept.
#[derive(Debug)]
pub(super) struct Scratch(Option<PathBuf>);

impl Scratch {
    pub fn create(tmp: &Path, prefix: &str) -> Result<Scratch, ImageError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = tmp.join(format!("{prefix}-{}-{n}", std::process::id()));
        fs::create_dir(&path).map_err(io_err("create directory", &path))?;
        Ok(Scratch(Some(path)))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The directory was renamed away: nothing to remove any more.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(error) = remove_path(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove scratch directory");
            }
        }
    }
}

/// Layer directories and blobs a load put in place; removed again unless the load commits,
/// so a failed load leaves the store as it found it.
#[derive(Debug, Default)]
pub(super) struct Created(pub Vec<PathBuf>);

impl Created {
    pub fn commit(mut self) {
        self.0.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for path in self.0.drain(..).rev() {
            if let Err(error) = remove_path(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot roll back image load");
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_removed_unless_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dropped = Scratch::create(tmp.path(), "a").expect("create");
        let dropped_path = dropped.path().to_owned();
        fs::write(dropped_path.join("f"), b"x").expect("write");
        drop(dropped);
        assert!(!dropped_path.exists());
        let kept = Scratch::create(tmp.path(), "b").expect("create");
        let kept_path = kept.path().to_owned();
        kept.keep();
        assert!(kept_path.is_dir());
    }

    #[test]
    fn created_rolls_back_unless_committed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir(&a).expect("mkdir");
        fs::write(&b, b"x").expect("write");
        drop(Created(vec![a.clone(), b.clone()]));
        assert!(!a.exists() && !b.exists());
        fs::write(&b, b"x").expect("write");
        Created(vec![b.clone()]).commit();
        assert!(b.exists());
    }
}
