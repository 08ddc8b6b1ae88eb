//! Long admin work (optimize, benchmark) runs on a blocking thread as a job: the request waits a few
//! seconds for it and otherwise answers `202 Accepted` with the job's URL, which the client polls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// Finished jobs kept for polling; the oldest finished ones go first.
const KEPT_JOBS: usize = 256;

/// A finished job: its JSON result, or the error's status, code and message.
type Outcome = Result<serde_json::Value, (StatusCode, &'static str, String)>;

#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub kind: &'static str,
    result: Mutex<Option<Outcome>>,
    done: tokio::sync::Notify,
}

/// A job as `GET /api/v1/ml/jobs/{job_id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub job_id: String,
    pub kind: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorDetail>,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        let result = self.result.lock().unwrap_or_else(|p| p.into_inner());
        let (status, value, error) = match &*result {
            None => ("running", None, None),
            Some(Ok(value)) => ("succeeded", Some(value.clone()), None),
            Some(Err((_, code, message))) => {
                ("failed", None, Some(crate::error::ErrorDetail { code: code.to_string(), message: message.clone() }))
            }
        };
        JobStatus { job_id: self.id.clone(), kind: self.kind.to_string(), status: status.into(), result: value, error }
    }

    fn finished(&self) -> bool {
        self.result.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// The jobs kept for polling, and the next job number.
#[derive(Debug, Default)]
pub struct Jobs {
    table: Mutex<HashMap<String, Arc<Job>>>,
    next: AtomicU64,
}

/// Runs `work` on a blocking thread; answers its result if it finishes within `wait`, else `202`
/// with the job.
pub async fn run<T: Serialize + Send + 'static>(
    jobs: &Jobs,
    wait: Duration,
    kind: &'static str,
    work: impl FnOnce() -> quorum::Result<T> + Send + 'static,
) -> ApiResult<Response> {
    let number = jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    let job = Arc::new(Job {
        id: format!("{kind}-{number}"),
        kind,
        result: Mutex::new(None),
        done: tokio::sync::Notify::new(),
    });
    remember(jobs, &job);
    let worker = Arc::clone(&job);
    tokio::task::spawn_blocking(move || {
        let outcome = quorum::Error::guard(work).and_then(|value| {
            serde_json::to_value(value).map_err(|e| quorum::Error::json(format!("{kind} result"), e))
        });
        let stored = outcome.map_err(|e| {
            let api = ApiError::from(e);
            (api.status, api.code, api.message)
        });
        *worker.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        worker.done.notify_waiters();
    });
    let notified = job.done.notified();
    if !job.finished() {
        let _ = tokio::time::timeout(wait, notified).await;
    }
    let result = job.result.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match result {
        Some(Ok(value)) => Ok(axum::Json(value).into_response()),
        Some(Err((status, code, message))) => Err(ApiError::new(status, code, message)),
        None => {
            let location = format!("/api/v1/ml/jobs/{}", job.id);
            let mut response = (StatusCode::ACCEPTED, axum::Json(job.status())).into_response();
            if let Ok(value) = location.parse() {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
    }
}

fn remember(table: &Jobs, job: &Arc<Job>) {
    let mut jobs = table.table.lock().unwrap_or_else(|p| p.into_inner());
    if jobs.len() >= KEPT_JOBS {
        let mut finished: Vec<(u64, String)> = jobs
            .values()
            .filter(|j| j.finished())
            .filter_map(|j| j.id.rsplit('-').next()?.parse().ok().map(|n| (n, j.id.clone())))
            .collect();
        finished.sort_unstable();
        for (_, id) in finished.into_iter().take(jobs.len() + 1 - KEPT_JOBS) {
            jobs.remove(&id);
        }
    }
    jobs.insert(job.id.clone(), Arc::clone(job));
}

/// The job `id`, while it is kept.
pub fn find(jobs: &Jobs, id: &str) -> ApiResult<Arc<Job>> {
    jobs.table.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "job_not_found",
            format!("no job {id:?} (jobs are kept in memory; the last {KEPT_JOBS} finished)"),
        )
    })
}
