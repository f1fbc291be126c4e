//! `*ForSequenceClassification`: encoder + head over an arena of adaptable linears, with the
//! trainable-state API the federation layer uses.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::architectures;
use crate::batch::Batch;
use crate::builder::Builder;
use crate::config::EncoderConfig;
use crate::encoder::{DropoutRates, Encoder, Head};
use crate::error::{ModelError, Result};
use crate::linear::{AdaptableLinear, Adapter};
use crate::names;
use crate::param::{derive_seed, Ctx, Param};
use crate::spec::{Mode, TrainSpec};
use crate::weights::Weights;

/// Head tensors that `Classifier::new` created instead of loading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Tensors absent from the weights, initialised from the seed (weights N(0, initializer_range), biases 0).
    pub initialised: Vec<String>,
    /// Tensors present with another shape (a classifier for another label count), re-initialised.
    pub mismatched: Vec<String>,
}

/// What one forward pass produced.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// `[B, T, H]` hidden states of the last layer (padding positions included).
    pub last_hidden_state: Tensor,
    /// `[B, H]` input of the final classifier linear.
    pub classifier_input: Tensor,
    /// `[B, num_labels]`.
    pub logits: Tensor,
}

/// A sequence classifier (BERT, DistilBERT, ALBERT or RoBERTa) in one training mode.
#[derive(Debug)]
pub struct Classifier {
    cfg: EncoderConfig,
    spec: TrainSpec,
    encoder: Encoder,
    head: Head,
    linears: Vec<AdaptableLinear>,
    params: Vec<(String, Param)>,
    trainable: BTreeMap<String, Var>,
}

/// Loads or initialises the head tensors into `weights`.
fn prepare_head(cfg: &EncoderConfig, weights: &mut Weights, spec: &TrainSpec) -> Result<InitReport> {
    let mut report = InitReport::default();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(spec.seed, "head-init"));
    let normal = Normal::new(0.0f32, cfg.initializer_range as f32).map_err(|e| ModelError::invalid(e.to_string()))?;
    let h = cfg.hidden_size;
    let [dense, classifier] = names::head_modules(cfg.model_type);
    for (module, rows) in [(dense, h), (classifier, spec.num_labels)] {
        for (suffix, shape) in [("weight", vec![rows, h]), ("bias", vec![rows])] {
            let name = format!("{module}.{suffix}");
            match weights.get(&name) {
                Some(t) if t.dims() == shape.as_slice() => continue,
                Some(_) => report.mismatched.push(name.clone()),
                None => report.initialised.push(name.clone()),
            }
            let n: usize = shape.iter().product();
            let data: Vec<f32> =
                if suffix == "weight" { (0..n).map(|_| normal.sample(&mut rng)).collect() } else { vec![0.0; n] };
            weights.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
    }
    for name in report.initialised.iter().chain(&report.mismatched) {
        tracing::info!(tensor = %name, "head tensor initialised from the seed");
    }
    Ok(report)
}

fn validate_spec(spec: &TrainSpec) -> Result<()> {
    if spec.num_labels == 0 {
        return Err(ModelError::invalid("num_labels must be at least 1"));
    }
    if let Some(p) = spec.dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(ModelError::invalid(format!("dropout {p} is outside [0, 1)")));
        }
    }
    match &spec.mode {
        Mode::Lora(l) if l.r == 0 => Err(ModelError::invalid("LoRA rank r must be at least 1")),
        Mode::Lora(l) if !(0.0..1.0).contains(&l.dropout) => {
            Err(ModelError::invalid(format!("lora_dropout {} is outside [0, 1)", l.dropout)))
        }
        Mode::Sparse(s) if !(s.density > 0.0 && s.density <= 1.0) && s.masks.is_empty() => {
            Err(ModelError::invalid(format!("sparse density {} is outside (0, 1]", s.density)))
        }
        _ => Ok(()),
    }
}

impl Classifier {
    /// Builds the model: head tensors missing from `weights` (or shaped for another label count)
    /// are initialised from `spec.seed` and reported; parameters become frozen, dense-trainable or
    /// adapted per `spec`.
    pub fn new(cfg: &EncoderConfig, weights: &Weights, spec: &TrainSpec) -> Result<(Self, InitReport)> {
        validate_spec(spec)?;
        let mut weights = weights.clone();
        let report = prepare_head(cfg, &mut weights, spec)?;
        let targets = spec.targets.names(cfg.model_type);
        let mut builder = Builder::new(&weights, spec, targets);
        let dropout = DropoutRates {
            hidden: spec.dropout.unwrap_or(cfg.hidden_dropout),
            attention: spec.dropout.unwrap_or(cfg.attention_dropout),
            classifier: spec.dropout.unwrap_or(cfg.classifier_dropout),
        };
        let (encoder, head) = architectures::build(cfg, &mut builder, dropout)?;
        builder.check_spec_used()?;
        let Builder { linears, params, trainable, .. } = builder;
        let model = Self { cfg: cfg.clone(), spec: spec.clone(), encoder, head, linears, params, trainable };
        Ok((model, report))
    }

    /// The encoder config.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// The spec the model was built with.
    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    /// Rows of the classifier.
    pub fn num_labels(&self) -> usize {
        self.spec.num_labels
    }

    fn run(&self, batch: &Batch, ctx: &Ctx) -> Result<ForwardOutput> {
        let t = batch.seq_len();
        if t > self.cfg.max_sequence_length() {
            return Err(ModelError::invalid(format!(
                "batch has {t} tokens per row but the model holds {} (max_position_embeddings {}, the first at row {})",
                self.cfg.max_sequence_length(),
                self.cfg.max_position_embeddings,
                self.cfg.first_position()
            )));
        }
        let max_id = batch.max_token_id();
        if max_id as usize >= self.cfg.vocab_size {
            return Err(ModelError::invalid(format!(
                "token id {max_id} is outside the vocabulary ({} ids)",
                self.cfg.vocab_size
            )));
        }
        let hidden = self.encoder.forward(
            &self.linears,
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            ctx,
        )?;
        let (classifier_input, logits) =
            self.head.forward(&self.linears, &hidden, self.encoder.dropout.classifier, ctx)?;
        Ok(ForwardOutput { last_hidden_state: hidden, classifier_input, logits })
    }

    /// Forward pass building the gradient graph; `dropout_seed = None` disables dropout.
    pub fn forward(&self, batch: &Batch, dropout_seed: Option<u64>) -> Result<ForwardOutput> {
        self.run(batch, &Ctx::train(dropout_seed).with_precision(self.spec.precision))
    }

    /// Mean cross-entropy over the batch and the logits (gradient graph built).
    pub fn loss(&self, batch: &Batch, dropout_seed: Option<u64>) -> Result<(Tensor, Tensor)> {
        let out = self.forward(batch, dropout_seed)?;
        Ok((self.cross_entropy(&out.logits, batch)?, out.logits))
    }

    /// Logits without a gradient graph or dropout.
    pub fn predict(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.run(batch, &Ctx::eval().with_precision(self.spec.precision))?.logits)
    }

    /// `(mean loss, logits)` without a gradient graph or dropout.
    pub fn eval_loss(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let logits = self.predict(batch)?;
        Ok((self.cross_entropy(&logits, batch)?, logits))
    }

    fn cross_entropy(&self, logits: &Tensor, batch: &Batch) -> Result<Tensor> {
        if let Some(&bad) = batch.label_values().iter().find(|&&l| l as usize >= self.spec.num_labels) {
            return Err(ModelError::invalid(format!(
                "label {bad} is outside the head's {} labels",
                self.spec.num_labels
            )));
        }
        Ok(candle_nn::loss::cross_entropy(logits, &batch.labels)?)
    }

    /// Trainable variables by state name, sorted (the optimizer's input).
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.trainable.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Whether trainable tensor `name` belongs to the head: a module of `modules_to_save`, which
    /// trains densely in every mode (a parameter group of its own, and its own line in byte counts).
    pub fn is_head_tensor(&self, name: &str) -> bool {
        if name.ends_with(".sparse_delta") || name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight") {
            return false;
        }
        let module = name.strip_suffix(".weight").or_else(|| name.strip_suffix(".bias")).unwrap_or(name);
        crate::spec::saves_module(module, &self.spec.modules_to_save)
    }

    /// Number of trainable scalars.
    pub fn num_trainable_params(&self) -> usize {
        self.trainable.values().map(|v| v.elem_count()).sum()
    }

    /// Copies of the trainable tensors by state name.
    pub fn trainable_state(&self) -> Result<BTreeMap<String, Tensor>> {
        self.trainable.iter().map(|(k, v)| Ok((k.clone(), v.as_detached_tensor().copy()?))).collect()
    }

    /// Sets every trainable tensor; the map must hold exactly the trainable names with their shapes.
    pub fn set_trainable_state(&self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        if let Some(extra) = state.keys().find(|k| !self.trainable.contains_key(*k)) {
            return Err(ModelError::invalid(format!("state has `{extra}`, which is not a trainable tensor of this model")));
        }
        for (name, var) in &self.trainable {
            let t = state.get(name).ok_or_else(|| ModelError::invalid(format!("state lacks trainable tensor `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(ModelError::invalid(format!(
                    "state tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32)?.contiguous()?)?;
        }
        Ok(())
    }

    /// Freezes every LoRA adapter's A, B, both or neither (see [`AdaptableLinear::set_lora_frozen`]);
    /// the trainable state keeps both factors (they are set and read as before).
    pub fn set_lora_frozen(&mut self, freeze_a: bool, freeze_b: bool) {
        for l in &mut self.linears {
            l.set_lora_frozen(freeze_a, freeze_b);
        }
    }

    /// Offsets the frozen base of each named linear by `offsets[module]` (FedEx-LoRA's residual; see
    /// [`AdaptableLinear::set_base_offset`]). Every name must be an adapted module of this model.
    pub fn set_base_offsets(&mut self, offsets: &BTreeMap<String, Tensor>) -> Result<()> {
        for (module, offset) in offsets {
            let linear = self
                .linears
                .iter_mut()
                .find(|l| l.module() == module && !matches!(l.adapter(), Adapter::None))
                .ok_or_else(|| ModelError::invalid(format!("base offset for `{module}`, which is not an adapted module of this model")))?;
            linear.set_base_offset(offset)?;
        }
        Ok(())
    }

    /// Every weight with adapters folded in (base + LoRA / sparse update), by transformers name.
    pub fn effective_weights(&self) -> Result<Weights> {
        let mut map = BTreeMap::new();
        for (name, p) in &self.params {
            map.insert(name.clone(), p.value());
        }
        for l in &self.linears {
            map.insert(format!("{}.weight", l.module()), l.effective_weight()?);
            if let Some(b) = l.effective_bias() {
                map.insert(format!("{}.bias", l.module()), b);
            }
        }
        Ok(Weights::from_map(map))
    }

    /// The linears in build order.
    pub fn linears(&self) -> &[AdaptableLinear] {
        &self.linears
    }

    /// The linear at a module path.
    pub fn linear(&self, module: &str) -> Option<&AdaptableLinear> {
        self.linears.iter().find(|l| l.module() == module)
    }

    /// Module paths that carry an adapter, in build order.
    pub fn adapted_modules(&self) -> Vec<String> {
        self.linears.iter().filter(|l| !matches!(l.adapter(), Adapter::None)).map(|l| l.module().to_string()).collect()
    }

    /// Folds every LoRA update into its base weight (forward unchanged up to rounding).
    pub fn merge_adapters(&mut self) -> Result<()> {
        for l in &mut self.linears {
            if matches!(l.adapter(), Adapter::Lora(_)) {
                l.merge()?;
            }
        }
        Ok(())
    }

    /// Undoes [`Classifier::merge_adapters`].
    pub fn unmerge_adapters(&mut self) -> Result<()> {
        for l in &mut self.linears {
            l.unmerge()?;
        }
        Ok(())
    }
}
