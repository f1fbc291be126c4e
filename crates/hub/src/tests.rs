//! Cache resolution against a cache built in a temporary directory.

use super::*;
use std::fs;

/// Builds `models--org--name/{refs/main, snapshots/<commit>/<files>}` under `hub`.
fn fake_repo(hub: &Path, folder: &str, commit: &str, files: &[(&str, &str)], ref_text: &str) {
    let repo = hub.join(folder);
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs").join("main"), ref_text).unwrap();
    let snap = repo.join("snapshots").join(commit);
    fs::create_dir_all(&snap).unwrap();
    for (name, body) in files {
        fs::write(snap.join(name), body).unwrap();
    }
}

#[test]
fn hub_ids_and_paths_are_told_apart() {
    assert_eq!(Source::parse("sentence-transformers/all-MiniLM-L6-v2"), Source::Hub("sentence-transformers/all-MiniLM-L6-v2".into()));
    assert_eq!(Source::parse("bert-base-uncased"), Source::Hub("bert-base-uncased".into()));
    for local in ["../x/y", "./m", "/abs/path", "a/b/c", "data.parquet", "x.jsonl.gz", ".hidden"] {
        assert!(matches!(Source::parse(local), Source::Local(_)), "{local}");
    }
}

#[test]
fn resolves_model_files_by_ref_and_by_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    // A trailing newline in the ref file is tolerated.
    fake_repo(tmp.path(), "models--org--tiny", commit, &[("config.json", "{}"), ("tokenizer.json", "t")], &format!("{commit}\n"));
    let cache = HubCache::new(tmp.path());
    let path = cache.resolve_file("org/tiny", RepoKind::Model, "main", "config.json").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "{}");
    let by_commit = cache.resolve_file("org/tiny", RepoKind::Model, commit, "tokenizer.json").unwrap();
    assert_eq!(fs::read_to_string(by_commit).unwrap(), "t");
    let dir = cache.resolve_model_dir("org/tiny", "main", &["config.json", "tokenizer.json"]).unwrap();
    assert_eq!(dir, tmp.path().join("models--org--tiny/snapshots").join(commit));
}

#[test]
fn missing_file_error_names_repo_revision_file_and_cache() {
    let tmp = tempfile::tempdir().unwrap();
    fake_repo(tmp.path(), "models--org--tiny", "abc", &[("config.json", "{}")], "abc");
    let cache = HubCache::new(tmp.path());
    let err = cache.resolve_model_dir("org/tiny", "main", &["config.json", "model.safetensors"]).unwrap_err();
    let msg = err.to_string();
    for needle in ["org/tiny", "`main`", "model.safetensors", &tmp.path().display().to_string(), "huggingface-cli download"] {
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    let err = cache.resolve_file("org/other", RepoKind::Dataset, "v1", "train.parquet").unwrap_err().to_string();
    assert!(err.starts_with("dataset `org/other` (revision `v1`)"), "{err}");
    assert!(err.contains("--repo-type dataset"), "{err}");
}

#[test]
fn datasets_and_local_paths() {
    let tmp = tempfile::tempdir().unwrap();
    fake_repo(tmp.path(), "datasets--org--set", "c0", &[("train.jsonl", "{}")], "c0");
    let cache = HubCache::new(tmp.path());
    let p = cache.resolve_dataset_file("org/set", "main", "train.jsonl").unwrap();
    assert!(p.ends_with("snapshots/c0/train.jsonl"));
    assert!(matches!(cache.resolve_dataset_file("org/set", "main", ""), Err(HubError::NoFileNamed { .. })));
    let local = tmp.path().join("local.csv");
    fs::write(&local, "a,b\n").unwrap();
    assert_eq!(cache.resolve_dataset_file(local.to_str().unwrap(), "main", "").unwrap(), local);
    let missing = tmp.path().join("nope.csv");
    assert!(matches!(cache.resolve_dataset_file(missing.to_str().unwrap(), "main", ""), Err(HubError::LocalNotFound { .. })));
    let err = cache.resolve_model_dir(tmp.path().to_str().unwrap(), "main", &["config.json"]).unwrap_err();
    assert!(matches!(err, HubError::LocalFileMissing { .. }), "{err}");
}
