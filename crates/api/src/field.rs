//! Field paths and field errors, worded like the API server's
//! (`spec.containers[1].name: Duplicate value: "echo"`), so the CLI and, later, a 422 `Status`
//! say the same thing.

/// A path into an object, e.g. `spec.containers[0].ports[1].hostPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root(name: &str) -> FieldPath {
        FieldPath(name.to_string())
    }
    pub fn child(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }
    pub fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }
    pub fn key(&self, k: &str) -> FieldPath {
        FieldPath(format!("{}[{k}]", self.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a field, in the API server's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid {
        value: String,
        detail: String,
    },
    Duplicate {
        value: String,
    },
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
    NotFound {
        value: String,
    },
    Unknown,
    WrongType {
        detail: String,
    },
    Forbidden {
        detail: String,
    },
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct FieldError {
    pub path: FieldPath,
    pub kind: FieldErrorKind,
}

impl std::fmt::Display for FieldErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldErrorKind::Required => f.write_str("Required value"),
            FieldErrorKind::Invalid { value, detail } => {
                write!(f, "Invalid value: {value:?}: {detail}")
            }
            FieldErrorKind::Duplicate { value } => write!(f, "Duplicate value: {value:?}"),
            FieldErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                write!(
                    f,
                    "Unsupported value: {value:?}: supported values: {}",
                    list.join(", ")
                )
            }
            FieldErrorKind::NotFound { value } => write!(f, "Not found: {value:?}"),
            FieldErrorKind::Unknown => f.write_str("unknown field"),
            FieldErrorKind::WrongType { detail } => write!(f, "wrong type: {detail}"),
            FieldErrorKind::Forbidden { detail } => write!(f, "Forbidden: {detail}"),
        }
    }
}

impl FieldError {
    pub fn required(path: FieldPath) -> FieldError {
        FieldError {
            path,
            kind: FieldErrorKind::Required,
        }
    }
    pub fn invalid(path: FieldPath, value: impl ToString, detail: impl ToString) -> FieldError {
        FieldError {
            path,
            kind: FieldErrorKind::Invalid {
                value: value.to_string(),
                detail: detail.to_string(),
            },
        }
    }
    pub fn duplicate(path: FieldPath, value: impl ToString) -> FieldError {
        FieldError {
            path,
            kind: FieldErrorKind::Duplicate {
                value: value.to_string(),
            },
        }
    }
    pub fn not_supported(path: FieldPath, value: impl ToString, supported: &[&str]) -> FieldError {
        FieldError {
            path,
            kind: FieldErrorKind::NotSupported {
                value: value.to_string(),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            },
        }
    }
    pub fn not_found(path: FieldPath, value: impl ToString) -> FieldError {
        FieldError {
            path,
            kind: FieldErrorKind::NotFound {
                value: value.to_string(),
            },
        }
    }
    pub fn forbidden(path: FieldPath, detail: impl ToString) -> FieldError {
        FieldError {
            path,
            kind: FieldErrorKind::Forbidden {
                detail: detail.to_string(),
            },
        }
    }
}
