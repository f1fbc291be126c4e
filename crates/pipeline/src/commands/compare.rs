//! `pipeline compare RUN BASELINE`: checks a run's final metrics against a committed baseline with
//! per-metric tolerances, prints every check (drifted ones marked) and tells the caller whether it
//! drifted. `--bless` writes the baseline from the run instead (keeping the baseline's tolerances).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use slora_report::{compare, Baseline, Summary};

use crate::error::{IoContext, PipelineError};
use crate::stages::report::SUMMARY_FILE;
use crate::store::{PipelineLock, PIPELINE_LOCK_FILE};

/// Arguments of `pipeline compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The run: an artifacts directory (its current report), a report folder, or a summary.json.
    pub run: PathBuf,
    /// The baseline JSON (e.g. tests/baselines/ci.json).
    pub baseline: PathBuf,
    /// Write BASELINE from RUN (tolerances kept from an existing BASELINE, else the defaults).
    #[arg(long)]
    pub bless: bool,
}

fn compare_error(message: String) -> PipelineError {
    PipelineError::stage("compare", message)
}

/// The `summary.json` a RUN argument names.
pub fn resolve_summary(run: &Path) -> Result<PathBuf, PipelineError> {
    if run.is_file() {
        return Ok(run.to_path_buf());
    }
    if run.join(SUMMARY_FILE).is_file() {
        return Ok(run.join(SUMMARY_FILE));
    }
    let lock_path = run.join(PIPELINE_LOCK_FILE);
    if lock_path.is_file() {
        let text = std::fs::read_to_string(&lock_path).at(&lock_path)?;
        let lock: PipelineLock = serde_json::from_str(&text)
            .map_err(|e| compare_error(format!("{}: not a pipeline lock: {e}", lock_path.display())))?;
        let entry = lock
            .stages
            .get("report")
            .ok_or_else(|| compare_error(format!("{}: no report stage recorded; run `pipeline report` first", lock_path.display())))?;
        let path = run.join("report").join(&entry.key).join(SUMMARY_FILE);
        if path.is_file() {
            return Ok(path);
        }
        return Err(compare_error(format!("{}: missing (the lock names report {})", path.display(), entry.key)));
    }
    Err(compare_error(format!(
        "{}: neither a summary.json, a report folder nor an artifacts directory with {PIPELINE_LOCK_FILE}",
        run.display()
    )))
}

/// Runs the comparison; `Ok(true)` when every check passed (or the baseline was blessed).
pub fn run(args: &CompareArgs) -> Result<bool, PipelineError> {
    let summary_path = resolve_summary(&args.run)?;
    let summary = Summary::read(&summary_path).map_err(|e| compare_error(e.to_string()))?;
    if args.bless {
        let mut baseline = Baseline::from_summary(summary);
        if args.baseline.is_file() {
            let old = Baseline::read(&args.baseline).map_err(|e| compare_error(e.to_string()))?;
            baseline.tolerances = old.tolerances;
        }
        crate::fsutil::write_atomic(&args.baseline, format!("{}\n", baseline.to_json()).as_bytes())?;
        println!("wrote {} from {}", args.baseline.display(), summary_path.display());
        return Ok(true);
    }
    let baseline = Baseline::read(&args.baseline).map_err(|e| compare_error(e.to_string()))?;
    let result = compare(&summary, &baseline);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "run:      {} ({})", summary_path.display(), summary.run);
    let _ = writeln!(stdout, "baseline: {} ({})", args.baseline.display(), baseline.summary.run);
    let _ = write!(stdout, "{}", result.render_text());
    let _ = stdout.flush();
    Ok(!result.has_drift())
}
