//! What the Python tests share: the repository root, a Python with tests/requirements.txt, and the
//! `slora` package as the workspace build made it (no second build).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// Runs `cmd`; its stdout, or an error with both streams.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The tests' Python ([`python`]) and the folder to put on its `PYTHONPATH` for `import slora`
/// ([`package`], made under `dir`).
pub fn python_and_package(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (deps, target) = target_dirs()?;
    let module = package(&deps, &dir.join("module"))?;
    Ok((python(&target)?, module))
}

/// The test binary's folder (target/debug/deps) and the target folder.
fn target_dirs() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().expect("the test binary's folder").to_path_buf();
    let target = deps.parent().and_then(Path::parent).expect("the target folder").to_path_buf();
    Ok((deps, target))
}

/// A Python with tests/requirements.txt: `SLORA_TEST_PYTHON` when set, else a venv in the target
/// folder, made (pip, once) for this content of the requirements file.
fn python(target: &Path) -> anyhow::Result<PathBuf> {
    // Two tests of one binary may ask at once: one makes the venv, the other waits for it.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(p) = std::env::var("SLORA_TEST_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let requirements = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/requirements.txt");
    let text = std::fs::read_to_string(&requirements)?;
    let digest: u64 = text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let venv = target.join("python-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(format!("installed-{digest:016x}"));
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements))?;
        std::fs::write(&stamp, "")?;
    }
    Ok(python)
}

/// The `slora` package in `dir` (made): the Python sources of crates/python/python/slora and the
/// library this very build made (target/debug/deps/libslora.so) as its `_native` module — the
/// layout maturin gives the wheel. Returns the folder to put on `PYTHONPATH`.
fn package(deps: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let library = deps.join("libslora.so");
    anyhow::ensure!(library.exists(), "{} is missing: build crates/python with its `python` feature (on by default)", library.display());
    let package = dir.join("slora");
    std::fs::create_dir_all(&package)?;
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/slora");
    for entry in std::fs::read_dir(&sources)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, package.join(path.file_name().expect("a file name")))?;
        }
    }
    std::fs::copy(&library, package.join("_native.abi3.so"))?;
    Ok(dir.to_path_buf())
}
