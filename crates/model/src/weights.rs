//! A checkpoint's tensors by normalised name: f32 on the CPU, validated against the architecture.
//!
//! Names are the transformers `save_pretrained` names of the `*ForSequenceClassification` model.
//! A checkpoint without the `bert.`/`distilbert.`/`albert.`/`roberta.` prefix (sentence-transformers)
//! gets it added; `position_ids` buffers and tensors the classifier does not use (MLM heads, the
//! pooler of a `RobertaModel` checkpoint) are skipped;
//! legacy `LayerNorm.gamma`/`beta` become `weight`/`bias`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::EncoderConfig;
use crate::error::{ModelError, Result};
use crate::names;

/// Named f32 CPU tensors of one model (encoder and, when present, head).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    /// Files the tensors came from (for error messages).
    sources: Vec<PathBuf>,
}

/// The transformers name of a checkpoint key, or `None` when the key is a buffer to ignore.
fn normalise_name(key: &str, cfg: &EncoderConfig) -> Option<String> {
    if key.ends_with("position_ids") {
        return None;
    }
    let prefix = cfg.model_type.prefix();
    let key = key.strip_suffix(".gamma").map(|k| format!("{k}.weight")).unwrap_or_else(|| {
        key.strip_suffix(".beta").map(|k| format!("{k}.bias")).unwrap_or_else(|| key.to_string())
    });
    let is_head = key.starts_with("classifier.") || key.starts_with("pre_classifier.");
    if is_head || key.starts_with(&format!("{prefix}.")) {
        Some(key)
    } else {
        Some(format!("{prefix}.{key}"))
    }
}

fn shape_error(file: &Path, name: &str, expected: Vec<usize>, got: &[usize]) -> ModelError {
    ModelError::Shape { file: file.to_path_buf(), name: name.to_string(), expected, got: got.to_vec() }
}

/// Checks a head tensor's shape (the classifier's row count is free: it is `num_labels`).
fn check_head_shape(file: &Path, name: &str, got: &[usize], cfg: &EncoderConfig) -> Result<()> {
    let h = cfg.hidden_size;
    let [dense, _] = names::head_modules(cfg.model_type);
    let ok = if name.starts_with(dense) {
        if name.ends_with(".weight") { got == [h, h] } else { got == [h] }
    } else if name.ends_with(".weight") {
        got.len() == 2 && got[1] == h
    } else {
        got.len() == 1
    };
    if ok {
        return Ok(());
    }
    let expected = match (name.starts_with(dense), name.ends_with(".weight")) {
        (true, true) => vec![h, h],
        (true, false) => vec![h],
        (false, true) => vec![0, h],
        (false, false) => vec![0],
    };
    Err(shape_error(file, name, expected, got))
}

impl Weights {
    /// Loads one safetensors file and checks that every encoder tensor of `cfg` is present with its
    /// shape. Head tensors are optional (see `Classifier::new`).
    pub fn load(path: &Path, cfg: &EncoderConfig) -> Result<Self> {
        Self::load_files(&[path], cfg)
    }

    /// Loads several safetensors files into one namespace (e.g. an encoder file plus a head file);
    /// a later file's tensor replaces an earlier one of the same name.
    pub fn load_files<P: AsRef<Path>>(paths: &[P], cfg: &EncoderConfig) -> Result<Self> {
        let expected: BTreeMap<String, Vec<usize>> = names::encoder_tensors(cfg).into_iter().collect();
        let head_names: Vec<String> = names::head_modules(cfg.model_type)
            .iter()
            .flat_map(|m| [format!("{m}.weight"), format!("{m}.bias")])
            .collect();
        let mut weights = Weights::default();
        for path in paths {
            let path = path.as_ref();
            weights.sources.push(path.to_path_buf());
            let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| ModelError::Safetensors { file: path.to_path_buf(), message: e.to_string() })?;
            for (key, view) in st.tensors() {
                let Some(name) = normalise_name(&key, cfg) else { continue };
                let want = expected.get(&name);
                if want.is_none() && !head_names.contains(&name) {
                    tracing::debug!(tensor = key, file = %path.display(), "not part of the classifier: skipped");
                    continue;
                }
                match view.dtype() {
                    safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16 | safetensors::Dtype::F64 => {}
                    other => {
                        return Err(ModelError::DType { file: path.to_path_buf(), name, dtype: format!("{other:?}") })
                    }
                }
                match want {
                    Some(want) if want.as_slice() != view.shape() => {
                        return Err(shape_error(path, &name, want.clone(), view.shape()))
                    }
                    Some(_) => {}
                    None => check_head_shape(path, &name, view.shape(), cfg)?,
                }
                let tensor = candle_core::safetensors::Load::load(&view, &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .map_err(|e| ModelError::Safetensors { file: path.to_path_buf(), message: format!("{name}: {e}") })?;
                weights.tensors.insert(name, tensor);
            }
        }
        for name in expected.keys() {
            if !weights.tensors.contains_key(name) {
                return Err(ModelError::MissingTensor { file: weights.source_label(), name: name.clone() });
            }
        }
        Ok(weights)
    }

    /// Weights from an in-memory map (names must already be normalised).
    pub fn from_map(tensors: BTreeMap<String, Tensor>) -> Self {
        Self { tensors, sources: Vec::new() }
    }

    /// The files these weights were read from, joined for messages (`<memory>` when none).
    pub fn source_label(&self) -> PathBuf {
        if self.sources.is_empty() {
            return PathBuf::from("<memory>");
        }
        PathBuf::from(self.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + "))
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor called `name` with shape `shape`, or an error naming it.
    pub fn require(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { file: self.source_label(), name: name.to_string() })?;
        if t.dims() != shape {
            return Err(shape_error(&self.source_label(), name, shape.to_vec(), t.dims()));
        }
        Ok(t)
    }

    /// Inserts or replaces a tensor (no shape check), returning the previous one.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// Replaces an existing tensor by one of the same shape (e.g. a base corrected after SVD init).
    pub fn replace(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        let old = self.require(name, tensor.dims())?;
        let _ = old;
        self.tensors.insert(name.to_string(), tensor.to_dtype(DType::F32)?);
        Ok(())
    }

    /// Removes a tensor.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, tensor)` pairs in sorted name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of scalars.
    pub fn num_elements(&self) -> usize {
        self.tensors.values().map(Tensor::elem_count).sum()
    }

    /// The map itself.
    pub fn as_map(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// Consumes into the map.
    pub fn into_map(self) -> BTreeMap<String, Tensor> {
        self.tensors
    }

    /// Writes every tensor to a safetensors file (via a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::safetensors_io::write_safetensors_atomic(&self.tensors, path, None)
    }
}
