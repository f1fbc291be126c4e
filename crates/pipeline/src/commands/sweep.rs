//! `pipeline sweep`: runs the whole pipeline at several grid points (each an ordinary run with `--set`
//! overrides in the same artifacts directory, so stages whose params did not change are reused from
//! cache), then renders one comparison report: methods x points and the gap to FFT per point.
//!
//! Points come from `--grid KEY=V1,V2,...` (the cartesian product of every axis), `--point
//! 'KEY=V;KEY=V'` (one extra point each), or a sweep file (`--spec`, TOML):
//!
//! ```toml
//! name = "heterogeneity"            # report folder: <report.dir>/<name>/
//! [[point]]
//! label = "α = 1000"                # optional; derived from the point's partition otherwise
//! set = ["partition.scheme=dirichlet", "partition.alpha=1000"]
//! ```
//!
//! Each point's run is named `<run.name>-<point slug>`, so its own report lands beside the comparison.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use slora_report::{build_sweep_report, write_report, SweepPoint, SweepSummary};

use crate::config::{parse_set, Config, ConfigOverride, PartitionScheme};
use crate::error::{IoContext, PipelineError};

/// Arguments of `pipeline sweep`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SweepArgs {
    /// Sweep file (TOML): `name` and `[[point]]` tables with `set = ["KEY=VALUE", ...]` and an optional `label`.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Grid axis (repeatable; points = cartesian product of all axes): --grid partition.alpha=1000,1,0.1
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// One extra point (repeatable): --point 'partition.scheme=pathological;partition.classes_per_client=2'
    #[arg(long, value_name = "KEY=VALUE;...")]
    pub point: Vec<String>,
    /// Comparison report folder name (default: the spec's `name`, else `<run.name>-sweep`).
    #[arg(long)]
    pub name: Option<String>,
}

/// A sweep file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: Option<String>,
    #[serde(default)]
    point: Vec<PointSpec>,
}

/// One point of a sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointSpec {
    label: Option<String>,
    set: Vec<String>,
}

fn sweep_error(message: impl Into<String>) -> PipelineError {
    PipelineError::config(message.into())
}

/// The points of the grid axes (cartesian product, first axis slowest) followed by the extra points.
pub fn expand_points(grid: &[String], extra: &[String]) -> Result<Vec<Vec<ConfigOverride>>, PipelineError> {
    let mut points: Vec<Vec<ConfigOverride>> = Vec::new();
    if !grid.is_empty() {
        points.push(Vec::new());
        for axis in grid {
            let (key, values) = axis
                .split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                .ok_or_else(|| sweep_error(format!("--grid {axis}: expected KEY=V1,V2,..., e.g. partition.alpha=1000,1,0.1")))?;
            let values: Vec<&str> = values.split(',').map(str::trim).collect();
            if values.iter().any(|v| v.is_empty()) {
                return Err(sweep_error(format!("--grid {axis}: empty value in the list")));
            }
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut q = p.clone();
                        q.push(ConfigOverride { key: key.trim().to_string(), value: v.to_string() });
                        q
                    })
                })
                .collect();
        }
    }
    for p in extra {
        let sets = p.split(';').map(str::trim).filter(|s| !s.is_empty()).map(parse_set).collect::<Result<Vec<_>, _>>()?;
        if sets.is_empty() {
            return Err(sweep_error(format!("--point {p:?}: no KEY=VALUE in it")));
        }
        points.push(sets);
    }
    Ok(points)
}

/// A short axis label for a point: the partition's heterogeneity when only `partition.*` keys vary,
/// else the overrides themselves.
pub fn point_label(cfg: &Config, overrides: &[ConfigOverride]) -> String {
    if overrides.iter().all(|o| o.key.starts_with("partition.")) {
        let p = &cfg.partition;
        return match p.scheme {
            PartitionScheme::Iid => "IID".into(),
            PartitionScheme::Dirichlet => format!("Dir α={}", p.alpha),
            PartitionScheme::DirichletClient => format!("client Dir α={}", p.alpha),
            PartitionScheme::Pathological => format!("{} labels/client", p.classes_per_client),
            PartitionScheme::Natural if p.max_clients > 0 => format!("{} (≤{})", p.id_column, p.max_clients),
            PartitionScheme::Natural => p.id_column.clone(),
        };
    }
    overrides
        .iter()
        .map(|o| format!("{}={}", o.key.rsplit('.').next().unwrap_or(&o.key), o.value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A folder-safe slug of a point's overrides, e.g. `alpha-0.1`, `scheme-pathological-classes_per_client-2`.
pub fn point_slug(overrides: &[ConfigOverride]) -> String {
    let raw = overrides
        .iter()
        .map(|o| format!("{}-{}", o.key.rsplit('.').next().unwrap_or(&o.key), o.value))
        .collect::<Vec<_>>()
        .join("-");
    let mut slug = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    slug.trim_matches('-').to_string()
}

/// What `sweep` needs of the global flags.
pub struct SweepContext<'a> {
    /// `--config`.
    pub config_path: Option<&'a Path>,
    /// `--set` (applied to every point, before the point's own overrides).
    pub base_sets: &'a [ConfigOverride],
    /// `--artifacts`.
    pub artifacts: Option<&'a Path>,
    /// `--force`: every distinct stage output of the sweep is rebuilt once (a stage that several
    /// points share, such as their common partition, is rebuilt for the first and reused after).
    pub force: bool,
    /// `--no-rebuild`.
    pub no_rebuild: bool,
}

/// Runs every point and renders the comparison; returns the comparison report folder.
pub fn run(ctx: &SweepContext, args: &SweepArgs) -> Result<PathBuf, PipelineError> {
    let base = Config::load(ctx.config_path, ctx.base_sets)?;
    base.validate()?;
    let mut specs: Vec<(Option<String>, Vec<ConfigOverride>)> = Vec::new();
    let mut name = args.name.clone();
    if let Some(spec_path) = &args.spec {
        let text = std::fs::read_to_string(spec_path).at(spec_path)?;
        let file: SweepFile =
            toml::from_str(&text).map_err(|e| sweep_error(format!("{}: {}", spec_path.display(), e.message())))?;
        name = name.or(file.name);
        for (i, p) in file.point.into_iter().enumerate() {
            let sets = p.set.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?;
            if sets.is_empty() {
                return Err(sweep_error(format!("{}: point {} has an empty `set`", spec_path.display(), i + 1)));
            }
            specs.push((p.label, sets));
        }
    }
    specs.extend(expand_points(&args.grid, &args.point)?.into_iter().map(|p| (None, p)));
    if specs.is_empty() {
        return Err(sweep_error("sweep: no points; give --grid KEY=V1,V2,..., --point 'KEY=V;...' or --spec FILE"));
    }
    let name = name.unwrap_or_else(|| format!("{}-sweep", base.run.name));

    // Validate every point before running any.
    let mut planned = Vec::new();
    for (label, overrides) in specs {
        let mut all = ctx.base_sets.to_vec();
        all.extend(overrides.iter().cloned());
        let run_name = format!("{}-{}", base.run.name, point_slug(&overrides));
        all.push(ConfigOverride { key: "run.name".into(), value: run_name.clone() });
        let cfg = Config::load(ctx.config_path, &all)?;
        cfg.validate()?;
        let label = label.unwrap_or_else(|| point_label(&cfg, &overrides));
        planned.push((label, overrides, run_name, cfg));
    }

    let mut points = Vec::with_capacity(planned.len());
    let mut runner = crate::commands::points::PointRunner::new(ctx.force, ctx.no_rebuild);
    let total = planned.len();
    for (i, (label, overrides, run_name, cfg)) in planned.into_iter().enumerate() {
        tracing::info!("sweep point {}/{total}: {label} ({run_name})", i + 1);
        let root = ctx.artifacts.map(Path::to_path_buf).unwrap_or_else(|| cfg.base_dir.join("artifacts"));
        let (_, summary) = runner.run(&cfg, &root)?;
        points.push(SweepPoint {
            label,
            overrides: overrides.iter().map(|o| (o.key.clone(), o.value.clone())).collect(),
            run_name,
            summary,
        });
    }

    let setup = vec![
        ("Base config".to_string(), base.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "defaults".into())),
        ("Base run".to_string(), base.run.name.clone()),
        ("Points".to_string(), points.iter().map(|p| p.label.clone()).collect::<Vec<_>>().join(" | ")),
    ];
    let report = build_sweep_report(&name, setup, &points).map_err(|e| sweep_error(e.to_string()))?;
    let sweep_json = serde_json::to_string_pretty(&SweepSummary { name: name.clone(), points })?;
    let dir = base.report.dir.join(&name);
    write_report(&dir, &report, &[("sweep.json", sweep_json)]).map_err(|e| sweep_error(e.to_string()))?;
    println!("{}", dir.join("index.html").display());
    Ok(dir)
}
