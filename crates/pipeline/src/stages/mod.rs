//! The stage registry: every stage of the plan, in order, with its deps.
//!
//! Adding a stage = `pub mod <name>;` plus one line in [`registry`] (and its name in [`PLAN`]; a
//! test checks they agree).

pub mod audit;
pub mod base_model;
pub mod baselines;
pub mod decompose;
pub mod federated;
pub mod partition;
pub mod report;
pub mod stage1;
pub mod stage2;
pub mod summaries;
pub mod tune;

use crate::stage::Stage;

/// Every stage of the pipeline, in run order (`pipeline all` runs them in this order).
/// `tune` runs when a learning rate is `"tuned"` (and on `pipeline tune`), not as part of `all`'s list.
/// `audit` runs on `pipeline audit` (and in a study whose runs record their uploads).
pub const PLAN: &[&str] = &["partition", "tune", "stage1", "decompose", "stage2", "baselines", "report", "audit"];

/// What `pipeline all` (and each sweep point) runs: [`PLAN`] without `tune`, which runs first by
/// itself when a learning rate is `"tuned"`.
pub const ALL: &[&str] = &["partition", "stage1", "decompose", "stage2", "baselines", "report"];

/// The implemented stages, in [`PLAN`] order.
pub fn registry() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(partition::Partition),
        Box::new(tune::Tune),
        Box::new(stage1::Stage1),
        Box::new(decompose::Decompose),
        Box::new(stage2::Stage2),
        Box::new(baselines::Baselines),
        Box::new(report::Report),
        Box::new(audit::Audit),
    ]
}

/// The registered stage called `name`.
pub fn find(name: &str) -> Option<Box<dyn Stage>> {
    registry().into_iter().find(|s| s.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_follows_plan_and_deps_come_first() {
        let reg = registry();
        let pos = |n: &str| PLAN.iter().position(|p| *p == n);
        let mut last = None;
        for s in &reg {
            let p = pos(s.name()).unwrap_or_else(|| panic!("{} is not in PLAN", s.name()));
            assert!(last < Some(p), "{} out of PLAN order", s.name());
            last = Some(p);
            for d in s.deps() {
                assert!(pos(d) < Some(p), "{} depends on later stage {d}", s.name());
            }
        }
        assert_eq!(reg.len(), PLAN.len(), "every planned stage is registered");
    }
}
