//! What the reliability tests share: a tiny experiment config, running the real binary, reading and
//! verifying artifacts (manifest hashes recomputed here with sha2, independently of the product), and
//! one uninterrupted reference run.

pub use crate::common::shared;
use serde_json::Value;
use sha2::{Digest, Sha256};
use slora_metrics::read_parquet;
use slora_metrics::RoundMetrics;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The stages the tests run, in order.
pub const STAGES: [&str; 4] = ["partition", "stage1", "decompose", "stage2"];

/// The tiny experiment with 120 train / 60 test rows and seed 11 (see `crate::common::tiny_toml`),
/// reports in `reports/`. `extra` is appended (new sections only).
pub fn tiny_toml(extra: &str) -> String {
    crate::common::tiny_toml(11, 120, 60, &format!("[report]\ndir = \"reports\"\n{extra}"))
}

/// A folder holding `tiny.toml`; artifacts go to `<dir>/artifacts`.
pub struct Tiny {
    _tmp: Option<tempfile::TempDir>,
    /// The folder.
    pub dir: PathBuf,
}

/// What a finished run gave.
#[derive(Debug)]
pub struct Out {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error (logs and the error line).
    pub stderr: String,
}

impl Tiny {
    /// A fresh temporary folder with the tiny config.
    pub fn new() -> Tiny {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("tiny.toml"), tiny_toml("")).unwrap();
        Tiny { _tmp: Some(tmp), dir }
    }

    /// The tiny config in `dir` (kept after the test; emptied first).
    pub fn at(dir: PathBuf) -> Tiny {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tiny.toml"), tiny_toml("")).unwrap();
        Tiny { _tmp: None, dir }
    }

    /// `<dir>/artifacts`.
    pub fn artifacts(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    /// `pipeline --config tiny.toml --artifacts <dir>/artifacts` with a clean environment.
    pub fn cmd(&self) -> Command {
        self.cmd_with(&self.dir.join("tiny.toml"), &self.artifacts())
    }

    /// `pipeline --config CONFIG --artifacts ARTIFACTS` run in the folder, with a clean environment.
    pub fn cmd_with(&self, config: &Path, artifacts: &Path) -> Command {
        let mut cmd = crate::common::pipeline_in(&self.dir);
        cmd.arg("--config").arg(config).arg("--artifacts").arg(artifacts);
        cmd
    }

    /// Runs `pipeline ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Runs `pipeline ARGS` with extra environment variables.
    pub fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let mut cmd = self.cmd();
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run pipeline");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `pipeline ARGS` and panics with its stderr unless it succeeds; returns stderr.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "pipeline {args:?} failed:\n{}", out.stderr);
        out.stderr
    }

    /// Starts `pipeline ARGS` in the background (output discarded).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn pipeline")
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))))
}

/// The manifest of an artifact folder.
pub fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Checks every file listed in `dir/manifest.json` against its size and sha256, and that the folder
/// holds no file the manifest does not list.
pub fn verify_artifact(dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("manifest.json")).map_err(|e| format!("{}: no manifest ({e})", dir.display()))?;
    let m: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: bad manifest ({e})", dir.display()))?;
    let files = m["files"].as_object().ok_or_else(|| format!("{}: manifest lists no files", dir.display()))?;
    for (rel, rec) in files {
        let path = dir.join(rel);
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if data.len() as u64 != rec["bytes"].as_u64().unwrap_or(u64::MAX) || hex::encode(Sha256::digest(&data)) != rec["sha256"] {
            return Err(format!("{} does not match its manifest", path.display()));
        }
    }
    let mut listed: Vec<String> = files.keys().cloned().collect();
    listed.push("manifest.json".into());
    listed.sort();
    let mut present = Vec::new();
    walk_files(dir, dir, &mut present);
    present.sort();
    if present != listed {
        return Err(format!("{}: files {present:?} != manifest {listed:?}", dir.display()));
    }
    Ok(())
}

fn walk_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            walk_files(root, &e.path(), out);
        } else {
            out.push(e.path().strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Committed artifact folders (`artifacts/<stage>/<key>`) of every stage.
pub fn committed(artifacts: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for stage in std::fs::read_dir(artifacts).into_iter().flatten().flatten() {
        if !stage.path().is_dir() {
            continue;
        }
        for e in std::fs::read_dir(stage.path()).unwrap().flatten() {
            if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Nothing partial is taken as complete: every committed folder verifies against its manifest, and
/// every stage `pipeline.lock` names points at one. With `tidy`, no temporary output is left either
/// (only `.lock`, `.hash-cache.json`, `pipeline.lock`, stage folders with complete artifacts and,
/// when `allow_work`, resumable `.work-*` checkpoint folders).
pub fn assert_consistent(artifacts: &Path, tidy: bool, allow_work: bool) {
    for dir in committed(artifacts) {
        if let Err(e) = verify_artifact(&dir) {
            panic!("an incomplete artifact is in place: {e}");
        }
    }
    if let Ok(bytes) = std::fs::read(artifacts.join("pipeline.lock")) {
        let lock: Value = serde_json::from_slice(&bytes).expect("pipeline.lock is whole JSON");
        for (stage, entry) in lock["stages"].as_object().unwrap() {
            let dir = artifacts.join(stage).join(entry["key"].as_str().unwrap());
            verify_artifact(&dir).unwrap_or_else(|e| panic!("pipeline.lock names {stage} but: {e}"));
        }
    }
    if !tidy {
        return;
    }
    for e in std::fs::read_dir(artifacts).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            assert!(!name.starts_with('.'), "stray folder {}", e.path().display());
            for c in std::fs::read_dir(e.path()).unwrap().flatten() {
                let n = c.file_name().to_string_lossy().into_owned();
                let ok = !n.starts_with('.') || (allow_work && n.starts_with(".work-") && c.path().is_dir());
                assert!(ok, "left behind: {}", c.path().display());
            }
        } else {
            assert!(
                [".lock", ".hash-cache.json", "pipeline.lock"].contains(&name.as_str()),
                "left behind: {}",
                e.path().display()
            );
        }
    }
}

/// The artifact folder `pipeline.lock` records for `stage`.
pub fn current(artifacts: &Path, stage: &str) -> PathBuf {
    let lock: Value = serde_json::from_slice(&std::fs::read(artifacts.join("pipeline.lock")).unwrap()).unwrap();
    let key = lock["stages"][stage]["key"].as_str().unwrap_or_else(|| panic!("{stage} not in pipeline.lock"));
    artifacts.join(stage).join(key)
}

/// The metrics rows of a federated stage's artifact.
pub fn metrics(artifact: &Path) -> Vec<RoundMetrics> {
    read_parquet(&artifact.join("metrics.parquet")).unwrap()
}

/// Every metrics column but wall_seconds, bit for bit.
pub fn assert_same_metrics(a: &[RoundMetrics], b: &[RoundMetrics], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row counts");
    for (x, y) in a.iter().zip(b) {
        assert!(x.same_results(y), "{what}: metrics differ:\n{x:?}\n{y:?}");
    }
}

/// File -> sha256 of an artifact, from its manifest, without `metrics.parquet` (it holds wall times).
pub fn output_hashes(artifact: &Path) -> BTreeMap<String, String> {
    manifest(artifact)["files"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "metrics.parquet")
        .map(|(k, v)| (k.clone(), v["sha256"].as_str().unwrap().to_string()))
        .collect()
}

/// Asserts that `dir` holds, for every stage of [`STAGES`], the reference's key, the same output bytes
/// and the same metrics (but wall time).
pub fn assert_same_as_reference(artifacts: &Path, what: &str) {
    let reference = reference().join("artifacts");
    for stage in STAGES {
        let (a, r) = (current(artifacts, stage), current(&reference, stage));
        assert_eq!(a.file_name(), r.file_name(), "{what}: {stage} key differs");
        assert_eq!(output_hashes(&a), output_hashes(&r), "{what}: {stage} outputs differ");
        if a.join("metrics.parquet").exists() {
            assert_same_metrics(&metrics(&a), &metrics(&r), &format!("{what}: {stage}"));
        }
    }
}

/// One uninterrupted partition → stage1 → decompose → stage2 run of the tiny config (one thread),
/// kept under cargo's per-target temp folder.
pub fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tiny = Tiny::at(Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability-reference"));
        let started = Instant::now();
        tiny.run_ok(&["stage2"]);
        eprintln!("reference run: {:.1} s", started.elapsed().as_secs_f64());
        assert_consistent(&tiny.artifacts(), true, false);
        tiny.dir
    })
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of the reference's config and artifacts in a fresh temporary folder.
pub fn copy_of_reference() -> Tiny {
    let tiny = Tiny::new();
    copy_tree(&reference().join("artifacts"), &tiny.artifacts());
    tiny
}

/// Flips one byte in the middle of `path`, keeping its size and modification time.
pub fn flip_byte(path: &Path) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), mtime);
}

/// Truncates `path` to half its size.
pub fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::File::options().write(true).open(path).unwrap().set_len(len / 2).unwrap();
}

/// The newest round checkpoint (`round-NNNNN.json`) in `artifacts/<stage>/.work-*/<method>/`.
pub fn newest_checkpoint(artifacts: &Path, stage: &str, method: &str) -> Option<(u32, PathBuf)> {
    let mut best: Option<(u32, PathBuf)> = None;
    for w in std::fs::read_dir(artifacts.join(stage)).into_iter().flatten().flatten() {
        if !w.file_name().to_string_lossy().starts_with(".work-") {
            continue;
        }
        for f in std::fs::read_dir(w.path().join(method)).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(r) = name.strip_prefix("round-").and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
                if best.as_ref().is_none_or(|(b, _)| r > *b) {
                    best = Some((r, f.path()));
                }
            }
        }
    }
    best
}

/// Polls `cond` every 5 ms until it holds (true) or `child` exits (false); panics after 10 minutes.
pub fn wait_until(child: &mut Child, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "condition not reached in 600 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// splitmix64: the tests' seeded random numbers.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
