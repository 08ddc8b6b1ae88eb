//! A small blocking HTTP/1.1 client for remote members: keep-alive connections pooled per server,
//! every request bounded by one deadline (connect, each write and each read get what is left of it,
//! so a server that dribbles its answer a byte at a time still costs at most the deadline), and
//! responses bounded in size. Plain or TLS (`conn.rs`); no lock is held while a request is on the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use super::conn::{Conn, Security};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most bytes of status line and headers read from one response.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Idle connections kept per server.
const MAX_IDLE: usize = 64;

/// Where requests go: `host:port`, resolved once, and how connections are secured.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` as given (the `Host` header).
    pub authority: String,
    addresses: Vec<SocketAddr>,
    security: Security,
}

impl Endpoint {
    /// Resolves `authority` (`host:port`, or `host` for port 80, 443 with TLS).
    pub fn resolve(authority: &str, tls: bool) -> Result<Endpoint, String> {
        let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let host = if has_port { authority.rsplit_once(':').map_or(authority, |(h, _)| h) } else { authority };
        let security =
            if tls { Security::tls(host.trim_start_matches('[').trim_end_matches(']'))? } else { Security::Plain };
        let with_port =
            if has_port { authority.to_string() } else { format!("{authority}:{}", if tls { 443 } else { 80 }) };
        let addresses: Vec<SocketAddr> =
            with_port.to_socket_addrs().map_err(|e| format!("cannot resolve {authority}: {e}"))?.collect();
        if addresses.is_empty() {
            return Err(format!("{authority} resolves to no address"));
        }
        Ok(Endpoint { authority: authority.to_string(), addresses, security })
    }
}

/// One answer: its status, the headers this client reads, and the body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Inference-Header-Content-Length` header (the Open Inference Protocol's binary extension).
    pub inference_header_length: Option<usize>,
    /// The body (at most the client's `max_body` bytes).
    pub body: Vec<u8>,
}

/// Keep-alive connections to one server.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    idle: Mutex<Vec<Conn>>,
    /// The largest response body accepted.
    max_body: usize,
}

/// What went wrong with one request, and whether it may be retried on a new connection (a pooled
/// connection the server had closed before this request reached it).
struct Failure {
    message: String,
    stale: bool,
}

fn failure(message: impl Into<String>) -> Failure {
    Failure { message: message.into(), stale: false }
}

impl Client {
    /// A client of `endpoint` with no connection yet; answers larger than `max_body` bytes fail.
    pub fn new(endpoint: Endpoint, max_body: usize) -> Client {
        Client { endpoint, idle: Mutex::new(Vec::new()), max_body }
    }

    /// Sends one request and reads its answer before `deadline`. `headers` are extra header lines
    /// (`Name: value`, no CRLF).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[String],
        body: &[u8],
        deadline: Instant,
    ) -> Result<Response, String> {
        let head = self.head(method, path, headers, body);
        let sent = self.send(&head, body, deadline)?;
        self.finish(sent, &head, body, deadline)
    }

    /// The request line and headers of a request carrying `body`.
    pub fn head(&self, method: &str, path: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.endpoint.authority);
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        if method != "GET" || !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends a request on a pooled connection, or on a new one when there is none or the pooled
    /// one turns out closed.
    pub fn send(&self, head: &[u8], body: &[u8], deadline: Instant) -> Result<Sent, String> {
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        if let Some(mut stream) = pooled {
            match write_request(&mut stream, head, body, deadline) {
                Ok(()) => return Ok(Sent { stream, pooled: true }),
                Err(f) if f.stale => {}
                Err(f) => return Err(f.message),
            }
        }
        let mut stream = self.connect(deadline).map_err(|f| f.message)?;
        write_request(&mut stream, head, body, deadline).map_err(|f| f.message)?;
        Ok(Sent { stream, pooled: false })
    }

    /// Reads the answer to `sent` and keeps its connection for the next request. A pooled
    /// connection the server had closed before the request reached it gets one more try on a new
    /// one: an inference request has no side effect.
    pub fn finish(&self, sent: Sent, head: &[u8], body: &[u8], deadline: Instant) -> Result<Response, String> {
        match self.read_response(sent.stream, deadline) {
            Ok((response, reusable)) => {
                self.release(reusable);
                Ok(response)
            }
            Err(f) if f.stale && sent.pooled => {
                let mut stream = self.connect(deadline).map_err(|f| f.message)?;
                write_request(&mut stream, head, body, deadline).map_err(|f| f.message)?;
                let (response, reusable) = self.read_response(stream, deadline).map_err(|f| f.message)?;
                self.release(reusable);
                Ok(response)
            }
            Err(f) => Err(f.message),
        }
    }

    /// Reads the answer to `sent` without a second try, handing back its connection when it can
    /// serve another request (for [`Client::release`], once the caller knows it may).
    pub fn read(&self, sent: Sent, deadline: Instant) -> Result<(Response, Option<Conn>), String> {
        self.read_response(sent.stream, deadline).map_err(|f| f.message)
    }

    /// Keeps a connection for the next request.
    pub fn release(&self, stream: Option<Conn>) {
        if let (Some(stream), Ok(mut idle)) = (stream, self.idle.lock()) {
            if idle.len() < MAX_IDLE {
                idle.push(stream);
            }
        }
    }

    fn connect(&self, deadline: Instant) -> Result<Conn, Failure> {
        let mut last = String::new();
        for address in &self.endpoint.addresses {
            let left = left(deadline)?;
            match TcpStream::connect_timeout(address, left) {
                Ok(stream) => {
                    // Requests are small and answered at once: Nagle's delay would cost milliseconds.
                    let _ = stream.set_nodelay(true);
                    return self.endpoint.security.wrap(stream).map_err(failure);
                }
                Err(e) => last = format!("connecting to {address}: {e}"),
            }
        }
        Err(failure(last))
    }

    fn read_response(&self, mut stream: Conn, deadline: Instant) -> Result<(Response, Option<Conn>), Failure> {
        let mut reader = BufReader::with_capacity(16 * 1024, &mut stream);
        let mut line = Vec::with_capacity(128);
        let mut head_bytes = 0usize;
        let mut read_line = |reader: &mut BufReader<&mut Conn>, line: &mut Vec<u8>| -> Result<usize, Failure> {
            line.clear();
            loop {
                reader.get_ref().socket().set_read_timeout(Some(left(deadline)?)).map_err(|e| io("reading", e))?;
                let available = match reader.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io("reading the answer", e)),
                };
                if available.is_empty() {
                    return Ok(line.len());
                }
                let (taken, done) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                line.extend_from_slice(&available[..taken]);
                reader.consume(taken);
                head_bytes += taken;
                if head_bytes > MAX_HEAD_BYTES {
                    return Err(failure(format!("the answer's head is over {MAX_HEAD_BYTES} bytes")));
                }
                if done {
                    return Ok(line.len());
                }
            }
        };
        if read_line(&mut reader, &mut line)? == 0 {
            return Err(Failure { message: "the server closed the connection without answering".into(), stale: true });
        }
        let status_line = String::from_utf8_lossy(&line).trim_end().to_string();
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| failure(format!("not an HTTP/1.x answer: {:?}", truncate(&status_line, 80))))?;
        let (mut length, mut chunked, mut close, mut inference_header_length) = (None, false, false, None);
        loop {
            if read_line(&mut reader, &mut line)? == 0 {
                return Err(failure("the connection closed inside the answer's head"));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text.is_empty() {
                break;
            }
            let Some((name, value)) = text.split_once(':') else {
                return Err(failure(format!("a malformed header line: {:?}", truncate(text, 80))));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(value.parse::<usize>().map_err(|_| failure(format!("Content-Length {value:?}")))?)
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "inference-header-content-length" => {
                    inference_header_length = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| failure(format!("Inference-Header-Content-Length {value:?}")))?,
                    )
                }
                _ => {}
            }
        }
        let too_large =
            |n: usize| failure(format!("the answer's body ({n} bytes or more) is over {} bytes", self.max_body));
        let mut body = Vec::new();
        let read_exact = |reader: &mut BufReader<&mut Conn>, n: usize, body: &mut Vec<u8>| -> Result<(), Failure> {
            let start = body.len();
            body.resize(start + n, 0);
            let mut filled = start;
            while filled < body.len() {
                reader.get_ref().socket().set_read_timeout(Some(left(deadline)?)).map_err(|e| io("reading", e))?;
                match reader.read(&mut body[filled..]) {
                    Ok(0) => return Err(failure("the connection closed inside the answer's body")),
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io("reading the answer's body", e)),
                }
            }
            Ok(())
        };
        if chunked {
            loop {
                if read_line(&mut reader, &mut line)? == 0 {
                    return Err(failure("the connection closed inside a chunked body"));
                }
                let size_text = String::from_utf8_lossy(&line);
                let size_text = size_text.trim().split(';').next().unwrap_or("").to_string();
                let size = usize::from_str_radix(&size_text, 16)
                    .map_err(|_| failure(format!("a malformed chunk size {:?}", truncate(&size_text, 20))))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while read_line(&mut reader, &mut line)? > 0 && line != b"\r\n" && line != b"\n" {}
                    break;
                }
                if body.len() + size > self.max_body {
                    return Err(too_large(body.len() + size));
                }
                read_exact(&mut reader, size, &mut body)?;
                read_line(&mut reader, &mut line)?;
            }
        } else if let Some(n) = length {
            if n > self.max_body {
                return Err(too_large(n));
            }
            read_exact(&mut reader, n, &mut body)?;
        } else {
            // No length: the body ends when the server closes the connection.
            close = true;
            loop {
                reader.get_ref().socket().set_read_timeout(Some(left(deadline)?)).map_err(|e| io("reading", e))?;
                let mut chunk = [0u8; 8192];
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(k) if body.len() + k > self.max_body => return Err(too_large(body.len() + k)),
                    Ok(k) => body.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io("reading the answer's body", e)),
                }
            }
        }
        let leftover = !reader.buffer().is_empty();
        drop(reader);
        let reusable = (!close && !leftover).then_some(stream);
        Ok((Response { status, inference_header_length, body }, reusable))
    }
}

/// Why an I/O error ended a request: a timeout is the deadline's; a connection the server had
/// closed (over TLS an unexpected end, not an empty read) is `stale`, worth a new connection.
fn io(what: &str, e: std::io::Error) -> Failure {
    use std::io::ErrorKind;
    let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let closed = matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    );
    if timed_out {
        failure(format!("no answer within the deadline ({what})"))
    } else {
        Failure { message: format!("{what}: {e}"), stale: closed }
    }
}

/// Writes a request's head and body before `deadline`.
fn write_request(stream: &mut Conn, head: &[u8], body: &[u8], deadline: Instant) -> Result<(), Failure> {
    // Both timeouts before the first write: a TLS handshake reads and writes there.
    let timeout = left(deadline)?;
    let socket = stream.socket();
    socket
        .set_write_timeout(Some(timeout))
        .and_then(|()| socket.set_read_timeout(Some(timeout)))
        .map_err(|e| io("writing", e))?;
    // A write to a connection the server closed may still succeed (the kernel buffers it): that
    // shows as an empty read of the answer, which is retried the same way.
    let written = stream.write_all(head).and_then(|()| stream.write_all(body)).and_then(|()| stream.flush());
    written.map_err(|e| Failure { stale: true, ..io("sending the request", e) })
}

/// A request written to a connection, its answer not yet read.
#[derive(Debug)]
pub struct Sent {
    stream: Conn,
    /// Taken from the pool (so possibly closed by the server meanwhile).
    pooled: bool,
}

impl Sent {
    /// Waits until the answer starts arriving (or the connection ends), at most until `until`:
    /// false when nothing came by then. TLS records count as the answer's start.
    pub fn answer_started(&self, until: Instant) -> bool {
        let wait = until.saturating_duration_since(Instant::now());
        super::conn::readable_within(self.stream.socket(), wait)
    }

    /// A second handle on the socket, through which another thread may cut the request off.
    pub fn socket(&self) -> Option<TcpStream> {
        self.stream.socket().try_clone().ok()
    }
}

/// What is left before `deadline`, or the failure of having none.
fn left(deadline: Instant) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(failure("no answer within the deadline"));
    }
    Ok(left)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers each connection's first request with the next of `answers` and keeps
    /// every connection open for a while (an incomplete answer is a stall, not a close).
    fn serve(answers: Vec<Vec<u8>>) -> (Endpoint, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut open = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(&answer);
                open.push(stream);
            }
            std::thread::sleep(Duration::from_millis(500));
        });
        (Endpoint::resolve(&address.to_string(), false).unwrap(), handle)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[test]
    fn reads_a_content_length_answer_and_a_chunked_one() {
        let (endpoint, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                .to_vec(),
        ]);
        let client = Client::new(endpoint, 1024);
        let a = client.request("GET", "/", &[], b"", soon()).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, b"hello".as_slice()));
        let b = client.request("POST", "/", &[], b"{}", soon()).unwrap();
        assert_eq!(b.body, b"abcde");
        server.join().unwrap();
    }

    #[test]
    fn garbage_an_oversized_body_and_a_stall_are_errors_within_the_deadline() {
        let (endpoint, server) = serve(vec![
            b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        ]);
        let client = Client::new(endpoint, 1024);
        let e = client.request("GET", "/", &[], b"", soon()).unwrap_err();
        assert!(e.contains("not an HTTP/1.x answer"), "{e}");
        let e = client.request("GET", "/", &[], b"", soon()).unwrap_err();
        assert!(e.contains("over 1024 bytes"), "{e}");
        let started = Instant::now();
        let e = client.request("GET", "/", &[], b"", Instant::now() + Duration::from_millis(150)).unwrap_err();
        assert!(e.contains("within the deadline"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        server.join().unwrap();
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(Endpoint::resolve(&address.to_string(), false).unwrap(), 1024);
        let e = client.request("GET", "/", &[], b"", soon()).unwrap_err();
        assert!(e.contains("connecting to"), "{e}");
    }
}
