//! LoRA-A² (Koo et al., 2024): alternating freeze and adaptive rank selection.
//!
//! **Alternating freeze.** Every round one LoRA factor is frozen at the global value and only the
//! other trains, is uploaded and averaged. With one factor shared by every client, the average of
//! the trained factor times the shared one is the average of the clients' updates (FFA-LoRA's
//! exactness), while both factors still move over the run. The paper freezes A in even rounds and B
//! in odd ones, counting from 0; our rounds count from 1, so A is frozen in odd rounds (the paper's
//! round 0 is our round 1). That order matters: B starts at zero, and with B frozen at zero A's
//! gradient is zero, so the first round must train B.
//!
//! **Adaptive rank selection.** A client uploads only its most important rank components of the
//! factor it trained: the paper scores component i of module l by how much it changes ΔW,
//! `S(l, i) = ‖ΔB[:, i]‖ · ‖A[i, :]‖` when B trains (`‖B[:, i]‖ · ‖ΔA[i, :]‖` when A does), and
//! keeps the `budget × modules` highest scores over the whole model, so a module that needs more
//! of the budget can take it from one that needs less. An unselected component's update is
//! dropped (it stays at the global value). Choices where the paper leaves a detail open, written
//! here and in the report: ties go to the earlier module and the lower index; the server averages
//! the masked factors over every reply with the FedAvg weights (a client that did not select a
//! component contributes its global value, i.e. a zero update), so the global model is still the
//! weighted average of the clients' uploaded models; and an upload is charged as the selected
//! components plus a 4-byte index each, or the dense factor when that is smaller.

use candle_core::{DType, Device, Tensor};

use crate::aggregate::State;
use crate::error::{FederationError, Result};

/// State-name suffix of a LoRA A factor (peft's).
pub(crate) const LORA_A: &str = ".lora_A.weight";
/// State-name suffix of a LoRA B factor (peft's).
pub(crate) const LORA_B: &str = ".lora_B.weight";

/// A LoRA factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// The down projection `A [r, in]` (components are rows).
    A,
    /// The up projection `B [out, r]` (components are columns).
    B,
}

impl Factor {
    /// The state-name suffix of this factor.
    pub fn suffix(self) -> &'static str {
        match self {
            Factor::A => LORA_A,
            Factor::B => LORA_B,
        }
    }

    /// The other factor.
    pub fn other(self) -> Factor {
        match self {
            Factor::A => Factor::B,
            Factor::B => Factor::A,
        }
    }

    /// Whether `name` is a tensor of this factor.
    pub fn holds(self, name: &str) -> bool {
        name.ends_with(self.suffix())
    }
}

/// The factor frozen in global round `round` (1-based): A in odd rounds (B trains first), B in even.
pub fn frozen_factor(round: u32) -> Factor {
    if round % 2 == 1 {
        Factor::A
    } else {
        Factor::B
    }
}

/// Rank components of `t` (a factor of kind `factor`) as vectors: B's columns, A's rows.
fn components(t: &Tensor, factor: Factor) -> Result<Vec<Vec<f32>>> {
    let rows = t.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(match factor {
        Factor::A => rows,
        Factor::B => {
            let r = rows.first().map_or(0, Vec::len);
            (0..r).map(|i| rows.iter().map(|row| row[i]).collect()).collect()
        }
    })
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt()
}

/// The importance `S(l, i)` of every rank component of the trained factor, per module (the state
/// order), from the factor at the round's start (`start`), after local training (`trained`) and the
/// frozen factor (in `trained`, unchanged).
pub fn importance(start: &State, trained: &State, factor: Factor) -> Result<Vec<(String, Vec<f64>)>> {
    let mut out = Vec::new();
    for (name, t) in trained.iter().filter(|(n, _)| factor.holds(n)) {
        let module = name.strip_suffix(factor.suffix()).expect("holds the suffix");
        let other_name = format!("{module}{}", factor.other().suffix());
        let (t0, other) = match (start.get(name), trained.get(&other_name)) {
            (Some(t0), Some(o)) => (t0, o),
            _ => return Err(FederationError::StateMismatch(format!("`{name}`: its start value or `{other_name}` is missing"))),
        };
        let delta = components(&(t - t0)?, factor)?;
        let frozen = components(other, factor.other())?;
        if delta.len() != frozen.len() {
            return Err(FederationError::StateMismatch(format!("`{name}` and `{other_name}` differ in rank")));
        }
        out.push((module.to_string(), delta.iter().zip(&frozen).map(|(d, f)| norm(d) * norm(f)).collect()));
    }
    Ok(out)
}

/// The `(module index, component)` pairs the client keeps: the `keep` highest scores over every
/// module (ties: earlier module, then lower index).
pub fn select(scores: &[(String, Vec<f64>)], keep: usize) -> Vec<(usize, usize)> {
    let mut all: Vec<(f64, usize, usize)> =
        scores.iter().enumerate().flat_map(|(m, (_, s))| s.iter().enumerate().map(move |(i, v)| (*v, m, i))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut kept: Vec<(usize, usize)> = all.into_iter().take(keep).map(|(_, m, i)| (m, i)).collect();
    kept.sort_unstable();
    kept
}

/// The upload of a client that trained `factor`: `trained` with each factor tensor's unselected
/// components put back to their round-start value (`start`), keeping `budget` components per
/// module on average over the model. Other tensors (the head) are left as trained.
pub fn select_ranks(start: &State, trained: &State, factor: Factor, budget: usize) -> Result<State> {
    let scores = importance(start, trained, factor)?;
    let keep = select(&scores, budget * scores.len());
    let mut out = trained.clone();
    for (m, (module, s)) in scores.iter().enumerate() {
        let name = format!("{module}{}", factor.suffix());
        let (t, t0) = (&trained[&name], &start[&name]);
        let (rows, cols) = t.dims2()?;
        let mut mask = vec![0u8; rows * cols];
        for &(_, i) in keep.iter().filter(|(mm, _)| *mm == m) {
            debug_assert!(i < s.len());
            match factor {
                Factor::A => mask[i * cols..(i + 1) * cols].fill(1),
                Factor::B => (0..rows).for_each(|row| mask[row * cols + i] = 1),
            }
        }
        // A select, not arithmetic: kept entries are the trained values and the others the start
        // values, bit for bit (t0 + (t − t0) rounds).
        let mask = Tensor::from_vec(mask, (rows, cols), &Device::Cpu)?;
        out.insert(name, mask.where_cond(t, t0)?);
    }
    Ok(out)
}

/// Bytes of an upload of `factor`'s tensors against the `global` state it started from: per
/// tensor, its components that differ from the global value plus a 4-byte index each, or the
/// dense tensor when that is smaller; every other tensor dense.
pub fn upload_bytes(update: &State, global: &State, factor: Factor) -> Result<u64> {
    let mut bytes = 0u64;
    for (name, t) in update {
        let dense = (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let Some(g) = global.get(name).filter(|_| factor.holds(name)) else {
            bytes += dense;
            continue;
        };
        let (now, before) = (components(t, factor)?, components(g, factor)?);
        let changed = now.iter().zip(&before).filter(|(a, b)| a != b).count() as u64;
        let len = now.first().map_or(0, Vec::len) as u64;
        bytes += dense.min(changed * (len * t.dtype().size_in_bytes() as u64 + 4));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    /// Two modules of rank 3; B trained. Module m0's update is large in component 2, m1's in 0 and 1.
    fn states() -> (State, State) {
        let mut start = State::new();
        let mut trained = State::new();
        for (m, a, b0, b1) in [
            // A [3, 2], B [2, 3] before and after.
            ("m0", [1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.0; 6], [0.1, 0.0, 3.0, 0.0, 0.0, 0.0]),
            ("m1", [2.0, 0.0, 1.0, 0.0, 0.5, 0.5], [0.0; 6], [1.0, 1.0, 0.0, 0.0, 0.0, 0.05]),
        ] {
            start.insert(format!("{m}{LORA_A}"), t(&a, (3, 2)));
            start.insert(format!("{m}{LORA_B}"), t(&b0, (2, 3)));
            trained.insert(format!("{m}{LORA_A}"), t(&a, (3, 2)));
            trained.insert(format!("{m}{LORA_B}"), t(&b1, (2, 3)));
        }
        trained.insert("classifier.bias".into(), Tensor::ones(2, DType::F32, &Device::Cpu).unwrap());
        (start, trained)
    }

    #[test]
    fn the_schedule_trains_b_first_and_alternates() {
        assert_eq!((1..=4).map(frozen_factor).collect::<Vec<_>>(), [Factor::A, Factor::B, Factor::A, Factor::B]);
    }

    /// The criterion ‖ΔB[:, i]‖·‖A[i, :]‖, computed by hand, and the selection of the highest over
    /// the whole model (a module may take more than its share of the budget).
    #[test]
    fn rank_selection_keeps_the_highest_scores_over_the_model() -> anyhow::Result<()> {
        let (start, trained) = states();
        let s = importance(&start, &trained, Factor::B)?;
        // m0: ΔB columns (0.1,0), (0,0), (3,0); A rows (1,0), (0,1), (1,1) -> 0.1, 0, 3·√2.
        // m1: columns (1,0), (1,0), (0,0.05); rows (2,0), (1,0), (.5,.5) -> 2, 1, 0.05·√0.5.
        let want = [[0.1, 0.0, 3.0 * 2f64.sqrt()], [2.0, 1.0, 0.05 * 0.5f64.sqrt()]];
        for ((_, got), want) in s.iter().zip(want) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{g} vs {w}");
            }
        }
        // Budget 1 per module over 2 modules: the two highest, m0's component 2 and m1's 0.
        assert_eq!(select(&s, 2), [(0, 2), (1, 0)]);
        // Budget 3 over the model: m1 takes two of them.
        assert_eq!(select(&s, 3), [(0, 2), (1, 0), (1, 1)]);
        let up = select_ranks(&start, &trained, Factor::B, 1)?;
        // Kept components are trained values; the others are back at the start; A and the head untouched.
        assert_eq!(up["m0.lora_B.weight"].to_vec2::<f32>()?, [[0.0, 0.0, 3.0], [0.0, 0.0, 0.0]]);
        assert_eq!(up["m1.lora_B.weight"].to_vec2::<f32>()?, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]);
        assert_eq!(up["m0.lora_A.weight"].to_vec2::<f32>()?, trained["m0.lora_A.weight"].to_vec2::<f32>()?);
        // Bytes: one changed column of 2 floats + its index per module, against a dense 6 floats;
        // A and the head, if sent, dense.
        let mut sent = up.clone();
        sent.retain(|k, _| !Factor::A.holds(k));
        assert_eq!(upload_bytes(&sent, &start, Factor::B)?, 2 * (2 * 4 + 4) + 2 * 4);
        // Every component changed: the dense factor is cheaper than components plus indices.
        let mut dense = trained.clone();
        dense.insert("m0.lora_B.weight".into(), Tensor::ones((2, 3), DType::F32, &Device::Cpu)?);
        dense.retain(|k, _| k.starts_with("m0.lora_B"));
        assert_eq!(upload_bytes(&dense, &start, Factor::B)?, 6 * 4);
        Ok(())
    }

    #[test]
    fn a_trained_a_is_scored_by_its_rows_and_bs_columns() -> anyhow::Result<()> {
        let (mut start, mut trained) = states();
        // Freeze B at its trained value, move A's row 2 of m0 by (0, 1) only.
        for m in ["m0", "m1"] {
            start.insert(format!("{m}{LORA_B}"), trained[&format!("{m}{LORA_B}")].clone());
        }
        trained.insert("m0.lora_A.weight".into(), t(&[1.0, 0.0, 0.0, 1.0, 1.0, 2.0], (3, 2)));
        let s = importance(&start, &trained, Factor::A)?;
        // ‖ΔA[2, :]‖ = 1 times ‖B[:, 2]‖ = ‖(3, 0)‖ = 3; nothing else moved.
        assert_eq!(s[0].1, [0.0, 0.0, 3.0]);
        assert_eq!(s[1].1, [0.0, 0.0, 0.0]);
        assert!(importance(&start, &State::new(), Factor::A)?.is_empty());
        Ok(())
    }
}
