//! Judging the claims: one function per claim, each a pure function of per-seed figures, returning
//! the verdict with the numbers and the rule that decided it.
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
//! - **SLoRA leaks less than FFT**, at the no-DP point of the first `privacy_pairs` entry, from the
//!   audit's three attacks (tokens: recall; labels: precision above chance; the shadow probe:
//!   right dominant-label guesses), each per recorded upload, SLoRA's two stages pooled: FFT − SLoRA
//!   with a 95 % normal interval (unpaired: the uploads are different clients' rounds). An attack
//!   says "less" when the interval is above +margin, "more" below −margin, "same" inside ±margin.
//!   Reproduced when some attack says less and none says more; not reproduced when one says more
//!   or all say the same; else inconclusive.
//! - **SLoRA loses less under DP**, per `privacy_pairs` entry `[no DP, DP]`: per seed, FFT's drop
//!   (no DP − DP) minus SLoRA's. Judged at the last pair: reproduced when the interval is above 0;
//!   not reproduced when it is below 0 or inside ±margin; inconclusive otherwise, and also when
//!   FFT and SLoRA both sit within `floor_pp` of chance under DP (both at the floor).

use std::collections::BTreeMap;

use crate::metrics::{method_label, FFT, SLORA};
use crate::replicates::{mean_ci, Interval};

use super::points::{across_points, claim_point, differences, finals, fmt_interval, paired_pp, regular, study_methods, LORA};
use super::schema::{Claim, ClaimVerdict, GapContrast, StudyPoint, StudySettings, Verdict};

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

pub(super) fn fmt_cut(i: &Interval) -> String {
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

/// Mean difference `a − b` of two groups of per-upload scores (in pp) with a 95 % normal
/// interval (unpaired), `None` when either group is empty.
fn unpaired_pp(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        (m, var / n)
    };
    let ((ma, va), (mb, vb)) = (stats(a), stats(b));
    let (d, h) = (100.0 * (ma - mb), 100.0 * 1.96 * (va + vb).sqrt());
    Some((d, d - h, d + h))
}

/// SLoRA's leakage: its two stages' uploads pooled.
fn slora_leakage(point: &StudyPoint) -> Option<crate::privacy::MethodLeakage> {
    let parts: Vec<&crate::privacy::MethodLeakage> = ["slora-stage1", "slora-stage2"].iter().filter_map(|m| point.summary.leakage.get(*m)).collect();
    crate::privacy::MethodLeakage::pooled(&parts)
}

/// Does SLoRA leak less than FFT (see the module docs)?
pub fn judge_slora_leaks_less(points: &[StudyPoint], pairs: &[(String, String)], margin_pp: f64) -> ClaimVerdict {
    let claim = Claim::SloraLeaksLess;
    let Some(point) = pairs.first().and_then(|(no_dp, _)| points.iter().find(|p| &p.label == no_dp)) else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "no privacy pair ran (privacy_pairs)".into() };
    };
    let (Some(fft), Some(slora)) = (point.summary.leakage.get(FFT), slora_leakage(point)) else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: format!("at {}: no audit of FFT and SLoRA (federation.record_uploads)", point.label) };
    };
    let attacks: [(&str, &Vec<f64>, &Vec<f64>); 3] = [
        ("token recall", &fft.token_recall_per_upload, &slora.token_recall_per_upload),
        ("label precision above chance", &fft.label_excess_per_upload, &slora.label_excess_per_upload),
        ("dominant label from the probe", &fft.probe_hits, &slora.probe_hits),
    ];
    let (mut less, mut more, mut same, mut parts) = (0, 0, 0, Vec::new());
    for (name, a, b) in attacks {
        let Some((d, lo, hi)) = unpaired_pp(a, b) else {
            parts.push(format!("{name}: not measured"));
            continue;
        };
        let word = if lo > margin_pp {
            less += 1;
            "SLoRA less"
        } else if hi < -margin_pp {
            more += 1;
            "SLoRA more"
        } else if lo > -margin_pp && hi < margin_pp {
            same += 1;
            "the same"
        } else {
            "unclear"
        };
        let mean = |v: &Vec<f64>| 100.0 * v.iter().sum::<f64>() / v.len().max(1) as f64;
        parts.push(format!("{name}: FFT {:.1} %, SLoRA {:.1} %, FFT − SLoRA {d:+.1} pp [{lo:+.1}, {hi:+.1}] ({word})", mean(a), mean(b)));
    }
    let (verdict, why) = if more > 0 {
        (Verdict::NotReproduced, "an attack recovers more from SLoRA".to_string())
    } else if less > 0 {
        (Verdict::Reproduced, "an attack recovers less from SLoRA and none recovers more".to_string())
    } else if same == attacks.len() {
        (Verdict::NotReproduced, format!("every attack recovers the same within ±{margin_pp} pp"))
    } else {
        (Verdict::Inconclusive, "the intervals cannot tell".to_string())
    };
    ClaimVerdict {
        claim,
        verdict,
        evidence: format!(
            "At {} ({} FFT and {} SLoRA uploads): {}: {why}.",
            point.label,
            fft.uploads,
            slora.uploads,
            parts.join("; ")
        ),
    }
}

/// Does SLoRA lose less accuracy than FFT under DP (see the module docs)?
pub fn judge_slora_loses_less_under_dp(points: &[StudyPoint], pairs: &[(String, String)], margin_pp: f64, chance: Option<f64>, floor_pp: f64) -> ClaimVerdict {
    let claim = Claim::SloraLosesLessUnderDp;
    let find = |l: &str| points.iter().find(|p| p.label == l);
    let mut parts = Vec::new();
    let mut last = None;
    for (a, b) in pairs {
        let (Some(no_dp), Some(dp)) = (find(a), find(b)) else { continue };
        let drop = |m: &str| -> BTreeMap<u64, f64> {
            let (x, y) = (super::points::finals(no_dp, m), super::points::finals(dp, m));
            x.iter().filter_map(|(s, v)| Some((*s, 100.0 * (v - y.get(s)?)))).collect()
        };
        let (f, sl) = (drop(FFT), drop(SLORA));
        let did: Vec<f64> = f.iter().filter_map(|(s, v)| Some(v - sl.get(s)?)).collect();
        let i = mean_ci(&did);
        let methods: Vec<String> = study_methods(&[no_dp.clone(), dp.clone()])
            .iter()
            .filter(|m| dp.summary.methods.contains_key(*m) && no_dp.summary.methods.contains_key(*m))
            .map(|m| format!("{} {}", method_label(m), fmt_interval(&super::points::across_points_pp(no_dp, dp, m))))
            .collect();
        parts.push(format!("{b} against {a}: FFT's drop − SLoRA's {}; each method's drop: {}", fmt_interval(&i), methods.join(", ")));
        let at_floor = |m: &str| {
            let v: Vec<f64> = super::points::finals(dp, m).into_values().collect();
            match (chance, v.is_empty()) {
                (Some(c), false) => 100.0 * (v.iter().sum::<f64>() / v.len() as f64 - c) <= floor_pp,
                _ => false,
            }
        };
        last = Some((b.clone(), i, at_floor(FFT) && at_floor(SLORA)));
    }
    let Some((label, i, floor)) = last else {
        return ClaimVerdict { claim, verdict: Verdict::Inconclusive, evidence: "no privacy pair ran (privacy_pairs)".into() };
    };
    let (verdict, why) = if floor {
        (Verdict::Inconclusive, format!("FFT and SLoRA are both within {floor_pp} pp of chance at {label}: both at the floor"))
    } else {
        match i.bounds() {
            None => (Verdict::Inconclusive, "one seed: no interval".to_string()),
            Some((lo, _)) if lo > 0.0 => (Verdict::Reproduced, "the interval is above 0".to_string()),
            Some((_, hi)) if hi < 0.0 => (Verdict::NotReproduced, "SLoRA loses more: the interval is below 0".to_string()),
            Some((lo, hi)) if lo > -margin_pp && hi < margin_pp => (Verdict::NotReproduced, format!("the interval lies within ±{margin_pp} pp")),
            Some(_) => (Verdict::Inconclusive, "the interval contains 0".to_string()),
        }
    };
    ClaimVerdict { claim, verdict, evidence: format!("Accuracy lost to DP, paired by seed (pp): {}; judged at {label}: {why}.", parts.join("; ")) }
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
            (Claim::SloraLeaksLess, _) => judge_slora_leaks_less(points, &settings.privacy_pairs, settings.margin_pp),
            (Claim::SloraLosesLessUnderDp, _) => {
                judge_slora_loses_less_under_dp(points, &settings.privacy_pairs, settings.margin_pp, settings.chance, settings.floor_pp)
            }
            (c, None) => ClaimVerdict { claim: *c, verdict: Verdict::Inconclusive, evidence: "no claim point".into() },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::fixtures::point;

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

    fn leak(tokens: &[f64], labels: &[f64], probe: &[f64]) -> crate::privacy::MethodLeakage {
        crate::privacy::MethodLeakage {
            uploads: tokens.len(),
            token_precision: None,
            token_recall: None,
            token_precision_chance: None,
            token_measured: 0,
            label_measured: 0,
            label_precision: None,
            label_recall: None,
            label_precision_chance: None,
            probe_accuracy: None,
            probe_guesses: probe.len(),
            probe_chance: 0.05,
            token_recall_per_upload: tokens.to_vec(),
            label_excess_per_upload: labels.to_vec(),
            probe_hits: probe.to_vec(),
        }
    }

    #[test]
    fn slora_leaks_less_only_when_an_attack_recovers_less_and_none_more() {
        let pairs = vec![("no DP".to_string(), "ε=2".to_string())];
        let with = |fft: crate::privacy::MethodLeakage, s1: crate::privacy::MethodLeakage, s2: crate::privacy::MethodLeakage| {
            let mut p = point("no DP", &[("fft", &[0.5, 0.5, 0.5])], &[]);
            p.summary.leakage.insert("fft".into(), fft);
            p.summary.leakage.insert("slora-stage1".into(), s1);
            p.summary.leakage.insert("slora-stage2".into(), s2);
            judge_slora_leaks_less(&[p], &pairs, 1.0)
        };
        // FFT's tokens leak, SLoRA's cannot; labels and probe the same: reproduced.
        let v = with(leak(&[1.0; 4], &[0.3; 4], &[1.0, 0.0, 1.0, 0.0]), leak(&[0.0; 2], &[0.3; 2], &[1.0, 0.0]), leak(&[0.0; 2], &[0.3; 2], &[1.0, 0.0]));
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        // The probe recovers more from SLoRA (every guess right against none): not reproduced.
        let v = with(leak(&[1.0; 4], &[0.3; 4], &[0.0; 4]), leak(&[0.0; 2], &[0.3; 2], &[1.0; 2]), leak(&[0.0; 2], &[0.3; 2], &[1.0; 2]));
        assert_eq!(v.verdict, Verdict::NotReproduced, "{}", v.evidence);
        // Every attack the same: not reproduced.
        let v = with(leak(&[0.0; 4], &[0.3; 4], &[1.0; 4]), leak(&[0.0; 2], &[0.3; 2], &[1.0; 2]), leak(&[0.0; 2], &[0.3; 2], &[1.0; 2]));
        assert_eq!(v.verdict, Verdict::NotReproduced, "{}", v.evidence);
        assert!(v.evidence.contains("the same"), "{}", v.evidence);
        // Only noisy differences: inconclusive.
        let v = with(leak(&[0.0; 4], &[0.3; 4], &[1.0, 0.0, 1.0, 0.0]), leak(&[0.0; 2], &[0.3; 2], &[0.0, 1.0]), leak(&[0.0; 2], &[0.3; 2], &[1.0, 0.0]));
        assert_eq!(v.verdict, Verdict::Inconclusive, "{}", v.evidence);
    }

    #[test]
    fn dp_loss_compares_the_drops_paired_by_seed_and_refuses_the_floor() {
        let pairs = vec![("no DP".to_string(), "ε=2".to_string())];
        let no_dp = point("no DP", &[("fft", &[0.60, 0.62, 0.61]), ("slora", &[0.58, 0.60, 0.59])], &[]);
        let dp = point("ε=2", &[("fft", &[0.30, 0.33, 0.31]), ("slora", &[0.50, 0.52, 0.51])], &[]);
        let v = judge_slora_loses_less_under_dp(&[no_dp.clone(), dp], &pairs, 1.0, Some(0.05), 3.0);
        assert_eq!(v.verdict, Verdict::Reproduced, "{}", v.evidence);
        // SLoRA drops more: not reproduced.
        let worse = point("ε=2", &[("fft", &[0.55, 0.57, 0.56]), ("slora", &[0.30, 0.31, 0.33])], &[]);
        assert_eq!(judge_slora_loses_less_under_dp(&[no_dp.clone(), worse], &pairs, 1.0, Some(0.05), 3.0).verdict, Verdict::NotReproduced);
        // Both at chance under DP: the comparison is at the floor.
        let floor = point("ε=2", &[("fft", &[0.05, 0.06, 0.05]), ("slora", &[0.06, 0.05, 0.05])], &[]);
        let v = judge_slora_loses_less_under_dp(&[no_dp, floor], &pairs, 1.0, Some(0.05), 3.0);
        assert_eq!(v.verdict, Verdict::Inconclusive, "{}", v.evidence);
        assert!(v.evidence.contains("floor"), "{}", v.evidence);
    }
}
