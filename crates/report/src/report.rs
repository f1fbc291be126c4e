//! Assembling a run's report: inputs in, figures + tables + summary out, independent of the output
//! format (HTML and Markdown writers render the same [`Report`]).

use crate::metrics::{or_nan, measured};
use std::collections::BTreeMap;

use crate::error::Result;
use crate::metrics::{method_label, Curve, Metrics, FFT, SLORA_STAGE1, SLORA_STAGE2};
use crate::partition::PartitionCounts;
use crate::plots;
use crate::plots::style::format_bytes;
use crate::spectrum::Spectra;
use crate::replicates::{mean_curve, mean_curve_of, SeedRun};
use crate::summary::{Summary, SummaryOptions};
use crate::tables::{cost_table, final_table, final_text_table, key_value_table, replicate_table, seed_table, time_to_target_table, Align, TextTable};
use crate::targets::Target;

/// Everything a run's report is made from (read by the pipeline's report stage from its artifacts).
#[derive(Debug, Clone, Default)]
pub struct ReportInputs {
    /// `run.name`: the report's title and folder name.
    pub run_name: String,
    /// One-line facts about the setup shown under the title (dataset, model, clients, ...).
    pub setup: Vec<(String, String)>,
    /// Metric rows of every federated stage.
    pub metrics: Metrics,
    /// Client x label counts of the partition.
    pub partition: Option<PartitionCounts>,
    /// Stage-1 spectra from the decompose stage.
    pub spectra: Option<Spectra>,
    /// LoRA rank used by decompose (marked on the spectra figure).
    pub lora_rank: Option<usize>,
    /// The decompose stage's switch check (any JSON object; rendered as a key/value table).
    pub switch_check: Option<serde_json::Value>,
    /// Trainable parameters per method id.
    pub trainable_params: BTreeMap<String, u64>,
    /// The effective configuration (TOML text).
    pub config_toml: String,
    /// Artifact key per stage name the report was made from.
    pub artifact_keys: BTreeMap<String, String>,
    /// Every replicate's metric rows by seed; empty = one run, `metrics`.
    pub replicates: Vec<(u64, Metrics)>,
    /// Last-k, target and learning rates of the summary.
    pub options: SummaryOptions,
    /// The tune stage's summary when learning rates were tuned (grid, validation scores, choice).
    pub tuning: Option<serde_json::Value>,
    /// What the switch costs (Stage 2's `switch` summary: charged bytes, the dense alternative).
    pub switch_cost: Option<serde_json::Value>,
    /// A personalised method's evaluation per seed (FedSA-LoRA); empty without one.
    pub personal: Vec<crate::summary::PersonalRun>,
    /// DP-FedAvg's settings and ε, when the run was private.
    pub privacy: Option<crate::privacy::PrivacySummary>,
}

/// One figure: an SVG document with a number-less title and a caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Stable id: file name (`figures/<id>.svg`) and HTML anchor / `data-plot` value.
    pub id: String,
    /// Short title.
    pub title: String,
    /// Caption explaining what is shown and how to read it.
    pub caption: String,
    /// The standalone `<svg>` document.
    pub svg: String,
}

/// A table with its title and caption.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionedTable {
    /// Stable id (HTML anchor).
    pub id: String,
    /// Short title.
    pub title: String,
    /// Caption.
    pub caption: String,
    /// The cells.
    pub table: TextTable,
}

/// One section of the report, in reading order.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph of plain text.
    Paragraph(String),
    /// A bulleted list.
    List(Vec<String>),
    /// A figure.
    Figure(Figure),
    /// A table.
    Table(CaptionedTable),
    /// Preformatted text (config), with a language tag for Markdown.
    Code {
        /// Markdown fence language.
        language: String,
        /// The text.
        text: String,
    },
    /// Collapsible details (HTML) / a plain subsection (Markdown).
    Details {
        /// Summary line.
        summary: String,
        /// Contents.
        table: TextTable,
    },
}

/// A titled section.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Anchor id.
    pub id: String,
    /// Heading.
    pub heading: String,
    /// Contents.
    pub blocks: Vec<Block>,
}

/// The assembled report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// Setup facts under the title.
    pub setup: Vec<(String, String)>,
    /// Sections in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// Every figure, in order.
    pub fn figures(&self) -> Vec<&Figure> {
        self.sections
            .iter()
            .flat_map(|s| s.blocks.iter())
            .filter_map(|b| if let Block::Figure(f) = b { Some(f) } else { None })
            .collect()
    }
}

/// The replicate runs of `inputs` (one per seed; `metrics` alone when there are none).
pub fn seed_runs(inputs: &ReportInputs) -> Result<Vec<SeedRun>> {
    if inputs.replicates.is_empty() {
        return Ok(vec![SeedRun { seed: 0, curves: inputs.metrics.curves()? }]);
    }
    inputs.replicates.iter().map(|(seed, m)| Ok(SeedRun { seed: *seed, curves: m.curves()? })).collect()
}

/// The first seed's curves with accuracy and loss replaced by their means over seeds (rounds that
/// every seed evaluated), for the figures; bands are drawn from [`mean_curve`].
fn mean_curves(runs: &[SeedRun]) -> Vec<Curve> {
    let Some(first) = runs.first() else { return Vec::new() };
    first
        .curves
        .iter()
        .map(|c| {
            let means = |value: fn(&crate::metrics::RoundMetrics) -> f64| -> BTreeMap<u32, f64> {
                mean_curve_of(runs, &c.method, value).into_iter().map(|(r, i)| (r, i.mean)).collect()
            };
            let (acc, loss) = (means(|p| or_nan(p.accuracy)), means(|p| or_nan(p.loss)));
            let mut mc = c.clone();
            for p in &mut mc.points {
                if let Some(a) = acc.get(&p.round) {
                    p.accuracy = measured(*a);
                    if let Some(l) = loss.get(&p.round) {
                        p.loss = measured(*l);
                    }
                } else {
                    p.accuracy = None;
                }
            }
            mc
        })
        .collect()
}

/// Builds a run's report (curves, tables with polars, figures with plotters) and its summary.
pub fn build_report(inputs: &ReportInputs) -> Result<(Report, Summary)> {
    let runs = seed_runs(inputs)?;
    let mut summary = Summary::from_replicates(&inputs.run_name, &runs, &inputs.trainable_params, &inputs.options);
    summary.personal = crate::summary::personal_summaries(&inputs.personal);
    summary.privacy = inputs.privacy.clone();
    let curves = mean_curves(&runs);
    let replicated = summary.replicated();
    let target_line = summary.time_to_target.first().map(|t| (t.target_accuracy, target_label(&inputs.options.target)));
    let mut sections = Vec::new();

    // Results: how the numbers were made, headline, verdicts, final table, curves.
    let mut results = vec![Block::Paragraph(protocol_sentence(&summary, &runs))];
    results.push(headline(&curves, &summary));
    if !summary.paired_differences.is_empty() {
        results.push(Block::Paragraph(
            "Paired differences of the final accuracy (same seed = same head init, masks, client sampling, data \
             order and dropout), with 95 % Student-t intervals over seeds. A method \"beats\" another only when \
             the interval excludes 0."
                .into(),
        ));
        results.push(Block::List(summary.paired_differences.iter().map(|d| d.verdict.clone()).collect()));
    }
    if !curves.is_empty() {
        results.push(Block::Table(CaptionedTable {
            id: "replicates".into(),
            title: "Final accuracy over seeds".into(),
            caption: format!(
                "Accuracy after the last round on every test row, {}; the mean over the last {} evaluated \
                 rounds of the curve (which may use a test subsample) guards against one lucky round; \
                 learning rates of the backbone or adapter and of the head.",
                if replicated { "mean ± 95 % CI (Student t over seeds), then each seed" } else { "one seed (no interval)" },
                summary.last_k
            ),
            table: replicate_table(&summary),
        }));
        if !summary.personal.is_empty() {
            results.push(Block::Table(CaptionedTable {
                id: "personal".into(),
                title: "Personalised evaluation".into(),
                caption: "A personalised method (FedSA-LoRA: A shared, B and the head kept on each client) measured on each \
                          client's held-out rows (its `partition.validation_fraction` slice, its own label mix): every \
                          client's own model, the global model (mean A, mean B and head, which nobody sends) on the \
                          same rows, and the gain, paired by seed. Compare the table of final accuracies above (the \
                          global model on the global test set) with the other methods; the personal number is on \
                          easier, client-specific rows and is not comparable with another method's global accuracy."
                    .into(),
                table: personal_table(&summary),
            }));
        }
        let df = final_table(&curves, &inputs.trainable_params)?;
        results.push(Block::Table(CaptionedTable {
            id: "final-table".into(),
            title: "Final results (curve)".into(),
            caption: format!(
                "The learning curve's last evaluated round{}: accuracy and the best over all evaluations, test \
                 loss, what one sampled client uploads per round (SLoRA: stage 1 → stage 2) and over all rounds, \
                 the total uploaded by all sampled clients, trainable parameters, and cumulative training + \
                 evaluation wall time. Bytes are decimal (1 MB = 10⁶ B).",
                if replicated { " (accuracy and loss averaged over seeds; the rest from the first seed)" } else { "" }
            ),
            table: final_text_table(&df)?,
        }));
        let bands: Vec<(String, Vec<(f64, f64, f64)>)> = if replicated {
            curves
                .iter()
                .map(|c| {
                    let band = mean_curve(&runs, &c.method)
                        .into_iter()
                        .filter_map(|(r, i)| i.bounds().map(|(lo, hi)| (f64::from(r), 100.0 * lo, 100.0 * hi)))
                        .collect();
                    (c.method.clone(), band)
                })
                .collect()
        } else {
            Vec::new()
        };
        results.push(Block::Figure(Figure {
            id: "accuracy_vs_round".into(),
            title: "Accuracy vs round".into(),
            caption: format!(
                "Global test accuracy after each federated round (round 0 = before training){}. SLoRA's rounds \
                 count both stages; the dashed vertical line marks the switch from sparse fine-tuning to LoRA. \
                 Dashed horizontal line: the time-to-target goal.",
                if replicated { ", mean over seeds with a shaded 95 % band" } else { "" }
            ),
            svg: plots::accuracy_vs_round(&curves, &bands, target_line.as_ref())?,
        }));
        results.push(Block::Figure(Figure {
            id: "accuracy_vs_bytes".into(),
            title: "Accuracy vs upload".into(),
            caption: "Global test accuracy against the cumulative bytes uploaded by all sampled clients (log scale): \
                      the communication cost of reaching a given accuracy. Points further left are cheaper."
                .into(),
            svg: plots::accuracy_vs_bytes(&curves, target_line.as_ref())?,
        }));
        results.push(Block::Figure(Figure {
            id: "loss_vs_round".into(),
            title: "Loss vs round".into(),
            caption: "Global test cross-entropy after each round.".into(),
            svg: plots::loss_vs_round(&curves)?,
        }));
    }
    sections.push(Section { id: "results".into(), heading: "Results".into(), blocks: results });
    sections.push(costs_section(&summary, inputs.switch_cost.as_ref()));
    if let Some(p) = &summary.privacy {
        sections.push(privacy_section(p, &summary));
    }

    // Time to target.
    let ttt_blocks = if summary.time_to_target.is_empty() {
        vec![Block::Paragraph("FFT was not run, so there is no reference accuracy to aim at.".into())]
    } else {
        let t = &summary.time_to_target[0];
        vec![Block::Table(CaptionedTable {
            id: "time-to-target".into(),
            title: "Time to target".into(),
            caption: format!(
                "First evaluated round at which each method reaches {:.2} % ({}){}: the clients' local \
                 training time summed over clients (the paper's training time, no evaluation), the server's \
                 time (aggregation, SLoRA's decomposition), the total upload and the wall time at that round; \
                 and client training time relative to FFT and LoRA. \"not reached\": no evaluation reached it.",
                100.0 * t.target_accuracy,
                target_label(&inputs.options.target),
                if replicated { "; means over the seeds that reached it" } else { "" }
            ),
            table: time_to_target_table(&summary.time_to_target),
        })]
    };
    sections.push(Section { id: "time-to-target".into(), heading: "Time to target".into(), blocks: ttt_blocks });
    sections.push(rates_section(&summary, inputs.tuning.as_ref()));
    if replicated {
        sections.push(Section {
            id: "seeds".into(),
            heading: "Seeds".into(),
            blocks: vec![Block::Details { summary: "Every seed's figures".into(), table: seed_table(&summary) }],
        });
    }

    if let Some(p) = &inputs.partition {
        sections.push(partition_section(p)?);
    }
    if let Some(s) = &inputs.spectra {
        sections.push(spectra_section(s, inputs.lora_rank)?);
    }
    sections.push(switch_section(inputs.switch_check.as_ref(), &inputs.metrics));
    sections.push(reproducibility_section(inputs));

    let report = Report {
        title: format!("SLoRA experiment report: {}", inputs.run_name),
        setup: inputs.setup.clone(),
        sections,
    };
    Ok((report, summary))
}

fn target_label(target: &Target) -> String {
    match target {
        Target::FractionOfFft(f) => format!("{:.0}% of FFT's mean final accuracy", 100.0 * f),
        Target::Absolute(a) => format!("absolute target {:.1}%", 100.0 * a),
    }
}

/// How the numbers were made: seeds, test rows, last-k.
fn protocol_sentence(summary: &Summary, runs: &[SeedRun]) -> String {
    let full_rows = runs
        .iter()
        .flat_map(|r| r.curves.iter())
        .filter_map(|c| c.last())
        .map(|p| p.full_test_rows)
        .max()
        .unwrap_or(0);
    let rows = if full_rows > 0 { format!("all {full_rows} test rows") } else { "the evaluation rows".to_string() };
    if summary.replicated() {
        format!(
            "{} seeds ({}). Final accuracy is measured on {rows} after the last round; ± is the half-width of a \
             95 % Student-t interval over seeds.",
            summary.seeds.len(),
            summary.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        )
    } else {
        format!(
            "One seed: no confidence intervals, so no difference below is tested; run with `run.seeds` (or \
             `--seeds N`) to get them. Final accuracy is measured on {rows} after the last round."
        )
    }
}

/// One line per method: final accuracy (± over seeds) and per-client upload, compared with FFT's.
fn headline(curves: &[Curve], summary: &Summary) -> Block {
    if curves.is_empty() {
        return Block::Paragraph("No federated stage has written metrics yet.".into());
    }
    let fft = summary.methods.get(FFT);
    let mut methods: Vec<&String> = summary.methods.keys().collect();
    methods.sort_by_key(|m| (crate::metrics::method_rank(m), (*m).clone()));
    let lines = methods
        .into_iter()
        .map(|method| {
            let m = &summary.methods[method];
            let acc = crate::replicates::Interval { n: m.seeds, mean: m.accuracy, half_width: m.accuracy_ci95 };
            let mut s = format!(
                "{}: {} % test accuracy after {} rounds (last-{} mean {:.2} %); one client uploads {} over the run",
                method_label(method),
                acc.percent(),
                m.rounds,
                summary.last_k,
                100.0 * m.last_k_accuracy,
                format_bytes(m.bytes_up_per_client_total as f64)
            );
            if let Some(f) = fft.filter(|_| method != FFT) {
                let ratio = f.bytes_up_per_client_total as f64 / m.bytes_up_per_client_total.max(1) as f64;
                s.push_str(&format!(" ({:.1}× less than FFT)", ratio));
            }
            s
        })
        .collect();
    Block::List(lines)
}

fn costs_section(summary: &Summary, switch: Option<&serde_json::Value>) -> Section {
    let mut blocks = vec![Block::Paragraph(
        "Bytes one client sends and receives if sampled in every round, split into the adapter (for FFT: the \
         whole backbone; for SFT and SLoRA's Stage 1: the masked values) and the head (`modules_to_save`: \
         pooler and classifier, always dense). The adapter-only upload is the figure the \"~1 % density\" \
         claim is about. Totals are over all clients."
            .into(),
    )];
    if let Some(sw) = switch {
        let charged = sw.get("charged_bytes_per_client").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let dense = sw.get("dense_correction_bytes_per_client").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let clients = sw.get("clients").and_then(serde_json::Value::as_u64).unwrap_or(0);
        blocks.push(Block::Paragraph(format!(
            "The switch: after Stage 1 every client needs the corrected base W₀ + ΔW − s·B·A. Charged: the \
             sparse ΔW values ({} per client, sent once to all {clients} clients, in Stage 2's first round); \
             each client already holds the mask (from its seed) and runs the same deterministic SVD. Sending \
             the dense corrections instead would cost {} per client.",
            format_bytes(charged as f64),
            format_bytes(dense as f64)
        )));
    }
    blocks.push(Block::Table(CaptionedTable {
        id: "costs".into(),
        title: "Communication and compute".into(),
        caption: "Per client over all rounds (if sampled every round): upload and download of adapter and head, \
                  the one-off switch payload; over all clients: total upload and download; client training \
                  seconds (sum of local training, no evaluation) and server seconds (aggregation, decomposition)."
            .into(),
        table: cost_table(summary),
    }));
    Section { id: "costs".into(), heading: "Costs".into(), blocks }
}

fn rates_section(summary: &Summary, tuning: Option<&serde_json::Value>) -> Section {
    let mut rows = Vec::new();
    for (m, s) in &summary.methods {
        let fmt = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:e}"));
        rows.push(vec![method_label(m), fmt(s.lr), fmt(s.head_lr)]);
    }
    let mut blocks = vec![Block::Table(CaptionedTable {
        id: "learning-rates".into(),
        title: "Learning rates".into(),
        caption: "Every effective rate: the backbone or adapter (SLoRA: Stage 2; Stage 1 in the configuration) and \
                  the head, its own parameter group in every method, FFT included."
            .into(),
        table: TextTable { headers: vec!["Method".into(), "LR".into(), "Head LR".into()], rows, align: vec![Align::Left, Align::Right, Align::Right] },
    })];
    if let Some(t) = tuning {
        blocks.push(Block::Paragraph(format!(
            "Rates marked \"tuned\" in the configuration were chosen by `pipeline tune`: each grid point ran {} \
             rounds on the training shards and was scored on the {} validation rows carved from the clients' \
             data (never the test set), by its mean validation accuracy over the last {} rounds.",
            t.get("rounds").map_or("?".into(), |v| v.to_string()),
            t.get("validation_rows").map_or("?".into(), |v| v.to_string()),
            t.get("last_k").map_or("?".into(), |v| v.to_string()),
        )));
        blocks.push(Block::Table(CaptionedTable {
            id: "tuning".into(),
            title: "Learning-rate grid".into(),
            caption: "Validation accuracy of every grid point; the chosen rate is marked.".into(),
            table: crate::tables::tuning_table(t),
        }));
    }
    Section { id: "learning-rates".into(), heading: "Learning rates".into(), blocks }
}

fn partition_section(p: &PartitionCounts) -> Result<Section> {
    let sizes = p.client_sizes();
    let (min, max) = (sizes.iter().min().copied().unwrap_or(0), sizes.iter().max().copied().unwrap_or(0));
    let total: u64 = sizes.iter().sum();
    let text = format!(
        "{} clients hold {} training rows in all ({}–{} per client); on average a client holds rows of {:.1} of {} labels.",
        p.num_clients(),
        total,
        min,
        max,
        p.mean_labels_per_client(),
        p.num_labels()
    );
    let size_table = TextTable {
        headers: vec!["Client".into(), "Rows".into(), "Labels held".into(), "Largest label share".into()],
        rows: p
            .counts
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: u64 = row.iter().sum();
                let held = row.iter().filter(|&&x| x > 0).count();
                let top = row.iter().copied().max().unwrap_or(0);
                vec![
                    c.to_string(),
                    n.to_string(),
                    held.to_string(),
                    format!("{:.1} %", 100.0 * top as f64 / n.max(1) as f64),
                ]
            })
            .collect(),
        align: vec![Align::Right; 4],
    };
    Ok(Section {
        id: "partition".into(),
        heading: "Partition".into(),
        blocks: vec![
            Block::Paragraph(text),
            Block::Figure(Figure {
                id: "partition_heatmap".into(),
                title: "Partition heatmap".into(),
                caption: "Training rows of each label held by each client; darker = more rows. A row of mostly empty \
                          cells per client is strong label skew."
                    .into(),
                svg: plots::partition_heatmap(p)?,
            }),
            Block::Details { summary: "Rows per client".into(), table: size_table },
        ],
    })
}

fn spectra_section(s: &Spectra, rank: Option<usize>) -> Result<Section> {
    let mut blocks = Vec::new();
    if let Some(r) = rank {
        if let Some((min, median, max)) = s.energy_summary(r) {
            blocks.push(Block::Paragraph(format!(
                "A rank-{r} truncation keeps {:.1} % of the Stage-1 update's energy in the median matrix \
                 ({:.1} % – {:.1} % over {} matrices); the rest is folded into the base weights so the model \
                 does not change at the switch.",
                100.0 * median,
                100.0 * min,
                100.0 * max,
                s.matrices.len()
            )));
        }
    }
    blocks.push(Block::Figure(Figure {
        id: "spectra".into(),
        title: "Stage-1 spectra".into(),
        caption: "Fraction of each adapted matrix's Stage-1 update energy (sum of squared singular values) kept by \
                  its best rank-k approximation, one line per matrix, coloured by matrix kind. The dashed line is \
                  the LoRA rank used for Stage 2."
            .into(),
        svg: plots::energy_vs_rank(s, rank)?,
    }));
    let r = rank.unwrap_or(1);
    blocks.push(Block::Details {
        summary: format!("Energy kept at rank {r} per matrix"),
        table: TextTable {
            headers: vec!["Matrix".into(), "σ₁".into(), format!("σ{r}"), format!("Energy kept at r = {r}")],
            rows: s
                .matrices
                .iter()
                .map(|m| {
                    vec![
                        m.module.clone(),
                        m.singular_values.first().map(|v| format!("{v:.4e}")).unwrap_or_default(),
                        m.singular_values.get(r - 1).map(|v| format!("{v:.4e}")).unwrap_or_else(|| "–".into()),
                        m.energy_at(r).map(|e| format!("{:.2} %", 100.0 * e)).unwrap_or_default(),
                    ]
                })
                .collect(),
            align: vec![Align::Left, Align::Right, Align::Right, Align::Right],
        },
    });
    Ok(Section { id: "spectra".into(), heading: "Stage-1 spectra".into(), blocks })
}

fn switch_section(check: Option<&serde_json::Value>, metrics: &Metrics) -> Section {
    let mut blocks = vec![Block::Paragraph(
        "At the switch the base becomes W₀ + ΔW − s·B·A, so the merged model equals Stage 1's model; this \
         checks it did not jump."
            .into(),
    )];
    let last1 = metrics.rows.iter().filter(|r| r.method == SLORA_STAGE1).max_by_key(|r| r.round);
    let first2 = metrics.rows.iter().filter(|r| r.method == SLORA_STAGE2).min_by_key(|r| r.round);
    if let (Some(a), Some(b)) = (last1, first2) {
        blocks.push(Block::Table(CaptionedTable {
            id: "switch-metrics".into(),
            title: "Accuracy across the switch".into(),
            caption: "Global test metrics at the end of Stage 1 and of the decomposed model before any Stage-2 training."
                .into(),
            table: TextTable {
                headers: vec!["".into(), "Accuracy (%)".into(), "Test loss".into()],
                rows: vec![
                    vec!["End of stage 1".into(), format!("{:.2}", 100.0 * or_nan(a.accuracy)), format!("{:.4}", or_nan(a.loss))],
                    vec!["Start of stage 2 (after the switch)".into(), format!("{:.2}", 100.0 * or_nan(b.accuracy)), format!("{:.4}", or_nan(b.loss))],
                ],
                align: vec![Align::Left, Align::Right, Align::Right],
            },
        }));
    }
    match check {
        Some(v) => blocks.push(Block::Table(CaptionedTable {
            id: "switch-check".into(),
            title: "Switch check".into(),
            caption: "As recorded by the decompose stage.".into(),
            table: key_value_table(v, "Check", "Value"),
        })),
        None => blocks.push(Block::Paragraph("The decompose stage recorded no switch check.".into())),
    }
    Section { id: "switch".into(), heading: "Switch check".into(), blocks }
}

fn reproducibility_section(inputs: &ReportInputs) -> Section {
    let keys = TextTable {
        headers: vec!["Stage".into(), "Artifact key".into()],
        rows: inputs.artifact_keys.iter().map(|(s, k)| vec![s.clone(), k.clone()]).collect(),
        align: vec![Align::Left, Align::Left],
    };
    Section {
        id: "reproducibility".into(),
        heading: "Reproducibility".into(),
        blocks: vec![
            Block::Paragraph(
                "The artifact keys identify every stage's inputs (parameters, upstream keys, code version); \
                 re-running with this configuration reuses or reproduces exactly these artifacts."
                    .into(),
            ),
            Block::Table(CaptionedTable {
                id: "artifact-keys".into(),
                title: "Artifact keys".into(),
                caption: "sha256 keys of the stage artifacts this report was made from.".into(),
                table: keys,
            }),
            Block::Code { language: "toml".into(), text: inputs.config_toml.clone() },
        ],
    }
}

/// The personalised evaluation per method: own models, the global model on the same rows, the gain.
fn personal_table(summary: &Summary) -> TextTable {
    let pct = |m: f64, h: Option<f64>| match h {
        Some(h) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * h),
        None => format!("{:.2}", 100.0 * m),
    };
    let rows = summary
        .personal
        .iter()
        .map(|p| {
            vec![
                method_label(&p.method),
                pct(p.personal_accuracy, p.personal_accuracy_ci95),
                pct(p.global_accuracy_same_rows, p.global_accuracy_same_rows_ci95),
                match p.gain_pp_ci95 {
                    Some(h) => format!("{:+.2} pp [{:+.2}, {:+.2}]", p.gain_pp, p.gain_pp - h, p.gain_pp + h),
                    None => format!("{:+.2} pp", p.gain_pp),
                },
            ]
        })
        .collect();
    TextTable {
        headers: vec!["Method".into(), "Own models, own rows (%)".into(), "Global model, same rows (%)".into(), "Gain".into()],
        rows,
        align: vec![Align::Left, Align::Right, Align::Right, Align::Right],
    }
}

fn eps(e: f64) -> String {
    if e.is_finite() {
        format!("{e:.3}")
    } else {
        "∞".into()
    }
}

/// The section: settings, ε, and per method the noise against the signal.
fn privacy_section(p: &crate::privacy::PrivacySummary, summary: &Summary) -> Section {
    let strict = match (p.epsilon_at_strict_delta, p.strict_delta) {
        (Some(e), Some(d)) => format!(" (ε = {} at δ = {d:e}; δ = 1 / clients admits a mechanism that publishes one client's data whole)", eps(e)),
        _ => String::new(),
    };
    let mut blocks = vec![Block::Paragraph(format!(
        "Client-level differential privacy (DP-FedAvg, McMahan et al. 2018), {} DP: each client's update (its upload minus \
         its download, every uploaded tensor together) is clipped to L2 norm C = {}, and Gaussian noise of standard \
         deviation σ·C = {} × {} per coordinate is added {}. {}The accountant puts {} at ε = {} for δ = {} (Rényi order {}){strict}: \
         {}. {} The per-step losses, row counts and training seconds every reply carries, and each round's training loss in \
         the metrics, are not covered.",
        p.mode,
        p.clip_norm,
        p.noise_multiplier,
        p.clip_norm,
        if p.mode == "local" {
            "to every upload before it leaves its client; the server's aggregation is unchanged (post-processing)"
        } else {
            "once to the sum of the round's clipped updates, which the server averages with equal weights over the fixed \
             denominator m (the clients sampled per round)"
        },
        match p.target_epsilon {
            Some(t) => format!("σ is the smallest noise multiplier the accountant puts at ε ≤ {t} over the run. "),
            None => String::new(),
        },
        if p.mode == "local" { "every client's uploads, against the server itself, and so the released model," } else { "the released model" },
        eps(p.epsilon),
        p.delta,
        p.order,
        p.accountant,
        if p.secret_noise {
            "The noise came from the operating system's entropy."
        } else {
            "The noise was drawn from the run seed (reproducible): the guarantee holds only against whoever does not hold the config."
        },
    ))];
    let mut rows = Vec::new();
    for (method, s) in &summary.methods {
        // f32 uploads: 4 bytes a coordinate.
        let d = s.bytes_up_per_client / 4;
        rows.push(vec![crate::metrics::method_label(method), d.to_string(), format!("{:.3}", p.noise_to_signal(d))]);
    }
    blocks.push(Block::Table(CaptionedTable {
        id: "privacy-noise".into(),
        title: "Noise against signal".into(),
        caption: format!(
            "Per method: the coordinates one client sends in its last round (bytes / 4), and the expected norm of the noise in \
             the round's mean update over the most one client can move that mean (C/m): σ·√d under central DP, σ·√(d·m) \
             under local DP, with m = {}. The noise lands only on what a method sends: for the same σ the noise norm grows \
             as √d, and FFT's whole-model update carries √(D/d) times the noise of a sparse or LoRA update of d \
             coordinates. The dense head, which every method but FedSA-LoRA sends, sets a floor under d. Above 1, a \
             round's noise outweighs anything one client can add.",
            p.clients_per_round
        ),
        table: TextTable { headers: vec!["Method".into(), "Coordinates sent".into(), "Noise / signal".into()], rows, align: vec![Align::Left, Align::Right, Align::Right] },
    }));
    Section { id: "privacy".into(), heading: "Privacy".into(), blocks }
}
