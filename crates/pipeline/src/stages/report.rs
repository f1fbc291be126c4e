//! `report`: the run's report from every upstream artifact — metrics of all methods, the partition's
//! client x label counts, Stage-1 spectra, the switch check, the config and the artifact keys.
//!
//! The artifact holds the rendered report (`index.html`, `report.md`, `figures/*.svg`) and
//! `summary.json` (final metrics per method, read by `pipeline compare` and `pipeline sweep`). It is
//! cached like every stage; [`publish`] copies it to `<report.dir>/<run.name>/` after every run, hit or
//! miss, so a deleted or stale published copy is always replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use slora_report::{
    build_report, output::report_files, write_dir_atomically, MethodRates, Metrics, PartitionCounts, ReportInputs, Spectra,
    SummaryOptions, Target,
};

use super::summaries::{
    BaselinesSummary, DecomposeSummary, PartitionSummary, ReportSummary, ReportedMethod, Stage1Summary, Stage2Summary, StageSummary,
};
use crate::config::{Config, PartitionScheme};
use crate::error::{IoContext, PipelineError};
use crate::stage::{Stage, StageCtx};
use crate::store::{Artifact, MANIFEST_FILE};

/// The `report` stage.
pub struct Report;

/// The machine-readable summary inside the artifact and the published report.
pub const SUMMARY_FILE: &str = "summary.json";

/// Maps a report-crate error to this stage's error.
fn report_err(e: slora_report::ReportError) -> PipelineError {
    PipelineError::stage("report", e.to_string())
}

impl Stage for Report {
    fn name(&self) -> &'static str {
        "report"
    }

    fn code_version(&self) -> u32 {
        2 // replicates, confidence intervals, cost audit, learning rates
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition", "stage1", "decompose", "stage2", "baselines"]
    }

    fn across_seeds(&self) -> bool {
        true
    }

    fn publish(&self, cfg: &Config, artifact: &Artifact) -> Result<Option<PathBuf>, PipelineError> {
        publish(cfg, artifact).map(Some)
    }

    /// The whole config (it is printed in the report) except what does not change its content:
    /// `run.threads` and where the report is published.
    fn params(&self, cfg: &Config) -> Value {
        let mut config = serde_json::to_value(cfg).unwrap_or(Value::Null);
        if let Some(run) = config.get_mut("run").and_then(Value::as_object_mut) {
            run.remove("threads");
        }
        if let Some(report) = config.get_mut("report").and_then(Value::as_object_mut) {
            report.remove("dir");
        }
        // The modules that train, as the training stages key them (unset lists resolved).
        config["adapter"] = super::base_model::adapter_params(cfg);
        json!({ "run_name": cfg.run.name, "config": config, "tuned_from": cfg.tuned_from })
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let inputs = gather_inputs(ctx)?;
        let (report, summary) = build_report(&inputs).map_err(report_err)?;
        for (rel, contents) in report_files(&report, &[(SUMMARY_FILE, summary.to_json())]) {
            let path = out.join(&rel);
            slora_fsio::write_atomic(&path, contents.as_bytes()).at(&path)?;
        }
        let figures: Vec<String> = report.figures().iter().map(|f| f.id.clone()).collect();
        let methods = summary.methods.iter().map(|(m, s)| (m.clone(), ReportedMethod { accuracy: s.accuracy, rounds: s.rounds })).collect();
        Ok(ReportSummary { run_name: ctx.config.run.name.clone(), figures, methods }.to_value())
    }
}

/// Where a config's report is published: `<report.dir>/<run.name>/`.
pub fn published_dir(cfg: &Config) -> PathBuf {
    cfg.report.dir.join(&cfg.run.name)
}

/// Copies the report artifact's files (all but the manifest) to `<report.dir>/<run.name>/`, replacing
/// what was there in one rename. Returns the published folder.
pub fn publish(cfg: &Config, artifact: &Artifact) -> Result<PathBuf, PipelineError> {
    let mut files = Vec::new();
    for rel in artifact.manifest.files.keys() {
        if rel == MANIFEST_FILE {
            continue;
        }
        let path = artifact.file(rel);
        files.push((rel.clone(), std::fs::read_to_string(&path).at(&path)?));
    }
    let dir = published_dir(cfg);
    write_dir_atomically(&dir, &files).map_err(report_err)?;
    tracing::info!("report: {}", dir.join("index.html").display());
    Ok(dir)
}

/// Reads every upstream artifact into the report's plain inputs.
fn gather_inputs(ctx: &StageCtx) -> Result<ReportInputs, PipelineError> {
    let cfg = ctx.config;
    let partition = ctx.input("partition")?;
    let stage1 = ctx.input("stage1")?;
    let decompose = ctx.input("decompose")?;
    let stage2 = ctx.input("stage2")?;
    let baselines = ctx.input("baselines")?;

    let mut replicates = Vec::new();
    for r in &ctx.replicates {
        let get = |s: &str| {
            r.inputs.get(s).ok_or_else(|| PipelineError::MissingInput { stage: "report".into(), dep: format!("{s} (seed {})", r.seed) })
        };
        let files = [get("baselines")?.file("metrics.parquet"), get("stage1")?.file("metrics.parquet"), get("stage2")?.file("metrics.parquet")];
        replicates.push((r.seed, Metrics::read_parquet_files(&files).map_err(report_err)?));
    }
    let metrics = match replicates.first() {
        Some((_, m)) => m.clone(),
        None => Metrics::read_parquet_files(&[
            baselines.file("metrics.parquet"),
            stage1.file("metrics.parquet"),
            stage2.file("metrics.parquet"),
        ])
        .map_err(report_err)?,
    };
    let partition_counts = PartitionCounts::read_parquet(&partition.file(super::partition::STATS_FILE)).map_err(report_err)?;
    let spectrum_path = decompose.file("spectrum.parquet");
    let spectra = Spectra::read_parquet(&spectrum_path).map_err(report_err)?;
    let lora_rank = Spectra::read_rank(&spectrum_path).map_err(report_err)?.or(Some(cfg.lora.r));

    let (s1, s2, base) = (Stage1Summary::of(stage1)?, Stage2Summary::of(stage2)?, BaselinesSummary::of(baselines)?);
    // FedSA-LoRA's evaluation on the clients' own rows, per seed.
    let mut personal = Vec::new();
    let per_seed: Vec<(u64, BaselinesSummary)> = match ctx.replicates.is_empty() {
        true => vec![(cfg.run.seed, base.clone())],
        false => ctx.replicates.iter().filter_map(|r| Some((r.seed, BaselinesSummary::of(r.inputs.get("baselines")?).ok()?))).collect(),
    };
    for (seed, summary) in &per_seed {
        for (method, run) in &summary.methods {
            if let Some(p) = run.personal {
                personal.push(slora_report::summary::PersonalRun {
                    seed: *seed,
                    method: method.clone(),
                    personal_accuracy: p.personal_accuracy,
                    global_accuracy_same_rows: p.global_accuracy_same_rows,
                });
            }
        }
    }
    let mut trainable = BTreeMap::new();
    trainable.insert("slora-stage1".to_string(), s1.run.trainable_params as u64);
    trainable.insert("slora-stage2".to_string(), s2.run.trainable_params as u64);
    for (m, s) in &base.methods {
        trainable.insert(m.clone(), s.run.trainable_params as u64);
    }
    let mut artifact_keys: BTreeMap<String, String> = if ctx.replicates.len() > 1 {
        ctx.replicates
            .iter()
            .flat_map(|r| r.inputs.iter().map(move |(stage, a)| (format!("seed {} {stage}", r.seed), a.key.clone())))
            .collect()
    } else {
        ctx.inputs.iter().map(|(stage, a)| (stage.clone(), a.key.clone())).collect()
    };
    artifact_keys.insert("report".into(), ctx.key.clone());
    if let Some(t) = &ctx.tuning {
        artifact_keys.insert("tune".into(), t.key.clone());
    }

    // Every effective learning rate, per reported method.
    let mut rates: BTreeMap<String, MethodRates> = BTreeMap::new();
    for (m, s) in &base.methods {
        rates.insert(m.clone(), MethodRates { lr: Some(s.lr), head_lr: Some(s.head_lr) });
    }
    rates.insert("slora".into(), MethodRates { lr: Some(s2.lr), head_lr: Some(s2.head_lr) });
    let target = target(cfg);

    Ok(ReportInputs {
        run_name: cfg.run.name.clone(),
        setup: setup_lines(cfg, &PartitionSummary::of(partition)?),
        metrics,
        partition: Some(partition_counts),
        spectra: Some(spectra),
        lora_rank,
        switch_check: Some(serde_json::to_value(DecomposeSummary::of(decompose)?.switch_check)?),
        trainable_params: trainable,
        config_toml: cfg.to_toml(),
        artifact_keys,
        replicates,
        options: SummaryOptions { last_k: cfg.report.last_k, target, rates },
        tuning: ctx.tuning.as_ref().map(|a| a.manifest.summary.clone()),
        switch_cost: Some(serde_json::to_value(&s2.switch)?),
        personal,
        privacy: crate::privacy::plan(cfg)?,
    })
}

/// What a run outside the artifact store (a Flower deployment) knows of its methods: the trainable
/// parameters and learning rates per metrics `method` (SLoRA's rates under `slora`), and the switch's
/// cost.
#[derive(Debug, Clone, Default)]
pub struct ExternalRun {
    /// Trainable parameters per metrics method.
    pub trainable_params: BTreeMap<String, u64>,
    /// Learning rates per reported method.
    pub rates: BTreeMap<String, MethodRates>,
    /// The switch's cost (bytes per client and what they are), if SLoRA ran.
    pub switch_cost: Option<Value>,
    /// Extra facts under the title (how the run was deployed).
    pub setup: Vec<(String, String)>,
}

/// The report stage's document and figures for metrics that came from outside the artifact store (a
/// Flower deployment's `metrics.parquet`), with the partition folder's counts; without the Stage-1
/// spectra and switch check, which only the `decompose` stage records. Written into `out` (replaced
/// whole), with `summary.json`.
pub fn render_external(cfg: &Config, partition_dir: &Path, metrics_file: &Path, run: &ExternalRun, out: &Path) -> Result<(), PipelineError> {
    let partition = Artifact::load(partition_dir)?;
    let metrics = Metrics::read_parquet_files(&[metrics_file]).map_err(report_err)?;
    let partition_counts = PartitionCounts::read_parquet(&partition.file(super::partition::STATS_FILE)).map_err(report_err)?;
    let target = target(cfg);
    let mut setup = setup_lines(cfg, &PartitionSummary::of(&partition)?);
    setup.extend(run.setup.iter().cloned());
    let inputs = ReportInputs {
        run_name: cfg.run.name.clone(),
        setup,
        metrics,
        partition: Some(partition_counts),
        spectra: None,
        lora_rank: Some(cfg.lora.r),
        switch_check: None,
        trainable_params: run.trainable_params.clone(),
        config_toml: cfg.to_toml(),
        artifact_keys: BTreeMap::from([("partition".to_string(), partition.key.clone())]),
        personal: Vec::new(),
        privacy: crate::privacy::plan(cfg)?,
        replicates: Vec::new(),
        options: SummaryOptions { last_k: cfg.report.last_k, target, rates: run.rates.clone() },
        tuning: None,
        switch_cost: run.switch_cost.clone(),
    };
    let (report, summary) = build_report(&inputs).map_err(report_err)?;
    write_dir_atomically(out, &report_files(&report, &[(SUMMARY_FILE, summary.to_json())])).map_err(report_err)
}

/// The time-to-target goal of `[report]`: an absolute accuracy, else a fraction of FFT's.
fn target(cfg: &Config) -> Target {
    if cfg.report.target_accuracy > 0.0 {
        Target::Absolute(cfg.report.target_accuracy)
    } else {
        Target::FractionOfFft(cfg.report.target_fraction)
    }
}

fn file_label(source: &str) -> String {
    Path::new(source).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| source.to_string())
}

/// The facts under the report's title.
fn setup_lines(cfg: &Config, partition_summary: &PartitionSummary) -> Vec<(String, String)> {
    let p = &cfg.partition;
    let heterogeneity = match p.scheme {
        PartitionScheme::Iid => "IID".to_string(),
        PartitionScheme::Dirichlet => format!("Dirichlet label skew, α = {}", p.alpha),
        PartitionScheme::DirichletClient => format!("client-wise Dirichlet label mixes, α = {}, equal sizes", p.alpha),
        PartitionScheme::Pathological => format!("pathological, {} labels per client", p.classes_per_client),
        PartitionScheme::Natural => {
            let ids = partition_summary.natural.as_ref().map_or("?".to_string(), |n| n.distinct_ids.to_string());
            format!("natural ids: one per `{}` value ({ids} distinct; at most {} clients)", p.id_column, if p.max_clients == 0 { "all".to_string() } else { p.max_clients.to_string() })
        }
    };
    let p_s = partition_summary;
    vec![
        (
            "Data".into(),
            format!(
                "{} (column {}): {} train / {} test rows, {} labels, max {} tokens",
                file_label(&cfg.data.source),
                cfg.data.text_column,
                p_s.train_rows,
                p_s.test_rows,
                p_s.num_labels,
                cfg.data.max_len
            ),
        ),
        ("Model".into(), file_label(&cfg.model.source)),
        (
            "Federation".into(),
            format!(
                "{} clients, {heterogeneity}; {} sampled per round, {} local epoch(s), batch {}",
                p_s.clients, cfg.federation.clients_per_round, cfg.federation.local_epochs, cfg.federation.batch_size
            ),
        ),
        (
            "SLoRA".into(),
            format!(
                "{} sparse rounds (density {}, lr {}) → SVD rank {} (α {}, {} init) → {} LoRA rounds{} (lr {})",
                cfg.stage1.rounds,
                cfg.stage1.density,
                cfg.stage1.lr,
                cfg.lora.r,
                cfg.lora.lora_alpha,
                cfg.decompose.init,
                cfg.stage2.rounds,
                if cfg.stage2.freeze_a { " with A frozen (FFA-LoRA: B alone trains)" } else { "" },
                cfg.stage2.lr
            ),
        ),
        (
            "Baselines".into(),
            format!(
                "{} for {} rounds (lr: {})",
                cfg.baselines.methods.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "),
                cfg.stage1.rounds + cfg.stage2.rounds,
                cfg.baselines.methods.iter().map(|m| format!("{m} {}", cfg.baselines.lr(*m))).collect::<Vec<_>>().join(", ")
            ),
        ),
        (
            "Seeds".into(),
            match cfg.run.replicate_seeds().as_slice() {
                [one] => format!("{one} (one seed: no confidence intervals)"),
                many => format!("{} replicates: {}", many.len(), many.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
            },
        ),
        (
            "Head".into(),
            format!(
                "{} trained at lr {} in every method (its own parameter group)",
                crate::preflight::trained_head(cfg).map(|h| h.join(", ")).unwrap_or_else(|| cfg.adapter.modules_to_save().join(", ")),
                if cfg.optim.head_lr > 0.0 { cfg.optim.head_lr.to_string() } else { "of the method".into() }
            ),
        ),
    ]
}
