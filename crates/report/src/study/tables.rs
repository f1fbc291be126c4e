//! The study's tables, built from the points (and the verdicts): one function per table, cells
//! already formatted, so the report only places them.

use crate::metrics::{method_label, FFT, SLORA};
use crate::plots::style::{format_bytes, format_seconds};
use crate::tables::{Align, TextTable};

use super::points::{across_points_pp, fmt_interval, paired_pp, study_methods, LORA};
use super::schema::{ClaimVerdict, PlanRow, StudyPoint};
use super::verdicts::{fmt_cut, time_reduction};

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
                        // A target the untrained model already meets (FFT at chance under DP) times nothing.
                        Some(h) if h.round == 0 => format!("met before training ({}/{} seeds)", t.reached, t.seeds),
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

/// Per point, the DP settings and the accountant's ε.
pub fn privacy_table(points: &[StudyPoint]) -> TextTable {
    let eps = |e: f64| if e.is_finite() { format!("{e:.3}") } else { "∞".into() };
    let rows = points
        .iter()
        .map(|p| match &p.summary.privacy {
            Some(dp) => vec![
                p.label.clone(),
                dp.mode.clone(),
                format!("{}", dp.clip_norm),
                format!("{:.4}", dp.noise_multiplier),
                eps(dp.epsilon),
                format!("{}", dp.delta),
                dp.epsilon_at_strict_delta.map_or("–".into(), eps),
                if dp.mode == "local" { "the server (replace one)".into() } else { "the released model (add/remove one)".into() },
            ],
            None => vec![p.label.clone(), "off".into(), "–".into(), "–".into(), "∞".into(), "–".into(), "∞".into(), "–".into()],
        })
        .collect();
    let headers = ["Point", "DP", "C", "σ", "ε", "δ", "ε at δ = 1e-5", "against"];
    right_aligned(headers.iter().map(|h| h.to_string()).collect(), rows)
}

/// Per point and method, the audit's three attacks.
pub fn leakage_table(points: &[StudyPoint]) -> TextTable {
    let pct = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{:.1}", 100.0 * x));
    let mut rows = Vec::new();
    for p in points {
        for (m, l) in &p.summary.leakage {
            rows.push(vec![
                p.label.clone(),
                method_label(m),
                l.uploads.to_string(),
                format!("{} / {} / {}", pct(l.token_precision), pct(l.token_precision_chance), pct(l.token_recall)),
                format!("{} / {}", pct(l.label_precision), pct(l.label_precision_chance)),
                format!("{} / {}", pct(l.probe_accuracy), pct(Some(l.probe_chance))),
            ]);
        }
    }
    let headers = ["Point", "Method", "Uploads", "Token precision % / chance / recall", "Label precision % / chance", "Probe accuracy % / chance"];
    right_aligned(headers.iter().map(|h| h.to_string()).collect(), rows)
}

/// The verdicts as a table.
pub fn verdict_table(verdicts: &[ClaimVerdict]) -> TextTable {
    TextTable {
        headers: vec!["Claim".into(), "Verdict".into(), "Evidence".into()],
        rows: verdicts.iter().map(|v| vec![v.claim.statement().to_string(), v.verdict.to_string(), v.evidence.clone()]).collect(),
        align: vec![Align::Left; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::fixtures::point;

    #[test]
    fn flat_needs_the_whole_interval_inside() {
        assert!(is_flat(0.1, Some(0.05), 0.2));
        assert!(!is_flat(0.1, Some(0.15), 0.2), "the mean is inside, the interval is not");
        assert!(!is_flat(-0.25, None, 0.2));
        assert!(is_flat(-0.1, None, 0.2));
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

    #[test]
    fn a_target_met_before_training_times_nothing() {
        let mut p = point("DP", &[("fft", &[0.05, 0.05]), ("lora", &[0.3, 0.3])], &[("fft", &[Some(0.0), Some(0.0)]), ("lora", &[Some(80.0), None])]);
        let fft = p.summary.time_to_target.iter_mut().find(|t| t.method == "fft").unwrap();
        fft.hit.as_mut().unwrap().round = 0;
        let t = time_table(&[p]);
        let cell = |m: &str| t.rows.iter().find(|r| r[0].starts_with(m)).unwrap()[1].clone();
        assert_eq!(cell("FFT client"), "met before training (2/2 seeds)");
        assert_eq!(cell("LoRA client"), "1 min 20 s (1/2 seeds)");
    }
}
