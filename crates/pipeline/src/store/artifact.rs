//! A committed, verified stage output folder.

use super::manifest::{Manifest, MANIFEST_FILE};
use crate::error::PipelineError;
use std::path::{Path, PathBuf};

/// An artifact folder whose files matched their manifest hashes when it was loaded.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Stage name.
    pub stage: String,
    /// Stage key.
    pub key: String,
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Artifact {
    /// Reads `dir/manifest.json` and checks every listed file's size and sha256, reading every byte
    /// (never from the hash cache: a rewrite that keeps size and timestamps is still caught).
    pub fn load(dir: &Path) -> Result<Artifact, PipelineError> {
        let bad = |message: String| PipelineError::Artifact { dir: dir.to_path_buf(), message };
        let bytes = std::fs::read(dir.join(MANIFEST_FILE))
            .map_err(|e| bad(format!("no readable {MANIFEST_FILE} ({e}); not a complete artifact")))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("{MANIFEST_FILE} is not a manifest: {e}")))?;
        for (rel, record) in &manifest.files {
            let path = dir.join(rel);
            let len = std::fs::metadata(&path).map(|m| m.len()).map_err(|_| bad(format!("`{rel}` is missing")))?;
            if len != record.bytes {
                return Err(bad(format!("`{rel}` is corrupt: {len} bytes, its manifest says {}", record.bytes)));
            }
            let sha256 = crate::hashing::hash_file_uncached(&path)?;
            if sha256 != record.sha256 {
                return Err(bad(format!(
                    "`{rel}` is corrupt: sha256 {} does not match its manifest ({})",
                    &sha256[..12],
                    &record.sha256[..record.sha256.len().min(12)]
                )));
            }
        }
        Ok(Artifact { stage: manifest.stage.clone(), key: manifest.key.clone(), dir: dir.to_path_buf(), manifest })
    }

    /// The path of an output file inside the artifact.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The first 12 hex digits of the key (for messages).
    pub fn short_key(&self) -> &str {
        &self.key[..self.key.len().min(12)]
    }
}
