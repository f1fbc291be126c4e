//! Studies: a committed set of runs (points) that tests the paper's claims, with a verdict per claim.
//!
//! A study is a sweep whose report does not stop at a table: it states each claim it tests, and says
//! *reproduced*, *not reproduced* or *inconclusive* from paired confidence intervals over seeds,
//! with the numbers behind the verdict. The verdict functions take plain [`StudyPoint`]s, so they are
//! tested on known inputs.
//!
//! One concept a file, each using only those above it:
//! - `schema`: what `study.json` holds (settings, points, claims, verdicts, plan rows);
//! - `points`: what a study reads off its points (per-seed accuracies, paired differences);
//! - `verdicts`: the verdict rules, one function per claim, and the evidence they state;
//! - `tables`: the tables built from the points and the verdicts;
//! - `render`: the study report, its tables and figures in order.
//!
//! Submodules are private: every item keeps its one public path, `slora_report::study::*`.

mod points;
mod render;
mod schema;
mod tables;
mod verdicts;

#[cfg(test)]
mod fixtures;

pub use points::{across_points_pp, claim_point, paired_pp};
pub use render::{build_study_report, PointCurves};
pub use schema::{Claim, ClaimVerdict, GapContrast, PlanRow, Statistic, StudyAxis, StudyPoint, StudySettings, StudySummary, Verdict};
pub use tables::{
    accuracy_table, budget_table, gap_table, is_flat, plan_table, time_table, upload_table, verdict_table, versus_reference_table,
};
pub use verdicts::{
    judge, judge_closes_gap, judge_drift_opens_gap, judge_flexlora_beats_zero_padding, judge_gap, judge_gap_grows, judge_gap_slope,
    judge_mixed_ranks_cost, judge_time_cut, time_reduction, TimeBasis,
};
