//! LoRA adapters on disk in peft's format: `adapter_config.json` + `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_A.weight` `[r, in]`, `...lora_B.weight` `[out, r]` and
//! the `modules_to_save` tensors under their own paths (`base_model.model.classifier.weight`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use serde_json::{json, Map, Value};

use crate::classifier::Classifier;
use crate::error::{ModelError, Result};
use crate::safetensors_io::{read_safetensors, write_atomic, write_safetensors_atomic};
use crate::spec::{LoraFactors, LoraSpec, Mode, TargetModules, TrainSpec};
use crate::weights::Weights;

/// Prefix peft puts before every module path in the adapter file.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// The adapter config file name.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The adapter weights file name.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The fields of `adapter_config.json` this crate uses; every other key is kept in `extra` and
/// written back unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha (scaling = alpha / r).
    pub lora_alpha: f64,
    /// Dropout on the adapter input.
    pub lora_dropout: f64,
    /// peft target_modules (list form).
    pub target_modules: Vec<String>,
    /// peft modules_to_save.
    pub modules_to_save: Vec<String>,
    /// The base model id or path.
    pub base_model_name_or_path: Option<String>,
    /// Other keys, verbatim.
    pub extra: Map<String, Value>,
}

impl AdapterConfig {
    /// A SEQ_CLS LoRA config with peft's defaults for the keys this crate does not model.
    pub fn new(r: usize, lora_alpha: f64, target_modules: Vec<String>, modules_to_save: Vec<String>) -> Self {
        let extra = json!({
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            "peft_type": "LORA",
            "rank_pattern": {},
            "alpha_pattern": {},
            "revision": null,
            "task_type": "SEQ_CLS",
            "use_dora": false,
            "use_rslora": false,
        });
        let Value::Object(extra) = extra else { unreachable!("literal object") };
        Self { r, lora_alpha, lora_dropout: 0.0, target_modules, modules_to_save, base_model_name_or_path: None, extra }
    }

    fn to_json(&self) -> Value {
        let mut obj = self.extra.clone();
        obj.insert("r".into(), json!(self.r));
        let alpha = if self.lora_alpha.fract() == 0.0 { json!(self.lora_alpha as i64) } else { json!(self.lora_alpha) };
        obj.insert("lora_alpha".into(), alpha);
        obj.insert("lora_dropout".into(), json!(self.lora_dropout));
        obj.insert("target_modules".into(), json!(self.target_modules));
        obj.insert("modules_to_save".into(), json!(self.modules_to_save));
        obj.insert("base_model_name_or_path".into(), json!(self.base_model_name_or_path));
        obj.entry("peft_type").or_insert(json!("LORA"));
        obj.entry("task_type").or_insert(json!("SEQ_CLS"));
        Value::Object(obj)
    }

    fn from_json(text: &str, file: &Path) -> Result<Self> {
        let err = |m: String| ModelError::Config { file: file.to_path_buf(), message: m };
        let value: Value = serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let Value::Object(mut obj) = value else { return Err(err("top level is not an object".into())) };
        match obj.get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            other => return Err(err(format!("peft_type = {other:?}: only LORA adapters are supported"))),
        }
        for key in ["use_dora", "use_rslora", "fan_in_fan_out"] {
            if obj.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(err(format!("`{key}` = true is not supported")));
            }
        }
        let r = obj.remove("r").and_then(|v| v.as_u64()).ok_or_else(|| err("`r` is missing or not an integer".into()))?;
        let lora_alpha =
            obj.remove("lora_alpha").and_then(|v| v.as_f64()).ok_or_else(|| err("`lora_alpha` is missing or not a number".into()))?;
        let lora_dropout = obj.remove("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let strings = |v: Option<Value>, key: &str| -> Result<Vec<String>> {
            match v {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .into_iter()
                    .map(|s| s.as_str().map(str::to_string).ok_or_else(|| err(format!("`{key}` must list strings"))))
                    .collect(),
                Some(Value::String(_)) => Err(err(format!("`{key}` as a regex string is not supported; give a list"))),
                Some(other) => Err(err(format!("`{key}` must be a list, got {other}"))),
            }
        };
        let target_modules = strings(obj.remove("target_modules"), "target_modules")?;
        let modules_to_save = strings(obj.remove("modules_to_save"), "modules_to_save")?;
        let base_model_name_or_path = obj.remove("base_model_name_or_path").and_then(|v| v.as_str().map(str::to_string));
        Ok(Self { r: r as usize, lora_alpha, lora_dropout, target_modules, modules_to_save, base_model_name_or_path, extra: obj })
    }
}

/// An adapter read from (or about to be written to) disk; tensor names without `base_model.model.`.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// The config.
    pub config: AdapterConfig,
    /// `<module>.lora_A.weight`, `<module>.lora_B.weight` and the saved modules' `weight`/`bias`.
    pub tensors: BTreeMap<String, Tensor>,
}

impl PeftAdapter {
    /// The adapter of a LoRA-mode classifier: its current factors and head tensors.
    pub fn from_classifier(model: &Classifier, base_model_name_or_path: Option<&str>) -> Result<Self> {
        let spec = model.spec();
        let Mode::Lora(lora) = &spec.mode else {
            return Err(ModelError::invalid("only a LoRA-mode classifier can be saved as a peft adapter"));
        };
        let mut config = AdapterConfig::new(
            lora.r,
            lora.lora_alpha,
            spec.targets.names(model.config().model_type),
            spec.modules_to_save.clone(),
        );
        config.lora_dropout = lora.dropout;
        config.base_model_name_or_path = base_model_name_or_path.map(str::to_string);
        // The trained tensors, plus every A that stayed frozen (FFA-LoRA): peft needs both factors.
        let mut tensors = model.trainable_state()?;
        for linear in model.linears() {
            if let crate::linear::Adapter::Lora(l) = linear.adapter() {
                tensors.entry(format!("{}.lora_A.weight", linear.module())).or_insert_with(|| l.a.as_detached_tensor());
            }
        }
        Ok(Self { config, tensors })
    }

    /// LoRA factors by module path.
    pub fn lora_factors(&self) -> Result<BTreeMap<String, LoraFactors>> {
        let mut out = BTreeMap::new();
        for (name, a) in &self.tensors {
            let Some(module) = name.strip_suffix(".lora_A.weight") else { continue };
            let b = self
                .tensors
                .get(&format!("{module}.lora_B.weight"))
                .ok_or_else(|| ModelError::invalid(format!("adapter has `{name}` but no `{module}.lora_B.weight`")))?;
            out.insert(module.to_string(), LoraFactors { a: a.clone(), b: b.clone() });
        }
        Ok(out)
    }

    /// The tensors that are not LoRA factors (the `modules_to_save` copies), by weight name.
    pub fn saved_module_tensors(&self) -> BTreeMap<String, Tensor> {
        self.tensors
            .iter()
            .filter(|(k, _)| !k.contains(".lora_A.") && !k.contains(".lora_B."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A LoRA spec starting from this adapter's factors.
    pub fn lora_spec(&self) -> Result<LoraSpec> {
        Ok(LoraSpec {
            r: self.config.r,
            lora_alpha: self.config.lora_alpha,
            dropout: self.config.lora_dropout,
            init: self.lora_factors()?,
            freeze_a: false,
        })
    }

    /// A train spec reproducing the peft model: its targets, deduplicated `modules_to_save`, factors.
    pub fn train_spec(&self, num_labels: usize, seed: u64) -> Result<TrainSpec> {
        let mut modules_to_save: Vec<String> = Vec::new();
        for m in &self.config.modules_to_save {
            if !modules_to_save.contains(m) {
                modules_to_save.push(m.clone());
            }
        }
        let mut spec = TrainSpec::new(Mode::Lora(self.lora_spec()?), num_labels, seed);
        spec.targets = TargetModules::Names(self.config.target_modules.clone());
        spec.modules_to_save = modules_to_save;
        Ok(spec)
    }

    /// Writes the saved modules' tensors (e.g. the adapter's classifier) into `weights`.
    pub fn apply_saved_modules(&self, weights: &mut Weights) {
        for (name, t) in self.saved_module_tensors() {
            weights.insert(name, t);
        }
    }
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created if missing);
/// each file goes to a temporary name first and is renamed into place.
pub fn save_adapter(dir: &Path, adapter: &PeftAdapter) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let prefixed: BTreeMap<String, Tensor> =
        adapter.tensors.iter().map(|(k, v)| (format!("{PEFT_PREFIX}{k}"), v.clone())).collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors_atomic(&prefixed, &dir.join(WEIGHTS_FILE), Some(metadata))?;
    let text = serde_json::to_string_pretty(&adapter.config.to_json())
        .map_err(|e| ModelError::invalid(format!("adapter config: {e}")))?;
    write_atomic(&dir.join(CONFIG_FILE), format!("{text}\n").as_bytes())
}

/// Reads an adapter folder written by peft's `save_pretrained` (or [`save_adapter`]).
pub fn load_adapter(dir: &Path) -> Result<PeftAdapter> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let config = AdapterConfig::from_json(&text, &config_path)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let mut tensors = BTreeMap::new();
    for (name, t) in read_safetensors(&weights_path)? {
        let Some(short) = name.strip_prefix(PEFT_PREFIX) else {
            return Err(ModelError::Safetensors {
                file: weights_path,
                message: format!("key `{name}` lacks the `{PEFT_PREFIX}` prefix"),
            });
        };
        tensors.insert(short.to_string(), t);
    }
    let adapter = PeftAdapter { config, tensors };
    for (module, f) in adapter.lora_factors()? {
        let r = adapter.config.r;
        if f.a.dims().len() != 2 || f.a.dims()[0] != r || f.b.dims().len() != 2 || f.b.dims()[1] != r {
            return Err(ModelError::Safetensors {
                file: weights_path,
                message: format!("`{module}` factors have shapes {:?} / {:?}, expected [r={r}, in] / [out, r={r}]", f.a.dims(), f.b.dims()),
            });
        }
    }
    Ok(adapter)
}
