"""The research API (`slora.run`, `Run.summary`, `Run.metrics`, `slora.status`, `slora.inspect`)
against the CLI's run of the same config, on the CI config. Run by api.rs, which ran the CLI first
and hands over (environment):

- SLORA_TEST_CONFIG: the config file; SLORA_TEST_SETS: its overrides (JSON list of "key=value");
- SLORA_TEST_WORK: a scratch folder;
- SLORA_CLI_ARTIFACTS / SLORA_CLI_REPORT: the CLI run's artifacts and published report folders;
- SLORA_CLI_BAD_KEY: JSON {"set": [...], "message": ...}: an override the CLI refused, and its line.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import unittest
from pathlib import Path

import pyarrow.parquet as pq
import polars

import slora

CONFIG = os.environ["SLORA_TEST_CONFIG"]
SETS = json.loads(os.environ["SLORA_TEST_SETS"])
WORK = Path(os.environ["SLORA_TEST_WORK"])
CLI_ARTIFACTS = Path(os.environ["SLORA_CLI_ARTIFACTS"])
CLI_REPORT = Path(os.environ["SLORA_CLI_REPORT"])
BAD_KEY = json.loads(os.environ["SLORA_CLI_BAD_KEY"])
#: The metrics columns that hold wall-clock time: the only ones two runs may differ in.
TIMING_COLUMNS = ["wall_seconds", "train_seconds", "server_seconds"]


def without_timings(value):
    """A summary with every `*seconds` entry dropped (the run's only non-deterministic numbers)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def captured(fn):
    """`fn()`'s result and what it wrote to sys.stderr (the run's log and bars go there)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = fn()
    return result, err.getvalue()


def cli_rows():
    """The CLI run's metrics rows: every metrics.parquet of its Stage 1, Stage 2 and baselines."""
    frames = []
    for stage in ("stage1", "stage2", "baselines"):
        for folder in sorted((CLI_ARTIFACTS / stage).iterdir()):
            if not folder.name.startswith(".") and (folder / "metrics.parquet").exists():
                frames.append(pq.read_table(folder / "metrics.parquet").to_pandas())
    import pandas
    return pandas.concat(frames, ignore_index=True)


def comparable(frame):
    return frame.drop(columns=TIMING_COLUMNS).sort_values(["method", "round"]).reset_index(drop=True)


class ResearchApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.artifacts = WORK / "api-artifacts"
        cls.sets = SETS + [f"report.dir={WORK / 'api-reports'}"]
        cls.first, cls.log = captured(lambda: slora.run(config=CONFIG, set=cls.sets, artifacts=cls.artifacts))

    def test_run_reproduces_the_cli_summary(self):
        cli = json.loads((CLI_REPORT / "summary.json").read_text())
        self.assertEqual(without_timings(self.first.summary), without_timings(cli))
        self.assertTrue(self.first.report_path.is_file(), self.first.report_path)
        self.assertEqual(self.first.report_path.name, "index.html")
        self.assertEqual(self.first.seeds, [42])
        self.assertEqual(sorted(self.first.stages), sorted(["partition", "stage1", "decompose", "stage2", "baselines", "report"]))
        self.assertIn("running", self.log, "the first call trains, and its log reaches sys.stderr")

    def test_a_second_call_is_a_cache_hit(self):
        again, log = captured(lambda: slora.run(config=CONFIG, set=self.sets, artifacts=self.artifacts))
        self.assertNotIn(": running (", log)
        for stage in ("partition", "stage1", "decompose", "stage2", "baselines", "report"):
            self.assertIn(f"{stage}: up to date", log)
        self.assertEqual(again.stages, self.first.stages)
        self.assertEqual(again.summary, self.first.summary)

    def test_metrics_are_the_cli_rows(self):
        table = self.first.metrics()
        frame = table.to_pandas()
        self.assertEqual(frame.columns[0], "seed")
        self.assertTrue((frame["seed"] == 42).all())
        ours = comparable(frame.drop(columns=["seed"]))
        theirs = comparable(cli_rows())
        self.assertEqual(list(ours.columns), list(theirs.columns))
        self.assertEqual(len(ours), len(theirs))
        self.assertTrue(ours.equals(theirs), f"\n{ours}\n{theirs}")
        self.assertEqual(polars.from_arrow(table).height, table.num_rows)

    def test_a_bad_key_raises_value_error_with_the_cli_message_and_creates_nothing(self):
        folder = WORK / "bad-key-artifacts"
        with self.assertRaises(ValueError) as caught:
            slora.run(config=CONFIG, set=BAD_KEY["set"], artifacts=folder)
        self.assertEqual(str(caught.exception), BAD_KEY["message"])
        self.assertFalse(folder.exists())
        with self.assertRaises(ValueError) as flags:
            slora.study("no-such-study-anywhere")
        self.assertIn("no-such-study-anywhere", str(flags.exception))

    def test_an_interrupted_run_resumes_to_the_same_result(self):
        artifacts = WORK / "interrupted-artifacts"
        sets = SETS + [f"report.dir={WORK / 'interrupted-reports'}"]
        child = (
            "import slora, sys\n"
            f"slora.run(config={CONFIG!r}, set={sets!r}, artifacts={str(artifacts)!r})\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", child], stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        seen = []
        for line in proc.stderr:
            seen.append(line)
            # Stage 1's first round is checkpointed: Ctrl-C lands in its second round.
            if "slora-stage1 round 1/" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stderr.read()
        proc.wait(timeout=300)
        log = "".join(seen) + rest
        self.assertNotEqual(proc.returncode, 0, log)
        self.assertIn("KeyboardInterrupt", log)
        self.assertNotIn("report: done", log)
        resumed, log = captured(lambda: slora.run(config=CONFIG, set=sets, artifacts=artifacts))
        self.assertIn("resuming after round 1", log)
        self.assertEqual(without_timings(resumed.summary), without_timings(self.first.summary))
        self.assertTrue(comparable(resumed.metrics().to_pandas()).equals(comparable(self.first.metrics().to_pandas())))

    def test_status_and_inspect_mirror_the_cli(self):
        lines = slora.status(config=CONFIG, set=self.sets, artifacts=self.artifacts)
        self.assertEqual([l["stage"] for l in lines], ["partition", "stage1", "decompose", "stage2", "baselines", "report"])
        self.assertTrue(all(l["state"] == "up-to-date" for l in lines), lines)
        fresh = slora.status(config=CONFIG, set=self.sets, artifacts=WORK / "never-run")
        self.assertTrue(all(l["state"] == "missing" for l in fresh))
        self.assertFalse((WORK / "never-run").exists())
        value = slora.inspect("stage2", config=CONFIG, set=self.sets, artifacts=self.artifacts)
        self.assertEqual(Path(value["dir"]), self.first.stages["stage2"][42])
        self.assertEqual([m["method"] for m in value["metrics"]][-1], "slora-stage2")
        text = slora.inspect("stage2", config=CONFIG, set=self.sets, artifacts=self.artifacts, text=True)
        self.assertTrue(text.startswith("stage2 "), text)


if __name__ == "__main__":
    unittest.main()
