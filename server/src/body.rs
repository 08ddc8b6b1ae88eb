//! Request bodies: read within the configured size, JSON nesting bounded before parsing, and every
//! failure turned into the API's error shape (413 for size, 400 for broken JSON, 422 naming the field
//! whose value is wrong).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The raw body, read within the route's size limit.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> ApiResult<Body> {
        let limit = state.config().limits.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        match axum::body::to_bytes(request.into_body(), limit).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if is_length_limit(&e) => Err(too_large(limit)),
            Err(e) => Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
        }
    }
}

pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than this route's limit of {limit} bytes"),
    )
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Parses `bytes` as `T` (borrowing from them where `T` does) after checking the nesting depth.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], max_depth: usize, what: &str) -> ApiResult<T> {
    check_depth(bytes, max_depth)?;
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        // Only a failed parse pays for tracking the path, to name the field in the error.
        Err(_) => Err(describe::<T>(bytes, what)),
    }
}

/// The error of parsing `bytes` as `T` again, with the path of the value that is wrong.
fn describe<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> ApiError {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let e = match result.map(|_| deserializer.end()) {
        Err(e) => e,
        Ok(Err(e)) => return ApiError::new(StatusCode::BAD_REQUEST, "json", format!("invalid JSON in {what}: {e}")),
        Ok(Ok(())) => return ApiError::bad_request(format!("invalid JSON in {what}")),
    };
    let path = e.path().to_string();
    let inner = e.into_inner();
    let at = if path == "." || path.is_empty() { String::new() } else { format!(" (field `{path}`)") };
    let status = if inner.is_data() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
    ApiError::new(status, "json", format!("invalid JSON in {what}{at}: {inner}"))
}

/// Refuses an empty batch, and one of more than `max` rows (before any work is done on it).
pub fn check_rows(rows: usize, max: usize) -> ApiResult<()> {
    if rows == 0 {
        return Err(quorum::Error::InvalidInput("the batch is empty (no rows)".into()).into());
    }
    if rows > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{rows} rows in one batch; the limit is {max} (split the batch)"),
        ));
    }
    Ok(())
}

/// Refuses JSON nested deeper than `max_depth` without parsing it (one pass over the bytes).
pub fn check_depth(bytes: &[u8], max_depth: usize) -> ApiResult<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "json",
                        format!("the JSON document is nested deeper than {max_depth} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(check_depth(br#"{"a": [[1]]}"#, 3).is_ok());
        assert!(check_depth(br#"{"a": [[[1]]]}"#, 3).is_err());
        assert!(check_depth(br#"{"a": "[[[[[[\"[[[["}"#, 1).is_ok());
        let deep = "[".repeat(100_000);
        assert_eq!(check_depth(deep.as_bytes(), 32).unwrap_err().code, "json");
    }

    #[test]
    fn a_wrong_value_names_its_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)] // read by the assertion's Debug only
        struct Outer {
            inner: Inner,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            x: f64,
        }
        let e = parse::<Outer>(br#"{"inner": {"x": "one"}}"#, 8, "the request").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("inner.x"), "{}", e.message);
        let e = parse::<Outer>(br#"{"inner": "#, 8, "the request").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
