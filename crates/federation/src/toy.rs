//! A tiny softmax-regression [`Learner`] over bag-of-token features, for the engine's tests.

use candle_core::{DType, Device, Tensor, Var, D};

use crate::aggregate::State;
use crate::error::Result;
use crate::learner::{EvalSums, Learner, Shard};

/// Softmax regression trained with plain SGD; `vocab` token ids, `classes` labels.
pub struct ToyLearner {
    w: Var,
    b: Var,
    vocab: usize,
    lr: f64,
    /// Number of `begin_local` calls (a fresh optimizer each).
    pub optimizers_created: usize,
}

impl ToyLearner {
    /// Zero-initialised model.
    pub fn new(vocab: usize, classes: usize, lr: f64) -> Self {
        let dev = Device::Cpu;
        Self {
            w: Var::zeros((vocab, classes), DType::F32, &dev).unwrap(),
            b: Var::zeros(classes, DType::F32, &dev).unwrap(),
            vocab,
            lr,
            optimizers_created: 0,
        }
    }

    /// A model holding `state` (as [`Learner::trainable_state`] returned it).
    pub fn from_state(state: &State) -> Result<Self> {
        let (vocab, classes) = state["toy.weight"].dims2()?;
        let mut learner = Self::new(vocab, classes, 0.0);
        learner.set_trainable_state(state)?;
        Ok(learner)
    }

    fn features(&self, ids: &[&[u32]]) -> Result<Tensor> {
        let mut x = vec![0f32; ids.len() * self.vocab];
        for (r, row) in ids.iter().enumerate() {
            for &t in row.iter() {
                x[r * self.vocab + t as usize] += 1.0 / row.len() as f32;
            }
        }
        Ok(Tensor::from_vec(x, (ids.len(), self.vocab), &Device::Cpu)?)
    }

    /// Per-row losses and logits.
    fn forward(&self, ids: &[&[u32]], labels: &[u32]) -> Result<(Tensor, Tensor)> {
        let logits = self.features(ids)?.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?;
        let max = logits.max_keepdim(D::Minus1)?;
        let shifted = logits.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let log_probs = shifted.broadcast_sub(&lse)?;
        let idx = Tensor::new(labels, &Device::Cpu)?.unsqueeze(1)?;
        let losses = log_probs.gather(&idx, 1)?.squeeze(1)?.neg()?;
        Ok((losses, logits))
    }
}

impl Learner for ToyLearner {
    fn trainable_state(&self) -> Result<State> {
        let mut s = State::new();
        s.insert("toy.weight".into(), self.w.as_tensor().copy()?);
        s.insert("toy.bias".into(), self.b.as_tensor().copy()?);
        Ok(s)
    }

    fn set_trainable_state(&mut self, state: &State) -> Result<()> {
        self.w.set(&state["toy.weight"])?;
        self.b.set(&state["toy.bias"])?;
        Ok(())
    }

    fn begin_local(&mut self, _total_steps: usize) -> Result<()> {
        self.optimizers_created += 1;
        Ok(())
    }

    fn train_step(&mut self, ids: &[&[u32]], labels: &[u32], _dropout_seed: u64) -> Result<f64> {
        let (losses, _) = self.forward(ids, labels)?;
        let loss = losses.mean_all()?;
        let grads = loss.backward()?;
        for v in [&self.w, &self.b] {
            let g = grads.get(v.as_tensor()).expect("gradient");
            v.set(&(v.as_tensor() - (g * self.lr)?)?)?;
        }
        Ok(loss.to_scalar::<f32>()? as f64)
    }

    fn importance(&mut self, ids: &[&[u32]], labels: &[u32], names: &[String]) -> Result<State> {
        let (losses, _) = self.forward(ids, labels)?;
        let grads = losses.mean_all()?.backward()?;
        names
            .iter()
            .map(|n| {
                let v = match n.as_str() {
                    "toy.weight" => &self.w,
                    "toy.bias" => &self.b,
                    other => return Err(crate::error::FederationError::StateMismatch(format!("no tensor `{other}`"))),
                };
                let g = grads.get(v.as_tensor()).expect("gradient");
                Ok((n.clone(), (g * v.as_tensor())?.abs()?))
            })
            .collect()
    }

    fn eval_batch(&self, ids: &[&[u32]], labels: &[u32]) -> Result<EvalSums> {
        let (losses, logits) = self.forward(ids, labels)?;
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        Ok(EvalSums {
            loss_sum: losses.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?,
            correct: pred.iter().zip(labels).filter(|(p, l)| p == l).count() as u64,
            rows: labels.len() as u64,
        })
    }
}

/// A synthetic task: label `l` rows mostly contain tokens `4l..4l+4` plus noise tokens ≥ 4·classes.
/// Client `c` holds labels skewed towards `c % classes` (non-IID).
pub fn toy_data(clients: usize, classes: usize, rows_per_client: usize) -> (Vec<Shard>, Shard) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let row = |label: u32, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<u32> {
        let len = rng.random_range(3..9);
        (0..len)
            .map(|_| if rng.random_bool(0.6) { 4 * label + rng.random_range(0..4) } else { 4 * classes as u32 + rng.random_range(0..8) })
            .collect()
    };
    let shards = (0..clients)
        .map(|c| {
            let n = rows_per_client + c; // unequal sizes: weights matter
            let labels: Vec<u32> = (0..n)
                .map(|_| if rng.random_bool(0.7) { (c % classes) as u32 } else { rng.random_range(0..classes as u32) })
                .collect();
            Shard { input_ids: labels.iter().map(|&l| row(l, &mut rng)).collect(), labels }
        })
        .collect();
    let labels: Vec<u32> = (0..200).map(|i| (i % classes) as u32).collect();
    let test = Shard { input_ids: labels.iter().map(|&l| row(l, &mut rng)).collect(), labels };
    (shards, test)
}

/// Vocabulary size of [`toy_data`].
pub fn toy_vocab(classes: usize) -> usize {
    4 * classes + 8
}

/// FedAvg settings for the toy runs: `rounds` rounds, 3 clients a round, batch 8, seed 42.
pub fn toy_config(rounds: u32) -> crate::config::FedAvgConfig {
    crate::config::FedAvgConfig {
        method: "fft".into(),
        rounds,
        round_offset: 0,
        clients_per_round: 3,
        local_epochs: 1,
        batch_size: 8,
        eval_every: 1,
        eval_batch_size: 16,
        seed: 42,
        cum_bytes_up_start: 0,
        wall_seconds_start: 0.0,
        cum_bytes_down_start: 0,
        switch_bytes_per_client: 0,
        setup_server_seconds: 0.0,
        setup: crate::config::SetupCosts::default(),
        final_full_test: true,
        full_test_last_k: 1,
        aggregation: crate::config::Aggregation::Mean,
        client_ranks: Vec::new(),
        max_update_norm: None,
        privacy: None,
        record_rounds: Default::default(),
    }
}
