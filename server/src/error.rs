//! The one error shape of the REST API, `{"error": {"code", "message"}}`, and the HTTP status each
//! code gets. Codes are the core's stable codes ([`quorum::Error::code`]) plus the server's own
//! (listed in [`SERVER_CODES`]); the Open Inference Protocol routes answer `{"error": "..."}` instead
//! (see [`crate::oip`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Codes that only the server raises, in addition to [`quorum::Error::CODES`].
pub const SERVER_CODES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "bad_request",
    "payload_too_large",
    "unsupported_media_type",
    "route_not_found",
    "method_not_allowed",
    "timeout",
    "not_ready",
    "job_not_found",
    "experiment_state",
];

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds after which the client may retry (overload, draining).
    pub retry_after: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: one of the core's codes or the server's own.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The server's admission control refusing a request: the core's `overloaded` code (a model's
    /// full queue), since it means the same to a client: retry later.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message) }
    }

    /// The status a core error deserves: the client's mistakes are 4xx, never 500.
    pub fn status_of(error: &quorum::Error) -> StatusCode {
        use quorum::Error as E;
        match error {
            E::InvalidName { .. } | E::InvalidInput(_) | E::MissingFeature { .. } | E::NonFinite { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::Config(_) | E::Json { .. } | E::Outcome(_) | E::Optimize(_) | E::ModelLoad { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::AlreadyExists { .. } => StatusCode::CONFLICT,
            E::TrackingDisabled | E::InUse { .. } | E::Locked { .. } => StatusCode::CONFLICT,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            E::QuorumNotReached { .. } | E::MemberUnavailable { .. } | E::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::RuntimeUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // The server's own trouble: a model that fails, a damaged artifact, disk, bugs.
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<quorum::Error> for ApiError {
    fn from(error: quorum::Error) -> ApiError {
        let status = ApiError::status_of(&error);
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        ApiError { status, code: error.code(), message: error.to_string(), retry_after }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        finish(&mut response, self.status, self.retry_after);
        response
    }
}

/// Headers every error carries: `Retry-After` when retrying helps, `WWW-Authenticate` on a 401.
pub(crate) fn finish(response: &mut Response, status: StatusCode, retry_after: Option<u32>) {
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// The Open Inference Protocol's error body, `{"error": message}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OipError {
    pub error: String,
}

/// `{"error": message}` with `status`: how errors look on the `/v2` routes.
pub fn oip_error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(OipError { error: message.to_string() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_are_4xx() {
        let missing = quorum::Error::MissingFeature { feature: "a".into(), model: "m".into() };
        assert_eq!(ApiError::from(missing).status, StatusCode::UNPROCESSABLE_ENTITY);
        let exists = quorum::Error::AlreadyExists { what: "ensemble", name: "x".into() };
        assert_eq!(ApiError::from(exists).status, StatusCode::CONFLICT);
        let absent = quorum::Error::NotFound { what: "ensemble", name: "x".into() };
        assert_eq!(ApiError::from(absent).code, "not_found");
    }

    #[test]
    fn server_codes_do_not_shadow_core_codes() {
        for code in SERVER_CODES {
            assert!(!quorum::Error::CODES.contains(code), "{code} is already a core code");
        }
    }
}
