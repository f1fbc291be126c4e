//! Issue 12's core promise, without the network: clients that each hold one shard and their own
//! model, trained through `slora::Client` from the same config, with the server's seeded sampling
//! and FedAvg in between, reproduce the in-process `pipeline` run round by round, bit for bit.
//! (Needs ../shared: the CI config's data and model.)

use std::path::PathBuf;

use slora_pipeline::config::parse_set;
use slora_pipeline::runner::{Force, Runner};
use slora_pipeline::{Config, Store};

#[test]
fn separate_clients_reproduce_the_in_process_lora_run_bit_for_bit() -> anyhow::Result<()> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ci.toml");
    let sets = vec!["baselines.methods=[\"lora\"]".to_string()];
    let overrides = sets.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?;
    let cfg = Config::load(Some(&config), &overrides)?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut runner = Runner::new(&cfg, &store, Force::Nothing);
    let partition = runner.run("partition")?;
    let baselines = runner.run("baselines")?;
    let metrics: Vec<_> = slora_federation::metrics::read_parquet(&baselines.file("metrics.parquet"))?.into_iter().filter(|m| m.method == "lora" && m.round > 0).collect();
    let in_process: Vec<f64> = metrics.iter().map(|m| m.train_loss.expect("trained rounds have a train loss")).collect();

    let n = cfg.partition.clients;
    let mut clients = (0..n)
        .map(|i| slora::Client::open(&config, &sets, "lora", &partition.file(&slora_data::shard::client_file_name(i))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut global = clients[0].state()?;
    let mut deployed = Vec::new();
    for round in 1..=in_process.len() as u32 {
        let mut updates = Vec::new();
        let (mut loss_sum, mut rows) = (0.0f64, 0u64);
        for c in slora::sample_clients(n, cfg.federation.clients_per_round, cfg.run.seed, round)? {
            let (state, losses) = clients[c].fit(&global, round, c)?;
            for (loss, r) in losses {
                loss_sum += loss * r as f64;
                rows += r as u64;
            }
            updates.push((state, clients[c].rows() as u64));
        }
        global = slora::fedavg(&updates)?;
        deployed.push(loss_sum / rows as f64);
    }
    assert_eq!(deployed, in_process, "train loss per round, deployed vs in-process");
    // The final global state scores what the in-process run reported, on every test row.
    let last = metrics.last().expect("rounds");
    let eval = clients[0].evaluate(&global, &partition.file("test.parquet"))?;
    assert_eq!((eval.accuracy, eval.rows), (last.final_accuracy().expect("final accuracy"), last.full_test_rows.max(last.eval_rows)));
    println!("deployed: final accuracy {:.4} on {} rows, train losses {deployed:?}", eval.accuracy, eval.rows);
    Ok(())
}
