//! Downloads a file that is not in the cache, with `hf-hub`'s blocking client, into the same cache
//! layout Python's `huggingface_hub` writes (`models--ORG--NAME/blobs|snapshots|refs`), so the two
//! share one cache both ways.
//!
//! - Endpoint: `HF_ENDPOINT`, else `https://huggingface.co`.
//! - Token: `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`, else
//!   `~/.cache/huggingface/token`: where `huggingface-cli login` writes it).
//! - `HF_HUB_OFFLINE=1`: never called (the caller reports the missing file).
//! - hf-hub writes the blob to `blobs/<etag>.part` under a file lock (two processes do not write the
//!   same blob), resumes a `.part` left by an interrupted download with a `Range` request, renames it
//!   into place when complete, then links `snapshots/<commit>/<file>` and writes `refs/<revision>`.
//! - An LFS file's etag is its sha256: the finished blob is hashed and a mismatch removes it (never
//!   used half-written or corrupted) and is an error.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use sha2::{Digest, Sha256};

use crate::{HubError, RepoKind};

/// The Hub (or a mirror) and the credentials to download from it.
#[derive(Debug, Clone)]
pub struct Downloader {
    /// Base URL, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Bearer token for gated or private repos.
    pub token: Option<String>,
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl Downloader {
    /// From `HF_ENDPOINT`, `HF_TOKEN` and the token file (see the module docs).
    pub fn from_env() -> Self {
        let endpoint = non_empty_env("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_string());
        let token = non_empty_env("HF_TOKEN").or_else(|| {
            let path = non_empty_env("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
                non_empty_env("HF_HOME")
                    .map(|h| PathBuf::from(h).join("token"))
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/token")))
            })?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        Self { endpoint: endpoint.trim_end_matches('/').to_string(), token }
    }

    /// Downloads `filename` of `repo_id` at `revision` into the cache at `cache_dir` and returns its
    /// snapshot path. Errors name the repo, file and revision, and say what to do.
    pub fn download(
        &self,
        cache_dir: &Path,
        repo_id: &str,
        kind: RepoKind,
        revision: &str,
        filename: &str,
    ) -> Result<PathBuf, HubError> {
        let what = || Target { kind, repo_id: repo_id.to_string(), revision: revision.to_string(), filename: filename.to_string() };
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(cache_dir.to_path_buf()))
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_progress(true)
            .with_retries(2)
            .build()
            .map_err(|e| self.failed(what(), e))?;
        let repo = api.repo(hf_hub::Repo::with_revision(repo_id.to_string(), kind.hf(), revision.to_string()));
        // Size and etag first: the finished file is checked against both.
        let meta = api.metadata(&repo.url(filename)).map_err(|e| self.failed(what(), e))?;
        tracing::info!("downloading {kind} {repo_id} {filename} (revision {revision}, {} bytes) from {}", meta.size(), self.endpoint);
        let path = repo.download(filename).map_err(|e| self.failed(what(), e))?;
        let len = std::fs::metadata(&path).map_err(|e| HubError::Io { path: path.clone(), source: e })?.len();
        if len != meta.size() as u64 {
            let blob = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let _ = std::fs::remove_file(&blob);
            let _ = std::fs::remove_file(&path);
            return Err(HubError::Download {
                target: what(),
                endpoint: self.endpoint.clone(),
                message: format!("got {len} of {} bytes; the partial file was removed, run again", meta.size()),
            });
        }
        verify_lfs_blob(&path)?;
        Ok(path)
    }

    /// The files of `repo_id` at `revision`, from the Hub's repo-info endpoint.
    pub fn list(&self, repo_id: &str, kind: RepoKind, revision: &str) -> Result<Vec<String>, HubError> {
        let what = || Target { kind, repo_id: repo_id.to_string(), revision: revision.to_string(), filename: String::new() };
        let api = ApiBuilder::new()
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_progress(false)
            .build()
            .map_err(|e| self.failed(what(), e))?;
        let repo = api.repo(hf_hub::Repo::with_revision(repo_id.to_string(), kind.hf(), revision.to_string()));
        let info = repo.info().map_err(|e| self.failed(what(), e))?;
        let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        files.sort();
        Ok(files)
    }

    fn failed(&self, t: Target, e: ApiError) -> HubError {
        let endpoint = self.endpoint.clone();
        let status = match &e {
            ApiError::RequestError(inner) => match inner.as_ref() {
                ureq::Error::StatusCode(code) => Some(*code),
                _ => None,
            },
            ApiError::TooManyRetries(inner) => match inner.as_ref() {
                ApiError::RequestError(r) => match r.as_ref() {
                    ureq::Error::StatusCode(code) => Some(*code),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        let unreachable = matches!(&e, ApiError::RequestError(inner) if matches!(inner.as_ref(),
            ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_)));
        match status {
            Some(404) => HubError::NotFound { target: t, endpoint },
            Some(code @ (401 | 403)) => HubError::Unauthorized { target: t, endpoint, status: code },
            _ if unreachable => HubError::Unreachable { target: t, endpoint, message: e.to_string() },
            _ => HubError::Download { target: t, endpoint, message: e.to_string() },
        }
    }
}

/// What was asked for (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `org/name`.
    pub repo_id: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// The file inside the repo (empty: the repo's file list).
    pub filename: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}` (revision `{}`): ", self.kind, self.repo_id, self.revision)?;
        if self.filename.is_empty() {
            f.write_str("the list of files")
        } else {
            write!(f, "file `{}`", self.filename)
        }
    }
}

/// An LFS blob is named by its sha256 (its etag): hash it and compare. A mismatch removes the blob
/// and the snapshot link, so the next run downloads it again instead of using it.
pub fn verify_lfs_blob(snapshot_path: &Path) -> Result<(), HubError> {
    let blob = std::fs::canonicalize(snapshot_path).map_err(|e| HubError::Io { path: snapshot_path.to_path_buf(), source: e })?;
    let Some(expected) = blob.file_name().map(|n| n.to_string_lossy().to_string()) else { return Ok(()) };
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(()); // a git (non-LFS) file: its etag is a git hash, not a sha256 of the bytes
    }
    let mut file = std::fs::File::open(&blob).map_err(|e| HubError::Io { path: blob.clone(), source: e })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| HubError::Io { path: blob.clone(), source: e })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected.to_ascii_lowercase() {
        let _ = std::fs::remove_file(&blob);
        let _ = std::fs::remove_file(snapshot_path);
        return Err(HubError::Checksum { path: blob, expected, actual });
    }
    Ok(())
}
