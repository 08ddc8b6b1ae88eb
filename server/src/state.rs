//! What every handler shares: the engine, the settings, the tokens, readiness, the admission queue
//! for predictions and the optimize jobs. Cheap to clone (an `Arc` inside).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use quorum::telemetry::Counter;
use quorum::InferenceEngine;

use crate::auth::Tokens;
use crate::config::{ms, ServerConfig};
use crate::error::{ApiError, ApiResult};
use crate::jobs::Jobs;

#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub engine: InferenceEngine,
    pub config: ServerConfig,
    pub tokens: Tokens,
    /// The configured ensembles are loaded.
    pub loaded: AtomicBool,
    /// SIGTERM/SIGINT received: readiness is false, new work still finishes.
    pub draining: AtomicBool,
    pub admission: Admission,
    pub jobs: Jobs,
    /// Serialises changes of ensembles (check-then-create must not race).
    pub admin: tokio::sync::Mutex<()>,
    pub started: Instant,
    pub model_stats: crate::model_stats::ModelStats,
    pub http: crate::http_metrics::HttpMetrics,
    /// The alert rules at work (`None`: alerts disabled).
    pub alerts: Option<Arc<crate::alerting::AlertsState>>,
    /// The status page's sampled history.
    pub status: Arc<crate::status::StatusHistory>,
}

/// The bounded queue in front of the engine: `max_concurrent` requests run, up to `max_queue` wait,
/// the rest are refused at once.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Semaphore,
    concurrent: usize,
    waiting: AtomicUsize,
    max_queue: usize,
    max_wait: Duration,
    /// Refusals, for the metrics: no slot in time (503) and a deadline that passed first (504).
    pub overloaded: Counter,
    pub deadline_refused: Counter,
}

impl Admission {
    fn new(concurrent: usize, max_queue: usize, max_wait: Duration) -> Admission {
        Admission {
            slots: Semaphore::new(concurrent),
            concurrent,
            waiting: AtomicUsize::new(0),
            max_queue,
            max_wait,
            overloaded: Counter::default(),
            deadline_refused: Counter::default(),
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.concurrent.saturating_sub(self.slots.available_permits())
    }

    /// A slot to run in, waiting at most the configured wait or until `deadline`, whichever is first;
    /// a request whose deadline has already passed is refused (it would only be answered late).
    pub async fn enter(&self, deadline: Option<Instant>) -> ApiResult<SemaphorePermit<'_>> {
        let permit = self.wait(deadline).await.inspect_err(|e| self.count_refusal(e))?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.deadline_refused.inc();
            return Err(deadline_passed());
        }
        Ok(permit)
    }

    fn count_refusal(&self, error: &ApiError) {
        if error.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            self.overloaded.inc();
        } else {
            self.deadline_refused.inc();
        }
    }

    async fn wait(&self, deadline: Option<Instant>) -> ApiResult<SemaphorePermit<'_>> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::overloaded(format!("{} requests are already waiting; retry later", self.max_queue)));
        }
        let limit = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(self.max_wait),
            None => self.max_wait,
        };
        let acquired = tokio::time::timeout(limit, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ApiError::overloaded("the server is shutting down")),
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => Err(deadline_passed()),
            Err(_) => {
                Err(ApiError::overloaded(format!("no free slot within {} ms; retry later", self.max_wait.as_millis())))
            }
        }
    }
}

fn deadline_passed() -> ApiError {
    quorum::Error::DeadlineExceeded { what: "request".into(), detail: "its deadline passed before it could run".into() }
        .into()
}

impl AppState {
    pub fn new(
        engine: InferenceEngine,
        config: ServerConfig,
        tokens: Tokens,
        alerts: Option<Arc<crate::alerting::AlertsState>>,
    ) -> AppState {
        let l = &config.limits;
        let admission = Admission::new(l.max_concurrent, l.max_queue, ms(l.max_queue_wait_ms));
        AppState {
            inner: Arc::new(Shared {
                engine,
                tokens,
                loaded: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                admission,
                jobs: Jobs::default(),
                admin: tokio::sync::Mutex::new(()),
                started: Instant::now(),
                model_stats: Default::default(),
                http: Default::default(),
                alerts,
                status: Default::default(),
                config,
            }),
        }
    }

    pub fn engine(&self) -> &InferenceEngine {
        &self.inner.engine
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Ready: the configured ensembles are loaded, the shared outcome log (if any) caught up, and the
    /// server is not draining.
    pub fn ready(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
            && !self.inner.draining.load(Ordering::Acquire)
            // A replica of a shared state serves once it has applied the outcome log as it stood at
            // start, so its weights are everyone's.
            && self.inner.engine.shared_status().is_none_or(|s| s.caught_up)
    }

    pub fn set_loaded(&self) {
        self.inner.loaded.store(true, Ordering::Release);
    }

    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}
