//! Learning state and tracked metrics that survive a restart, in `<home>/state.sqlite` (SQLite, WAL).
//!
//! Tables follow the story's schema:
//! * `ensemble_config` — one row per change of an ensemble's weights: `model_weights` (JSON, per
//!   regime when regimes are configured), `strategy_type`, `is_active` (the latest row of a name), plus
//!   quorum's `ensemble_version`, `weights_epoch` and `learner_state` (everything needed to resume
//!   learning). The rows of a name are its weight history.
//! * `model_performance` — metric history: one row per (member or ensemble, metric, window), with
//!   `market_conditions` JSON naming the ensemble, its version and the window.
//! * `tracking_state` — the tracker's sums per ensemble version, so metrics resume after a restart.
//! * `experiments` — each A/B experiment's whole state (configuration, assignment seed, step, sums,
//!   decisions) as JSON, written at every decision and every guardrail interval.
//!
//! Nothing here runs on a prediction's path: the engine's flusher thread writes every
//! `flush_interval` (default 1 s), so a crash loses at most the outcomes learnt in that interval.
//! Metric history is appended at most every `history_interval` (default 60 s).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

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

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS model_performance (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id VARCHAR(100) NOT NULL,
    model_version VARCHAR(50) NOT NULL,
    metric_name VARCHAR(50) NOT NULL,
    metric_value DECIMAL(10,6) NOT NULL,
    evaluation_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    market_conditions JSONB
);
CREATE INDEX IF NOT EXISTS idx_model_performance_date ON model_performance (evaluation_date);
CREATE INDEX IF NOT EXISTS idx_model_performance_id ON model_performance (model_id, model_version);
CREATE TABLE IF NOT EXISTS ensemble_config (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ensemble_name VARCHAR(100) NOT NULL,
    model_weights JSONB NOT NULL,
    strategy_type VARCHAR(50) NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    is_active BOOLEAN DEFAULT false,
    performance_threshold DECIMAL(5,4) DEFAULT 0.75,
    ensemble_version INTEGER NOT NULL DEFAULT 0,
    weights_epoch INTEGER NOT NULL DEFAULT 0,
    learner_state TEXT
);
CREATE INDEX IF NOT EXISTS idx_ensemble_config_name ON ensemble_config (ensemble_name, ensemble_version);
CREATE TABLE IF NOT EXISTS tracking_state (
    ensemble_name VARCHAR(100) NOT NULL,
    ensemble_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (ensemble_name, ensemble_version)
);
CREATE TABLE IF NOT EXISTS experiments (
    name VARCHAR(100) PRIMARY KEY,
    ensemble_name VARCHAR(100) NOT NULL,
    state VARCHAR(20) NOT NULL,
    document TEXT NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_experiments_ensemble ON experiments (ensemble_name, state);
";

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

/// The state database. All access is serialised by one mutex; only the flusher and ensemble loading
/// use it.
#[derive(Debug)]
pub struct StateStore {
    connection: Mutex<Connection>,
}

fn db_error(context: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::io(format!("state database: {context}"), std::io::Error::other(e.to_string()))
}

impl StateStore {
    /// Opens (creating) `<home>/state.sqlite`.
    pub fn open(home: &Path) -> Result<StateStore> {
        let path = home.join("state.sqlite");
        let connection = Connection::open(&path).map_err(db_error("opening"))?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(db_error("busy timeout"))?;
        connection.execute_batch(SCHEMA).map_err(db_error("creating tables"))?;
        Ok(StateStore { connection: Mutex::new(connection) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self, flush: &Flush) -> Result<()> {
        if flush.weights.is_empty() && flush.tracking.is_empty() && flush.performance.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(db_error("begin"))?;
        for w in &flush.weights {
            tx.execute(
                "UPDATE ensemble_config SET is_active = 0 WHERE ensemble_name = ?1 AND is_active",
                params![w.ensemble],
            )
            .map_err(db_error("ensemble_config"))?;
            tx.execute(
                "INSERT INTO ensemble_config (ensemble_name, model_weights, strategy_type, is_active, ensemble_version, weights_epoch, learner_state)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)",
                params![w.ensemble, w.weights.to_string(), w.strategy, w.version, w.epoch as i64, w.learner_state],
            )
            .map_err(db_error("ensemble_config"))?;
        }
        for (name, version, state) in &flush.tracking {
            tx.execute(
                "INSERT INTO tracking_state (ensemble_name, ensemble_version, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ensemble_name, ensemble_version) DO UPDATE SET state = excluded.state, updated_at = CURRENT_TIMESTAMP",
                params![name, version, state],
            )
            .map_err(db_error("tracking_state"))?;
        }
        for p in &flush.performance {
            tx.execute(
                "INSERT INTO model_performance (model_id, model_version, metric_name, metric_value, market_conditions) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.model_id, p.model_version, p.metric, p.value, p.conditions.to_string()],
            )
            .map_err(db_error("model_performance"))?;
        }
        tx.commit().map_err(db_error("commit"))
    }

    /// The latest learner state saved for an ensemble version.
    pub(crate) fn learner_state(&self, ensemble: &str, version: u32) -> Result<Option<(u64, String)>> {
        self.lock()
            .query_row(
                "SELECT weights_epoch, learner_state FROM ensemble_config
                 WHERE ensemble_name = ?1 AND ensemble_version = ?2 AND learner_state IS NOT NULL ORDER BY id DESC LIMIT 1",
                params![ensemble, version],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(db_error("reading ensemble_config"))
    }

    /// The tracker sums saved for an ensemble version.
    pub(crate) fn tracking_state(&self, ensemble: &str, version: u32) -> Result<Option<String>> {
        self.lock()
            .query_row(
                "SELECT state FROM tracking_state WHERE ensemble_name = ?1 AND ensemble_version = ?2",
                params![ensemble, version],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error("reading tracking_state"))
    }

    /// The weight history of an ensemble, oldest first: (ensemble version, weights epoch, weights JSON).
    pub fn weight_history(&self, ensemble: &str) -> Result<Vec<(u32, u64, serde_json::Value)>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT ensemble_version, weights_epoch, model_weights FROM ensemble_config WHERE ensemble_name = ?1 ORDER BY id")
            .map_err(db_error("reading ensemble_config"))?;
        let rows = statement
            .query_map(params![ensemble], |row| {
                Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)? as u64, row.get::<_, String>(2)?))
            })
            .map_err(db_error("reading ensemble_config"))?;
        rows.map(|r| {
            let (v, e, w) = r.map_err(db_error("reading ensemble_config"))?;
            Ok((v, e, serde_json::from_str(&w).map_err(|e| Error::json("ensemble_config.model_weights", e))?))
        })
        .collect()
    }

    /// Saves an experiment's state (inserted or replaced).
    pub(crate) fn save_experiment(&self, name: &str, ensemble: &str, state: &str, document: &str) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO experiments (name, ensemble_name, state, document) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state, document = excluded.document, updated_at = CURRENT_TIMESTAMP",
                params![name, ensemble, state, document],
            )
            .map(drop)
            .map_err(db_error("experiments"))
    }

    /// An experiment's saved state (JSON).
    pub(crate) fn experiment(&self, name: &str) -> Result<Option<String>> {
        self.lock()
            .query_row("SELECT document FROM experiments WHERE name = ?1", params![name], |row| row.get(0))
            .optional()
            .map_err(db_error("reading experiments"))
    }

    /// The running or paused experiment of an ensemble: (name, JSON).
    pub(crate) fn active_experiment(&self, ensemble: &str) -> Result<Option<(String, String)>> {
        self.lock()
            .query_row(
                "SELECT name, document FROM experiments WHERE ensemble_name = ?1 AND state IN ('running', 'paused') LIMIT 1",
                params![ensemble],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_error("reading experiments"))
    }

    /// Every experiment's saved state (JSON), by name.
    pub(crate) fn experiments(&self) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT document FROM experiments ORDER BY name")
            .map_err(db_error("reading experiments"))?;
        let rows = statement.query_map([], |row| row.get(0)).map_err(db_error("reading experiments"))?;
        rows.map(|r| r.map_err(db_error("reading experiments"))).collect()
    }
}
