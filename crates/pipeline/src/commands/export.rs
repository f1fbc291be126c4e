//! `pipeline export`: a trained LoRA adapter in peft's on-disk layout (`adapter_config.json` +
//! `adapter_model.safetensors`, keys `base_model.model.<module>.lora_A.weight`, ...), and with
//! `--merged` the model with the adapter folded in (`config.json` + `model.safetensors`, transformers
//! key names) that `AutoModelForSequenceClassification.from_pretrained` loads.
//!
//! SLoRA's Stage-2 adapter applies to the *corrected* base W0 + ΔW − s·B0·A0 the decompose stage wrote,
//! not to the pretrained model, so its export also holds that base (`base/`) and the adapter's
//! `base_model_name_or_path` points there. The LoRA baseline's adapter applies to the pretrained model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::{json, Value};
use slora_model::peft::{load_adapter, save_adapter, PeftAdapter};
use slora_model::{Classifier, ModelType, Weights};

use crate::config::{BaselineMethod, Config};
use crate::error::{IoContext, PipelineError};
use crate::planning::{lookup_stage, plan_stage};
use crate::stages::base_model::{load_base_model, BaseModel};
use crate::store::{Artifact, Store};

/// Which adapter to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportMethod {
    /// SLoRA's Stage-2 adapter (with the corrected base it applies to).
    Slora,
    /// The LoRA baseline's adapter (applies to the pretrained model).
    Lora,
    /// The FFA-LoRA baseline's adapter: an ordinary peft LoRA adapter (its frozen A included).
    FfaLora,
}

/// Arguments of `pipeline export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Which adapter.
    #[arg(long, value_enum, default_value = "slora")]
    pub method: ExportMethod,
    /// Output folder (default: `<report.dir>/<run.name>-export/<method>/`); replaced if it exists.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write `merged/`: config.json + model.safetensors with the adapter folded in.
    #[arg(long)]
    pub merged: bool,
}

const EXPORT: &str = "export";

/// The artifact of `stage` for this config (by planned key), or an error telling what to run.
fn current_artifact(cfg: &Config, store: &Store, stage: &str) -> Result<Artifact, PipelineError> {
    let key = plan_stage(cfg, lookup_stage(stage)?.as_ref())?.key;
    store.lookup(stage, &key).ok_or_else(|| {
        PipelineError::stage(EXPORT, format!("no {stage} artifact for this config (key {}): run `pipeline {stage}` first", &key[..12]))
    })
}

/// `BertForSequenceClassification` etc.
fn architecture(model_type: ModelType) -> &'static str {
    model_type.architecture()
}

/// The base model's config.json with the classification head's labels and architecture set.
pub fn classification_config(base_config: &Path, model_type: ModelType, labels: &[String]) -> Result<Value, PipelineError> {
    let text = std::fs::read_to_string(base_config).at(base_config)?;
    let mut cfg: Value = serde_json::from_str(&text)?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| PipelineError::stage(EXPORT, format!("{}: not a JSON object", base_config.display())))?;
    obj.insert("architectures".into(), json!([architecture(model_type)]));
    let id2label: serde_json::Map<String, Value> = labels.iter().enumerate().map(|(i, n)| (i.to_string(), json!(n))).collect();
    let label2id: serde_json::Map<String, Value> = labels.iter().enumerate().map(|(i, n)| (n.clone(), json!(i))).collect();
    obj.insert("id2label".into(), Value::Object(id2label));
    obj.insert("label2id".into(), Value::Object(label2id));
    obj.insert("problem_type".into(), json!("single_label_classification"));
    Ok(cfg)
}

/// Writes `tensors` as a safetensors file with `{"format": "pt"}` metadata (what transformers'
/// `save_pretrained` writes), via a temporary file renamed into place.
pub fn write_model_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<(), PipelineError> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let values: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, shape, bytes)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// Copies the tokenizer files of the model folder next to an exported model.
fn copy_tokenizer_files(model_dir: &Path, out: &Path) -> Result<(), PipelineError> {
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"] {
        let src = model_dir.join(name);
        if src.is_file() {
            let dst = out.join(name);
            std::fs::copy(&src, &dst).at(&dst)?;
            // Copies keep the source's mode; the shared model folder may be read-only.
            let mut perms = std::fs::metadata(&dst).at(&dst)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&dst, perms).at(&dst)?;
        }
    }
    Ok(())
}

/// Writes a transformers model folder: config.json, model.safetensors, tokenizer files.
fn write_model_dir(dir: &Path, config: &Value, weights: &Weights, model_dir: &Path) -> Result<(), PipelineError> {
    std::fs::create_dir_all(dir).at(dir)?;
    crate::fsutil::write_atomic(&dir.join("config.json"), format!("{}\n", serde_json::to_string_pretty(config)?).as_bytes())?;
    write_model_safetensors(&dir.join("model.safetensors"), weights.as_map())?;
    copy_tokenizer_files(model_dir, dir)
}

/// The adapter with the adapter factors folded into `base` (saved modules replace the base's).
pub fn merge(base: &BaseModel, base_weights: &Weights, adapter: &PeftAdapter, num_labels: usize, seed: u64) -> Result<Weights, PipelineError> {
    let mut weights = base_weights.clone();
    adapter.apply_saved_modules(&mut weights);
    let spec = adapter.train_spec(num_labels, seed)?;
    let (model, _) = Classifier::new(&base.config, &weights, &spec)?;
    Ok(model.effective_weights()?)
}

/// Runs the export; returns the output folder.
pub fn run(cfg: &Config, artifacts: &Path, args: &ExportArgs) -> Result<PathBuf, PipelineError> {
    export(cfg, artifacts, args).map_err(|e| PipelineError::in_stage(EXPORT, e))
}

fn export(cfg: &Config, artifacts: &Path, args: &ExportArgs) -> Result<PathBuf, PipelineError> {
    let store = Store::open_read_only(artifacts);
    crate::hashing::load_cache(artifacts);
    let method_name = match args.method {
        ExportMethod::Slora => "slora",
        ExportMethod::Lora => "lora",
        ExportMethod::FfaLora => "ffa-lora",
    };
    let (artifact, adapter_rel) = match args.method {
        ExportMethod::Slora => (current_artifact(cfg, &store, "stage2")?, crate::stages::stage2::ADAPTER_DIR),
        ExportMethod::Lora | ExportMethod::FfaLora => {
            let method = if args.method == ExportMethod::Lora { BaselineMethod::Lora } else { BaselineMethod::FfaLora };
            if !cfg.baselines.methods.contains(&method) {
                return Err(PipelineError::stage(EXPORT, format!("baselines.methods has no `{method}`: there is no {method} baseline adapter")));
            }
            let dir = crate::stages::baselines::adapter_dir(method).expect("a LoRA-mode baseline");
            (current_artifact(cfg, &store, "baselines")?, dir)
        }
    };
    let adapter = load_adapter(&artifact.file(adapter_rel))?;
    let partition = current_artifact(cfg, &store, "partition")?;
    let labels = slora_data::LabelSet::read(&partition.file("labels.json"))?;
    let base = load_base_model(cfg)?;

    let out = args.out.clone().unwrap_or_else(|| cfg.report.dir.join(format!("{}-export", cfg.run.name)).join(method_name));
    crate::fsutil::remove_dir_if_exists(&out)?;
    std::fs::create_dir_all(&out).at(&out)?;
    let out = std::fs::canonicalize(&out).at(&out)?;
    let class_config = classification_config(&base.files.config, base.config.model_type, &labels.names)?;

    // The weights the adapter applies to.
    let base_weights = match args.method {
        ExportMethod::Lora | ExportMethod::FfaLora => base.weights.clone(),
        ExportMethod::Slora => {
            let decompose = current_artifact(cfg, &store, "decompose")?;
            let init = slora_federation::read_safetensors(&decompose.file(crate::stages::decompose::LORA_INIT_FILE))?;
            let mut w = base.weights.clone();
            for (name, t) in init {
                if !name.ends_with(".lora_A.weight") && !name.ends_with(".lora_B.weight") {
                    w.insert(name, t);
                }
            }
            write_model_dir(&out.join("base"), &class_config, &w, &base.files.dir)?;
            w
        }
    };
    let mut exported = adapter.clone();
    exported.config.base_model_name_or_path = Some(match args.method {
        ExportMethod::Lora | ExportMethod::FfaLora => cfg.model.source.clone(),
        ExportMethod::Slora => out.join("base").display().to_string(),
    });
    save_adapter(&out.join("adapter"), &exported)?;
    // Read back with the same loader a consumer would use: the layout and shapes must hold.
    load_adapter(&out.join("adapter"))?;

    if args.merged {
        let merged = merge(&base, &base_weights, &adapter, labels.num_labels, cfg.run.seed)?;
        write_model_dir(&out.join("merged"), &class_config, &merged, &base.files.dir)?;
    }
    tracing::info!(
        "export: {} adapter (r = {}, {} tensors) from {} {} -> {}",
        method_name,
        adapter.config.r,
        adapter.tensors.len(),
        artifact.stage,
        artifact.short_key(),
        out.display()
    );
    println!("{}", out.display());
    Ok(out)
}

