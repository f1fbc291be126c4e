//! Resolve Hugging Face hub ids: from the local cache first, else downloaded into it.
//!
//! The cache directory is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`
//! (the layout `huggingface_hub` writes: `models--ORG--NAME/refs/<revision>` holding a commit hash,
//! `snapshots/<commit>/<file>` linking to `blobs/<etag>`). A file that is not there is downloaded
//! ([`download`]: `HF_ENDPOINT`, `HF_TOKEN`, resumable, locked, LFS files checked against their
//! sha256) unless `HF_HUB_OFFLINE=1`, which never touches the network: then a missing file is an
//! error naming the repo, revision, file and cache directory.
//!
//! A source string is either a local path (returned as is) or a hub id (`org/name` or `name`):
//! see [`Source::parse`].
#![deny(missing_docs)]

pub mod download;
pub mod fake_hub;
pub mod parquet;
mod source;

pub use download::{Downloader, Target};
pub use parquet::{ParquetSplits, CONVERTED_REVISION};
pub use source::{is_hub_id, Source};

use std::path::{Path, PathBuf};

/// The kind of hub repository a file is resolved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository (`models--ORG--NAME`).
    Model,
    /// A dataset repository (`datasets--ORG--NAME`).
    Dataset,
}

impl RepoKind {
    fn hf(self) -> hf_hub::RepoType {
        match self {
            RepoKind::Model => hf_hub::RepoType::Model,
            RepoKind::Dataset => hf_hub::RepoType::Dataset,
        }
    }

    fn cli_flag(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => " --repo-type dataset",
        }
    }
}

impl std::fmt::Display for RepoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        })
    }
}

/// Errors from resolving a source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The file (or the revision) is not in the local hub cache.
    #[error(
        "{kind} `{repo_id}` (revision `{revision}`): file `{filename}` is not in the Hugging Face cache \
         {cache_dir}{note}; fill the cache with `huggingface-cli download {repo_id}{flag} {filename} \
         --revision {revision}` (HF_HOME/HF_HUB_CACHE pointing at this cache) or pass a local path instead",
        cache_dir = cache_dir.display(),
        note = offline_note(*offline),
        flag = kind.cli_flag()
    )]
    NotCached {
        /// Model or dataset.
        kind: RepoKind,
        /// The hub id, `org/name`.
        repo_id: String,
        /// The revision asked for (branch, tag or commit hash).
        revision: String,
        /// The file inside the repository.
        filename: String,
        /// The cache directory that was searched.
        cache_dir: PathBuf,
        /// Whether HF_HUB_OFFLINE was set.
        offline: bool,
    },
    /// A local path that does not exist.
    #[error("{path}: no such file or directory")]
    LocalNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A local model folder lacks a required file.
    #[error("{dir}: missing `{filename}` (a Hugging Face-layout folder needs it)")]
    LocalFileMissing {
        /// The folder.
        dir: PathBuf,
        /// The missing file.
        filename: String,
    },
    /// A hub dataset id was given without naming the file to read from it.
    #[error("dataset `{repo_id}` is a hub id: name the file inside the repo (data.hub_file)")]
    NoFileNamed {
        /// The hub id.
        repo_id: String,
    },
    /// A dataset repo without Parquet files for the train split, at any revision tried.
    #[error(
        "dataset `{repo_id}`: no Parquet file for split `{split}` at revision {} ({}){}; name the file to read with data.hub_file",
        revisions.join(" or "),
        if seen.is_empty() { "no Parquet files".to_string() } else { format!("Parquet files: {}", seen.join(", ")) },
        offline_note(*offline)
    )]
    NoParquet {
        /// The hub id.
        repo_id: String,
        /// The revisions looked at.
        revisions: Vec<String>,
        /// The split not found (`data.train_split`).
        split: String,
        /// Some of the Parquet files that were there.
        seen: Vec<String>,
        /// Whether only the local cache was looked at (HF_HUB_OFFLINE).
        offline: bool,
    },
    /// A dataset repo whose Parquet files sit in several configs, none of them the default.
    #[error("dataset `{repo_id}` (revision `{revision}`) has Parquet files in several configs ({}): name the file to read with data.hub_file", configs.join(", "))]
    ParquetConfigs {
        /// The hub id.
        repo_id: String,
        /// The revision.
        revision: String,
        /// The config folders.
        configs: Vec<String>,
    },
    /// The Hub answered 404.
    #[error("{target}: no such repo or file on {endpoint} (404); check the id, the revision and the file name")]
    NotFound {
        /// What was asked for.
        target: Target,
        /// The Hub.
        endpoint: String,
    },
    /// The Hub answered 401 or 403.
    #[error("{target}: {endpoint} answered {status}: the repo is gated or private; set HF_TOKEN to a token with access (or log in with `huggingface-cli login`)")]
    Unauthorized {
        /// What was asked for.
        target: Target,
        /// The Hub.
        endpoint: String,
        /// 401 or 403.
        status: u16,
    },
    /// The network is down (or the endpoint wrong) and the file is not cached.
    #[error("{target}: not in the cache and {endpoint} cannot be reached ({message}); connect, set HF_ENDPOINT, or fill the cache and set HF_HUB_OFFLINE=1")]
    Unreachable {
        /// What was asked for.
        target: Target,
        /// The Hub.
        endpoint: String,
        /// The client's error.
        message: String,
    },
    /// Any other download failure.
    #[error("{target}: download from {endpoint} failed: {message}")]
    Download {
        /// What was asked for.
        target: Target,
        /// The Hub.
        endpoint: String,
        /// The client's error.
        message: String,
    },
    /// A downloaded LFS file whose sha256 is not its etag (removed; the next run downloads it again).
    #[error("{path}: sha256 {actual} does not match the Hub's {expected}; the file was removed, run again to download it anew")]
    Checksum {
        /// The blob.
        path: PathBuf,
        /// The etag.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// Reading a cached file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn offline_note(offline: bool) -> &'static str {
    if offline {
        " (HF_HUB_OFFLINE=1: the network is never used)"
    } else {
        ""
    }
}

/// True when `HF_HUB_OFFLINE` is set to a true value (`1`, `true`, `yes`, `on`).
pub fn is_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = non_empty_env("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    // `Cache::default` is `~/.cache/huggingface/hub`; it panics without a home directory.
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("huggingface").join("hub"),
        None => hf_hub::Cache::default().path().clone(),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A local Hugging Face hub cache.
#[derive(Debug, Clone)]
pub struct HubCache {
    cache: hf_hub::Cache,
    offline: bool,
    /// `None`: the environment's Hub, read only when a download is needed.
    downloader: Option<Downloader>,
}

impl HubCache {
    /// The cache named by the environment (see [`cache_dir`], [`is_offline`], [`Downloader::from_env`]).
    pub fn from_env() -> Self {
        Self::new(cache_dir())
    }

    /// A cache at an explicit directory (the `hub` folder itself); offline mode and the Hub from the
    /// environment.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { cache: hf_hub::Cache::new(dir.into()), offline: is_offline(), downloader: None }
    }

    /// Offline (never download) or not, whatever the environment says.
    pub fn offline(mut self, yes: bool) -> Self {
        self.offline = yes;
        self
    }

    /// Download from this Hub instead of the environment's.
    pub fn with_downloader(mut self, downloader: Downloader) -> Self {
        self.downloader = Some(downloader);
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        self.cache.path()
    }

    /// The path of `filename` in `repo_id` at `revision` (a branch/tag name with a `refs/` entry, or
    /// a commit hash with a `snapshots/` folder).
    pub fn resolve_file(
        &self,
        repo_id: &str,
        kind: RepoKind,
        revision: &str,
        filename: &str,
    ) -> Result<PathBuf, HubError> {
        let repo = self.cache.repo(hf_hub::Repo::with_revision(
            repo_id.to_string(),
            kind.hf(),
            revision.to_string(),
        ));
        if let Some(path) = repo.get(filename) {
            return Ok(path);
        }
        // hf-hub does not trim the ref file, nor accept a commit hash as the revision: do both.
        let ref_path = self
            .cache
            .path()
            .join(hf_hub::Repo::with_revision(repo_id.to_string(), kind.hf(), revision.to_string()).folder_name())
            .join("refs")
            .join(revision);
        let commit = std::fs::read_to_string(&ref_path)
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| revision.to_string());
        let candidate = repo.pointer_path(&commit).join(filename);
        if candidate.exists() {
            return Ok(candidate);
        }
        tracing::debug!(repo_id, revision, filename, cache = %self.dir().display(), "not in hub cache");
        if self.offline || filename.is_empty() {
            return Err(HubError::NotCached {
                kind,
                repo_id: repo_id.to_string(),
                revision: revision.to_string(),
                filename: filename.to_string(),
                cache_dir: self.dir().to_path_buf(),
                offline: self.offline,
            });
        }
        self.downloader.clone().unwrap_or_else(Downloader::from_env).download(self.dir(), repo_id, kind, revision, filename)
    }

    /// A folder holding every file of `required_files`: a local folder as is, or the snapshot folder
    /// of a hub model id.
    pub fn resolve_model_dir(
        &self,
        source: &str,
        revision: &str,
        required_files: &[&str],
    ) -> Result<PathBuf, HubError> {
        match Source::parse(source) {
            Source::Local(dir) => {
                if !dir.is_dir() {
                    return Err(HubError::LocalNotFound { path: dir });
                }
                for file in required_files {
                    if !dir.join(file).exists() {
                        return Err(HubError::LocalFileMissing { dir, filename: file.to_string() });
                    }
                }
                Ok(dir)
            }
            Source::Hub(repo_id) => {
                let mut snapshot = None;
                for file in required_files {
                    let path = self.resolve_file(&repo_id, RepoKind::Model, revision, file)?;
                    if snapshot.is_none() {
                        snapshot = path.parent().map(Path::to_path_buf);
                    }
                }
                match snapshot {
                    Some(dir) => Ok(dir),
                    // No file required: the snapshot folder of the revision, if any.
                    None => self.resolve_file(&repo_id, RepoKind::Model, revision, ""),
                }
            }
        }
    }

    /// A data file: a local file as is, or `hub_file` inside the hub dataset repo `source`.
    pub fn resolve_dataset_file(
        &self,
        source: &str,
        revision: &str,
        hub_file: &str,
    ) -> Result<PathBuf, HubError> {
        match Source::parse(source) {
            Source::Local(path) if path.exists() => Ok(path),
            Source::Local(path) => Err(HubError::LocalNotFound { path }),
            Source::Hub(repo_id) if hub_file.is_empty() => Err(HubError::NoFileNamed { repo_id }),
            Source::Hub(repo_id) => self.resolve_file(&repo_id, RepoKind::Dataset, revision, hub_file),
        }
    }
}

/// [`HubCache::resolve_file`] on the cache named by the environment.
pub fn resolve_file(
    repo_id: &str,
    kind: RepoKind,
    revision: &str,
    filename: &str,
) -> Result<PathBuf, HubError> {
    HubCache::from_env().resolve_file(repo_id, kind, revision, filename)
}

/// [`HubCache::resolve_model_dir`] on the cache named by the environment.
pub fn resolve_model_dir(source: &str, revision: &str, required_files: &[&str]) -> Result<PathBuf, HubError> {
    HubCache::from_env().resolve_model_dir(source, revision, required_files)
}

/// [`HubCache::resolve_dataset_file`] on the cache named by the environment.
pub fn resolve_dataset_file(source: &str, revision: &str, hub_file: &str) -> Result<PathBuf, HubError> {
    HubCache::from_env().resolve_dataset_file(source, revision, hub_file)
}

#[cfg(test)]
mod tests;
