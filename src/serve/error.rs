//! The API's error answer: every refusal of every endpoint is an [`ApiError`].
//!
//! It renders as `{"error": MESSAGE, "field": NAME}` with its status (`field` names the
//! parameter, header or body part at fault, and is left out when there is none, as for a
//! 500), plus `Retry-After` (seconds) on the 429s that know when to come back. Library
//! errors convert through `From<Error>`: a bad parameter ([`Error::InvalidParameter`]) is a
//! 400 naming it, anything else a 500 with the error's text. Handlers return
//! [`ApiResult`], so `?` on a library call gives the client the right answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use polars::prelude::PolarsError;
use serde_json::json;

use crate::error::Error;

/// An error answer: `{"error": ..., "field": ...}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u64>,
}

/// What every handler returns: its response, or the error answer.
pub type ApiResult = std::result::Result<Response, ApiError>;

impl ApiError {
    /// An error with this status, about `field` (if any).
    pub fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: field.map(str::to_string),
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 400 about `field`.
    pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Some(field), message)
    }

    /// The same error, telling the client to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            Error::InvalidParameter { name, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, Some(name), e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
        }
    }
}

impl From<PolarsError> for ApiError {
    fn from(e: PolarsError) -> ApiError {
        ApiError::from(Error::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}
