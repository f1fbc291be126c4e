//! Assembling a run's report: inputs in, figures + tables + summary out, independent of the output
//! format (HTML and Markdown writers render the same [`Report`]).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::metrics::{method_label, Curve, Metrics, FFT, SLORA_STAGE1, SLORA_STAGE2};
use crate::partition::PartitionCounts;
use crate::plots;
use crate::plots::style::format_bytes;
use crate::spectrum::Spectra;
use crate::summary::Summary;
use crate::tables::{final_table, final_text_table, key_value_table, time_to_target_table, Align, TextTable};

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

/// Builds a run's report (curves, tables with polars, figures with plotters) and its summary.
pub fn build_report(inputs: &ReportInputs) -> Result<(Report, Summary)> {
    let curves = inputs.metrics.curves()?;
    let summary = Summary::from_curves(&inputs.run_name, &curves, &inputs.trainable_params);
    let mut sections = Vec::new();

    // Results: headline, final table, curves.
    let mut results = vec![headline(&curves, &summary)];
    if !curves.is_empty() {
        let df = final_table(&curves, &inputs.trainable_params)?;
        results.push(Block::Table(CaptionedTable {
            id: "final-table".into(),
            title: "Final results".into(),
            caption: "Test accuracy after the last round (and the best over all evaluations), test loss, what one \
                      sampled client uploads per round (SLoRA: stage 1 → stage 2) and over all rounds, the total \
                      uploaded by all sampled clients, trainable parameters, and cumulative training + evaluation \
                      wall time. Bytes are decimal (1 MB = 10⁶ B)."
                .into(),
            table: final_text_table(&df)?,
        }));
        results.push(Block::Figure(Figure {
            id: "accuracy_vs_round".into(),
            title: "Accuracy vs round".into(),
            caption: "Global test accuracy after each federated round (round 0 = before training). SLoRA's rounds \
                      count both stages; the dashed vertical line marks the switch from sparse fine-tuning to LoRA. \
                      Dashed horizontal lines: 95 % and 99 % of FFT's final accuracy."
                .into(),
            svg: plots::accuracy_vs_round(&curves)?,
        }));
        results.push(Block::Figure(Figure {
            id: "accuracy_vs_bytes".into(),
            title: "Accuracy vs upload".into(),
            caption: "Global test accuracy against the cumulative bytes uploaded by all sampled clients (log scale): \
                      the communication cost of reaching a given accuracy. Points further left are cheaper."
                .into(),
            svg: plots::accuracy_vs_bytes(&curves)?,
        }));
        results.push(Block::Figure(Figure {
            id: "loss_vs_round".into(),
            title: "Loss vs round".into(),
            caption: "Global test cross-entropy after each round.".into(),
            svg: plots::loss_vs_round(&curves)?,
        }));
    }
    sections.push(Section { id: "results".into(), heading: "Results".into(), blocks: results });

    // Time to target.
    let ttt_blocks = if summary.time_to_target.is_empty() {
        vec![Block::Paragraph("FFT was not run, so there is no reference accuracy to aim at.".into())]
    } else {
        vec![Block::Table(CaptionedTable {
            id: "time-to-target".into(),
            title: "Time to target".into(),
            caption: "First evaluated round at which each method reaches 95 % / 99 % of FFT's final accuracy \
                      (target in parentheses), with the cumulative wall time and total upload at that round. \
                      \"not reached\": no evaluation reached the target."
                .into(),
            table: time_to_target_table(&summary.time_to_target),
        })]
    };
    sections.push(Section { id: "time-to-target".into(), heading: "Time to target".into(), blocks: ttt_blocks });

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

/// One line per method: final accuracy and per-client upload, compared with FFT's.
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
            let mut s = format!(
                "{}: {:.2} % test accuracy after {} rounds; one client uploads {} over the run",
                method_label(method),
                100.0 * m.accuracy,
                m.rounds,
                format_bytes(m.bytes_up_per_client_total as f64)
            );
            if let Some(f) = fft.filter(|_| method != FFT) {
                let ratio = f.bytes_up_per_client_total as f64 / m.bytes_up_per_client_total.max(1) as f64;
                s.push_str(&format!(" ({:+.2} pp accuracy and {:.1}× less upload than FFT)", 100.0 * (m.accuracy - f.accuracy), ratio));
            }
            s
        })
        .collect();
    Block::List(lines)
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
                    vec!["End of stage 1".into(), format!("{:.2}", 100.0 * a.accuracy), format!("{:.4}", a.loss)],
                    vec!["Start of stage 2 (after the switch)".into(), format!("{:.2}", 100.0 * b.accuracy), format!("{:.4}", b.loss)],
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
