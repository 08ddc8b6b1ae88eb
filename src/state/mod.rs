//! What must outlive the process — learnt weights and their history, tracker sums, experiments, the
//! inference log — behind one interface with two backends, chosen by URL:
//! * `sqlite:<path>` (default `<home>/state.sqlite`): embedded, one process (`sqlite`).
//! * `postgres://...` (feature `postgres`): shared by every replica of a deployment, which also learn
//!   from one ordered outcome log and follow one change feed (`SharedLog`).
//!
//! Tables follow the story's schema (`ensemble_config`, `model_performance`, `inference_logs`) plus
//! quorum's own; each backend creates and upgrades them by numbered migrations recorded in
//! `schema_version`, and refuses a database whose schema is newer than it knows.
//!
//! Nothing here runs on a prediction's path: the engine's flusher thread writes every
//! `flush_interval` (default 1 s), and the inference log has its own writer thread (`inference_log`).

pub(crate) mod inference_log;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::regime::Regime;

pub use inference_log::{InferenceLogOptions, InferenceLogStats};

/// The highest instance number (the `quorum_instance` sequence's MAXVALUE): request ids stay below
/// `(MAX_INSTANCE + 1) << 40` = 2^53.
pub(crate) const MAX_INSTANCE: u64 = 8191;

/// When state is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersistOptions {
    /// How often learnt weights and tracked sums are written (default 1 s).
    pub flush_interval: Duration,
    /// How often a `model_performance` snapshot is appended (default 60 s).
    pub history_interval: Duration,
}

impl Default for PersistOptions {
    fn default() -> Self {
        PersistOptions { flush_interval: Duration::from_secs(1), history_interval: Duration::from_secs(60) }
    }
}

/// Where state lives, parsed from `sqlite:<path>` or `postgres://...` / `postgresql://...`.
#[derive(Clone, PartialEq, Eq)]
pub enum StateUrl {
    /// `sqlite:<path>`: an embedded database, one process.
    Sqlite(PathBuf),
    /// `postgres://...`: shared by several processes (feature `postgres`).
    Postgres(String),
}

impl std::fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.write_str(&self.redacted())
    }
}

impl StateUrl {
    /// The default: `<home>/state.sqlite`.
    pub fn default_for(home: &Path) -> StateUrl {
        StateUrl::Sqlite(home.join("state.sqlite"))
    }

    /// Parses a state URL; a relative SQLite path is taken relative to the working directory.
    ///
    /// # Errors
    /// `config` for anything but `sqlite:` and `postgres(ql)://` URLs.
    pub fn parse(url: &str) -> Result<StateUrl> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(Error::Config("a state URL sqlite:<path> needs a path".into()));
            }
            return Ok(StateUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StateUrl::Postgres(url.to_string()));
        }
        Err(Error::Config(format!(
            "state URL {:?}: expected sqlite:<path> or postgres://user@host:port/database",
            redact_url(url)
        )))
    }

    /// The URL with any password replaced by `***`: what logs and status pages show.
    pub fn redacted(&self) -> String {
        match self {
            StateUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            StateUrl::Postgres(url) => redact_url(url),
        }
    }

    /// Whether several processes may share this state (and learn as one).
    pub fn is_shared(&self) -> bool {
        matches!(self, StateUrl::Postgres(_))
    }
}

/// `scheme://user:secret@host/...` → `scheme://user:***@host/...`; also `password=` parameters.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme_end + 3 + colon + 1;
                out.replace_range(start..scheme_end + 3 + at, "***");
            }
        }
    }
    if let Some(i) = out.find("password=") {
        let end = out[i..].find('&').map_or(out.len(), |e| i + e);
        out.replace_range(i + "password=".len()..end, "***");
    }
    out
}

/// One weights change of an ensemble.
#[derive(Debug, Clone)]
pub(crate) struct WeightsRow {
    pub ensemble: String,
    pub version: u32,
    pub strategy: String,
    pub weights: serde_json::Value,
    pub epoch: u64,
    pub learner_state: Option<String>,
}

/// One metric of one predictor.
#[derive(Debug, Clone)]
pub(crate) struct PerformanceRow {
    pub model_id: String,
    pub model_version: String,
    pub metric: &'static str,
    pub value: f64,
    pub conditions: serde_json::Value,
}

/// Everything one flush writes, in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Flush {
    pub weights: Vec<WeightsRow>,
    pub tracking: Vec<(String, u32, String)>,
    pub performance: Vec<PerformanceRow>,
}

impl Flush {
    fn is_empty(&self) -> bool {
        self.weights.is_empty() && self.tracking.is_empty() && self.performance.is_empty()
    }
}

/// A prediction as the outcome log needs it: enough to score it and teach the learners on any
/// replica, whichever made it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoggedPrediction {
    pub ensemble: String,
    pub version: u32,
    pub regime: Option<Regime>,
    pub prediction: f32,
    /// NaN: the member did not answer.
    pub members: Vec<f32>,
}

/// One entry of the shared outcome log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutcomeEntry {
    pub position: i64,
    pub request_id: u64,
    pub prediction: LoggedPrediction,
    pub outcome: f64,
    pub business_value: Option<f64>,
}

/// What changed in the shared registry or ensemble store (every replica reloads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub position: i64,
    /// `ensemble` (a new or re-defaulted ensemble version) or `model` (a new default version).
    pub kind: String,
    pub name: String,
    pub version: Option<u32>,
    /// The instance that made the change (it has applied it already).
    pub instance: u32,
}

/// One backend's operations. Errors are `io` errors naming the table and the cause.
pub(crate) trait Backend: Send + Sync {
    fn write(&self, flush: &Flush) -> Result<()>;
    fn learner_state(&self, ensemble: &str, version: u32) -> Result<Option<(u64, String)>>;
    fn tracking_state(&self, ensemble: &str, version: u32) -> Result<Option<String>>;
    fn weight_history(&self, ensemble: &str) -> Result<Vec<(u32, u64, serde_json::Value)>>;
    fn save_experiment(&self, name: &str, ensemble: &str, state: &str, document: &str) -> Result<()>;
    fn experiment(&self, name: &str) -> Result<Option<String>>;
    fn active_experiment(&self, ensemble: &str) -> Result<Option<(String, String)>>;
    fn experiments(&self) -> Result<Vec<String>>;
    /// Appends inference log rows in one write (COPY or one multi-row transaction).
    fn write_inference_logs(&self, rows: &[inference_log::InferenceRecord]) -> Result<()>;
    fn schema_version(&self) -> Result<u32>;
}

/// The ordered log that makes replicas learn as one, and the change feed (PostgreSQL).
pub(crate) trait SharedLog: Send + Sync {
    /// This process's instance number (unique among live processes; request ids start at
    /// `instance << 40`).
    fn instance(&self) -> u32;
    /// Appends an outcome after every committed entry; `None` when the request's outcome is
    /// already in the log.
    fn append_outcome(
        &self,
        request_id: u64,
        prediction: &LoggedPrediction,
        outcome: f64,
        value: Option<f64>,
    ) -> Result<Option<i64>>;
    /// Entries after `position`, in order, at most `limit`.
    fn outcomes_after(&self, position: i64, limit: usize) -> Result<Vec<OutcomeEntry>>;
    /// The last position committed.
    fn head(&self) -> Result<i64>;
    /// A prediction made by any replica, by request id: from the outcome log when its outcome is
    /// already there, else from the inference log.
    fn find_prediction(&self, request_id: u64) -> Result<Option<LoggedPrediction>>;
    fn append_change(&self, kind: &str, name: &str, version: Option<u32>) -> Result<()>;
    fn changes_after(&self, position: i64) -> Result<Vec<Change>>;
    /// Blocks until another process appends (a notification) or `timeout` passes.
    fn wait(&self, timeout: Duration);
    /// Wakes a [`SharedLog::wait`] in this process.
    fn wake(&self);
}

/// The state database: one of the backends, opened and migrated.
pub struct StateStore {
    backend: Arc<dyn Backend>,
    /// The outcome log and change feed, when several processes share this state.
    shared: Option<Arc<dyn SharedLog>>,
    url: StateUrl,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("url", &self.url).finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens (creating) `<home>/state.sqlite`.
    ///
    /// # Errors
    /// `io` when the file cannot be opened or migrated; `config` when its schema is newer than this
    /// build knows.
    pub fn open(home: &Path) -> Result<StateStore> {
        StateStore::connect(&StateUrl::default_for(home))
    }

    /// Opens the state at `url`, creating and upgrading its tables.
    ///
    /// # Errors
    /// `io` when the database cannot be reached or migrated; `config` when its schema is newer than
    /// this build knows, or for `postgres://` in a build without the `postgres` feature.
    pub fn connect(url: &StateUrl) -> Result<StateStore> {
        let (backend, shared): (Arc<dyn Backend>, Option<Arc<dyn SharedLog>>) = match url {
            StateUrl::Sqlite(path) => (Arc::new(sqlite::Sqlite::open(path)?), None),
            #[cfg(feature = "postgres")]
            StateUrl::Postgres(url) => {
                let store = Arc::new(postgres::Postgres::connect(url)?);
                (store.clone(), Some(store))
            }
            #[cfg(not(feature = "postgres"))]
            StateUrl::Postgres(_) => {
                return Err(Error::Config(
                    "this build has no PostgreSQL support: build quorum with the `postgres` feature".into(),
                ))
            }
        };
        Ok(StateStore { backend, shared, url: url.clone() })
    }

    /// Where this state lives (password redacted by its `Debug` and [`StateUrl::redacted`]).
    pub fn url(&self) -> &StateUrl {
        &self.url
    }

    /// The schema version this database is at.
    ///
    /// # Errors
    /// `io` when it cannot be read.
    pub fn schema_version(&self) -> Result<u32> {
        self.backend.schema_version()
    }

    pub(crate) fn write(&self, flush: &Flush) -> Result<()> {
        if flush.is_empty() {
            return Ok(());
        }
        self.backend.write(flush)
    }

    pub(crate) fn learner_state(&self, ensemble: &str, version: u32) -> Result<Option<(u64, String)>> {
        self.backend.learner_state(ensemble, version)
    }

    pub(crate) fn tracking_state(&self, ensemble: &str, version: u32) -> Result<Option<String>> {
        self.backend.tracking_state(ensemble, version)
    }

    /// The weight history of an ensemble, oldest first: (ensemble version, weights epoch, weights JSON).
    ///
    /// # Errors
    /// `io` when the database cannot be read; `json` for a corrupt row.
    pub fn weight_history(&self, ensemble: &str) -> Result<Vec<(u32, u64, serde_json::Value)>> {
        self.backend.weight_history(ensemble)
    }

    pub(crate) fn save_experiment(&self, name: &str, ensemble: &str, state: &str, document: &str) -> Result<()> {
        self.backend.save_experiment(name, ensemble, state, document)
    }

    pub(crate) fn experiment(&self, name: &str) -> Result<Option<String>> {
        self.backend.experiment(name)
    }

    pub(crate) fn active_experiment(&self, ensemble: &str) -> Result<Option<(String, String)>> {
        self.backend.active_experiment(ensemble)
    }

    pub(crate) fn experiments(&self) -> Result<Vec<String>> {
        self.backend.experiments()
    }

    pub(crate) fn write_inference_logs(&self, rows: &[inference_log::InferenceRecord]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.backend.write_inference_logs(rows)
    }

    pub(crate) fn shared(&self) -> Option<&Arc<dyn SharedLog>> {
        self.shared.as_ref()
    }
}

/// A database error as quorum's `io` error, naming what was being done.
pub(crate) fn db_error<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::io(format!("state database: {context}"), std::io::Error::other(e.to_string()))
}

/// Refuses a database whose schema is newer than this build: writing to it could lose data.
pub(crate) fn check_known(found: u32, known: u32, url: &str) -> Result<()> {
    if found > known {
        return Err(Error::Config(format!(
            "the state database {url} has schema version {found}, newer than this build of quorum knows \
             ({known}): upgrade quorum, or point --state at another database"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_redacted_url() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/q"), "postgres://app:***@db:5432/q");
        assert_eq!(redact_url("postgres://app@db/q"), "postgres://app@db/q");
        assert_eq!(
            redact_url("postgresql://db/q?user=a&password=x&sslmode=off"),
            "postgresql://db/q?user=a&password=***&sslmode=off"
        );
        let url = StateUrl::parse("postgres://u:pw@h/d").unwrap();
        assert!(!format!("{url:?}").contains("pw@"));
    }

    #[test]
    fn state_urls_parse_or_fail_with_the_accepted_forms() {
        assert_eq!(StateUrl::parse("sqlite:/tmp/s.db").unwrap(), StateUrl::Sqlite("/tmp/s.db".into()));
        assert_eq!(StateUrl::parse("sqlite:///tmp/s.db").unwrap(), StateUrl::Sqlite("/tmp/s.db".into()));
        assert!(StateUrl::parse("postgresql://h/d").unwrap().is_shared());
        let error = StateUrl::parse("mysql://root:pw@h/d").unwrap_err();
        assert_eq!(error.code(), "config");
        assert!(!error.to_string().contains("pw"), "{error}");
        assert!(StateUrl::parse("sqlite:").is_err());
    }
}
