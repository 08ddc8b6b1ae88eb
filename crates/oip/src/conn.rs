//! One connection to a remote server: a plain TCP stream, or (feature `tls`; quorum's `remote-tls`) TLS over it with
//! rustls (ring provider). Timeouts are set on the socket underneath, so the HTTP client's deadline
//! bounds the handshake and every TLS record alike. Trust: the PEM bundle named by `SSL_CERT_FILE`,
//! else the system's (as OpenSSL finds it), read when a remote model is opened.

use std::io::{Read, Write};
use std::net::TcpStream;

/// A connection, plain or TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (feature `tls`).
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    /// The socket underneath (for its timeouts).
    pub fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.get_ref(),
        }
    }
}

/// Whether `socket` has something to read (or has ended) within `wait`. Precise to the microsecond
/// on Linux: a socket read timeout would round `wait` up to whole scheduler ticks.
#[cfg(unix)]
#[allow(unsafe_code)] // one poll(2) on a descriptor this process owns; see the SAFETY note
pub fn readable_within(socket: &TcpStream, wait: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `fd` is one valid, initialised pollfd for the call's duration and the count says
    // one; the descriptor stays open because `socket` is borrowed across the call.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ready = unsafe {
        let timeout = libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos().into() };
        libc::ppoll(&mut fd, 1, &timeout, std::ptr::null())
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let ready = unsafe { libc::poll(&mut fd, 1, wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32) };
    // An error from poll itself (EINTR) reads as "not yet": the caller hedges, which is safe.
    ready > 0
}

/// Without poll(2): the socket's read timeout, coarser.
#[cfg(not(unix))]
pub fn readable_within(socket: &TcpStream, wait: std::time::Duration) -> bool {
    if socket.set_read_timeout(Some(wait)).is_err() {
        return true;
    }
    match socket.peek(&mut [0u8; 1]) {
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        Ok(_) => true,
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// How connections to one server are secured.
#[derive(Debug, Clone)]
pub enum Security {
    /// `http://`: plain TCP.
    Plain,
    /// `https://` (feature `tls`).
    #[cfg(feature = "tls")]
    Tls {
        /// The client configuration: the trusted roots.
        config: std::sync::Arc<rustls::ClientConfig>,
        /// The name the server's certificate must carry.
        name: rustls::pki_types::ServerName<'static>,
    },
}

impl Security {
    /// TLS to `host` (feature `tls`; quorum's `remote-tls`), trusting `SSL_CERT_FILE` or the system's bundle.
    #[cfg(feature = "tls")]
    pub fn tls(host: &str) -> Result<Security, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};

        let bundle = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from).or_else(|| {
            ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file())
        });
        let bundle = bundle.ok_or("no CA bundle: set SSL_CERT_FILE to a PEM file of trusted certificates")?;
        let mut roots = rustls::RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(&bundle)
            .map_err(|e| format!("reading the CA bundle {}: {e}", bundle.display()))?;
        for certificate in certificates {
            let certificate = certificate.map_err(|e| format!("reading the CA bundle {}: {e}", bundle.display()))?;
            // A bundle may hold certificates rustls cannot use; the rest still count.
            let _ = roots.add(certificate);
        }
        if roots.is_empty() {
            return Err(format!("the CA bundle {} holds no usable certificate", bundle.display()));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
        Ok(Security::Tls { config: std::sync::Arc::new(config), name })
    }

    /// Without feature `tls`: the reason `https://` is refused.
    #[cfg(not(feature = "tls"))]
    pub fn tls(_host: &str) -> Result<Security, String> {
        Err("this build of quorum has no TLS client (the `remote-tls` feature): reach the server over plain \
             http:// on a private network, or through a local proxy that adds TLS"
            .into())
    }

    /// `stream` secured as configured (the handshake happens with the first write, under the
    /// socket's timeouts).
    pub fn wrap(&self, stream: TcpStream) -> Result<Conn, String> {
        match self {
            Security::Plain => Ok(Conn::Plain(stream)),
            #[cfg(feature = "tls")]
            Security::Tls { config, name } => {
                let connection = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| format!("starting TLS: {e}"))?;
                Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(connection, stream))))
            }
        }
    }
}
