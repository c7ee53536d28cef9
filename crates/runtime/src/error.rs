//! Errors of the runtime crate, typed, with the container or path they concern.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decode {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("spawn helper {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container} failed to start: {message}")]
    StartFailed { container: String, message: String },
    #[error("pod sandbox {path} failed: {message}")]
    Sandbox { path: PathBuf, message: String },
    #[error(transparent)]
    Sys(#[from] peapod_sys::SysError),
    #[error(transparent)]
    Youki(#[from] crate::youki::YoukiError),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Attaches the path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.into();
    move |source| RuntimeError::Io { path, source }
}
