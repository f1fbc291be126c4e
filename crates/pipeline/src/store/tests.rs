//! Store: commit, lookup, hash mismatch, leftovers, the process lock and pipeline.lock.

use super::*;
use std::collections::BTreeMap;

fn manifest(stage: &str, key: &str) -> Manifest {
    Manifest {
        stage: stage.into(),
        key: key.into(),
        code_version: 1,
        params: serde_json::json!({"a": 1, "data": {"source_sha256": "abc"}}),
        inputs: BTreeMap::new(),
        upstream: BTreeMap::new(),
        files: BTreeMap::new(),
        summary: serde_json::json!({"rows": 3}),
        created_unix_s: 0,
        wall_seconds: 0.0,
        tool_version: "0".into(),
    }
}

fn commit_one(store: &Store, key: &str) -> Artifact {
    let tmp = store.begin("s", key).unwrap();
    std::fs::create_dir_all(tmp.join("sub")).unwrap();
    std::fs::write(tmp.join("out.txt"), b"hello").unwrap();
    std::fs::write(tmp.join("sub/x.bin"), b"xyz").unwrap();
    store.commit(&tmp, manifest("s", key)).unwrap()
}

#[test]
fn commit_hashes_every_file_and_lookup_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = commit_one(&store, "k1");
    assert_eq!(a.dir, dir.path().join("s/k1"));
    assert_eq!(a.manifest.files.len(), 2);
    assert_eq!(a.manifest.files["out.txt"].sha256, crate::hashing::sha256_hex(b"hello"));
    assert_eq!(a.manifest.files["sub/x.bin"].bytes, 3);
    assert!(store.lookup("s", "k1").is_some());
    assert!(store.lookup("s", "k2").is_none());
    // No temp folder is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("s")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("k1")]);
    // A changed output file makes the artifact a miss.
    std::fs::write(a.file("out.txt"), b"HELLO").unwrap();
    assert!(store.lookup("s", "k1").is_none());
    std::fs::write(a.file("out.txt"), b"hello").unwrap();
    assert!(store.lookup("s", "k1").is_some());
    std::fs::remove_file(a.file("sub/x.bin")).unwrap();
    assert!(store.lookup("s", "k1").is_none());
}

#[test]
fn folders_without_a_manifest_are_not_artifacts_and_temps_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        // A killed writer leaves its temp folder, and a folder named like a key but without manifest.
        let tmp = store.begin("s", "k1").unwrap();
        std::fs::write(tmp.join("out.txt"), b"partial").unwrap();
        std::fs::create_dir_all(store.artifact_dir("s", "k1")).unwrap();
        assert!(store.lookup("s", "k1").is_none());
    }
    let store = Store::open(dir.path()).unwrap();
    let left: Vec<String> = std::fs::read_dir(dir.path().join("s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["k1".to_string()], "the .tmp- folder is removed on open");
    // Committing the same key replaces the incomplete folder.
    commit_one(&store, "k1");
    assert!(store.lookup("s", "k1").is_some());
}

#[test]
fn second_open_fails_naming_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert_eq!(err, format!("artifacts dir {} locked by pid {}", dir.path().display(), std::process::id()));
    // Read-only opens need no lock.
    assert!(!Store::open_read_only(dir.path()).is_writable());
}

#[test]
fn pipeline_lock_records_the_current_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.read_lock().stages.is_empty());
    let a = commit_one(&store, "k1");
    store.record(&a).unwrap();
    let b = commit_one(&store, "k2");
    store.record(&b).unwrap();
    let lock = store.read_lock();
    assert_eq!(lock.stages["s"].key, "k2");
    assert_eq!(lock.stages["s"].outs["out.txt"], crate::hashing::sha256_hex(b"hello"));
    assert_eq!(input_hashes(&a.manifest.params)["data.source_sha256"], "abc");
}

#[test]
fn check_names_the_corrupt_file_even_when_size_and_mtime_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = commit_one(&store, "k1");
    assert!(matches!(store.check("s", "k1"), Lookup::Found(_)));
    assert!(matches!(store.check("s", "k2"), Lookup::Absent));
    // Same size, same mtime, one byte changed: the hash cache must not hide it.
    let path = a.file("out.txt");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, b"hellO").unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    match store.check("s", "k1") {
        Lookup::Invalid(e) => {
            let msg = e.to_string();
            assert!(msg.contains("`out.txt` is corrupt: sha256") && msg.contains("k1"), "{msg}");
        }
        other => panic!("expected a corrupt artifact, got {other:?}"),
    }
    std::fs::write(&path, b"hell").unwrap();
    match store.check("s", "k1") {
        Lookup::Invalid(e) => assert!(e.to_string().contains("`out.txt` is corrupt: 4 bytes, its manifest says 5"), "{e}"),
        other => panic!("expected a truncated artifact, got {other:?}"),
    }
}

#[test]
fn leftover_temp_files_of_atomic_writes_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s")).unwrap();
    std::fs::write(dir.path().join(".pipeline.lock.tmp-4242"), b"{\"sche").unwrap();
    std::fs::write(dir.path().join("s/.x.json.tmp-4242"), b"partial").unwrap();
    std::fs::write(dir.path().join("s/keep.txt"), b"not ours to remove").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!dir.path().join(".pipeline.lock.tmp-4242").exists());
    assert!(!dir.path().join("s/.x.json.tmp-4242").exists());
    assert!(dir.path().join("s/keep.txt").exists());
    // A failed first run leaves no empty stage folder.
    std::fs::create_dir_all(store.stage_dir("t")).unwrap();
    store.remove_stage_dir_if_empty("t");
    assert!(!store.stage_dir("t").exists());
    store.remove_stage_dir_if_empty("s");
    assert!(store.stage_dir("s").exists(), "a folder with files stays");
}
