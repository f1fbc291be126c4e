//! kill -9 at seeded random moments spread over partition, stage 1 (mid-round), decompose and stage 2;
//! after every kill nothing partial is taken as complete, every rerun resumes, and the final outputs
//! and metrics are bit-identical to an uninterrupted run.
//!
//! A chain is one artifacts folder: `pipeline stage2` is started and SIGKILLed once per moment below,
//! each start continuing what the previous left, then run to completion. A moment is an event in the
//! artifacts folder (a stage's temporary output appears, a round checkpoint is written) plus a seeded
//! random delay, so the kills land inside the phase whatever the machine's speed.

use super::common::*;
use std::path::Path;
use std::time::Duration;

/// Where a kill is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Once partition's temporary output exists, + 0..40 ms (partition takes ~50-300 ms here).
    Partition,
    /// Once stage 1 wrote its checkpoint of local round k (mid-round k + 1), + 0..1200 ms.
    Stage1(u32),
    /// Once decompose's temporary output exists, + 0..1500 ms.
    Decompose,
    /// Once stage 2 wrote its checkpoint of local round k, + 0..1200 ms.
    Stage2(u32),
}

const MOMENTS: [Moment; 6] =
    [Moment::Partition, Moment::Stage1(0), Moment::Stage1(1), Moment::Decompose, Moment::Stage2(0), Moment::Stage2(1)];

fn has_temp(artifacts: &Path, stage: &str) -> bool {
    std::fs::read_dir(artifacts.join(stage))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
}

fn is_committed(artifacts: &Path, stage: &str) -> bool {
    std::fs::read_dir(artifacts.join(stage))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
}

fn checkpoint_at_least(artifacts: &Path, stage: &str, method: &str, round: u32) -> bool {
    newest_checkpoint(artifacts, stage, method).is_some_and(|(r, _)| r >= round)
}

/// The stage whose run was in progress (it has temporary output), if any.
fn running_stage(artifacts: &Path) -> Option<&'static str> {
    STAGES.into_iter().find(|s| has_temp(artifacts, s))
}

/// One chain; returns the stages the kills hit (None = between stages).
fn chain(seed: u64) -> Vec<Option<&'static str>> {
    let tiny = Tiny::new();
    let art = tiny.artifacts();
    let mut rng = Rng(seed);
    let mut hits = Vec::new();
    for moment in MOMENTS {
        let mut child = tiny.spawn(&["stage2"]);
        let (reached, delay_ms) = match moment {
            Moment::Partition => {
                (wait_until(&mut child, || has_temp(&art, "partition") || is_committed(&art, "partition")), rng.below(40))
            }
            Moment::Stage1(k) => (
                wait_until(&mut child, || checkpoint_at_least(&art, "stage1", "slora-stage1", k) || is_committed(&art, "stage1")),
                rng.below(1200),
            ),
            Moment::Decompose => {
                (wait_until(&mut child, || has_temp(&art, "decompose") || is_committed(&art, "decompose")), rng.below(1500))
            }
            Moment::Stage2(k) => (
                wait_until(&mut child, || checkpoint_at_least(&art, "stage2", "slora-stage2", k) || is_committed(&art, "stage2")),
                rng.below(1200),
            ),
        };
        if reached {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        if child.try_wait().unwrap().is_some() {
            eprintln!("chain {seed}: {moment:?}: the run ended before the kill");
            continue;
        }
        let hit = running_stage(&art);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("chain {seed}: {moment:?} + {delay_ms} ms: killed during {}", hit.unwrap_or("(between stages)"));
        hits.push(hit);
        // Nothing the killed process left is taken as complete.
        assert_consistent(&art, false, true);
    }
    tiny.run_ok(&["stage2"]);
    assert_consistent(&art, true, false);
    assert_same_as_reference(&art, &format!("chain {seed}"));
    hits
}

fn run_chains(seeds: &[u64]) -> Vec<Option<&'static str>> {
    reference();
    seeds.iter().flat_map(|&s| chain(s)).collect()
}

#[test]
fn kill_9_at_seeded_random_moments_then_resume_to_identical_outputs() {
    let hits = run_chains(&[0x5eed_0001, 0x5eed_0002]);
    assert!(hits.len() >= 10, "only {} kills landed while the pipeline ran: {hits:?}", hits.len());
    for stage in STAGES {
        assert!(hits.contains(&Some(stage)), "no kill landed during {stage}: {hits:?}");
    }
}
