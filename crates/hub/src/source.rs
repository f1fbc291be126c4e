//! Telling a local path from a hub id.

use std::path::{Path, PathBuf};

/// Where a model or dataset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file or folder (returned as is, never looked up in the cache).
    Local(PathBuf),
    /// A hub id, `org/name` or `name`.
    Hub(String),
}

/// File endings that mark a string as a file name rather than a hub id.
const FILE_ENDINGS: &[&str] = &[".parquet", ".jsonl", ".json", ".gz", ".csv", ".safetensors", ".txt"];

impl Source {
    /// A path that exists is local. Otherwise a string shaped like a hub id (one or two segments of
    /// letters, digits, `-`, `_`, `.`, not starting with `.` or `-`, no file ending) is a hub id;
    /// anything else (absolute, `./x`, `../x`, `a/b/c`, `x.parquet`) is a local path that does not exist.
    pub fn parse(source: &str) -> Source {
        let path = Path::new(source);
        if path.exists() || !is_hub_id(source) {
            Source::Local(path.to_path_buf())
        } else {
            Source::Hub(source.to_string())
        }
    }
}

/// Whether `s` has the shape of a hub repo id.
pub fn is_hub_id(s: &str) -> bool {
    let segments: Vec<&str> = s.split('/').collect();
    if s.is_empty() || segments.len() > 2 {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if FILE_ENDINGS.iter().any(|e| lower.ends_with(e)) {
        return false;
    }
    segments.iter().all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && !seg.starts_with('-')
            && !seg.contains("..")
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    })
}
