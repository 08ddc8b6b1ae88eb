//! A minimal blocking HTTP/1.1 GET for the command line's views of a running server (`quorum top`,
//! `quorum alerts list`): plain `http://` only, one request per connection, a bounded answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use quorum::{Error, Result};

/// Answers larger than this are refused (a metrics page is tens of kilobytes).
const MAX_ANSWER: u64 = 64 << 20;

/// `GET base + path` with an optional bearer token; the body of a 2xx answer, else an error with the
/// server's status and message.
pub fn get(base: &str, path: &str, token: Option<&str>, timeout: Duration) -> Result<String> {
    let unreachable =
        |why: String| Error::io(base.to_string(), std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why));
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| Error::InvalidInput(format!("{base}: the server address must start with http://")))?
        .trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| unreachable(e.to_string()))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| unreachable(e.to_string()))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Accept: */*\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| unreachable(e.to_string()))?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(|e| unreachable(e.to_string()))?;
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| unreachable("not an HTTP answer".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| unreachable("a malformed chunked answer".into()))?;
    }
    let body = String::from_utf8_lossy(&body).to_string();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    match status {
        200..=299 => Ok(body),
        401 | 403 => {
            Err(Error::InvalidInput(format!("{base}{path}: {status}: {} (give a token with --token-env)", body.trim())))
        }
        _ => Err(unreachable(format!("{path} answered {status}: {}", body.trim()))),
    }
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined_and_malformed_ones_refused() {
        assert_eq!(super::dechunk(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n").unwrap(), b"Wikipedia");
        assert!(super::dechunk(b"zz\r\n").is_none());
        assert!(super::dechunk(b"10\r\nshort\r\n").is_none());
    }
}
