//! Test fixture: study points from per-seed accuracies and seconds to target, shared by the unit
//! tests of `points`, `verdicts` and `tables`.

use std::collections::BTreeMap;

use crate::replicates::{mean_ci, SeedFigures};
use crate::summary::{MethodSummary, Summary};
use crate::targets::{TargetHit, TimeToTarget};

use super::schema::{Statistic, StudyPoint};

/// A point whose per-seed final accuracies are `acc[method][seed index]` (seeds 1, 2, 3, …) and
/// whose per-seed seconds to target are `secs[method]` (`None`: missed).
pub(super) fn point(label: &str, acc: &[(&str, &[f64])], secs: &[(&str, &[Option<f64>])]) -> StudyPoint {
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
