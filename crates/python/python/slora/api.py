"""The research API: `run`, `study`, `status` and `inspect`, each one `pipeline` command run in this
process by the Rust core (`slora._native.execute`).

The command line is built here and parsed by the CLI's own parser, so a call does exactly what the
command does: the same content-hash cache (a second call is a cache hit), the same resume after an
interruption, the same one-line errors (`ValueError` for a bad flag, key, value or config file, with
nothing created; `slora.PipelineError` for a failed stage). Log lines and progress bars are written to
`sys.stderr`, which a notebook shows; Ctrl-C (the kernel's interrupt) stops the run after its current
training step and raises `KeyboardInterrupt`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from . import _native

PathLike = Union[str, "os.PathLike[str]"]
Settings = Union[Mapping[str, Any], Iterable[str], None]

#: The stages `pipeline all` runs, in order.
ALL_STAGES = ("partition", "stage1", "decompose", "stage2", "baselines", "report")
#: The stages whose artifacts hold per-round metrics (`metrics.parquet`).
METRIC_STAGES = ("stage1", "stage2", "baselines")


def _value(value: Any) -> str:
    """A Python value as `--set` reads it: TOML syntax where the key's type needs it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return json.dumps([_plain(v) for v in value])
    raise TypeError(f"set: cannot pass a {type(value).__name__} ({value!r}) as a config value")


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _set_args(settings: Settings) -> list:
    if settings is None:
        return []
    if isinstance(settings, str):
        raise TypeError("set: a dict {key: value} or a list of 'key=value' strings, not one string")
    pairs = [f"{k}={_value(v)}" for k, v in settings.items()] if isinstance(settings, Mapping) else list(settings)
    args = []
    for pair in pairs:
        args += ["--set", pair]
    return args


def _common(config: Optional[PathLike], settings: Settings, seeds: Optional[int], artifacts: Optional[PathLike],
            threads: Optional[int], force: bool) -> list:
    args = []
    if config is not None:
        args += ["--config", os.fspath(config)]
    args += _set_args(settings)
    if seeds is not None:
        args += ["--seeds", str(seeds)]
    if artifacts is not None:
        args += ["--artifacts", os.fspath(artifacts)]
    if threads is not None:
        args += ["--threads", str(threads)]
    if force:
        args.append("--force")
    return args


def _execute(args: Sequence[str]) -> dict:
    return json.loads(_native.execute([str(a) for a in args]))


class Run:
    """What a run left: its artifacts per stage and seed, its report and the metrics behind it."""

    def __init__(self, artifacts: Path, seeds: list, stages: dict, report_dir: Optional[Path]):
        #: The artifacts directory.
        self.artifacts = artifacts
        #: The replicate seeds, in order.
        self.seeds = seeds
        #: Stage name -> {seed: artifact folder} (the report: under the first seed).
        self.stages = stages
        #: The published report folder (`<report.dir>/<run.name>/`), when the report ran.
        self.report_dir = report_dir

    @property
    def report_path(self) -> Path:
        """The report's page (`index.html`; `report.md` and `summary.json` lie beside it)."""
        return self._report_dir() / "index.html"

    @property
    def summary(self) -> dict:
        """`summary.json` of the report: per method, final and last-rounds accuracy with their CIs,
        bytes, seconds and rates."""
        with open(self._report_dir() / "summary.json", encoding="utf-8") as f:
            return json.load(f)

    def metrics(self):
        """Every metrics row of the run (`metrics.parquet` of Stage 1, Stage 2 and the baselines, per
        seed) as a `pyarrow.Table`, with a leading `seed` column. `.to_pandas()` gives a DataFrame;
        `polars.from_arrow(...)` a polars one."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for stage in METRIC_STAGES:
            for seed, folder in sorted(self.stages.get(stage, {}).items()):
                table = pq.read_table(Path(folder) / "metrics.parquet")
                tables.append(table.add_column(0, "seed", pa.array([seed] * table.num_rows, type=pa.int64())))
        if not tables:
            raise ValueError(f"this run has no metrics: none of {', '.join(METRIC_STAGES)} ran")
        return pa.concat_tables(tables)

    def _report_dir(self) -> Path:
        if self.report_dir is None:
            raise ValueError("this run has no report: run the `report` stage (stages=\"all\" does)")
        return self.report_dir

    def __repr__(self) -> str:
        report = f", report={str(self.report_dir)!r}" if self.report_dir else ""
        return f"Run(artifacts={str(self.artifacts)!r}, seeds={self.seeds}, stages={list(self.stages)}{report})"


def run(config: Optional[PathLike] = "pipeline.toml", set: Settings = None, seeds: Optional[int] = None,
        artifacts: Optional[PathLike] = None, stages: Union[str, Sequence[str]] = "all",
        threads: Optional[int] = None, force: bool = False) -> Run:
    """Runs the pipeline's stages, as `pipeline [--config C] [--set K=V …] [--seeds N] [--artifacts D]
    STAGE` does, and returns the `Run`.

    - `set`: config overrides, `{"partition.alpha": 0.5, "baselines.methods": ["fft", "lora"]}` or
      `["partition.alpha=0.5"]`, parsed with each key's type.
    - `seeds`: replicate every method over that many seeds (`--seeds`).
    - `stages`: `"all"`, one stage name, or a list of them run in order.
    - `artifacts`: the artifacts directory (default: `artifacts/` next to the config file).
    """
    common = _common(config, set, seeds, artifacts, threads, force)
    names = ["all"] if stages == "all" else [stages] if isinstance(stages, str) else list(stages)
    if not names:
        raise ValueError("stages: name at least one stage, or \"all\"")
    found: dict = {}
    seeds_out: list = []
    root = None
    report = None
    for name in names:
        out = _execute(common + [name])
        root = Path(out["artifacts"])
        seeds_out = out["seeds"]
        for entry in out["stages"]:
            found.setdefault(entry["stage"], {})[entry["seed"]] = Path(entry["dir"])
        if out.get("report"):
            report = Path(out["report"])
    return Run(root, seeds_out, found, report)


class Study:
    """A study's report: its settings, points (each with its run's summary) and verdicts."""

    def __init__(self, report_dir: Path):
        #: The study's report folder (`study.json`, `report.md`, figures).
        self.report_dir = report_dir
        with open(report_dir / "study.json", encoding="utf-8") as f:
            data = json.load(f)
        #: The study file's settings (claims, margin, the point a claim is judged at, …).
        self.settings = data["settings"]
        #: One entry per point: label, axis value, overrides and the point's `summary`.
        self.points = data["points"]
        #: One entry per claim: `claim`, `verdict` and the `evidence` behind it.
        self.verdicts = data["verdicts"]

    @property
    def report_path(self) -> Path:
        """The study's report (`report.md`)."""
        return self.report_dir / "report.md"

    def table(self):
        """One row per point and method: the point's label and axis value, the method, its final and
        last-rounds accuracy with their 95 % CIs over seeds, and the seeds — a `pyarrow.Table`."""
        import pyarrow as pa

        rows = []
        for point in self.points:
            for method, m in sorted(point["summary"]["methods"].items()):
                rows.append({
                    "point": point["label"],
                    "value": point.get("value"),
                    "method": method,
                    "accuracy": m.get("accuracy"),
                    "accuracy_ci95": m.get("accuracy_ci95"),
                    "last_k_accuracy": m.get("last_k_accuracy"),
                    "last_k_accuracy_ci95": m.get("last_k_accuracy_ci95"),
                    "seeds": m.get("seeds"),
                })
        schema = pa.schema([("point", pa.string()), ("value", pa.float64()), ("method", pa.string()),
                            ("accuracy", pa.float64()), ("accuracy_ci95", pa.float64()),
                            ("last_k_accuracy", pa.float64()), ("last_k_accuracy_ci95", pa.float64()),
                            ("seeds", pa.int64())])
        return pa.Table.from_pylist(rows, schema=schema)

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{v['claim']}: {v['verdict']}" for v in self.verdicts)
        return f"Study({self.settings.get('name')!r}, {len(self.points)} points; {verdicts})"


def study(name: PathLike, smoke: bool = False, set: Settings = None, artifacts: Optional[PathLike] = None,
          threads: Optional[int] = None, force: bool = False) -> Study:
    """Runs a committed study (`configs/studies/NAME.toml`, or a study file's path) as
    `pipeline study NAME [--smoke]` does, and returns its `Study`: verdicts and tables."""
    args = _common(None, set, None, artifacts, threads, force) + ["study", os.fspath(name)]
    if smoke:
        args.append("--smoke")
    return Study(Path(_execute(args)["report"]))


def status(config: Optional[PathLike] = "pipeline.toml", set: Settings = None, seeds: Optional[int] = None,
           artifacts: Optional[PathLike] = None) -> list:
    """Each stage's state for this config, as `pipeline status --json`: a list of
    `{"stage", "state" ("up-to-date" | "stale" | "missing"), "key", "reasons"}`."""
    return _execute(_common(config, set, seeds, artifacts, None, False) + ["status"])["stages"]


def inspect(target: PathLike, config: Optional[PathLike] = "pipeline.toml", set: Settings = None,
            seeds: Optional[int] = None, artifacts: Optional[PathLike] = None, text: bool = False):
    """An artifact (a stage name, or an artifact folder), as `pipeline inspect TARGET --json` shows
    it: a dict, or with `text=True` the text `pipeline inspect TARGET` prints."""
    out = _execute(_common(config, set, seeds, artifacts, None, False) + ["inspect", os.fspath(target)])
    return out["text"] if text else out["value"]
