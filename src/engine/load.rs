//! Creating, loading and reloading ensembles: members resolved against the registry and checked
//! (one task, strategies that fit it), loaded models shared between ensembles, what a reload keeps
//! (learning, last good answers), state resumed from the home, and the hot swap of a member's
//! default version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::coalesce::{QueueSpec, Queues};
use super::counters::EnsembleTelemetry;
use super::loaded::{LastGood, LoadedEnsemble};
use super::member::{LoadedModel, Member};
use super::route::EnsembleSlot;
use super::{EnsembleHandle, InferenceEngine};
use crate::adaptive::Learning;
use crate::ensemble::EnsembleConfig;
use crate::error::{Error, Result};
use crate::features::Schema;
use crate::prediction::Name;
use crate::registry::{ModelMetadata, VersionSpec};
use crate::state::inference_log::LogContext;
use crate::state::{Flush, WeightsRow};
use crate::strategy::normalise_weights;
use crate::tracking::EnsembleKey;

/// How many rows' last good predictions an ensemble with `serve_stale` keeps.
const LAST_GOOD_ROWS: usize = 10_000;

impl InferenceEngine {
    /// Validates `config` against the registry, saves it as the ensemble's next version and loads it.
    ///
    /// # Errors
    ///
    /// `config` for an invalid configuration; `not_found` for a member or fallback model (or version) that is not
    /// registered; `model_load` when a member cannot be loaded; `io` when it cannot be saved.
    pub fn create_ensemble(&self, config: EnsembleConfig) -> Result<EnsembleConfig> {
        config.validate()?;
        self.check_members(&config)?;
        let saved = self.inner.ensemble_store.save(config)?;
        let handle = self.load_config(saved.clone())?;
        if let Some((store, _)) = &self.inner.state {
            // The first row of the weight history: the configured weights.
            let loaded = handle.slot.load();
            let key = &loaded.key;
            if let Some(row) = weights_row(key, true) {
                store.write(&Flush { weights: vec![row.1], ..Default::default() })?;
            }
        }
        self.announce("ensemble", &saved.name, None)?;
        Ok(saved)
    }

    /// Validates `config` against the registry and saves it as the ensemble's next version without
    /// making it active: the active version keeps serving (pinned), and the new one can be the
    /// treatment of an experiment ([`InferenceEngine::start_experiment`]) before any request reaches it.
    ///
    /// # Errors
    ///
    /// As [`InferenceEngine::create_ensemble`].
    pub fn create_ensemble_inactive(&self, config: EnsembleConfig) -> Result<EnsembleConfig> {
        config.validate()?;
        self.check_members(&config)?;
        self.inner.ensemble_store.save_inactive(config)
    }

    fn check_members(&self, config: &EnsembleConfig) -> Result<Vec<ModelMetadata>> {
        let metas = config
            .members
            .iter()
            .map(|m| self.inner.registry.resolve(&m.model, m.version))
            .collect::<Result<Vec<_>>>()?;
        let task = metas[0].task;
        if let Some(other) = metas.iter().find(|m| m.task != task) {
            return Err(Error::Config(format!(
                "ensemble {:?} mixes tasks: {} is {:?} but {} is {:?}",
                config.name, metas[0].name, task, other.name, other.task
            )));
        }
        config.strategy.check_task(task)?;
        for strategy in config.regime.iter().flat_map(|r| r.strategies.values()) {
            strategy.check_task(task)?;
        }
        Ok(metas)
    }

    /// (Re)loads the latest saved version of an ensemble and makes it the one predictions use.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble; `model_load` when a member cannot be loaded.
    pub fn load_ensemble(&self, name: &str) -> Result<EnsembleHandle> {
        let config = self.inner.ensemble_store.get(name)?;
        self.load_config(config)
    }

    fn load_config(&self, config: EnsembleConfig) -> Result<EnsembleHandle> {
        let loaded = self.build_load(config)?;
        let (slot, new) = {
            let mut ensembles = self.inner.ensembles.write().unwrap_or_else(|p| p.into_inner());
            match ensembles.get(&loaded.config.name) {
                // Handles read the slot on every call: from now on they predict with this load, while
                // calls already running finish on the one they started with.
                Some(slot) => {
                    slot.store(loaded);
                    (Arc::clone(slot), false)
                }
                None => {
                    let slot = Arc::new(EnsembleSlot::new(loaded));
                    ensembles.insert(slot.load().config.name.clone(), Arc::clone(&slot));
                    (slot, true)
                }
            }
        };
        if new {
            // An experiment this ensemble had running before a restart continues.
            self.take_up_experiment(&slot)?;
        }
        Ok(EnsembleHandle { engine: self.clone(), slot })
    }

    /// Resolves and loads `config` (resuming what it learnt and tracked) without making it active.
    pub(super) fn build_load(&self, config: EnsembleConfig) -> Result<Arc<LoadedEnsemble>> {
        // What a previous load of this version learnt must be on disk before it is read back.
        self.inner.flush()?;
        let metas = self.check_members(&config)?;
        let fallbacks = config
            .members
            .iter()
            .map(|m| m.fallback.as_ref().map(|f| self.inner.registry.resolve(f, VersionSpec::Default)).transpose())
            .collect::<Result<Vec<_>>>()?;
        if let Some(f) = fallbacks.iter().flatten().find(|f| f.task != metas[0].task) {
            return Err(Error::Config(format!(
                "fallback {} is {:?}, the ensemble is {:?}",
                f.name, f.task, metas[0].task
            )));
        }
        let schema = Schema::new(
            metas.iter().chain(fallbacks.iter().flatten()).map(|m| (m.name.as_str(), m.features.as_slice())),
            &config.non_finite,
        );
        let positions = |meta: &ModelMetadata| {
            meta.features
                .iter()
                .map(|f| schema.index_of(f).ok_or_else(|| Error::Config(format!("feature {f} missing from schema"))))
                .collect::<Result<Vec<_>>>()
        };
        let mut members = Vec::with_capacity(metas.len());
        for (meta, fallback) in metas.into_iter().zip(fallbacks) {
            let indices = positions(&meta)?;
            let fallback = match fallback {
                Some(f) => {
                    let indices = positions(&f)?;
                    Some((self.model(f)?, indices))
                }
                None => None,
            };
            members.push(Member { model: self.model(meta)?, indices, fallback });
        }
        let weights = normalise_weights(config.weights.as_deref(), members.len())?;
        let task = members[0].model.meta.task;
        let regime = match &config.regime {
            Some(r) => {
                let column = schema.index_of(&r.detector.feature).ok_or_else(|| {
                    Error::Config(format!(
                        "ensemble {:?}: the regime feature {:?} is not an input of any member",
                        config.name, r.detector.feature
                    ))
                })?;
                Some((r, column))
            }
            None => None,
        };
        // A reload of the same ensemble version (hot swap of a member's default version) keeps what it
        // learnt and its last good predictions; a new version starts from its configuration.
        let previous = self.loaded_ensemble(&config.name).filter(|p| {
            p.config.version == config.version
                && p.members.iter().map(|m| &m.model.name).eq(members.iter().map(|m| &m.model.name))
        });
        let learning = match &previous {
            Some(p) => Arc::clone(&p.key.learning),
            None => Arc::new(Learning::new(task, config.strategy, weights, regime, config.online, config.meta)),
        };
        let last_good = match &previous {
            Some(p) => p.last_good.clone(),
            None => config.serve_stale.then(|| Arc::new(LastGood::new(LAST_GOOD_ROWS))),
        };
        let fused = self.fuse_members(&members, &schema, &config.name);
        let telemetry = match self.loaded_ensemble(&config.name) {
            Some(current) => Arc::clone(&current.telemetry),
            None => Arc::new(EnsembleTelemetry::new()),
        };
        let schema_id = schema.fingerprint();
        let member_names: Vec<Arc<str>> = members.iter().map(|m| Arc::from(m.model.name.as_str())).collect();
        let log_context = Arc::new(LogContext::new(&config.name, config.version, schema.names(), &member_names));
        static LOADS: AtomicU64 = AtomicU64::new(1);
        let (engine, width) = (Arc::downgrade(&self.inner), schema.names().len());
        let quick = self.inner.async_inline_limit;
        let loaded = Arc::new_cyclic(|me: &std::sync::Weak<LoadedEnsemble>| LoadedEnsemble {
            id: LOADS.fetch_add(1, Ordering::Relaxed),
            name: Name::new(&config.name),
            key: EnsembleKey {
                name: Arc::from(config.name.as_str()),
                version: config.version,
                members: member_names.iter().map(Arc::clone).collect(),
                member_versions: members.iter().map(|m| m.model.meta.version).collect(),
                learning,
            },
            task,
            schema,
            batched: members.iter().any(|m| m.model.batching.is_some()),
            queues: Queues::new(QueueSpec { name: &config.name, width, quick, engine, ens: me.clone() }, &members),
            fused,
            schema_id,
            members,
            config,
            last_good,
            telemetry,
            log_context,
        });
        let shared = self.inner.shared.is_some();
        if let (Some((store, _)), None, false) = (&self.inner.state, &previous, shared) {
            // Resume what this ensemble version had learnt and tracked before a restart. (With a
            // shared state the outcome log is replayed instead: the weights are a function of it.)
            let key = &loaded.key;
            if let Some((_, state)) = store.learner_state(&key.name, key.version)? {
                key.learning.restore(&state);
            }
            if let (Some(tracker), Some(state)) = (&self.inner.tracker, store.tracking_state(&key.name, key.version)?) {
                tracker.restore(key, &state);
            }
        }
        Ok(loaded)
    }

    fn loaded_ensemble(&self, name: &str) -> Option<Arc<LoadedEnsemble>> {
        self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(name).map(|slot| slot.load_full())
    }

    /// Makes `version` the default version of `model` and moves every loaded ensemble that uses the
    /// model's default version onto it (a hot swap): new predictions use the new version at once,
    /// predictions already running finish on the old one, none is dropped or failed. Returns the
    /// ensembles reloaded.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `model_load` when a reloaded ensemble cannot load it (the old
    /// version keeps serving).
    pub fn set_default_version(&self, model: &str, version: u32) -> Result<Vec<String>> {
        let reloaded = self.set_default_version_local(model, version)?;
        self.announce("model", model, Some(version))?;
        Ok(reloaded)
    }

    /// [`InferenceEngine::set_default_version`] in this process only (a replica following another).
    pub(super) fn set_default_version_local(&self, model: &str, version: u32) -> Result<Vec<String>> {
        self.inner.registry.set_default(model, version)?;
        let affected: Vec<EnsembleConfig> = {
            let ensembles = self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner());
            ensembles
                .values()
                .map(|slot| slot.load_full())
                .filter(|e| {
                    e.config.members.iter().any(|m| {
                        (m.model == model && m.version == VersionSpec::Default) || m.fallback.as_deref() == Some(model)
                    })
                })
                .map(|e| e.config.clone())
                .collect()
        };
        let mut reloaded = Vec::with_capacity(affected.len());
        for config in affected {
            reloaded.push(config.name.clone());
            self.load_config(config)?;
        }
        Ok(reloaded)
    }

    /// Makes `version` the active version of ensemble `name` (pinned in the home until a new version
    /// is created) and loads it in place of the current one: a hot swap, as for a model's default.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble or version; `model_load` as for a load.
    pub fn set_default_ensemble_version(&self, name: &str, version: u32) -> Result<EnsembleHandle> {
        let handle = self.set_default_ensemble_version_local(name, version)?;
        self.announce("ensemble", name, Some(version))?;
        Ok(handle)
    }

    /// [`InferenceEngine::set_default_ensemble_version`] in this process only.
    pub(super) fn set_default_ensemble_version_local(&self, name: &str, version: u32) -> Result<EnsembleHandle> {
        let config = self.inner.ensemble_store.get_version(name, version)?;
        self.check_members(&config)?;
        self.inner.ensemble_store.set_default(name, version)?;
        self.load_config(config)
    }

    fn model(&self, meta: ModelMetadata) -> Result<Arc<LoadedModel>> {
        let key = (meta.name.clone(), meta.version);
        if let Some(model) = self.inner.lock_models().loaded.get(&key).and_then(Weak::upgrade) {
            return Ok(model);
        }
        // Loaded outside the lock: building sessions takes milliseconds.
        let options = self.inner.options_of(&meta.name);
        let model = Arc::new(LoadedModel::load(
            &self.inner.runtime,
            &self.inner.registry,
            meta,
            self.inner.breaker,
            options,
            self.inner.native,
        )?);
        let mut models = self.inner.lock_models();
        if let Some(fault) = models.faults.get(&key.0) {
            model.inject(*fault);
        }
        if models.forced_fallback.contains(&key.0) {
            model.forced_fallback.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        models.loaded.retain(|_, m| m.strong_count() > 0);
        match models.loaded.get(&key).and_then(Weak::upgrade) {
            // Another thread loaded it meanwhile: share theirs.
            Some(theirs) => Ok(theirs),
            None => {
                models.loaded.insert(key, Arc::downgrade(&model));
                Ok(model)
            }
        }
    }

    /// A handle on a loaded ensemble (loading it from the home on first use). Predicting through a
    /// handle skips the by-name lookup.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble; `model_load` when it cannot be loaded.
    pub fn ensemble(&self, name: &str) -> Result<EnsembleHandle> {
        let found = self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(name).map(Arc::clone);
        if let Some(slot) = found {
            return Ok(EnsembleHandle { engine: self.clone(), slot });
        }
        // One first load at a time: two racing loads would each start their own learning, and the
        // outcomes taught to the one replaced would be lost. A caller that waited takes the load
        // made meanwhile.
        let _loading = self.inner.loading.lock().unwrap_or_else(|p| p.into_inner());
        let found = self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(name).map(Arc::clone);
        match found {
            Some(slot) => Ok(EnsembleHandle { engine: self.clone(), slot }),
            None => self.load_ensemble(name),
        }
    }
}

/// The weight-history row of `key`'s learning now, with its epoch; `None` when nothing changed since
/// the last flush (unless `force`).
pub(super) fn weights_row(key: &EnsembleKey, force: bool) -> Option<(u64, WeightsRow)> {
    let snapshot = key.learning.snapshot(&key.members, force)?;
    let row = WeightsRow {
        ensemble: key.name.to_string(),
        version: key.version,
        strategy: snapshot.strategy.to_string(),
        weights: snapshot.weights,
        epoch: snapshot.epoch,
        learner_state: Some(snapshot.state),
    };
    Some((snapshot.epoch, row))
}
