//! peapod-api: Kubernetes objects. Decoding manifests strictly, defaulting and validation
//! (pure functions, tested with tables).

pub mod defaults;
pub mod field;
pub mod manifest;
pub mod names;
pub mod quantity;
pub mod validation;

pub use field::{FieldError, FieldPath};
pub use manifest::{decode_manifests, ManifestError, Object};
