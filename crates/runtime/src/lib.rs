//! peapod-runtime: CRI-like. Images, pod sandboxes, containers and their per-container
//! monitor process, logs. Knows nothing about Pods: the kubelet translates Pod specs into the
//! plain configs defined here.
//!
//! Synchronous by design (STYLE.md rule 10): the async kubelet calls it through
//! `spawn_blocking`, and the parts that touch namespaces and mounts run in re-executed,
//! single-threaded helper processes (`__monitor`, `__sandbox remove`) or on a thread of their
//! own that exits afterwards (a sandbox's namespaces).

pub mod atomic;
pub mod attach;
pub mod cgroup;
pub mod container;
pub mod error;
pub mod exec;
mod exec_tty;
pub mod image;
pub mod log;
pub mod monitor;
pub mod pod_init;
mod pump;
pub mod sandbox;
pub mod spec;
pub mod tty;
mod youki;

pub use container::{ContainerId, Exited, Runtime, Started};
pub use error::{Result, RuntimeError};
pub use spec::{ContainerConfig, Mount, Resources, SandboxRef, Seccomp, Security, Stdio, User};
