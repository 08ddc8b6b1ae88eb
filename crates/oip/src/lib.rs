//! A client for the Open Inference Protocol v2 (KServe v2; Triton, KServe, MLServer and `quorum
//! serve` speak it), as quorum's remote members use it: HTTP/1.1 over kept-alive connections (plain,
//! or TLS with rustls under feature `tls`), every call bounded by a deadline, the binary tensor
//! extension both ways, and hedged requests that race a slow answer against a second one.
//!
//! - [`http`]: the connection pool and one request's send, wait and read, each bounded by a deadline.
//! - [`conn`]: one connection, plain or TLS, and waiting for it to become readable.
//! - [`hedge`]: a member's recent answer times, and a request sent again once one runs past their p95.
//! - [`protocol`]: request bodies (JSON or binary tensors) and answers, decoded without copies where
//!   the server sent binary data.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use quorum_oip::http::{Client, Endpoint};
//!
//! let client = Client::new(Endpoint::resolve("127.0.0.1:8000", false)?, 1 << 20);
//! let deadline = Instant::now() + Duration::from_millis(50);
//! let answer = client.request("GET", "/v2/health/ready", &[], b"", deadline)?;
//! println!("HTTP {}", answer.status);
//! # Ok::<(), String>(())
//! ```

#![warn(missing_docs)]

pub mod conn;
pub mod hedge;
pub mod http;
pub mod protocol;

/// The error text of a failed answer: its `error` field when it has one, else its start.
pub fn error_text(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string)))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}
