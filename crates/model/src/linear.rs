//! One adaptable linear layer (peft's wrapper idea): a base weight and bias plus an optional adapter.
//!
//! - no adapter, frozen base: `ops::frozen_linear` (gradient to the input only);
//! - trainable base (full fine-tuning or a `modules_to_save` head): a plain matmul;
//! - LoRA: `base(x) + (dropout(x) A^T) B^T * scale`, with `delta_weight() = scale * B @ A` serving
//!   merge, unmerge and export;
//! - sparse delta: `x (W0 + scatter(values))^T + b` over a fixed sorted index set
//!   (`ops::sparse_delta_linear`: gradient work ∝ nnz × tokens).

use std::sync::Arc;

use candle_core::{Tensor, Var};

use crate::error::{ModelError, Result};
use crate::ops;
use crate::param::{Ctx, Param};

/// LoRA factors of one linear: `A [r, in]`, `B [out, r]`, scaling `lora_alpha / r`.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// Down projection `[r, in]`.
    pub a: Var,
    /// Up projection `[out, r]`.
    pub b: Var,
    /// `lora_alpha / r`.
    pub scale: f64,
    /// Dropout on the adapter's input when training.
    pub dropout: f64,
    /// A is frozen (FFA-LoRA; LoRA-A²'s odd rounds): no gradient flows to it.
    pub freeze_a: bool,
    /// B is frozen (LoRA-A²'s even rounds): no gradient flows to it.
    pub freeze_b: bool,
}

impl LoraAdapter {
    /// `scale * B @ A` (`[out, in]`), detached: the one source of truth for merge, unmerge and export.
    pub fn delta_weight(&self) -> Result<Tensor> {
        let b = self.b.as_detached_tensor();
        let a = self.a.as_detached_tensor();
        Ok((b.matmul(&a)? * self.scale)?)
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }
}

/// A sparse update of one linear: values at fixed flat indices `row * in + col` (sorted).
#[derive(Debug, Clone)]
pub struct SparseDelta {
    /// Sorted flat indices into the `[out, in]` weight.
    pub indices: Arc<Vec<u32>>,
    /// One trainable value per index.
    pub values: Var,
}

impl SparseDelta {
    /// The dense `[rows, cols]` update (zeros outside the index set), detached.
    pub fn delta_weight(&self, rows: usize, cols: usize) -> Result<Tensor> {
        let mut dense = vec![0f32; rows * cols];
        let values = self.values.as_detached_tensor().to_vec1::<f32>()?;
        for (&i, v) in self.indices.iter().zip(values) {
            dense[i as usize] = v;
        }
        Ok(Tensor::from_vec(dense, (rows, cols), &candle_core::Device::Cpu)?)
    }
}

/// What is attached to a base linear.
#[derive(Debug, Clone)]
pub enum Adapter {
    /// Nothing: the base alone (frozen or trainable).
    None,
    /// Low-rank factors.
    Lora(LoraAdapter),
    /// Sparse values at fixed positions.
    Sparse(SparseDelta),
}

/// A base linear plus an optional adapter; `y = x W^T + b (+ adapter)`.
#[derive(Debug, Clone)]
pub struct AdaptableLinear {
    module: String,
    weight: Param,
    bias: Option<Param>,
    adapter: Adapter,
    merged: bool,
    /// The base weight as built, once an offset replaced it ([`Self::set_base_offset`]).
    pristine: Option<Tensor>,
    /// The offset applied last: every client of a round sets the same global offset again, and the
    /// sum is not recomputed for it.
    offset_id: Option<candle_core::TensorId>,
}

impl AdaptableLinear {
    /// A layer over `weight [out, in]` and `bias [out]` with an adapter.
    pub fn new(module: impl Into<String>, weight: Param, bias: Option<Param>, adapter: Adapter) -> Result<Self> {
        let module = module.into();
        let dims = weight.dims().to_vec();
        if dims.len() != 2 {
            return Err(ModelError::invalid(format!("{module}: weight must be 2-D, got {dims:?}")));
        }
        let (out, inp) = (dims[0], dims[1]);
        let check = |what: &str, got: &[usize], want: &[usize]| {
            if got == want {
                Ok(())
            } else {
                Err(ModelError::invalid(format!("{module}: {what} has shape {got:?}, expected {want:?}")))
            }
        };
        if let Some(b) = &bias {
            check("bias", b.dims(), &[out])?;
        }
        match &adapter {
            Adapter::None => {}
            Adapter::Lora(l) => {
                let r = l.a.dims().first().copied().unwrap_or(0);
                check("lora_A", l.a.dims(), &[r, inp])?;
                check("lora_B", l.b.dims(), &[out, r])?;
            }
            Adapter::Sparse(s) => {
                check("sparse_delta", s.values.dims(), &[s.indices.len()])?;
                if let Some(&last) = s.indices.last() {
                    if last as usize >= out * inp || !s.indices.windows(2).all(|w| w[0] < w[1]) {
                        return Err(ModelError::invalid(format!(
                            "{module}: sparse indices must be strictly increasing and below {}",
                            out * inp
                        )));
                    }
                }
            }
        }
        Ok(Self { module, weight, bias, adapter, merged: false, pristine: None, offset_id: None })
    }

    /// The module path, e.g. `bert.encoder.layer.0.attention.self.query`.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The base weight parameter.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The base bias parameter.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The adapter.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// `[out, in]`.
    pub fn shape(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[0], d[1])
    }

    /// Applies the layer to `x [..., in]`. The fused ops take any leading dims, so the common
    /// paths add no reshape nodes to the graph (each costs a gradient buffer in the backward).
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let w = self.weight.get(ctx);
        let b = self.bias.as_ref().map(|b| b.get(ctx));
        let frozen = !(self.weight.is_trainable() && ctx.tracks_grad());
        let var = |v: &Var| if ctx.tracks_grad() { v.as_tensor().clone() } else { v.as_detached_tensor() };
        let lora_a = |l: &LoraAdapter| if l.freeze_a { l.a.as_detached_tensor() } else { var(&l.a) };
        let lora_b = |l: &LoraAdapter| if l.freeze_b { l.b.as_detached_tensor() } else { var(&l.b) };
        match (&self.adapter, self.merged) {
            (Adapter::Sparse(s), _) => Ok(ops::sparse_delta_linear_at(x, &w, &s.indices, &var(&s.values), b.as_ref(), ctx.precision())?),
            (Adapter::Lora(l), false) if frozen && (l.dropout == 0.0 || !ctx.has_dropout()) => {
                // One fused op: base + adapter, gradients to x, A (unless frozen) and B only.
                Ok(ops::lora_linear_at(x, &w, b.as_ref(), &lora_a(l), &lora_b(l), l.scale, ctx.precision())?)
            }
            (adapter, merged) => {
                let p = ctx.precision();
                let base = if frozen { ops::frozen_linear_at(x, &w, b.as_ref(), p)? } else { ops::linear_at(x, &w, b.as_ref(), p)? };
                match adapter {
                    Adapter::Lora(l) if !merged => {
                        // Adapter dropout (or a trainable base): the composed path.
                        let (out, inp) = self.shape();
                        let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
                        let xd = ctx.dropout(&x.reshape(((), inp))?, l.dropout)?;
                        let low = xd.matmul(&lora_a(l).t()?)?.matmul(&lora_b(l).t()?)?;
                        let mut shape = lead;
                        shape.push(out);
                        Ok((base + (low * l.scale)?.reshape(shape)?)?)
                    }
                    _ => Ok(base),
                }
            }
        }
    }

    /// Freezes LoRA's A, B, both or neither for the passes that follow (no gradient reaches a
    /// frozen factor; LoRA-A² alternates them by round). No-op without a LoRA adapter.
    pub fn set_lora_frozen(&mut self, freeze_a: bool, freeze_b: bool) {
        if let Adapter::Lora(l) = &mut self.adapter {
            l.freeze_a = freeze_a;
            l.freeze_b = freeze_b;
        }
    }

    /// The adapter's dense `[out, in]` update (`None` without an adapter).
    pub fn delta_weight(&self) -> Result<Option<Tensor>> {
        let (out, inp) = self.shape();
        match &self.adapter {
            Adapter::None => Ok(None),
            Adapter::Lora(l) => Ok(Some(l.delta_weight()?)),
            Adapter::Sparse(s) => Ok(Some(s.delta_weight(out, inp)?)),
        }
    }

    /// The weight this layer applies: base + adapter update (the base alone once merged).
    pub fn effective_weight(&self) -> Result<Tensor> {
        let w = self.weight.value();
        match (self.delta_weight()?, self.merged) {
            (Some(d), false) => Ok((w + d)?),
            _ => Ok(w),
        }
    }

    /// The bias value.
    pub fn effective_bias(&self) -> Option<Tensor> {
        self.bias.as_ref().map(Param::value)
    }

    /// Folds the LoRA update into the frozen base weight (peft's `merge`); forward then skips the
    /// adapter. Errors when the adapter is not LoRA, the base is trainable, or the result is not finite.
    pub fn merge(&mut self) -> Result<()> {
        if self.merged {
            return Ok(());
        }
        let Adapter::Lora(l) = &self.adapter else {
            return Err(ModelError::invalid(format!("{}: only a LoRA adapter can be merged", self.module)));
        };
        if self.weight.is_trainable() {
            return Err(ModelError::invalid(format!("{}: cannot merge into a trainable base", self.module)));
        }
        let merged = (self.weight.value() + l.delta_weight()?)?;
        if !merged.sum_all()?.to_scalar::<f32>()?.is_finite() {
            return Err(ModelError::invalid(format!("{}: merged weight is not finite", self.module)));
        }
        self.weight = Param::Frozen(merged);
        self.merged = true;
        Ok(())
    }

    /// Subtracts the LoRA update from the base again (peft's `unmerge`).
    pub fn unmerge(&mut self) -> Result<()> {
        if !self.merged {
            return Ok(());
        }
        if let (Adapter::Lora(l), Param::Frozen(_)) = (&self.adapter, &self.weight) {
            self.weight = Param::Frozen((self.weight.value() - l.delta_weight()?)?);
        }
        self.merged = false;
        Ok(())
    }

    /// Whether the LoRA update is folded into the base.
    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Sets the frozen base to the base as built plus `offset` (`[out, in]`, replacing any offset set
    /// before): FedEx-LoRA's residual. The sum is taken in f32 and held in the base's own dtype (a
    /// bf16 base rounds it once, from the pristine weight, so rounding does not accumulate).
    pub fn set_base_offset(&mut self, offset: &Tensor) -> Result<()> {
        let (out, inp) = self.shape();
        if offset.dims() != [out, inp] {
            return Err(ModelError::invalid(format!("{}: base offset has shape {:?}, expected [{out}, {inp}]", self.module, offset.dims())));
        }
        let Param::Frozen(current) = &self.weight else {
            return Err(ModelError::invalid(format!("{}: a trainable base takes no offset", self.module)));
        };
        if self.merged {
            return Err(ModelError::invalid(format!("{}: unmerge the adapter before offsetting the base", self.module)));
        }
        if self.offset_id == Some(offset.id()) {
            return Ok(());
        }
        let pristine = self.pristine.get_or_insert_with(|| current.clone()).clone();
        let sum = (pristine.to_dtype(candle_core::DType::F32)? + offset.to_dtype(candle_core::DType::F32)?)?;
        self.weight = Param::Frozen(sum.to_dtype(pristine.dtype())?);
        self.offset_id = Some(offset.id());
        Ok(())
    }

    /// Replaces the frozen base weight (same shape); used when a corrected base is installed.
    pub fn set_base_weight(&mut self, weight: Tensor) -> Result<()> {
        let (out, inp) = self.shape();
        if weight.dims() != [out, inp] {
            return Err(ModelError::invalid(format!(
                "{}: new base weight has shape {:?}, expected [{out}, {inp}]",
                self.module,
                weight.dims()
            )));
        }
        match &self.weight {
            Param::Trainable(v) => v.set(&weight)?,
            Param::Frozen(_) => self.weight = Param::Frozen(weight),
        }
        Ok(())
    }
}
