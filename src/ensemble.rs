//! Ensemble configuration: named, versioned, stored as `<home>/ensembles/<name>/<version>.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::adaptive::RegimeConfig;
use crate::error::{Error, Result};
use crate::features::NonFinitePolicy;
use crate::meta::MetaOptions;
use crate::online::OnlineOptions;
use crate::registry::{Registry, VersionSpec};
use crate::store;
use crate::strategy::{normalise_weights, StrategyKind};

/// One member: a registered model and which of its versions. In JSON either the object
/// `{"model", "version"?, "fallback"?}` or the string `"model"` / `"model@version"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MemberDocument")]
pub struct MemberSpec {
    /// The model's name in the registry.
    pub model: String,
    /// Which version: the model's default (followed through hot swaps) or a fixed one.
    #[serde(default)]
    pub version: VersionSpec,
    /// A model (its default version) that stands in when this member fails or its breaker is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The JSON forms of [`MemberSpec`].
#[derive(Deserialize)]
#[serde(untagged)]
enum MemberDocument {
    Text(String),
    Full(MemberFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberFields {
    model: String,
    #[serde(default)]
    version: VersionSpec,
    #[serde(default)]
    fallback: Option<String>,
}

impl TryFrom<MemberDocument> for MemberSpec {
    type Error = Error;
    fn try_from(document: MemberDocument) -> Result<MemberSpec> {
        match document {
            MemberDocument::Text(text) => text.parse(),
            MemberDocument::Full(MemberFields { model, version, fallback }) => {
                Ok(MemberSpec { model, version, fallback })
            }
        }
    }
}

impl FromStr for MemberSpec {
    type Err = Error;
    /// Parses `model` or `model@version`.
    fn from_str(s: &str) -> Result<Self> {
        let (model, version) = match s.split_once('@') {
            Some((m, v)) => (m, v.parse()?),
            None => (s, VersionSpec::Default),
        };
        store::validate_name("model name", model)?;
        Ok(MemberSpec { model: model.to_string(), version, fallback: None })
    }
}

/// A named, versioned ensemble.
///
/// Built in code or read from the same JSON the CLI, the server and the bindings take:
///
/// ```
/// use quorum::{EnsembleConfig, StrategyKind};
///
/// # fn main() -> quorum::Result<()> {
/// let config = EnsembleConfig::new("market", ["technical".parse()?, "fundamental@2".parse()?, "sentiment".parse()?])
///     .with_strategy(StrategyKind::SoftVote)
///     .with_weights(vec![0.4, 0.4, 0.2])
///     .with_min_members(2);
/// config.validate()?;
///
/// let same = EnsembleConfig::from_json(br#"{"name": "market", "members": ["technical", "fundamental@2", "sentiment"],
///     "strategy": "soft-vote", "weights": [0.4, 0.4, 0.2], "min_members": 2}"#)?;
/// assert_eq!(same.members, config.members);
/// assert_eq!(same.required_members(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// The ensemble's name.
    pub name: String,
    /// Assigned when saved: 1, 2, ...
    #[serde(default)]
    pub version: u32,
    /// The members, in the order they run and are reported.
    pub members: Vec<MemberSpec>,
    /// How members' predictions are combined (default soft voting).
    #[serde(default)]
    pub strategy: StrategyKind,
    /// Raw weights, one per member (normalised when the ensemble loads); equal when absent.
    #[serde(default)]
    pub weights: Option<Vec<f32>>,
    /// What a NaN or infinite feature does: refused (default) or imputed.
    #[serde(default, alias = "nonFinite")]
    pub non_finite: NonFinitePolicy,
    /// How many members must answer for a prediction to be returned (default: a majority,
    /// `members / 2 + 1`). Members that fail at run time are left out, reported in the prediction's
    /// contributions, and the others' weights renormalised.
    #[serde(default, alias = "minMembers")]
    pub min_members: Option<usize>,
    /// Hedge / BOA settings (η, α, weight floor).
    #[serde(default)]
    pub online: OnlineOptions,
    /// Stacking / blending settings (window, refit schedule, minimum rows, L2).
    #[serde(default)]
    pub meta: MetaOptions,
    /// Market regimes: detection, and a strategy per regime.
    #[serde(default)]
    pub regime: Option<RegimeConfig>,
    /// Below `min_members`, answer a single-row request with the last good prediction for the same
    /// feature values, marked `stale`, instead of failing (when there is one; the last 10 000 rows).
    #[serde(default, alias = "serveStale", skip_serializing_if = "std::ops::Not::not")]
    pub serve_stale: bool,
    /// How long the members may take for one request, in milliseconds (default
    /// [`DEFAULT_LATENCY_BUDGET_MS`]). A member still running when it is spent is cut off (ONNX
    /// Runtime's terminate flag) and counted as a slow failure by its breaker; members not started
    /// by then are skipped; the answer comes from those that answered if they make the quorum,
    /// marked degraded. Members run in configuration order: list slow ones (large networks) last.
    #[serde(default, alias = "latencyBudgetMs", skip_serializing_if = "Option::is_none")]
    pub latency_budget_ms: Option<f64>,
    /// When this version was saved (RFC 3339 UTC; set by the store).
    #[serde(default)]
    pub created_at: String,
}

/// The default latency budget of an ensemble's members, in milliseconds: the story's 100 ms, past
/// which an answer is no use to the trading engine that asked (set it lower for tighter loops).
pub const DEFAULT_LATENCY_BUDGET_MS: f64 = 100.0;

impl EnsembleConfig {
    /// Equal-weight soft vote over `members`.
    pub fn new(name: impl Into<String>, members: impl IntoIterator<Item = MemberSpec>) -> EnsembleConfig {
        EnsembleConfig {
            name: name.into(),
            version: 0,
            members: members.into_iter().collect(),
            strategy: StrategyKind::SoftVote,
            weights: None,
            non_finite: NonFinitePolicy::Refuse,
            min_members: None,
            online: OnlineOptions::default(),
            meta: MetaOptions::default(),
            regime: None,
            serve_stale: false,
            latency_budget_ms: None,
            created_at: String::new(),
        }
    }

    /// See [`EnsembleConfig::latency_budget_ms`].
    pub fn with_latency_budget(mut self, budget: std::time::Duration) -> Self {
        self.latency_budget_ms = Some(budget.as_secs_f64() * 1e3);
        self
    }

    /// The members' latency budget per request.
    pub fn latency_budget(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.latency_budget_ms.unwrap_or(DEFAULT_LATENCY_BUDGET_MS) / 1e3)
    }

    /// Sets the combining strategy.
    #[must_use]
    pub fn with_strategy(mut self, strategy: StrategyKind) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets one raw weight per member, in member order (normalised at load).
    #[must_use]
    pub fn with_weights(mut self, weights: Vec<f32>) -> Self {
        self.weights = Some(weights);
        self
    }

    /// Sets the policy for NaN and infinite feature values.
    #[must_use]
    pub fn with_non_finite(mut self, policy: NonFinitePolicy) -> Self {
        self.non_finite = policy;
        self
    }

    /// Detects market regimes from the return feature `regime.detector.feature`.
    #[must_use]
    pub fn with_regimes(mut self, regime: RegimeConfig) -> Self {
        self.regime = Some(regime);
        self
    }

    /// Sets the online strategies' settings (η, α, weight floor).
    #[must_use]
    pub fn with_online(mut self, online: OnlineOptions) -> Self {
        self.online = online;
        self
    }

    /// Sets stacking's and blending's settings.
    #[must_use]
    pub fn with_meta(mut self, meta: MetaOptions) -> Self {
        self.meta = meta;
        self
    }

    /// Sets how many members must answer (quorum).
    #[must_use]
    pub fn with_min_members(mut self, min: usize) -> Self {
        self.min_members = Some(min);
        self
    }

    /// Parses and validates an ensemble JSON document.
    ///
    /// # Errors
    ///
    /// `json` when the document does not parse (unknown keys are refused); `config` when it is invalid.
    pub fn from_json(bytes: &[u8]) -> Result<EnsembleConfig> {
        let config: EnsembleConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::json("ensemble configuration", e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that does not need the registry.
    ///
    /// # Errors
    ///
    /// `config` naming the first problem (no members, a weight per member, quorum above the members, ...);
    /// `invalid_name` for a bad name.
    pub fn validate(&self) -> Result<()> {
        store::validate_name("ensemble name", &self.name)?;
        if self.members.is_empty() {
            return Err(Error::Config(format!("ensemble {:?} has no members", self.name)));
        }
        for (i, m) in self.members.iter().enumerate() {
            store::validate_name("model name", &m.model)?;
            if self.members[..i].contains(m) {
                return Err(Error::Config(format!("ensemble {:?} lists {}@{} twice", self.name, m.model, m.version)));
            }
        }
        normalise_weights(self.weights.as_deref(), self.members.len())?;
        if let Some(min) = self.min_members {
            if min == 0 || min > self.members.len() {
                return Err(Error::Config(format!(
                    "min_members is {min} but the ensemble has {} members",
                    self.members.len()
                )));
            }
        }
        self.online.validate()?;
        let meta = &self.meta;
        if meta.window == 0
            || meta.refit_every == 0
            || meta.min_rows == 0
            || meta.min_rows > meta.window
            || meta.l2.is_nan()
            || meta.l2 < 0.0
        {
            return Err(Error::Config(format!(
                "meta options need window, refit_every, min_rows ≥ 1, min_rows ≤ window and l2 ≥ 0: {meta:?}"
            )));
        }
        if let Some(r) = &self.regime {
            r.detector.validate()?;
        }
        if let Some(ms) = self.latency_budget_ms {
            if !(ms > 0.0 && ms <= 60_000.0) {
                return Err(Error::Config(format!("latency_budget_ms must be above 0 and at most 60000, not {ms}")));
            }
        }
        if let NonFinitePolicy::Impute { value, per_feature } = &self.non_finite {
            if !value.is_finite() || per_feature.values().any(|v| !v.is_finite()) {
                return Err(Error::Config("imputed values must be finite".into()));
            }
        }
        Ok(())
    }

    /// How many members must answer: `min_members`, or a majority when unset.
    pub fn required_members(&self) -> usize {
        self.min_members.unwrap_or(self.members.len() / 2 + 1)
    }
}

/// The file in an ensemble's directory that pins its active version.
const DEFAULT_FILE: &str = "default";

/// Ensemble configurations on disk.
#[derive(Debug, Clone)]
pub struct EnsembleStore {
    root: PathBuf,
}

impl EnsembleStore {
    /// The ensembles of `home`; nothing is created until a version is saved, so that reading a
    /// mistyped home does not make one.
    ///
    /// # Errors
    ///
    /// `io` when the store cannot be read or created.
    pub fn open(home: impl AsRef<Path>) -> Result<EnsembleStore> {
        Ok(EnsembleStore { root: home.as_ref().join("ensembles") })
    }

    /// Removes one version of `model`, or all (`version` `None`), from `registry` (this home's).
    ///
    /// # Errors
    /// `in_use`, naming them, when active ensembles would break (see [`EnsembleStore::users_of`]),
    /// unless `force`; `not_found` when there is no such model or version.
    pub fn remove_model(&self, registry: &Registry, model: &str, version: Option<u32>, force: bool) -> Result<()> {
        if !force {
            let remaining: Vec<u32> = registry.versions(model)?.into_iter().filter(|v| Some(*v) != version).collect();
            let users = self.users_of(model, version, &remaining)?;
            if !users.is_empty() {
                return Err(Error::InUse {
                    what: if version.is_some() { "model version" } else { "model" },
                    name: version.map_or_else(|| model.to_string(), |v| format!("{model}@{v}")),
                    users: format!("the ensembles {}", users.join(", ")),
                });
            }
        }
        registry.remove(model, version)
    }

    /// The active ensembles that removing `model` (one version, or all when `removed` is `None`)
    /// would break, as `name@version`: those naming it as a member or a fallback, at that exact
    /// version, or at its default version when no other version remains.
    ///
    /// # Errors
    ///
    /// `io` or `json` when a saved configuration cannot be read.
    pub fn users_of(&self, model: &str, removed: Option<u32>, remaining: &[u32]) -> Result<Vec<String>> {
        let breaks = |spec: &MemberSpec| {
            spec.model == model
                && match (removed, spec.version) {
                    (None, _) => true,
                    (Some(v), VersionSpec::Exact(pinned)) => pinned == v,
                    (Some(_), VersionSpec::Default) => remaining.is_empty(),
                }
        };
        let mut users = Vec::new();
        for name in self.list()? {
            let config = self.get(&name)?;
            let uses = config.members.iter().any(|m| {
                breaks(m)
                    || m.fallback.as_deref().and_then(|f| f.parse::<MemberSpec>().ok()).is_some_and(|f| breaks(&f))
            });
            if uses {
                users.push(format!("{}@{}", config.name, config.version));
            }
        }
        Ok(users)
    }

    fn dir(&self, name: &str) -> Result<PathBuf> {
        store::validate_name("ensemble name", name)?;
        Ok(self.root.join(name))
    }

    /// Saves `config` as the next version of its name and returns it with version and time filled in.
    ///
    /// # Errors
    ///
    /// `config` or `invalid_name` for an invalid configuration; `io` when it cannot be written.
    pub fn save(&self, config: EnsembleConfig) -> Result<EnsembleConfig> {
        self.save_as(config, true)
    }

    /// Saves `config` as the next version while the active version stays active (pinned): a
    /// candidate to compare in an experiment before any request reaches it.
    ///
    /// # Errors
    ///
    /// As [`EnsembleStore::save`].
    pub fn save_inactive(&self, config: EnsembleConfig) -> Result<EnsembleConfig> {
        self.save_as(config, false)
    }

    fn save_as(&self, mut config: EnsembleConfig, activate: bool) -> Result<EnsembleConfig> {
        config.validate()?;
        if !activate {
            // Pinned before the new version exists, so that it is never the active one, even after a crash.
            if let Ok(active) = self.default_version(&config.name) {
                self.set_default(&config.name, active)?;
            }
        }
        let dir = self.dir(&config.name)?;
        store::create_dir_all(&dir)?;
        store::clear_abandoned(&dir);
        config.created_at = store::now_rfc3339();
        // Another writer (thread or process) may take the version we picked: each version file is
        // created only if absent, so the loser picks the next number instead of overwriting.
        let mut attempts = 0;
        loop {
            let last = self.versions(&config.name)?.last().copied().unwrap_or(0);
            config.version = crate::registry::next_version("ensemble", &config.name, last)?;
            let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::json("ensemble configuration", e))?;
            if store::create_new_atomic(&dir.join(format!("{}.json", config.version)), &json)? {
                break;
            }
            attempts += 1;
            if attempts == 64 {
                return Err(Error::AlreadyExists {
                    what: "ensemble version",
                    name: format!("{}@{} (64 attempts raced)", config.name, config.version),
                });
            }
        }
        if !activate {
            return Ok(config);
        }
        // A new version is the active one: a pin to an older version no longer applies.
        match fs::remove_file(dir.join(DEFAULT_FILE)) {
            Ok(()) => store::sync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("unpinning {}", config.name), e)),
        }
        Ok(config)
    }

    /// Pins the version [`EnsembleStore::get`] returns (the active one) until a new version is saved.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble or version; `io` when it cannot be written.
    pub fn set_default(&self, name: &str, version: u32) -> Result<()> {
        self.get_version(name, version)?;
        store::write_atomic(&self.dir(name)?.join(DEFAULT_FILE), format!("{version}\n").as_bytes())
    }

    /// The active version: the pinned one, else the latest.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble.
    pub fn default_version(&self, name: &str) -> Result<u32> {
        let path = self.dir(name)?.join(DEFAULT_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u32>()
                .map_err(|_| Error::Config(format!("{} holds {:?}, not a version", path.display(), text.trim()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.versions(name)?.last().copied().ok_or_else(|| Error::not_found("ensemble", name))
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// The saved versions of ensemble `name`, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (code `not_found`) when there is no such ensemble; [`Error::Io`] when the store cannot be
    /// read.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>> {
        let Ok(entries) = fs::read_dir(self.dir(name)?) else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse::<u32>().ok()
            })
            .filter(|v| *v > 0)
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The active version of `name`: the one pinned by [`EnsembleStore::set_default`], else the latest.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble; `io` or `json` when its file cannot be read.
    pub fn get(&self, name: &str) -> Result<EnsembleConfig> {
        let version = self.default_version(name)?;
        self.get_version(name, version)
    }

    /// Version `version` of ensemble `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (code `not_found`) when it does not exist; [`Error::Json`] or [`Error::Io`] when its file
    /// cannot be read.
    pub fn get_version(&self, name: &str, version: u32) -> Result<EnsembleConfig> {
        let path = self.dir(name)?.join(format!("{version}.json"));
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found("ensemble version", format!("{name}@{version}")),
            _ => Error::io(format!("reading {}", path.display()), e),
        })?;
        let config = EnsembleConfig::from_json(&bytes)?;
        if config.name != name || config.version != version {
            return Err(Error::Config(format!("{} describes {}@{}", path.display(), config.name, config.version)));
        }
        Ok(config)
    }

    /// Names of all ensembles with at least one version.
    ///
    /// # Errors
    /// `not_found` when the home itself does not exist.
    pub fn list(&self) -> Result<Vec<String>> {
        let Some(entries) = store::read_dir_in_home(&self.root)? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| store::validate_name("ensemble name", n).is_ok())
            .collect();
        names.retain(|n| self.versions(n).is_ok_and(|v| !v.is_empty()));
        names.sort();
        Ok(names)
    }
}
