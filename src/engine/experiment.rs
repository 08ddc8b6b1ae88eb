//! A/B experiments inside the engine: starting one (the control pinned as the ensemble's active
//! version, the treatment loaded beside it), crediting outcomes to the arm that predicted, applying
//! decisions (a step's new split, a rollback, a promotion as a hot swap), the guardrail thread,
//! persisting the state and resuming it after a restart. Routing a request to its arm is
//! `route.rs`; the statistics and rules are [`crate::experiment`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, Weak};
use std::time::Duration;

use super::loaded::LoadedEnsemble;
use super::route::{window, EnsembleSlot, RunningExperiment};
use super::{EngineInner, InferenceEngine};
use crate::error::{Error, Result};
use crate::experiment::{Action, Arm, Experiment, ExperimentConfig, ExperimentState, ExperimentStatus, BUCKETS};

impl InferenceEngine {
    /// Starts an A/B experiment between two versions of an ensemble (see [`crate::experiment`]):
    /// the control becomes (or stays) the ensemble's active version, the treatment is loaded beside
    /// it, and from now on every prediction of the ensemble is routed to an arm. One experiment runs
    /// per ensemble; names are unique in the home.
    ///
    /// # Errors
    ///
    /// `config` for an invalid configuration, `not_found` for an unknown ensemble or version, `already_exists` when the
    /// ensemble already runs an experiment or the name is taken.
    pub fn start_experiment(&self, config: ExperimentConfig) -> Result<ExperimentStatus> {
        config.validate()?;
        // Without outcomes nothing could be decided.
        self.inner.tracker()?;
        if self.experiment_record(&config.name)?.is_some() {
            return Err(Error::AlreadyExists { what: "experiment", name: config.name.clone() });
        }
        let handle = self.ensemble(&config.ensemble)?;
        if let Some(running) = handle.slot.experiment.load_full() {
            return Err(Error::Config(format!(
                "ensemble {:?} already has experiment {:?}: stop it first",
                config.ensemble, running.name
            )));
        }
        if let Some(store) = self.state_store() {
            if let Some(other) = store.active_experiment(&config.ensemble)? {
                return Err(Error::Config(format!(
                    "ensemble {:?} already has experiment {:?} in the state store: stop it first",
                    config.ensemble, other.0
                )));
            }
        }
        // The treatment must exist and fit before anything changes.
        let treatment = self.build_load(self.inner.ensemble_store.get_version(&config.ensemble, config.treatment)?)?;
        let control = self.set_default_ensemble_version(&config.ensemble, config.control)?.slot.load_full();
        let experiment = Experiment::new(config, control.task)?;
        let running = self.attach(&handle.slot, &control, treatment, experiment)?;
        let status = running.status();
        Ok(status)
    }

    /// Builds the running experiment for `slot` and starts routing and its guardrail thread.
    fn attach(
        &self,
        slot: &Arc<EnsembleSlot>,
        control: &LoadedEnsemble,
        treatment: Arc<LoadedEnsemble>,
        experiment: Experiment,
    ) -> Result<Arc<RunningExperiment>> {
        let first_request_id = self.inner.next_request_ids(0);
        let running = Arc::new(RunningExperiment::new(experiment, control, treatment, first_request_id)?);
        self.inner.persist_experiment(&running.lock())?;
        slot.experiment.store(Some(Arc::clone(&running)));
        self.inner.lock_experiments().push(Arc::clone(&running));
        spawn_guardrails(Arc::downgrade(&self.inner), Arc::downgrade(slot), Arc::clone(&running));
        Ok(running)
    }

    /// Takes up an experiment the state store holds as running or paused for the ensemble just
    /// loaded into `slot` (after a restart); one that cannot resume is stopped with the reason.
    pub(super) fn take_up_experiment(&self, slot: &Arc<EnsembleSlot>) -> Result<()> {
        let Some(store) = self.state_store() else { return Ok(()) };
        let control = slot.load_full();
        let Some((_, document)) = store.active_experiment(&control.config.name)? else { return Ok(()) };
        let mut experiment: Experiment =
            serde_json::from_str(&document).map_err(|e| Error::json("experiments.document", e))?;
        if self.inner.lock_experiments().iter().any(|r| *r.name == *experiment.config.name) {
            return Ok(());
        }
        let resumed = if control.config.version != experiment.config.control {
            Err(Error::Config(format!(
                "the ensemble's active version is {}, not the control {}",
                control.config.version, experiment.config.control
            )))
        } else {
            self.inner
                .ensemble_store
                .get_version(&experiment.config.ensemble, experiment.config.treatment)
                .and_then(|config| self.build_load(config))
        };
        match resumed {
            Ok(treatment) => self.attach(slot, &control, treatment, experiment).map(drop),
            Err(e) => {
                experiment.act(Action::Stopped, &format!("could not resume after a restart: {e}"))?;
                self.inner.persist_experiment(&experiment)
            }
        }
    }

    /// An experiment's status: live when this engine runs it, else as the state store last saw it.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown experiment; `state_lost` or `io` when the state store cannot be read.
    pub fn experiment_status(&self, name: &str) -> Result<ExperimentStatus> {
        if let Some(running) = self.inner.lock_experiments().iter().find(|r| *r.name == *name) {
            return Ok(running.status());
        }
        self.experiment_record(name)?.map(|e| e.status()).ok_or_else(|| Error::not_found("experiment", name))
    }

    /// Every experiment (this engine's and the state store's), by name.
    ///
    /// # Errors
    ///
    /// `state_lost` or `io` when the state store cannot be read.
    pub fn experiments(&self) -> Result<Vec<ExperimentStatus>> {
        let mut list: Vec<ExperimentStatus> = self.inner.lock_experiments().iter().map(|r| r.status()).collect();
        if let Some(store) = self.state_store() {
            for document in store.experiments()? {
                let e: Experiment =
                    serde_json::from_str(&document).map_err(|e| Error::json("experiments.document", e))?;
                if !list.iter().any(|s| s.name == e.config.name) {
                    list.push(e.status());
                }
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// Pauses a running experiment: every request goes to the control and outcomes are not counted
    /// until [`InferenceEngine::resume_experiment`].
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown experiment; `config` when it is not running.
    pub fn pause_experiment(&self, name: &str) -> Result<ExperimentStatus> {
        self.act_on_experiment(name, Action::Paused, "")
    }

    /// Resumes a paused experiment at the step it was paused in.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown experiment; `config` when it is not paused.
    pub fn resume_experiment(&self, name: &str) -> Result<ExperimentStatus> {
        self.act_on_experiment(name, Action::Resumed, "")
    }

    /// Stops an experiment for good: the control stays the active version.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown experiment; `config` when it has already ended.
    pub fn stop_experiment(&self, name: &str, reason: &str) -> Result<ExperimentStatus> {
        self.act_on_experiment(name, Action::Stopped, reason)
    }

    fn act_on_experiment(&self, name: &str, action: Action, reason: &str) -> Result<ExperimentStatus> {
        let running = self.inner.lock_experiments().iter().find(|r| *r.name == *name).cloned();
        match running {
            Some(running) => {
                running.lock().act(action, reason)?;
                self.inner.after_decision(&running, action)?;
                Ok(running.status())
            }
            None => {
                // Not taken up by this engine (its ensemble not loaded yet): act on the stored record.
                let mut e = self.experiment_record(name)?.ok_or_else(|| Error::not_found("experiment", name))?;
                if e.state.is_active() && action != Action::Stopped {
                    // Load the ensemble: that resumes the experiment here, then act on the live one.
                    self.ensemble(&e.config.ensemble)?;
                    if self.inner.lock_experiments().iter().any(|r| *r.name == *name) {
                        return self.act_on_experiment(name, action, reason);
                    }
                }
                e.act(action, reason)?;
                self.inner.persist_experiment(&e)?;
                Ok(e.status())
            }
        }
    }

    fn experiment_record(&self, name: &str) -> Result<Option<Experiment>> {
        if let Some(running) = self.inner.lock_experiments().iter().find(|r| *r.name == *name) {
            return Ok(Some(running.lock().clone()));
        }
        let Some(store) = self.state_store() else { return Ok(None) };
        store
            .experiment(name)?
            .map(|d| serde_json::from_str(&d).map_err(|e| Error::json("experiments.document", e)))
            .transpose()
    }
}

impl EngineInner {
    pub(super) fn lock_experiments(&self) -> MutexGuard<'_, Vec<Arc<RunningExperiment>>> {
        self.experiments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves every experiment this engine routes (their sums move with each outcome).
    pub(super) fn persist_experiments(&self) -> Result<()> {
        let running: Vec<Arc<RunningExperiment>> = self.lock_experiments().clone();
        for r in running {
            let e = r.lock();
            if e.state.is_active() {
                self.persist_experiment(&e)?;
            }
        }
        Ok(())
    }

    /// Writes an experiment's state. Callers hold its lock, so that an older state can never
    /// overwrite a newer decision.
    fn persist_experiment(&self, e: &Experiment) -> Result<()> {
        let Some((store, _)) = &self.state else { return Ok(()) };
        let document = serde_json::to_string(e).map_err(|e| Error::json("experiment state", e))?;
        store.save_experiment(&e.config.name, &e.config.ensemble, e.state.as_str(), &document)
    }

    /// Credits an outcome of request `request_id`, predicted by `version` of `ensemble` as
    /// `prediction`, to the arm that made it (when an experiment routed it).
    pub(super) fn credit_experiment(
        &self,
        request_id: u64,
        ensemble: &str,
        version: u32,
        prediction: f32,
        outcome: f32,
        business_value: Option<f64>,
    ) -> Result<()> {
        let slot = self.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(ensemble).map(Arc::clone);
        let Some(running) = slot.and_then(|s| s.experiment.load_full()) else { return Ok(()) };
        if request_id < running.first_request_id || running.was_paused_at(request_id) {
            return Ok(());
        }
        let action = {
            let mut e = running.lock();
            let arm = if version == e.config.control {
                Arm::Control
            } else if version == e.config.treatment {
                Arm::Treatment
            } else {
                return Ok(());
            };
            let Some(value) = e.metric.value(prediction, outcome, business_value) else { return Ok(()) };
            e.record(arm, value)
        };
        match action {
            Some(action) => self.after_decision(&running, action),
            None => Ok(()),
        }
    }

    /// Applies a decision: the new split, the end of routing, the promotion's hot swap; then saves.
    fn after_decision(&self, running: &Arc<RunningExperiment>, action: Action) -> Result<()> {
        let (split, routing, ensemble) = {
            let e = running.lock();
            (e.split_buckets(), e.state == ExperimentState::Running, e.config.ensemble.clone())
        };
        running.mark_pause(action, self.next_request_ids(0));
        running.split.store(split.min(BUCKETS), Ordering::Relaxed);
        running.routing.store(routing, Ordering::Relaxed);
        let slot = self.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(&ensemble).map(Arc::clone);
        if action == Action::Promoted {
            self.ensemble_store.set_default(&ensemble, running.treatment_version)?;
            if let (Some(slot), Some(treatment)) = (&slot, running.treatment.load_full()) {
                // The treatment's load (with what it learnt during the experiment) becomes the active one.
                slot.store(treatment);
            }
        }
        let state = running.lock();
        let ended = !state.state.is_active();
        if ended {
            // Its sessions go with the last request still running on it.
            running.treatment.store(None);
            if let Some(slot) = &slot {
                let current = slot.experiment.load_full();
                if current.is_some_and(|c| Arc::ptr_eq(&c, running)) {
                    slot.experiment.store(None);
                }
            }
        }
        self.persist_experiment(&state)
    }
}

/// Every `guardrails.interval_ms`: judges the treatment's requests since the last check, stops the
/// experiment if the ensemble's active version stopped being the control, and saves the sums.
/// Ends with the experiment or the engine.
fn spawn_guardrails(engine: Weak<EngineInner>, slot: Weak<EnsembleSlot>, running: Arc<RunningExperiment>) {
    let interval = Duration::from_millis(running.lock().config.guardrails.interval_ms);
    let spawned = std::thread::Builder::new().name(format!("quorum-experiment-{}", running.name)).spawn(move || {
        let mut before = running.arms[1].counts();
        loop {
            std::thread::sleep(interval);
            let (Some(inner), Some(slot)) = (engine.upgrade(), slot.upgrade()) else { break };
            let state = running.lock().state;
            if !state.is_active() {
                break;
            }
            let now = running.arms[1].counts();
            let mut action = running.lock().check_guardrails(&window(&now, &before));
            before = now;
            let active = slot.load().config.version;
            if action.is_none() && active != running.control_version {
                let reason = format!("the ensemble's active version changed to {active} outside the experiment");
                if running.lock().act(Action::Stopped, &reason).is_ok() {
                    action = Some(Action::Stopped);
                }
            }
            // A failed save is retried on the next tick; the decision itself is already in force.
            let _ = match action {
                Some(action) => inner.after_decision(&running, action),
                None if state == ExperimentState::Running => inner.persist_experiment(&running.lock()),
                None => Ok(()),
            };
        }
    });
    // Without the thread the guardrails are not checked; the test on outcomes still decides.
    drop(spawned);
}
