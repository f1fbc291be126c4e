//! Studies: a committed set of runs (points) that tests the paper's claims, with a verdict per claim.
//!
//! A study is a sweep whose report does not stop at a table: it states each claim it tests, and says
//! *reproduced*, *not reproduced* or *inconclusive* from paired confidence intervals over seeds,
//! with the numbers behind the verdict. The verdict functions take plain [`StudyPoint`]s, so they are
//! tested here on known inputs.
//!
//! The rules (all differences in percentage points of final test accuracy, paired by seed, 95 %
//! Student-t intervals; `margin` = the smallest difference the study cares about):
//! - **Gap grows** (claim 1): per seed, (FFT − LoRA) at the most heterogeneous non-extreme point minus
//!   (FFT − LoRA) at the least heterogeneous one. Reproduced when the interval is above 0; not
//!   reproduced when it is below 0, or inside ±margin (no change worth the name); else inconclusive.
//! - **SLoRA closes the gap** (claim 2), at the study's claim point: reproduced when SLoRA − LoRA is
//!   above 0 and FFT − SLoRA stays below +margin; not reproduced when FFT − SLoRA is above +margin
//!   or SLoRA − LoRA is below 0; inconclusive otherwise, and also when LoRA already sits within the
//!   margin of FFT (there is no gap to close).
//! - **Training time cut** (claim 3), at the claim point: per seed, 1 − SLoRA's client training
//!   seconds to the target / FFT's. Reproduced when every seed of SLoRA reached the target and the
//!   interval of that reduction is above 0; not reproduced when SLoRA missed the target in most seeds
//!   or the interval is below 0; else inconclusive. The paper's "up to 90 %" is compared with the
//!   largest mean reduction over the points.
//! - **FlexLoRA beats zero-padding** (Bai et al., 2024), at the heterogeneous point of the last
//!   `rank_pairs` entry: FlexLoRA − LoRA (whose zero-padded averaging is HetLoRA's naive scheme).
//!   Reproduced when the interval is above 0; not reproduced when it is below 0 or inside ±margin;
//!   else inconclusive.
//! - **Mixed ranks cost accuracy**, per `rank_pairs` entry `[uniform, heterogeneous]`: per seed, a
//!   method's accuracy with mixed client ranks minus its accuracy with every client at the uniform
//!   rank (the same partition per seed). Judged on zero-padded LoRA, the scheme without a remedy:
//!   reproduced when the interval is below 0; not reproduced when it is above 0 or inside ±margin;
//!   else inconclusive. Every method's difference is shown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};
use crate::metrics::{method_label, method_rank, FFT, SLORA};
use crate::plots;
use crate::plots::style::{format_bytes, format_seconds};
use crate::plots::sweep::SweepSeries;
use crate::replicates::{mean_ci, Interval};
use crate::report::{Block, CaptionedTable, Figure, Report, Section};
use crate::summary::Summary;
use crate::tables::{Align, TextTable};

/// LoRA's method id.
const LORA: &str = "lora";

/// A claim of the paper that a study can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    /// PEFT's gap to FFT widens as client data grow more heterogeneous.
    GapGrows,
    /// SLoRA's initialisation closes that gap.
    SloraClosesGap,
    /// SLoRA cuts training time (up to 90 %).
    TimeCut,
    /// More local work per round (client drift) widens LoRA's gap to FFT (LoRA-A²'s mechanism).
    DriftOpensGap,
    /// Under heterogeneous client ranks FlexLoRA beats zero-padded averaging (Bai et al., 2024).
    FlexloraBeatsZeroPadding,
    /// Heterogeneous client ranks cost accuracy against every client at one rank.
    MixedRanksCost,
}

impl Claim {
    /// The claim in words.
    pub fn statement(self) -> &'static str {
        match self {
            Claim::GapGrows => "PEFT (LoRA) falls further behind FFT as client data grow more heterogeneous",
            Claim::SloraClosesGap => "SLoRA closes LoRA's gap to FFT (Stage 1 at about 1 % density)",
            Claim::TimeCut => "SLoRA cuts the training time to a target accuracy (up to 90 %)",
            Claim::DriftOpensGap => "More local epochs per round (client drift) widen LoRA's gap to FFT",
            Claim::FlexloraBeatsZeroPadding => "With heterogeneous client ranks, FlexLoRA beats zero-padded LoRA averaging (HetLoRA's naive scheme)",
            Claim::MixedRanksCost => "Heterogeneous client ranks cost accuracy against every client at one rank (judged on zero-padded LoRA)",
        }
    }
}

/// What a study concluded about one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The intervals support the claim.
    Reproduced,
    /// The intervals contradict it (or show no effect worth the margin).
    NotReproduced,
    /// The intervals cannot tell.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// One claim's verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimVerdict {
    /// The claim.
    pub claim: Claim,
    /// The verdict.
    pub verdict: Verdict,
    /// The numbers and the rule that decided, in one or two sentences.
    pub evidence: String,
}

/// One point of a study and the summary of its (replicated) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyPoint {
    /// Short label for axes and table headers.
    pub label: String,
    /// A numeric axis value (e.g. the Stage-1 density), when the axis is numeric.
    #[serde(default)]
    pub value: Option<f64>,
    /// Beyond the range the claims are about (e.g. one label per client): shown, not used in verdicts.
    #[serde(default)]
    pub extreme: bool,
    /// The `--set` overrides that define the point.
    pub overrides: Vec<(String, String)>,
    /// `run.name` of the point's run.
    pub run_name: String,
    /// The run's summary.
    pub summary: Summary,
    /// Which per-seed accuracy the verdicts and paired differences use.
    #[serde(default)]
    pub statistic: Statistic,
}

/// The per-seed accuracy a study judges on, stated in the study file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Statistic {
    /// The last round, on every test row. With partial participation at high skew it measures
    /// which clients came last.
    #[default]
    Final,
    /// The mean of the rounds measured on every test row: the last `federation.full_test_last_k`
    /// (the last round alone where a run measured only that).
    LastKFull,
}

/// What the points vary, which decides the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudyAxis {
    /// Label heterogeneity (categorical, least to most heterogeneous).
    Heterogeneity,
    /// Stage-1 density (accuracy against total upload).
    Density,
    /// One setting (no axis).
    Single,
}

impl StudyAxis {
    /// The x-axis title of the study's per-point figures.
    pub fn title(self) -> &'static str {
        match self {
            StudyAxis::Heterogeneity => "Label heterogeneity across clients (least to most)",
            StudyAxis::Density => "Stage-1 setting (study point)",
            StudyAxis::Single => "Setting",
        }
    }
}

/// How a study is judged and presented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySettings {
    /// Study name (report folder).
    pub name: String,
    /// One-line description.
    pub title: String,
    /// What the points vary.
    pub axis: StudyAxis,
    /// Claims tested.
    pub claims: Vec<Claim>,
    /// Differences smaller than this (percentage points) do not count as an effect.
    pub margin_pp: f64,
    /// Label of the point claims 2 and 3 are judged at (default: the last non-extreme point).
    pub claim_point: Option<String>,
    /// FFT's mean curve counts as flat when its last-k slope is below this (pp per round).
    pub flat_slope_pp: f64,
    /// The command that reproduces the study.
    pub command: String,
    /// `drift-opens-gap`: pairs of point labels `[less local work, more local work]` at the same
    /// partition; the verdict is judged on the last pair (the most skewed).
    #[serde(default)]
    pub drift_pairs: Vec<(String, String)>,
    /// `flexlora-beats-zero-padding` and `mixed-ranks-cost`: pairs of point labels `[uniform rank,
    /// heterogeneous ranks]`; both are judged on the last pair.
    #[serde(default)]
    pub rank_pairs: Vec<(String, String)>,
    /// Claim 1's contrast, stated in the study file before the run.
    #[serde(default)]
    pub gap_contrast: GapContrast,
    /// Chance accuracy (1 / labels), when known: claim 1 leaves out points where FFT is within
    /// `floor_pp` of it, and gives the gap relative to FFT's accuracy above chance.
    #[serde(default)]
    pub chance: Option<f64>,
    /// See `chance` (percentage points).
    #[serde(default = "default_floor_pp")]
    pub floor_pp: f64,
}

fn default_floor_pp() -> f64 {
    3.0
}

/// How claim 1 contrasts the gap across heterogeneity levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapContrast {
    /// The most heterogeneous regular point minus the least (the committed small-budget studies).
    #[default]
    Ends,
    /// Per seed, the least-squares slope of the gap over every regular point (by position), judged
    /// on the change it implies from the first point to the last.
    Slope,
}

/// `study.json`: settings, points and verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    /// How the study was judged.
    pub settings: StudySettings,
    /// Points in study order.
    pub points: Vec<StudyPoint>,
    /// One verdict per tested claim.
    pub verdicts: Vec<ClaimVerdict>,
    /// The cost plan's estimate next to the measured time, per point and method.
    #[serde(default)]
    pub plan: Vec<PlanRow>,
}

/// A cost plan's estimate for one method at one point (seeds summed), and what the runs took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    /// Point label (or `tune`).
    pub point: String,
    /// Method id (`slora` covers both stages).
    pub method: String,
    /// Seeds summed.
    pub seeds: usize,
    /// Estimated seconds (`pipeline study --plan`).
    pub estimated_seconds: f64,
    /// The runs' recorded wall time (training and evaluation), when known.
    pub measured_seconds: Option<f64>,
}

/// The plan's estimates next to the measured wall times; the last row sums both.
pub fn plan_table(rows: &[PlanRow]) -> TextTable {
    let fmt = |s: Option<f64>| s.map(format_seconds).unwrap_or_else(|| "–".into());
    let ratio = |e: f64, m: Option<f64>| m.filter(|m| *m > 0.0 && e > 0.0).map(|m| format!("{:.2}", m / e)).unwrap_or_else(|| "–".into());
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.point.clone(),
                method_label(&r.method),
                r.seeds.to_string(),
                format_seconds(r.estimated_seconds),
                fmt(r.measured_seconds),
                ratio(r.estimated_seconds, r.measured_seconds),
            ]
        })
        .collect();
    let est: f64 = rows.iter().map(|r| r.estimated_seconds).sum();
    let measured: Vec<f64> = rows.iter().filter_map(|r| r.measured_seconds).collect();
    let est_measured: f64 = rows.iter().filter(|r| r.measured_seconds.is_some()).map(|r| r.estimated_seconds).sum();
    let m = (!measured.is_empty()).then(|| measured.iter().sum::<f64>());
    out.push(vec!["all".into(), "".into(), "".into(), format_seconds(est), fmt(m), ratio(est_measured, m)]);
    TextTable {
        headers: ["Point", "Method", "Seeds", "Estimated", "Measured", "Measured / estimated"].map(String::from).to_vec(),
        rows: out,
        align: vec![Align::Left, Align::Left, Align::Right, Align::Right, Align::Right, Align::Right],
    }
}

/// Per-seed final accuracy of `method` at a point.
fn finals(point: &StudyPoint, method: &str) -> BTreeMap<u64, f64> {
    point
        .summary
        .per_seed
        .iter()
        .filter_map(|(seed, m)| {
            let f = m.get(method)?;
            let v = match point.statistic {
                Statistic::Final => f.final_accuracy,
                Statistic::LastKFull => f.full_test_mean_accuracy.unwrap_or(f.final_accuracy),
            };
            Some((seed.parse().ok()?, v))
        })
        .collect()
}

/// Per-seed `a − b` at a point (seeds both ran).
fn differences(point: &StudyPoint, a: &str, b: &str) -> BTreeMap<u64, f64> {
    let (fa, fb) = (finals(point, a), finals(point, b));
    fa.iter().filter_map(|(s, va)| Some((*s, va - fb.get(s)?))).collect()
}

/// Mean and interval of `a − b` at a point, in percentage points.
pub fn paired_pp(point: &StudyPoint, a: &str, b: &str) -> Interval {
    let d: Vec<f64> = differences(point, a, b).values().map(|v| 100.0 * v).collect();
    mean_ci(&d)
}

fn fmt_interval(i: &Interval) -> String {
    match i.bounds() {
        Some((lo, hi)) => format!("{:+.2} pp [{:+.2}, {:+.2}]", i.mean, lo, hi),
        None if i.n == 0 => "–".into(),
        None => format!("{:+.2} pp (one seed)", i.mean),
    }
}

/// The points the claims are about, in order (extreme points left out).
fn regular(points: &[StudyPoint]) -> Vec<&StudyPoint> {
    points.iter().filter(|p| !p.extreme).collect()
}

/// The point claims 2 and 3 are judged at.
pub fn claim_point<'a>(points: &'a [StudyPoint], label: Option<&str>) -> Option<&'a StudyPoint> {
    match label {
        Some(l) => points.iter().find(|p| p.label == l),
        None => regular(points).last().copied(),
    }
}

/// Claim 1 under the study's stated contrast.
pub fn judge_gap(settings: &StudySettings, points: &[StudyPoint]) -> ClaimVerdict {
    match settings.gap_contrast {
        GapContrast::Ends => judge_gap_grows(points, settings.margin_pp),
        GapContrast::Slope => judge_gap_slope(points, settings.margin_pp, settings.chance, settings.floor_pp),
    }
}

/// Least-squares slope of `ys` against `xs` (0 with fewer than two points).
fn ls_slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Claim 1 by the slope contrast: per seed, the slope of FFT − LoRA over the regular points (by
/// position) that are off the floor (FFT more than `floor_pp` above chance), judged on the change
/// it implies from the first such point to the last; the same slope relative to FFT's accuracy
/// above chance is given next to it.
pub fn judge_gap_slope(points: &[StudyPoint], margin_pp: f64, chance: Option<f64>, floor_pp: f64) -> ClaimVerdict {
    let claim = Claim::GapGrows;
    let mut floored = Vec::new();
    let pts: Vec<(f64, &StudyPoint)> = regular(points)
        .into_iter()
        .enumerate()
        .filter(|(_, p)| {
            let judged: Vec<f64> = finals(p, FFT).into_values().collect();
            let fft = (!judged.is_empty()).then(|| judged.iter().sum::<f64>() / judged.len() as f64);
            let off = match (chance, fft) {
                (Some(c), Some(a)) => 100.0 * (a - c) > floor_pp,
                _ => true,
            };
            if !off {
                floored.push(p.label.clone());
            }
            off
        })
        .map(|(i, p)| (i as f64, p))
        .collect();
    if pts.len() < 2 {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "fewer than two regular points off the floor".into() };
    }
    let complete = |i: &Interval| if i.n == 0 { " (no seed ran at every point)" } else { "" };
    let span = pts.last().expect("two").0 - pts[0].0;
    let seeds: std::collections::BTreeSet<u64> = pts.iter().flat_map(|(_, p)| differences(p, FFT, LORA).into_keys()).collect();
    let (mut abs, mut rel) = (Vec::new(), Vec::new());
    for s in seeds {
        let (mut xs, mut ys, mut rs) = (Vec::new(), Vec::new(), Vec::new());
        for (x, p) in &pts {
            let (Some(d), Some(f)) = (differences(p, FFT, LORA).get(&s).copied(), finals(p, FFT).get(&s).copied()) else { continue };
            xs.push(*x);
            ys.push(100.0 * d);
            if let Some(c) = chance.filter(|c| f - c > 0.0) {
                rs.push(100.0 * d / (f - c));
            }
        }
        if xs.len() == pts.len() {
            abs.push(ls_slope(&xs, &ys) * span);
            if rs.len() == xs.len() {
                rel.push(ls_slope(&xs, &rs) * span);
            }
        }
    }
    let i = mean_ci(&abs);
    let r = mean_ci(&rel);
    let gaps: Vec<String> = points.iter().map(|p| format!("{}: {}", p.label, fmt_interval(&paired_pp(p, FFT, LORA)))).collect();
    let (verdict, why) = gap_change_verdict(&i, margin_pp);
    let rel_text = match r.bounds() {
        Some((lo, hi)) => format!("; relative to FFT's accuracy above chance {:+.2} % [{:+.2}, {:+.2}]", r.mean, lo, hi),
        None => String::new(),
    };
    let floor_text = if floored.is_empty() {
        String::new()
    } else {
        format!(" Left out (FFT within {floor_pp} pp of chance): {}.", floored.join(", "))
    };
    ClaimVerdict {
        claim,
        verdict,
        evidence: format!(
            "Change of the gap (FFT − LoRA) from {} to {} implied by its per-seed least-squares slope over {} points: {}{}{rel_text}: {why}. Gap per point: {}.{floor_text}",
            pts[0].1.label,
            pts.last().expect("two").1.label,
            pts.len(),
            fmt_interval(&i),
            complete(&i),
            gaps.join("; ")
        ),
    }
}

/// Claim 1: does FFT − LoRA grow from the least to the most heterogeneous non-extreme point?
pub fn judge_gap_grows(points: &[StudyPoint], margin_pp: f64) -> ClaimVerdict {
    let claim = Claim::GapGrows;
    let pts = regular(points);
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "no points".into() };
    };
    if pts.len() < 2 {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "one heterogeneity level: nothing to compare".into() };
    }
    let gaps: Vec<String> =
        points.iter().map(|p| format!("{}: {}", p.label, fmt_interval(&paired_pp(p, FFT, LORA)))).collect();
    let i = gap_change(first, last);
    let change = format!(
        "gap (FFT − LoRA) at {} minus at {}: {}, paired by seed",
        last.label,
        first.label,
        fmt_interval(&i)
    );
    let gaps = format!("Gap per point: {}.", gaps.join("; "));
    let (verdict, why) = gap_change_verdict(&i, margin_pp);
    ClaimVerdict { claim, verdict, evidence: format!("{change}: {why}. {gaps}") }
}

/// The change of the gap FFT − LoRA from point `a` to point `b`, paired by seed, in pp.
fn gap_change(a: &StudyPoint, b: &StudyPoint) -> Interval {
    let (g0, g1) = (differences(a, FFT, LORA), differences(b, FFT, LORA));
    let did: Vec<f64> = g1.iter().filter_map(|(s, v)| Some(100.0 * (v - g0.get(s)?))).collect();
    mean_ci(&did)
}

/// The verdict on a change of gap, shared by the claims that compare two points.
fn gap_change_verdict(i: &Interval, margin_pp: f64) -> (Verdict, String) {
    match i.bounds() {
        None => (Verdict::Inconclusive, "one seed: no interval".to_string()),
        Some((lo, _)) if lo > 0.0 => (Verdict::Reproduced, "the interval is above 0".to_string()),
        Some((_, hi)) if hi < 0.0 => (Verdict::NotReproduced, "the gap shrinks: the interval is below 0".to_string()),
        Some((lo, hi)) if lo > -margin_pp && hi < margin_pp => {
            (Verdict::NotReproduced, format!("the interval lies within ±{margin_pp} pp: no change worth the name"))
        }
        Some(_) => (Verdict::Inconclusive, "the interval contains 0".to_string()),
    }
}

/// Client drift: does FFT − LoRA grow from the point with less local work to the one with more, at
/// the same partition? Every pair is reported; the verdict is the last pair's (the most skewed).
pub fn judge_drift_opens_gap(points: &[StudyPoint], pairs: &[(String, String)], margin_pp: f64) -> ClaimVerdict {
    let claim = Claim::DriftOpensGap;
    let find = |l: &str| points.iter().find(|p| p.label == l);
    let mut parts = Vec::new();
    let mut last = None;
    for (a, b) in pairs {
        let (Some(pa), Some(pb)) = (find(a), find(b)) else { continue };
        let i = gap_change(pa, pb);
        parts.push(format!(
            "{b} minus {a}: {} (FFT − LoRA {} → {})",
            fmt_interval(&i),
            fmt_interval(&paired_pp(pa, FFT, LORA)),
            fmt_interval(&paired_pp(pb, FFT, LORA))
        ));
        last = Some((b.clone(), i));
    }
    let Some((label, i)) = last else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "no drift pair ran (drift_pairs)".into() };
    };
    let (verdict, why) = gap_change_verdict(&i, margin_pp);
    ClaimVerdict {
        claim,
        verdict,
        evidence: format!("Change of the gap with more local work, paired by seed: {}; judged at {label}: {why}.", parts.join("; ")),
    }
}

/// Per seed, `method` at `b` minus `method` at `a` (pp), for the seeds both ran.
fn across_points(a: &StudyPoint, b: &StudyPoint, method: &str) -> Interval {
    let (fa, fb) = (finals(a, method), finals(b, method));
    let d: Vec<f64> = fb.iter().filter_map(|(s, v)| Some(100.0 * (v - fa.get(s)?))).collect();
    mean_ci(&d)
}

/// The last `rank_pairs` entry whose two points ran.
fn last_rank_pair<'a>(points: &'a [StudyPoint], pairs: &[(String, String)]) -> Option<(&'a StudyPoint, &'a StudyPoint)> {
    let find = |l: &str| points.iter().find(|p| p.label == l);
    pairs.iter().rev().find_map(|(a, b)| Some((find(a)?, find(b)?)))
}

/// FlexLoRA − zero-padded LoRA at the heterogeneous point (SLoRA − LoRA shown beside it).
pub fn judge_flexlora_beats_zero_padding(points: &[StudyPoint], pairs: &[(String, String)], margin_pp: f64) -> ClaimVerdict {
    let claim = Claim::FlexloraBeatsZeroPadding;
    let Some((_, het)) = last_rank_pair(points, pairs) else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "no rank pair ran (rank_pairs)".into() };
    };
    let flex = paired_pp(het, "flexlora", LORA);
    let slora = paired_pp(het, SLORA, LORA);
    let (verdict, why) = match flex.bounds() {
        None if flex.n == 0 => (Verdict::Inconclusive, "FlexLoRA or LoRA did not run".to_string()),
        None => (Verdict::Inconclusive, "one seed: no interval".to_string()),
        Some((lo, _)) if lo > 0.0 => (Verdict::Reproduced, "the interval is above 0".to_string()),
        Some((_, hi)) if hi < 0.0 => (Verdict::NotReproduced, "FlexLoRA is below zero-padding: the interval is below 0".to_string()),
        Some((lo, hi)) if lo > -margin_pp && hi < margin_pp => {
            (Verdict::NotReproduced, format!("the interval lies within ±{margin_pp} pp: no difference worth the name"))
        }
        Some(_) => (Verdict::Inconclusive, "the interval contains 0".to_string()),
    };
    ClaimVerdict {
        claim,
        verdict,
        evidence: format!(
            "At {}: FlexLoRA − LoRA (zero-padded) {}, SLoRA − LoRA (zero-padded) {} (margin {margin_pp} pp): {why}.",
            het.label,
            fmt_interval(&flex),
            fmt_interval(&slora)
        ),
    }
}

/// Each method's accuracy with mixed ranks minus with one rank, judged on zero-padded LoRA.
pub fn judge_mixed_ranks_cost(points: &[StudyPoint], pairs: &[(String, String)], margin_pp: f64) -> ClaimVerdict {
    let claim = Claim::MixedRanksCost;
    let Some((uniform, het)) = last_rank_pair(points, pairs) else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "no rank pair ran (rank_pairs)".into() };
    };
    let parts: Vec<String> = study_methods(&[uniform.clone(), het.clone()])
        .iter()
        .filter(|m| uniform.summary.methods.contains_key(*m) && het.summary.methods.contains_key(*m))
        .map(|m| format!("{} {}", method_label(m), fmt_interval(&across_points(uniform, het, m))))
        .collect();
    let lora = across_points(uniform, het, LORA);
    let (verdict, why) = match lora.bounds() {
        None if lora.n == 0 => (Verdict::Inconclusive, "LoRA did not run at both points".to_string()),
        None => (Verdict::Inconclusive, "one seed: no interval".to_string()),
        Some((_, hi)) if hi < 0.0 => (Verdict::Reproduced, "zero-padded LoRA's interval is below 0".to_string()),
        Some((lo, _)) if lo > 0.0 => (Verdict::NotReproduced, "zero-padded LoRA gains: the interval is above 0".to_string()),
        Some((lo, hi)) if lo > -margin_pp && hi < margin_pp => {
            (Verdict::NotReproduced, format!("zero-padded LoRA's interval lies within ±{margin_pp} pp: no cost worth the name"))
        }
        Some(_) => (Verdict::Inconclusive, "zero-padded LoRA's interval contains 0".to_string()),
    };
    ClaimVerdict {
        claim,
        verdict,
        evidence: format!("{} minus {}, paired by seed: {}: {why}.", het.label, uniform.label, parts.join(", ")),
    }
}

/// Claim 2 at `point`: SLoRA above LoRA and within `margin_pp` of FFT.
pub fn judge_closes_gap(point: &StudyPoint, margin_pp: f64) -> ClaimVerdict {
    let claim = Claim::SloraClosesGap;
    let (fs, sl, fl) = (paired_pp(point, FFT, SLORA), paired_pp(point, SLORA, LORA), paired_pp(point, FFT, LORA));
    let numbers = format!(
        "At {}: FFT − SLoRA {}, SLoRA − LoRA {}, FFT − LoRA {} (margin {margin_pp} pp)",
        point.label,
        fmt_interval(&fs),
        fmt_interval(&sl),
        fmt_interval(&fl)
    );
    // "No gap to close" is decided first: where LoRA is already within the margin of FFT (or above it), SLoRA
    // beating LoRA is not closing a gap, whatever else holds.
    let (verdict, why) = match (fs.bounds(), sl.bounds(), fl.bounds()) {
        (None, _, _) | (_, None, _) | (_, _, None) => (Verdict::Inconclusive, "one seed: no interval".to_string()),
        (Some(_), Some(_), Some((_, fl_hi))) if fl_hi < margin_pp => (
            Verdict::Inconclusive,
            "LoRA is already within the margin of FFT: there is no gap to close at this budget".to_string(),
        ),
        (Some((_, fs_hi)), Some((sl_lo, _)), _) if sl_lo > 0.0 && fs_hi < margin_pp => {
            (Verdict::Reproduced, "SLoRA beats LoRA and stays within the margin of FFT".to_string())
        }
        (Some((fs_lo, _)), _, _) if fs_lo > margin_pp => {
            (Verdict::NotReproduced, "SLoRA stays below FFT by more than the margin".to_string())
        }
        (_, Some((_, sl_hi)), _) if sl_hi < 0.0 => (Verdict::NotReproduced, "SLoRA is below LoRA".to_string()),
        _ => (Verdict::Inconclusive, "the intervals cannot tell".to_string()),
    };
    ClaimVerdict { claim, verdict, evidence: format!("{numbers}: {why}.") }
}

/// What claim 3's time to the target is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBasis {
    /// Local steps to the target × the step time measured on a quiet machine.
    Benchmarked,
    /// The clients' recorded training seconds (inflated by whatever else ran beside the study).
    Recorded,
}

impl TimeBasis {
    /// Of the hits of every method at `point` that reached the target: benchmarked when every one
    /// of them has its benchmarked time, else recorded.
    pub fn at(point: &StudyPoint) -> Self {
        let all = point.summary.time_to_target.iter().flat_map(|t| t.per_seed.iter().filter_map(|(_, h)| h.as_ref())).all(|h| h.benchmark_seconds.is_some());
        if all { Self::Benchmarked } else { Self::Recorded }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Benchmarked => "benchmarked client compute to it (local steps to the target × the step time measured on a quiet machine)",
            Self::Recorded => "recorded client training time to it (clients' seconds; inflated by whatever ran beside the study)",
        }
    }
}

/// Per seed, the time to the target of `method` at `point` in `basis` (`None`: not reached).
fn seconds_to_target(point: &StudyPoint, method: &str, basis: TimeBasis) -> BTreeMap<u64, Option<f64>> {
    let pick = |h: &crate::targets::TargetHit| match basis {
        TimeBasis::Benchmarked => h.benchmark_seconds.unwrap_or(h.client_train_seconds),
        TimeBasis::Recorded => h.client_train_seconds,
    };
    point
        .summary
        .time_to_target
        .iter()
        .find(|t| t.method == method)
        .map(|t| t.per_seed.iter().map(|(s, h)| (*s, h.as_ref().map(pick))).collect())
        .unwrap_or_default()
}

/// Per-seed reduction 1 − t(method)/t(reference) of client training time to the target, over the
/// seeds where both reached it, as a percentage.
pub fn time_reduction(point: &StudyPoint, method: &str, reference: &str) -> (Interval, usize, usize) {
    let basis = TimeBasis::at(point);
    let (m, r) = (seconds_to_target(point, method, basis), seconds_to_target(point, reference, basis));
    let reached = m.values().filter(|v| v.is_some()).count();
    let cuts: Vec<f64> = m
        .iter()
        .filter_map(|(s, t)| {
            let (t, tr) = ((*t)?, (*r.get(s)?)?);
            (tr > 0.0).then(|| 100.0 * (1.0 - t / tr))
        })
        .collect();
    (mean_ci(&cuts), reached, m.len())
}

fn fmt_cut(i: &Interval) -> String {
    match i.bounds() {
        Some((lo, hi)) => format!("{:.0} % [{:.0}, {:.0}]", i.mean, lo, hi),
        None if i.n == 0 => "–".into(),
        None => format!("{:.0} % (one seed)", i.mean),
    }
}

/// Claim 3 at `point`: SLoRA's client training time to the target against FFT's.
pub fn judge_time_cut(points: &[StudyPoint], point: &StudyPoint) -> ClaimVerdict {
    let claim = Claim::TimeCut;
    let (vs_fft, reached, seeds) = time_reduction(point, SLORA, FFT);
    let (vs_lora, _, _) = time_reduction(point, SLORA, LORA);
    let target = point.summary.time_to_target.iter().find(|t| t.method == SLORA).map(|t| t.target_accuracy).unwrap_or(f64::NAN);
    // The largest cut over the regular points where every seed has both times, so an extreme
    // point or a cut averaged over the seeds that happened to reach the target cannot stand in.
    let best = regular(points)
        .into_iter()
        .filter_map(|p| {
            let (i, _, _) = time_reduction(p, SLORA, FFT);
            (i.n > 0 && i.n == p.summary.seeds.len()).then_some((i.mean, p.label.clone()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let numbers = format!(
        "At {} (target {:.2} %): SLoRA reached it in {reached} of {seeds} seeds; the cut in client training time to it \
         (1 − SLoRA's / the other's, per seed; negative = longer), in {}, is {} against FFT and {} against LoRA{}",
        point.label,
        100.0 * target,
        TimeBasis::at(point).describe(),
        fmt_cut(&vs_fft),
        fmt_cut(&vs_lora),
        best.map(|(b, l)| format!("; the largest mean cut over the points is {b:.0} % ({l}), against the paper's up to 90 %"))
            .unwrap_or_default()
    );
    let (verdict, why) = if seeds == 0 {
        (Verdict::Inconclusive, "SLoRA did not run".to_string())
    } else if 2 * reached <= seeds {
        (Verdict::NotReproduced, "SLoRA missed the target in most seeds".to_string())
    } else {
        match vs_fft.bounds() {
            Some((lo, _)) if lo > 0.0 && reached == seeds => (Verdict::Reproduced, "the interval of the cut is above 0".to_string()),
            Some((_, hi)) if hi < 0.0 => (Verdict::NotReproduced, "SLoRA takes longer than FFT".to_string()),
            None => (Verdict::Inconclusive, "fewer than two seeds with both times: no interval".to_string()),
            _ => (Verdict::Inconclusive, "the interval contains 0, or a seed missed the target".to_string()),
        }
    };
    // The paper's claim is against FFT; against LoRA it says whether the cut is SLoRA's own or any
    // LoRA's (a cheaper step than FFT's).
    let against_lora = match vs_lora.bounds() {
        Some((lo, _)) if lo > 0.0 => "; against LoRA too the interval is above 0 (SLoRA's initialisation saves time, not only LoRA's cheaper step)",
        Some((_, hi)) if hi < 0.0 => "; against LoRA the interval is below 0 (the cut is LoRA's cheaper step, and SLoRA spends more of it)",
        Some(_) => "; against LoRA the interval contains 0 (the cut is LoRA's cheaper step, not SLoRA's initialisation)",
        None => "",
    };
    let why = if seeds == 0 { why } else { format!("{why}{against_lora}") };
    ClaimVerdict { claim, verdict, evidence: format!("{numbers}: {why}.") }
}

/// Every tested claim's verdict.
pub fn judge(settings: &StudySettings, points: &[StudyPoint]) -> Vec<ClaimVerdict> {
    let at = claim_point(points, settings.claim_point.as_deref());
    settings
        .claims
        .iter()
        .map(|claim| match (claim, at) {
            (Claim::GapGrows, _) => judge_gap(settings, points),
            (Claim::SloraClosesGap, Some(p)) => judge_closes_gap(p, settings.margin_pp),
            (Claim::TimeCut, Some(p)) => judge_time_cut(points, p),
            (Claim::DriftOpensGap, _) => judge_drift_opens_gap(points, &settings.drift_pairs, settings.margin_pp),
            (Claim::FlexloraBeatsZeroPadding, _) => judge_flexlora_beats_zero_padding(points, &settings.rank_pairs, settings.margin_pp),
            (Claim::MixedRanksCost, _) => judge_mixed_ranks_cost(points, &settings.rank_pairs, settings.margin_pp),
            (c, None) => ClaimVerdict { claim: *c, verdict: Verdict::Inconclusive, evidence: "no claim point".into() },
        })
        .collect()
}

/// Methods present at any point, canonical order.
fn study_methods(points: &[StudyPoint]) -> Vec<String> {
    let mut methods: Vec<String> = points.iter().flat_map(|p| p.summary.methods.keys().cloned()).collect();
    methods.sort_by_key(|m| (method_rank(m), m.clone()));
    methods.dedup();
    methods
}

fn right_aligned(headers: Vec<String>, rows: Vec<Vec<String>>) -> TextTable {
    let n = headers.len();
    TextTable { headers, rows, align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, n - 1)).collect() }
}

fn point_headers(first: &str, points: &[StudyPoint]) -> Vec<String> {
    std::iter::once(first.to_string()).chain(points.iter().map(|p| p.label.clone())).collect()
}

/// Final accuracy (%), mean ± 95 % half-width over seeds, method × point.
pub fn accuracy_table(points: &[StudyPoint]) -> TextTable {
    let rows = study_methods(points)
        .iter()
        .map(|m| {
            std::iter::once(method_label(m))
                .chain(points.iter().map(|p| match p.summary.methods.get(m) {
                    Some(s) => match s.accuracy_ci95 {
                        Some(h) => format!("{:.2} ± {:.2}", 100.0 * s.accuracy, 100.0 * h),
                        None => format!("{:.2}", 100.0 * s.accuracy),
                    },
                    None => "–".into(),
                }))
                .collect()
        })
        .collect();
    right_aligned(point_headers("Method", points), rows)
}

/// FFT − method (pp), paired by seed, with its interval, method × point.
pub fn gap_table(points: &[StudyPoint]) -> TextTable {
    let rows = study_methods(points)
        .iter()
        .filter(|m| m.as_str() != FFT)
        .map(|m| {
            std::iter::once(method_label(m)).chain(points.iter().map(|p| fmt_interval(&paired_pp(p, FFT, m)))).collect()
        })
        .collect();
    right_aligned(point_headers("FFT − method", points), rows)
}

/// Client training seconds to the target per method and point, with SLoRA's cut against FFT and LoRA.
pub fn time_table(points: &[StudyPoint]) -> TextTable {
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("Target (95 % of FFT's mean final)".to_string())
        .chain(points.iter().map(|p| {
            p.summary.time_to_target.first().map(|t| format!("{:.2} %", 100.0 * t.target_accuracy)).unwrap_or_else(|| "–".into())
        }))
        .collect()];
    for m in study_methods(points) {
        rows.push(
            std::iter::once(format!("{} client training to target", method_label(&m)))
                .chain(points.iter().map(|p| match p.summary.time_to_target.iter().find(|t| t.method == m) {
                    Some(t) => match &t.hit {
                        Some(h) => format!("{} ({}/{} seeds)", format_seconds(h.client_train_seconds), t.reached, t.seeds),
                        None => format!("not reached (0/{})", t.seeds),
                    },
                    None => "–".into(),
                }))
                .collect(),
        );
    }
    for (reference, name) in [(FFT, "SLoRA's cut vs FFT"), (LORA, "SLoRA's cut vs LoRA")] {
        rows.push(
            std::iter::once(name.to_string()).chain(points.iter().map(|p| fmt_cut(&time_reduction(p, SLORA, reference).0))).collect(),
        );
    }
    right_aligned(point_headers("", points), rows)
}

/// A curve is flat when the whole interval of its last-k slope (pp per round) lies inside
/// ±`threshold`, not its mean alone; one seed (no interval) is judged on the mean.
pub fn is_flat(slope_pp: f64, half_width_pp: Option<f64>, threshold: f64) -> bool {
    let h = half_width_pp.unwrap_or(0.0);
    slope_pp - h > -threshold && slope_pp + h < threshold
}

/// Whether the budget was long enough: FFT's last-k slope per point, with the upload per client.
pub fn budget_table(points: &[StudyPoint], flat_slope_pp: f64) -> TextTable {
    let mut rows = Vec::new();
    let cell = |p: &StudyPoint| -> String {
        let Some(f) = p.summary.methods.get(FFT) else { return "–".into() };
        let slope = 100.0 * f.last_k_slope;
        let ci = f.last_k_slope_ci95.map(|h| format!(" ± {:.2}", 100.0 * h)).unwrap_or_default();
        let flat = if is_flat(slope, f.last_k_slope_ci95.map(|h| 100.0 * h), flat_slope_pp) { "flat" } else { "still moving" };
        format!("{slope:+.2}{ci} ({flat})")
    };
    rows.push(std::iter::once(format!("FFT slope over the last k rounds (pp/round; flat < {flat_slope_pp})")).chain(points.iter().map(cell)).collect());
    rows.push(
        std::iter::once("Rounds".to_string())
            .chain(points.iter().map(|p| p.summary.methods.get(FFT).map(|f| f.rounds.to_string()).unwrap_or_else(|| "–".into())))
            .collect(),
    );
    rows.push(std::iter::once("Seeds".to_string()).chain(points.iter().map(|p| p.summary.seeds.len().to_string())).collect());
    right_aligned(point_headers("", points), rows)
}

/// Upload per client over the run (adapter + head, as if sampled every round), method × point.
pub fn upload_table(points: &[StudyPoint]) -> TextTable {
    let rows = study_methods(points)
        .iter()
        .map(|m| {
            std::iter::once(method_label(m))
                .chain(points.iter().map(|p| match p.summary.methods.get(m) {
                    Some(s) => format!(
                        "{} + {} head",
                        format_bytes(s.costs.up_adapter_per_client as f64),
                        format_bytes(s.costs.up_head_per_client as f64)
                    ),
                    None => "–".into(),
                }))
                .collect()
        })
        .collect();
    right_aligned(point_headers("Upload per client", points), rows)
}

/// `method` at point `a` − at point `b`, paired by seed (pp).
pub fn across_points_pp(a: &StudyPoint, b: &StudyPoint, method: &str) -> Interval {
    let (fa, fb) = (finals(a, method), finals(b, method));
    let d: Vec<f64> = fa.iter().filter_map(|(s, va)| Some(100.0 * (va - fb.get(s)?))).collect();
    mean_ci(&d)
}

/// Every point against the reference point `reference`, per method present at both: the accuracy
/// change paired by seed, the clients' total training seconds and the total upload (all clients),
/// means over seeds. What a setting (a density, a mask) buys and costs.
pub fn versus_reference_table(points: &[StudyPoint], reference: &StudyPoint) -> TextTable {
    let mut rows = Vec::new();
    for m in study_methods(points) {
        let Some(r) = reference.summary.methods.get(&m) else { continue };
        if !points.iter().any(|p| p.label != reference.label && p.summary.methods.contains_key(&m)) {
            continue; // nothing to compare (e.g. FFT runs at the reference point only)
        }
        let cell = |p: &StudyPoint, f: &dyn Fn(&crate::summary::MethodSummary) -> String| -> String {
            p.summary.methods.get(&m).map(f).unwrap_or_else(|| "–".into())
        };
        let name = method_label(&m);
        rows.push(
            std::iter::once(format!("{name}: accuracy change (pp)"))
                .chain(points.iter().map(|p| {
                    if p.label == reference.label {
                        "reference".into()
                    } else if p.summary.methods.contains_key(&m) {
                        fmt_interval(&across_points_pp(p, reference, &m))
                    } else {
                        "–".into()
                    }
                }))
                .collect(),
        );
        rows.push(
            std::iter::once(format!("{name}: client training, whole run"))
                .chain(points.iter().map(|p| {
                    cell(p, &|s| {
                        let ratio = s.costs.client_train_seconds / r.costs.client_train_seconds.max(1e-9);
                        format!("{} (×{ratio:.2})", format_seconds(s.costs.client_train_seconds))
                    })
                }))
                .collect(),
        );
        rows.push(
            std::iter::once(format!("{name}: upload, all clients"))
                .chain(points.iter().map(|p| {
                    cell(p, &|s| format!("{} (×{:.3})", format_bytes(s.cum_bytes_up as f64), s.cum_bytes_up as f64 / r.cum_bytes_up.max(1) as f64))
                }))
                .collect(),
        );
    }
    right_aligned(point_headers(&format!("Against {}", reference.label), points), rows)
}

/// The verdicts as a table.
pub fn verdict_table(verdicts: &[ClaimVerdict]) -> TextTable {
    TextTable {
        headers: vec!["Claim".into(), "Verdict".into(), "Evidence".into()],
        rows: verdicts.iter().map(|v| vec![v.claim.statement().to_string(), v.verdict.to_string(), v.evidence.clone()]).collect(),
        align: vec![Align::Left; 3],
    }
}

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
    let mut findings = vec![Block::Paragraph(format!(
        "{} Every figure below is the mean over seeds with its 95 % Student-t interval; differences are paired \
         by seed. Verdict rules: see `crates/report/src/study.rs` (margin {} pp).",
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
        StudyAxis::Heterogeneity | StudyAxis::Single => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicates::SeedFigures;
    use crate::summary::MethodSummary;
    use crate::targets::{TargetHit, TimeToTarget};

    /// A point whose per-seed final accuracies are `acc[method][seed index]` (seeds 1, 2, 3, …) and
    /// whose per-seed seconds to target are `secs[method]` (`None`: missed).
    fn point(label: &str, acc: &[(&str, &[f64])], secs: &[(&str, &[Option<f64>])]) -> StudyPoint {
        let mut summary = Summary::from_curves("t", &[], &BTreeMap::new());
        for (m, values) in acc {
            let mut ms = MethodSummary { accuracy: values.iter().sum::<f64>() / values.len() as f64, ..Default::default() };
            ms.accuracy_ci95 = mean_ci(values).half_width;
            summary.methods.insert(m.to_string(), ms);
            for (i, v) in values.iter().enumerate() {
                let f = SeedFigures { final_accuracy: *v, ..Default::default() };
                summary.per_seed.entry((i + 1).to_string()).or_default().insert(m.to_string(), f);
            }
        }
        summary.seeds = (1..=acc.first().map_or(0, |a| a.1.len()) as u64).collect();
        for (m, s) in secs {
            let per_seed: Vec<(u64, Option<TargetHit>)> = s
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (i as u64 + 1, t.map(|t| TargetHit { round: 1, wall_seconds: t, cum_bytes_up: 0, client_train_seconds: t, server_seconds: 0.0, benchmark_seconds: None }))
                })
                .collect();
            let reached = per_seed.iter().filter(|p| p.1.is_some()).count();
            summary.time_to_target.push(TimeToTarget {
                method: m.to_string(),
                fraction: 0.95,
                target_accuracy: 0.5,
                hit: per_seed.iter().find_map(|p| p.1.clone()),
                reached,
                seeds: per_seed.len(),
                per_seed,
            });
        }
        StudyPoint { label: label.into(), value: None, extreme: false, overrides: vec![], run_name: label.into(), summary, statistic: Statistic::Final }
    }

    #[test]
    fn gap_grows_verdicts() {
        let iid = point("IID", &[("fft", &[0.80, 0.81, 0.79]), ("lora", &[0.79, 0.80, 0.78])], &[]);
        let skew = point("skew", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.60, 0.63, 0.61])], &[]);
        let v = judge_gap_grows(&[iid.clone(), skew.clone()], 1.0);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        // Reversed order: the gap shrinks.
        assert_eq!(judge_gap_grows(&[skew.clone(), iid.clone()], 1.0).verdict, Verdict::NotReproduced);
        // The same gap everywhere, tightly: no change worth the margin.
        let same = point("same", &[("fft", &[0.80, 0.81, 0.79]), ("lora", &[0.7905, 0.8, 0.7795])], &[]);
        let v = judge_gap_grows(&[iid.clone(), same], 1.0);
        assert_eq!(v.verdict, Verdict::NotReproduced, "{}", v.evidence);
        // Noisy: inconclusive.
        let noisy = point("noisy", &[("fft", &[0.80, 0.70, 0.75]), ("lora", &[0.70, 0.74, 0.75])], &[]);
        assert_eq!(judge_gap_grows(&[iid.clone(), noisy], 1.0).verdict, Verdict::Inconclusive);
        // An extreme point is left out of the comparison.
        let mut extreme = point("k=1", &[("fft", &[0.1, 0.1, 0.1]), ("lora", &[0.1, 0.1, 0.1])], &[]);
        extreme.extreme = true;
        assert_eq!(judge_gap_grows(&[iid, skew, extreme], 1.0).verdict, Verdict::Reproduced);
    }

    #[test]
    fn no_gap_to_close_is_decided_before_reproduced() {
        // FFT = LoRA (tightly) and SLoRA above both: SLoRA beats LoRA and is within the margin of FFT,
        // but there was no gap to close.
        let p = point("p", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.701, 0.719, 0.711]), ("slora", &[0.73, 0.75, 0.74])], &[]);
        let v = judge_closes_gap(&p, 1.0);
        assert_eq!(v.verdict, Verdict::Inconclusive, "{}", v.evidence);
        assert!(v.evidence.contains("no gap to close"), "{}", v.evidence);
    }

    #[test]
    fn drift_verdicts_pair_the_points_by_seed() {
        let e1 = point("E1", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.69, 0.71, 0.70])], &[]);
        let e5 = point("E5", &[("fft", &[0.72, 0.73, 0.71]), ("lora", &[0.62, 0.64, 0.61])], &[]);
        let pairs = vec![("E1".to_string(), "E5".to_string())];
        let v = judge_drift_opens_gap(&[e1.clone(), e5.clone()], &pairs, 1.0);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        // Gap per seed: E1 1, 1, 1 pp; E5 10, 9, 10 pp: change 8.67 pp.
        assert!(v.evidence.contains("+8.67 pp"), "{}", v.evidence);
        let back = vec![("E5".to_string(), "E1".to_string())];
        assert_eq!(judge_drift_opens_gap(&[e1.clone(), e5], &back, 1.0).verdict, Verdict::NotReproduced);
        let same = point("same", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.6905, 0.7095, 0.7])], &[]);
        let v = judge_drift_opens_gap(&[e1, same], &[("E1".into(), "same".into())], 1.0);
        assert_eq!(v.verdict, Verdict::NotReproduced, "within the margin: {}", v.evidence);
        assert_eq!(judge_drift_opens_gap(&[], &pairs, 1.0).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn rank_verdicts_pair_methods_within_and_across_the_points() {
        let uniform = point("r8", &[("lora", &[0.60, 0.62, 0.61]), ("flexlora", &[0.60, 0.62, 0.61]), ("slora", &[0.61, 0.63, 0.62])], &[]);
        let mixed = point("mixed", &[("lora", &[0.55, 0.58, 0.56]), ("flexlora", &[0.60, 0.61, 0.61]), ("slora", &[0.56, 0.59, 0.57])], &[]);
        let pairs = vec![("r8".to_string(), "mixed".to_string())];
        let points = [uniform.clone(), mixed.clone()];
        let v = judge_flexlora_beats_zero_padding(&points, &pairs, 1.0);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        // FlexLoRA − LoRA per seed 5, 3, 5 pp: mean 4.33; its t interval, recomputed here.
        let (mean, sd) = (13.0 / 3.0, ((2.0f64 / 3.0).powi(2) * 2.0 + (4.0f64 / 3.0).powi(2)) / 2.0);
        let half = 4.302652729911275 * sd.sqrt() / 3f64.sqrt();
        assert!(v.evidence.contains(&format!("{mean:+.2} pp [{:+.2}, {:+.2}]", mean - half, mean + half)), "{}", v.evidence);
        let v = judge_mixed_ranks_cost(&points, &pairs, 1.0);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        // LoRA −5, −4, −5 pp; FlexLoRA 0, −1, 0 pp.
        assert!(v.evidence.contains("LoRA -4.67 pp") && v.evidence.contains("FlexLoRA -0.33 pp"), "{}", v.evidence);
        // No cost: the same accuracies at both points; FlexLoRA tied with zero-padding.
        let same = point("same", &[("lora", &[0.6005, 0.6195, 0.61]), ("flexlora", &[0.6005, 0.6195, 0.61])], &[]);
        let tie = [uniform.clone(), same];
        let tie_pairs = vec![("r8".to_string(), "same".to_string())];
        assert_eq!(judge_mixed_ranks_cost(&tie, &tie_pairs, 1.0).verdict, Verdict::NotReproduced);
        assert_eq!(judge_flexlora_beats_zero_padding(&tie, &tie_pairs, 1.0).verdict, Verdict::NotReproduced);
        assert_eq!(judge_flexlora_beats_zero_padding(&points, &[], 1.0).verdict, Verdict::Inconclusive);
        assert_eq!(judge_mixed_ranks_cost(&[uniform], &pairs, 1.0).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn gap_slope_uses_every_regular_point_and_leaves_out_the_floor() {
        // Gaps 0, 2, 4 pp in every seed: slope 2 pp per point, 4 pp over the range.
        let a = point("a", &[("fft", &[0.80, 0.82, 0.81]), ("lora", &[0.80, 0.82, 0.81])], &[]);
        let b = point("b", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.68, 0.70, 0.69])], &[]);
        let c = point("c", &[("fft", &[0.60, 0.62, 0.61]), ("lora", &[0.56, 0.58, 0.57])], &[]);
        // At chance (5 %): left out even though its gap would reverse the trend.
        let floor = point("floor", &[("fft", &[0.06, 0.06, 0.06]), ("lora", &[0.06, 0.07, 0.06])], &[]);
        let v = judge_gap_slope(&[a.clone(), b.clone(), c.clone(), floor], 1.0, Some(0.05), 3.0);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        assert!(v.evidence.contains("+4.00 pp") && v.evidence.contains("Left out") && v.evidence.contains("floor"), "{}", v.evidence);
        // The ends rule on the same points sees the floor point last and calls it shrinking.
        let floor = point("floor", &[("fft", &[0.06, 0.06, 0.06]), ("lora", &[0.06, 0.07, 0.06])], &[]);
        assert_ne!(judge_gap_grows(&[a, b, c, floor], 1.0).verdict, Verdict::Reproduced);
    }

    #[test]
    fn flat_needs_the_whole_interval_inside() {
        assert!(is_flat(0.1, Some(0.05), 0.2));
        assert!(!is_flat(0.1, Some(0.15), 0.2), "the mean is inside, the interval is not");
        assert!(!is_flat(-0.25, None, 0.2));
        assert!(is_flat(-0.1, None, 0.2));
    }

    #[test]
    fn last_k_full_statistic_judges_on_the_mean_of_the_full_rounds() {
        let mut p = point("p", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.70, 0.72, 0.71])], &[]);
        for m in p.summary.per_seed.values_mut() {
            m.get_mut("lora").unwrap().full_test_mean_accuracy = Some(0.60);
            m.get_mut("fft").unwrap().full_test_mean_accuracy = Some(0.65);
        }
        assert_eq!(paired_pp(&p, "fft", "lora").mean, 0.0);
        p.statistic = Statistic::LastKFull;
        assert!((paired_pp(&p, "fft", "lora").mean - 5.0).abs() < 1e-9);
    }

    #[test]
    fn the_plan_table_sums_and_gives_the_ratio() {
        let rows = vec![
            PlanRow { point: "IID".into(), method: "fft".into(), seeds: 3, estimated_seconds: 100.0, measured_seconds: Some(150.0) },
            PlanRow { point: "IID".into(), method: "lora".into(), seeds: 3, estimated_seconds: 50.0, measured_seconds: None },
        ];
        let t = plan_table(&rows);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0][5], "1.50");
        assert_eq!(t.rows[2][5], "1.50", "the total's ratio counts only measured rows");
    }

    #[test]
    fn closes_gap_verdicts() {
        let acc = |slora: &'static [f64]| point("p", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.60, 0.63, 0.61]), ("slora", slora)], &[]);
        assert_eq!(judge_closes_gap(&acc(&[0.70, 0.72, 0.705]), 1.0).verdict, Verdict::Reproduced);
        assert_eq!(judge_closes_gap(&acc(&[0.65, 0.67, 0.66]), 1.0).verdict, Verdict::NotReproduced);
        assert_eq!(judge_closes_gap(&acc(&[0.58, 0.61, 0.59]), 1.0).verdict, Verdict::NotReproduced);
        assert_eq!(judge_closes_gap(&acc(&[0.72, 0.62, 0.67]), 1.0).verdict, Verdict::Inconclusive);
        // No gap to close.
        let flat = point("p", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.70, 0.72, 0.71]), ("slora", &[0.70, 0.72, 0.71])], &[]);
        let v = judge_closes_gap(&flat, 1.0);
        assert!(v.verdict == Verdict::Inconclusive && v.evidence.contains("no gap to close"), "{}", v.evidence);
    }

    #[test]
    fn time_cut_verdicts_and_reduction() {
        let acc: &[(&str, &[f64])] = &[("fft", &[0.7, 0.7, 0.7])];
        let p = point("p", acc, &[("fft", &[Some(100.0), Some(120.0), Some(80.0)]), ("slora", &[Some(20.0), Some(30.0), Some(10.0)])]);
        let (i, reached, seeds) = time_reduction(&p, "slora", "fft");
        assert_eq!((reached, seeds), (3, 3));
        // Cuts 80, 75, 87.5 %.
        assert!((i.mean - (80.0 + 75.0 + 87.5) / 3.0).abs() < 1e-9);
        assert_eq!(judge_time_cut(std::slice::from_ref(&p), &p).verdict, Verdict::Reproduced);
        let missed = point("p", acc, &[("fft", &[Some(100.0), Some(120.0), Some(80.0)]), ("slora", &[None, None, Some(10.0)])]);
        assert_eq!(judge_time_cut(std::slice::from_ref(&missed), &missed).verdict, Verdict::NotReproduced);
        let slower = point("p", acc, &[("fft", &[Some(10.0), Some(12.0), Some(8.0)]), ("slora", &[Some(20.0), Some(25.0), Some(17.0)])]);
        assert_eq!(judge_time_cut(std::slice::from_ref(&slower), &slower).verdict, Verdict::NotReproduced);
        // The largest cut is taken over regular points where every seed has both times: a 99 % cut
        // in the one seed that reached the target, or at an extreme point, does not count.
        let one_seed = point("one", acc, &[("fft", &[Some(100.0), None, None]), ("slora", &[Some(1.0), Some(5.0), None])]);
        let mut extreme = point("x", acc, &[("fft", &[Some(100.0); 3]), ("slora", &[Some(2.0); 3])]);
        extreme.extreme = true;
        let v = judge_time_cut(&[p.clone(), one_seed, extreme], &p);
        assert!(v.evidence.contains("largest mean cut over the points is 81 % (p)"), "{}", v.evidence);
        assert!(v.evidence.contains("recorded client training time"), "{}", v.evidence);
    }

    /// With every hit's benchmarked compute known, claim 3 is judged on it, not on the recorded
    /// seconds that a build beside the study inflated; and it is judged against LoRA too.
    #[test]
    fn time_cut_uses_benchmarked_compute_and_compares_with_lora() {
        let acc: &[(&str, &[f64])] = &[("fft", &[0.7, 0.7, 0.7])];
        // Recorded: SLoRA slower than FFT in every seed (a build ran beside it).
        let secs: &[(&str, &[Option<f64>])] =
            &[("fft", &[Some(10.0); 3]), ("slora", &[Some(30.0), Some(40.0), Some(35.0)]), ("lora", &[Some(20.0), Some(22.0), Some(18.0)])];
        let mut p = point("p", acc, secs);
        assert_eq!(judge_time_cut(std::slice::from_ref(&p), &p).verdict, Verdict::NotReproduced);
        // Benchmarked: SLoRA needs 4, 5, 6 s; FFT 100 s; LoRA 8, 9, 10 s.
        let bench = |m: &str, s: u64| match m {
            "fft" => 100.0,
            "slora" => 3.0 + s as f64,
            _ => 7.0 + s as f64,
        };
        for t in &mut p.summary.time_to_target {
            for (s, h) in &mut t.per_seed {
                h.as_mut().unwrap().benchmark_seconds = Some(bench(&t.method, *s));
            }
        }
        assert_eq!(TimeBasis::at(&p), TimeBasis::Benchmarked);
        let v = judge_time_cut(std::slice::from_ref(&p), &p);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        assert!(v.evidence.contains("benchmarked client compute"), "{}", v.evidence);
        assert!(v.evidence.contains("against LoRA too the interval is above 0"), "{}", v.evidence);
        // One hit without its benchmarked time: every method falls back to the recorded seconds.
        p.summary.time_to_target[0].per_seed[0].1.as_mut().unwrap().benchmark_seconds = None;
        assert_eq!(TimeBasis::at(&p), TimeBasis::Recorded);
    }

    #[test]
    fn versus_reference_pairs_seeds_across_points() {
        let random = point("random", &[("slora", &[0.60, 0.62, 0.64]), ("fft", &[0.7, 0.7, 0.7])], &[]);
        let learned = point("learned", &[("slora", &[0.63, 0.63, 0.67])], &[]);
        // Per seed +3, +1, +3 pp: mean 2.33, t(2) = 4.303, sd 1.155 -> half-width 2.87.
        let i = across_points_pp(&learned, &random, "slora");
        assert_eq!(i.n, 3);
        assert!((i.mean - 7.0 / 3.0).abs() < 1e-9);
        assert!((i.half_width.unwrap() - 4.303 * (4.0f64 / 3.0).sqrt() / 3f64.sqrt()).abs() < 1e-2, "{i:?}");
        let t = versus_reference_table(&[random.clone(), learned.clone()], &random);
        let slora = t.rows.iter().find(|r| r[0] == "SLoRA: accuracy change (pp)").expect("a SLoRA row");
        assert_eq!(slora[1], "reference");
        assert!(slora[2].starts_with("+2.33 pp ["), "{slora:?}");
        assert!(t.rows.iter().all(|r| !r[0].starts_with("FFT")), "FFT ran at the reference point only: no rows");
    }
}
