//! BERT / DistilBERT / ALBERT / RoBERTa sequence classifiers in candle with full, LoRA and sparse training.
//!
//! Loading: [`ModelFiles::resolve`] -> [`EncoderConfig::from_file`] -> [`Weights::load`];
//! building: [`Classifier::new`] under a [`TrainSpec`]; training: [`Classifier::loss`], `backward`,
//! [`optim::AdamW`] over [`Classifier::trainable_vars`]; evaluation: [`evaluate`]; adapters on disk:
//! [`peft`]. Fused ops with backward live in [`ops`], masks in [`sparse`], SVD init in [`svd_init`].
#![warn(missing_docs)]

pub mod ops;
pub mod optim;
pub mod seed;
pub mod sparse;
pub mod svd_init;
pub mod bench;

mod architectures;
mod batch;
mod builder;
mod classifier;
mod config;
mod encoder;
mod error;
mod eval;
mod files;
mod linear;
mod names;
mod param;
mod positions;
pub mod peft;
mod safetensors_io;
mod spec;
mod weights;

pub use batch::Batch;
pub use classifier::{Classifier, ForwardOutput, InitReport};
pub use config::{Activation, EncoderConfig, ModelType};
pub use error::{ModelError, Result};
pub use eval::{evaluate, EvalMetrics};
pub use files::ModelFiles;
pub use linear::{AdaptableLinear, Adapter, LoraAdapter, SparseDelta};
pub use names::{block_linears, head_modules, within_block};
pub use param::{derive_seed, Ctx, Param};
pub use positions::position_ids_from_input_ids;
pub use spec::{default_modules_to_save, module_matches, saves_module, LoraFactors, LoraSpec, Mode, Precision, SparseSpec, TargetModules, TrainSpec};
pub use weights::Weights;
