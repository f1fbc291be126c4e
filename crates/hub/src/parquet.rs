//! A dataset repo's Parquet files, found without being named, and the split each one holds.
//!
//! The layouts the Hub uses:
//! - what `datasets`' `push_to_hub` writes: `data/<split>-00000-of-00002.parquet`, or per config
//!   `<config>/<split>-*.parquet`; hand-made repos often hold `<split>.parquet` or `<split>/*.parquet`;
//! - the `refs/convert/parquet` branch the Hub makes for every dataset, whatever its own format:
//!   `<config>/<split>/0000.parquet` (older: `<config>/<name>-<split>.parquet` and
//!   `<config>/partial-<split>/0000.parquet`).
//!
//! A file belongs to a split when a folder of its path is named after the split (or `partial-<split>`),
//! or when its name is the split, starts with `<split>-`, `<split>_` or `<split>.`, or ends with
//! `-<split>`. Shards of a split are read in name order. A repo with several configs must have one
//! called `default` (or name a file itself, `data.hub_file`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{HubCache, HubError, RepoKind};

/// The branch the Hub fills with a Parquet export of every dataset.
pub const CONVERTED_REVISION: &str = "refs/convert/parquet";

/// Config names taken for the default when a repo has several.
const DEFAULT_CONFIGS: &[&str] = &["default", "data", ""];

/// Where a split's Parquet files were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetSplits {
    /// The revision they are on: the one asked for, or [`CONVERTED_REVISION`].
    pub revision: String,
    /// The config folder they sit in (`""` at the repo root).
    pub config: String,
    /// Paths inside the repo, in read order, for each split that has files.
    pub files: SplitFiles,
}

/// The first of `splits` that `path` belongs to, with the config folder before the part that named it.
fn split_of(path: &str, splits: &[&str]) -> Option<(String, String)> {
    let stem = path.strip_suffix(".parquet")?;
    let parts: Vec<&str> = stem.split('/').collect();
    let (name, folders) = parts.split_last()?;
    for split in splits {
        let partial = format!("partial-{split}");
        if let Some(i) = folders.iter().position(|f| f == split || *f == partial) {
            return Some((split.to_string(), folders[..i].join("/")));
        }
        let named = *name == *split
            || [format!("{split}-"), format!("{split}_"), format!("{split}.")].iter().any(|p| name.starts_with(p.as_str()))
            || name.ends_with(&format!("-{split}"));
        if named {
            return Some((split.to_string(), folders.join("/")));
        }
    }
    None
}

/// Repo paths by split name.
pub type SplitFiles = BTreeMap<String, Vec<String>>;

/// Groups repo `files` into `splits` (see the module docs): the config chosen and its files; `Err`
/// names the configs when there are several and none is the default.
pub fn group_by_split(files: &[String], splits: &[&str]) -> Result<(String, SplitFiles), Vec<String>> {
    let mut by_config: BTreeMap<String, SplitFiles> = BTreeMap::new();
    for file in files {
        if let Some((split, config)) = split_of(file, splits) {
            by_config.entry(config).or_default().entry(split).or_default().push(file.clone());
        }
    }
    let config = match by_config.len() {
        0 => return Ok((String::new(), BTreeMap::new())),
        1 => by_config.keys().next().cloned().expect("one config"),
        _ => match DEFAULT_CONFIGS.iter().find(|c| by_config.contains_key(**c)) {
            Some(c) => c.to_string(),
            None => return Err(by_config.keys().cloned().collect()),
        },
    };
    let mut files = by_config.remove(&config).expect("chosen among the keys");
    for shards in files.values_mut() {
        shards.sort();
    }
    Ok((config, files))
}

/// Every file under `dir`, as `/`-separated paths relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

impl HubCache {
    /// The snapshot folder of `revision` (a branch or tag with a `refs/` entry, or a commit), if cached.
    fn snapshot_dir(&self, repo_id: &str, kind: RepoKind, revision: &str) -> Option<PathBuf> {
        let repo = hf_hub::Repo::with_revision(repo_id.to_string(), kind.hf(), revision.to_string());
        let folder = self.dir().join(repo.folder_name());
        let commit = std::fs::read_to_string(folder.join("refs").join(revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| revision.to_string());
        Some(folder.join("snapshots").join(commit)).filter(|d| d.is_dir())
    }

    /// The files of `repo_id` at `revision`: asked of the Hub's repo-info endpoint (once per process
    /// and Hub), or, offline, the files of the cached snapshot.
    pub fn list_files(&self, repo_id: &str, kind: RepoKind, revision: &str) -> Result<Vec<String>, HubError> {
        if self.offline {
            return Ok(self.snapshot_dir(repo_id, kind, revision).map(|d| files_under(&d)).unwrap_or_default());
        }
        // A run resolves its data files several times (every stage's cache key starts from them).
        static LISTED: Mutex<Option<HashMap<String, Vec<String>>>> = Mutex::new(None);
        let downloader = self.downloader.clone().unwrap_or_else(crate::Downloader::from_env);
        let key = format!("{} {kind} {repo_id} {revision}", downloader.endpoint);
        if let Some(files) = LISTED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).get(&key) {
            return Ok(files.clone());
        }
        let files = downloader.list(repo_id, kind, revision)?;
        LISTED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).insert(key, files.clone());
        Ok(files)
    }

    /// The Parquet files of dataset `repo_id` for `splits` (the train split first), found at
    /// `revision`, or, when that has none and is `main`, on [`CONVERTED_REVISION`]. The files are not
    /// downloaded: resolve each with [`HubCache::resolve_file`] at the returned revision.
    pub fn find_parquet(&self, repo_id: &str, revision: &str, splits: &[&str]) -> Result<ParquetSplits, HubError> {
        let mut revisions = vec![revision.to_string()];
        if revision == "main" {
            revisions.push(CONVERTED_REVISION.to_string());
        }
        let mut seen = BTreeSet::new();
        for rev in &revisions {
            let files = match self.list_files(repo_id, RepoKind::Dataset, rev) {
                Ok(files) => files,
                // The export branch may not exist (yet): say what `main` held instead.
                Err(HubError::NotFound { .. }) if rev != revision => continue,
                Err(e) => return Err(e),
            };
            seen.extend(files.iter().filter(|f| f.ends_with(".parquet")).cloned());
            let (config, by_split) = group_by_split(&files, splits).map_err(|configs| HubError::ParquetConfigs {
                repo_id: repo_id.to_string(),
                revision: rev.clone(),
                configs,
            })?;
            if splits.first().is_some_and(|train| by_split.contains_key(*train)) {
                tracing::info!(
                    "dataset {repo_id}: Parquet files at revision {rev}{}: {}",
                    if config.is_empty() { String::new() } else { format!(", config {config}") },
                    by_split.iter().map(|(s, f)| format!("{s} {} file(s)", f.len())).collect::<Vec<_>>().join(", ")
                );
                return Ok(ParquetSplits { revision: rev.clone(), config, files: by_split });
            }
        }
        Err(HubError::NoParquet {
            repo_id: repo_id.to_string(),
            revisions,
            split: splits.first().map(|s| s.to_string()).unwrap_or_default(),
            seen: seen.into_iter().take(8).collect(),
            offline: self.offline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_hubs_layouts_map_onto_splits() {
        let cases: &[(&[&str], &str, &[(&str, &[&str])])] = &[
            // push_to_hub
            (
                &["README.md", "data/train-00001-of-00002.parquet", "data/train-00000-of-00002.parquet", "data/test-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"],
                "data",
                &[("train", &["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]), ("test", &["data/test-00000-of-00001.parquet"])],
            ),
            // refs/convert/parquet, today and older
            (&["default/train/0000.parquet", "default/train/0001.parquet", "default/test/0000.parquet"], "default", &[("train", &["default/train/0000.parquet", "default/train/0001.parquet"]), ("test", &["default/test/0000.parquet"])]),
            (&["plain_text/imdb-train.parquet", "plain_text/imdb-test.parquet", "plain_text/imdb-unsupervised.parquet"], "plain_text", &[("train", &["plain_text/imdb-train.parquet"]), ("test", &["plain_text/imdb-test.parquet"])]),
            (&["default/partial-train/0000.parquet", "default/test/0000.parquet"], "default", &[("train", &["default/partial-train/0000.parquet"]), ("test", &["default/test/0000.parquet"])]),
            // at the root
            (&["train.parquet", "test.parquet", "attest.parquet", "contest-1.parquet"], "", &[("train", &["train.parquet"]), ("test", &["test.parquet"])]),
        ];
        for (files, config, want) in cases {
            let (got_config, got) = group_by_split(&names(files), &["train", "test"]).unwrap();
            assert_eq!(got_config, *config, "{files:?}");
            let want: BTreeMap<String, Vec<String>> = want.iter().map(|(s, f)| (s.to_string(), names(f))).collect();
            assert_eq!(got, want, "{files:?}");
        }
    }

    #[test]
    fn several_configs_take_the_default_or_are_named_in_the_error() {
        let files = names(&["default/train/0000.parquet", "other/train/0000.parquet", "default/test/0000.parquet"]);
        assert_eq!(group_by_split(&files, &["train", "test"]).unwrap().0, "default");
        let files = names(&["en/train/0000.parquet", "fr/train/0000.parquet"]);
        assert_eq!(group_by_split(&files, &["train", "test"]).unwrap_err(), names(&["en", "fr"]));
        // Other split names are whatever the config says.
        let files = names(&["data/fit-0.parquet", "data/holdout-0.parquet"]);
        let (_, got) = group_by_split(&files, &["fit", "holdout"]).unwrap();
        assert_eq!(got["holdout"], names(&["data/holdout-0.parquet"]));
    }
}
