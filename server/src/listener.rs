//! Accepting connections: HTTP/1.1 with hyper, bounded (open connections, request head size, time to
//! send a request head — which cuts slow-loris connections and idle keep-alives), optionally TLS,
//! and a graceful stop: on the shutdown signal the listener closes, connections finish the request
//! they are serving and close, and after the grace period the rest are dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{ms, Limits};

/// A TLS acceptor when HTTPS is configured.
#[cfg(feature = "tls")]
pub type Tls = Option<tokio_rustls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
pub type Tls = Option<std::convert::Infallible>;

/// Serves `app` on `listener` until `shutdown` resolves, then drains for up to the grace period.
pub async fn serve(listener: TcpListener, app: Router, limits: &Limits, tls: Tls, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Some(ms(limits.header_timeout_ms)))
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let handshake_timeout = ms(limits.header_timeout_ms);
    tokio::pin!(shutdown);
    // After the signal, connections are still accepted for the drain period: every answer then says
    // `Connection: close`, so busy clients learn to stop before the listener goes away.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let drain_over = async {
            match drain_until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown, if drain_until.is_none() => {
                drain_until = Some(tokio::time::Instant::now() + ms(limits.shutdown_drain_ms));
                continue;
            }
            () = drain_over => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(max = limits.max_connections, "connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let http = Arc::clone(&http);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let _ = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await;
                }
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await else {
                        return;
                    };
                    let _ = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await;
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
            }
            let _ = handshake_timeout;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("every connection finished"),
        () = tokio::time::sleep(ms(limits.shutdown_grace_ms)) => {
            tracing::warn!(grace_ms = limits.shutdown_grace_ms, "grace period over: remaining connections dropped");
        }
    }
}

/// The rustls acceptor for PEM `cert` and `key` files.
#[cfg(feature = "tls")]
pub fn tls_acceptor(config: &crate::config::TlsConfig) -> quorum::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        quorum::Error::Config(format!("TLS {what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| bad("certificate", &config.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &config.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| bad("key", &config.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| quorum::Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| quorum::Error::Config(format!("TLS certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}
