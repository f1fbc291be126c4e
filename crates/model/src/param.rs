//! Parameters that are either frozen tensors or trainable `Var`s, and the per-forward context
//! (gradient tracking on/off, seeded dropout) every module receives.

use std::cell::Cell;

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::ops;
use crate::seed::{fnv1a, splitmix64};
use crate::spec::Precision;

/// One parameter tensor: frozen (no gradient, no optimizer state) or trainable.
#[derive(Debug, Clone)]
pub enum Param {
    /// A constant of the graph.
    Frozen(Tensor),
    /// A variable the optimizer updates.
    Trainable(Var),
}

impl Param {
    /// A frozen parameter.
    pub fn frozen(t: Tensor) -> Self {
        Param::Frozen(t)
    }

    /// A trainable parameter holding a copy of `t`.
    pub fn trainable(t: &Tensor) -> Result<Self> {
        Ok(Param::Trainable(Var::from_tensor(&t.copy()?)?))
    }

    /// The current value in f32, detached from any graph (a frozen weight held in bf16 is widened,
    /// exactly, to a new tensor).
    pub fn value(&self) -> Tensor {
        match self {
            Param::Frozen(t) if t.dtype() != candle_core::DType::F32 => t.to_dtype(candle_core::DType::F32).unwrap_or_else(|_| t.clone()),
            Param::Frozen(t) => t.clone(),
            Param::Trainable(v) => v.as_detached_tensor(),
        }
    }

    /// The shape, without copying anything.
    pub fn dims(&self) -> &[usize] {
        match self {
            Param::Frozen(t) => t.dims(),
            Param::Trainable(v) => v.dims(),
        }
    }

    /// The tensor to compute with: the variable itself when `ctx` tracks gradients, else detached;
    /// a frozen weight in the dtype it is held in (f32, or bf16 for the linear ops).
    pub fn get(&self, ctx: &Ctx) -> Tensor {
        match self {
            Param::Trainable(v) if ctx.grad => v.as_tensor().clone(),
            Param::Trainable(v) => v.as_detached_tensor(),
            Param::Frozen(t) => t.clone(),
        }
    }

    /// The variable, when trainable.
    pub fn var(&self) -> Option<&Var> {
        match self {
            Param::Trainable(v) => Some(v),
            Param::Frozen(_) => None,
        }
    }

    /// True for a trainable parameter.
    pub fn is_trainable(&self) -> bool {
        matches!(self, Param::Trainable(_))
    }
}

/// A seed derived from `seed` and a label (e.g. a module name): stable across runs and platforms.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    splitmix64(seed ^ splitmix64(fnv1a(label)))
}

/// What one forward pass does: track gradients or not, and where dropout draws its seeds.
#[derive(Debug)]
pub struct Ctx {
    grad: bool,
    dropout_seed: Option<u64>,
    site: Cell<u64>,
    precision: Precision,
}

impl Ctx {
    /// A training or gradient-checking pass (`dropout_seed = None`: no dropout).
    pub fn train(dropout_seed: Option<u64>) -> Self {
        Self { grad: true, dropout_seed, site: Cell::new(0), precision: Precision::Fp32 }
    }

    /// An evaluation pass: no gradient graph, no dropout.
    pub fn eval() -> Self {
        Self { grad: false, dropout_seed: None, site: Cell::new(0), precision: Precision::Fp32 }
    }

    /// The same pass with the linear layers' GEMMs in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The linear layers' GEMM arithmetic.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether parameters enter the graph as variables.
    pub fn tracks_grad(&self) -> bool {
        self.grad
    }

    /// Dropout with probability `p`, seeded per call site so a pass is reproducible; identity when
    /// the pass has no dropout seed or `p` is 0.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        match self.next_dropout_seed(p) {
            Some(seed) => Ok(ops::dropout(x, p as f32, seed)?),
            None => Ok(x.clone()),
        }
    }

    /// The seed for the next dropout call site (advancing the site counter), or `None` when the
    /// pass has no dropout or `p` is 0: for ops that apply dropout inside (fused attention).
    pub(crate) fn next_dropout_seed(&self, p: f64) -> Option<u64> {
        match self.dropout_seed {
            Some(seed) if p > 0.0 => {
                let site = self.site.get();
                self.site.set(site + 1);
                Some(splitmix64(seed ^ splitmix64(site)))
            }
            _ => None,
        }
    }

    /// Whether this pass applies dropout at all.
    pub(crate) fn has_dropout(&self) -> bool {
        self.dropout_seed.is_some()
    }
}
