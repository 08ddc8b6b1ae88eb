//! The shared backend (feature `postgres`): tokio-postgres through a deadpool pool, driven by a small
//! runtime of its own so callers stay synchronous and runtime-agnostic (a call hands its future to
//! that runtime and waits on a channel, which is safe from any thread, async workers included).
//!
//! Besides the story's tables it keeps what makes replicas one service:
//! * `outcome_log` — outcomes in one total order. An append takes a transaction-scoped advisory lock,
//!   so positions are assigned and committed in the same order: a reader that has seen position `n`
//!   never later finds a row below `n` committed late. Unique by request id (an outcome counts once).
//! * `change_log` — registrations and ensemble changes, appended the same way, for every replica to
//!   reload.
//! * `quorum_instance` — a sequence numbering each process, so request ids never collide.
//!
//! Appends `NOTIFY quorum_log`; a listening connection wakes the replicas' consumers (each also polls
//! as a backstop, and the listener reconnects by itself).

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::SinkExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::inference_log::InferenceRecord;
use super::{check_known, db_error, redact_url, Backend, Change, Flush, LoggedPrediction, OutcomeEntry, SharedLog};
use crate::error::{Error, Result};
use crate::regime::Regime;

/// Advisory lock keys serialising appends to the two logs, and migrations.
const OUTCOME_LOCK: i64 = 0x7175_6f72_756d_0001;
const CHANGE_LOCK: i64 = 0x7175_6f72_756d_0002;
const MIGRATION_LOCK: i64 = 0x7175_6f72_756d_0003;

/// Migration 1: the story's three tables (its indexes as PostgreSQL indexes), quorum's state tables,
/// and the logs that make replicas one.
const V1: &str = "
CREATE TABLE IF NOT EXISTS model_performance (
    id BIGSERIAL PRIMARY KEY,
    model_id VARCHAR(100) NOT NULL,
    model_version VARCHAR(50) NOT NULL,
    metric_name VARCHAR(50) NOT NULL,
    metric_value DECIMAL(10,6) NOT NULL,
    evaluation_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    market_conditions JSONB,
    metric_value_float8 DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS idx_model_performance_date ON model_performance (evaluation_date);
CREATE INDEX IF NOT EXISTS idx_model_performance_id ON model_performance (model_id, model_version);
CREATE TABLE IF NOT EXISTS ensemble_config (
    id BIGSERIAL PRIMARY KEY,
    ensemble_name VARCHAR(100) NOT NULL,
    model_weights JSONB NOT NULL,
    strategy_type VARCHAR(50) NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    is_active BOOLEAN DEFAULT false,
    performance_threshold DECIMAL(5,4) DEFAULT 0.75,
    ensemble_version INTEGER NOT NULL DEFAULT 0,
    weights_epoch BIGINT NOT NULL DEFAULT 0,
    learner_state TEXT,
    instance INTEGER
);
CREATE INDEX IF NOT EXISTS idx_ensemble_config_name ON ensemble_config (ensemble_name, ensemble_version);
CREATE TABLE IF NOT EXISTS inference_logs (
    id BIGSERIAL PRIMARY KEY,
    request_id VARCHAR(100) NOT NULL,
    model_ensemble VARCHAR(100) NOT NULL,
    latency_ms INTEGER NOT NULL,
    input_features JSONB,
    prediction_result JSONB,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    ensemble_version INTEGER,
    latency_us INTEGER,
    prediction REAL,
    member_values REAL[],
    regime SMALLINT
);
CREATE INDEX IF NOT EXISTS idx_inference_logs_timestamp ON inference_logs (timestamp);
CREATE INDEX IF NOT EXISTS idx_inference_logs_latency ON inference_logs (latency_ms);
CREATE INDEX IF NOT EXISTS idx_inference_logs_request ON inference_logs (request_id);
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
CREATE TABLE IF NOT EXISTS outcome_log (
    position BIGINT PRIMARY KEY,
    request_id BIGINT NOT NULL UNIQUE,
    ensemble_name VARCHAR(100) NOT NULL,
    ensemble_version INTEGER NOT NULL,
    regime SMALLINT,
    prediction REAL NOT NULL,
    member_values REAL[] NOT NULL,
    outcome REAL NOT NULL,
    business_value DOUBLE PRECISION,
    instance INTEGER NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS change_log (
    position BIGINT PRIMARY KEY,
    kind VARCHAR(20) NOT NULL,
    name VARCHAR(128) NOT NULL,
    version INTEGER,
    instance INTEGER NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE SEQUENCE IF NOT EXISTS quorum_instance MINVALUE 1 MAXVALUE 8191 CYCLE;
";

/// Outcomes are f64 end to end (regression targets lose digits in REAL).
const V2: &str = "ALTER TABLE outcome_log ALTER COLUMN outcome TYPE DOUBLE PRECISION;";

/// Every migration in order: applying migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: [&str; 2] = [V1, V2];

/// The story's `DECIMAL(10,6)` holds |x| < 10⁴: larger metrics are saturated there and kept exactly
/// in `metric_value_float8`.
const DECIMAL_10_6_MAX: f64 = 9_999.999_999;

/// Notifications seen by the listener: a generation counter and its condition variable.
#[derive(Default)]
struct Wakeups {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Wakeups {
    fn bump(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }
}

pub(super) struct Postgres {
    /// `Some` until dropped (see `Drop`); `handle` spawns on it.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    config: tokio_postgres::Config,
    instance: u32,
    wakeups: Arc<Wakeups>,
    listening: Mutex<bool>,
    url: String,
}

/// The regime as stored (a small integer; `None` without regimes).
fn regime_code(regime: Option<Regime>) -> Option<i16> {
    regime.map(|r| r.index() as i16)
}

fn regime_from_code(code: Option<i16>) -> Option<Regime> {
    code.and_then(|c| Regime::ALL.get(usize::try_from(c).ok()?).copied())
}

fn pg<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    db_error::<E>(context)
}

impl Postgres {
    pub(super) fn connect(url: &str) -> Result<Postgres> {
        let redacted = redact_url(url);
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| Error::Config(format!("state URL {redacted}: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("quorum");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quorum-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the PostgreSQL runtime", e))?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(pg("building the connection pool"))?;
        let mut store = Postgres {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            config,
            instance: 0,
            wakeups: Arc::default(),
            listening: Mutex::new(false),
            url: redacted,
        };
        store.migrate()?;
        let pool = store.pool.clone();
        store.instance = store.run(async move {
            let client = pool.get().await.map_err(pg("connecting"))?;
            let row =
                client.query_one("SELECT nextval('quorum_instance')", &[]).await.map_err(pg("quorum_instance"))?;
            Ok(row.get::<_, i64>(0) as u32)
        })?;
        Ok(store)
    }

    /// Runs `future` on the store's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(&self, future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .map_err(|_| Error::io("state database", std::io::Error::other("the PostgreSQL task stopped")))?
    }

    fn migrate(&self) -> Result<()> {
        let pool = self.pool.clone();
        let url = self.url.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pg("connecting"))?;
            let tx = client.transaction().await.map_err(pg("begin"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg("migration lock"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg("schema_version"))?;
            let found: i32 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
                .await
                .map_err(pg("schema_version"))?
                .get(0);
            check_known(found as u32, MIGRATIONS.len() as u32, &url)?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.batch_execute(sql).await.map_err(pg("migrating"))?;
                tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(i as i32 + 1)])
                    .await
                    .map_err(pg("schema_version"))?;
            }
            tx.commit().await.map_err(pg("commit"))
        })
    }

    /// Starts the LISTEN connection once; it reconnects by itself while the store lives.
    fn ensure_listening(&self) {
        let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        if *listening {
            return;
        }
        *listening = true;
        let config = self.config.clone();
        let wakeups = Arc::downgrade(&self.wakeups);
        self.handle.spawn(async move {
            loop {
                if let Ok((client, mut connection)) = config.connect(NoTls).await {
                    let forward = async {
                        loop {
                            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                                Some(Ok(AsyncMessage::Notification(_))) => match wakeups.upgrade() {
                                    Some(w) => w.bump(),
                                    None => return,
                                },
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => return,
                            }
                        }
                    };
                    let listen = client.batch_execute("LISTEN quorum_log");
                    // The connection must be polled for LISTEN to complete: both run together.
                    let (_, ()) = futures_util::future::join(listen, forward).await;
                    drop(client);
                }
                let Some(w) = wakeups.upgrade() else { return };
                // A notification may have been missed while disconnected: wake the consumer to poll.
                w.bump();
                drop(w);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn with_pool<T, F, Fut>(store: &Postgres, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    let pool = store.pool.clone();
    store.run(async move {
        let client = pool.get().await.map_err(pg("connecting"))?;
        f(client).await
    })
}

/// Escapes a value for COPY's text format.
fn copy_escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

fn float_text(out: &mut String, value: f32) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // The shortest text that reads back as the same f32.
        out.push_str(ryu::Buffer::new().format_finite(value));
    }
}

/// The rows as COPY text: one line per record.
fn copy_text(rows: &[InferenceRecord]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows.len() * 256);
    let mut json = String::new();
    for row in rows {
        let _ = write!(out, "{}\t", row.request_id);
        copy_escape(&mut out, &row.context.ensemble);
        let _ = write!(out, "\t{}\t", row.latency_ms());
        json.clear();
        row.features_json(&mut json);
        copy_escape(&mut out, &json);
        out.push('\t');
        json.clear();
        row.result_json(&mut json);
        copy_escape(&mut out, &json);
        let _ = write!(out, "\t{}\t{}\t{}\t", row.timestamp_text(), row.context.version, row.latency_us);
        float_text(&mut out, row.prediction);
        out.push_str("\t{");
        for (i, &v) in row.members().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            float_text(&mut out, v);
        }
        out.push_str("}\t");
        match regime_code(row.regime) {
            Some(code) => {
                let _ = write!(out, "{code}");
            }
            None => out.push_str("\\N"),
        }
        out.push('\n');
    }
    out
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop, which tokio refuses (with a panic) inside
        // an async context — where an async embedder may well drop its last engine. Let it go
        // in the background instead: the listener and pool tasks stop on their own.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Backend for Postgres {
    fn schema_version(&self) -> Result<u32> {
        with_pool(self, |client| async move {
            let row = client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[]).await;
            Ok(row.map_err(pg("schema_version"))?.get::<_, i32>(0) as u32)
        })
    }

    fn write_inference_logs(&self, rows: &[InferenceRecord]) -> Result<()> {
        let text = Bytes::from(copy_text(rows));
        with_pool(self, |client| async move {
            let sink = client
                .copy_in(
                    "COPY inference_logs (request_id, model_ensemble, latency_ms, input_features, prediction_result, \
                     timestamp, ensemble_version, latency_us, prediction, member_values, regime) FROM STDIN",
                )
                .await
                .map_err(pg("inference_logs"))?;
            let mut sink = std::pin::pin!(sink);
            sink.send(text).await.map_err(pg("inference_logs"))?;
            sink.as_mut().finish().await.map_err(pg("inference_logs"))?;
            Ok(())
        })
    }

    fn write(&self, flush: &Flush) -> Result<()> {
        let weights: Vec<_> = flush
            .weights
            .iter()
            .map(|w| {
                (
                    w.ensemble.clone(),
                    w.weights.to_string(),
                    w.strategy.clone(),
                    w.version as i32,
                    w.epoch as i64,
                    w.learner_state.clone(),
                )
            })
            .collect();
        let tracking: Vec<_> = flush.tracking.iter().map(|(n, v, s)| (n.clone(), *v as i32, s.clone())).collect();
        let performance: Vec<_> = flush
            .performance
            .iter()
            .map(|p| {
                let saturated =
                    if p.value.is_nan() { p.value } else { p.value.clamp(-DECIMAL_10_6_MAX, DECIMAL_10_6_MAX) };
                (
                    p.model_id.clone(),
                    p.model_version.clone(),
                    p.metric.to_string(),
                    saturated,
                    p.value,
                    p.conditions.to_string(),
                )
            })
            .collect();
        let instance = self.instance as i32;
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pg("connecting"))?;
            let tx = client.transaction().await.map_err(pg("begin"))?;
            for (name, weights, strategy, version, epoch, learner) in &weights {
                tx.execute("UPDATE ensemble_config SET is_active = false WHERE ensemble_name = $1 AND is_active", &[name])
                    .await
                    .map_err(pg("ensemble_config"))?;
                tx.execute(
                    "INSERT INTO ensemble_config (ensemble_name, model_weights, strategy_type, is_active, ensemble_version, weights_epoch, learner_state, instance)
                     VALUES ($1, $2::text::jsonb, $3, true, $4, $5, $6, $7)",
                    &[name, weights, strategy, version, epoch, learner, &instance],
                )
                .await
                .map_err(pg("ensemble_config"))?;
            }
            for (name, version, state) in &tracking {
                tx.execute(
                    "INSERT INTO tracking_state (ensemble_name, ensemble_version, state) VALUES ($1, $2, $3)
                     ON CONFLICT (ensemble_name, ensemble_version) DO UPDATE SET state = excluded.state, updated_at = CURRENT_TIMESTAMP",
                    &[name, version, state],
                )
                .await
                .map_err(pg("tracking_state"))?;
            }
            for (id, version, metric, saturated, exact, conditions) in &performance {
                tx.execute(
                    "INSERT INTO model_performance (model_id, model_version, metric_name, metric_value, metric_value_float8, market_conditions)
                     VALUES ($1, $2, $3, $4::float8::numeric(10,6), $5, $6::text::jsonb)",
                    &[id, version, metric, saturated, exact, conditions],
                )
                .await
                .map_err(pg("model_performance"))?;
            }
            tx.commit().await.map_err(pg("commit"))
        })
    }

    fn learner_state(&self, ensemble: &str, version: u32) -> Result<Option<(u64, String)>> {
        let name = ensemble.to_string();
        with_pool(self, move |client| async move {
            let row = client
                .query_opt(
                    "SELECT weights_epoch, learner_state FROM ensemble_config
                     WHERE ensemble_name = $1 AND ensemble_version = $2 AND learner_state IS NOT NULL ORDER BY id DESC LIMIT 1",
                    &[&name, &(version as i32)],
                )
                .await
                .map_err(pg("reading ensemble_config"))?;
            Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
        })
    }

    fn tracking_state(&self, ensemble: &str, version: u32) -> Result<Option<String>> {
        let name = ensemble.to_string();
        with_pool(self, move |client| async move {
            let row = client
                .query_opt(
                    "SELECT state FROM tracking_state WHERE ensemble_name = $1 AND ensemble_version = $2",
                    &[&name, &(version as i32)],
                )
                .await
                .map_err(pg("reading tracking_state"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn weight_history(&self, ensemble: &str) -> Result<Vec<(u32, u64, serde_json::Value)>> {
        let name = ensemble.to_string();
        let rows = with_pool(self, move |client| async move {
            let rows = client
                .query(
                    "SELECT ensemble_version, weights_epoch, model_weights::text FROM ensemble_config WHERE ensemble_name = $1 ORDER BY id",
                    &[&name],
                )
                .await
                .map_err(pg("reading ensemble_config"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1) as u64, r.get::<_, String>(2)))
                .collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .map(|(v, e, w)| {
                Ok((v, e, serde_json::from_str(&w).map_err(|e| Error::json("ensemble_config.model_weights", e))?))
            })
            .collect()
    }

    fn save_experiment(&self, name: &str, ensemble: &str, state: &str, document: &str) -> Result<()> {
        let (name, ensemble, state, document) =
            (name.to_string(), ensemble.to_string(), state.to_string(), document.to_string());
        with_pool(self, move |client| async move {
            client
                .execute(
                    "INSERT INTO experiments (name, ensemble_name, state, document) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE SET state = excluded.state, document = excluded.document, updated_at = CURRENT_TIMESTAMP",
                    &[&name, &ensemble, &state, &document],
                )
                .await
                .map_err(pg("experiments"))?;
            Ok(())
        })
    }

    fn experiment(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_string();
        with_pool(self, move |client| async move {
            let row = client
                .query_opt("SELECT document FROM experiments WHERE name = $1", &[&name])
                .await
                .map_err(pg("reading experiments"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn active_experiment(&self, ensemble: &str) -> Result<Option<(String, String)>> {
        let ensemble = ensemble.to_string();
        with_pool(self, move |client| async move {
            let row = client
                .query_opt(
                    "SELECT name, document FROM experiments WHERE ensemble_name = $1 AND state IN ('running', 'paused') LIMIT 1",
                    &[&ensemble],
                )
                .await
                .map_err(pg("reading experiments"))?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn experiments(&self) -> Result<Vec<String>> {
        with_pool(self, |client| async move {
            let rows = client
                .query("SELECT document FROM experiments ORDER BY name", &[])
                .await
                .map_err(pg("reading experiments"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

impl SharedLog for Postgres {
    fn instance(&self) -> u32 {
        self.instance
    }

    fn append_outcome(
        &self,
        request_id: u64,
        prediction: &LoggedPrediction,
        outcome: f64,
        value: Option<f64>,
    ) -> Result<Option<i64>> {
        let id = i64::try_from(request_id)
            .map_err(|_| Error::Outcome(format!("request id {request_id} is out of range")))?;
        let p = prediction.clone();
        let instance = self.instance as i32;
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pg("connecting"))?;
            let tx = client.transaction().await.map_err(pg("begin"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OUTCOME_LOCK]).await.map_err(pg("outcome_log lock"))?;
            let row = tx
                .query_opt(
                    "INSERT INTO outcome_log (position, request_id, ensemble_name, ensemble_version, regime, prediction, member_values, outcome, business_value, instance)
                     SELECT COALESCE(MAX(position), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM outcome_log
                     ON CONFLICT (request_id) DO NOTHING RETURNING position",
                    &[&id, &p.ensemble, &(p.version as i32), &regime_code(p.regime), &p.prediction, &p.members, &outcome, &value, &instance],
                )
                .await
                .map_err(pg("outcome_log"))?;
            if row.is_some() {
                tx.batch_execute("NOTIFY quorum_log").await.map_err(pg("notify"))?;
            }
            tx.commit().await.map_err(pg("commit"))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn outcomes_after(&self, position: i64, limit: usize) -> Result<Vec<OutcomeEntry>> {
        let limit = limit as i64;
        with_pool(self, move |client| async move {
            let rows = client
                .query(
                    "SELECT position, request_id, ensemble_name, ensemble_version, regime, prediction, member_values, outcome, business_value
                     FROM outcome_log WHERE position > $1 ORDER BY position LIMIT $2",
                    &[&position, &limit],
                )
                .await
                .map_err(pg("reading outcome_log"))?;
            Ok(rows
                .iter()
                .map(|r| OutcomeEntry {
                    position: r.get(0),
                    request_id: r.get::<_, i64>(1) as u64,
                    prediction: LoggedPrediction {
                        ensemble: r.get(2),
                        version: r.get::<_, i32>(3) as u32,
                        regime: regime_from_code(r.get(4)),
                        prediction: r.get(5),
                        members: r.get(6),
                    },
                    outcome: r.get(7),
                    business_value: r.get(8),
                })
                .collect())
        })
    }

    fn head(&self) -> Result<i64> {
        with_pool(self, |client| async move {
            let row = client.query_one("SELECT COALESCE(MAX(position), 0) FROM outcome_log", &[]).await;
            Ok(row.map_err(pg("reading outcome_log"))?.get(0))
        })
    }

    fn find_prediction(&self, request_id: u64) -> Result<Option<LoggedPrediction>> {
        let id = request_id.to_string();
        let key = i64::try_from(request_id).ok();
        with_pool(self, move |client| async move {
            // An outcome already logged carries its prediction: a replica killed after logging it but
            // before answering leaves the client's retry to find it here, and the retry is then told
            // "already recorded" (the prediction's own row may have died in that replica's queue).
            if let Some(key) = key {
                let row = client
                    .query_opt(
                        "SELECT ensemble_name, ensemble_version, regime, prediction, member_values FROM outcome_log
                         WHERE request_id = $1",
                        &[&key],
                    )
                    .await
                    .map_err(pg("reading outcome_log"))?;
                if let Some(r) = row {
                    return Ok(Some(LoggedPrediction {
                        ensemble: r.get(0),
                        version: r.get::<_, i32>(1) as u32,
                        regime: regime_from_code(r.get(2)),
                        prediction: r.get(3),
                        members: r.get(4),
                    }));
                }
            }
            let row = client
                .query_opt(
                    "SELECT model_ensemble, ensemble_version, regime, prediction, member_values FROM inference_logs
                     WHERE request_id = $1 AND member_values IS NOT NULL LIMIT 1",
                    &[&id],
                )
                .await
                .map_err(pg("reading inference_logs"))?;
            Ok(row.map(|r| LoggedPrediction {
                ensemble: r.get(0),
                version: r.get::<_, i32>(1) as u32,
                regime: regime_from_code(r.get(2)),
                prediction: r.get(3),
                members: r.get(4),
            }))
        })
    }

    fn append_change(&self, kind: &str, name: &str, version: Option<u32>) -> Result<()> {
        let (kind, name) = (kind.to_string(), name.to_string());
        let version = version.map(|v| v as i32);
        let instance = self.instance as i32;
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pg("connecting"))?;
            let tx = client.transaction().await.map_err(pg("begin"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK]).await.map_err(pg("change_log lock"))?;
            tx.execute(
                "INSERT INTO change_log (position, kind, name, version, instance)
                 SELECT COALESCE(MAX(position), 0) + 1, $1, $2, $3, $4 FROM change_log",
                &[&kind, &name, &version, &instance],
            )
            .await
            .map_err(pg("change_log"))?;
            tx.batch_execute("NOTIFY quorum_log").await.map_err(pg("notify"))?;
            tx.commit().await.map_err(pg("commit"))
        })
    }

    fn changes_after(&self, position: i64) -> Result<Vec<Change>> {
        with_pool(self, move |client| async move {
            let rows = client
                .query(
                    "SELECT position, kind, name, version, instance FROM change_log WHERE position > $1 ORDER BY position",
                    &[&position],
                )
                .await
                .map_err(pg("reading change_log"))?;
            Ok(rows
                .iter()
                .map(|r| Change {
                    position: r.get(0),
                    kind: r.get(1),
                    name: r.get(2),
                    version: r.get::<_, Option<i32>>(3).map(|v| v as u32),
                    instance: r.get::<_, i32>(4) as u32,
                })
                .collect())
        })
    }

    fn wait(&self, timeout: Duration) {
        self.ensure_listening();
        let wakeups = &self.wakeups;
        let generation = wakeups.generation.lock().unwrap_or_else(|p| p.into_inner());
        let seen = *generation;
        let _ =
            wakeups.changed.wait_timeout_while(generation, timeout, |g| *g == seen).unwrap_or_else(|p| p.into_inner());
    }

    fn wake(&self) {
        self.wakeups.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut out = String::new();
        copy_escape(&mut out, "a\\b\tc\nd");
        assert_eq!(out, "a\\\\b\\tc\\nd");
        let mut f = String::new();
        for v in [0.1f32, f32::NAN, f32::NEG_INFINITY, 1e-7] {
            float_text(&mut f, v);
            f.push(' ');
        }
        assert_eq!(f, "0.1 NaN -Infinity 1e-7 ");
    }

    #[test]
    fn regimes_round_trip_through_their_code() {
        for r in Regime::ALL {
            assert_eq!(regime_from_code(regime_code(Some(r))), Some(r));
        }
        assert_eq!(regime_from_code(None), None);
        assert_eq!(regime_from_code(Some(9)), None);
    }
}
