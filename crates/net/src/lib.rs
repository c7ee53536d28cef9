//! peapod-net: pod networking. For now, host ports: a userspace proxy that accepts on the host
//! and connects inside the pod's network namespace.

pub mod hostport;

pub use hostport::{HostPortError, HostPortListener};
