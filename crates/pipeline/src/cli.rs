//! The `pipeline` command line (clap) and its dispatch. The binary calls [`Cli::parse`] then [`run`].

use crate::config::{parse_set, Config, ConfigOverride};
use crate::error::PipelineError;
use crate::runner::{Force, Runner};
use crate::stages::ALL;
use crate::store::Store;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 0)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}

/// Sets the compute threads before any compute: `RAYON_NUM_THREADS` (read by candle) and rayon's
/// global pool (used by tokenizers, faer, gemm).
pub fn set_threads(threads: usize) {
    // Single-threaded here: called before any worker thread exists.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().is_err() {
        tracing::debug!("rayon global pool already built; keeping it");
    }
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

/// The config of the first replicate seed (what status, inspect and export show).
fn first_replicate(cfg: &Config) -> Config {
    cfg.for_seed(cfg.run.replicate_seeds()[0])
}

/// `cfg` with its `"tuned"` rates replaced by the choices of its tune artifact in `store`, for
/// commands that only read (status, inspect, export). Errors when that artifact does not exist yet.
pub fn resolve_tuned_from_store(cfg: &Config, store: &Store) -> Result<Config, PipelineError> {
    resolve_tuned_if_tuned(cfg, store)?.ok_or_else(|| {
        let keys: Vec<&str> = cfg.tuned_keys().iter().map(|(k, _)| *k).collect();
        PipelineError::config(format!("{} = \"tuned\", but `pipeline tune` has not run for this config yet", keys.join(", ")))
    })
}

/// Like [`resolve_tuned_from_store`], but `None` when a rate is `"tuned"` and tune has not run.
fn resolve_tuned_if_tuned(cfg: &Config, store: &Store) -> Result<Option<Config>, PipelineError> {
    if cfg.tuned_keys().is_empty() {
        return Ok(Some(cfg.clone()));
    }
    let tune_cfg = cfg.for_seed(cfg.run.replicate_seeds()[0]);
    let planned = crate::runner::plan_stage(&tune_cfg, &crate::stages::tune::Tune)?;
    match store.lookup("tune", &planned.key) {
        Some(artifact) => resolve_with(cfg, &artifact).map(Some),
        None => Ok(None),
    }
}

/// `cfg` with its `"tuned"` rates replaced by the choices of the tune artifact of `tune_cfg` (a study
/// tunes once, at one point, and uses that choice at every point). Errors when it has not run.
pub fn resolve_tuned_at(cfg: &Config, tune_cfg: &Config, store: &Store) -> Result<Config, PipelineError> {
    if cfg.tuned_keys().is_empty() {
        return Ok(cfg.clone());
    }
    let planned = crate::runner::plan_stage(&first_replicate(tune_cfg), &crate::stages::tune::Tune)?;
    let artifact = store
        .lookup("tune", &planned.key)
        .ok_or_else(|| PipelineError::config("the study's tune point has no tune artifact yet".to_string()))?;
    resolve_with(cfg, &artifact)
}

fn resolve_with(cfg: &Config, tune: &crate::store::Artifact) -> Result<Config, PipelineError> {
    use crate::stages::summaries::StageSummary;
    let summary = crate::stages::summaries::TuneSummary::of(tune)?;
    let mut chosen = std::collections::BTreeMap::new();
    for (key, method) in cfg.tuned_keys() {
        let Some(lr) = crate::stages::tune::chosen(&summary, method) else {
            return Err(PipelineError::stage("tune", format!("{key} = \"tuned\", but the tune artifact holds no choice for {method}")));
        };
        tracing::info!("{key} = \"tuned\": {lr:e} (tune's choice for {method})");
        chosen.insert(method, lr);
    }
    let mut resolved = cfg.clone();
    resolved.resolve_tuned(|m| chosen[&m]);
    Ok(resolved)
}

/// The artifacts directory: `--artifacts`, else `artifacts/` next to the config file.
pub fn artifacts_dir(cli: &Cli, cfg: &Config) -> PathBuf {
    match &cli.artifacts {
        Some(d) => d.clone(),
        None => cfg.base_dir.join("artifacts"),
    }
}

/// Runs one command. Nothing is created before the config is valid.
pub fn run(cli: Cli) -> Result<(), PipelineError> {
    init_logging(cli.verbose);
    if let Command::Compare(args) = &cli.command {
        // Needs no config. Drift is not an error (exit 2) but a failed check: exit 1.
        if !crate::commands::compare::run(args)? {
            std::process::exit(1);
        }
        return Ok(());
    }
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
        return crate::commands::study::run(&ctx, args).map(|_| ());
    }
    let cfg = load_config(&cli)?;
    set_threads(cli.threads.unwrap_or(cfg.run.threads).max(1));
    let root = artifacts_dir(&cli, &cfg);
    match &cli.command {
        Command::Status { json } => {
            let store = Store::open_read_only(&root);
            crate::hashing::load_cache(&root);
            let lines = match resolve_tuned_if_tuned(&cfg, &store)? {
                Some(resolved) => crate::status::status(&first_replicate(&resolved), &store)?,
                None => crate::status::status_awaiting_tune(&first_replicate(&cfg), &store)?,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "stages": lines }))?);
            } else {
                print!("{}", crate::status::render(&lines));
            }
            Ok(())
        }
        Command::Inspect { target, json } => {
            let store = Store::open_read_only(&root);
            crate::hashing::load_cache(&root);
            // Partition and tune are keyed without any learning rate.
            let cfg = if matches!(target.as_str(), "partition" | "tune") { cfg } else { resolve_tuned_from_store(&cfg, &store)? };
            let artifact = crate::inspect::resolve_target(&first_replicate(&cfg), &store, target)?;
            let (value, text) = crate::inspect::inspect(&artifact)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{text}");
            }
            Ok(())
        }
        Command::Sweep(args) => {
            let ctx = crate::commands::sweep::SweepContext {
                config_path: cli.config.as_deref(),
                base_sets: &cli.set,
                artifacts: cli.artifacts.as_deref(),
                force: cli.force,
                no_rebuild: cli.no_rebuild,
            };
            crate::commands::sweep::run(&ctx, args).map(|_| ())
        }
        Command::Export(args) => {
            let cfg = first_replicate(&resolve_tuned_from_store(&cfg, &Store::open_read_only(&root))?);
            crate::commands::export::run(&cfg, &root, args).map(|_| ())
        }
        Command::Bench(args) => crate::commands::bench::run(&cfg, args),
        Command::All => {
            let force = if cli.force { Force::All } else { Force::Nothing };
            // `tune` runs first when a rate is "tuned" (run_stages_with), not otherwise.
            run_stages_with(&cfg, &root, &RunOptions { force, no_rebuild: cli.no_rebuild }, ALL)
        }
        cmd => {
            let stage = cmd.stage().expect("every other command runs a stage");
            let force = if cli.force { Force::Stages(vec![stage.to_string()]) } else { Force::Nothing };
            run_stages_with(&cfg, &root, &RunOptions { force, no_rebuild: cli.no_rebuild }, &[stage])
        }
    }
}

/// How [`run_stages_with`] treats existing artifacts.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which stages to rebuild even when up to date.
    pub force: Force,
    /// Stop on a corrupt artifact or checkpoint instead of rebuilding it (`--no-rebuild`).
    pub no_rebuild: bool,
}

/// [`run_stages_with`] without `--no-rebuild`.
pub fn run_stages(cfg: &Config, root: &Path, force: Force, stages: &[&str]) -> Result<(), PipelineError> {
    run_stages_with(cfg, root, &RunOptions { force, no_rebuild: false }, stages)
}

/// Runs `stages` in order under the store lock; stops at the first error (e.g. "not implemented
/// yet" for a planned stage without code). The model-dependent config checks
/// ([`crate::preflight::check`]) run first, before the artifacts directory is created or locked.
pub fn run_stages_with(cfg: &Config, root: &Path, opts: &RunOptions, stages: &[&str]) -> Result<(), PipelineError> {
    crate::preflight::check(cfg)?;
    let store = Store::open(root)?;
    crate::hashing::load_cache(store.root());
    let result = run_in_store(cfg, &store, opts, stages);
    if let Err(e) = crate::hashing::save_cache(store.root()) {
        tracing::warn!("could not save the hash cache: {e}");
    }
    result
}

/// Runs `stages` for every replicate seed: `tune` first (on the first seed) when it is asked for or
/// a rate is `"tuned"`, whose choices then key every later stage; each per-seed stage once per seed;
/// a stage across seeds (the report) once over all of them.
fn run_in_store(cfg: &Config, store: &Store, opts: &RunOptions, stages: &[&str]) -> Result<(), PipelineError> {
    let seeds = cfg.run.replicate_seeds();
    let mut resolved = cfg.clone();
    let mut tuning = None;
    // Only stages that train (or report on) a method need its rate: `partition` alone never tunes.
    let needs_rates = stages.iter().any(|s| !matches!(*s, "partition" | "tune"));
    if stages.contains(&"tune") || (needs_rates && !cfg.tuned_keys().is_empty()) {
        let tune_cfg = cfg.for_seed(seeds[0]);
        let artifact = Runner::new(&tune_cfg, store, opts.force.clone()).no_rebuild(opts.no_rebuild).run("tune")?;
        resolved = resolve_with(cfg, &artifact)?;
        tuning = Some(artifact);
    }
    let seed_cfgs: Vec<Config> = seeds.iter().map(|s| resolved.for_seed(*s)).collect();
    let mut runners: Vec<Runner> = seed_cfgs
        .iter()
        .map(|c| Runner::new(c, store, opts.force.clone()).no_rebuild(opts.no_rebuild).with_tuning(tuning.clone()))
        .collect();
    for stage in stages.iter().filter(|s| **s != "tune") {
        if seeds.len() > 1 {
            tracing::info!("{stage}: {} replicate seeds {seeds:?}", seeds.len());
        }
        let artifact = Runner::run_across(&mut runners, stage)?;
        // The report is published after every run, cached or not (see stages::report::publish).
        if *stage == "report" {
            crate::stages::report::publish(&resolved, &artifact)?;
        }
    }
    Ok(())
}
