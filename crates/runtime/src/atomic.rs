//! Atomic small-file writes for the runtime's records (container and sandbox configs, start and
//! exit records): a reader sees the old content or the new, never half.
//!
//! Atomic against a crash of any process (the daemon, a monitor): the rename is visible at once
//! through the page cache. Not fsynced: these records describe processes and mounts that a crash
//! of the machine ends anyway, so after a reboot they only say what to clean up, and a reader
//! treats one that did not reach the disk as absent or unreadable (`adopt.rs`). This keeps
//! fourteen fsyncs off every two-container pod start; like containerd, which keeps its runtime
//! state on tmpfs. What must survive the machine (API objects, images) is fsynced where it is
//! written (`peapod_api::store`, `image/`).

use crate::error::{io, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory renamed into place.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Serialises `value` as JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| crate::error::RuntimeError::Decode {
            path: path.to_path_buf(),
            source,
        })?;
    write(path, &bytes)
}

/// Reads JSON from `path`; `Ok(None)` when the file does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
            crate::error::RuntimeError::Decode {
                path: path.to_path_buf(),
                source,
            }
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}
