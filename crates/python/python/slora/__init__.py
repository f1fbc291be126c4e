"""SLoRA, federated sparse-then-LoRA fine-tuning, from Python.

Research API (thin over the Rust pipeline; the same cache, resume and errors as the `pipeline` CLI):

    import slora
    run = slora.run(config="pipeline.toml", set={"partition.alpha": 0.5})
    run.summary                      # summary.json as a dict
    run.metrics().to_pandas()        # every round of every method and seed
    slora.study("heterogeneity", smoke=True).verdicts
    slora.status(config="pipeline.toml")
    slora.inspect("stage2", config="pipeline.toml")

Deployment API (the Flower app in flower/ calls it): `Client`, `Server` and the functions below them.
"""

from ._native import (  # noqa: F401  (re-exported)
    Client,
    PipelineError,
    Server,
    decompose,
    fedavg,
    metrics_table,
    render_report,
    sample_clients,
    state_digest,
    write_metrics,
)
from .api import Run, Study, inspect, run, status, study  # noqa: F401

__all__ = [
    "run",
    "study",
    "status",
    "inspect",
    "Run",
    "Study",
    "PipelineError",
    "Client",
    "Server",
    "decompose",
    "fedavg",
    "metrics_table",
    "render_report",
    "sample_clients",
    "state_digest",
    "write_metrics",
]
