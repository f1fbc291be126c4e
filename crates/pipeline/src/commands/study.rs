//! `pipeline study NAME`: a committed experiment that tests the paper's claims (see
//! `slora_report::study` for the verdict rules).
//!
//! A study file (`configs/studies/NAME.toml`, or any path) names a base config and a list of
//! points, each an ordinary replicated run with `--set` overrides in one artifacts directory, so
//! stages that points share (a partition, a Stage 1) are computed once, and a killed study resumes
//! from its cache. Learning rates set to `"tuned"` are chosen once, at `tune_point`, and that choice
//! is used at every point. `--smoke` applies the file's `[smoke] set` last: the same code paths at
//! toy size, for CI.
//!
//! ```toml
//! name = "heterogeneity"
//! title = "PEFT's gap to FFT as label skew grows"
//! config = "../../pipeline.toml"        # relative to this file
//! axis = "heterogeneity"                # heterogeneity | density | single
//! claims = ["gap-grows", "slora-closes-gap", "time-cut"]
//! margin_pp = 1.0                       # smallest difference that counts as an effect
//! flat_slope_pp = 0.5                   # FFT's last-k slope below this = flat
//! claim_point = "2 labels/client"       # where claims 2 and 3 are judged (default: last regular point)
//! gap_contrast = "slope"                # claim 1: `ends` (last minus first regular point) or `slope`
//! statistic = "last-k-full"             # judged per seed: `final` (default) or the mean of the last
//!                                       # federation.full_test_last_k rounds, each on every test row
//! floor_pp = 3.0                        # claim 1 leaves out points where FFT is this close to chance
//! drift_pairs = [["E=1", "E=5"]]        # drift-opens-gap: [less, more local work] by label
//! rank_pairs = [["r 8", "r 4/8/16"]]     # flexlora-beats-zero-padding, mixed-ranks-cost: [uniform, mixed]
//! tune_point = "Dir α=0.1"              # where "tuned" rates are chosen (default: the claim point)
//! set = ["run.seeds=[1,2,3]"]           # every point
//! [[point]]
//! label = "IID"
//! set = ["partition.scheme=iid"]
//! extreme = false                       # true: shown, left out of the verdicts
//! value = 0.01                          # numeric axis value (density), optional
//! [smoke]
//! set = ["data.max_train=160"]
//! ```
//!
//! The study report goes to `<report.dir>/studies/<name>/` (`<name>-smoke` with `--smoke`): verdicts,
//! tables and figures, plus `study.json`. Each point's own report goes to
//! `<report.dir>/studies/runs/<name>/<point>/`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use slora_report::study::{
    build_study_report, judge, Claim, GapContrast, PlanRow, PointCurves, Statistic, StudyAxis, StudyPoint, StudySettings, StudySummary,
};
use slora_report::write_report;

use crate::config::{parse_set, Config, ConfigOverride};
use crate::error::{IoContext, PipelineError};
use crate::commands::plan::{Plan, PlanPoint};
use crate::planning::{lookup_stage, plan_stage};
use crate::runner::Force;
use crate::stages::summaries::{StageSummary, TuneSummary};
use crate::store::Store;

/// Where `pipeline study NAME` looks for `NAME.toml`.
pub const STUDY_DIR: &str = "configs/studies";

/// Arguments of `pipeline study`.
#[derive(Debug, Clone, clap::Args)]
pub struct StudyArgs {
    /// A study name (`configs/studies/NAME.toml`) or a study file path.
    pub study: String,
    /// Run at toy size: the study file's `[smoke] set` overrides go last (for CI).
    #[arg(long)]
    pub smoke: bool,
    /// Print the cost plan (local steps, rounds, evaluation rows and estimated time per point and
    /// method, from step times measured on this machine) and run nothing but the partitions.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: the plan as JSON.
    #[arg(long, requires = "plan")]
    pub json: bool,
}

/// A study file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    name: String,
    title: String,
    config: PathBuf,
    axis: StudyAxis,
    claims: Vec<Claim>,
    #[serde(default = "default_margin")]
    margin_pp: f64,
    #[serde(default = "default_flat")]
    flat_slope_pp: f64,
    claim_point: Option<String>,
    tune_point: Option<String>,
    /// `drift-opens-gap`: `[[less local work, more local work], …]` by point label.
    #[serde(default)]
    drift_pairs: Vec<(String, String)>,
    /// `flexlora-beats-zero-padding`, `mixed-ranks-cost`: `[[uniform rank, mixed ranks], …]` by label.
    #[serde(default)]
    rank_pairs: Vec<(String, String)>,
    /// `slora-leaks-less`, `slora-loses-less-under-dp`: `[[no DP, DP], …]` by label.
    #[serde(default)]
    privacy_pairs: Vec<(String, String)>,
    /// Claim 1's contrast: `ends` or `slope`.
    #[serde(default)]
    gap_contrast: GapContrast,
    /// The per-seed accuracy judged: `final` or `last-k-full`.
    #[serde(default)]
    statistic: Statistic,
    /// Claim 1 leaves out points where FFT is within this many pp of chance.
    #[serde(default = "default_floor")]
    floor_pp: f64,
    #[serde(default)]
    set: Vec<String>,
    point: Vec<PointSpec>,
    smoke: Option<SmokeSpec>,
}

fn default_margin() -> f64 {
    1.0
}

fn default_flat() -> f64 {
    0.5
}

fn default_floor() -> f64 {
    3.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointSpec {
    label: String,
    set: Vec<String>,
    #[serde(default)]
    extreme: bool,
    value: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmokeSpec {
    set: Vec<String>,
}

/// What `study` needs of the global flags.
pub struct StudyContext<'a> {
    /// `--threads` (default: the base config's run.threads).
    pub threads: Option<usize>,
    /// `--set` (after the study's own `set`, before the point's).
    pub base_sets: &'a [ConfigOverride],
    /// `--artifacts` (default: the base config's `artifacts/`).
    pub artifacts: Option<&'a Path>,
    /// `--force`: every stage of every point is rebuilt once.
    pub force: bool,
    /// `--no-rebuild`.
    pub no_rebuild: bool,
}

fn study_error(message: impl Into<String>) -> PipelineError {
    PipelineError::config(message.into())
}

/// The study file for `study`: a path to a file, else `configs/studies/<study>.toml`.
pub fn study_path(study: &str) -> PathBuf {
    let p = PathBuf::from(study);
    if p.extension().is_some_and(|e| e == "toml") || p.is_file() {
        p
    } else {
        Path::new(STUDY_DIR).join(format!("{study}.toml"))
    }
}

fn read_study(path: &Path) -> Result<StudyFile, PipelineError> {
    if !path.is_file() {
        return Err(study_error(format!("study file {} not found (studies live in {STUDY_DIR}/NAME.toml)", path.display())));
    }
    let text = std::fs::read_to_string(path).at(path)?;
    let file: StudyFile = toml::from_str(&text).map_err(|e| study_error(format!("{}: {}", path.display(), e.message())))?;
    let bad = |what: String| Err(study_error(format!("{}: {what}", path.display())));
    if file.point.is_empty() {
        return bad("no [[point]]".into());
    }
    let mut labels = std::collections::BTreeSet::new();
    for p in &file.point {
        if !labels.insert(p.label.as_str()) {
            return bad(format!("point label {:?} appears twice", p.label));
        }
    }
    for (key, label) in [("claim_point", &file.claim_point), ("tune_point", &file.tune_point)] {
        if let Some(l) = label.as_deref().filter(|l| !labels.contains(l)) {
            return bad(format!("{key} = {l:?} is not a point label"));
        }
    }
    for (key, pairs) in [("drift_pairs", &file.drift_pairs), ("rank_pairs", &file.rank_pairs), ("privacy_pairs", &file.privacy_pairs)] {
        if let Some(l) = pairs.iter().flat_map(|(a, b)| [a, b]).find(|l| !labels.contains(l.as_str())) {
            return bad(format!("{key}: {l:?} is not a point label"));
        }
    }
    if !(file.margin_pp >= 0.0) {
        return bad(format!("margin_pp must be >= 0 (got {})", file.margin_pp));
    }
    Ok(file)
}

/// A folder-safe slug of a label: `Dir α=0.1` -> `dir-0.1`.
pub fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.to_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' };
        if !(c == '-' && (out.ends_with('-') || out.is_empty())) {
            out.push(c);
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Keys whose relative paths in a study file are relative to that file (not to the working directory).
const PATH_KEYS: [&str; 3] = ["data.source", "data.test_source", "model.source"];

fn parse_sets(sets: &[String], path: &Path) -> Result<Vec<ConfigOverride>, PipelineError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sets.iter()
        .map(|s| {
            let mut o = parse_set(s).map_err(|e| study_error(format!("{}: {e}", path.display())))?;
            // A relative path that exists beside the study file means that file; anything else (a hub
            // id) stays as written.
            if PATH_KEYS.contains(&o.key.as_str()) && Path::new(&o.value).is_relative() && dir.join(&o.value).exists() {
                o.value = dir.join(&o.value).display().to_string();
            }
            Ok(o)
        })
        .collect()
}

/// Runs every point of the study (resuming from the cache), judges the claims and writes the study
/// report; returns the report folder.
pub fn run(ctx: &StudyContext, args: &StudyArgs) -> Result<PathBuf, PipelineError> {
    let path = study_path(&args.study);
    let file = read_study(&path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let config_path = dir.join(&file.config);
    let name = if args.smoke { format!("{}-smoke", file.name) } else { file.name.clone() };
    let smoke_sets = match (&file.smoke, args.smoke) {
        (Some(s), true) => parse_sets(&s.set, &path)?,
        (None, true) => return Err(study_error(format!("{}: --smoke needs a [smoke] table", path.display()))),
        (_, false) => Vec::new(),
    };
    let study_sets = parse_sets(&file.set, &path)?;
    let sets_for = |point: &[ConfigOverride]| -> Vec<ConfigOverride> {
        let mut all = study_sets.clone();
        all.extend(ctx.base_sets.iter().cloned());
        all.extend(point.iter().cloned());
        all.extend(smoke_sets.iter().cloned());
        all
    };
    let base = Config::load(Some(&config_path), &sets_for(&[]))?;
    base.validate()?;
    crate::threads::set_threads(ctx.threads.unwrap_or(base.run.threads).max(1));
    let report_root = base.report.dir.join("studies");
    let root = ctx.artifacts.map(Path::to_path_buf).unwrap_or_else(|| base.base_dir.join("artifacts"));

    // Every point's config, validated before anything runs.
    let mut planned: Vec<(PointSpec, Vec<ConfigOverride>, Config)> = Vec::new();
    for p in &file.point {
        let own = parse_sets(&p.set, &path)?;
        let mut all = sets_for(&own);
        all.push(ConfigOverride { key: "run.name".into(), value: slug(&p.label) });
        all.push(ConfigOverride { key: "report.dir".into(), value: report_root.join("runs").join(&name).display().to_string() });
        let cfg = Config::load(Some(&config_path), &all)?;
        cfg.validate()?;
        planned.push((p.clone(), own, cfg));
    }
    let regular_last = file.point.iter().rev().find(|p| !p.extreme).map(|p| p.label.clone());
    let claim_label = file.claim_point.clone().or(regular_last);
    let tune_label = file.tune_point.clone().or_else(|| claim_label.clone());

    let opts = |force: Force| crate::runner::RunOptions { force, no_rebuild: ctx.no_rebuild };
    // The cost plan: partitions run (cheap, cached), step times measured once per machine.
    let tune_point = planned.iter().any(|(_, _, c)| crate::rates::needs_tune(c)).then(|| {
        let label = tune_label.as_deref().unwrap_or(&file.point[0].label);
        planned.iter().find(|(p, _, _)| p.label == label).expect("validated label").2.clone()
    });
    let (plan, chance) = {
        let plan_points: Vec<PlanPoint> = planned.iter().map(|(p, _, c)| PlanPoint { label: &p.label, config: c }).collect();
        let plan = crate::commands::plan::plan(&plan_points, tune_point.as_ref(), &root, &opts(Force::Nothing))?;
        let chance = plan_chance(&plan_points, &root);
        (plan, chance)
    };
    if args.plan {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", crate::commands::plan::render(&plan, &name));
        }
        return Ok(root);
    }
    // "tuned" rates: chosen once, at the tune point, and used everywhere.
    let mut setup = vec![
        ("Study file".to_string(), path.display().to_string()),
        ("Base config".to_string(), config_path.display().to_string()),
        ("Seeds".to_string(), format!("{:?}", base.run.replicate_seeds())),
    ];
    if planned.iter().any(|(_, _, c)| crate::rates::needs_tune(c)) {
        let label = tune_label.as_deref().unwrap_or(&file.point[0].label);
        let (_, _, tune_cfg) = planned.iter().find(|(p, _, _)| p.label == label).expect("validated label");
        let tune_cfg = tune_cfg.clone();
        let force = if ctx.force { Force::Stages(vec!["tune".into()]) } else { Force::Nothing };
        crate::runner::run_stages_with(&tune_cfg, &root, &opts(force), &["tune"])?;
        let store = Store::open(&root)?;
        // Every point's rates come from the one tune artifact of the tune point.
        let mut tune = None;
        for (_, _, cfg) in &mut planned {
            let rates = crate::rates::Rates::look_up(cfg, &tune_cfg, &store)?;
            tune = tune.or_else(|| rates.tune().cloned());
            *cfg = rates.into_config()?;
        }
        let grids = tune
            .and_then(|a| TuneSummary::of(&a).ok())
            .map(|s| tune_choices(&s))
            .unwrap_or_default();
        setup.push((
            "Learning rates".to_string(),
            format!("tuned once, at point {label:?}, on its validation rows (seed {}): {grids}", tune_cfg.run.replicate_seeds()[0]),
        ));
    } else {
        let b = &base.baselines;
        setup.push((
            "Learning rates".to_string(),
            format!(
                "from the base config: FFT {}, LoRA {}, SFT {}, Stage 1 {}, Stage 2 {} (head {})",
                b.fft_lr, b.lora_lr, b.sft_lr, base.stage1.lr, base.stage2.lr, base.optim.head_lr
            ),
        ));
    }

    let mut points = Vec::with_capacity(planned.len());
    let mut curves = Vec::new();
    let mut runner = crate::commands::points::PointRunner::new(ctx.force, ctx.no_rebuild);
    let total = planned.len();
    for (i, (spec, own, cfg)) in planned.into_iter().enumerate() {
        tracing::info!("study {name}: point {}/{total}: {}", i + 1, spec.label);
        let (_, summary) = runner.run(&cfg, &root)?;
        // The point's own report (just published) has its mean learning curves with bands.
        let curve = crate::stages::report::published_dir(&cfg).join("figures/accuracy_vs_round.svg");
        if let Ok(svg) = std::fs::read_to_string(&curve) {
            curves.push(PointCurves { id: format!("accuracy_vs_round-{}", slug(&spec.label)), label: spec.label.clone(), svg });
        }
        points.push(StudyPoint {
            label: spec.label.clone(),
            value: spec.value,
            extreme: spec.extreme,
            overrides: own.iter().map(|o| (o.key.clone(), o.value.clone())).collect(),
            run_name: cfg.run.name.clone(),
            summary,
            statistic: file.statistic,
        });
    }

    let settings = StudySettings {
        name: name.clone(),
        title: if args.smoke { format!("{} Smoke run at toy size: the numbers mean nothing.", file.title) } else { file.title.clone() },
        axis: file.axis,
        claims: file.claims.clone(),
        margin_pp: file.margin_pp,
        claim_point: claim_label,
        flat_slope_pp: file.flat_slope_pp,
        command: format!("pipeline study {}{}", args.study, if args.smoke { " --smoke" } else { "" }),
        drift_pairs: file.drift_pairs.clone(),
        rank_pairs: file.rank_pairs.clone(),
        privacy_pairs: file.privacy_pairs.clone(),
        gap_contrast: file.gap_contrast,
        chance,
        floor_pp: file.floor_pp,
    };
    attach_benchmarked_seconds(&plan, &mut points);
    let plan_rows = plan_rows(&plan, &points);
    let verdicts = judge(&settings, &points);
    for v in &verdicts {
        tracing::info!("study {name}: {} -> {} ({})", v.claim.statement(), v.verdict, v.evidence);
    }
    let report = build_study_report(&settings, setup, &points, &verdicts, &curves, &plan_rows).map_err(|e| study_error(e.to_string()))?;
    let json = serde_json::to_string_pretty(&StudySummary { settings, points, verdicts, plan: plan_rows })?;
    let out = report_root.join(&name);
    write_report(&out, &report, &[("study.json", json)]).map_err(|e| study_error(e.to_string()))?;
    println!("{}", out.join("report.md").display());
    Ok(out)
}

/// Chance accuracy (1 / labels) of the first point's partition.
fn plan_chance(points: &[PlanPoint], root: &Path) -> Option<f64> {
    let cfg = crate::planning::first_replicate(points.first()?.config);
    let key = plan_stage(&cfg, lookup_stage("partition").ok()?.as_ref()).ok()?.key;
    let artifact = Store::open_read_only(root).lookup("partition", &key)?;
    let labels = crate::stages::summaries::PartitionSummary::of(&artifact).ok()?.num_labels;
    (labels > 0).then(|| 1.0 / labels as f64)
}

/// Every time-to-target hit's benchmarked client compute: the plan's local steps of that seed's run
/// (SLoRA: both stages) up to the hit's round × the measured step time. A hit whose run the plan
/// does not hold keeps `None`.
fn attach_benchmarked_seconds(plan: &Plan, points: &mut [StudyPoint]) {
    for point in points.iter_mut() {
        for target in &mut point.summary.time_to_target {
            let runs = |seed: u64| -> Vec<&crate::commands::plan::PlannedRun> {
                plan.runs
                    .iter()
                    .filter(|r| r.point == point.label && r.seed == seed)
                    .filter(|r| r.method == target.method || (target.method == "slora" && r.method.starts_with("slora-")))
                    .collect()
            };
            for (seed, hit) in &mut target.per_seed {
                if let Some(hit) = hit.as_mut() {
                    let runs = runs(*seed);
                    hit.benchmark_seconds = (!runs.is_empty()).then(|| runs.iter().map(|r| r.benchmarked_seconds_to(hit.round)).sum());
                }
            }
            if let Some(hit) = target.hit.as_mut() {
                hit.benchmark_seconds = slora_report::targets::mean_if_all(target.per_seed.iter().filter_map(|(_, h)| h.as_ref()).map(|h| h.benchmark_seconds));
            }
        }
    }
}

/// The plan's estimate per point and method (SLoRA's two stages as one, seeds summed), next to the
/// wall time each method's runs recorded.
fn plan_rows(plan: &Plan, points: &[StudyPoint]) -> Vec<PlanRow> {
    let mut rows: Vec<PlanRow> = Vec::new();
    // A run shared with an earlier point is that point's (estimated and measured there once).
    for r in plan.runs.iter().filter(|r| !r.shared) {
        let method = if r.method.starts_with("slora-") { "slora".to_string() } else if r.point == "tune" { "tune".to_string() } else { r.method.clone() };
        match rows.iter_mut().find(|x| x.point == r.point && x.method == method) {
            Some(x) => x.estimated_seconds += r.seconds,
            None => rows.push(PlanRow { point: r.point.clone(), method, seeds: 0, estimated_seconds: r.seconds, measured_seconds: None }),
        }
    }
    for row in &mut rows {
        let seeds: std::collections::BTreeSet<u64> =
            plan.runs.iter().filter(|r| r.point == row.point && (r.method == row.method || r.method.starts_with(&format!("{}-", row.method)))).map(|r| r.seed).collect();
        row.seeds = seeds.len();
        if let Some(p) = points.iter().find(|p| p.label == row.point) {
            let walls: Vec<f64> = p.summary.per_seed.values().filter_map(|m| m.get(&row.method).map(|f| f.wall_seconds)).collect();
            row.measured_seconds = (!walls.is_empty()).then(|| walls.iter().sum());
        }
    }
    rows
}

/// `fft 1e-4 of [3e-5, 1e-4, 3e-4]; …` from a tune summary, marking a choice at the grid's edge.
pub fn tune_choices(summary: &TuneSummary) -> String {
    summary
        .methods
        .iter()
        .map(|(method, m)| {
            let grid: Vec<f64> = m.points.iter().map(|p| p.lr).collect();
            let edge = match (grid.first(), grid.last()) {
                (Some(lo), Some(hi)) if grid.len() > 1 && (m.chosen == *lo || m.chosen == *hi) => " (at the grid's edge)",
                _ => "",
            };
            let grid = grid.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(", ");
            format!("{method} {:e} of [{grid}]{edge}", m.chosen)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_choices_mark_the_grid_edge() {
        let s: TuneSummary = serde_json::from_value(serde_json::json!({ "methods": {
            "fft": { "chosen": 1e-4, "points": [{ "lr": 3e-5 }, { "lr": 1e-4 }, { "lr": 3e-4 }] },
            "lora": { "chosen": 1e-3, "points": [{ "lr": 1e-4 }, { "lr": 1e-3 }] },
        }}))
        .unwrap();
        assert_eq!(tune_choices(&s), "fft 1e-4 of [3e-5, 1e-4, 3e-4]; lora 1e-3 of [1e-4, 1e-3] (at the grid's edge)");
    }

    #[test]
    fn slugs_and_paths() {
        assert_eq!(slug("Dir α=0.1"), "dir-0.1");
        assert_eq!(slug("2 labels/client"), "2-labels-client");
        assert_eq!(study_path("heterogeneity"), Path::new("configs/studies/heterogeneity.toml"));
        assert_eq!(study_path("x/y.toml"), Path::new("x/y.toml"));
    }

    #[test]
    fn bad_study_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| {
            let p = dir.path().join("s.toml");
            std::fs::write(&p, text).unwrap();
            read_study(&p).map(|_| ()).unwrap_err().to_string()
        };
        let head = "name = \"s\"\ntitle = \"t\"\nconfig = \"c.toml\"\naxis = \"single\"\nclaims = [\"time-cut\"]\n";
        assert!(write(&format!("{head}point = []\n")).contains("no [[point]]"));
        let two = format!("{head}[[point]]\nlabel = \"a\"\nset = []\n[[point]]\nlabel = \"a\"\nset = []\n");
        assert!(write(&two).contains("\"a\" appears twice"));
        let claim = format!("{head}claim_point = \"b\"\n[[point]]\nlabel = \"a\"\nset = []\n");
        assert!(write(&claim).contains("claim_point = \"b\" is not a point label"));
        let typo = format!("{head}[[point]]\nlabel = \"a\"\nset = []\nextrme = true\n");
        assert!(write(&typo).contains("extrme"));
        assert!(read_study(&dir.path().join("missing.toml")).unwrap_err().to_string().contains("not found"));
    }
}
