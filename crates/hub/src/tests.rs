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
    let cache = HubCache::new(tmp.path()).offline(true);
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

mod downloads {
    use super::super::fake_hub::{FakeFile, FakeHub, FakeHubConfig, COMMIT};
    use super::*;

    fn file(repo: &str, name: &str, bytes: &[u8], lfs: bool) -> FakeFile {
        FakeFile::new(repo, name, bytes, lfs)
    }

    fn weights() -> Vec<u8> {
        (0..200_000u32).flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes()).collect()
    }

    fn hub(cfg: FakeHubConfig) -> FakeHub {
        FakeHub::start(cfg)
    }

    fn cache(dir: &Path, hub: &FakeHub, token: Option<&str>) -> HubCache {
        HubCache::new(dir).offline(false).with_downloader(Downloader { endpoint: hub.url.clone(), token: token.map(String::from) })
    }

    #[test]
    fn cold_download_fills_the_python_layout_and_a_warm_cache_makes_no_request() {
        let w = weights();
        let hub = hub(FakeHubConfig {
            files: vec![file("org/tiny", "config.json", b"{\"model_type\": \"bert\"}", false), file("org/tiny", "model.safetensors", &w, true)],
            ..Default::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), &hub, None);
        let dir = c.resolve_model_dir("org/tiny", "main", &["config.json", "model.safetensors"]).unwrap();
        assert_eq!(dir, tmp.path().join("models--org--tiny/snapshots").join(COMMIT));
        assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), w);
        assert_eq!(fs::read_to_string(tmp.path().join("models--org--tiny/refs/main")).unwrap().trim(), COMMIT);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&w));
        assert!(tmp.path().join("models--org--tiny/blobs").join(&sha).is_file(), "blobs/<sha256> as huggingface_hub names LFS blobs");
        let served = hub.count();
        assert!(served > 0);
        // Warm: resolved from the cache, not one request more; by commit hash too.
        c.resolve_model_dir("org/tiny", "main", &["config.json", "model.safetensors"]).unwrap();
        c.resolve_file("org/tiny", RepoKind::Model, COMMIT, "config.json").unwrap();
        assert_eq!(hub.count(), served);
        // No stray partial or lock files are used as data.
        let blobs: Vec<String> =
            fs::read_dir(tmp.path().join("models--org--tiny/blobs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(blobs.iter().all(|b| !b.ends_with(".part")), "{blobs:?}");
    }

    #[test]
    fn a_transfer_cut_mid_file_is_never_used_and_a_rerun_gets_the_right_sha256() {
        let w = weights();
        let hub = hub(FakeHubConfig { files: vec![file("org/tiny", "model.safetensors", &w, true)], cut_once: vec!["model.safetensors".into()], ..Default::default() });
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), &hub, None);
        let err = c.resolve_file("org/tiny", RepoKind::Model, "main", "model.safetensors").unwrap_err();
        assert!(err.to_string().contains("bytes") && err.to_string().contains("run again"), "{err}");
        let snap = tmp.path().join("models--org--tiny/snapshots").join(COMMIT).join("model.safetensors");
        assert!(!snap.exists(), "the half file is not in the cache");
        let p = c.resolve_file("org/tiny", RepoKind::Model, "main", "model.safetensors").unwrap();
        assert_eq!(fs::read(p).unwrap(), w);
    }

    #[test]
    fn a_partial_file_from_a_killed_run_is_resumed() {
        let w = weights();
        let hub = hub(FakeHubConfig { files: vec![file("org/tiny", "model.safetensors", &w, true)], ..Default::default() });
        let tmp = tempfile::tempdir().unwrap();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&w));
        let blobs = tmp.path().join("models--org--tiny/blobs");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(blobs.join(format!("{sha}.part")), &w[..w.len() / 3]).unwrap();
        let p = cache(tmp.path(), &hub, None).resolve_file("org/tiny", RepoKind::Model, "main", "model.safetensors").unwrap();
        assert_eq!(fs::read(p).unwrap(), w);
    }

    #[test]
    fn a_corrupted_transfer_is_removed_and_reported() {
        let hub = hub(FakeHubConfig { files: vec![file("org/tiny", "model.safetensors", &weights(), true)], wrong_sha: vec!["model.safetensors".into()], ..Default::default() });
        let tmp = tempfile::tempdir().unwrap();
        let err = cache(tmp.path(), &hub, None).resolve_file("org/tiny", RepoKind::Model, "main", "model.safetensors").unwrap_err();
        assert!(matches!(err, HubError::Checksum { .. }), "{err}");
        let snap = tmp.path().join("models--org--tiny/snapshots").join(COMMIT).join("model.safetensors");
        assert!(!snap.exists(), "never used half-written or corrupted");
    }

    #[test]
    fn errors_name_the_repo_file_and_revision_and_say_what_to_do() {
        let hub = hub(FakeHubConfig {
            files: vec![file("org/gated", "config.json", b"{}", false), file("datasets/org/set", "data/train.parquet", b"PAR1 fake", true)],
            gated: vec!["org/gated".into()],
            token: "secret".into(),
            ..Default::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), &hub, None);
        let err = c.resolve_file("org/tiny", RepoKind::Model, "v2", "config.json").unwrap_err();
        assert!(matches!(err, HubError::NotFound { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("org/tiny") && msg.contains("`v2`") && msg.contains("config.json") && msg.contains("404"), "{msg}");
        let err = c.resolve_file("org/gated", RepoKind::Model, "main", "config.json").unwrap_err().to_string();
        assert!(err.contains("401") && err.contains("HF_TOKEN") && err.contains("org/gated"), "{err}");
        // With the token the gated file downloads.
        assert!(cache(tmp.path(), &hub, Some("secret")).resolve_file("org/gated", RepoKind::Model, "main", "config.json").is_ok());
        // Dataset repos resolve under `datasets--org--set`.
        let p = c.resolve_dataset_file("org/set", "main", "data/train.parquet").unwrap();
        assert!(p.starts_with(tmp.path().join("datasets--org--set/snapshots")), "{}", p.display());
        // Offline: nothing is requested, and the error says so.
        let before = hub.count();
        let err = cache(tmp.path(), &hub, None).offline(true).resolve_file("org/other", RepoKind::Model, "main", "config.json").unwrap_err().to_string();
        assert!(err.contains("HF_HUB_OFFLINE=1"), "{err}");
        assert_eq!(hub.count(), before);
        // Nothing listening: unreachable, with what to do.
        let down = HubCache::new(tmp.path()).offline(false).with_downloader(Downloader { endpoint: "http://127.0.0.1:9".into(), token: None });
        let err = down.resolve_file("org/other", RepoKind::Model, "main", "config.json").unwrap_err();
        assert!(matches!(err, HubError::Unreachable { .. } | HubError::Download { .. }), "{err}");
        assert!(err.to_string().contains("org/other"), "{err}");
    }

    #[test]
    fn a_datasets_parquet_files_are_found_on_main_or_on_the_converted_branch() {
        let parquet = |n: u8| vec![b'P', b'A', b'R', b'1', n];
        let hub = hub(FakeHubConfig {
            files: vec![
                // Pushed with `push_to_hub`: on main.
                file("datasets/org/pushed", "README.md", b"# card", false),
                file("datasets/org/pushed", "data/train-00001-of-00002.parquet", &parquet(2), true),
                file("datasets/org/pushed", "data/train-00000-of-00002.parquet", &parquet(1), true),
                file("datasets/org/pushed", "data/test-00000-of-00001.parquet", &parquet(3), true),
                // JSON lines on main; the Hub's Parquet export on refs/convert/parquet.
                file("datasets/org/jsonl", "train.jsonl", b"{}", false),
                file("datasets/org/jsonl", "default/train/0000.parquet", &parquet(4), true).on_branch(crate::CONVERTED_REVISION),
                file("datasets/org/jsonl", "default/test/0000.parquet", &parquet(5), true).on_branch(crate::CONVERTED_REVISION),
            ],
            ..Default::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let c = cache(tmp.path(), &hub, None);
        let found = c.find_parquet("org/pushed", "main", &["train", "test"]).unwrap();
        assert_eq!(found.revision, "main");
        assert_eq!(found.files["train"], ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]);
        let found = c.find_parquet("org/jsonl", "main", &["train", "test"]).unwrap();
        assert_eq!(found.revision, crate::CONVERTED_REVISION);
        assert_eq!(found.files["test"], ["default/test/0000.parquet"]);
        let path = c.resolve_file("org/jsonl", RepoKind::Dataset, &found.revision, "default/test/0000.parquet").unwrap();
        assert_eq!(fs::read(&path).unwrap(), parquet(5));
        // The same cache layout as huggingface_hub: refs/refs/convert/parquet holds the branch's commit.
        let refs = tmp.path().join("datasets--org--jsonl/refs/refs/convert/parquet");
        assert_eq!(fs::read_to_string(refs).unwrap().trim(), super::super::fake_hub::commit_of(crate::CONVERTED_REVISION));
        // Offline: listed from the cached snapshot, no request.
        c.resolve_file("org/jsonl", RepoKind::Dataset, &found.revision, "default/train/0000.parquet").unwrap();
        let before = hub.count();
        let offline = cache(tmp.path(), &hub, None).offline(true);
        assert_eq!(offline.find_parquet("org/jsonl", "main", &["train", "test"]).unwrap(), found);
        assert_eq!(hub.count(), before);
        // Nothing for the split: named, with the Parquet files that were there and what to set.
        let err = c.find_parquet("org/pushed", "main", &["fit", "test"]).unwrap_err().to_string();
        assert!(err.contains("org/pushed") && err.contains("`fit`") && err.contains("data/test-00000-of-00001.parquet") && err.contains("data.hub_file"), "{err}");
        let err = offline.find_parquet("org/never", "main", &["train"]).unwrap_err().to_string();
        assert!(err.contains("org/never") && err.contains("HF_HUB_OFFLINE"), "{err}");
    }

    /// Python's `huggingface_hub` reads what this crate downloaded (skipped, saying so, when it is
    /// not installed).
    #[test]
    fn python_huggingface_hub_reads_this_cache() {
        let probe = std::process::Command::new("python3").args(["-c", "import huggingface_hub"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: python3 with huggingface_hub is not installed (pip install huggingface_hub)");
            return;
        }
        let w = weights();
        let hub = hub(FakeHubConfig { files: vec![file("org/tiny", "model.safetensors", &w, true)], ..Default::default() });
        let tmp = tempfile::tempdir().unwrap();
        let ours = cache(tmp.path(), &hub, None).resolve_file("org/tiny", RepoKind::Model, "main", "model.safetensors").unwrap();
        let script = format!(
            "from huggingface_hub import try_to_load_from_cache as t; print(t('org/tiny', 'model.safetensors', cache_dir={:?}))",
            tmp.path().display().to_string()
        );
        let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(std::fs::canonicalize(&theirs).unwrap(), std::fs::canonicalize(&ours).unwrap(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
