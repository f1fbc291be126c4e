//! A synthetic but structured report input (four methods, 20 clients x 20 labels, 18 spectra) with
//! the shapes of a real run: used by the rendering tests, the `render_demo` example and the browser
//! check, so the report's look can be judged without training anything. Not measured data.

use std::collections::BTreeMap;

use crate::metrics::{Metrics, RoundMetrics};
use crate::partition::PartitionCounts;
use crate::report::ReportInputs;
use crate::spectrum::Spectra;

/// Deterministic pseudo-random numbers in [0, 1) (SplitMix64), enough for demo shapes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rows of one method: accuracy approaches `ceiling` with rate `speed` over `rounds` rounds.
pub fn demo_curve(method: &str, rounds: u32, start: f64, ceiling: f64, speed: f64, bytes_up: u64, seconds_per_round: f64) -> Vec<RoundMetrics> {
    let clients = 4u32;
    (0..=rounds)
        .map(|r| {
            let t = f64::from(r);
            let accuracy = ceiling - (ceiling - start) * (-speed * t).exp();
            RoundMetrics {
                method: method.to_string(),
                round: r,
                accuracy: Some(accuracy),
                loss: Some(3.0 * (1.0 - accuracy) + 0.2),
                train_loss: (r > 0).then(|| 2.8 * (1.0 - accuracy) + 0.1),
                bytes_up_per_client: if r == 0 { 0 } else { bytes_up },
                bytes_down_per_client: if r == 0 { 0 } else { bytes_up },
                cum_bytes_up: u64::from(r) * u64::from(clients) * bytes_up,
                wall_seconds: t * seconds_per_round + 1.5,
                clients: if r == 0 { 0 } else { clients },
                ..Default::default()
            }
        })
        .collect()
}

/// The demo inputs: FFT, LoRA, SFT and SLoRA (3 sparse + 3 LoRA rounds) on a MiniLM-sized model.
pub fn demo_inputs() -> ReportInputs {
    let fft_bytes = 17_226_240 * 4;
    let lora_bytes = (18 * 8 * (384 + 384) + 6 * 8 * 1152 + 148_244) * 4;
    let sparse_bytes = (110_000 + 148_244) * 4;
    let mut rows = Vec::new();
    rows.extend(demo_curve("fft", 6, 0.05, 0.71, 0.65, fft_bytes, 40.0));
    rows.extend(demo_curve("lora", 6, 0.05, 0.62, 0.35, lora_bytes, 22.0));
    rows.extend(demo_curve("sft", 6, 0.05, 0.66, 0.45, sparse_bytes, 25.0));
    rows.extend(demo_curve("slora-stage1", 3, 0.05, 0.66, 0.45, sparse_bytes, 25.0));
    let stage1_end = rows.last().cloned().expect("stage 1 rows");
    let mut stage2 = demo_curve("slora-stage2", 3, stage1_end.accuracy.unwrap_or_default(), 0.70, 0.6, lora_bytes, 22.0);
    stage2[0].accuracy = stage1_end.accuracy;
    rows.extend(stage2);

    let mut rng = SplitMix(42);
    let labels: Vec<String> = [
        "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
        "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
        "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
        "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
        "talk.religion.misc",
    ]
    .map(String::from)
    .to_vec();
    let mut triples = Vec::new();
    for label in 0..20u32 {
        // A skewed split of ~560 rows per label over 20 clients (few clients hold most of a label).
        let weights: Vec<f64> = (0..20).map(|_| rng.next().powi(8)).collect();
        let total: f64 = weights.iter().sum();
        for (client, w) in weights.iter().enumerate() {
            triples.push((client as u32, label, (560.0 * w / total).round() as u64));
        }
    }
    let partition = PartitionCounts::from_triples(&triples, labels).expect("demo partition");

    let kinds = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense"];
    let mut per_module = Vec::new();
    for layer in 0..3 {
        for (k, kind) in kinds.iter().enumerate() {
            // min(out, in) of every MiniLM-L3 matrix is the hidden size.
            let n = 384;
            let decay = 0.35 + 0.1 * k as f64 + 0.05 * layer as f64;
            let sv: Vec<f64> = (1..=n).map(|i| 0.05 * (i as f64).powf(-decay) * (1.0 + 0.05 * rng.next())).collect();
            let mut sv = sv;
            sv.sort_by(|a, b| b.total_cmp(a));
            per_module.push((format!("bert.encoder.layer.{layer}.{kind}"), sv));
        }
    }

    ReportInputs {
        personal: Vec::new(),
        privacy: None,
        run_name: "demo".into(),
        setup: vec![
            ("Data".into(), "synthetic demo input (not measured)".into()),
            ("Model".into(), "paraphrase-MiniLM-L3-v2 (shapes only)".into()),
            ("Clients".into(), "20, Dirichlet α = 0.1, 4 sampled per round".into()),
        ],
        metrics: Metrics { rows },
        partition: Some(partition),
        spectra: Some(Spectra::from_singular_values(per_module)),
        lora_rank: Some(8),
        switch_check: Some(serde_json::json!({
            "max_abs_logit_diff": 3.1e-6,
            "max_abs_weight_diff": 8.9e-8,
            "passed": true,
            "tolerance": 1e-4
        })),
        trainable_params: BTreeMap::from([
            ("fft".to_string(), 17_226_240),
            ("lora".to_string(), lora_bytes / 4),
            ("sft".to_string(), sparse_bytes / 4),
            ("slora".to_string(), lora_bytes / 4),
        ]),
        config_toml: "[run]\nname = \"demo\"\nseed = 42\n\n[partition]\nclients = 20\nscheme = \"dirichlet\"\nalpha = 0.1\n".into(),
        artifact_keys: BTreeMap::from([
            ("partition".to_string(), "3f1c0d6a".repeat(8)),
            ("stage1".to_string(), "a9b8c7d6".repeat(8)),
        ]),
        ..Default::default()
    }
}

/// Demo sweep: four heterogeneity levels where every method loses accuracy with label skew and the
/// parameter-efficient ones lose more (the shape the paper reports). Synthetic, not measured.
pub fn demo_sweep_points() -> Vec<crate::sweep::SweepPoint> {
    let levels = [("Dir α=1000 (≈IID)", "1000", 0.0), ("Dir α=1", "1", 0.04), ("Dir α=0.1", "0.1", 0.10), ("2 labels/client", "path", 0.18)];
    levels
        .iter()
        .map(|(label, value, skew)| {
            let mut rows = Vec::new();
            rows.extend(demo_curve("fft", 6, 0.05, 0.72 - skew, 0.6, 68_904_960, 40.0));
            rows.extend(demo_curve("lora", 6, 0.05, 0.66 - 1.8 * skew, 0.35, 1_256_000, 22.0));
            rows.extend(demo_curve("sft", 6, 0.05, 0.68 - 1.4 * skew, 0.45, 1_033_000, 25.0));
            rows.extend(demo_curve("slora-stage1", 3, 0.05, 0.68 - 1.4 * skew, 0.45, 1_033_000, 25.0));
            let mut s2 = demo_curve("slora-stage2", 3, 0.05, 0.71 - 1.1 * skew, 0.6, 1_256_000, 22.0);
            for r in &mut s2 {
                r.round += 3;
            }
            rows.extend(s2);
            let curves = Metrics { rows }.curves().expect("demo curves");
            crate::sweep::SweepPoint {
                label: label.to_string(),
                overrides: vec![("partition.alpha".into(), value.to_string())],
                run_name: format!("demo-{value}"),
                summary: crate::summary::Summary::from_curves(label, &curves, &BTreeMap::new()),
            }
        })
        .collect()
}
