//! peapod-net: pod networking. A bridge with one veth pair per pod and addresses from a pod
//! CIDR (`network`, `bridge`, `veth`, `ipam`), Services (`service`: ClusterIPs, node ports,
//! Endpoints, an nftables DNAT proxy in a table of its own, `nft`), cluster DNS (`dns`), and
//! host ports (`hostport`: nftables map elements written over netlink, DNAT as for NodePorts).
//!
//! Commands (`ip`, `nft`, `nsenter`) run on blocking threads (`cmd`); nothing here enters a
//! namespace on a tokio thread.

mod bridge;
pub mod cidr;
mod cmd;
pub mod config;
pub mod dns;
pub mod error;
pub mod hostport;
pub mod ipam;
pub mod network;
pub mod nft;
pub mod service;
pub mod veth;

pub use config::{NetworkConfig, Outbound};
pub use error::NetError;
pub use hostport::{HostPort, HostPortError, HostPortHold};
pub use network::{install, installed, pod_ip, PodNetwork};
