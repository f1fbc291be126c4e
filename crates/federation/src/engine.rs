//! The FedAvg simulation loop: sample clients, train each locally from the global state, average
//! weighted by sample counts, evaluate, checkpoint.
//!
//! Standard FedAvg (McMahan et al. 2017) with a client-side AdamW: every sampled client starts each round
//! from the global trainable state with a FRESH optimizer (no moments carried across rounds or clients),
//! so the server state is the whole state of the run. Rounds are numbered globally
//! (`round_offset + local round`): SLoRA's stage 2 continues stage 1's numbering and so samples the same
//! clients in its round k as a baseline does in round `stage1.rounds + k`.

use std::borrow::Cow;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::aggregate::State;
use crate::checkpoint::CheckpointStore;
use crate::error::{FederationError, Result};
use crate::learner::{Learner, Shard};
use slora_metrics::RoundMetrics;
use crate::server::FedAvgServer;

use crate::client::{local_update, LocalRound};
use crate::config::{Aggregation, FedAvgConfig};

/// The result of a federated run.
#[derive(Debug)]
pub struct FedOutcome {
    /// One row per round, round 0 (before training) included.
    pub metrics: Vec<RoundMetrics>,
    /// The final global trainable state.
    pub state: State,
    /// The local round this run resumed after, if it resumed from a checkpoint.
    pub resumed_from: Option<u32>,
}

/// [`run_fedavg`], then, for a method that keeps part of its model on the clients (FedSA-LoRA),
/// each client's own model measured on `personal[c]`, its held-out rows ([`FedAvgServer::personal_evaluation`]).
pub fn run_fedavg_personal<L: Learner>(
    learner: &mut L,
    clients: &[Shard],
    test: &Shard,
    full_test: Option<&Shard>,
    cfg: &FedAvgConfig,
    checkpoints: Option<&CheckpointStore>,
    personal: &[Shard],
) -> Result<(FedOutcome, Option<crate::server::PersonalEvaluation>)> {
    let (outcome, server_personal) = run(learner, clients, test, full_test, cfg, checkpoints, Some(personal))?;
    Ok((outcome, server_personal))
}

/// Runs FedAvg. The learner's current trainable state is the initial global state (unless a checkpoint
/// in `checkpoints` is resumed); on return the learner holds the final global state.
///
/// `test` is what every evaluated round is measured on (the curve; it may be a subsample); the last
/// round is also measured on `full_test` when given, else `test` is taken to be the whole test set.
pub fn run_fedavg<L: Learner>(
    learner: &mut L,
    clients: &[Shard],
    test: &Shard,
    full_test: Option<&Shard>,
    cfg: &FedAvgConfig,
    checkpoints: Option<&CheckpointStore>,
) -> Result<FedOutcome> {
    Ok(run(learner, clients, test, full_test, cfg, checkpoints, None)?.0)
}

fn run<L: Learner>(
    learner: &mut L,
    clients: &[Shard],
    test: &Shard,
    full_test: Option<&Shard>,
    cfg: &FedAvgConfig,
    checkpoints: Option<&CheckpointStore>,
    personal: Option<&[Shard]>,
) -> Result<(FedOutcome, Option<crate::server::PersonalEvaluation>)> {
    cfg.validate(clients.len(), test)?;
    if let Some(client) = clients.iter().position(Shard::is_empty) {
        return Err(FederationError::EmptyClient { client });
    }
    let mut server = FedAvgServer::start(learner, clients.len(), Cow::Borrowed(test), full_test.map(Cow::Borrowed), cfg, checkpoints)?;
    server.register_rows(clients.iter().map(|s| s.len() as u64).collect())?;
    let progress = MultiProgress::new();
    match server.resumed_from() {
        Some(done) => progress.suspend(|| {
            tracing::info!("{}: resuming after round {} from {}", cfg.method, cfg.round_offset + done, checkpoints.unwrap().dir().display())
        }),
        None => {
            let row = &server.metrics()[0];
            progress.suspend(|| {
                tracing::info!("{} round {}: accuracy {:.4}, loss {:.4} (before training)", cfg.method, row.round, row.accuracy.unwrap_or(f64::NAN), row.loss.unwrap_or(f64::NAN))
            });
        }
    }

    let rounds_bar = progress.add(ProgressBar::new(cfg.rounds as u64));
    rounds_bar.set_style(bar_style("rounds"));
    rounds_bar.set_prefix(cfg.method.clone());
    rounds_bar.set_position(server.completed_rounds() as u64);

    while let Some(plan) = server.begin_round() {
        for &client in &plan.chosen {
            let global = server.client_start(client)?;
            let base_digest = server.download_digest(client)?;
            let client_start = Instant::now();
            let shard = &clients[client];
            let local = LocalRound { seed: cfg.seed, round: plan.round, client, local_epochs: cfg.local_epochs, batch_size: cfg.batch_size };
            let steps_bar = progress.add(ProgressBar::new(local.steps(shard) as u64));
            steps_bar.set_style(bar_style("steps"));
            steps_bar.set_prefix(format!("round {} client {client}", plan.round));
            let update = local_update(learner, shard, &global, &local, || steps_bar.inc(1));
            steps_bar.finish_and_clear();
            progress.remove(&steps_bar);
            let update = update?;
            let train_seconds = client_start.elapsed().as_secs_f64();
            // What the method keeps on the client (FedSA-LoRA's B and head) is not sent.
            let (sent, kept): (State, State) = update.state.into_iter().partition(|(name, _)| server.uploads(name));
            // DP-FedAvg: the client clips what it sends (and under local DP noises it).
            let sent = match &cfg.privacy {
                Some(dp) => crate::privacy::privatize_upload(&sent, &global, dp, cfg.seed, plan.round, client)?,
                None => sent,
            };
            let reply = crate::server::Reply {
                client,
                round: plan.round,
                base_digest: &base_digest,
                update: &sent,
                samples: shard.len() as u64,
                step_losses: &update.step_losses,
                train_seconds,
            };
            server.accept(learner, &reply)?;
            server.keep_on_client(client, kept, shard.len() as u64);
        }
        let row = server.finish_round(learner)?;
        progress.suspend(|| {
            tracing::info!(
                "{} round {}/{}: clients {:?}, train loss {:.4}, {}, up {} B/client, {:.1} s",
                cfg.method,
                row.round,
                cfg.round_offset + cfg.rounds,
                plan.chosen,
                row.train_loss.unwrap_or(f64::NAN),
                match (row.accuracy, row.loss) {
                    (Some(a), Some(l)) => format!("test accuracy {a:.4}, loss {l:.4}"),
                    _ => "not evaluated".to_string(),
                },
                row.bytes_up_per_client,
                row.wall_seconds
            )
        });
        rounds_bar.inc(1);
    }
    rounds_bar.finish_and_clear();
    let personal = match personal {
        Some(shards) if cfg.aggregation == Aggregation::SharedA => Some(server.personal_evaluation(learner, shards)?),
        _ => None,
    };
    let (metrics, state, resumed_from) = server.finish();
    Ok((FedOutcome { metrics, state, resumed_from }, personal))
}

fn bar_style(unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{prefix}} {{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} < {{eta_precise}}]"))
        .expect("valid progress template")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::{evaluate, length_sorted_batches};
    use crate::aggregate::WeightedAverage;
    use crate::sampling::sample_clients;
    use crate::toy::{toy_config, toy_data, toy_vocab, ToyLearner};

    fn config(rounds: u32) -> FedAvgConfig {
        toy_config(rounds)
    }

    fn same(a: &[RoundMetrics], b: &[RoundMetrics]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_results(y))
    }

    #[test]
    fn the_last_k_rounds_are_measured_on_every_test_row() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let mut cfg = config(5);
        cfg.full_test_last_k = 3;
        let out = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, Some(&test), &cfg, None)?;
        let full: Vec<bool> = out.metrics.iter().map(|m| m.full_test_accuracy.is_some()).collect();
        assert_eq!(full, [false, false, false, true, true, true]);
        assert!(out.metrics[3..].iter().all(|m| m.full_test_rows == test.len() as u64));
        // The default (1) measures the last round only, and the rows before it are unchanged.
        let one = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, Some(&test), &config(5), None)?;
        let full: Vec<bool> = one.metrics.iter().map(|m| m.full_test_accuracy.is_some()).collect();
        assert_eq!(full, [false, false, false, false, false, true]);
        assert_eq!(one.metrics[5].full_test_accuracy, out.metrics[5].full_test_accuracy);
        // No separate full set (the curve's rows are every row): a last-k round the curve skips is
        // measured anyway; an evaluated one's curve is its full pass.
        let mut sparse = config(5);
        sparse.full_test_last_k = 3;
        sparse.eval_every = 2;
        let whole = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &sparse, None)?;
        let full: Vec<bool> = whole.metrics.iter().map(|m| m.full_test_accuracy.is_some()).collect();
        assert_eq!(full, [false, false, false, true, true, true]);
        assert_eq!(whole.metrics[3].accuracy, None, "round 3 is not a curve round");
        assert_eq!(whole.metrics[4].full_test_accuracy, whole.metrics[4].accuracy);
        Ok(())
    }

    #[test]
    fn learns_and_accounts_bytes() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let mut learner = ToyLearner::new(toy_vocab(4), 4, 20.0);
        let out = run_fedavg(&mut learner, &clients, &test, None, &config(8), None)?;
        assert_eq!(out.metrics.len(), 9);
        let first = out.metrics[0].accuracy.unwrap();
        let last = out.metrics[8].accuracy.unwrap();
        assert_eq!(first, 0.25, "zero model predicts class 0 on a balanced test set");
        assert!(last > 0.8, "accuracy {last}");
        // 3 clients per round, fresh optimizer each.
        assert_eq!(learner.optimizers_created, 8 * 3);
        let state_bytes = ((toy_vocab(4) * 4 + 4) * 4) as u64;
        for (i, m) in out.metrics.iter().enumerate() {
            assert_eq!(m.round, i as u32);
            let (up, clients) = if i == 0 { (0, 0) } else { (state_bytes, 3) };
            assert_eq!((m.bytes_up_per_client, m.bytes_down_per_client, m.clients), (up, up, clients));
            assert_eq!(m.cum_bytes_up, state_bytes * 3 * i as u64);
        }
        assert!(out.metrics[0].train_loss.is_none() && out.metrics[1].train_loss.is_some());
        Ok(())
    }

    #[test]
    fn deterministic_and_resumes_bit_identically() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let mut cfg = config(4);
        cfg.eval_every = 3; // rounds 3 and 4 (the last) are evaluated
        let full_dir = tempfile::tempdir()?;
        let store = CheckpointStore::open(full_dir.path(), "toy")?;
        let full = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, Some(&store))?;
        assert!(full.resumed_from.is_none());
        assert!(full.metrics[1].accuracy.is_none() && full.metrics[3].accuracy.is_some() && full.metrics[4].accuracy.is_some());
        let again = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None)?;
        assert!(same(&full.metrics, &again.metrics));

        // A run that "died" after round 3: drop round 4's checkpoint and rerun from a fresh learner.
        std::fs::remove_file(full_dir.path().join("round-00004.json"))?;
        let resumed = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, Some(&store))?;
        assert_eq!(resumed.resumed_from, Some(3));
        assert!(same(&full.metrics, &resumed.metrics));
        for (name, t) in &full.state {
            let diff = (t - &resumed.state[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{name}");
        }
        // A finished run resumes to its end without training.
        let mut idle = ToyLearner::new(toy_vocab(4), 4, 20.0);
        let done = run_fedavg(&mut idle, &clients, &test, None, &cfg, Some(&store))?;
        assert_eq!((done.resumed_from, idle.optimizers_created), (Some(4), 0));
        assert!(same(&full.metrics, &done.metrics));
        Ok(())
    }

    /// What a deployment does (each client a separate learner, the server sampling and averaging in
    /// the sampled order) gives the in-process engine's global state bit for bit.
    #[test]
    fn separate_local_updates_and_the_average_reproduce_the_engine() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let cfg = config(3);
        let engine = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None)?;
        let mut global = ToyLearner::new(toy_vocab(4), 4, 20.0).trainable_state()?;
        for round in 1..=cfg.rounds {
            let mut sum = WeightedAverage::new();
            for client in sample_clients(clients.len(), cfg.clients_per_round, cfg.seed, round) {
                let local = LocalRound { seed: cfg.seed, round, client, local_epochs: cfg.local_epochs, batch_size: cfg.batch_size };
                // A fresh learner per client, as on its own machine.
                let update = local_update(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients[client], &global, &local, || {})?;
                assert_eq!(update.step_losses.len(), local.steps(&clients[client]));
                sum.add(&update.state, clients[client].len() as u64)?;
            }
            global = sum.finish()?;
        }
        for (name, t) in &engine.state {
            assert_eq!(t.flatten_all()?.to_vec1::<f32>()?, global[name].flatten_all()?.to_vec1::<f32>()?, "{name}");
        }
        Ok(())
    }

    #[test]
    fn round_offset_continues_numbering_sampling_and_bytes() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let mut cfg = config(2);
        cfg.round_offset = 5;
        cfg.cum_bytes_up_start = 1000;
        let out = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None)?;
        assert_eq!(out.metrics.iter().map(|m| m.round).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert_eq!(out.metrics[0].cum_bytes_up, 1000);
        assert_eq!(out.metrics[2].cum_bytes_up, 1000 + 2 * 3 * out.metrics[1].bytes_up_per_client);
        Ok(())
    }

    #[test]
    fn switch_payload_full_test_and_seconds_are_accounted() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let mut cfg = config(2);
        cfg.switch_bytes_per_client = 1000;
        cfg.cum_bytes_down_start = 7;
        cfg.setup_server_seconds = 2.5;
        let curve = test.select(&(0..8).collect::<Vec<_>>());
        let out = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &curve, Some(&test), &cfg, None)?;
        let state = ((toy_vocab(4) * 4 + 4) * 4) as u64;
        let m = &out.metrics;
        assert_eq!((m[0].server_seconds, m[0].cum_bytes_down, m[0].eval_rows), (2.5, 7, 8));
        // The payload is charged once, in the first round, and sent to all 6 clients.
        assert_eq!((m[1].bytes_down_per_client, m[1].bytes_down_switch_per_client), (state + 1000, 1000));
        assert_eq!((m[2].bytes_down_per_client, m[2].bytes_down_switch_per_client), (state, 0));
        assert_eq!(m[1].cum_bytes_down, 7 + 3 * state + 6 * 1000);
        assert_eq!(m[2].cum_bytes_down, 7 + 6 * state + 6 * 1000);
        // The curve uses its 8 rows; the last round is also measured on every test row.
        assert_eq!((m[1].full_test_accuracy, m[1].full_test_rows), (None, 0));
        assert_eq!((m[2].eval_rows, m[2].full_test_rows), (8, test.len() as u64));
        let direct = evaluate(&ToyLearner::from_state(&out.state)?, &test, &length_sorted_batches(&test, 16))?;
        assert_eq!(m[2].full_test_accuracy, Some(direct.accuracy()));
        assert!(m[1..].iter().all(|r| r.train_seconds > 0.0 && r.server_seconds >= 0.0));
        // Without a separate full test set, the last curve evaluation is the full one.
        let plain = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &config(2), None)?;
        assert_eq!(plain.metrics[2].full_test_accuracy, plain.metrics[2].accuracy);
        // A run whose end nothing ranks skips the full pass.
        let mut skip = config(2);
        skip.final_full_test = false;
        let s = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &curve, Some(&test), &skip, None)?;
        assert_eq!((s.metrics[2].full_test_rows, s.metrics[2].eval_rows), (0, 8));
        assert_eq!(s.metrics[2].final_accuracy(), s.metrics[2].accuracy);
        Ok(())
    }

    #[test]
    fn diverging_loss_names_round_and_client_and_keeps_last_checkpoint() -> anyhow::Result<()> {
        let (clients, test) = toy_data(6, 4, 30);
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::open(dir.path(), "toy")?;
        let err = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, f64::INFINITY), &clients, &test, None, &config(3), Some(&store))
            .unwrap_err();
        let FederationError::NonFiniteLoss { round, client, .. } = err else { panic!("wrong error {err}") };
        assert_eq!(round, 1);
        assert!(sample_clients(6, 3, 42, 1).contains(&client));
        assert!(err.to_string().contains("round 1"), "{err}");
        assert_eq!(store.latest()?.unwrap().completed_rounds, 0, "round 0 checkpoint kept");
        Ok(())
    }

    #[test]
    fn bad_settings_are_rejected() {
        let (clients, test) = toy_data(3, 4, 5);
        let mut cfg = config(1);
        cfg.clients_per_round = 4;
        let err = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None).unwrap_err();
        assert!(err.to_string().contains("federation.clients_per_round"), "{err}");
        let mut empty = clients.clone();
        empty[1] = Shard::default();
        let err = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &empty, &test, None, &config(1), None).unwrap_err();
        assert!(matches!(err, FederationError::EmptyClient { client: 1 }));
    }

    #[test]
    fn eval_batches_cover_every_row_once_sorted_by_length() {
        let (_, test) = toy_data(1, 4, 5);
        let batches = length_sorted_batches(&test, 16);
        let mut all: Vec<usize> = batches.concat();
        let lens: Vec<usize> = all.iter().map(|&i| test.input_ids[i].len()).collect();
        assert!(lens.windows(2).all(|w| w[0] <= w[1]));
        all.sort_unstable();
        assert_eq!(all, (0..test.len()).collect::<Vec<_>>());
    }
}
