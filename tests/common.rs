//! What the integration-test modules share: where the repository and ../shared are, and the tiny
//! experiment config the federation and reliability suites run.

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `rel` inside `../shared` beside the repository.
pub fn shared(rel: &str) -> PathBuf {
    repo().join("../shared").join(rel)
}

/// The tiny experiment: SST-2 (`train` / `test` rows, max_len 32), MiniLM-L3, 4 iid clients, 2 per
/// round, batch 16, 2 + 2 rounds, one thread, seed `seed`. `extra` is appended (new sections only:
/// TOML does not reopen one).
pub fn tiny_toml(seed: u64, train: usize, test: usize, extra: &str) -> String {
    format!(
        r#"[run]
name = "tiny"
seed = {seed}
threads = 1
[data]
source = "{data}"
test_split = "validation"
text_column = "text"
max_len = 32
max_train = {train}
max_test = {test}
[model]
source = "{model}"
[partition]
clients = 4
scheme = "iid"
[federation]
clients_per_round = 2
batch_size = 16
[stage1]
rounds = 2
[stage2]
rounds = 2
{extra}"#,
        data = shared("datasets/sst2.parquet").display(),
        model = shared("models/paraphrase-MiniLM-L3-v2").display(),
    )
}
