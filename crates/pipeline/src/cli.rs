//! The `pipeline` command line (clap) and its dispatch. The binary calls [`Cli::parse`] then [`run`].

use crate::config::{parse_set, Config, ConfigOverride};
use crate::error::PipelineError;
use crate::rates::Rates;
use crate::planning::{first_replicate, lookup_stage};
use crate::runner::{run_stages_with, Force, RunOptions, RunOutputs};
use crate::stages::ALL;
use crate::store::Store;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Federated sparse-then-LoRA fine-tuning (SLoRA) as a staged, cached, resumable pipeline.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, about)]
pub struct Cli {
    /// Config file (default: ./pipeline.toml when present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config key, parsed with the key's type (repeatable): --set partition.alpha=0.5
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_set_arg)]
    pub set: Vec<ConfigOverride>,
    /// Artifacts directory (default: `artifacts/` next to the config file).
    #[arg(long, global = true, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Rebuild the named stage even when up to date (`all`: every stage).
    #[arg(long, global = true)]
    pub force: bool,
    /// Stop with an error when an artifact or round checkpoint does not match its recorded hashes,
    /// instead of warning and rebuilding it.
    #[arg(long, global = true)]
    pub no_rebuild: bool,
    /// Compute threads (default: run.threads).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Replicate every method over N seeds: run.seed, run.seed + 1, … (overrides run.seeds).
    #[arg(long, global = true, value_name = "N")]
    pub seeds: Option<usize>,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process arguments (exits with clap's message and code on bad flags).
    pub fn parse_env() -> Cli {
        Cli::parse()
    }
}

fn parse_set_arg(s: &str) -> Result<ConfigOverride, String> {
    parse_set(s).map_err(|e| e.to_string())
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, tokenize and split the data into client shards.
    Partition,
    /// Learning-rate grid per method, scored on the validation rows (tune.fft / tune.lora / tune.sft).
    Tune,
    /// Federated sparse fine-tuning.
    Stage1,
    /// SVD of the stage-1 update into LoRA factors.
    Decompose,
    /// Federated LoRA from the decomposed init.
    Stage2,
    /// FFT / LoRA / SFT baselines.
    Baselines,
    /// Tables and plots.
    Report,
    /// What the server learns from each method's recorded uploads (federation.record_uploads).
    Audit,
    /// Every stage, in order.
    All,
    /// Each stage: up to date / stale (why) / missing.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run every stage over a grid of config overrides, then render one comparison report.
    Sweep(crate::commands::sweep::SweepArgs),
    /// Run a committed study (configs/studies/NAME.toml) and judge the paper's claims it tests.
    Study(crate::commands::study::StudyArgs),
    /// Check a run's final metrics against a baseline JSON (exit 1 on drift).
    Compare(crate::commands::compare::CompareArgs),
    /// Export a LoRA adapter in peft's format (and, with --merged, the merged transformers model).
    Export(crate::commands::export::ExportArgs),
    /// Time training steps (FFT / LoRA / SFT) and forward-only evaluation; prints figures.
    Bench(crate::commands::bench::BenchArgs),
    /// Show an artifact: a stage name or an artifact folder.
    Inspect {
        /// Stage name or artifact path.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// The stage a stage command runs.
    fn stage(&self) -> Option<&'static str> {
        Some(match self {
            Command::Partition => "partition",
            Command::Tune => "tune",
            Command::Stage1 => "stage1",
            Command::Decompose => "decompose",
            Command::Stage2 => "stage2",
            Command::Baselines => "baselines",
            Command::Report => "report",
            Command::Audit => "audit",
            _ => return None,
        })
    }
}

/// Sets up logging (once per process; later calls are ignored).
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // To stderr, or to the installed progress sink (the Python API's `sys.stderr`) when there is one.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !crate::progress::has_sink();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogTarget)
        .with_target(verbose > 0)
        .with_ansi(ansi)
        .without_time()
        .try_init();
}

/// Loads and validates the config named by the flags.
pub fn load_config(cli: &Cli) -> Result<Config, PipelineError> {
    let mut cfg = Config::load(cli.config.as_deref(), &cli.set)?;
    if let Some(n) = cli.seeds {
        if n == 0 {
            return Err(PipelineError::config("--seeds must be >= 1 (got 0)"));
        }
        cfg.run.seeds = (0..n as u64).map(|i| cfg.run.seed + i).collect();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The artifacts directory: `--artifacts`, else `artifacts/` next to the config file.
pub fn artifacts_dir(cli: &Cli, cfg: &Config) -> PathBuf {
    match &cli.artifacts {
        Some(d) => d.clone(),
        None => cfg.base_dir.join("artifacts"),
    }
}

/// How a command that did not fail ended: the binary's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Done,
    /// A check ran and failed (`compare` found drift): exit 1, apart from errors (exit 2).
    CheckFailed,
}

/// What a command produced, for its caller to show: the binary prints it, the Python API returns it.
#[derive(Debug)]
pub enum Output {
    /// Nothing to show (a stage other than the report, `export`, `bench`, …).
    Nothing,
    /// Stages ran: what they left (`all`, a stage command).
    Run(RunOutputs),
    /// A study or sweep report was written to this folder.
    Report(PathBuf),
    /// `status`: each stage's state.
    Status(Vec<crate::commands::status::StageStatus>),
    /// `inspect`: the artifact as JSON and as text.
    Inspection {
        /// `--json`'s value.
        value: serde_json::Value,
        /// The text form.
        text: String,
    },
}

/// Runs one command and prints what it produced. Nothing is created before the config is valid.
pub fn run(cli: Cli) -> Result<Outcome, PipelineError> {
    let json = match &cli.command {
        Command::Status { json } | Command::Inspect { json, .. } => *json,
        _ => false,
    };
    let (outcome, output) = execute(&cli)?;
    match output {
        Output::Status(lines) if json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "stages": lines }))?),
        Output::Status(lines) => print!("{}", crate::commands::status::render(&lines)),
        Output::Inspection { value, .. } if json => println!("{}", serde_json::to_string_pretty(&value)?),
        Output::Inspection { text, .. } => print!("{text}"),
        Output::Nothing | Output::Run(_) | Output::Report(_) => {}
    }
    Ok(outcome)
}

/// Runs one command and returns what it produced (the Python API's entry point). Nothing is
/// created before the config is valid.
pub fn execute(cli: &Cli) -> Result<(Outcome, Output), PipelineError> {
    init_logging(cli.verbose);
    if let Command::Compare(args) = &cli.command {
        // Needs no config. Drift is not an error (exit 2) but a failed check: exit 1.
        let outcome = if crate::commands::compare::run(args)? { Outcome::Done } else { Outcome::CheckFailed };
        return Ok((outcome, Output::Nothing));
    }
    dispatch(cli).map(|output| (Outcome::Done, output))
}

fn dispatch(cli: &Cli) -> Result<Output, PipelineError> {
    if let Command::Study(args) = &cli.command {
        // The study file names its own base config and seeds.
        if cli.config.is_some() || cli.seeds.is_some() {
            return Err(PipelineError::config("study: --config and --seeds do not apply (the study file sets `config` and run.seeds)"));
        }
        let ctx = crate::commands::study::StudyContext {
            threads: cli.threads,
            base_sets: &cli.set,
            artifacts: cli.artifacts.as_deref(),
            force: cli.force,
            no_rebuild: cli.no_rebuild,
        };
        return crate::commands::study::run(&ctx, args).map(Output::Report);
    }
    let cfg = load_config(cli)?;
    crate::threads::set_threads(cli.threads.unwrap_or(cfg.run.threads).max(1));
    let root = artifacts_dir(cli, &cfg);
    match &cli.command {
        Command::Status { .. } => {
            let store = Store::open_read_only(&root);
            crate::hashing::load_cache(&root);
            let lines = match Rates::look_up(&cfg, &cfg, &store)? {
                Rates::AwaitingTune(keys) => crate::commands::status::status_awaiting_tune(&first_replicate(&cfg), &store, &keys)?,
                rates => crate::commands::status::status(&first_replicate(rates.config()?), &store)?,
            };
            Ok(Output::Status(lines))
        }
        Command::Inspect { target, .. } => {
            let store = Store::open_read_only(&root);
            crate::hashing::load_cache(&root);
            // A stage keyed without learning rates (partition, tune) is found before tune has run.
            let keyed_by_rates = lookup_stage(target).map(|s| s.keyed_by_rates()).unwrap_or(true);
            let cfg = if keyed_by_rates { Rates::look_up(&cfg, &cfg, &store)?.into_config()? } else { cfg };
            let artifact = crate::commands::inspect::resolve_target(&first_replicate(&cfg), &store, target)?;
            let (value, text) = crate::commands::inspect::inspect(&artifact)?;
            Ok(Output::Inspection { value, text })
        }
        Command::Sweep(args) => {
            let ctx = crate::commands::sweep::SweepContext {
                config_path: cli.config.as_deref(),
                base_sets: &cli.set,
                artifacts: cli.artifacts.as_deref(),
                force: cli.force,
                no_rebuild: cli.no_rebuild,
            };
            crate::commands::sweep::run(&ctx, args).map(Output::Report)
        }
        Command::Export(args) => {
            let cfg = first_replicate(&Rates::look_up(&cfg, &cfg, &Store::open_read_only(&root))?.into_config()?);
            crate::commands::export::run(&cfg, &root, args).map(|_| Output::Nothing)
        }
        Command::Bench(args) => crate::commands::bench::run(&cfg, args).map(|()| Output::Nothing),
        Command::All => {
            let force = if cli.force { Force::All } else { Force::Nothing };
            // `tune` runs first when a rate is "tuned" (run_stages_with), not otherwise.
            run_stages_with(&cfg, &root, &RunOptions { force, no_rebuild: cli.no_rebuild }, ALL).map(Output::Run)
        }
        cmd => {
            let stage = cmd.stage().expect("every other command runs a stage");
            let force = if cli.force { Force::Stages(vec![stage.to_string()]) } else { Force::Nothing };
            run_stages_with(&cfg, &root, &RunOptions { force, no_rebuild: cli.no_rebuild }, &[stage]).map(Output::Run)
        }
    }
}
