//! The one shape of every error the API returns:
//! `{"error": {"code": "...", "message": "...", "details": ...}}`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Error envelope.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Extra structured context (field path, offending value…); `null` when none.
    #[schema(value_type = Object, nullable = true)]
    pub details: serde_json::Value,
}

/// An API error: a status and the body that explains it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with a status, code and message and no details.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message: message.into(),
                    details: serde_json::Value::Null,
                },
            },
        }
    }

    /// The same error with another status.
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// Attach structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.body.error.details = details;
        self
    }

    /// 404 for a path no route serves.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such resource: {path}"),
        )
        .with_details(serde_json::json!({ "path": path }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// 400 for a query string that does not parse.
pub(crate) fn query_error(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
}

/// Read a JSON body into `T`, naming the field path of an error; floats
/// without a fraction count as integers (as JSON Schema says).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    code: &str,
) -> Result<T, ApiError> {
    // serde would also read a struct from an array of its fields.
    if serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| !v.is_object()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            "the body must be a JSON object",
        ));
    }
    let strict = {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize::<_, T>(&mut de)
    };
    match strict {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body)
                && locus_core::workload::integral_floats_to_integers(&mut v)
                && let Ok(t) = serde_json::from_value::<T>(v)
            {
                return Ok(t);
            }
            let path = e.path().to_string();
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("{path}: {}", e.inner()),
            )
            .with_details(serde_json::json!({ "path": path })))
        }
    }
}
