//! The study report: verdicts first, then the tables and figures behind them, as a [`Report`] that
//! `crate::markdown` and `crate::html` render like any other.

use crate::error::{ReportError, Result};
use crate::metrics::FFT;
use crate::plots;
use crate::plots::sweep::SweepSeries;
use crate::report::{Block, CaptionedTable, Figure, Report, Section};
use crate::tables::{Align, TextTable};

use super::points::{claim_point, paired_pp, study_methods};
use super::schema::{Claim, ClaimVerdict, PlanRow, StudyAxis, StudyPoint, StudySettings};
use super::tables::{accuracy_table, budget_table, gap_table, plan_table, time_table, upload_table, verdict_table, versus_reference_table};

fn series(points: &[StudyPoint], value: impl Fn(&StudyPoint, &str) -> Option<(f64, Option<f64>)>, skip_fft: bool) -> (SweepSeries, SweepSeries) {
    let mut mean = Vec::new();
    let mut half = Vec::new();
    for m in study_methods(points).into_iter().filter(|m| !(skip_fft && m == FFT)) {
        let vals: Vec<Option<(f64, Option<f64>)>> = points.iter().map(|p| value(p, &m)).collect();
        mean.push((m.clone(), vals.iter().map(|v| v.map(|v| v.0)).collect()));
        half.push((m, vals.iter().map(|v| v.and_then(|v| v.1)).collect()));
    }
    (mean, half)
}

/// One point's learning curves (its own report's accuracy-vs-round figure), shown in the study.
#[derive(Debug, Clone, PartialEq)]
pub struct PointCurves {
    /// Figure id (file name), e.g. `accuracy_vs_round-iid`.
    pub id: String,
    /// The point's label.
    pub label: String,
    /// The SVG document.
    pub svg: String,
}

/// Builds the study report: verdicts first, then the tables and figures behind them.
pub fn build_study_report(
    settings: &StudySettings,
    setup: Vec<(String, String)>,
    points: &[StudyPoint],
    verdicts: &[ClaimVerdict],
    curves: &[PointCurves],
    plan: &[PlanRow],
) -> Result<Report> {
    if points.is_empty() {
        return Err(ReportError::Invalid("a study needs at least one point".into()));
    }
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    // The leakage claim pools uploads, not seeds, so the sentence on intervals names the exception.
    let leakage = if verdicts.iter().any(|v| v.claim == Claim::SloraLeaksLess) {
        " The leakage attacks are the exception: their rates are over recorded uploads, compared with 95 % normal \
         intervals, unpaired."
    } else {
        ""
    };
    let mut findings = vec![Block::Paragraph(format!(
        "{} Every figure below is the mean over seeds with its 95 % Student-t interval; differences are paired \
         by seed.{leakage} Verdict rules: see `crates/report/src/study/verdicts.rs` (margin {} pp).",
        settings.title, settings.margin_pp
    ))];
    findings.push(Block::Table(CaptionedTable {
        id: "verdicts".into(),
        title: "Claims and verdicts".into(),
        caption: "Reproduced / not reproduced / inconclusive, with the numbers that decided.".into(),
        table: verdict_table(verdicts),
    }));
    findings.push(Block::Code { language: "sh".into(), text: settings.command.clone() });

    let mut results = vec![Block::Table(CaptionedTable {
        id: "accuracy".into(),
        title: "Final test accuracy (%)".into(),
        caption: "Every test row, after each method's last round: mean ± 95 % half-width over seeds.".into(),
        table: accuracy_table(points),
    })];
    results.push(Block::Table(CaptionedTable {
        id: "gap".into(),
        title: "Gap to FFT (pp)".into(),
        caption: "FFT − method final accuracy, paired by seed: mean [95 % interval].".into(),
        table: gap_table(points),
    }));
    let (acc, acc_h) = series(
        points,
        |p, m| p.summary.methods.get(m).map(|s| (100.0 * s.accuracy, s.accuracy_ci95.map(|h| 100.0 * h))),
        false,
    );
    let (gap, gap_h) = series(
        points,
        |p, m| {
            let i = paired_pp(p, FFT, m);
            (i.n > 0).then_some((i.mean, i.half_width))
        },
        true,
    );
    match settings.axis {
        StudyAxis::Density => {
            let upload: Vec<(String, Vec<(f64, f64, f64)>)> = study_methods(points)
                .into_iter()
                .map(|m| {
                    let pts = points
                        .iter()
                        .filter_map(|p| {
                            let s = p.summary.methods.get(&m)?;
                            let h = 100.0 * s.accuracy_ci95.unwrap_or(0.0);
                            Some((s.cum_bytes_up as f64, 100.0 * s.accuracy, h))
                        })
                        .collect();
                    (m, pts)
                })
                .collect();
            results.push(Block::Figure(Figure {
                id: "accuracy_vs_upload".into(),
                title: "Accuracy against total upload".into(),
                caption: format!(
                    "Final accuracy (mean, bars = 95 % interval over seeds) against the bytes all clients \
                     uploaded over the run; one marker per point ({}) for each method that ran there.",
                    points.iter().map(|p| p.label.as_str()).collect::<Vec<_>>().join(", ")
                ),
                svg: plots::accuracy_vs_upload(&upload)?,
            }));
        }
        StudyAxis::Heterogeneity | StudyAxis::Single | StudyAxis::Privacy => {}
    }
    if points.iter().any(|p| p.summary.privacy.is_some()) {
        results.push(Block::Table(CaptionedTable {
            id: "privacy".into(),
            title: "Privacy per point".into(),
            caption: "DP-FedAvg at each point: where the noise is added, the clipping norm C, the noise multiplier σ (the \
                      accountant's choice for the point's ε), and the RDP accountant's (ε, δ): under central DP for the \
                      released model, over every round at the sampling rate clients per round / clients; under local DP \
                      against the server, which sees every upload (and so for the released model too). δ = 1 / clients is \
                      weak to the point of vacuous: ε at δ = 1e-5 is beside it."
                .into(),
            table: super::tables::privacy_table(points),
        }));
    }
    if points.iter().any(|p| !p.summary.leakage.is_empty()) {
        results.push(Block::Table(CaptionedTable {
            id: "leakage".into(),
            title: "What the server learns (pipeline audit)".into(),
            caption: "Per point and method, over every recorded upload of every seed: the embedding-row attack's token \
                      precision, against the share of the vocabulary a client's tokens are (what naming every row scores), \
                      and recall (– : the method does not send the embeddings, so this attack reads nothing; noise that \
                      moves every row makes the recall 100 % and the precision chance), label precision of the output-bias attack \
                      against a guess of as many labels at random, and the shadow-client probe's right guesses of the \
                      client's dominant label against 1 / labels. Rules: `crates/federation/src/audit.rs`. Under central \
                      DP the server still sees each clipped update: only local DP (or secure aggregation) hides it."
                .into(),
            table: super::tables::leakage_table(points),
        }));
    }
    if let (StudyAxis::Density, Some(reference)) = (settings.axis, claim_point(points, settings.claim_point.as_deref())) {
        results.push(Block::Table(CaptionedTable {
            id: "versus_reference".into(),
            title: format!("Against {}", reference.label),
            caption: format!(
                "Each point against {}: final accuracy change paired by seed (mean [95 % interval]), the clients' \
                 local training seconds over the whole run (mask round included) and the bytes all clients uploaded, \
                 means over seeds (× = ratio to {}).",
                reference.label, reference.label
            ),
            table: versus_reference_table(points, reference),
        }));
    }
    {
        results.push(Block::Figure(Figure {
            id: "accuracy_vs_point".into(),
            title: "Accuracy per point".into(),
            caption: "Final test accuracy, mean over seeds; the band is the 95 % interval.".into(),
            svg: plots::sweep::accuracy_vs_heterogeneity_banded(&labels, &acc, &acc_h, settings.axis.title())?,
        }));
        results.push(Block::Figure(Figure {
            id: "gap_vs_point".into(),
            title: "Gap to FFT per point".into(),
            caption: "FFT − method final accuracy (pp), paired by seed; the band is the 95 % interval of the \
                      paired difference. 0 = as accurate as FFT."
                .into(),
            svg: plots::sweep::gap_vs_heterogeneity_banded(&labels, &gap, &gap_h, settings.axis.title())?,
        }));
    }
    for c in curves {
        results.push(Block::Figure(Figure {
            id: c.id.clone(),
            title: format!("Learning curves: {}", c.label),
            caption: format!(
                "Test accuracy per round at {} (curve rows), mean over seeds with the 95 % band; the dashed line \
                 marks SLoRA's switch.",
                c.label
            ),
            svg: c.svg.clone(),
        }));
    }
    results.push(Block::Table(CaptionedTable {
        id: "time".into(),
        title: "Training time to target (claim 3)".into(),
        caption: "Clients' local training seconds (no evaluation) until the first evaluated round at the target; \
                  mean over the seeds that reached it. SLoRA's cut is 1 − its time / the other's, per seed."
            .into(),
        table: time_table(points),
    }));
    results.push(Block::Table(CaptionedTable {
        id: "upload".into(),
        title: "Upload per client".into(),
        caption: "Bytes one client uploads over the run if sampled every round: adapter (FFT: backbone) + head.".into(),
        table: upload_table(points),
    }));
    results.push(Block::Table(CaptionedTable {
        id: "budget".into(),
        title: "Budget check".into(),
        caption: "FFT's accuracy slope over its last k evaluated rounds (mean over seeds). A curve still moving \
                  means the verdicts hold at this budget, not at convergence."
            .into(),
        table: budget_table(points, settings.flat_slope_pp),
    }));
    if !plan.is_empty() {
        results.push(Block::Table(CaptionedTable {
            id: "plan".into(),
            title: "Cost plan against measured time".into(),
            caption: "The estimate `pipeline study --plan` made from step times measured on this machine, next to the \
                      wall time the runs recorded (training and evaluation, seeds summed; tuning is not recorded per \
                      run). A ratio above 1 means the plan was optimistic, e.g. because other work shared the machine."
                .into(),
            table: plan_table(plan),
        }));
    }
    let point_table = TextTable {
        headers: vec!["Point".into(), "Overrides".into(), "Run".into()],
        rows: points
            .iter()
            .map(|p| {
                vec![
                    format!("{}{}", p.label, if p.extreme { " (extreme: not in verdicts)" } else { "" }),
                    p.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                    p.run_name.clone(),
                ]
            })
            .collect(),
        align: vec![Align::Left; 3],
    };
    results.push(Block::Table(CaptionedTable {
        id: "points".into(),
        title: "Points".into(),
        caption: "Each point is an ordinary replicated run with these overrides.".into(),
        table: point_table,
    }));
    Ok(Report {
        title: format!("Study `{}`", settings.name),
        setup,
        sections: vec![
            Section { id: "findings".into(), heading: "Findings".into(), blocks: findings },
            Section { id: "results".into(), heading: "Results".into(), blocks: results },
        ],
    })
}
