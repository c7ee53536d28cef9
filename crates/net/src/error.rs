//! The net crate's errors: what was being done, on what.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network config: {field} {value:?}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An `ip`, `nft` or `nsenter` command that exited non-zero, with what it printed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sys(#[from] peapod_sys::SysError),
    #[error("no free address left in {cidr}")]
    Exhausted { cidr: String },
    #[error("blocking task of {op} ended")]
    Join { op: &'static str },
}

/// An `Io` error maker for `map_err`.
pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.into();
    move |source| NetError::Io { op, path, source }
}
