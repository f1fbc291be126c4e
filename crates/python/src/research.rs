//! The research API's Rust side (issue 29): a `pipeline` command line parsed and run in this
//! process, and what it produced as JSON. The Python module (`slora.run`, `slora.study`,
//! `slora.status`, `slora.inspect`) builds the command line, so a notebook runs exactly what the CLI
//! runs, with the same cache, resume and one-line errors.

use clap::Parser;
use serde_json::{json, Value};
use slora_pipeline::cli::{Cli, Outcome, Output};
use slora_pipeline::PipelineError;

/// Why a command did not run, sorted the way Python raises it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad flags, a bad key or value, a bad config file: `ValueError`. Nothing was created.
    #[error("{0}")]
    Invalid(String),
    /// Anything else the pipeline reports (a stage failed, the artifacts are locked, …).
    #[error("{0}")]
    Failed(String),
}

/// `pipeline ARGS…` as the binary parses it (`args` without the program name).
pub fn parse_command(args: &[String]) -> Result<Cli, CommandError> {
    let argv = std::iter::once("pipeline".to_string()).chain(args.iter().cloned());
    Cli::try_parse_from(argv).map_err(|e| {
        // clap's message: "error: …" first, then tips and usage on later lines.
        let text = e.to_string();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("bad arguments");
        CommandError::Invalid(first.trim_start_matches("error: ").trim().to_string())
    })
}

/// A pipeline error as Python raises it: the CLI's one line, after its `error: `.
pub fn command_error(e: &PipelineError) -> CommandError {
    let line = slora_pipeline::error::one_line(e);
    match e {
        PipelineError::Config(_) | PipelineError::ConfigFile { .. } => CommandError::Invalid(line),
        _ => CommandError::Failed(line),
    }
}

/// What a command produced, as the JSON the Python module reads (`kind` says which).
pub fn output_json(outcome: Outcome, output: &Output) -> Value {
    let outcome = match outcome {
        Outcome::Done => "done",
        Outcome::CheckFailed => "check-failed",
    };
    let mut value = match output {
        Output::Nothing => json!({ "kind": "nothing" }),
        Output::Run(run) => json!({
            "kind": "run",
            "artifacts": run.artifacts,
            "seeds": run.seeds,
            "stages": run.stages.iter().map(|(stage, seed, dir)| json!({ "stage": stage, "seed": seed, "dir": dir })).collect::<Vec<_>>(),
            "report": run.report,
        }),
        Output::Report(dir) => json!({ "kind": "report", "report": dir }),
        Output::Status(lines) => json!({ "kind": "status", "stages": lines }),
        Output::Inspection { value, text } => json!({ "kind": "inspection", "value": value, "text": text }),
    };
    value["outcome"] = Value::String(outcome.into());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn bad_flags_are_invalid_on_one_line() {
        let err = parse_command(&args("all --no-such-flag")).unwrap_err();
        let CommandError::Invalid(msg) = err else { panic!("{err:?}") };
        assert!(msg.contains("--no-such-flag") && !msg.contains('\n') && !msg.starts_with("error:"), "{msg}");
    }

    #[test]
    fn a_bad_key_is_invalid_with_the_cli_message() {
        let cli = parse_command(&args("--set partition.alphaa=0.5 status")).unwrap();
        let err = slora_pipeline::cli::execute(&cli).unwrap_err();
        let CommandError::Invalid(msg) = command_error(&err) else { panic!("{err:?}") };
        assert_eq!(msg, slora_pipeline::error::one_line(&err));
        assert!(msg.contains("partition.alphaa"), "{msg}");
    }

    #[test]
    fn status_comes_back_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/ci.toml");
        let cli = parse_command(&["--config".into(), config.into(), "--artifacts".into(), artifacts.display().to_string(), "status".into()]).unwrap();
        let (outcome, output) = slora_pipeline::cli::execute(&cli).unwrap();
        let value = output_json(outcome, &output);
        assert_eq!(value["kind"], "status");
        assert_eq!(value["outcome"], "done");
        let stages: Vec<&str> = value["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
        assert_eq!(stages.first(), Some(&"partition"));
        assert!(value["stages"].as_array().unwrap().iter().all(|s| s["state"] == "missing"));
        assert!(!artifacts.exists(), "status creates nothing");
    }
}
