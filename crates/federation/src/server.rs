//! The server half of FedAvg, one round at a time: the round-0 evaluation (or the resume from a
//! checkpoint), the seeded sample of each round, the sample-weighted average of the replies in the
//! sampled order, the evaluation, the byte accounting and the metrics row, the round checkpoint.
//!
//! [`crate::run_fedavg`] drives it with in-process clients; a deployment (the Flower ServerApp, through
//! the Python bindings) drives the same object with replies that came over the network, so both
//! write the same `metrics.parquet` from the same arithmetic. A deployment may lose clients: a round
//! is averaged over the replies that arrived, and a reply whose tensors do not match the global
//! state's names, shapes and dtype, or hold a non-finite value, is refused before it is added.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use candle_core::DType;

use crate::aggregate::{State, WeightedAverage};
use crate::checkpoint::CheckpointStore;
use crate::comm::{state_bytes, state_bytes_where};
use crate::config::{Aggregation, FedAvgConfig};
use crate::evaluation::{evaluate, length_sorted_batches, Evaluation};
use crate::alternating::frozen_factor;
use crate::exact::{is_base_offset, ProductSum};
use crate::privacy::{ClippedSum, NoiseAt};
use crate::error::{FederationError, Result};
use crate::learner::{Learner, Shard};
use slora_metrics::RoundMetrics;
use crate::sampling::sample_clients;

/// One round as the server plans it: its number, the clients it samples (in order: the order their
/// updates are added in) and the one-off payload each client receives first (SLoRA's switch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundPlan {
    /// Round of this run, 1-based.
    pub local_round: u32,
    /// Global round number (`round_offset + local_round`).
    pub round: u32,
    /// Sampled client indices (partition ids), in sampling order.
    pub chosen: Vec<usize>,
    /// Bytes every client downloads once before it trains in this run (charged in round 1 only).
    pub switch_bytes: u64,
}

/// The most rows an unregistered client may claim (a deployment registers the partition's).
pub const MAX_CLAIMED_ROWS: u64 = 1 << 32;

/// One client's reply to a round, as the server receives it.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The replying client (partition id).
    pub client: usize,
    /// The round it says it trained.
    pub round: u32,
    /// The digest of the state it says it trained from ([`FedAvgServer::download_digest`]).
    pub base_digest: &'a str,
    /// What it uploaded.
    pub update: &'a State,
    /// The rows it says it trained on.
    pub samples: u64,
    /// Each local step's `(mean loss, rows)`, in order.
    pub step_losses: &'a [(f64, usize)],
    /// Seconds it says it trained.
    pub train_seconds: f64,
}

/// A reply the server refused, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The round open when it arrived.
    pub round: u32,
    /// The client it came from.
    pub client: usize,
    /// Why it was refused.
    pub reason: String,
}

/// The first 12 hex digits of a digest, for messages.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The running sums of the round in progress.
struct OpenRound {
    plan: RoundPlan,
    /// Clients whose replies were added, in order.
    accepted: Vec<usize>,
    /// The digest of each rank's download (`None`: the global rank).
    digests: BTreeMap<Option<usize>, String>,
    start: Instant,
    sum: WeightedAverage,
    products: Option<ProductSum>,
    /// Central DP's sum of clipped updates (which then replaces `sum`).
    clipped: Option<ClippedSum>,
    train_loss_sum: f64,
    train_rows: u64,
    bytes_up: u64,
    bytes_up_head: u64,
    train_seconds: f64,
    server_seconds: f64,
}

/// The server of one FedAvg run (see the module docs).
pub struct FedAvgServer<'a> {
    cfg: FedAvgConfig,
    num_clients: usize,
    test: Cow<'a, Shard>,
    full_test: Option<Cow<'a, Shard>>,
    eval_batches: Vec<Vec<usize>>,
    checkpoints: Option<CheckpointStore>,
    global: State,
    metrics: Vec<RoundMetrics>,
    wall: f64,
    next_round: u32,
    resumed_from: Option<u32>,
    open: Option<OpenRound>,
    /// What each client keeps between its rounds (FedSA-LoRA's B and head) with its row count:
    /// held here because a simulation keeps it for its clients (checkpointed with the global state,
    /// never sent or charged); a deployment's clients would keep their own.
    kept: BTreeMap<usize, (State, u64)>,
    /// What a client keeps before its first round: the round-0 state's kept tensors.
    initial_kept: State,
    /// Each client's training rows, when registered ([`Self::register_rows`]).
    registered_rows: Option<Vec<u64>>,
    /// Replies farther than this from their download are refused.
    max_update_norm: Option<f64>,
    /// Whether a reply equal to its download is refused ([`Self::refuse_unchanged_updates`]).
    refuse_unchanged: bool,
    /// Every refused reply of this run, in order.
    refusals: Vec<Refusal>,
    /// Central DP: replies whose update was above the clipping norm, over this server's rounds.
    clipped_updates: usize,
    /// Where and in which rounds what the server receives is recorded (`federation.record_uploads`).
    recording: Option<(std::path::PathBuf, std::collections::BTreeSet<u32>)>,
}

/// The folder under a run's checkpoint folder that holds its recorded uploads.
pub const UPLOADS_DIR: &str = "uploads";

/// Prefix of a kept client tensor in a checkpoint: `client-kept.<client>.<name>`, and
/// `client-kept.<client>.rows` for its row count.
const KEPT_PREFIX: &str = "client-kept.";

/// A personalised method's two numbers (FedSA-LoRA), measured after the last round on each
/// client's held-out rows: every client's own model (the global A with its own B and head), and
/// the global model (the mean A with the mean B and head) on the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PersonalEvaluation {
    /// Σ correct / Σ rows of each client's own model on its own held-out rows.
    pub personal_accuracy: f64,
    /// The global model's accuracy on the same rows.
    pub global_accuracy_same_rows: f64,
    /// Clients with held-out rows.
    pub clients: usize,
    /// Held-out rows over those clients.
    pub rows: u64,
}

impl<'a> FedAvgServer<'a> {
    /// Starts a run over `num_clients` clients (none empty: the caller checks): resumes the latest checkpoint in
    /// `checkpoints` when there is one (the learner then holds its state), else takes the learner's
    /// state as round 0's global state and evaluates it.
    pub fn start<L: Learner>(
        learner: &mut L,
        num_clients: usize,
        test: Cow<'a, Shard>,
        full_test: Option<Cow<'a, Shard>>,
        cfg: &FedAvgConfig,
        checkpoints: Option<&CheckpointStore>,
    ) -> Result<Self> {
        cfg.validate(num_clients, &test)?;
        let eval_batches = length_sorted_batches(&test, cfg.eval_batch_size);
        let mut server = Self {
            cfg: cfg.clone(),
            num_clients,
            test,
            full_test,
            eval_batches,
            checkpoints: checkpoints.cloned(),
            global: State::new(),
            metrics: Vec::new(),
            wall: 0.0,
            next_round: 1,
            resumed_from: None,
            open: None,
            kept: BTreeMap::new(),
            initial_kept: State::new(),
            registered_rows: None,
            max_update_norm: cfg.max_update_norm,
            refuse_unchanged: false,
            refusals: Vec::new(),
            clipped_updates: 0,
            recording: None,
        };
        if let (Some(store), false) = (checkpoints, cfg.record_rounds.is_empty()) {
            server.recording = Some((store.dir().join(UPLOADS_DIR), cfg.record_rounds.clone()));
        }
        // The learner holds its seeded initial state here, resumed or not: what a client keeps
        // before its first round.
        if cfg.aggregation == Aggregation::SharedA {
            server.initial_kept = learner.trainable_state()?.into_iter().filter(|(n, _)| !server.uploads_in(n, None)).collect();
        }
        if let Some(cp) = checkpoints.map(CheckpointStore::latest).transpose()?.flatten() {
            let (global, kept) = split_kept(cp.state)?;
            learner.set_trainable_state(&global)?;
            server.global = global;
            server.kept = kept;
            server.metrics = cp.metrics;
            server.wall = cp.wall_seconds;
            server.next_round = cp.completed_rounds + 1;
            server.resumed_from = Some(cp.completed_rounds);
            return Ok(server);
        }
        let start = Instant::now();
        server.global = learner.trainable_state()?;
        let eval = evaluate(learner, &server.test, &server.eval_batches)?;
        server.wall = cfg.wall_seconds_start + start.elapsed().as_secs_f64();
        server.metrics.push(RoundMetrics {
            method: cfg.method.clone(),
            round: cfg.round_offset,
            accuracy: Some(eval.accuracy()),
            loss: Some(eval.mean_loss()),
            train_loss: None,
            bytes_up_per_client: cfg.setup.bytes_up_per_client,
            bytes_down_per_client: cfg.setup.bytes_down_per_client,
            bytes_down_switch_per_client: cfg.setup.bytes_down_per_client,
            cum_bytes_up: cfg.cum_bytes_up_start + cfg.setup.bytes_up_per_client * u64::from(cfg.setup.clients),
            wall_seconds: server.wall,
            clients: cfg.setup.clients,
            eval_rows: eval.rows(),
            cum_bytes_down: cfg.cum_bytes_down_start + cfg.setup.bytes_down_per_client * num_clients as u64,
            server_seconds: cfg.setup_server_seconds,
            train_seconds: cfg.setup.train_seconds,
            ..Default::default()
        });
        if let Some(store) = checkpoints {
            store.save(0, &server.checkpoint_state()?, &server.metrics, server.wall)?;
        }
        Ok(server)
    }

    /// Central DP's settings, when the server adds the noise.
    fn central_dp(&self) -> Option<crate::privacy::ClientDp> {
        self.cfg.privacy.filter(|dp| dp.noise_at == NoiseAt::Server)
    }

    /// Under central DP, the replies (over this server's rounds) whose update the server clipped.
    pub fn clipped_updates(&self) -> usize {
        self.clipped_updates
    }

    /// The settings of this run.
    pub fn config(&self) -> &FedAvgConfig {
        &self.cfg
    }

    /// The local round this run resumed after, if it resumed from a checkpoint.
    pub fn resumed_from(&self) -> Option<u32> {
        self.resumed_from
    }

    /// The global state the next round's clients start from (the final state once every round ran).
    pub fn global(&self) -> &State {
        &self.global
    }

    /// The metrics rows so far, round 0 first.
    pub fn metrics(&self) -> &[RoundMetrics] {
        &self.metrics
    }

    /// Clients in the federation.
    pub fn num_clients(&self) -> usize {
        self.num_clients
    }

    /// Local rounds completed so far.
    pub fn completed_rounds(&self) -> u32 {
        self.next_round - 1
    }

    /// The rank client `client` trains, when clients train different ranks ([`crate::ranks`]).
    pub fn client_rank(&self, client: usize) -> Option<usize> {
        crate::ranks::rank_of(&self.cfg.client_ranks, client)
    }

    /// What client `client` downloads to train the open round: the global state, with every LoRA
    /// factor cut to the client's rank when clients train different ranks; under FedSA-LoRA only
    /// the shared A factors.
    pub fn download(&self, client: usize) -> Result<State> {
        let sent: State = match self.cfg.aggregation {
            Aggregation::SharedA => self.global.iter().filter(|(n, _)| self.uploads(n)).map(|(n, t)| (n.clone(), t.clone())).collect(),
            _ => self.global.clone(),
        };
        match self.client_rank(client) {
            Some(rank) => crate::ranks::truncate(&sent, rank),
            None => Ok(sent),
        }
    }

    /// The state client `client` trains the open round from: its download, plus what it kept
    /// from its last round (its initial state's before its first).
    pub fn client_start(&self, client: usize) -> Result<State> {
        let mut state = self.download(client)?;
        if self.cfg.aggregation == Aggregation::SharedA {
            let kept = self.kept.get(&client).map_or(&self.initial_kept, |(k, _)| k);
            state.extend(kept.iter().map(|(n, t)| (n.clone(), t.clone())));
        }
        Ok(state)
    }

    /// Records what client `client` keeps after its round (the tensors it did not send), with its
    /// row count (its weight in the evaluated global state). Nothing to do for a method that
    /// sends everything.
    pub fn keep_on_client(&mut self, client: usize, kept: State, rows: u64) {
        if !kept.is_empty() {
            self.kept.insert(client, (kept, rows));
        }
    }

    /// Whether a client sends tensor `name` in the open round (see [`Self::download`]).
    pub fn uploads(&self, name: &str) -> bool {
        self.uploads_in(name, self.open.as_ref().map(|o| o.plan.round))
    }

    /// The global state with each client's kept tensors beside it (`client-kept.<c>.<name>`).
    fn checkpoint_state(&self) -> Result<State> {
        let mut state = self.global.clone();
        for (client, (kept, rows)) in &self.kept {
            for (name, t) in kept {
                state.insert(format!("{KEPT_PREFIX}{client}.{name}"), t.clone());
            }
            state.insert(format!("{KEPT_PREFIX}{client}.rows"), candle_core::Tensor::new(&[*rows as f64], &candle_core::Device::Cpu)?);
        }
        Ok(state)
    }

    /// After the last round, a personalised method's two numbers on each client's held-out rows
    /// `personal[c]` (clients without rows are left out): every client's own model (the shared
    /// state with what it kept, or its initial state if it never trained), and the global model.
    /// The learner holds the global state again on return.
    pub fn personal_evaluation<L: Learner>(&self, learner: &mut L, personal: &[Shard]) -> Result<PersonalEvaluation> {
        let (mut own, mut global, mut rows, mut clients) = (0u64, 0u64, 0u64, 0usize);
        for (client, shard) in personal.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let batches = length_sorted_batches(shard, self.cfg.eval_batch_size);
            let mut state = self.global.clone();
            let kept = self.kept.get(&client).map_or(&self.initial_kept, |(k, _)| k);
            state.extend(kept.iter().map(|(n, t)| (n.clone(), t.clone())));
            learner.set_trainable_state(&state)?;
            let e = evaluate(learner, shard, &batches)?;
            own += e.correct();
            learner.set_trainable_state(&self.global)?;
            let g = evaluate(learner, shard, &batches)?;
            global += g.correct();
            rows += e.rows();
            clients += 1;
        }
        if rows == 0 {
            return Err(FederationError::StateMismatch("no client has held-out rows for the personalised evaluation".into()));
        }
        Ok(PersonalEvaluation { personal_accuracy: own as f64 / rows as f64, global_accuracy_same_rows: global as f64 / rows as f64, clients, rows })
    }

    /// Opens the next round and says whom it samples, or `None` when every round has run.
    pub fn begin_round(&mut self) -> Option<RoundPlan> {
        if self.next_round > self.cfg.rounds {
            return None;
        }
        let local_round = self.next_round;
        let round = self.cfg.round_offset + local_round;
        let plan = RoundPlan {
            local_round,
            round,
            chosen: sample_clients(self.num_clients, self.cfg.clients_per_round, self.cfg.seed, round),
            switch_bytes: if local_round == 1 { self.cfg.switch_bytes_per_client } else { 0 },
        };
        self.open = Some(OpenRound {
            plan: plan.clone(),
            start: Instant::now(),
            accepted: Vec::new(),
            digests: BTreeMap::new(),
            sum: WeightedAverage::new(),
            products: matches!(self.cfg.aggregation, Aggregation::ExactLora { .. } | Aggregation::FlexLora { .. }).then(ProductSum::new),
            clipped: self.central_dp().map(|_| ClippedSum::new()),
            train_loss_sum: 0.0,
            train_rows: 0,
            bytes_up: 0,
            bytes_up_head: 0,
            train_seconds: 0.0,
            server_seconds: 0.0,
        });
        Some(plan)
    }

    /// Why client `client`'s `update` cannot be averaged into this run's global state, if it
    /// cannot: a tensor missing, extra, of another shape (a LoRA factor has the client's rank) or
    /// dtype, or holding a NaN or infinity. A client uploads every tensor of the global state but
    /// the server's own (FedEx-LoRA's base offsets).
    pub fn check_update(&self, client: usize, update: &State) -> Result<()> {
        let bad = |m: String| Err(FederationError::StateMismatch(m));
        if let Some(name) = self.global.keys().find(|k| self.is_uploaded(k) && !update.contains_key(*k)) {
            return bad(format!("the update lacks `{name}`"));
        }
        if let Some(name) = update.keys().find(|k| !self.is_uploaded(k) || !self.global.contains_key(*k)) {
            return bad(format!("the update has an unknown tensor `{name}`"));
        }
        for (name, t) in update {
            let want = &self.global[name];
            let dims = match self.client_rank(client) {
                Some(rank) => crate::ranks::client_shape(name, want.dims(), rank),
                None => want.dims().to_vec(),
            };
            if t.dims() != dims.as_slice() || t.dtype() != want.dtype() {
                return bad(format!("`{name}` is {:?} {:?}, client {client}'s should be {:?} {dims:?}", t.dtype(), t.dims(), want.dtype()));
            }
            // A NaN or an infinity anywhere makes the sum non-finite; one pass, no copy.
            let sum = t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !sum.is_finite() {
                return bad(format!("`{name}` holds a NaN or an infinity"));
            }
        }
        Ok(())
    }

    /// Whether a reply of the open round carries global tensor `name`: all but the server's own
    /// (FedEx-LoRA's base offsets), under LoRA-A² the factor frozen this round, and under
    /// FedSA-LoRA all but the A factors.
    fn is_uploaded(&self, name: &str) -> bool {
        self.uploads_in(name, self.open.as_ref().map(|o| o.plan.round))
    }

    /// [`Self::is_uploaded`] in global round `round` (`None`: outside a round).
    fn uploads_in(&self, name: &str, round: Option<u32>) -> bool {
        match (self.cfg.aggregation, round) {
            _ if is_base_offset(name) => false,
            (Aggregation::Alternating, Some(round)) => !frozen_factor(round).holds(name),
            (Aggregation::SharedA, _) => crate::alternating::Factor::A.holds(name),
            _ => true,
        }
    }

    /// The digest of what client `client` downloads in the open round ([`crate::comm::state_digest`]
    /// of [`Self::download`]): a reply must echo it, so one trained from another state (a stale
    /// round, a replay) is refused. Computed once per round and rank.
    pub fn download_digest(&mut self, client: usize) -> Result<String> {
        let rank = self.client_rank(client);
        if let Some(d) = self.open.as_ref().and_then(|o| o.digests.get(&rank)) {
            return Ok(d.clone());
        }
        let digest = crate::comm::state_digest(&self.download(client)?);
        if let Some(open) = self.open.as_mut() {
            open.digests.insert(rank, digest.clone());
        }
        Ok(digest)
    }

    /// Registers each client's training rows (the partition's shard sizes, which the server knows
    /// because it partitioned the data): a reply's FedAvg weight is then its client's registered
    /// count, and a reply claiming another count is refused. Unregistered, a claimed count is
    /// only bounded (1 ..= [`MAX_CLAIMED_ROWS`]).
    pub fn register_rows(&mut self, rows: Vec<u64>) -> Result<()> {
        if rows.len() != self.num_clients {
            return Err(FederationError::StateMismatch(format!("{} registered row counts for {} clients", rows.len(), self.num_clients)));
        }
        self.registered_rows = Some(rows);
        Ok(())
    }

    /// Refuses any later reply whose update lies farther than `bound` (L2, over every uploaded
    /// tensor) from the state its client downloaded (`None`: no bound).
    pub fn set_max_update_norm(&mut self, bound: Option<f64>) {
        self.max_update_norm = bound;
    }

    /// Refuses any later reply whose update equals the state its client downloaded (a free rider).
    /// Off by default: an honest client can send its download back, e.g. FedSA-LoRA's A after one
    /// local step from B = 0 (A's gradient is B-weighted). A deployment, whose methods all move
    /// what they upload on every step, turns it on.
    pub fn refuse_unchanged_updates(&mut self, on: bool) {
        self.refuse_unchanged = on;
    }

    /// The L2 distance of `update` from what client `client` downloaded, over the uploaded tensors.
    pub fn update_norm(&self, client: usize, update: &State) -> Result<f64> {
        let base = self.download(client)?;
        let mut sum = 0f64;
        for (name, t) in update {
            let b = base.get(name).ok_or_else(|| FederationError::StateMismatch(format!("the update has an unknown tensor `{name}`")))?;
            // In f32, one tensor at a time: FFT's update is the whole model.
            let d = (t.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?;
            sum += f64::from(d.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        Ok(sum.sqrt())
    }

    /// The replies refused so far in this run (since this server started), with their reasons.
    pub fn refusals(&self) -> &[Refusal] {
        &self.refusals
    }

    /// Why `reply` cannot enter the open round, if it cannot: every field is checked before it
    /// touches any state (see [`Self::accept`]).
    fn screen(&mut self, reply: &Reply<'_>) -> Result<u64, String> {
        let Some(open) = self.open.as_ref() else { return Err("no round is open".into()) };
        let (round, client) = (open.plan.round, reply.client);
        if !open.plan.chosen.contains(&client) {
            return Err(format!("client {client} was not sampled in round {round}"));
        }
        if open.accepted.contains(&client) {
            return Err(format!("a second reply from client {client} in round {round}"));
        }
        if reply.round != round {
            return Err(format!("the reply is for round {} (a stale or replayed reply; the open round is {round})", reply.round));
        }
        let weight = match &self.registered_rows {
            Some(rows) if reply.samples != rows[client] => {
                return Err(format!("it claims {} examples; client {client}'s partition holds {}", reply.samples, rows[client]));
            }
            Some(rows) => rows[client],
            None if reply.samples == 0 || reply.samples > MAX_CLAIMED_ROWS => {
                return Err(format!("it claims {} examples (1 ..= {MAX_CLAIMED_ROWS})", reply.samples));
            }
            None => reply.samples,
        };
        if !(reply.train_seconds.is_finite() && reply.train_seconds >= 0.0) {
            return Err(format!("train-seconds is {} (a finite number >= 0)", reply.train_seconds));
        }
        let epochs = u64::from(self.cfg.local_epochs);
        let want_steps = epochs * weight.div_ceil(self.cfg.batch_size as u64);
        let step_rows: u64 = reply.step_losses.iter().map(|(_, r)| *r as u64).sum();
        if reply.step_losses.len() as u64 != want_steps || step_rows != weight * epochs {
            return Err(format!(
                "{} steps over {step_rows} rows; {weight} rows × {epochs} epochs in batches of {} make {want_steps} steps over {} rows",
                reply.step_losses.len(),
                self.cfg.batch_size,
                weight * epochs
            ));
        }
        if let Some((loss, rows)) = reply.step_losses.iter().find(|(l, r)| !(l.is_finite() && *l >= 0.0) || *r == 0 || *r > self.cfg.batch_size) {
            return Err(format!("a step reports loss {loss} over {rows} rows (a finite loss >= 0 over 1 ..= {} rows)", self.cfg.batch_size));
        }
        let digest = self.download_digest(client).map_err(|e| e.to_string())?;
        if reply.base_digest != digest {
            return Err(format!("it trained from state {} but round {round} sent {} (a stale or replayed reply)", short(reply.base_digest), short(&digest)));
        }
        self.check_update(client, reply.update).map_err(|e| e.to_string())?;
        let norm = self.update_norm(client, reply.update).map_err(|e| e.to_string())?;
        if norm == 0.0 && self.refuse_unchanged {
            return Err("the update is the state it downloaded, unchanged (no training)".into());
        }
        if let Some(bound) = self.max_update_norm.filter(|b| norm > *b) {
            return Err(format!("the update's distance from the global state is {norm:.4e}, above the bound {bound:.4e}"));
        }
        Ok(weight)
    }

    /// Adds a reply to the open round: its uploaded state, weighted by its client's rows, each
    /// local step's `(mean loss, rows)` and the seconds it trained. Every field is checked first:
    /// the client was sampled and has not replied yet this round; it trained this round
    /// (`reply.round`) from the state this round sent it (`reply.base_digest`); its count is
    /// its registered rows (or, unregistered, in 1 ..= [`MAX_CLAIMED_ROWS`]); its steps and
    /// rows are what that count, `local_epochs` and `batch_size` make, with finite losses; its
    /// time is finite and ≥ 0; its tensors are exactly the expected names, shapes and dtype,
    /// finite, changed, and within the update-norm bound. A refused reply is recorded with its
    /// reason ([`Self::refusals`]), changes nothing, and returns [`FederationError::Refused`].
    pub fn accept<L: Learner>(&mut self, learner: &L, reply: &Reply<'_>) -> Result<()> {
        let weight = match self.screen(reply) {
            Ok(w) => w,
            Err(reason) => {
                let round = self.open.as_ref().map_or(0, |o| o.plan.round);
                self.refusals.push(Refusal { round, client: reply.client, reason: reason.clone() });
                return Err(FederationError::Refused { round, client: reply.client, reason });
            }
        };
        self.add_screened(learner, reply, weight)
    }

    /// Adds a round's replies as secure aggregation (Flower's SecAgg+) delivers them: `replies`
    /// are their fields in the clear, and `mean`, the weighted mean Σ nᵢ·uploadᵢ / Σ nᵢ of their
    /// uploads, is all the server sees of their updates (each reply's `update` field is not read:
    /// `mean` stands for it). `total_weight` is the Σ nᵢ the aggregation weighted by.
    ///
    /// Every reply is screened as [`Self::accept`] screens it, with `mean` as its update (its
    /// names, shapes, dtype, finiteness and the update-norm bound: a mean of updates within the
    /// bound is within it), the clients must be distinct, and `total_weight` must be the sum of
    /// their weights (their registered rows). An aggregate cannot be split, so if any reply is
    /// refused, all are: each is recorded as refused with the reason, and nothing changes. The
    /// server cannot clip what it cannot see, so central DP and the aggregations that need each
    /// upload (FedEx-LoRA's and FlexLoRA's products, LoRA-A²'s and FedSA-LoRA's factors) are
    /// refused by key.
    pub fn accept_aggregate<L: Learner>(&mut self, learner: &L, replies: &[Reply<'_>], mean: &State, total_weight: u64) -> Result<()> {
        if self.central_dp().is_some() {
            let message = "central DP clips each reply at the server, which sees only their sum under secure aggregation".into();
            return Err(FederationError::InvalidConfig { key: "privacy.mode", message });
        }
        if self.cfg.aggregation != Aggregation::Mean {
            let message = format!("{:?} needs each reply's upload; secure aggregation gives only their mean", self.cfg.aggregation);
            return Err(FederationError::InvalidConfig { key: "aggregation", message });
        }
        let clients: Vec<usize> = replies.iter().map(|r| r.client).collect();
        let mut weights = Vec::with_capacity(replies.len());
        let mut refused: Option<(usize, String)> = None;
        for (i, reply) in replies.iter().enumerate() {
            if clients[..i].contains(&reply.client) {
                refused = Some((reply.client, format!("client {} appears twice", reply.client)));
                break;
            }
            match self.screen(&Reply { update: mean, ..*reply }) {
                Ok(w) => weights.push(w),
                Err(reason) => {
                    refused = Some((reply.client, format!("client {}: {reason}", reply.client)));
                    break;
                }
            }
        }
        if refused.is_none() && replies.is_empty() {
            refused = Some((0, "no replies".into()));
        }
        let sum: u64 = weights.iter().sum();
        if refused.is_none() && sum != total_weight {
            refused = Some((clients[0], format!("it was weighted by {total_weight} rows; its clients' registered rows sum to {sum}")));
        }
        if let Some((client, why)) = refused {
            let round = self.open.as_ref().map_or(0, |o| o.plan.round);
            let reason = format!("the secure aggregate of clients {clients:?} is refused: {why}");
            for &c in &clients {
                self.refusals.push(Refusal { round, client: c, reason: reason.clone() });
            }
            return Err(FederationError::Refused { round, client, reason });
        }
        for (reply, weight) in replies.iter().zip(weights) {
            self.add_screened(learner, &Reply { update: mean, ..*reply }, weight)?;
        }
        Ok(())
    }

    /// Adds a screened reply to the open round with FedAvg weight `weight`.
    fn add_screened<L: Learner>(&mut self, learner: &L, reply: &Reply<'_>, weight: u64) -> Result<()> {
        let (client, update) = (reply.client, reply.update);
        // A lower-rank reply enters the sums zero-padded to the global rank.
        let padded = match self.client_rank(client) {
            Some(_) => Cow::Owned(crate::ranks::pad(update, &self.global)?),
            None => Cow::Borrowed(update),
        };
        // Central DP: the update from the client's download, clipped by the server whatever the
        // client did, enters an equal-weight sum instead.
        let delta = match self.central_dp() {
            Some(_) => Some(crate::privacy::delta(update, &self.download(client)?)?),
            None => None,
        };
        let open = self.open.as_mut().expect("screened: a round is open");
        let server_start = Instant::now();
        match (open.clipped.as_mut(), delta, self.cfg.privacy) {
            (Some(clipped), Some(delta), Some(dp)) => clipped.add(delta, dp.clip_norm)?,
            _ => open.sum.add(&padded, weight)?,
        }
        if let Some(products) = open.products.as_mut() {
            products.add(&padded, weight)?;
        }
        open.server_seconds += server_start.elapsed().as_secs_f64();
        // Per step, in order, as one running sum over the round's clients.
        for &(loss, rows) in reply.step_losses {
            open.train_loss_sum += loss * rows as f64;
            open.train_rows += rows as u64;
        }
        open.train_seconds += reply.train_seconds;
        // Summed over the replies: uploads may differ in size (LoRA-A²'s selected components).
        open.bytes_up += match self.cfg.aggregation {
            Aggregation::Alternating => crate::alternating::upload_bytes(update, &self.global, frozen_factor(open.plan.round).other())?,
            _ => state_bytes(update),
        };
        open.bytes_up_head += state_bytes_where(update, |n| learner.is_head(n));
        open.accepted.push(client);
        let round = open.plan.round;
        self.record(round, client, update)?;
        Ok(())
    }

    /// Records an accepted reply of a recorded round: the update as the server sees it (upload −
    /// download), and once per round what the round sent.
    fn record(&self, round: u32, client: usize, update: &State) -> Result<()> {
        let Some((dir, rounds)) = &self.recording else { return Ok(()) };
        if !rounds.contains(&round) {
            return Ok(());
        }
        let round_dir = crate::privacy::recorded_round_dir(dir, round);
        let download = self.download(client)?;
        let sent = round_dir.join(crate::privacy::RECORDED_DOWNLOAD);
        if !sent.exists() {
            crate::checkpoint::write_safetensors(&sent, &download)?;
        }
        let delta = crate::privacy::delta(update, &download)?;
        crate::checkpoint::write_safetensors(&round_dir.join(crate::privacy::recorded_upload_file(client)), &delta)?;
        Ok(())
    }

    /// Closes the open round: the average of the accepted replies becomes the global state (the
    /// learner holds it), which is evaluated when due; the metrics row is appended and the round
    /// checkpointed. `clients` in the row counts the replies averaged.
    pub fn finish_round<L: Learner>(&mut self, learner: &mut L) -> Result<&RoundMetrics> {
        let open = self.open.take().ok_or_else(|| FederationError::StateMismatch("no round is open".into()))?;
        let OpenRound { plan, start, sum, products, clipped, train_loss_sum, train_rows, bytes_up, bytes_up_head, train_seconds, mut server_seconds, .. } = open;
        let replies = clipped.as_ref().map_or(sum.clients(), ClippedSum::clients) as u64;
        if replies == 0 {
            return Err(FederationError::StateMismatch(format!("round {}: no client update to average", plan.round)));
        }
        // Each sampled client's download (its rank's truncation when ranks differ), summed.
        let uniform = self.cfg.client_ranks.is_empty() && self.cfg.aggregation != Aggregation::SharedA;
        let state_down: u64 = match uniform {
            true => state_bytes(&self.global) * plan.chosen.len() as u64,
            false => plan.chosen.iter().map(|&c| self.download(c).map(|s| state_bytes(&s))).sum::<Result<u64>>()?,
        };
        let bytes_down = state_down / plan.chosen.len() as u64 + plan.switch_bytes;
        let bytes_down_head = state_bytes_where(&self.global, |n| learner.is_head(n) && self.uploads_in(n, None));
        let server_start = Instant::now();
        let mean = match (clipped, self.cfg.privacy) {
            // DP-FedAvg: the global tensors moved by the noised sum over the fixed denominator.
            (Some(clipped), Some(dp)) => {
                self.clipped_updates += clipped.clipped();
                let noise_seed = crate::privacy::noise_seed(&dp, self.cfg.seed, plan.round, None);
                crate::privacy::apply(&self.global, &clipped.finish(&dp, self.cfg.clients_per_round, noise_seed)?)?
            }
            _ => sum.finish()?,
        };
        self.global = match (products, self.cfg.aggregation) {
            (Some(products), Aggregation::ExactLora { scale }) => products.finish(mean, &self.global, scale)?,
            (Some(products), Aggregation::FlexLora { scale }) => products.finish_svd(mean, scale)?.0,
            // The frozen factor (not uploaded) keeps its global value.
            (_, Aggregation::Alternating) => {
                let mut next = self.global.clone();
                next.extend(mean);
                next
            }
            // The shared A, and for evaluation the clients' kept B and head averaged by rows
            // (every client that has trained; the initial values before any has).
            (_, Aggregation::SharedA) => {
                let mut next = self.global.clone();
                next.extend(mean);
                let mut kept = WeightedAverage::new();
                for (state, rows) in self.kept.values() {
                    kept.add(state, *rows)?;
                }
                if kept.clients() > 0 {
                    next.extend(kept.finish()?);
                }
                next
            }
            _ => mean,
        };
        server_seconds += server_start.elapsed().as_secs_f64();
        learner.set_trainable_state(&self.global)?;

        let (local_round, rounds) = (plan.local_round, self.cfg.rounds);
        let evaluated = local_round % self.cfg.eval_every == 0 || local_round == rounds;
        let eval = if evaluated { Some(evaluate(learner, &self.test, &self.eval_batches)?) } else { None };
        let in_last_k = local_round + self.cfg.full_test_last_k.max(1) > rounds;
        let full: Option<Evaluation> = match (in_last_k, self.full_test.as_deref()) {
            (false, _) => None,
            (true, Some(_)) if !self.cfg.final_full_test => None,
            (true, Some(full)) => Some(evaluate(learner, full, &length_sorted_batches(full, self.cfg.eval_batch_size))?),
            // The curve's rows are every test row: the round's evaluation is the full one (made
            // here for a round in the last k that the curve skips).
            (true, None) if local_round == rounds => eval,
            (true, None) if !self.cfg.final_full_test => None,
            (true, None) => match eval {
                Some(e) => Some(e),
                None => Some(evaluate(learner, &self.test, &self.eval_batches)?),
            },
        };
        self.wall += start.elapsed().as_secs_f64();
        let cum_before = self.metrics.last().map_or(self.cfg.cum_bytes_up_start, |m| m.cum_bytes_up);
        let cum_down_before = self.metrics.last().map_or(self.cfg.cum_bytes_down_start, |m| m.cum_bytes_down);
        // The one-off payload goes to every client (any may be sampled later); the state only to
        // the sampled ones.
        let cum_bytes_down = cum_down_before + state_down + plan.switch_bytes * self.num_clients as u64;
        self.metrics.push(RoundMetrics {
            method: self.cfg.method.clone(),
            round: plan.round,
            accuracy: eval.map(|e| e.accuracy()),
            loss: eval.map(|e| e.mean_loss()),
            train_loss: Some(train_loss_sum / train_rows as f64),
            // The mean over the replies (every reply's own size when they are equal); the download
            // the mean over the sampled clients.
            bytes_up_per_client: bytes_up / replies,
            bytes_down_per_client: bytes_down,
            cum_bytes_up: cum_before + bytes_up,
            wall_seconds: self.wall,
            clients: replies as u32,
            eval_rows: eval.map_or(0, |e| e.rows()),
            full_test_accuracy: full.map(|e| e.accuracy()),
            full_test_loss: full.map(|e| e.mean_loss()),
            full_test_rows: full.map_or(0, |e| e.rows()),
            bytes_up_head_per_client: bytes_up_head / replies,
            bytes_down_head_per_client: bytes_down_head,
            bytes_down_switch_per_client: plan.switch_bytes,
            cum_bytes_down,
            train_seconds,
            server_seconds,
        });
        if let Some(store) = &self.checkpoints {
            store.save(local_round, &self.checkpoint_state()?, &self.metrics, self.wall)?;
        }
        self.next_round += 1;
        Ok(self.metrics.last().expect("a row was just pushed"))
    }

    /// The metrics and the final global state.
    pub fn finish(self) -> (Vec<RoundMetrics>, State, Option<u32>) {
        (self.metrics, self.global, self.resumed_from)
    }
}

/// A checkpoint's state split into the global state and each client's kept tensors.
fn split_kept(state: State) -> Result<(State, BTreeMap<usize, (State, u64)>)> {
    let (kept, global): (State, State) = state.into_iter().partition(|(n, _)| n.starts_with(KEPT_PREFIX));
    let mut clients: BTreeMap<usize, (State, u64)> = BTreeMap::new();
    for (name, t) in kept {
        let rest = &name[KEPT_PREFIX.len()..];
        let (client, tensor) = rest
            .split_once('.')
            .and_then(|(c, n)| Some((c.parse::<usize>().ok()?, n)))
            .ok_or_else(|| FederationError::StateMismatch(format!("checkpoint tensor `{name}` names no client")))?;
        let entry = clients.entry(client).or_default();
        if tensor == "rows" {
            entry.1 = t.to_vec1::<f64>()?.first().copied().unwrap_or(0.0) as u64;
        } else {
            entry.0.insert(tensor.to_string(), t);
        }
    }
    Ok((global, clients))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::client::{local_update, LocalRound};
    use crate::engine::run_fedavg;
    use crate::toy::{toy_config, toy_data, toy_vocab, ToyLearner};

    /// An honest reply of `client` in the open round of `server`, trained by a fresh learner.
    fn honest(server: &mut FedAvgServer<'_>, clients: &[Shard], cfg: &FedAvgConfig, round: u32, client: usize) -> (State, Vec<(f64, usize)>, String) {
        let download = server.download(client).unwrap();
        let digest = server.download_digest(client).unwrap();
        let local = LocalRound { seed: cfg.seed, round, client, local_epochs: 1, batch_size: cfg.batch_size };
        let update = local_update(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients[client], &download, &local, || {}).unwrap();
        (update.state, update.step_losses, digest)
    }

    /// A deployment's server: replies from separate learners, each preceded by a volley of
    /// malformed ones (every field of a reply, a duplicate, a stale round, a replay, a wrong
    /// digest, overflowing counts, a huge update); one client lost in round 2. Each bad reply is
    /// refused by name and recorded, and changes nothing: round 1 (every honest reply arrived) is
    /// the in-process engine's, bit for bit; round 2 is averaged over the two that arrived.
    #[test]
    fn refuses_every_malformed_reply_and_averages_the_honest_ones() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let cfg = toy_config(2);
        let rows: Vec<u64> = clients.iter().map(|s| s.len() as u64).collect();
        let engine = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &toy_config(1), None)?;

        let mut server_learner = ToyLearner::new(toy_vocab(4), 4, 20.0);
        let mut server = FedAvgServer::start(&mut server_learner, rows.len(), Cow::Borrowed(&test), None, &cfg, None)?;
        server.register_rows(rows.clone())?;
        server.set_max_update_norm(Some(1e6));
        server.refuse_unchanged_updates(true);
        let mut lost = None;
        let mut first_reply: Option<(usize, State, Vec<(f64, usize)>, String)> = None;
        let mut refused = 0;
        while let Some(plan) = server.begin_round() {
            for (i, &client) in plan.chosen.iter().enumerate() {
                if plan.local_round == 2 && i == 1 {
                    lost = Some(client); // never replies
                    continue;
                }
                let (state, losses, digest) = honest(&mut server, &clients, &cfg, plan.round, client);
                let base = Reply { client, round: plan.round, base_digest: &digest, update: &state, samples: rows[client], step_losses: &losses, train_seconds: 0.5 };
                let (name, t) = state.iter().next().map(|(n, t)| (n.clone(), t.clone())).unwrap();
                let with = |f: &dyn Fn(&mut State)| {
                    let mut s = state.clone();
                    f(&mut s);
                    s
                };
                let wrong_shape = with(&|s| drop(s.insert(name.clone(), Tensor::zeros(3, t.dtype(), &Device::Cpu).unwrap())));
                let poisoned = with(&|s| drop(s.insert(name.clone(), (t.clone() * f64::NAN).unwrap())));
                let infinite = with(&|s| drop(s.insert(name.clone(), (t.clone() * f64::INFINITY).unwrap())));
                let huge = with(&|s| drop(s.insert(name.clone(), (t.ones_like().unwrap() * 1e30).unwrap())));
                let extra = with(&|s| drop(s.insert("smuggled".into(), t.clone())));
                let missing = with(&|s| drop(s.remove(&name)));
                let download = server.download(client)?;
                let mut fewer_steps = losses.clone();
                fewer_steps.pop();
                let mut nan_loss = losses.clone();
                nan_loss[0].0 = f64::NAN;
                // Step rows that still sum to the shard, but one step is over the batch size.
                let mut big_step = losses.clone();
                big_step[0].1 += 1;
                big_step[1].1 -= 1;
                let not_sampled = (0..6).find(|c| !plan.chosen.contains(c)).unwrap();
                let bad: Vec<(&str, Reply<'_>)> = vec![
                    ("claims 1000000000 examples", Reply { samples: 1_000_000_000, ..base }),
                    ("claims 18446744073709551615 examples", Reply { samples: u64::MAX, ..base }),
                    ("claims 0 examples", Reply { samples: 0, ..base }),
                    ("train-seconds is NaN", Reply { train_seconds: f64::NAN, ..base }),
                    ("train-seconds is -1", Reply { train_seconds: -1.0, ..base }),
                    ("train-seconds is inf", Reply { train_seconds: f64::INFINITY, ..base }),
                    ("steps over", Reply { step_losses: &fewer_steps, ..base }),
                    ("a step reports loss NaN", Reply { step_losses: &nan_loss, ..base }),
                    ("a step reports loss", Reply { step_losses: &big_step, ..base }),
                    ("for round", Reply { round: plan.round + 1, ..base }),
                    ("it trained from state", Reply { base_digest: "0123456789abcdef", ..base }),
                    ("should be F32", Reply { update: &wrong_shape, ..base }),
                    ("holds a NaN or an infinity", Reply { update: &poisoned, ..base }),
                    ("holds a NaN or an infinity", Reply { update: &infinite, ..base }),
                    ("above the bound", Reply { update: &huge, ..base }),
                    ("unknown tensor `smuggled`", Reply { update: &extra, ..base }),
                    ("the update lacks", Reply { update: &missing, ..base }),
                    ("unchanged", Reply { update: &download, ..base }),
                    ("was not sampled", Reply { client: not_sampled, ..base }),
                ];
                for (want, reply) in &bad {
                    match server.accept(&server_learner, reply) {
                        Err(FederationError::Refused { reason, client: c, .. }) => {
                            assert!(reason.contains(want), "want `{want}`, got `{reason}`");
                            assert_eq!(c, reply.client);
                        }
                        other => panic!("`{want}`: {other:?}"),
                    }
                    refused += 1;
                }
                // Round 1's reply replayed in round 2: stale.
                if let (2, Some((c, s, l, d))) = (plan.local_round, &first_reply) {
                    if *c == client {
                        let replay = Reply { client, round: 1, base_digest: d, update: s, samples: rows[client], step_losses: l, train_seconds: 0.5 };
                        let e = server.accept(&server_learner, &replay).unwrap_err().to_string();
                        assert!(e.contains("for round 1"), "{e}");
                        refused += 1;
                    }
                }
                server.accept(&server_learner, &base)?;
                let again = server.accept(&server_learner, &base).unwrap_err().to_string();
                assert!(again.contains("a second reply"), "{again}");
                refused += 1;
                if plan.local_round == 1 && first_reply.is_none() {
                    first_reply = Some((client, state.clone(), losses.clone(), digest.clone()));
                }
            }
            let row = server.finish_round(&mut server_learner)?.clone();
            assert_eq!(row.clients, if plan.local_round == 2 { 2 } else { 3 });
            if plan.local_round == 1 {
                // Round 1 had every honest reply: the in-process engine's round, bit for bit.
                for (name, t) in &engine.state {
                    assert_eq!(t.flatten_all()?.to_vec1::<f32>()?, server.global()[name].flatten_all()?.to_vec1::<f32>()?, "{name}");
                }
                let e = &engine.metrics[1];
                assert_eq!(row.train_loss.map(f64::to_bits), e.train_loss.map(f64::to_bits));
                assert_eq!((row.accuracy, row.bytes_up_per_client, row.bytes_down_per_client, row.cum_bytes_up), (e.accuracy, e.bytes_up_per_client, e.bytes_down_per_client, e.cum_bytes_up));
            }
        }
        assert!(lost.is_some());
        assert_eq!(server.refusals().len(), refused, "every refusal is recorded");
        let m = server.metrics();
        assert_eq!(m[2].cum_bytes_up, m[1].cum_bytes_up + 2 * m[2].bytes_up_per_client);
        assert!(m[2].accuracy.is_some());
        Ok(())
    }

    /// Secure aggregation: a round accepted as one aggregate (the replies' fields and only the
    /// weighted mean of their uploads) is the round accepted reply by reply, bit for bit. An
    /// aggregate with a wrong total weight, a stale reply, a repeated client or a shape the global
    /// state lacks is refused as a whole (every client recorded) and changes nothing; central DP
    /// is refused by key.
    #[test]
    fn an_aggregate_is_the_round_of_its_replies_or_refused_whole() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let cfg = toy_config(2);
        let rows: Vec<u64> = clients.iter().map(|s| s.len() as u64).collect();
        fn start<'t>(test: &'t Shard, rows: &[u64], cfg: &FedAvgConfig) -> anyhow::Result<(ToyLearner, FedAvgServer<'t>)> {
            let mut learner = ToyLearner::new(toy_vocab(4), 4, 20.0);
            let mut server = FedAvgServer::start(&mut learner, rows.len(), Cow::Borrowed(test), None, cfg, None)?;
            server.register_rows(rows.to_vec())?;
            Ok((learner, server))
        }
        let (mut plain_learner, mut plain) = start(&test, &rows, &cfg)?;
        let (mut secure_learner, mut secure) = start(&test, &rows, &cfg)?;
        while let Some(plan) = plain.begin_round() {
            assert_eq!(secure.begin_round().as_ref(), Some(&plan));
            let mut replies = Vec::new();
            for &client in &plan.chosen {
                let (state, losses, digest) = honest(&mut plain, &clients, &cfg, plan.round, client);
                replies.push((client, state, losses, digest));
            }
            let mut sum = WeightedAverage::new();
            for (client, state, losses, digest) in &replies {
                let reply = Reply { client: *client, round: plan.round, base_digest: digest, update: state, samples: rows[*client], step_losses: losses, train_seconds: 0.5 };
                plain.accept(&plain_learner, &reply)?;
                sum.add(state, rows[*client])?;
            }
            let mean = sum.finish()?;
            let total: u64 = plan.chosen.iter().map(|&c| rows[c]).sum();
            let fields: Vec<Reply<'_>> = replies
                .iter()
                .map(|(client, _, losses, digest)| Reply { client: *client, round: plan.round, base_digest: digest, update: &mean, samples: rows[*client], step_losses: losses, train_seconds: 0.5 })
                .collect();
            let refusals = secure.refusals().len();
            let stale: Vec<Reply<'_>> = fields.iter().enumerate().map(|(i, r)| Reply { round: if i == 1 { plan.round + 1 } else { plan.round }, ..*r }).collect();
            let twice: Vec<Reply<'_>> = vec![fields[0], fields[1], fields[0]];
            let mut misshapen = mean.clone();
            let name = mean.keys().next().unwrap().clone();
            misshapen.insert(name, Tensor::zeros(3, DType::F32, &Device::Cpu)?);
            for (want, replies, mean, total) in [
                ("weighted by 1 rows", &fields, &mean, 1),
                ("for round", &stale, &mean, total),
                ("appears twice", &twice, &mean, total),
                ("should be F32", &fields, &misshapen, total),
            ] {
                let e = secure.accept_aggregate(&secure_learner, replies, mean, total).unwrap_err().to_string();
                assert!(e.contains("the secure aggregate of clients") && e.contains(want), "want `{want}`: {e}");
            }
            assert_eq!(secure.refusals().len(), refusals + 3 + 3 + 3 + 3, "every client of each refused aggregate is recorded");
            secure.accept_aggregate(&secure_learner, &fields, &mean, total)?;
            let (p, s) = (plain.finish_round(&mut plain_learner)?.clone(), secure.finish_round(&mut secure_learner)?.clone());
            assert!(p.same_results(&s), "round {}: {p:?} vs {s:?}", plan.round);
            for (name, t) in plain.global() {
                assert_eq!(t.flatten_all()?.to_vec1::<f32>()?, secure.global()[name].flatten_all()?.to_vec1::<f32>()?, "{name}");
            }
        }
        let mut central = toy_config(1);
        central.privacy = Some(crate::privacy::ClientDp { clip_norm: 1.0, noise_multiplier: 0.0, noise_at: NoiseAt::Server, secret_noise: false });
        let (learner, mut server) = start(&test, &rows, &central)?;
        server.begin_round().unwrap();
        let e = server.accept_aggregate(&learner, &[], &State::new(), 0).unwrap_err().to_string();
        assert!(e.contains("privacy.mode"), "{e}");
        Ok(())
    }

    /// A fuzz-style volley: every field of a reply drawn from a seeded mix of plausible and absurd
    /// values. None panics; none but the honest reply is accepted; the round still averages.
    #[test]
    fn a_volley_of_random_replies_never_panics_or_gets_in() -> anyhow::Result<()> {
        use rand::{Rng, SeedableRng};
        let (clients, test) = toy_data(4, 4, 20);
        let mut cfg = toy_config(1);
        cfg.clients_per_round = 2;
        let rows: Vec<u64> = clients.iter().map(|s| s.len() as u64).collect();
        let mut learner = ToyLearner::new(toy_vocab(4), 4, 20.0);
        let mut server = FedAvgServer::start(&mut learner, rows.len(), Cow::Borrowed(&test), None, &cfg, None)?;
        server.register_rows(rows.clone())?;
        let plan = server.begin_round().unwrap();
        let client = plan.chosen[0];
        let (state, losses, digest) = honest(&mut server, &clients, &cfg, plan.round, client);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let floats = [0.0, -0.0, 1.0, -1.0, 1e30, -1e30, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE];
        let counts = [0, 1, rows[client] - 1, rows[client] + 1, u64::MAX, u64::MAX / 2, 1 << 32, 1 << 33];
        for _ in 0..300 {
            let mut update = state.clone();
            let mut steps = losses.clone();
            let (mut samples, mut seconds, mut round, mut who, mut digest_used) = (rows[client], 0.5, plan.round, client, digest.clone());
            let mut tampered = false;
            for _ in 0..rng.random_range(1..4) {
                tampered = true;
                match rng.random_range(0..7) {
                    0 => samples = counts[rng.random_range(0..counts.len())],
                    1 => seconds = floats[rng.random_range(0..floats.len())],
                    2 => round = rng.random_range(0..5),
                    3 => who = rng.random_range(0..6),
                    4 => digest_used = format!("{:x}", rng.random::<u64>()),
                    5 => {
                        let i = rng.random_range(0..steps.len());
                        steps[i] = (floats[rng.random_range(0..floats.len())], rng.random_range(0..40));
                    }
                    _ => {
                        let name = update.keys().nth(rng.random_range(0..update.len())).unwrap().clone();
                        let t = update[&name].clone();
                        let v = floats[rng.random_range(0..floats.len())];
                        update.insert(name, if rng.random_bool(0.5) { (t.ones_like()? * v)? } else { Tensor::zeros(rng.random_range(1..5), t.dtype(), &Device::Cpu)? });
                    }
                }
            }
            let reply = Reply { client: who, round, base_digest: &digest_used, update: &update, samples, step_losses: &steps, train_seconds: seconds };
            let result = server.accept(&learner, &reply);
            // A tampering that happened to leave the reply plausible (the same round drawn, a step
            // loss that is still finite and >= 0: the server cannot know a loss) may be accepted;
            // anything else is refused.
            let plausible_steps = steps.len() == losses.len() && steps.iter().zip(&losses).all(|(s, l)| s.1 == l.1 && s.0.is_finite() && s.0 >= 0.0);
            let honest_again = samples == rows[client] && seconds.is_finite() && seconds >= 0.0 && round == plan.round && who == client && digest_used == digest && plausible_steps && update.iter().all(|(n, t)| t.dims() == state[n].dims() && t.flatten_all().unwrap().to_vec1::<f32>().unwrap() == state[n].flatten_all().unwrap().to_vec1::<f32>().unwrap());
            if tampered && !honest_again {
                assert!(matches!(result, Err(FederationError::Refused { .. })), "accepted: {reply:?}");
            } else if result.is_ok() {
                break; // the one honest reply of this client is in
            }
        }
        let honest_reply = Reply { client, round: plan.round, base_digest: &digest, update: &state, samples: rows[client], step_losses: &losses, train_seconds: 0.5 };
        let _ = server.accept(&learner, &honest_reply);
        let row = server.finish_round(&mut learner)?;
        assert_eq!(row.clients, 1);
        Ok(())
    }
}
