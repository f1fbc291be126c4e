//! Temporary: median train-step and eval-batch time per mode (sizing the default experiment).
use std::time::Instant;

use slora_federation::{ClassifierLearner, Learner, OptimSettings, Schedule};
use slora_model::optim::AdamWConfig;
use slora_model::{Classifier, EncoderConfig, LoraSpec, Mode, ModelFiles, SparseSpec, TrainSpec, Weights};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = &args[1];
    let seq: usize = args[2].parse()?;
    let modes: Vec<&str> = args[3].split(',').collect();
    let files = ModelFiles::resolve(model_dir, "main")?;
    let cfg = EncoderConfig::from_file(&files.config)?;
    let w = Weights::load(&files.weights, &cfg)?;
    let rows: Vec<Vec<u32>> = (0..32).map(|i| (0..seq).map(|t| (1000 + (i * 7 + t * 13) % 20000) as u32).collect()).collect();
    let ids: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let labels: Vec<u32> = (0..32).map(|i| (i % 20) as u32).collect();
    for m in modes {
        let mode = match m {
            "fft" => Mode::Full,
            "lora" => Mode::Lora(LoraSpec::new(8, 16.0)),
            "sft" => Mode::Sparse(SparseSpec::new(0.01)),
            _ => Mode::Frozen,
        };
        let (model, _) = Classifier::new(&cfg, &w, &TrainSpec::new(mode, 20, 1))?;
        let settings = OptimSettings { adamw: AdamWConfig { lr: 1e-4, weight_decay: 0.0, ..Default::default() }, schedule: Schedule::Constant };
        let mut l = ClassifierLearner::new(model, settings);
        l.begin_local(100)?;
        let mut t = vec![];
        for s in 0..6 {
            let st = Instant::now();
            l.train_step(&ids, &labels, s)?;
            t.push(st.elapsed().as_secs_f64());
        }
        let mut e = vec![];
        for _ in 0..3 {
            let st = Instant::now();
            l.eval_batch(&ids, &labels)?;
            e.push(st.elapsed().as_secs_f64());
        }
        t.remove(0);
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        e.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{model_dir} seq {seq} {m}: train step median {:.3} s (min {:.3}), eval batch32 median {:.3} s", t[t.len() / 2], t[0], e[1]);
    }
    Ok(())
}
