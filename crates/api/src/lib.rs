//! peapod-api: Kubernetes objects. Decoding manifests strictly, defaulting and validation
//! (pure functions, tested with tables).

pub mod defaults;
pub mod field;
pub mod http;
pub mod managed;
pub mod manifest;
pub mod names;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod quantity;
pub mod selector;
pub mod store;
pub mod strict_json;
pub mod validation;

pub use field::{FieldError, FieldPath};
pub use manifest::{decode_manifests, ManifestError, Object};
