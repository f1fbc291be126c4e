//! Reliability through the real `pipeline` binary on a tiny config (SST-2, 120 train / 60 test rows,
//! max_len 32, MiniLM-L3, 4 clients, 2 per round, 2 + 2 rounds): kill -9 at seeded random moments,
//! corrupted artifacts and checkpoints, two processes on one artifacts folder, determinism, and a
//! bad-input suite (one test per case).

mod bad_input;
mod common;
mod concurrency;
mod corruption;
mod crash;
