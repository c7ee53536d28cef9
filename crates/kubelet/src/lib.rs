//! peapod-kubelet: pod lifecycle. One worker per pod (`worker`), deciding with the pure
//! planner (`plan`), acting through the runtime; `translate` is the only bridge from Pod specs
//! to runtime configs.

mod adopt;
pub mod config;
pub mod context;
pub mod controller;
pub mod eviction;
pub mod grpc_probe;
mod instance;
pub mod limits;
pub mod logs;
pub mod monitor_pool;
pub mod plan;
pub mod pod_sandbox;
pub mod probe;
pub mod projected;
pub mod protection;
pub mod pull;
pub mod security;
pub mod status;
mod stop;
pub mod translate;
pub mod volumes;
pub mod worker;

pub use config::NodeConfig;
pub use context::PodContext;
pub use plan::Phase;
pub use worker::{Node, PodEvent, PodWorker};
