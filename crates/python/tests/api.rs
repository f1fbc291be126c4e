//! Issue 29's research API: `slora.run`, `Run.summary`, `Run.metrics()`, `slora.status`,
//! `slora.inspect` (tests/test_api.py) against the CLI's run of the same config, and the example
//! notebook (examples/heterogeneity.ipynb) executed headless with nbclient, both on the CI config.
//!
//! The CLI's run here is `slora_pipeline::cli::run` on the parsed command line: the whole of the
//! `pipeline` binary but its allocator and exit code. The `slora` package is the library this very
//! build made (see support::package); Python is the tests' venv (support::python). Needs ../shared.

use std::path::Path;
use std::process::Command;

use clap::Parser;
use slora_pipeline::cli::Cli;

mod support;
use support::{root, run};

/// The CI config's overrides the tests run with: SLoRA's two stages and one baseline keep the runs
/// short while covering every stage.
const SETS: [&str; 1] = ["baselines.methods=[\"lora\"]"];

fn cli(args: &[String]) -> Cli {
    Cli::parse_from(std::iter::once("pipeline".to_string()).chain(args.iter().cloned()))
}

fn args_with_sets(config: &Path, sets: &[String], artifacts: &Path, command: &str) -> Vec<String> {
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    args.extend(["--artifacts".to_string(), artifacts.display().to_string(), command.to_string()]);
    args
}

/// A notebook text field: one string, or a list of lines.
fn joined(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(lines) => lines.iter().filter_map(|l| l.as_str()).collect(),
        _ => String::new(),
    }
}

#[test]
fn the_python_api_runs_what_the_cli_runs() -> anyhow::Result<()> {
    let root = root();
    let work = tempfile::tempdir()?;
    let (python, module) = support::python_and_package(work.path())?;
    let config = root.join("configs/ci.toml");
    let sets: Vec<String> = SETS.iter().map(|s| s.to_string()).collect();

    // The CLI's run: `pipeline --config configs/ci.toml --set … --artifacts cli-artifacts all`.
    let cli_artifacts = work.path().join("cli-artifacts");
    let cli_reports = work.path().join("cli-reports");
    let mut cli_sets = sets.clone();
    cli_sets.push(format!("report.dir={}", cli_reports.display()));
    slora_pipeline::cli::run(cli(&args_with_sets(&config, &cli_sets, &cli_artifacts, "all")))?;

    // A key the CLI refuses, and the line it prints after `error: `.
    let bad_set = vec!["partition.alphaa=0.5".to_string()];
    let bad = slora_pipeline::cli::run(cli(&args_with_sets(&config, &bad_set, &work.path().join("bad"), "all"))).unwrap_err();
    let bad_key = serde_json::json!({ "set": bad_set, "message": slora_pipeline::error::one_line(&bad) });

    let out = Command::new(&python)
        .args(["-m", "unittest", "-v", "test_api"])
        .current_dir(root.join("crates/python/tests"))
        .env("PYTHONPATH", &module)
        .env("SLORA_TEST_CONFIG", &config)
        .env("SLORA_TEST_SETS", serde_json::to_string(&sets)?)
        .env("SLORA_TEST_WORK", work.path())
        .env("SLORA_CLI_ARTIFACTS", &cli_artifacts)
        .env("SLORA_CLI_REPORT", cli_reports.join("ci"))
        .env("SLORA_CLI_BAD_KEY", bad_key.to_string())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(out.status.success(), "tests/test_api.py failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

#[test]
fn the_example_notebook_executes_on_the_ci_config() -> anyhow::Result<()> {
    let root = root();
    let work = tempfile::tempdir()?;
    let (python, module) = support::python_and_package(work.path())?;
    let executed = work.path().join("executed.ipynb");
    // The notebook reads its settings from the environment when set (its first cell), so CI runs it
    // on the CI config, in a scratch artifacts folder.
    run(Command::new(&python)
        .arg(root.join("crates/python/tests/run_notebook.py"))
        .arg(root.join("examples/heterogeneity.ipynb"))
        .arg(&executed)
        .current_dir(root.join("examples"))
        .env("PYTHONPATH", &module)
        .env("SLORA_NOTEBOOK_CONFIG", root.join("configs/ci.toml"))
        .env("SLORA_NOTEBOOK_ARTIFACTS", work.path().join("artifacts"))
        .env("SLORA_NOTEBOOK_REPORTS", work.path().join("reports")))?;
    let notebook: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&executed)?)?;
    let outputs: Vec<&serde_json::Value> = notebook["cells"].as_array().expect("cells").iter().filter_map(|c| c["outputs"].as_array()).flatten().collect();
    assert!(outputs.iter().all(|o| o["output_type"] != "error"), "a cell raised: {outputs:?}");
    assert!(outputs.iter().any(|o| o["data"]["image/png"].is_string()), "the accuracy-against-α plot is drawn");
    let text: String = outputs.iter().map(|o| joined(&o["text"]) + &joined(&o["data"]["text/plain"])).collect();
    assert!(text.contains("gap-grows"), "the verdicts are read: {text}");
    Ok(())
}
