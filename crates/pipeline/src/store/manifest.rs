//! `manifest.json` (one per artifact) and `pipeline.lock` (one per artifacts directory).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The manifest file name inside an artifact folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One output file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What an artifact is and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stage name.
    pub stage: String,
    /// The stage key (folder name).
    pub key: String,
    /// The stage's code version.
    pub code_version: u32,
    /// The params the key hashes (input content hashes included).
    pub params: Value,
    /// Input content hashes found in `params` (dotted param path of every `*sha256` key -> hash).
    pub inputs: BTreeMap<String, String>,
    /// Upstream stage -> key.
    pub upstream: BTreeMap<String, String>,
    /// Every output file (relative path with `/`) except the manifest itself.
    pub files: BTreeMap<String, FileRecord>,
    /// What the stage returned: row counts, metrics, …
    pub summary: Value,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// Seconds the stage's `run` took.
    pub wall_seconds: f64,
    /// The `slora-pipeline` crate version that wrote it.
    pub tool_version: String,
}

/// One stage's entry in `pipeline.lock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockEntry {
    /// Key of the artifact last built or used for this stage.
    pub key: String,
    /// Code version.
    pub code_version: u32,
    /// Params (as in the manifest).
    pub params: Value,
    /// Upstream stage -> key.
    pub upstream: BTreeMap<String, String>,
    /// Output file -> sha256.
    pub outs: BTreeMap<String, String>,
}

/// `artifacts/pipeline.lock`: the current key per stage, written after each stage commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineLock {
    /// Format version.
    pub schema: u32,
    /// Stage -> entry.
    pub stages: BTreeMap<String, LockEntry>,
}

impl Default for PipelineLock {
    fn default() -> Self {
        Self { schema: 1, stages: BTreeMap::new() }
    }
}

/// Collects `path -> hash` for every string under a key ending in `sha256` (input content hashes).
pub fn input_hashes(params: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        if let Value::Object(m) = v {
            for (k, v) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    Value::String(s) if k.ends_with("sha256") => {
                        out.insert(path, s.clone());
                    }
                    _ => walk(&path, v, out),
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", params, &mut out);
    out
}

/// Flattens JSON objects to `dotted.path -> value` (arrays and scalars are leaves).
pub fn flatten(v: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&path, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}
