//! The server's settings: what `quorum serve` flags and a `quorum.toml` file hold, with defaults,
//! validated once. The `[engine]` table is the core's [`quorum::EngineOptions`] document (model
//! options, cache, fusion, ...), so the server configures the engine exactly as the bindings do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use quorum::{EngineOptions, Error, Result};

/// Everything `quorum serve` runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The quorum home (models, ensembles, state).
    pub home: PathBuf,
    pub listen: SocketAddr,
    /// `SCOPE TOKEN` lines (`predict` or `admin`), `#` comments. Tokens may also come from
    /// `QUORUM_ADMIN_TOKENS` / `QUORUM_PREDICT_TOKENS` (comma-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<PathBuf>,
    /// Serve without any token on a non-loopback address (refused otherwise).
    pub insecure: bool,
    /// Ensembles loaded before the server reports ready (default: every ensemble in the home).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ensembles: Option<Vec<String>>,
    pub limits: Limits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    pub log: LogConfig,
    /// The engine's options: the same document as Python's keyword arguments / Node's options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<toml::Table>,
    pub alerts: AlertsConfig,
    /// How often the status page's history is sampled (720 points are kept: an hour at 5 s).
    pub status_sample_ms: u64,
}

/// The in-process alert rules and where notifications go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// A rule file in the story's YAML form (default: the story's four rules, built in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<PathBuf>,
    /// How often the rules are evaluated.
    pub interval_ms: u64,
    /// `http://` URLs that receive notifications in Alertmanager's webhook format (a receiver, or
    /// Alertmanager-compatible relays). Not printed by `--print-config` in full: only their hosts.
    pub webhooks: Vec<String>,
    /// Per attempt; failed deliveries are retried with doubling backoff.
    pub webhook_timeout_ms: u64,
    pub webhook_attempts: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            rules: None,
            interval_ms: 1_000,
            webhooks: Vec::new(),
            webhook_timeout_ms: 5_000,
            webhook_attempts: 6,
        }
    }
}

/// Bounds on every input and on the server's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body outside model uploads (413 beyond).
    pub max_body_bytes: usize,
    /// Largest model upload.
    pub max_upload_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Most rows in one batch request (REST batch or v2 infer).
    pub max_batch_rows: usize,
    /// Largest request head (request line and headers), bytes (at least 8192).
    pub max_header_bytes: usize,
    /// A request's head must arrive within this (slow-loris connections are cut); also how long an
    /// idle keep-alive connection is kept.
    pub header_timeout_ms: u64,
    /// Whole-request limit (body read and answer), except model uploads and optimize jobs.
    pub request_timeout_ms: u64,
    pub upload_timeout_ms: u64,
    /// Open connections; beyond it new connections are closed at once.
    pub max_connections: usize,
    /// Connections the kernel may hold before they are accepted (capped by net.core.somaxconn).
    pub listen_backlog: u32,
    /// Prediction requests running at once (the engine's work is CPU-bound: about the core count).
    pub max_concurrent: usize,
    /// Prediction requests waiting for a slot; beyond it `503 overloaded` with `Retry-After` at once.
    pub max_queue: usize,
    /// A request that waited this long for a slot is refused with 503 rather than served late.
    pub max_queue_wait_ms: u64,
    /// After SIGTERM/SIGINT: how long the server keeps accepting, answering with `Connection: close`
    /// and readiness off, so load balancers and keep-alive clients move away before it stops listening.
    pub shutdown_drain_ms: u64,
    /// Then how long in-flight requests may take to finish before connections are dropped.
    pub shutdown_grace_ms: u64,
    /// Optimize requests answer 202 with a job when they run longer than this.
    pub sync_job_wait_ms: u64,
}

/// HTTPS with rustls: PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// error, warn, info, debug (one line per request) or trace.
    pub level: String,
    /// text or json.
    pub format: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            home: PathBuf::from("./quorum-home"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: None,
            insecure: false,
            ensembles: None,
            limits: Limits::default(),
            tls: None,
            log: LogConfig::default(),
            engine: None,
            alerts: AlertsConfig::default(),
            status_sample_ms: 5_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            max_body_bytes: 4 << 20,
            max_upload_bytes: 256 << 20,
            max_json_depth: 32,
            max_batch_rows: 10_000,
            max_header_bytes: 16 << 10,
            header_timeout_ms: 30_000,
            request_timeout_ms: 30_000,
            upload_timeout_ms: 300_000,
            max_connections: 20_000,
            listen_backlog: 4096,
            max_concurrent: (cores * 2).max(4),
            max_queue: 16_384,
            max_queue_wait_ms: 1_000,
            shutdown_drain_ms: 1_000,
            shutdown_grace_ms: 10_000,
            sync_job_wait_ms: 3_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

impl ServerConfig {
    /// Reads a `quorum.toml`; keys absent from it keep their defaults.
    pub fn from_file(path: &Path) -> Result<ServerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        ServerConfig::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn from_toml(text: &str) -> Result<ServerConfig> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// The effective settings as TOML (what `quorum serve --print-config` prints; no secrets: tokens
    /// live in their own file).
    pub fn to_toml(&self) -> Result<String> {
        let mut shown = self.clone();
        // A webhook's path or query may hold a secret: printed as scheme://host/….
        shown.alerts.webhooks = shown.alerts.webhooks.iter().map(|u| crate::alert_rules::redact(u)).collect();
        // The database URL may carry a password.
        if let Some(toml::Value::String(url)) = shown.engine.as_mut().and_then(|e| e.get_mut("state")) {
            *url = quorum::state::redact_url(url);
        }
        toml::to_string_pretty(&shown).map_err(|e| Error::Config(format!("printing the configuration: {e}")))
    }

    /// Sets `[engine] state` (what `--state` / `QUORUM_STATE` give).
    pub fn set_state(&mut self, url: &quorum::StateUrl) {
        let text = match url {
            quorum::StateUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            quorum::StateUrl::Postgres(url) => url.clone(),
        };
        self.engine.get_or_insert_with(Default::default).insert("state".into(), toml::Value::String(text));
    }

    /// The engine options document, parsed by the core.
    pub fn engine_options(&self) -> Result<EngineOptions> {
        let document = match &self.engine {
            Some(table) => serde_json::to_value(table).map_err(|e| Error::json("engine options", e))?,
            None => serde_json::Value::Null,
        };
        EngineOptions::from_json(document)
    }

    /// Checks what can be checked before anything starts.
    pub fn validate(&self) -> Result<()> {
        let l = &self.limits;
        let positive = [
            ("max_body_bytes", l.max_body_bytes as u64),
            ("max_upload_bytes", l.max_upload_bytes as u64),
            ("max_json_depth", l.max_json_depth as u64),
            ("max_batch_rows", l.max_batch_rows as u64),
            ("header_timeout_ms", l.header_timeout_ms),
            ("request_timeout_ms", l.request_timeout_ms),
            ("upload_timeout_ms", l.upload_timeout_ms),
            ("max_connections", l.max_connections as u64),
            ("max_concurrent", l.max_concurrent as u64),
            ("max_queue_wait_ms", l.max_queue_wait_ms),
            ("status_sample_ms", self.status_sample_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("limits.{name} must be above 0")));
        }
        if l.max_header_bytes < 8192 {
            return Err(Error::Config("limits.max_header_bytes must be at least 8192".into()));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return Err(Error::Config(format!("log.level {:?}: error, warn, info, debug or trace", self.log.level)));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(Error::Config(format!("log.format {:?}: text or json", self.log.format)));
        }
        self.engine_options()?;
        if self.alerts.interval_ms == 0 || self.alerts.webhook_attempts == 0 {
            return Err(Error::Config("alerts.interval_ms and alerts.webhook_attempts must be above 0".into()));
        }
        for url in &self.alerts.webhooks {
            crate::alert_rules::WebhookUrl::parse(url)?;
        }
        crate::alert_rules::load_rules(self.alerts.rules.as_deref())?;
        Ok(())
    }
}

/// Milliseconds from the configuration as a [`Duration`].
pub(crate) fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config = ServerConfig::from_toml(
            "listen = \"127.0.0.1:9000\"\n[limits]\nmax_batch_rows = 5\n[engine]\ncache_capacity = 100\nfusion = false\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.max_batch_rows, 5);
        assert_eq!(config.limits.max_body_bytes, Limits::default().max_body_bytes);
        let engine = config.engine_options().unwrap();
        assert_eq!(engine.cache_capacity, Some(100));
        assert_eq!(engine.fusion, Some(false));
        config.validate().unwrap();
    }

    #[test]
    fn printed_settings_read_back_the_same() {
        let config = ServerConfig::from_toml("[engine]\ncache_capacity = 10\n").unwrap();
        let printed = config.to_toml().unwrap();
        assert_eq!(ServerConfig::from_toml(&printed).unwrap(), config);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(ServerConfig::from_toml("listne = \"x\"").is_err());
        let zero = ServerConfig::from_toml("[limits]\nmax_concurrent = 0\n").unwrap();
        assert!(zero.validate().unwrap_err().to_string().contains("max_concurrent"));
        let engine = ServerConfig::from_toml("[engine]\nfusoin = true\n").unwrap();
        assert_eq!(engine.validate().unwrap_err().code(), "json");
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    #[test]
    fn the_readme_s_example_configuration_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("a toml block in the README") + "```toml\n".len();
        let block = &readme[start..start + readme[start..].find("```").expect("its end")];
        let config = ServerConfig::from_toml(block).unwrap();
        config.validate().unwrap();
        assert_eq!(config.limits.max_batch_rows, 1000);
        assert_eq!(config.engine_options().unwrap().cache_capacity, Some(10_000));
    }
}
