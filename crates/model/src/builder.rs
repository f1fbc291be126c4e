//! Builds parameters from weights under a [`TrainSpec`]: decides for each tensor whether it is
//! frozen, trains densely, or gets a LoRA / sparse adapter, and names every trainable variable
//! (ARCHITECTURE.md, "Trainable tensor names").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use crate::encoder::{LayerNorm, LinearId};
use crate::error::{ModelError, Result};
use crate::linear::{AdaptableLinear, Adapter, LoraAdapter, SparseDelta};
use crate::param::{derive_seed, Param};
use crate::spec::{module_matches, saves_module, Mode, Precision, TrainSpec};
use crate::weights::Weights;

/// Collects modules and trainable variables while an encoder is assembled.
pub(crate) struct Builder<'a> {
    weights: &'a Weights,
    spec: &'a TrainSpec,
    targets: Vec<String>,
    /// Every linear, in build order.
    pub linears: Vec<AdaptableLinear>,
    /// Every non-linear parameter (embeddings, LayerNorms) by weight name.
    pub params: Vec<(String, Param)>,
    /// Trainable variables by their state name.
    pub trainable: BTreeMap<String, Var>,
    modules: BTreeSet<String>,
}

fn var_from(t: &Tensor) -> Result<Var> {
    Ok(Var::from_tensor(&t.to_dtype(DType::F32)?.contiguous()?.copy()?)?)
}

impl<'a> Builder<'a> {
    pub fn new(weights: &'a Weights, spec: &'a TrainSpec, targets: Vec<String>) -> Self {
        Self {
            weights,
            spec,
            targets,
            linears: Vec::new(),
            params: Vec::new(),
            trainable: BTreeMap::new(),
            modules: BTreeSet::new(),
        }
    }

    fn trains_densely(&self, module: &str) -> bool {
        matches!(self.spec.mode, Mode::Full) || saves_module(module, &self.spec.modules_to_save)
    }

    fn dense(&mut self, name: &str, shape: &[usize], trainable: bool) -> Result<Param> {
        let t = self.weights.require(name, shape)?.clone();
        if trainable {
            let var = var_from(&t)?;
            self.trainable.insert(name.to_string(), var.clone());
            Ok(Param::Trainable(var))
        } else {
            Ok(Param::Frozen(t))
        }
    }

    /// A non-linear parameter (embedding table) by weight name.
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Result<Param> {
        let module = name.rsplit_once('.').map_or(name, |(m, _)| m).to_string();
        let p = self.dense(name, shape, self.trains_densely(&module))?;
        self.params.push((name.to_string(), p.clone()));
        Ok(p)
    }

    /// A LayerNorm module of width `dim`.
    pub fn layer_norm(&mut self, module: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.param(&format!("{module}.weight"), &[dim])?,
            bias: self.param(&format!("{module}.bias"), &[dim])?,
            eps,
        })
    }

    /// A linear `[out, in]` module with bias, adapted when it matches the targets.
    pub fn linear(&mut self, module: &str, out: usize, inp: usize) -> Result<LinearId> {
        self.modules.insert(module.to_string());
        let dense = self.trains_densely(module);
        let weight = match self.dense(&format!("{module}.weight"), &[out, inp], dense)? {
            // Mixed precision: a frozen weight is a GEMM operand only, which the bf16 kernels round
            // to bf16 anyway; holding it so halves its memory and its packing reads. Where the CPU
            // has no bf16 kernel, bf16 runs f32 and the weight stays f32.
            Param::Frozen(w) if self.spec.precision == Precision::Bf16 && crate::ops::bf16::kernel() != crate::ops::bf16::Bf16Kernel::None => {
                Param::Frozen(w.to_dtype(DType::BF16)?)
            }
            p => p,
        };
        let bias = Some(self.dense(&format!("{module}.bias"), &[out], dense)?);
        let adapted = !dense && module_matches(module, &self.targets);
        let adapter = match (&self.spec.mode, adapted) {
            (Mode::Lora(lora), true) => {
                let (a, b) = match lora.init.get(module) {
                    Some(f) => {
                        check_shape(module, "lora_A", f.a.dims(), &[lora.r, inp])?;
                        check_shape(module, "lora_B", f.b.dims(), &[out, lora.r])?;
                        (var_from(&f.a)?, var_from(&f.b)?)
                    }
                    None => {
                        // peft: kaiming_uniform_(a=sqrt(5)) on A => U(-1/sqrt(in), 1/sqrt(in)); B = 0.
                        let bound = 1.0 / (inp as f32).sqrt();
                        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.spec.seed, &format!("{module}.lora_A")));
                        let dist = Uniform::new_inclusive(-bound, bound).map_err(|e| ModelError::invalid(e.to_string()))?;
                        let a: Vec<f32> = (0..lora.r * inp).map(|_| dist.sample(&mut rng)).collect();
                        (
                            Var::from_tensor(&Tensor::from_vec(a, (lora.r, inp), &Device::Cpu)?)?,
                            Var::zeros((out, lora.r), DType::F32, &Device::Cpu)?,
                        )
                    }
                };
                if !lora.freeze_a {
                    self.trainable.insert(format!("{module}.lora_A.weight"), a.clone());
                }
                self.trainable.insert(format!("{module}.lora_B.weight"), b.clone());
                Adapter::Lora(LoraAdapter { a, b, scale: lora.scale(), dropout: lora.dropout, freeze_a: lora.freeze_a, freeze_b: false })
            }
            (Mode::Sparse(sparse), true) => {
                let indices = match sparse.masks.get(module) {
                    Some(m) => m.clone(),
                    None => Arc::new(crate::sparse::random_mask(
                        out,
                        inp,
                        sparse.density,
                        crate::sparse::mask_seed(self.spec.seed, module),
                    )),
                };
                let values = match sparse.values.get(module) {
                    Some(v) => {
                        check_shape(module, "sparse_delta", v.dims(), &[indices.len()])?;
                        var_from(v)?
                    }
                    None => Var::zeros(indices.len(), DType::F32, &Device::Cpu)?,
                };
                self.trainable.insert(format!("{module}.sparse_delta"), values.clone());
                Adapter::Sparse(SparseDelta { indices, values })
            }
            _ => Adapter::None,
        };
        self.linears.push(AdaptableLinear::new(module, weight, bias, adapter)?);
        Ok(LinearId(self.linears.len() - 1))
    }

    /// Errors when the spec gives LoRA factors, masks or values for a module that was not adapted.
    pub fn check_spec_used(&self) -> Result<()> {
        let adapted: BTreeSet<&str> = self
            .linears
            .iter()
            .filter(|l| !matches!(l.adapter(), Adapter::None))
            .map(AdaptableLinear::module)
            .collect();
        let given: Vec<(&str, &String)> = match &self.spec.mode {
            Mode::Lora(l) => l.init.keys().map(|k| ("LoRA init", k)).collect(),
            Mode::Sparse(s) => s.masks.keys().map(|k| ("sparse mask", k)).chain(s.values.keys().map(|k| ("sparse values", k))).collect(),
            _ => Vec::new(),
        };
        for (what, module) in given {
            if !adapted.contains(module.as_str()) {
                let why = if self.modules.contains(module) { "is not a target module" } else { "is not a linear of this model" };
                return Err(ModelError::invalid(format!("{what} given for `{module}`, which {why}")));
            }
        }
        Ok(())
    }
}

fn check_shape(module: &str, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(ModelError::invalid(format!("{module}: {what} has shape {got:?}, expected {want:?}")))
    }
}

impl Builder<'_> {
    /// Rows of the classifier.
    pub fn num_labels(&self) -> usize {
        self.spec.num_labels
    }
}
