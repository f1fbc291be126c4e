//! Text-classification sources, tokenization, federated partitioners and Parquet shards.
//!
//! - [`source`]: read a dataset (Parquet, JSON lines with or without gzip, CSV, a hub dataset file)
//!   into train and test [`Split`]s with a stable label map.
//! - [`subsample`]: seeded stratified subsampling.
//! - [`tokenize`]: `tokenizers` from a model's `tokenizer.json`, truncation on, padding off.
//! - [`partition`]: iid / dirichlet / pathological / natural-id client partitions (flwr-datasets
//!   semantics).
//! - [`shard`]: client and test shards, label statistics and label names as files.
#![deny(missing_docs)]

mod error;
/// The simulated full disk (it lives in `slora_fsio`, with every durable writer).
pub use slora_fsio::fault;
mod labels;
pub mod partition;
pub mod shard;
pub mod source;
pub mod subsample;
pub mod tokenize;

pub use error::DataError;
pub use labels::LabelSet;
pub use partition::{natural, partition, NaturalPartition, Scheme};
pub use shard::{read_shard, write_shard, Shard};
pub use source::{load_dataset, Dataset, DatasetSpec, Split};
pub use subsample::stratified_subsample;
pub use tokenize::{load_tokenizer, tokenize, Tokenized};
