//! Services: ClusterIP and node port allocation, Endpoints, proxy rules (all pure), and the
//! controller that keeps them in step with the store.

pub mod alloc;
pub mod controller;
pub mod endpoints;
pub mod rules;
