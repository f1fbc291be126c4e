//! Small file-system helpers: atomic writes and best-effort removal.

use crate::error::{IoContext, PipelineError};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a reader
/// never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if let Err(e) = slora_data::fault::write_file(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(PipelineError::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PipelineError::io(path, e)
    })
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
