//! Small file-system helpers: atomic writes and best-effort removal.

use crate::error::{IoContext, PipelineError};
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably ([`slora_fsio::write_atomic`]): a reader never
/// sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    slora_fsio::write_atomic(path, bytes).map_err(|e| PipelineError::io(path, e))
}

/// Removes a folder tree if it exists; returns whether something was removed.
pub fn remove_dir_if_exists(path: &Path) -> Result<bool, PipelineError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(PipelineError::io(path, e)),
    }
}

/// Every regular file under `dir`, as paths relative to `dir` with `/` separators, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<String>, PipelineError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), PipelineError> {
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let path = entry.path();
            let kind = entry.file_type().at(&path)?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {

    /// A full disk while replacing a manifest or the lock leaves the old file whole.
    #[test]
    fn full_disk_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipeline.lock");
        write_atomic(&p, b"{\"old\": true}").unwrap();
        assert!(slora_fsio::fault::with_budget(4, || write_atomic(&p, &[b'x'; 64])).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"old\": true}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("f.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"22").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"22");
        assert_eq!(list_files(dir.path()).unwrap(), vec!["sub/f.json".to_string()]);
        assert!(remove_dir_if_exists(&dir.path().join("sub")).unwrap());
        assert!(!remove_dir_if_exists(&dir.path().join("sub")).unwrap());
    }
}
