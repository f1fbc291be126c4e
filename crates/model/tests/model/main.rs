//! Integration tests of slora-model: parity with transformers/peft fixtures
//! (../shared/fixtures/parity, produced by the generator its README describes: Python 3.11.7,
//! torch 2.15.0, transformers 5.24.0, peft 0.21.2), gradient coverage per mode, sparse-mask
//! invariance, peft round trip, parameter counts and learning on SST-2; the paper's hub models from
//! checkpoints in their real masked-LM key layout (tests/fixtures/hub-checkpoints, made by
//! scripts/make-hub-checkpoints.py with the same versions); RoBERTa on tests/fixtures/roberta-tiny
//! (scripts/make_roberta_fixture.py, same versions).
//!
//! One test binary for the crate: every theme is a module here.

mod common;
mod counts;
mod gradients;
mod hub_checkpoints;
mod loading;
mod lora;
mod parity;
mod roberta;
mod sparse_mode;
mod sst2;
