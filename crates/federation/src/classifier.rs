//! [`Learner`] for `slora_model::Classifier`: client-side AdamW (fresh per client per round) with an
//! optional linear warm-up / decay schedule over the client's local steps, and two parameter groups:
//! the head (`modules_to_save`, often freshly initialised) at its own rate, everything else at the
//! method's rate.

use slora_model::optim::{AdamW, AdamWConfig, LrSchedule, ParamGroup};
use slora_model::{Batch, Classifier};

use crate::aggregate::State;
use crate::error::{FederationError, Result};
use crate::learner::{EvalSums, Learner};

/// Learning-rate schedule within one client's local training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up over `warmup_steps`, then linear decay to 0 at the client's last local step.
    Linear {
        /// Warm-up steps.
        warmup_steps: u64,
    },
}

/// Client optimizer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimSettings {
    /// AdamW hyper-parameters (`lr` is the base rate of every non-head tensor).
    pub adamw: AdamWConfig,
    /// The head's rate (peft's `modules_to_save` trained at the task rate); `None` = `adamw.lr`.
    pub head_lr: Option<f64>,
    /// Schedule within a client's local steps.
    pub schedule: Schedule,
    /// LoRA+: every `*.lora_B.weight` trains at this multiple of `adamw.lr` (1 = one rate).
    pub lora_b_lr_ratio: f64,
}

/// LoRA-A²'s client side ([`crate::alternating`]): the factor frozen this round, the trained
/// factor's value at the round's start, and the upload's rank budget.
#[derive(Debug, Clone)]
struct Alternating {
    /// Rank components kept per module on average (`None`: every component).
    budget: Option<usize>,
    /// The factor frozen in the round being trained (`None` before a round began).
    frozen: Option<crate::alternating::Factor>,
    /// The trained factor at the round's start.
    start: State,
}

/// A classifier plus the client optimizer the engine recreates for every client and round.
pub struct ClassifierLearner {
    model: Classifier,
    settings: OptimSettings,
    optimizer: Option<AdamW>,
    schedule: LrSchedule,
    step: u64,
    alternating: Option<Alternating>,
    /// The rank of the state last set, when it was below the model's ([`crate::ranks`]): the
    /// upload is cut back to it.
    client_rank: Option<usize>,
}

impl ClassifierLearner {
    /// Wraps `model`; its current trainable state is the initial global state.
    pub fn new(model: Classifier, settings: OptimSettings) -> Self {
        Self { model, settings, optimizer: None, schedule: LrSchedule::Constant, step: 0, alternating: None, client_rank: None }
    }

    /// LoRA-A² ([`crate::alternating`]): each round freezes one factor, and the upload keeps the
    /// trained factor's `budget` most important rank components per module on average (`None`:
    /// all of them).
    pub fn alternating(mut self, budget: Option<usize>) -> Self {
        self.alternating = Some(Alternating { budget, frozen: None, start: State::new() });
        self
    }

    /// The wrapped model.
    pub fn model(&self) -> &Classifier {
        &self.model
    }

    /// The base learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.settings.adamw.lr
    }

    /// The head's learning rate.
    pub fn head_learning_rate(&self) -> f64 {
        self.settings.head_lr.unwrap_or(self.settings.adamw.lr)
    }

    /// The optimizer of the current client round (after [`Learner::begin_local`]).
    pub fn optimizer(&self) -> Option<&AdamW> {
        self.optimizer.as_ref()
    }

    /// Unwraps the model.
    pub fn into_model(self) -> Classifier {
        self.model
    }

    fn batch(&self, ids: &[&[u32]], labels: &[u32]) -> Result<Batch> {
        Ok(Batch::collate(ids, labels, self.model.config().pad_token_id)?)
    }
}

impl Learner for ClassifierLearner {
    fn trainable_state(&self) -> Result<State> {
        Ok(self.model.trainable_state()?)
    }

    fn set_trainable_state(&mut self, state: &State) -> Result<()> {
        // A lower-rank client's download: held zero-padded in the model's rank (see crate::ranks).
        self.client_rank = None;
        let padded;
        let state = match crate::ranks::state_rank(state) {
            Some(own) => {
                let current = self.model.trainable_state()?;
                if crate::ranks::state_rank(&current).is_some_and(|full| own < full) {
                    self.client_rank = Some(own);
                    padded = crate::ranks::pad(state, &current)?;
                    &padded
                } else {
                    state
                }
            }
            None => state,
        };
        // FedEx-LoRA's global state also carries the residual folded into each adapted base.
        if state.keys().any(|k| crate::exact::is_base_offset(k)) {
            let (offsets, trained): (State, State) = state.iter().map(|(k, v)| (k.clone(), v.clone())).partition(|(k, _)| crate::exact::is_base_offset(k));
            let offsets = offsets
                .into_iter()
                .map(|(k, v)| (k.strip_suffix(crate::exact::BASE_OFFSET_SUFFIX).unwrap_or(&k).to_string(), v))
                .collect();
            self.model.set_base_offsets(&offsets)?;
            return Ok(self.model.set_trainable_state(&trained)?);
        }
        Ok(self.model.set_trainable_state(state)?)
    }

    fn begin_round(&mut self, round: u32) -> Result<()> {
        let Some(alt) = self.alternating.as_mut() else { return Ok(()) };
        let frozen = crate::alternating::frozen_factor(round);
        self.model.set_lora_frozen(frozen == crate::alternating::Factor::A, frozen == crate::alternating::Factor::B);
        alt.frozen = Some(frozen);
        alt.start = self.model.trainable_state()?.into_iter().filter(|(n, _)| frozen.other().holds(n)).collect();
        Ok(())
    }

    fn upload_state(&self) -> Result<State> {
        let state = self.model.trainable_state()?;
        if let Some(rank) = self.client_rank {
            return crate::ranks::truncate(&state, rank);
        }
        let Some(Alternating { budget, frozen: Some(frozen), start }) = &self.alternating else { return Ok(state) };
        let frozen = *frozen;
        let state = match budget {
            Some(b) => crate::alternating::select_ranks(start, &state, frozen.other(), *b)?,
            None => state,
        };
        // The frozen factor is the global one: not sent.
        Ok(state.into_iter().filter(|(n, _)| !frozen.holds(n)).collect())
    }

    fn begin_local(&mut self, total_steps: usize) -> Result<()> {
        // Standard FedAvg: no optimizer moments survive a client's round.
        let frozen = self.alternating.as_ref().and_then(|a| a.frozen);
        let vars = self.model.trainable_vars().into_iter().filter(|(n, _)| !frozen.is_some_and(|f| f.holds(n)));
        let (head, body): (Vec<_>, Vec<_>) = vars.partition(|(n, _)| self.model.is_head_tensor(n));
        let (lora_b, body): (Vec<_>, Vec<_>) = body.into_iter().partition(|(n, _)| crate::alternating::Factor::B.holds(n));
        let groups = vec![
            ParamGroup { lr: self.settings.adamw.lr, vars: body },
            ParamGroup { lr: self.settings.adamw.lr * self.settings.lora_b_lr_ratio, vars: lora_b },
            ParamGroup { lr: self.head_learning_rate(), vars: head },
        ];
        self.optimizer = Some(AdamW::with_groups(groups, self.settings.adamw)?);
        self.schedule = match self.settings.schedule {
            Schedule::Constant => LrSchedule::Constant,
            Schedule::Linear { warmup_steps } => {
                LrSchedule::LinearWarmupDecay { warmup_steps, total_steps: total_steps as u64 }
            }
        };
        self.step = 0;
        Ok(())
    }

    fn train_step(&mut self, ids: &[&[u32]], labels: &[u32], dropout_seed: u64) -> Result<f64> {
        let batch = self.batch(ids, labels)?;
        let (loss, _) = self.model.loss(&batch, Some(dropout_seed))?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Ok(value); // the engine stops with the round and client; no update applied
        }
        let grads = loss.backward()?;
        let optimizer = self.optimizer.as_mut().expect("begin_local before train_step");
        optimizer.set_lr_factor(self.schedule.factor(self.step));
        optimizer.step(&grads)?;
        self.step += 1;
        Ok(value)
    }

    fn importance(&mut self, ids: &[&[u32]], labels: &[u32], names: &[String]) -> Result<State> {
        let batch = self.batch(ids, labels)?;
        let (loss, _) = self.model.loss(&batch, None)?;
        let grads = loss.backward()?;
        let vars: std::collections::BTreeMap<String, candle_core::Var> = self.model.trainable_vars().into_iter().collect();
        names
            .iter()
            .map(|name| {
                let var = vars.get(name).ok_or_else(|| {
                    FederationError::StateMismatch(format!("`{name}` is not a trainable tensor (scoring needs a model in full mode)"))
                })?;
                let grad = grads.get(var.as_tensor()).ok_or_else(|| FederationError::StateMismatch(format!("no gradient reached `{name}`")))?;
                Ok((name.clone(), (grad * var.as_tensor())?.abs()?))
            })
            .collect()
    }

    fn eval_batch(&self, ids: &[&[u32]], labels: &[u32]) -> Result<EvalSums> {
        let batch = self.batch(ids, labels)?;
        let (loss, logits) = self.model.eval_loss(&batch)?;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        Ok(EvalSums {
            loss_sum: loss.to_scalar::<f32>()? as f64 * labels.len() as f64,
            correct: predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as u64,
            rows: labels.len() as u64,
        })
    }

    fn is_head(&self, name: &str) -> bool {
        self.model.is_head_tensor(name)
    }
}
