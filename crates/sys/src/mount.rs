//! Mounts: bind, tmpfs, overlay, and their removal.
//!
//! See mount(2) and umount(2); overlayfs options follow
//! <https://docs.kernel.org/filesystems/overlayfs.html>.

use crate::{Result, SysError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

/// Bind-mounts `src` on `dst`; read-only when asked, which needs a remount (the kernel
/// ignores `MS_RDONLY` on the first bind).
pub fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| SysError::new("bind mount", dst.display(), e))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
            .map_err(|e| SysError::new("remount read-only", dst.display(), e))?;
    }
    Ok(())
}

/// Mounts a fresh tmpfs on `dst`; `size_bytes` of `None` leaves the kernel default (half of RAM).
pub fn tmpfs(dst: &Path, size_bytes: Option<u64>, mode: u32) -> Result<()> {
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size_bytes {
        data.push_str(&format!(",size={size}"));
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| SysError::new("mount tmpfs", dst.display(), e))
}

/// Mounts an overlay of `lower` (top layer first, as overlayfs wants), `upper` and `work` on
/// `target`.
pub fn overlay(lower: &[&Path], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| SysError::new("mount overlay", target.display(), e))
}

/// Lazily unmounts `path`; a path that is not a mount point (or is gone) is not an error, so
/// teardown can run again after a crash.
pub fn unmount(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(SysError::new("unmount", path.display(), e)),
    }
}

/// Makes `path` a private mount so mounts below it do not propagate to peers.
pub fn make_private(path: &Path) -> Result<()> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SysError::new("make private", path.display(), e))
}

/// Whether `path` is a mount point, read from /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(want.as_str()))
}

/// Every mount point at or below `prefix`, deepest first, from /proc/self/mountinfo.
pub fn mounts_under(prefix: &Path) -> Vec<std::path::PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<std::path::PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(std::path::PathBuf::from)
        .filter(|p| p.starts_with(prefix))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &field[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/x\"), r"/x\");
    }
}
