//! Round checkpoints: the global trainable state (safetensors) plus a JSON record, each written to a
//! temporary name and renamed, JSON last.
//!
//! `round-00003.safetensors` holds the global state after round 3 (round 0 = the initial state);
//! `round-00003.json` holds the run fingerprint, the metrics rows so far (floats as exact strings), the
//! cumulative wall time, the seed-derivation scheme and the sha256 of the safetensors file. The JSON is
//! the commit marker: a checkpoint without it, with another fingerprint or with a state file whose hash
//! does not match, is skipped (with a warning) in favour of the previous one. Client optimizers are fresh
//! every round and every random draw derives from (seed, round, client), so nothing else needs saving to
//! resume bit-identically. The last [`KEEP`] checkpoints are kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aggregate::State;
use crate::error::{FederationError, Result};
use slora_metrics::RoundMetrics;

/// Checkpoint JSON format version.
const FORMAT: u32 = 1;
/// How many round checkpoints stay on disk (the newest ones).
pub const KEEP: usize = 2;

/// Writes `bytes` to `path` atomically and durably ([`slora_fsio::write_atomic`]). On failure (a
/// full disk, say) the temporary file is removed and the error names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    slora_fsio::write_atomic(path, bytes).map_err(|e| FederationError::io(path, e))
}

/// Serialises tensors to safetensors bytes (names sorted; deterministic).
pub fn safetensors_bytes(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    safetensors::serialize(tensors.iter(), None).map_err(|e| FederationError::Candle(e.into()))
}

/// Writes tensors to a safetensors file atomically and returns the file's sha256 (hex).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<String> {
    let bytes = safetensors_bytes(tensors)?;
    write_atomic(path, &bytes)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Reads a safetensors file into a name-sorted map (CPU).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = fs::read(path).map_err(|e| FederationError::io(path, e))?;
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| FederationError::BadFile { path: path.into(), message: format!("not a valid safetensors file: {e}") })?;
    Ok(map.into_iter().collect())
}

/// A restored checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Rounds completed in this run (0 = only the initial evaluation).
    pub completed_rounds: u32,
    /// Global trainable state after those rounds.
    pub state: State,
    /// Metrics rows so far.
    pub metrics: Vec<RoundMetrics>,
    /// Cumulative training + evaluation wall time so far.
    pub wall_seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    fingerprint: String,
    completed_rounds: u32,
    state_file: String,
    state_sha256: String,
    #[serde(with = "slora_metrics::exact_f64")]
    wall_seconds: f64,
    seed_derivation: String,
    metrics: Vec<RoundMetrics>,
}

/// The checkpoints of one federated run, in one directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    fingerprint: String,
    strict: bool,
    /// Fingerprints also resumed: `(prefix, suffix)` of a name an older layout gave this run.
    also_accepted: Option<(String, String)>,
}

impl CheckpointStore {
    /// Opens (creating) `dir` for a run identified by `fingerprint`; leftover temp files are removed.
    pub fn open(dir: &Path, fingerprint: impl Into<String>) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| FederationError::io(dir, e))?;
        for entry in fs::read_dir(dir).map_err(|e| FederationError::io(dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `slora_fsio::temp_path` names (`.NAME.tmp-PID`), and the older `.NAME.PID.tmp`.
            if name.starts_with('.') && (name.contains(".tmp-") || name.ends_with(".tmp")) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir: dir.to_path_buf(), fingerprint: fingerprint.into(), strict: false, also_accepted: None })
    }

    /// Also resumes checkpoints whose fingerprint starts with `prefix` and ends with `suffix`: the
    /// same run under the names an older layout gave it (a caller that moved a run's folder, whose
    /// own name now identifies the run, keeps its rounds). New checkpoints carry the store's own
    /// fingerprint.
    pub fn also_accepting(mut self, prefix: impl Into<String>, suffix: impl Into<String>) -> Self {
        self.also_accepted = Some((prefix.into(), suffix.into()));
        self
    }

    /// Strict mode (`pipeline --no-rebuild`): [`CheckpointStore::latest`] returns the error of a corrupt
    /// checkpoint instead of skipping it in favour of an older one.
    pub fn strict(mut self, yes: bool) -> Self {
        self.strict = yes;
        self
    }

    /// The directory holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, round: u32) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("round-{round:05}.safetensors")), self.dir.join(format!("round-{round:05}.json")))
    }

    /// Saves the state after `completed_rounds` rounds, then drops all but the newest [`KEEP`].
    pub fn save(&self, completed_rounds: u32, state: &State, metrics: &[RoundMetrics], wall_seconds: f64) -> Result<()> {
        let (st_path, json_path) = self.paths(completed_rounds);
        let sha = write_safetensors(&st_path, state)?;
        let record = Record {
            format: FORMAT,
            fingerprint: self.fingerprint.clone(),
            completed_rounds,
            state_file: st_path.file_name().unwrap().to_string_lossy().into_owned(),
            state_sha256: sha,
            wall_seconds,
            seed_derivation: crate::seeds::DERIVATION.to_string(),
            metrics: metrics.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("checkpoint record serialises");
        write_atomic(&json_path, &json)?;
        for old in self.rounds_on_disk()?.into_iter().skip(KEEP) {
            let (s, j) = self.paths(old);
            // JSON first: a state file without its JSON is never taken as a checkpoint.
            let _ = fs::remove_file(j);
            let _ = fs::remove_file(s);
        }
        Ok(())
    }

    /// Rounds that have a JSON record, newest first.
    fn rounds_on_disk(&self) -> Result<Vec<u32>> {
        let mut rounds: Vec<u32> = fs::read_dir(&self.dir)
            .map_err(|e| FederationError::io(&self.dir, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("round-")?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        Ok(rounds)
    }

    /// The newest valid checkpoint of this run, if any.
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        for round in self.rounds_on_disk()? {
            match self.load(round) {
                Ok(Some(cp)) => return Ok(Some(cp)),
                Ok(None) => {}
                Err(e) if self.strict => return Err(e),
                Err(e) => tracing::warn!("skipping checkpoint of round {round}: {e}"),
            }
        }
        Ok(None)
    }

    fn load(&self, round: u32) -> Result<Option<Checkpoint>> {
        let (st_path, json_path) = self.paths(round);
        let bytes = fs::read(&json_path).map_err(|e| FederationError::io(&json_path, e))?;
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| FederationError::BadFile { path: json_path.clone(), message: e.to_string() })?;
        let fp = record.fingerprint.as_str();
        let ours = fp == self.fingerprint
            || self.also_accepted.as_ref().is_some_and(|(pre, suf)| fp.len() >= pre.len() + suf.len() && fp.starts_with(pre.as_str()) && fp.ends_with(suf.as_str()));
        if record.format != FORMAT || !ours {
            tracing::warn!("{}: checkpoint of another run (fingerprint differs), ignored", json_path.display());
            return Ok(None);
        }
        let state_bytes = fs::read(&st_path).map_err(|e| FederationError::io(&st_path, e))?;
        if hex::encode(Sha256::digest(&state_bytes)) != record.state_sha256 {
            return Err(FederationError::BadFile { path: st_path, message: "sha256 does not match its checkpoint record (corrupt)".into() });
        }
        let state: State = candle_core::safetensors::load_buffer(&state_bytes, &Device::Cpu)?.into_iter().collect();
        Ok(Some(Checkpoint {
            completed_rounds: record.completed_rounds,
            state,
            metrics: record.metrics,
            wall_seconds: record.wall_seconds,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint as ck;

    /// A full disk while replacing a checkpoint file or the metrics leaves the old file whole.
    #[test]
    fn full_disk_leaves_old_safetensors_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("state.safetensors");
        ck::write_safetensors(&st, &state(1.0)).unwrap();
        let before = fs::read(&st).unwrap();
        assert!(slora_fsio::fault::with_budget(16, || ck::write_safetensors(&st, &state(2.0))).is_err());
        assert_eq!(fs::read(&st).unwrap(), before);
        let m = dir.path().join("metrics.parquet");
        let rows = vec![RoundMetrics { method: "fft".into(), ..Default::default() }];
        slora_metrics::write_parquet(&m, &rows).unwrap();
        let before = fs::read(&m).unwrap();
        let more = vec![rows[0].clone(), RoundMetrics { method: "fft".into(), round: 1, ..Default::default() }];
        assert!(slora_fsio::fault::with_budget(64, || slora_metrics::write_parquet(&m, &more)).is_err());
        assert_eq!(fs::read(&m).unwrap(), before);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file left");
    }

    use super::*;

    fn state(v: f32) -> State {
        let mut s = State::new();
        s.insert("a.weight".into(), Tensor::new(&[v, v * 2.0, 1.0 / 3.0], &Device::Cpu).unwrap());
        s
    }

    fn metrics(round: u32) -> RoundMetrics {
        RoundMetrics {
            method: "fft".into(),
            round,
            accuracy: Some(0.1 * round as f64 + 1e-17),
            loss: None,
            train_loss: Some(2.0 / 3.0),
            bytes_up_per_client: 12,
            bytes_down_per_client: 12,
            cum_bytes_up: 24 * round as u64,
            wall_seconds: 0.3,
            clients: 2,
            ..Default::default()
        }
    }

    #[test]
    fn save_and_resume_from_the_newest_valid_checkpoint() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::open(dir.path(), "run-a")?;
        assert!(store.latest()?.is_none());
        let mut rows = vec![];
        for r in 0..4u32 {
            rows.push(metrics(r));
            store.save(r, &state(r as f32), &rows, 1.5 * r as f64)?;
        }
        let cp = store.latest()?.unwrap();
        assert_eq!(cp.completed_rounds, 3);
        assert_eq!(cp.state["a.weight"].to_vec1::<f32>()?, vec![3.0, 6.0, 1.0 / 3.0]);
        assert_eq!(cp.metrics, rows);
        assert_eq!(cp.wall_seconds, 4.5);
        // Only the newest KEEP checkpoints remain, and no temp files.
        let mut names: Vec<String> = fs::read_dir(dir.path())?.map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["round-00002.json", "round-00002.safetensors", "round-00003.json", "round-00003.safetensors"]);

        // A corrupt newest state falls back to the previous round.
        let mut bytes = fs::read(dir.path().join("round-00003.safetensors"))?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(dir.path().join("round-00003.safetensors"), bytes)?;
        assert_eq!(store.latest()?.unwrap().completed_rounds, 2);
        // A state file without its JSON (killed between the two writes) is not a checkpoint.
        fs::remove_file(dir.path().join("round-00002.json"))?;
        assert!(store.latest()?.is_none());
        Ok(())
    }

    #[test]
    fn another_runs_checkpoints_are_ignored() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        CheckpointStore::open(dir.path(), "run-a")?.save(1, &state(1.0), &[metrics(1)], 0.0)?;
        assert!(CheckpointStore::open(dir.path(), "run-b")?.latest()?.is_none());
        // A run moved under a new name resumes what it wrote under the old one, and writes the new.
        let renamed = CheckpointStore::open(dir.path(), "run-b")?.also_accepting("run-", "a");
        assert_eq!(renamed.latest()?.unwrap().completed_rounds, 1);
        renamed.save(2, &state(2.0), &[metrics(1), metrics(2)], 0.0)?;
        assert_eq!(CheckpointStore::open(dir.path(), "run-b")?.latest()?.unwrap().completed_rounds, 2);
        assert_eq!(CheckpointStore::open(dir.path(), "run-a")?.latest()?.unwrap().completed_rounds, 1);
        fs::write(dir.path().join(".round-00009.json.77.tmp"), b"partial")?;
        fs::write(dir.path().join(".round-00010.json.tmp-78"), b"partial")?;
        let store = CheckpointStore::open(dir.path(), "run-a")?;
        assert!(!dir.path().join(".round-00009.json.77.tmp").exists());
        assert!(!dir.path().join(".round-00010.json.tmp-78").exists());
        assert_eq!(store.latest()?.unwrap().completed_rounds, 1);
        Ok(())
    }
}
