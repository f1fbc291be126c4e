//! AdamW with decoupled weight decay (torch.optim.AdamW semantics) and saveable state, plus a
//! learning-rate schedule.
//!
//! candle-nn's AdamW keeps its moments private, so a federated client could not resume it. Here
//! the first and second moments and the step count of every variable are plain f32/f64 data that
//! [`AdamW::state`] exports and [`AdamW::load_state`] restores bit-identically. Only the variables
//! handed to [`AdamW::new`] (the trainable ones) get state. The update runs in place on the
//! variable's storage in one fused pass per tensor.

use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, DType, Device, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// AdamW hyper-parameters (torch.optim.AdamW's defaults, lr aside, via [`Default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment (torch's `betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (torch's `betas[1]`).
    pub beta2: f64,
    /// Added to the denominator's square root.
    pub eps: f64,
    /// Decoupled decay: each step multiplies the parameter by `1 - lr * weight_decay`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Moments and step count of one variable.
struct Slot {
    name: String,
    var: Var,
    /// The learning rate of the variable's parameter group (before the schedule's factor).
    lr: f64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
}

/// AdamW over named variables.
pub struct AdamW {
    slots: Vec<Slot>,
    cfg: AdamWConfig,
    /// The schedule's multiplier of every group's rate.
    lr_factor: f64,
}

/// Variables that share a learning rate (torch's `param_groups` entry): e.g. a fresh head trained
/// faster than a pretrained backbone.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The group's learning rate (the schedule multiplies it).
    pub lr: f64,
    /// The group's variables by name.
    pub vars: Vec<(String, Var)>,
}

/// Suffixes of the state tensors of variable `name`: `<name>.exp_avg`, `<name>.exp_avg_sq`,
/// `<name>.step` (f64, shape [1]), as torch names them in `optimizer.state_dict()`.
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const STEP: &str = "step";

impl AdamW {
    /// An optimizer for `vars` (f32, CPU), all at `cfg.lr`. Names must be distinct.
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup { lr: cfg.lr, vars }], cfg)
    }

    /// An optimizer over parameter groups, each at its own rate (`cfg.lr` is then only what
    /// [`AdamW::lr`] reports for a single-group optimizer). Names must be distinct across groups.
    pub fn with_groups(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots: Vec<Slot> = Vec::new();
        for (lr, (name, var)) in groups.into_iter().flat_map(|g| std::iter::repeat(g.lr).zip(g.vars)) {
            if var.dtype() != DType::F32 || !var.device().is_cpu() {
                bail!("AdamW: variable {name} must be f32 on the CPU");
            }
            if slots.iter().any(|s| s.name == name) {
                bail!("AdamW: variable {name} listed twice");
            }
            let n = var.elem_count();
            slots.push(Slot { name, var, lr, exp_avg: vec![0.0; n], exp_avg_sq: vec![0.0; n], step: 0 });
        }
        Ok(Self { slots, cfg, lr_factor: 1.0 })
    }

    /// One update of every variable that has a gradient in `grads` (the others are left alone
    /// and do not advance their step count, like torch's params whose `.grad` is None).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for slot in &mut self.slots {
            let cfg = AdamWConfig { lr: slot.lr * self.lr_factor, ..self.cfg };
            let Some(grad) = grads.get(slot.var.as_tensor()) else { continue };
            if grad.dims() != slot.var.dims() {
                bail!("AdamW: gradient of {} has shape {:?}, variable {:?}", slot.name, grad.dims(), slot.var.dims());
            }
            slot.step += 1;
            let update = Update {
                cfg,
                step: slot.step,
                exp_avg: std::sync::Mutex::new(&mut slot.exp_avg),
                exp_avg_sq: std::sync::Mutex::new(&mut slot.exp_avg_sq),
            };
            let grad = grad.contiguous()?;
            slot.var.as_tensor().inplace_op2(&grad, &update)?;
        }
        Ok(())
    }

    /// The current learning rate of the first variable's group (schedule factor applied).
    pub fn lr(&self) -> f64 {
        self.slots.first().map_or(self.cfg.lr, |s| s.lr) * self.lr_factor
    }

    /// The current learning rate of variable `name`, if this optimizer updates it.
    pub fn lr_of(&self, name: &str) -> Option<f64> {
        self.slots.iter().find(|s| s.name == name).map(|s| s.lr * self.lr_factor)
    }

    /// Sets one learning rate for every group for the following steps.
    pub fn set_lr(&mut self, lr: f64) {
        for s in &mut self.slots {
            s.lr = lr;
        }
        self.cfg.lr = lr;
        self.lr_factor = 1.0;
    }

    /// Multiplies every group's rate by `factor` for the following steps (a schedule calls this
    /// before each step; groups keep their ratio).
    pub fn set_lr_factor(&mut self, factor: f64) {
        self.lr_factor = factor;
    }

    /// The hyper-parameters, with the current learning rate of the first group.
    pub fn config(&self) -> AdamWConfig {
        AdamWConfig { lr: self.lr(), ..self.cfg }
    }

    /// Names of the variables this optimizer updates, in the order given to [`AdamW::new`].
    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Copies of all moments and step counts: `<name>.exp_avg`, `<name>.exp_avg_sq` (the
    /// variable's shape, f32) and `<name>.step` (`[1]`, f64).
    pub fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            let shape = s.var.shape();
            out.insert(format!("{}.{EXP_AVG}", s.name), Tensor::from_slice(&s.exp_avg, shape, &Device::Cpu)?);
            out.insert(format!("{}.{EXP_AVG_SQ}", s.name), Tensor::from_slice(&s.exp_avg_sq, shape, &Device::Cpu)?);
            out.insert(format!("{}.{STEP}", s.name), Tensor::from_slice(&[s.step as f64], 1, &Device::Cpu)?);
        }
        Ok(out)
    }

    /// Restores what [`AdamW::state`] returned. Every variable's three entries must be present
    /// with matching shapes; entries for unknown names are an error (a mismatched checkpoint).
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut restored = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let get = |suffix: &str| {
                let key = format!("{}.{suffix}", s.name);
                state.get(&key).ok_or_else(|| candle_core::Error::Msg(format!("AdamW state: missing {key}")))
            };
            let (m, v, step) = (get(EXP_AVG)?, get(EXP_AVG_SQ)?, get(STEP)?);
            for (t, what) in [(m, EXP_AVG), (v, EXP_AVG_SQ)] {
                if t.dims() != s.var.dims() || t.dtype() != DType::F32 {
                    bail!("AdamW state: {}.{what} is {:?} {:?}, expected f32 {:?}", s.name, t.dtype(), t.dims(), s.var.dims());
                }
            }
            let step = step.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let [step] = step.as_slice() else { bail!("AdamW state: {}.{STEP} must hold one number", s.name) };
            if *step < 0.0 || step.fract() != 0.0 {
                bail!("AdamW state: {}.{STEP} = {step} is not a step count", s.name);
            }
            restored.push((m.flatten_all()?.to_vec1::<f32>()?, v.flatten_all()?.to_vec1::<f32>()?, *step as u64));
        }
        let known = self.slots.len() * 3;
        if state.len() != known {
            let unknown = state.keys().find(|k| {
                !self.slots.iter().any(|s| [EXP_AVG, EXP_AVG_SQ, STEP].iter().any(|suf| **k == format!("{}.{suf}", s.name)))
            });
            bail!("AdamW state: entry {} belongs to no variable of this optimizer", unknown.map_or("?", |k| k.as_str()));
        }
        for (s, (m, v, step)) in self.slots.iter_mut().zip(restored) {
            (s.exp_avg, s.exp_avg_sq, s.step) = (m, v, step);
        }
        Ok(())
    }
}

/// The fused in-place update of one variable.
struct Update<'a> {
    cfg: AdamWConfig,
    step: u64,
    exp_avg: std::sync::Mutex<&'a mut Vec<f32>>,
    exp_avg_sq: std::sync::Mutex<&'a mut Vec<f32>>,
}

/// Elements per parallel task of the update (memory-bound: big blocks).
const BLOCK: usize = 64 * 1024;

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "slora-adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let CpuStorage::F32(param) = s1 else { bail!("AdamW: variable is not f32") };
        let Some((start, end)) = l1.contiguous_offsets() else { bail!("AdamW: variable is not contiguous") };
        let param = &mut param[start..end];
        let grad = crate::ops::cpu_slice(s2, l2, "AdamW")?;
        let mut m = self.exp_avg.lock().unwrap();
        let mut v = self.exp_avg_sq.lock().unwrap();
        let c = self.cfg;
        // torch.optim.AdamW (single-tensor path): decay, lerp the moments, bias-correct in f64.
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let bias1 = 1.0 - c.beta1.powf(self.step as f64);
        let bias2_sqrt = (1.0 - c.beta2.powf(self.step as f64)).sqrt();
        let step_size = (c.lr / bias1) as f32;
        let bias2_sqrt = bias2_sqrt as f32;
        let (one_minus_b1, b2, one_minus_b2, eps) = ((1.0 - c.beta1) as f32, c.beta2 as f32, (1.0 - c.beta2) as f32, c.eps as f32);
        param
            .par_chunks_mut(BLOCK)
            .zip(grad.par_chunks(BLOCK))
            .zip(m.par_chunks_mut(BLOCK))
            .zip(v.par_chunks_mut(BLOCK))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let gi = g[i];
                    p[i] *= decay;
                    m[i] += (gi - m[i]) * one_minus_b1;
                    v[i] = v[i] * b2 + one_minus_b2 * gi * gi;
                    let denom = v[i].sqrt() / bias2_sqrt + eps;
                    p[i] -= step_size * (m[i] / denom);
                }
            });
        Ok(())
    }
}

/// Learning rate as a function of the optimizer step (0-based: the step about to be taken).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// transformers' `get_linear_schedule_with_warmup`: linear from 0 to the base rate over
    /// `warmup_steps`, then linear down to 0 at `total_steps`.
    LinearWarmupDecay {
        /// Steps of linear warm-up from 0.
        warmup_steps: u64,
        /// Step at which the rate reaches 0.
        total_steps: u64,
    },
}

impl LrSchedule {
    /// The multiplier of the base rate for step `step`.
    pub fn factor(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::LinearWarmupDecay { warmup_steps, total_steps } => {
                if step < warmup_steps {
                    step as f64 / warmup_steps.max(1) as f64
                } else {
                    let left = total_steps.saturating_sub(step) as f64;
                    (left / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
                }
            }
        }
    }

    /// `base_lr * factor(step)`.
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::backprop::GradStore;

    /// A GradStore holding `grad` for `var` (built through a real backward of `sum(var * grad)`).
    fn grads_for(vars: &[(&Var, &[f32])]) -> Result<GradStore> {
        let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu)?;
        for (var, g) in vars {
            let g = Tensor::from_slice(g, var.shape(), &Device::Cpu)?;
            loss = (loss + (var.as_tensor() * g)?.sum_all()?)?;
        }
        loss.backward()
    }

    /// torch.optim.AdamW's single-tensor update written out in f64.
    fn reference(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], step: i32, c: AdamWConfig) {
        for i in 0..p.len() {
            p[i] *= 1.0 - c.lr * c.weight_decay;
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
            let mhat = m[i] / (1.0 - c.beta1.powi(step));
            let vhat = v[i] / (1.0 - c.beta2.powi(step));
            // torch: denom = sqrt(v)/sqrt(bc2) + eps (eps outside the bias correction).
            p[i] -= c.lr * mhat / (vhat.sqrt() + c.eps);
        }
    }

    #[test]
    fn optim_adamw_matches_torch_update() -> Result<()> {
        let cfg = AdamWConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let p0 = [0.5f32, -1.0, 2.0, 0.0];
        let w = Var::new(&p0, &Device::Cpu)?;
        let frozen = Var::new(&[3f32, 4.0], &Device::Cpu)?;
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], cfg)?;
        let steps: [[f32; 4]; 3] = [[0.1, -0.2, 0.3, 0.0], [-0.05, 0.4, 0.0, 1e-3], [0.2, 0.2, -0.1, -2.0]];
        let (mut p, mut m, mut v) = (p0.map(|x| x as f64).to_vec(), vec![0.0; 4], vec![0.0; 4]);
        for (k, g) in steps.iter().enumerate() {
            opt.step(&grads_for(&[(&w, g), (&frozen, &[1.0, 1.0])])?)?;
            reference(&mut p, &mut m, &mut v, &g.map(|x| x as f64), k as i32 + 1, cfg);
            let got = w.as_tensor().to_vec1::<f32>()?;
            for i in 0..4 {
                assert!((got[i] as f64 - p[i]).abs() < 1e-6, "step {k} elem {i}: {} vs {}", got[i], p[i]);
            }
            if k == 0 {
                // First step: |update| = lr · |g| / (|g| + eps) ≈ lr; decay 1 - lr·wd = 0.999.
                assert!((got[0] - (0.5 * 0.999 - 0.01)).abs() < 1e-6);
                assert!((got[1] - (-0.999 + 0.01)).abs() < 1e-6);
                assert_eq!(got[3], 0.0, "zero grad, zero param: nothing moves");
            }
        }
        assert_eq!(frozen.as_tensor().to_vec1::<f32>()?, vec![3.0, 4.0], "not handed to the optimizer");
        let state = opt.state()?;
        assert_eq!(state.keys().collect::<Vec<_>>(), ["w.exp_avg", "w.exp_avg_sq", "w.step"]);
        assert_eq!(state["w.step"].to_vec1::<f64>()?, vec![3.0]);
        Ok(())
    }

    #[test]
    fn optim_param_groups_move_at_their_own_rate() -> Result<()> {
        let cfg = AdamWConfig { lr: 1e-4, weight_decay: 0.0, ..Default::default() };
        let body = Var::new(&[1f32, -1.0], &Device::Cpu)?;
        let head = Var::new(&[1f32, -1.0], &Device::Cpu)?;
        let groups = vec![
            ParamGroup { lr: 1e-4, vars: vec![("body".into(), body.clone())] },
            ParamGroup { lr: 1e-2, vars: vec![("head".into(), head.clone())] },
        ];
        let mut opt = AdamW::with_groups(groups, cfg)?;
        opt.set_lr_factor(0.5);
        assert_eq!((opt.lr_of("body"), opt.lr_of("head")), (Some(0.5e-4), Some(0.5e-2)));
        opt.step(&grads_for(&[(&body, &[0.3, -2.0]), (&head, &[0.3, -2.0])])?)?;
        // Adam's first step moves each entry by lr · g / (|g| + eps) ≈ lr (to f32 rounding near 1:
        // 6e-8).
        for (var, lr) in [(&body, 0.5e-4), (&head, 0.5e-2)] {
            let got = var.as_tensor().to_vec1::<f32>()?;
            assert!(((1.0 - got[0]) as f64 - lr).abs() < 1e-7, "{got:?} vs lr {lr}");
            assert!(((got[1] + 1.0) as f64 - lr).abs() < 1e-7, "{got:?} vs lr {lr}");
        }
        Ok(())
    }

    #[test]
    fn optim_state_resume_is_bit_identical() -> Result<()> {
        let cfg = AdamWConfig { lr: 1e-3, weight_decay: 0.01, ..Default::default() };
        let init: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5).collect();
        let grad_at = |k: usize| -> Vec<f32> { (0..1000).map(|i| (((i * 13 + k * 7) % 29) as f32 - 14.0) * 0.01).collect() };
        let make = |data: &[f32]| -> Result<(Var, AdamW)> {
            let w = Var::from_slice(data, (10, 100), &Device::Cpu)?;
            let opt = AdamW::new(vec![("layer.weight".into(), w.clone())], cfg)?;
            Ok((w, opt))
        };
        let (w, mut opt) = make(&init)?;
        for k in 0..3 {
            opt.step(&grads_for(&[(&w, &grad_at(k))])?)?;
        }
        let saved_params = w.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let saved_state = opt.state()?;
        for k in 3..6 {
            opt.step(&grads_for(&[(&w, &grad_at(k))])?)?;
        }
        let (w2, mut opt2) = make(&saved_params)?;
        opt2.load_state(&saved_state)?;
        for k in 3..6 {
            opt2.step(&grads_for(&[(&w2, &grad_at(k))])?)?;
        }
        let a = w.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let b = w2.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "resume is bit-identical");
        assert_ne!(a, saved_params, "the steps moved the weights");
        Ok(())
    }

    #[test]
    fn optim_load_state_rejects_mismatch() -> Result<()> {
        let w = Var::zeros(4, DType::F32, &Device::Cpu)?;
        let mut opt = AdamW::new(vec![("w".into(), w)], AdamWConfig::default())?;
        let mut state = opt.state()?;
        state.insert("other.exp_avg".into(), Tensor::zeros(4, DType::F32, &Device::Cpu)?);
        assert!(opt.load_state(&state).unwrap_err().to_string().contains("other.exp_avg"));
        state.remove("other.exp_avg");
        state.insert("w.exp_avg".into(), Tensor::zeros(5, DType::F32, &Device::Cpu)?);
        assert!(opt.load_state(&state).unwrap_err().to_string().contains("w.exp_avg"));
        state.remove("w.exp_avg");
        assert!(opt.load_state(&state).unwrap_err().to_string().contains("missing w.exp_avg"));
        Ok(())
    }

    #[test]
    fn optim_linear_schedule() {
        let s = LrSchedule::LinearWarmupDecay { warmup_steps: 10, total_steps: 110 };
        assert_eq!(s.factor(0), 0.0);
        assert_eq!(s.factor(5), 0.5);
        assert_eq!(s.factor(10), 1.0);
        assert_eq!(s.factor(60), 0.5);
        assert_eq!(s.factor(110), 0.0);
        assert_eq!(s.factor(500), 0.0);
        assert_eq!(s.lr(1e-3, 35), 1e-3 * 0.75);
        assert_eq!(LrSchedule::Constant.lr(2e-4, 1_000), 2e-4);
    }
}
