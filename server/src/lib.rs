//! quorum over HTTP: the story's REST API under `/api/v1/ml`, the Open Inference Protocol (KServe v2 /
//! Triton HTTP, with the binary tensor extension) under `/v2`, and `/openapi.json`. Secure by default
//! (bearer tokens with two scopes; a non-loopback address needs tokens or `--insecure`), bounded
//! everywhere (bodies, JSON depth, batch rows, headers, time, connections, an admission queue that
//! answers 503 at once instead of growing latency), graceful on SIGTERM.
//!
//! Its own crate so that embedders of the `quorum` library never compile an HTTP stack; `quorum
//! serve` (the CLI) runs [`run`].

// The table of contents, lowest first.
pub mod alert_rules;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http_metrics;
mod jobs;
mod model_stats;
mod periodic;

// What runs beside the requests: alert rules acting, the status page's history.
pub mod alerting;
mod status;

pub mod state;

mod body;
mod middleware;

pub mod api;
pub mod oip;
mod openapi;
pub mod router;

mod inline;
mod listener;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use quorum::{Error, InferenceEngine, Result};

pub use auth::{Scope, Tokens};
pub use config::{AlertsConfig, Limits, LogConfig, ServerConfig, TlsConfig};
pub use error::{ApiError, SERVER_CODES};
pub use middleware::{DEADLINE_MS, REQUEST_ID};
pub use state::AppState;

/// A running server: its address, and a handle to stop it.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish (within the grace period), flushes the engine's
    /// state, and returns once done.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(|e| Error::Internal(format!("the server task failed: {e}")))?;
        self.state.engine().flush()
    }

    /// Waits until the server stops (after [`Server::shutdown`] or the shutdown signal given to
    /// [`start_with_signal`]) and flushes the engine's state.
    pub async fn wait(mut self) -> Result<()> {
        (&mut self.task).await.map_err(|e| Error::Internal(format!("the server task failed: {e}")))?;
        self.state.engine().flush()
    }
}

/// The tokens of `config` (its file, then the environment).
pub fn load_tokens(config: &ServerConfig) -> Result<Tokens> {
    let mut tokens = Tokens::default();
    if let Some(path) = &config.tokens {
        tokens.read_file(path)?;
    }
    tokens.read_env()?;
    Ok(tokens)
}

/// Binds, builds the engine, and serves in the background; readiness turns true once the configured
/// ensembles are loaded. Stops on [`Server::shutdown`].
pub async fn start(config: ServerConfig) -> Result<Server> {
    start_with_signal(config, std::future::pending()).await
}

/// [`start`], also stopping when `signal` resolves (what `quorum serve` passes: SIGTERM or SIGINT).
pub async fn start_with_signal(
    config: ServerConfig,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Server> {
    config.validate()?;
    let tokens = load_tokens(&config)?;
    if tokens.is_empty() && !config.listen.ip().is_loopback() && !config.insecure {
        return Err(Error::Config(format!(
            "refusing to serve {} without tokens: give --tokens FILE (lines `admin TOKEN` / `predict TOKEN`) or \
             set {} / {}, or pass --insecure to serve without authentication",
            config.listen,
            auth::ADMIN_TOKENS_ENV,
            auth::PREDICT_TOKENS_ENV
        )));
    }
    let tls = tls(&config)?;
    let options = config.engine_options()?;
    let home = config.home.clone();
    let engine = tokio::task::spawn_blocking(move || Error::guard(|| options.builder(&home)?.build()))
        .await
        .map_err(|e| Error::Internal(format!("building the engine: {e}")))??;
    let listener = bind(config.listen, config.limits.listen_backlog)
        .map_err(|e| Error::io(format!("listening on {}", config.listen), e))?;
    let addr = listener.local_addr().map_err(|e| Error::io("reading the bound address", e))?;
    let alerts = alerting::start(engine.clone(), &config.alerts)?;
    let sample = std::time::Duration::from_millis(config.status_sample_ms);
    let state = AppState::new(engine, config, tokens, alerts);
    status::start(state.engine().clone(), &state.inner.status, sample);
    watch_state(state.engine());
    tracing::info!(%addr, tls = tls.is_some(), tokens = state.inner.tokens.len(), "quorum serve listening");
    load_ensembles(&state);
    let (app, _) = router::build(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let draining = state.clone();
    let task = tokio::spawn(async move {
        let limits = draining.config().limits.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stopped => {}
                () = signal => {}
            }
            tracing::info!("shutting down: readiness off, draining, then finishing in-flight requests");
            draining.start_draining();
        };
        listener::serve(listener, app, &limits, tls, shutdown).await;
    });
    Ok(Server { addr, state, stop: Some(stop), task })
}

/// Says where state lives, and every 5 s whether the inference log dropped rows or fails to write
/// (the counts are also metrics). Never prints a password.
fn watch_state(engine: &InferenceEngine) {
    if let Some(store) = engine.state_store() {
        let shared = engine.shared_status();
        tracing::info!(state = %store.url().redacted(), instance = shared.as_ref().map(|s| s.instance), "state store");
        if shared.is_some() && engine.inference_log_stats().is_none() {
            tracing::warn!(
                "shared state without the inference log: an outcome can only be posted to the replica that made \
                 its prediction (set [engine] inference_log = true)"
            );
        }
    }
    if engine.inference_log_stats().is_none() {
        return;
    }
    let engine = engine.clone();
    tokio::spawn(async move {
        let (mut dropped, mut errors) = (0, 0);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let Some(s) = engine.inference_log_stats() else { return };
            if s.dropped > dropped {
                tracing::warn!(
                    dropped = s.dropped - dropped,
                    total = s.dropped,
                    waiting = s.waiting,
                    "inference log rows dropped: the database is slow or down"
                );
            }
            if s.write_errors > errors {
                tracing::warn!(
                    errors = s.write_errors - errors,
                    error = s.last_error.as_deref().unwrap_or(""),
                    "inference log writes failing; retrying"
                );
            }
            (dropped, errors) = (s.dropped, s.write_errors);
        }
    });
}

/// A listener with a backlog for bursts of connections: tokio's default of 1,024 overflows when
/// thousands of clients connect at once, and their SYNs are then retried after 1, 3, 7... seconds.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Loads the configured ensembles (default: all in the home) off the server's threads, then marks the
/// server ready. An ensemble that fails to load is logged and left out.
fn load_ensembles(state: &AppState) {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let engine: &InferenceEngine = state.engine();
        let names = match &state.config().ensembles {
            Some(names) => names.clone(),
            None => engine.ensemble_store().list().unwrap_or_default(),
        };
        for name in names {
            match engine.ensemble(&name) {
                Ok(handle) => {
                    tracing::info!(ensemble = %name, version = handle.config().version, fusion = ?handle.fusion().fused, "ensemble loaded")
                }
                Err(e) => tracing::warn!(ensemble = %name, code = e.code(), error = %e, "ensemble not loaded"),
            }
        }
        state.set_loaded();
        tracing::info!("ready");
    });
}

#[cfg(feature = "tls")]
fn tls(config: &ServerConfig) -> Result<listener::Tls> {
    config.tls.as_ref().map(listener::tls_acceptor).transpose()
}

#[cfg(not(feature = "tls"))]
fn tls(config: &ServerConfig) -> Result<listener::Tls> {
    match config.tls {
        Some(_) => Err(Error::Config("this build has no TLS (build quorum-server with the `tls` feature)".into())),
        None => Ok(None),
    }
}

/// Sets up logging to stderr as configured (text or JSON lines; `debug` logs one line per request).
pub fn init_logging(log: &LogConfig) {
    let level = match log.level.as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// What `quorum serve` runs: a multi-threaded runtime serving until SIGTERM or SIGINT, then a graceful
/// stop and a flush of the engine's state.
pub fn run(config: ServerConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quorum-serve")
        .build()
        .map_err(|e| Error::io("starting the server runtime", e))?;
    runtime.block_on(async move {
        let server = start_with_signal(config, shutdown_signal()).await?;
        server.wait().await
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
