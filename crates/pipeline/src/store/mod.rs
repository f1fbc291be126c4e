//! The content-addressed artifact store: `artifacts/<stage>/<key>/` folders with a `manifest.json`,
//! `artifacts/pipeline.lock`, and a process lock on the whole directory.
//!
//! A stage writes into `artifacts/<stage>/.tmp-<key>-<pid>/`; [`Store::commit`] hashes every file
//! into the manifest and renames the folder to `artifacts/<stage>/<key>/`. A folder is only taken as
//! an artifact when its manifest exists and every listed file matches its sha256 ([`Store::lookup`]);
//! temporary folders are never looked at, and leftovers of a killed process are removed when the
//! next process takes the lock.

mod artifact;
mod manifest;

pub use artifact::Artifact;
pub use manifest::{flatten, input_hashes, FileRecord, LockEntry, Manifest, PipelineLock, MANIFEST_FILE};

use crate::error::{IoContext, PipelineError};
use crate::fsutil::{remove_dir_if_exists, write_atomic};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file name inside the artifacts directory.
pub const PROCESS_LOCK_FILE: &str = ".lock";
/// The pipeline lock file name inside the artifacts directory.
pub const PIPELINE_LOCK_FILE: &str = "pipeline.lock";

/// What [`Store::check`] found for a stage and key.
#[derive(Debug)]
pub enum Lookup {
    /// A complete artifact whose files match their manifest hashes.
    Found(Artifact),
    /// No folder for that key.
    Absent,
    /// A folder that is not a usable artifact: no or unreadable manifest, or a file that is missing
    /// or does not match its hash.
    Invalid(PipelineError),
}

/// An artifacts directory. [`Store::open`] holds an exclusive lock for the life of the value.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    _lock: Option<File>,
}

impl Store {
    /// Opens (creating) `root` for writing: takes the process lock or fails at once with
    /// "artifacts dir locked by pid N", then removes leftovers (`.tmp-*`, `.old-*`) of dead processes.
    pub fn open(root: &Path) -> Result<Store, PipelineError> {
        std::fs::create_dir_all(root).at(root)?;
        let root = std::path::absolute(root).at(root)?;
        let lock_path = root.join(PROCESS_LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .at(&lock_path)?;
        let locked = fs4::fs_std::FileExt::try_lock_exclusive(&file).at(&lock_path)?;
        if !locked {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = if pid.trim().is_empty() { "?".to_string() } else { pid.trim().to_string() };
            return Err(PipelineError::Locked { dir: root, pid });
        }
        file.set_len(0).at(&lock_path)?;
        file.rewind().at(&lock_path)?;
        write!(file, "{}", std::process::id()).at(&lock_path)?;
        let store = Store { root, _lock: Some(file) };
        store.remove_leftovers()?;
        Ok(store)
    }

    /// Opens `root` for reading only (status, inspect): no lock, nothing created.
    pub fn open_read_only(root: &Path) -> Store {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Store { root, _lock: None }
    }

    /// The artifacts directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this value holds the process lock.
    pub fn is_writable(&self) -> bool {
        self._lock.is_some()
    }

    /// `artifacts/<stage>/`.
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// `artifacts/<stage>/<key>/`.
    pub fn artifact_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.stage_dir(stage).join(key)
    }

    /// `artifacts/<stage>/.work-<key>/`: resumable state (round checkpoints) of an unfinished run.
    pub fn work_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.stage_dir(stage).join(format!(".work-{key}"))
    }

    /// The verified artifact of `stage` with `key`, or `None` when absent. A folder whose manifest is
    /// unreadable or whose files do not match their hashes is a miss: warned about, not used.
    pub fn lookup(&self, stage: &str, key: &str) -> Option<Artifact> {
        match self.check(stage, key) {
            Lookup::Found(a) => Some(a),
            Lookup::Absent => None,
            Lookup::Invalid(e) => {
                tracing::warn!("{e}; rebuilding");
                None
            }
        }
    }

    /// Like [`Store::lookup`], but says why a folder that exists is not a usable artifact (the error
    /// names the folder and the first file that does not match its manifest hash).
    pub fn check(&self, stage: &str, key: &str) -> Lookup {
        let dir = self.artifact_dir(stage, key);
        if !dir.exists() {
            return Lookup::Absent;
        }
        match Artifact::load(&dir) {
            Ok(a) if a.manifest.stage == stage && a.manifest.key == key => Lookup::Found(a),
            Ok(_) => Lookup::Invalid(PipelineError::Artifact {
                dir,
                message: "its manifest names another stage or key".into(),
            }),
            Err(e) => Lookup::Invalid(e),
        }
    }

    /// Creates a fresh temporary output folder for `stage`/`key`.
    pub fn begin(&self, stage: &str, key: &str) -> Result<PathBuf, PipelineError> {
        let tmp = self.stage_dir(stage).join(format!(".tmp-{key}-{}", std::process::id()));
        remove_dir_if_exists(&tmp)?;
        std::fs::create_dir_all(&tmp).at(&tmp)?;
        Ok(tmp)
    }

    /// Hashes every file of `tmp` into `manifest.files`, writes `manifest.json`, and renames `tmp` to
    /// `artifacts/<stage>/<key>/` (replacing an existing folder of the same key).
    pub fn commit(&self, tmp: &Path, mut manifest: Manifest) -> Result<Artifact, PipelineError> {
        manifest.files.clear();
        for rel in crate::fsutil::list_files(tmp)? {
            if rel == MANIFEST_FILE {
                continue;
            }
            let path = tmp.join(&rel);
            let bytes = std::fs::metadata(&path).at(&path)?.len();
            let sha256 = crate::hashing::hash_file_uncached(&path)?;
            manifest.files.insert(rel, FileRecord { sha256, bytes });
        }
        write_atomic(&tmp.join(MANIFEST_FILE), &serde_json::to_vec_pretty(&manifest)?)?;
        let dest = self.artifact_dir(&manifest.stage, &manifest.key);
        slora_fsio::commit_dir(tmp, &dest).at(&dest)?;
        Artifact::load(&dest)
    }

    /// Reads `pipeline.lock` (empty when absent or unreadable).
    pub fn read_lock(&self) -> PipelineLock {
        std::fs::read(self.root.join(PIPELINE_LOCK_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records `artifact` as the current one of its stage in `pipeline.lock` (atomic write).
    pub fn record(&self, artifact: &Artifact) -> Result<(), PipelineError> {
        let mut lock = self.read_lock();
        let m = &artifact.manifest;
        let entry = LockEntry {
            key: m.key.clone(),
            code_version: m.code_version,
            params: m.params.clone(),
            upstream: m.upstream.clone(),
            outs: m.files.iter().map(|(k, v)| (k.clone(), v.sha256.clone())).collect(),
        };
        if lock.stages.get(&m.stage) == Some(&entry) {
            return Ok(());
        }
        lock.stages.insert(m.stage.clone(), entry);
        write_atomic(&self.root.join(PIPELINE_LOCK_FILE), &serde_json::to_vec_pretty(&lock)?)
    }

    /// Removes the folder of `stage` when it holds nothing (after a failed first run), so a failure
    /// leaves no trace but the lock and hash-cache files.
    pub fn remove_stage_dir_if_empty(&self, stage: &str) {
        let _ = std::fs::remove_dir(self.stage_dir(stage));
    }

    /// Removes `.tmp-*` and `.old-*` folders and `.<name>.tmp-<pid>` files of [`write_atomic`] (only
    /// called while holding the lock, so their writers are gone).
    fn remove_leftovers(&self) -> Result<(), PipelineError> {
        let is_temp_file = |name: &str| name.starts_with('.') && name.contains(".tmp-");
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && is_temp_file(&name) {
                tracing::warn!("removing unfinished write {}", entry.path().display());
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if !entry.path().is_dir() {
                continue;
            }
            let Ok(children) = std::fs::read_dir(entry.path()) else { continue };
            for child in children.flatten() {
                let name = child.file_name().to_string_lossy().into_owned();
                let path = child.path();
                let old = name.starts_with(".old-") || (name.starts_with('.') && name.contains(".old-"));
                if path.is_dir() && (name.starts_with(".tmp-") || old) {
                    tracing::warn!("removing unfinished output {}", path.display());
                    remove_dir_if_exists(&path)?;
                } else if path.is_file() && is_temp_file(&name) {
                    tracing::warn!("removing unfinished write {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
