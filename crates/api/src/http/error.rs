//! Every API error becomes one Kubernetes `Status`, here and nowhere else
//! (<https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/>).
//! kubectl prints `Error from server (<reason>): <message>` from it.

use crate::field::FieldError;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

/// An API failure, with what kubectl needs to say it well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotFound {
        kind: String,
        name: String,
    },
    AlreadyExists {
        kind: String,
        name: String,
    },
    Conflict {
        kind: String,
        name: String,
        message: String,
    },
    Invalid {
        kind: String,
        name: String,
        causes: Vec<FieldError>,
    },
    /// Server-side apply met fields other managers own: the message names them, and each
    /// cause is (`conflict with "m" using v1`, the field's path).
    FieldConflict {
        kind: String,
        name: String,
        message: String,
        causes: Vec<(String, String)>,
    },
    BadRequest {
        message: String,
    },
    Unauthorized,
    Forbidden {
        message: String,
    },
    Gone {
        message: String,
    },
    UnsupportedMediaType {
        content_type: String,
    },
    TooLarge {
        limit: usize,
    },
    MethodNotAllowed {
        method: String,
    },
    Internal {
        message: String,
    },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::Internal {
            message: message.to_string(),
        }
    }

    /// The HTTP code, the Status reason and the message.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::NotFound { kind, name } => (StatusCode::NOT_FOUND, "NotFound", format!("{kind} {name:?} not found")),
            ApiError::AlreadyExists { kind, name } => {
                (StatusCode::CONFLICT, "AlreadyExists", format!("{kind} {name:?} already exists"))
            }
            ApiError::Conflict { kind, name, message } => (
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {kind} {name:?}: {message}"),
            ),
            ApiError::FieldConflict { message, .. } => (StatusCode::CONFLICT, "Conflict", message.clone()),
            ApiError::Invalid { kind, name, causes } => {
                let list: Vec<String> = causes.iter().map(ToString::to_string).collect();
                let msg = match list.len() {
                    1 => list[0].clone(),
                    _ => format!("[{}]", list.join(", ")),
                };
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("{} {name:?} is invalid: {msg}", kind_title(kind)))
            }
            ApiError::BadRequest { message } => (StatusCode::BAD_REQUEST, "BadRequest", message.clone()),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into()),
            ApiError::Forbidden { message } => (StatusCode::FORBIDDEN, "Forbidden", message.clone()),
            ApiError::Gone { message } => (StatusCode::GONE, "Expired", message.clone()),
            ApiError::UnsupportedMediaType { content_type } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"),
            ),
            ApiError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("the request body is larger than the limit of {limit} bytes"),
            ),
            ApiError::MethodNotAllowed { method } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource ({method})"),
            ),
            ApiError::Internal { message } => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message.clone()),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let (code, reason, message) = self.parts();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        });
        match self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name, .. } => {
                status["details"] = json!({"name": name, "kind": kind});
            }
            ApiError::FieldConflict {
                kind, name, causes, ..
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|(message, field)| json!({"type": "FieldManagerConflict", "message": message, "field": field}))
                    .collect();
                status["details"] = json!({"name": name, "kind": kind, "causes": causes});
            }
            ApiError::Invalid { kind, name, causes } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": cause_reason(c), "message": c.kind.to_string(), "field": c.path.as_str()}))
                    .collect();
                status["details"] =
                    json!({"name": name, "kind": kind_title(kind), "causes": causes});
            }
            _ => {}
        }
        status
    }
}

/// `pods` -> `Pod`, for the Invalid message the API server words with the kind.
fn kind_title(resource: &str) -> String {
    let singular = resource.strip_suffix('s').unwrap_or(resource);
    let mut chars = singular.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn cause_reason(e: &FieldError) -> &'static str {
    use crate::field::FieldErrorKind as K;
    match e.kind {
        K::Required => "FieldValueRequired",
        K::Invalid { .. } => "FieldValueInvalid",
        K::Duplicate { .. } => "FieldValueDuplicate",
        K::NotSupported { .. } => "FieldValueNotSupported",
        K::NotFound { .. } => "FieldValueNotFound",
        K::Forbidden { .. } => "FieldValueForbidden",
        K::Unknown | K::WrongType { .. } => "FieldValueTypeInvalid",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _, _) = self.parts();
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError as S;
        match e {
            S::NotFound { key } => ApiError::NotFound { kind: key.resource.clone(), name: key.name.clone() },
            S::AlreadyExists { key } => ApiError::AlreadyExists { kind: key.resource.clone(), name: key.name.clone() },
            S::Conflict { key, .. } => ApiError::Conflict {
                kind: key.resource.clone(),
                name: key.name.clone(),
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            },
            S::Gone { requested, oldest } => ApiError::Gone {
                message: format!("too old resource version: {requested} ({oldest})"),
            },
            S::InvalidSelector { selector, reason } => ApiError::bad_request(format!("unable to parse requirement {selector:?}: {reason}")),
            S::InvalidContinue => ApiError::bad_request("the provided continue parameter is invalid"),
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::FieldPath;

    #[test]
    fn statuses_read_like_the_api_server() {
        let s = ApiError::NotFound {
            kind: "pods".into(),
            name: "web".into(),
        }
        .status();
        assert_eq!(s["message"], "pods \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        let causes = vec![FieldError::required(
            FieldPath::root("spec").child("containers"),
        )];
        let s = ApiError::Invalid {
            kind: "pods".into(),
            name: "web".into(),
            causes,
        }
        .status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "Pod \"web\" is invalid: spec.containers: Required value"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}
