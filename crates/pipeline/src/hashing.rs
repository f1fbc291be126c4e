//! Content hashes: canonical JSON for stage keys, and sha256 of files.
//!
//! Two kinds of file hash:
//! - [`hash_file_uncached`] reads every byte. The store uses it to write and to verify artifact files
//!   (a few MB per stage; 20 Newsgroups' whole partition artifact verifies in ~10 ms), so a corrupted
//!   artifact is always detected, whatever its timestamps say.
//! - [`hash_file`] serves the stages' *input* files (datasets, model weights: up to GBs) from a cache
//!   keyed by (path, size, mtime, ctime, inode), so that a cached rerun does not re-read them.
//!   ctime cannot be set from user space, so a rewrite that restores size and mtime (`touch -d`) still
//!   misses. An entry is only trusted when the file's mtime and ctime were at least
//!   [`RACY_WINDOW_NS`] older than the moment it was hashed (git's "racily clean" rule): a write in the
//!   same timestamp tick as the hash cannot hide behind an unchanged stamp.
//!
//! The cache lives in memory for the process and is persisted as `<artifacts>/.hash-cache.json` by
//! [`load_cache`] / [`save_cache`] (the runner does both).

use crate::error::{IoContext, PipelineError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The file name of the persisted hash cache inside the artifacts directory.
pub const HASH_CACHE_FILE: &str = ".hash-cache.json";

/// A cache entry is trusted only when the file's timestamps were this much older than the hash
/// (covers coarse file-system timestamps: ext4's jiffies, NFS/FAT seconds).
pub const RACY_WINDOW_NS: u128 = 2_000_000_000;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct FileId {
    size: u64,
    mtime_ns: u128,
    ctime_ns: u128,
    ino: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    id: FileId,
    /// Whether the file's timestamps were older than the hash by [`RACY_WINDOW_NS`].
    settled: bool,
    sha256: String,
}

static CACHE: Mutex<Option<HashMap<PathBuf, Stamp>>> = Mutex::new(None);

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// JSON with object keys sorted at every level (independent of serde_json's map features).
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let ordered: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in ordered {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json keeps insertion order with `preserve_order` and sorts otherwise: both are sorted here.
    serde_json::to_string(&sorted(value)).unwrap_or_default()
}

/// The stage key: sha256 of the canonical JSON of `{stage, code_version, params, upstream}`.
pub fn stage_key(stage: &str, code_version: u32, params: &Value, upstream: &BTreeMap<String, String>) -> String {
    let doc = serde_json::json!({
        "stage": stage,
        "code_version": code_version,
        "params": params,
        "upstream": upstream,
    });
    sha256_hex(canonical_json(&doc).as_bytes())
}

fn nanos(t: std::io::Result<SystemTime>) -> u128 {
    t.ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

#[cfg(unix)]
fn file_id(path: &Path) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let ctime_ns = (meta.ctime().max(0) as u128) * 1_000_000_000 + meta.ctime_nsec().max(0) as u128;
    Ok(FileId { size: meta.len(), mtime_ns: nanos(meta.modified()), ctime_ns, ino: meta.ino() })
}

#[cfg(not(unix))]
fn file_id(path: &Path) -> std::io::Result<FileId> {
    let meta = std::fs::metadata(path)?;
    Ok(FileId { size: meta.len(), mtime_ns: nanos(meta.modified()), ctime_ns: 0, ino: 0 })
}

/// sha256 of a file's bytes, read in full (no cache).
pub fn hash_file_uncached(path: &Path) -> Result<String, PipelineError> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// sha256 of a file's bytes, from the cache when its size, mtime, ctime and inode are unchanged and
/// the entry is settled (see the module docs).
pub fn hash_file(path: &Path) -> Result<String, PipelineError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let id = file_id(&abs).at(path)?;
    {
        let guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = guard.as_ref().and_then(|c| c.get(&abs)) {
            if s.settled && s.id == id {
                return Ok(s.sha256.clone());
            }
        }
    }
    let started = nanos(Ok(SystemTime::now()));
    let sha256 = hash_file_uncached(path)?;
    // Re-read the stamp: a write during the hash must not be cached under the new stamp.
    let after = file_id(&abs).at(path)?;
    let settled = after == id && id.mtime_ns.max(id.ctime_ns) + RACY_WINDOW_NS <= started;
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    guard.get_or_insert_with(HashMap::new).insert(abs, Stamp { id, settled, sha256: sha256.clone() });
    Ok(sha256)
}

/// [`hash_file`] for use in `Stage::params`: an unreadable file gives `"unreadable: <error>"`, so the
/// key still changes and the stage itself reports the error when it opens the file.
pub fn input_hash(path: &Path) -> String {
    hash_file(path).unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Loads the persisted cache of `artifacts_dir` (a missing or unreadable cache is empty).
pub fn load_cache(artifacts_dir: &Path) {
    let entries: HashMap<PathBuf, Stamp> = std::fs::read(artifacts_dir.join(HASH_CACHE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<(PathBuf, Stamp)>>(&b).ok())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    guard.get_or_insert_with(HashMap::new).extend(entries);
}

/// Persists the cache into `artifacts_dir` (atomically), dropping entries whose file is gone.
pub fn save_cache(artifacts_dir: &Path) -> Result<(), PipelineError> {
    let mut entries: Vec<(PathBuf, Stamp)> = {
        let guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        guard.iter().flatten().filter(|(p, s)| s.settled && p.exists()).map(|(p, s)| (p.clone(), s.clone())).collect()
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    crate::fsutil::write_atomic(&artifacts_dir.join(HASH_CACHE_FILE), &serde_json::to_vec(&entries)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let a = serde_json::json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}"#);
    }

    #[test]
    fn stage_key_depends_on_every_part() {
        let p = serde_json::json!({"alpha": 0.1});
        let up: BTreeMap<String, String> = [("partition".to_string(), "k".to_string())].into();
        let k = stage_key("s", 1, &p, &up);
        assert_eq!(k.len(), 64);
        assert_ne!(k, stage_key("s", 2, &p, &up));
        assert_ne!(k, stage_key("t", 1, &p, &up));
        assert_ne!(k, stage_key("s", 1, &serde_json::json!({"alpha": 0.2}), &up));
        assert_ne!(k, stage_key("s", 1, &p, &BTreeMap::new()));
        assert_eq!(k, stage_key("s", 1, &p, &up));
    }

    #[test]
    fn file_hash_is_sha256_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc"), FIPS 180-2 example.
        assert_eq!(hash_file(&f).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        std::fs::write(&f, b"abcd").unwrap();
        assert_eq!(hash_file(&f).unwrap(), sha256_hex(b"abcd"));
        save_cache(dir.path()).unwrap();
        assert!(dir.path().join(HASH_CACHE_FILE).exists());
        assert!(input_hash(&dir.path().join("missing")).starts_with("unreadable: "));
    }

    #[test]
    fn same_size_rewrite_with_restored_mtime_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.bin");
        std::fs::write(&f, b"0123456789").unwrap();
        // Pretend the file is old, so its cache entry is settled (trusted).
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        // ctime is "now" (set_modified changed it): wait out the racy window instead.
        let abs = std::path::absolute(&f).unwrap();
        let first = hash_file(&f).unwrap();
        let mut stamp = CACHE.lock().unwrap().as_ref().unwrap()[&abs].clone();
        assert!(!stamp.settled, "ctime is within the racy window");
        // Settle it by hand (as if hashed 3 s later), then flip a byte keeping size and mtime.
        stamp.settled = true;
        CACHE.lock().unwrap().as_mut().unwrap().insert(abs.clone(), stamp);
        assert_eq!(hash_file(&f).unwrap(), first, "a settled entry with the same stamp is served from the cache");
        std::fs::write(&f, b"0123456788").unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 10);
        assert_eq!(hash_file(&f).unwrap(), sha256_hex(b"0123456788"), "ctime changed: hashed again");
        assert_eq!(hash_file_uncached(&f).unwrap(), sha256_hex(b"0123456788"));
    }
}
