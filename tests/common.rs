//! What the integration-test modules share: where the repository and ../shared are, and the tiny
//! experiment config the federation and reliability suites run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A test's own folder under cargo's per-target temp folder, made empty. It is removed when the test
/// passes and kept when it fails, for reading what the failure left. Without the removal a full run
/// piles up several GB of artifacts there, which filled the CI machine's disk.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `rel` inside `../shared` beside the repository.
pub fn shared(rel: &str) -> PathBuf {
    repo().join("../shared").join(rel)
}

/// The binary under test, run in `dir`, with an environment no caller's shell leaks into: no
/// `RUST_LOG`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE` or simulated full disk, an `HF_HOME` that does not
/// exist (nothing comes from a real hub cache unless a test sets one) and no stdin. Every suite
/// starts the binary through this.
pub fn pipeline_in(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove(slora_data::fault::ENOSPC_AFTER_ENV)
        .env("HF_HOME", "/nonexistent-hf-home")
        .stdin(Stdio::null());
    cmd
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
