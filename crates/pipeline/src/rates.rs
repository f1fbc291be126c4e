//! Where a run's learning rates come from, decided in one place: the config's own numbers, or, for
//! every key set to `"tuned"`, the choice of the tune artifact of the config's tune point.
//!
//! Every command asks here once ([`Rates::look_up`] against the store, or [`Rates::from_tune`] after
//! running tune) and plans its stages with the config this gives; nothing else replaces `"tuned"`.

use crate::config::Config;
use crate::error::PipelineError;
use crate::planning::{first_replicate, plan_stage};
use crate::stage::Stage;
use crate::stages::summaries::{StageSummary, TuneSummary};
use crate::stages::tune::{chosen, Tune};
use crate::store::{Artifact, Store};

/// A config's learning rates, resolved.
#[derive(Debug, Clone)]
pub enum Rates {
    /// No key is `"tuned"`: the config as given.
    Given(Config),
    /// Every `"tuned"` key (none, when tune was asked for by name) replaced by the choice of `tune`.
    Tuned {
        /// The config with the chosen rates.
        config: Config,
        /// The tune artifact they came from.
        tune: Artifact,
    },
    /// A key is `"tuned"` and tune has not run for this config's tune point: these keys wait for it.
    AwaitingTune(Vec<&'static str>),
}

/// Whether a rate of `cfg` is `"tuned"` (tune must run, or have run, before the stages keyed by rates).
pub fn needs_tune(cfg: &Config) -> bool {
    !cfg.tuned_keys().is_empty()
}

impl Rates {
    /// `cfg`'s rates against the tune artifact in `store` of `tune_at` (the config tune runs with:
    /// `cfg` itself, or a study's tune point, whose choice every point uses).
    pub fn look_up(cfg: &Config, tune_at: &Config, store: &Store) -> Result<Rates, PipelineError> {
        if !needs_tune(cfg) {
            return Ok(Rates::Given(cfg.clone()));
        }
        let planned = plan_stage(&first_replicate(tune_at), &Tune)?;
        match store.lookup(Tune.name(), &planned.key) {
            Some(tune) => Rates::from_tune(cfg, &tune),
            None => Ok(Rates::AwaitingTune(cfg.tuned_keys().iter().map(|(k, _)| *k).collect())),
        }
    }

    /// `cfg` with every `"tuned"` key replaced by the choice `tune` made for its method: the one place
    /// that replaces them.
    pub fn from_tune(cfg: &Config, tune: &Artifact) -> Result<Rates, PipelineError> {
        let summary = TuneSummary::of(tune)?;
        let mut choices = std::collections::BTreeMap::new();
        for (key, method) in cfg.tuned_keys() {
            let Some(lr) = chosen(&summary, method) else {
                return Err(PipelineError::stage(Tune.name(), format!("{key} = \"tuned\", but the tune artifact holds no choice for {method}")));
            };
            tracing::info!("{key} = \"tuned\": {lr:e} (tune's choice for {method})");
            choices.insert(method, lr);
        }
        let mut config = cfg.clone();
        config.resolve_tuned(|m| choices[&m]);
        Ok(Rates::Tuned { config, tune: tune.clone() })
    }

    /// The config to plan with, or the error naming the keys that wait for tune.
    pub fn config(&self) -> Result<&Config, PipelineError> {
        match self {
            Rates::Given(config) | Rates::Tuned { config, .. } => Ok(config),
            Rates::AwaitingTune(keys) => {
                Err(PipelineError::config(format!("{} = \"tuned\", but `pipeline tune` has not run for this config yet", keys.join(", "))))
            }
        }
    }

    /// [`Rates::config`], by value.
    pub fn into_config(self) -> Result<Config, PipelineError> {
        self.config().cloned()
    }

    /// The tune artifact the rates came from, if any.
    pub fn tune(&self) -> Option<&Artifact> {
        match self {
            Rates::Tuned { tune, .. } => Some(tune),
            _ => None,
        }
    }
}
