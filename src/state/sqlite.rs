//! The embedded backend: SQLite (WAL) at `<home>/state.sqlite` or any `sqlite:<path>`, for one
//! process. Migrations are numbered; `schema_version` records each one applied.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::inference_log::InferenceRecord;
use super::{check_known, db_error, Backend, Flush};
use crate::error::{Error, Result};

/// Migration 1: the tables quorum has kept since its first release (all `IF NOT EXISTS`: a database
/// made before `schema_version` existed takes it as applied).
const V1: &str = "
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

/// Migration 2: the story's inference log (quorum's own columns after the story's).
const V2: &str = "
CREATE TABLE IF NOT EXISTS inference_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id VARCHAR(100) NOT NULL,
    model_ensemble VARCHAR(100) NOT NULL,
    latency_ms INTEGER NOT NULL,
    input_features JSONB,
    prediction_result JSONB,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    ensemble_version INTEGER,
    latency_us INTEGER
);
CREATE INDEX IF NOT EXISTS idx_inference_logs_timestamp ON inference_logs (timestamp);
CREATE INDEX IF NOT EXISTS idx_inference_logs_latency ON inference_logs (latency_ms);
CREATE INDEX IF NOT EXISTS idx_inference_logs_request ON inference_logs (request_id);
";

/// Every migration in order: applying migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: [&str; 2] = [V1, V2];

/// The SQLite backend. All access is serialised by one mutex; only background threads and ensemble
/// loading use it.
pub(super) struct Sqlite {
    connection: Mutex<Connection>,
    /// Held for the backend's life: one writer per state file (see [`WriterLock`]).
    _writer: WriterLock,
    /// The database file as opened, to notice it being deleted or replaced underneath.
    identity: FileIdentity,
    path: std::path::PathBuf,
}

/// An exclusive advisory lock on `<state>.lock`, holding who took it: a second process writing the
/// same state would overwrite the first's learnt weights and tracked sums at each flush (last one
/// wins), so it is refused, with the holder named. Released when the backend drops or the process dies.
struct WriterLock {
    _file: std::fs::File,
}

impl WriterLock {
    fn acquire(database: &Path) -> Result<WriterLock> {
        use std::io::{Read, Seek, Write};
        let mut lock_path = database.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let context = || format!("locking {}", lock_path.display());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(context(), e))?;
        // An engine of this process that was just dropped may still be finishing its last flush on
        // a background thread: give it a moment before calling the state taken.
        let mine = format!("pid {} ", std::process::id());
        let patience = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.rewind().and_then(|()| file.read_to_string(&mut holder));
                    let holder = holder.trim();
                    if holder.starts_with(&mine) && std::time::Instant::now() < patience {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    return Err(Error::Locked {
                        path: database.to_path_buf(),
                        holder: if holder.is_empty() { "holder unknown".into() } else { holder.to_string() },
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(context(), e)),
            }
        }
        let program = std::env::args().next().unwrap_or_default();
        let program = Path::new(&program).file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let holder = format!("pid {} ({program}), since {}", std::process::id(), crate::store::now_rfc3339());
        // Who holds it is advice for the refused; failing to write it does not stop the holder.
        let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(holder.as_bytes()));
        Ok(WriterLock { _file: file })
    }
}

/// A file's device and inode: the same path naming another file (or none) means it was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity { dev: meta.dev(), ino: meta.ino() })
    }
}

impl Sqlite {
    /// Opens (creating) the database at `path` and applies the migrations it lacks.
    ///
    /// # Errors
    /// `locked`, naming the holder, when another process (or another engine of this one) writes it.
    pub(super) fn open(path: &Path) -> Result<Sqlite> {
        let writer = WriterLock::acquire(path)?;
        let connection = Connection::open(path).map_err(db_error::<rusqlite::Error>("opening"))?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(db_error::<rusqlite::Error>("busy timeout"))?;
        connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;").map_err(db_error::<
            rusqlite::Error,
        >(
            "journal mode",
        ))?;
        let identity = FileIdentity::of(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let store = Sqlite { connection: Mutex::new(connection), _writer: writer, identity, path: path.to_path_buf() };
        store.migrate(&path.display().to_string())?;
        Ok(store)
    }

    /// Fails when the database file was deleted or replaced since it was opened: SQLite would go
    /// on writing into the unlinked file, and every flush would be lost while reporting success.
    fn check_present(&self) -> Result<()> {
        match FileIdentity::of(&self.path) {
            Ok(identity) if identity == self.identity => Ok(()),
            Ok(_) => Err(Error::StateLost(format!(
                "{} was replaced by another file while this engine wrote it; what it learnt since is not saved",
                self.path.display()
            ))),
            Err(e) => Err(Error::StateLost(format!(
                "{} is gone ({e}): its home was deleted or moved while this engine wrote it; what it learnt since is not saved",
                self.path.display()
            ))),
        }
    }

    fn migrate(&self, url: &str) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_error::<
            rusqlite::Error,
        >(
            "begin"
        ))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
        )
        .map_err(db_error::<rusqlite::Error>("schema_version"))?;
        let found: u32 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))
            .map_err(db_error::<rusqlite::Error>("schema_version"))?;
        check_known(found, MIGRATIONS.len() as u32, url)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(db_error::<rusqlite::Error>("migrating"))?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", params![i as u32 + 1])
                .map_err(db_error::<rusqlite::Error>("schema_version"))?;
        }
        tx.commit().map_err(db_error::<rusqlite::Error>("commit"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for Sqlite {
    fn schema_version(&self) -> Result<u32> {
        self.lock()
            .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))
            .map_err(db_error::<rusqlite::Error>("schema_version"))
    }

    fn write_inference_logs(&self, rows: &[InferenceRecord]) -> Result<()> {
        self.check_present()?;
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(db_error::<rusqlite::Error>("begin"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO inference_logs (request_id, model_ensemble, latency_ms, input_features, prediction_result, timestamp, ensemble_version, latency_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(db_error::<rusqlite::Error>("inference_logs"))?;
            let (mut features, mut result) = (String::new(), String::new());
            for row in rows {
                features.clear();
                result.clear();
                row.features_json(&mut features);
                row.result_json(&mut result);
                insert
                    .execute(params![
                        row.request_id.to_string(),
                        &*row.context.ensemble,
                        row.latency_ms(),
                        features,
                        result,
                        row.timestamp_text(),
                        row.context.version,
                        row.latency_us
                    ])
                    .map_err(db_error::<rusqlite::Error>("inference_logs"))?;
            }
        }
        tx.commit().map_err(db_error::<rusqlite::Error>("commit"))
    }

    fn write(&self, flush: &Flush) -> Result<()> {
        self.check_present()?;
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(db_error::<rusqlite::Error>("begin"))?;
        for w in &flush.weights {
            tx.execute(
                "UPDATE ensemble_config SET is_active = 0 WHERE ensemble_name = ?1 AND is_active",
                params![w.ensemble],
            )
            .map_err(db_error::<rusqlite::Error>("ensemble_config"))?;
            tx.execute(
                "INSERT INTO ensemble_config (ensemble_name, model_weights, strategy_type, is_active, ensemble_version, weights_epoch, learner_state)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)",
                params![w.ensemble, w.weights.to_string(), w.strategy, w.version, w.epoch as i64, w.learner_state],
            )
            .map_err(db_error::<rusqlite::Error>("ensemble_config"))?;
        }
        for (name, version, state) in &flush.tracking {
            tx.execute(
                "INSERT INTO tracking_state (ensemble_name, ensemble_version, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ensemble_name, ensemble_version) DO UPDATE SET state = excluded.state, updated_at = CURRENT_TIMESTAMP",
                params![name, version, state],
            )
            .map_err(db_error::<rusqlite::Error>("tracking_state"))?;
        }
        for p in &flush.performance {
            tx.execute(
                "INSERT INTO model_performance (model_id, model_version, metric_name, metric_value, market_conditions) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.model_id, p.model_version, p.metric, p.value, p.conditions.to_string()],
            )
            .map_err(db_error::<rusqlite::Error>("model_performance"))?;
        }
        tx.commit().map_err(db_error::<rusqlite::Error>("commit"))
    }

    fn learner_state(&self, ensemble: &str, version: u32) -> Result<Option<(u64, String)>> {
        self.lock()
            .query_row(
                "SELECT weights_epoch, learner_state FROM ensemble_config
                 WHERE ensemble_name = ?1 AND ensemble_version = ?2 AND learner_state IS NOT NULL ORDER BY id DESC LIMIT 1",
                params![ensemble, version],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(db_error::<rusqlite::Error>("reading ensemble_config"))
    }

    fn tracking_state(&self, ensemble: &str, version: u32) -> Result<Option<String>> {
        self.lock()
            .query_row(
                "SELECT state FROM tracking_state WHERE ensemble_name = ?1 AND ensemble_version = ?2",
                params![ensemble, version],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error::<rusqlite::Error>("reading tracking_state"))
    }

    fn weight_history(&self, ensemble: &str) -> Result<Vec<(u32, u64, serde_json::Value)>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT ensemble_version, weights_epoch, model_weights FROM ensemble_config WHERE ensemble_name = ?1 ORDER BY id")
            .map_err(db_error::<rusqlite::Error>("reading ensemble_config"))?;
        let rows = statement
            .query_map(params![ensemble], |row| {
                Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)? as u64, row.get::<_, String>(2)?))
            })
            .map_err(db_error::<rusqlite::Error>("reading ensemble_config"))?;
        rows.map(|r| {
            let (v, e, w) = r.map_err(db_error::<rusqlite::Error>("reading ensemble_config"))?;
            Ok((v, e, serde_json::from_str(&w).map_err(|e| Error::json("ensemble_config.model_weights", e))?))
        })
        .collect()
    }

    fn save_experiment(&self, name: &str, ensemble: &str, state: &str, document: &str) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO experiments (name, ensemble_name, state, document) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state, document = excluded.document, updated_at = CURRENT_TIMESTAMP",
                params![name, ensemble, state, document],
            )
            .map(drop)
            .map_err(db_error::<rusqlite::Error>("experiments"))
    }

    fn experiment(&self, name: &str) -> Result<Option<String>> {
        self.lock()
            .query_row("SELECT document FROM experiments WHERE name = ?1", params![name], |row| row.get(0))
            .optional()
            .map_err(db_error::<rusqlite::Error>("reading experiments"))
    }

    fn active_experiment(&self, ensemble: &str) -> Result<Option<(String, String)>> {
        self.lock()
            .query_row(
                "SELECT name, document FROM experiments WHERE ensemble_name = ?1 AND state IN ('running', 'paused') LIMIT 1",
                params![ensemble],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_error::<rusqlite::Error>("reading experiments"))
    }

    fn experiments(&self) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT document FROM experiments ORDER BY name")
            .map_err(db_error::<rusqlite::Error>("reading experiments"))?;
        let rows =
            statement.query_map([], |row| row.get(0)).map_err(db_error::<rusqlite::Error>("reading experiments"))?;
        rows.map(|r| r.map_err(db_error::<rusqlite::Error>("reading experiments"))).collect()
    }
}
