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
pub(crate) fn json_body<T: serde::de::DeserializeOwned + serde::Serialize>(
    body: &[u8],
    code: &str,
) -> Result<T, ApiError> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok();
    if value.as_ref().is_some_and(|v| !v.is_object()) {
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
    let read = match strict {
        Ok(v) => v,
        Err(e) => {
            if let Some(mut v) = value.clone()
                && locus_core::workload::integral_floats_to_integers(&mut v)
                && let Ok(t) = serde_json::from_value::<T>(v)
            {
                t
            } else {
                let path = e.path().to_string();
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    code,
                    format!("{path}: {}", e.inner()),
                )
                .with_details(serde_json::json!({ "path": path })));
            }
        }
    };
    // serde also reads a struct from an array of its fields; the API
    // documents objects, so an array where an object was read is refused.
    if let (Some(input), Ok(shape)) = (&value, serde_json::to_value(&read))
        && let Some(path) = array_for_object(input, &shape, String::new())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("{path}: expected a JSON object, found an array"),
        )
        .with_details(serde_json::json!({ "path": path })));
    }
    Ok(read)
}

/// The path of the first place where `input` has an array and what was
/// read from it (`read`, serialized back) is an object.
fn array_for_object(
    input: &serde_json::Value,
    read: &serde_json::Value,
    path: String,
) -> Option<String> {
    use serde_json::Value;
    match (input, read) {
        (Value::Array(_), Value::Object(_)) => Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path
        }),
        (Value::Object(i), Value::Object(r)) => r.iter().find_map(|(k, rv)| {
            let iv = i.get(k)?;
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            array_for_object(iv, rv, p)
        }),
        (Value::Array(i), Value::Array(r)) => i
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(n, (iv, rv))| array_for_object(iv, rv, format!("{path}[{n}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Inner {
        a: Option<u32>,
        b: Option<u32>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Outer {
        inner: Inner,
        list: Vec<Inner>,
    }

    #[test]
    fn an_array_where_an_object_is_documented_is_refused_with_its_path() {
        let e = json_body::<Outer>(br#"{"inner": [null, null], "list": []}"#, "bad").unwrap_err();
        assert!(
            format!("{e:?}").contains("inner: expected a JSON object"),
            "{e:?}"
        );
        let e = json_body::<Outer>(br#"{"inner": {}, "list": [{}, [1, 2]]}"#, "bad").unwrap_err();
        assert!(
            format!("{e:?}").contains("list[1]: expected a JSON object"),
            "{e:?}"
        );
        let e = json_body::<Outer>(br#"[{}, []]"#, "bad").unwrap_err();
        assert!(format!("{e:?}").contains("must be a JSON object"), "{e:?}");
    }

    #[test]
    fn objects_are_read_and_integral_floats_count_as_integers() {
        let read = json_body::<Outer>(br#"{"inner": {"a": 2.0}, "list": [{"b": 1}]}"#, "bad");
        assert_eq!(
            read.ok(),
            Some(Outer {
                inner: Inner {
                    a: Some(2),
                    b: None
                },
                list: vec![Inner {
                    a: None,
                    b: Some(1)
                }],
            })
        );
    }
}
