//! `config.json` of a Hugging Face encoder, read into one architecture-neutral [`EncoderConfig`].
//!
//! Supported `model_type`s: `bert`, `distilbert`, `albert`, `roberta` (key names as transformers
//! writes them).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};

/// The encoder family; decides tensor names and layer structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelType {
    /// `BertForSequenceClassification` (post-LN, token types, pooler + classifier).
    Bert,
    /// `DistilBertForSequenceClassification` (no token types, pre_classifier + ReLU + classifier).
    DistilBert,
    /// `AlbertForSequenceClassification` (factorised embeddings, shared layer groups).
    Albert,
    /// `RobertaForSequenceClassification`: BERT's layers, positions counted from `pad_token_id + 1`,
    /// no pooler (head `classifier.dense` + tanh + `classifier.out_proj`).
    Roberta,
}

impl ModelType {
    /// The weight-name prefix of the encoder (`bert`, `distilbert`, `albert`, `roberta`).
    pub fn prefix(self) -> &'static str {
        match self {
            ModelType::Bert => "bert",
            ModelType::DistilBert => "distilbert",
            ModelType::Albert => "albert",
            ModelType::Roberta => "roberta",
        }
    }

    /// The transformers class whose `save_pretrained` layout this crate reads and writes.
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::Bert => "BertForSequenceClassification",
            ModelType::DistilBert => "DistilBertForSequenceClassification",
            ModelType::Albert => "AlbertForSequenceClassification",
            ModelType::Roberta => "RobertaForSequenceClassification",
        }
    }
}

/// Hidden activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x * Phi(x)` (transformers `gelu`).
    GeluErf,
    /// Tanh approximation (transformers `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    fn parse(name: &str, file: &Path, key: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(config_error(file, format!("{key} = `{other}` is not supported (gelu, gelu_new, relu)"))),
        }
    }
}

/// Architecture hyper-parameters, normalised across BERT, DistilBERT and ALBERT.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Architecture family.
    pub model_type: ModelType,
    /// Vocabulary size (rows of the word embedding).
    pub vocab_size: usize,
    /// Embedding width (ALBERT's `embedding_size`; equals `hidden_size` otherwise).
    pub embedding_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// Number of transformer layers applied.
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// Feed-forward inner width.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    pub hidden_act: Activation,
    /// Rows of the position embedding.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding (0 for DistilBERT, which has none).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and residual branches when training.
    pub hidden_dropout: f64,
    /// Dropout on attention probabilities when training.
    pub attention_dropout: f64,
    /// Dropout before the final classifier when training.
    pub classifier_dropout: f64,
    /// Std of the normal init for new head weights.
    pub initializer_range: f64,
    /// Padding token id.
    pub pad_token_id: u32,
    /// ALBERT: number of distinct layer groups (1 otherwise).
    pub num_hidden_groups: usize,
    /// ALBERT: layers inside each group (1 otherwise).
    pub inner_group_num: usize,
    /// `num_labels` implied by `id2label`, when present.
    pub num_labels: Option<usize>,
    /// The file this was read from.
    pub source: PathBuf,
}

fn config_error(file: &Path, message: String) -> ModelError {
    ModelError::Config { file: file.to_path_buf(), message }
}

/// Typed access to the keys of one config object, with errors naming file and key.
struct Keys<'a> {
    obj: &'a serde_json::Map<String, Value>,
    file: &'a Path,
}

impl Keys<'_> {
    fn usize(&self, key: &str) -> Result<usize> {
        match self.obj.get(key) {
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| config_error(self.file, format!("`{key}` must be a non-negative integer, got {v}"))),
            None => Err(config_error(self.file, format!("`{key}` is missing"))),
        }
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.obj.get(key).is_none_or(Value::is_null) { Ok(default) } else { self.usize(key) }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| config_error(self.file, format!("`{key}` must be a number, got {v}"))),
        }
    }
    fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| config_error(self.file, format!("`{key}` must be a string, got {v}"))),
        }
    }
}

impl EncoderConfig {
    /// Reads a transformers `config.json`. Errors name the file and the offending key;
    /// an unknown `model_type` is an error naming it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| config_error(path, format!("invalid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| config_error(path, "top level is not an object".into()))?;
        let k = Keys { obj, file: path };
        let model_type = match k.str_or("model_type", "")? {
            "bert" => ModelType::Bert,
            "distilbert" => ModelType::DistilBert,
            "albert" => ModelType::Albert,
            "roberta" => ModelType::Roberta,
            other => {
                return Err(ModelError::UnknownModelType { file: path.to_path_buf(), model_type: other.to_string() })
            }
        };
        let num_labels = obj.get("id2label").and_then(Value::as_object).map(|m| m.len());
        // RobertaConfig's default padding_idx is 1 (`<s>` = 0, `<pad>` = 1); the others' is 0.
        let default_pad = if model_type == ModelType::Roberta { 1 } else { 0 };
        let pad_token_id = k.usize_or("pad_token_id", default_pad)? as u32;
        let cfg = match model_type {
            ModelType::Bert | ModelType::Albert | ModelType::Roberta => {
                let hidden_size = k.usize("hidden_size")?;
                let pos_type = k.str_or("position_embedding_type", "absolute")?;
                if pos_type != "absolute" {
                    return Err(config_error(
                        path,
                        format!("position_embedding_type = `{pos_type}` is not supported (absolute)"),
                    ));
                }
                let hidden_dropout = k.f64_or("hidden_dropout_prob", 0.1)?;
                let (classifier_key, embedding_size) = if model_type == ModelType::Albert {
                    ("classifier_dropout_prob", k.usize_or("embedding_size", 128)?)
                } else {
                    ("classifier_dropout", hidden_size)
                };
                EncoderConfig {
                    model_type,
                    vocab_size: k.usize("vocab_size")?,
                    embedding_size,
                    hidden_size,
                    num_layers: k.usize("num_hidden_layers")?,
                    num_heads: k.usize("num_attention_heads")?,
                    intermediate_size: k.usize("intermediate_size")?,
                    hidden_act: Activation::parse(k.str_or("hidden_act", "gelu")?, path, "hidden_act")?,
                    max_position_embeddings: k.usize_or("max_position_embeddings", 512)?,
                    type_vocab_size: k.usize_or("type_vocab_size", 2)?,
                    layer_norm_eps: k.f64_or("layer_norm_eps", 1e-12)?,
                    hidden_dropout,
                    attention_dropout: k.f64_or("attention_probs_dropout_prob", 0.1)?,
                    classifier_dropout: k.f64_or(classifier_key, hidden_dropout)?,
                    initializer_range: k.f64_or("initializer_range", 0.02)?,
                    pad_token_id,
                    num_hidden_groups: if model_type == ModelType::Albert { k.usize_or("num_hidden_groups", 1)? } else { 1 },
                    inner_group_num: if model_type == ModelType::Albert { k.usize_or("inner_group_num", 1)? } else { 1 },
                    num_labels,
                    source: path.to_path_buf(),
                }
            }
            ModelType::DistilBert => {
                if obj.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
                    tracing::debug!("{}: sinusoidal_pos_embds: positions read from the stored table", path.display());
                }
                let dim = k.usize("dim")?;
                EncoderConfig {
                    model_type,
                    vocab_size: k.usize("vocab_size")?,
                    embedding_size: dim,
                    hidden_size: dim,
                    num_layers: k.usize("n_layers")?,
                    num_heads: k.usize("n_heads")?,
                    intermediate_size: k.usize("hidden_dim")?,
                    hidden_act: Activation::parse(k.str_or("activation", "gelu")?, path, "activation")?,
                    max_position_embeddings: k.usize_or("max_position_embeddings", 512)?,
                    type_vocab_size: 0,
                    // transformers hard-codes 1e-12 for DistilBERT.
                    layer_norm_eps: 1e-12,
                    hidden_dropout: k.f64_or("dropout", 0.1)?,
                    attention_dropout: k.f64_or("attention_dropout", 0.1)?,
                    classifier_dropout: k.f64_or("seq_classif_dropout", 0.2)?,
                    initializer_range: k.f64_or("initializer_range", 0.02)?,
                    pad_token_id,
                    num_hidden_groups: 1,
                    inner_group_num: 1,
                    num_labels,
                    source: path.to_path_buf(),
                }
            }
        };
        cfg.validate()
    }

    // `%` rather than `is_multiple_of`: the workspace's rust-version is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    fn validate(self) -> Result<Self> {
        let file = &self.source;
        if self.num_heads == 0 || self.hidden_size % self.num_heads != 0 {
            return Err(config_error(
                file,
                format!("hidden size {} is not divisible by the number of heads {}", self.hidden_size, self.num_heads),
            ));
        }
        if self.num_hidden_groups == 0 || self.num_layers % self.num_hidden_groups != 0 {
            return Err(config_error(
                file,
                format!("num_hidden_layers {} is not a multiple of num_hidden_groups {}", self.num_layers, self.num_hidden_groups),
            ));
        }
        for (key, p) in [("hidden dropout", self.hidden_dropout), ("attention dropout", self.attention_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(config_error(file, format!("{key} {p} is outside [0, 1)")));
            }
        }
        if self.max_sequence_length() == 0 {
            return Err(config_error(
                file,
                format!(
                    "max_position_embeddings {} leaves no position for a token after pad_token_id {} \
                     (RoBERTa's positions start at pad_token_id + 1)",
                    self.max_position_embeddings, self.pad_token_id
                ),
            ));
        }
        Ok(self)
    }

    /// The position-table row of a row's first token: `pad_token_id + 1` for RoBERTa (transformers'
    /// `create_position_ids_from_input_ids`; padding sits at row `pad_token_id`), 0 otherwise.
    pub fn first_position(&self) -> usize {
        match self.model_type {
            ModelType::Roberta => self.pad_token_id as usize + 1,
            _ => 0,
        }
    }

    /// The most tokens a row may hold: the position rows left after [`Self::first_position`]
    /// (RoBERTa's 514 rows hold 512 tokens).
    pub fn max_sequence_length(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.first_position())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}
