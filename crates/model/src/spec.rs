//! What trains: the mode (frozen / full / LoRA / sparse), which linears get adapters (peft's
//! `target_modules`), which modules always train densely (`modules_to_save`), head size and seed.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;

use crate::config::ModelType;

/// Initial LoRA factors for one module (e.g. from an SVD of a sparse update).
#[derive(Debug, Clone)]
pub struct LoraFactors {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
}

/// LoRA settings.
#[derive(Debug, Clone)]
pub struct LoraSpec {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`; the update is scaled by `lora_alpha / r`.
    pub lora_alpha: f64,
    /// Dropout on the adapter input when training.
    pub dropout: f64,
    /// Given initial factors by module path. A target module absent here starts like peft:
    /// A kaiming-uniform (bound `1/sqrt(in)`) from the run seed, B zero.
    pub init: BTreeMap<String, LoraFactors>,
    /// FFA-LoRA (Sun et al., 2024): A stays at its initial value and only B trains. Every client then
    /// holds the same A, so averaging the Bs averages the updates B·A exactly.
    pub freeze_a: bool,
}

impl LoraSpec {
    /// Random-A, zero-B LoRA of rank `r`.
    pub fn new(r: usize, lora_alpha: f64) -> Self {
        Self { r, lora_alpha, dropout: 0.0, init: BTreeMap::new(), freeze_a: false }
    }

    /// `lora_alpha / r`.
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }
}

/// Sparse-delta settings.
#[derive(Debug, Clone)]
pub struct SparseSpec {
    /// Fraction of each adapted matrix's entries that train (used where `masks` has no entry).
    pub density: f64,
    /// Given index sets by module path: sorted flat indices `row * in + col`. A target module
    /// absent here gets `sparse::random_mask(out, in, density, sparse::mask_seed(seed, module))`.
    pub masks: BTreeMap<String, Arc<Vec<u32>>>,
    /// Given initial values by module path (`[nnz]`, in mask order); zeros otherwise.
    pub values: BTreeMap<String, Tensor>,
}

impl SparseSpec {
    /// Random masks of the given density, values starting at zero.
    pub fn new(density: f64) -> Self {
        Self { density, masks: BTreeMap::new(), values: BTreeMap::new() }
    }

    /// Given masks and values for every adapted module (a stored Stage 1, say): no density is
    /// needed, and a target module left out of `masks` gets no more than one entry.
    pub fn from_masks(masks: BTreeMap<String, Arc<Vec<u32>>>, values: BTreeMap<String, Tensor>) -> Self {
        Self { density: 0.0, masks, values }
    }
}

/// How the model trains.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Only `modules_to_save` train (the head by default): a linear probe; also fine for eval-only use.
    Frozen,
    /// Every parameter trains (embeddings and LayerNorms included).
    Full,
    /// LoRA on the target linears + dense `modules_to_save`.
    Lora(LoraSpec),
    /// Sparse deltas on the target linears + dense `modules_to_save`.
    Sparse(SparseSpec),
}

/// Which linears get an adapter (peft's `target_modules` matching: a module matches a name when its
/// path equals it or ends with `.` + name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetModules {
    /// The architecture's attention query/key/value/output and both feed-forward linears.
    #[default]
    Default,
    /// Explicit names.
    Names(Vec<String>),
}

impl TargetModules {
    /// The names this resolves to for an architecture.
    pub fn names(&self, ty: ModelType) -> Vec<String> {
        match self {
            TargetModules::Names(n) => n.clone(),
            TargetModules::Default => {
                let names: &[&str] = match ty {
                    // RoBERTa's layers are BERT's (FedPETuning, FedSA-LoRA adapt the same linears).
                    ModelType::Bert | ModelType::Roberta => {
                        &["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
                    }
                    ModelType::DistilBert => &["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
                    ModelType::Albert => &["query", "key", "value", "attention.dense", "ffn", "ffn_output"],
                };
                names.iter().map(|s| s.to_string()).collect()
            }
        }
    }
}

/// peft's list matching: `module == name` or `module` ends with `.name`.
pub fn module_matches(module: &str, names: &[String]) -> bool {
    names.iter().any(|n| module == n || (module.len() > n.len() && module.ends_with(n.as_str()) && module.as_bytes()[module.len() - n.len() - 1] == b'.'))
}

/// Whether `module` trains densely under `modules_to_save`: it, or a module it sits in, matches a
/// name ([`module_matches`]). peft wraps the whole matched module, so `classifier` also saves
/// RoBERTa's `classifier.dense` and `classifier.out_proj` (peft's own SEQ_CLS default).
pub fn saves_module(module: &str, modules_to_save: &[String]) -> bool {
    let mut path = module;
    loop {
        if module_matches(path, modules_to_save) {
            return true;
        }
        match path.rsplit_once('.') {
            Some((parent, _)) => path = parent,
            None => return false,
        }
    }
}

/// The default `modules_to_save`: every head's dense layers under any architecture
/// (`bert.pooler.dense`, `albert.pooler`, `pre_classifier`, `classifier`; RoBERTa's
/// `classifier.dense` and `classifier.out_proj` sit in `classifier`, see [`saves_module`]).
pub fn default_modules_to_save() -> Vec<String> {
    ["pooler.dense", "pooler", "pre_classifier", "classifier"].iter().map(|s| s.to_string()).collect()
}

/// The arithmetic of the linear layers' GEMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 operands and sums.
    #[default]
    Fp32,
    /// Mixed precision as PyTorch's CPU autocast does it: GEMM operands rounded to bf16, products
    /// summed in f32; weights, optimizer state, layer norms, softmax, the loss and every upload stay
    /// f32. Runs f32 where the CPU has no bf16 kernel (see [`crate::ops::bf16::kernel`]).
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Everything `Classifier::new` needs to know about training.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// Frozen, full, LoRA or sparse.
    pub mode: Mode,
    /// Linears that get adapters (LoRA / sparse).
    pub targets: TargetModules,
    /// Modules that always train densely (peft's `modules_to_save`).
    pub modules_to_save: Vec<String>,
    /// Rows of the classifier.
    pub num_labels: usize,
    /// Seed for new head weights, LoRA A init and random masks.
    pub seed: u64,
    /// Overrides every dropout probability of the config (hidden, attention, classifier) when set.
    pub dropout: Option<f64>,
    /// The GEMMs' arithmetic.
    pub precision: Precision,
}

impl TrainSpec {
    /// A spec with default targets, default `modules_to_save` and the config's dropout.
    pub fn new(mode: Mode, num_labels: usize, seed: u64) -> Self {
        Self {
            mode,
            targets: TargetModules::Default,
            modules_to_save: default_modules_to_save(),
            num_labels,
            seed,
            dropout: None,
            precision: Precision::Fp32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_suffix_matching() {
        let names: Vec<String> = vec!["output.dense".into(), "query".into()];
        assert!(module_matches("bert.encoder.layer.0.attention.output.dense", &names));
        assert!(module_matches("bert.encoder.layer.0.output.dense", &names));
        assert!(module_matches("bert.encoder.layer.0.attention.self.query", &names));
        assert!(!module_matches("bert.pooler.dense", &names));
        assert!(!module_matches("bert.encoder.layer.0.attention.self.xquery", &names));
        assert!(module_matches("query", &names));
    }

    #[test]
    fn a_saved_module_saves_what_it_contains() {
        let save: Vec<String> = vec!["classifier".into()];
        assert!(saves_module("classifier", &save));
        assert!(saves_module("classifier.dense", &save));
        assert!(saves_module("classifier.out_proj", &save));
        assert!(!module_matches("classifier.dense", &save), "exact matching alone misses RoBERTa's head");
        assert!(!saves_module("roberta.encoder.layer.0.output.dense", &save));
        assert!(!saves_module("pre_classifier", &save));
        let defaults = default_modules_to_save();
        for m in ["bert.pooler.dense", "albert.pooler", "pre_classifier", "classifier", "classifier.dense", "classifier.out_proj"] {
            assert!(saves_module(m, &defaults), "{m}");
        }
        assert!(!saves_module("roberta.encoder.layer.1.attention.output.dense", &defaults));
    }
}
