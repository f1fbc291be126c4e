//! `audit`: what an honest but curious server learns from the uploads a run recorded
//! (`federation.record_uploads`), per method ([`slora_federation::audit`] for the attacks and
//! their rules). It reads only what the server received (each recorded client's update, and what
//! the round sent) and, for the shadow-client probe, the test rows, which the server holds; the
//! client shards are read for the truth the attacks are scored against, never by the attacks.
//!
//! The artifact holds `audit.json` (every recorded upload's scores, and the means per method) and
//! `audit.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slora_federation::audit::{self as attacks, ShadowProbe};
use slora_report::privacy::SetRecovery;
use slora_federation::{ClassifierLearner, Learner, Shard, State};

use super::federated::{self as fed, UPLOADS_DIR};
use crate::config::{BaselineMethod, Config};
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `audit` stage.
pub struct Audit;

/// The report of the stage.
pub const AUDIT_FILE: &str = "audit.json";

/// Test rows per label a shadow client trains on (one batch).
const SHADOW_ROWS_PER_LABEL: usize = 32;

/// One recorded upload, attacked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadAudit {
    /// Replicate seed.
    pub seed: u64,
    /// Metrics method (`fft`, `slora-stage1`, …).
    pub method: String,
    /// Global round.
    pub round: u32,
    /// Client (partition id).
    pub client: usize,
    /// Token recovery (`None`: the upload does not carry the word embeddings, or weight decay
    /// moves every row).
    pub tokens: Option<SetRecovery>,
    /// Rows of the word-embedding matrix, when the upload carries it.
    #[serde(default)]
    pub vocabulary: Option<usize>,
    /// The L2 norm of the update as received (what the clipping norm is chosen against).
    #[serde(default)]
    pub update_norm: f64,
    /// Label recovery (`None`: the upload does not carry the output bias).
    pub labels: Option<SetRecovery>,
    /// The client's true dominant label, and the probe's guess (`None`: no probe for the method).
    pub dominant: Option<u32>,
    /// See `dominant`.
    pub probe_guess: Option<u32>,
}

pub use slora_report::privacy::MethodLeakage;

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// The attacks' rules, in words.
    pub rules: BTreeMap<String, String>,
    /// Per method.
    pub methods: BTreeMap<String, MethodLeakage>,
    /// Every attacked upload.
    pub uploads: Vec<UploadAudit>,
}

impl Stage for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn code_version(&self) -> u32 {
        1
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition", "stage1", "decompose", "stage2", "baselines"]
    }

    fn across_seeds(&self) -> bool {
        true
    }

    fn params(&self, _cfg: &Config) -> Value {
        // Everything it reads is an upstream artifact.
        json!({ "shadow_rows_per_label": SHADOW_ROWS_PER_LABEL })
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let replicates: Vec<(u64, BTreeMap<String, crate::store::Artifact>)> = match ctx.replicates.is_empty() {
            true => vec![(ctx.config.run.seed, ctx.inputs.clone())],
            false => ctx.replicates.iter().map(|r| (r.seed, r.inputs.clone())).collect(),
        };
        if !ctx.config.federation.client_ranks.is_empty() {
            return Err(ctx.error("federation.client_ranks: the audit's shadow clients train one rank; audit a run whose clients share the global rank"));
        }
        let mut uploads = Vec::new();
        let mut num_labels = 0;
        for (seed, inputs) in &replicates {
            let cfg = ctx.config.for_seed(*seed);
            let get = |s: &str| inputs.get(s).ok_or_else(|| PipelineError::MissingInput { stage: "audit".into(), dep: format!("{s} (seed {seed})") });
            let data = fed::load_data(ctx, get("partition")?)?;
            num_labels = data.num_labels;
            let held_out = held_out_by_label(data.full_test.as_ref().unwrap_or(&data.test), data.num_labels);
            for stage in ["stage1", "stage2", "baselines"] {
                let dir = get(stage)?.dir.join(UPLOADS_DIR);
                let Ok(methods) = std::fs::read_dir(&dir) else { continue };
                let mut methods: Vec<String> = methods.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                methods.sort();
                for method in methods {
                    let mut learner = shadow_learner(&cfg, &method, data.num_labels, inputs)?;
                    uploads.extend(audit_method(&cfg, &dir.join(&method), &method, *seed, &data, &held_out, learner.as_mut())?);
                }
            }
        }
        if uploads.is_empty() {
            return Err(ctx.error("no recorded uploads in the upstream artifacts: set federation.record_uploads (rounds to record) and run the training stages"));
        }
        let summary = AuditSummary { rules: rules(), methods: leakage(&uploads, num_labels), uploads };
        let json_text = serde_json::to_string_pretty(&summary).map_err(|e| ctx.error(e.to_string()))?;
        slora_fsio::write_atomic(&out.join(AUDIT_FILE), json_text.as_bytes()).map_err(|e| ctx.error(format!("{AUDIT_FILE}: {e}")))?;
        slora_fsio::write_atomic(&out.join("audit.md"), markdown(&summary).as_bytes()).map_err(|e| ctx.error(format!("audit.md: {e}")))?;
        Ok(json!({ "methods": summary.methods }))
    }

    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        let text = std::fs::read_to_string(artifact.file("audit.md")).map_err(|e| PipelineError::stage("audit", format!("audit.md: {e}")))?;
        Ok((artifact.manifest.summary.clone(), text))
    }
}

/// The attacks' rules, as `audit.json` and the report state them.
pub fn rules() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tokens".to_string(), "the rows of the word-embedding update that are not all zero (a row no token of the round touched gets an update of exactly zero under a fresh AdamW without weight decay; with optim.weight_decay > 0 every row moves and the attack is not run); scored against every token of the client's shard, precision against the share of the vocabulary those tokens are".to_string()),
        ("labels".to_string(), "the labels whose output-layer bias went up (its gradient Σ(p − y) is negative for a label the client holds); scored against the client's label set".to_string()),
        ("probe".to_string(), format!("one shadow client per label trains from the round's download on up to {SHADOW_ROWS_PER_LABEL} test rows of that label; the guess of a client's dominant label is the label whose shadow update (without the head) has the highest cosine similarity to the client's update without the head")),
    ])
}

/// Up to [`SHADOW_ROWS_PER_LABEL`] rows of each label of `rows` (the first in order).
fn held_out_by_label(rows: &Shard, num_labels: usize) -> Vec<(u32, Shard)> {
    (0..num_labels as u32)
        .map(|label| {
            let picked: Vec<usize> = (0..rows.len()).filter(|&i| rows.labels[i] == label).take(SHADOW_ROWS_PER_LABEL).collect();
            (label, rows.select(&picked))
        })
        .collect()
}

/// The learner a shadow client of `method` trains with, built as the method's stage builds its
/// clients' (`None`: a method the probe cannot imitate: FedSA-LoRA, whose clients start from
/// their own B and head, and a learned mask).
fn shadow_learner(cfg: &Config, method: &str, num_labels: usize, inputs: &BTreeMap<String, crate::store::Artifact>) -> Result<Option<ClassifierLearner>, PipelineError> {
    if !cfg.stage1.mask.is_random() && (method == super::stage1::METHOD || method == "sft") {
        return Ok(None);
    }
    let base = super::base_model::load_base_model(cfg)?;
    if method == super::stage1::METHOD {
        let spec = fed::train_spec(cfg, slora_model::Mode::Sparse(slora_model::SparseSpec::new(cfg.stage1.density)), num_labels);
        let (model, _) = fed::build_classifier("audit", &base.config, &base.weights, &spec)?;
        return Ok(Some(ClassifierLearner::new(model, fed::optim_settings(cfg, cfg.stage1.lr.value()))));
    }
    if method == super::stage2::METHOD {
        let decompose = inputs.get("decompose").ok_or_else(|| PipelineError::MissingInput { stage: "audit".into(), dep: "decompose".into() })?;
        let init = slora_federation::read_safetensors(&decompose.file(super::decompose::LORA_INIT_FILE))?;
        return Ok(Some(super::stage2::learner_from_init(cfg, &base, &init, num_labels)?.0));
    }
    let parsed: BaselineMethod = serde_json::from_value(Value::String(method.to_string())).map_err(|_| PipelineError::stage("audit", format!("uploads/{method}: not a method")))?;
    if parsed == BaselineMethod::FedsaLora {
        return Ok(None);
    }
    let spec = fed::train_spec(cfg, fed::baseline_mode(cfg, parsed), num_labels);
    let (model, _) = fed::build_classifier("audit", &base.config, &base.weights, &spec)?;
    Ok(Some(fed::learner(cfg, parsed, model, cfg.baselines.lr(parsed).value())))
}

/// Every recorded upload of one method's run, attacked.
fn audit_method(cfg: &Config, dir: &Path, method: &str, seed: u64, data: &fed::Data, held_out: &[(u32, Shard)], mut learner: Option<&mut ClassifierLearner>) -> Result<Vec<UploadAudit>, PipelineError> {
    let err = |m: String| PipelineError::stage("audit", m);
    let mut rounds: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("{}: {e}", dir.display())))?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().strip_prefix("round-")?.parse().ok()?, e.path())))
        .collect();
    rounds.sort();
    let mut rows = Vec::new();
    let bar = crate::progress::progress_bar(rounds.len() as u64, format!("audit {method} seed {seed}"));
    for (round, round_dir) in rounds {
        let download = slora_federation::read_safetensors(&round_dir.join(slora_federation::privacy::RECORDED_DOWNLOAD))?;
        let probe = match learner.as_deref_mut() {
            Some(l) => Some(ShadowProbe::train(l, &download, held_out, cfg.run.seed, round, cfg.federation.batch_size)?),
            None => None,
        };
        let mut clients: Vec<usize> = std::fs::read_dir(&round_dir)
            .map_err(|e| err(format!("{}: {e}", round_dir.display())))?
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("client-")?.strip_suffix(".safetensors")?.parse().ok())
            .collect();
        clients.sort_unstable();
        for client in clients {
            let update: State = slora_federation::read_safetensors(&round_dir.join(slora_federation::privacy::recorded_upload_file(client)))?;
            let shard = data.clients.get(client).ok_or_else(|| err(format!("{}: client {client} is not in the partition", round_dir.display())))?;
            let is_head = |n: &str| learner.as_deref().map_or_else(|| fed::is_head_name(n), |l| l.is_head(n));
            let embedding = attacks::embedding_tensor(&update);
            let vocabulary = embedding.and_then(|e| update[e].dims().first().copied());
            // Weight decay moves every row a round touches or not: the rule does not apply.
            let tokens = match embedding.filter(|_| cfg.optim.weight_decay == 0.0) {
                Some(e) => attacks::recover_tokens(&update, e)?.map(|r| SetRecovery::of(&r, &attacks::token_set(shard))),
                None => None,
            };
            let update_norm = slora_federation::privacy::l2_norm(&update)?;
            let labels = match attacks::output_bias(&update, data.num_labels, is_head) {
                Some(b) => attacks::recover_labels(&update, b)?.map(|r| SetRecovery::of(&r, &attacks::label_set(shard))),
                None => None,
            };
            let probe_guess = match &probe {
                Some(p) => p.guess(&update, is_head)?,
                None => None,
            };
            rows.push(UploadAudit { seed, method: method.to_string(), round, client, tokens, vocabulary, update_norm, labels, dominant: attacks::dominant_label(shard), probe_guess });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// Per method, its recorded uploads' scores.
fn leakage(uploads: &[UploadAudit], num_labels: usize) -> BTreeMap<String, MethodLeakage> {
    let methods: BTreeSet<&str> = uploads.iter().map(|u| u.method.as_str()).collect();
    methods
        .into_iter()
        .map(|m| {
            let rows: Vec<&UploadAudit> = uploads.iter().filter(|u| u.method == m).collect();
            let leak = MethodLeakage::of(
                num_labels,
                rows.iter().map(|u| slora_privacy::UploadScores {
                    tokens: u.tokens,
                    vocabulary: u.vocabulary,
                    labels: u.labels,
                    probe_hit: u.dominant.zip(u.probe_guess).map(|(d, g)| d == g),
                }),
            );
            (m.to_string(), leak)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 })
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.1} %", 100.0 * x))
}

/// `audit.md`: the leakage table and the rules.
pub fn markdown(s: &AuditSummary) -> String {
    let mut t = String::from("# What the server learns from each method's uploads\n\n");
    t.push_str("| Method | Uploads | Token precision | Token chance | Token recall | Label precision | Label recall | Label chance | Probe accuracy | Probe chance | Median update norm |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (m, l) in &s.methods {
        t.push_str(&format!(
            "| {m} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |\n",
            l.uploads,
            pct(l.token_precision),
            pct(l.token_precision_chance),
            pct(l.token_recall),
            pct(l.label_precision),
            pct(l.label_recall),
            pct(l.label_precision_chance),
            pct(l.probe_accuracy),
            l.probe_guesses,
            pct(Some(l.probe_chance)),
            median(s.uploads.iter().filter(|u| &u.method == m).map(|u| u.update_norm).collect()).map_or("–".into(), |n| format!("{n:.3}"))
        ));
    }
    t.push_str("\n– : the upload does not carry what the attack reads (or no probe for the method).\n\nRules:\n");
    for (k, v) in &s.rules {
        t.push_str(&format!("- {k}: {v}\n"));
    }
    t
}
