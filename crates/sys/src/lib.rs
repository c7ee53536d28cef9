//! peapod-sys: the only crate with `unsafe`; thin wrappers, one syscall (or one tight
//! sequence) each.
//!
//! Everything here that changes per-thread state (`unshare`, `setns`) must only be called
//! from a single-threaded, re-executed helper process or from a dedicated `std::thread`,
//! never from a tokio worker (STYLE.md rule 1).

pub mod fs;
pub mod init;
pub mod mount;
pub mod net;
pub mod netlink;
pub mod nftables;
pub mod ns;
pub mod process;
pub mod tty;

/// A failed syscall, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct SysError {
    /// The operation, e.g. `mount overlay`.
    pub op: &'static str,
    /// The path or object it acted on.
    pub path: String,
    #[source]
    pub source: nix::Error,
}

impl SysError {
    pub(crate) fn new(op: &'static str, path: impl std::fmt::Display, source: nix::Error) -> Self {
        SysError {
            op,
            path: path.to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, SysError>;
