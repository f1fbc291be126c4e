"""A SecAgg+ round of the ServerApp (slora_flower/secagg.py) against an in-memory Grid whose nodes run
Flower's own `secaggplus_mod` around a scripted trainer, and a scripted server in place of
`slora.Server`: the aggregate the server is handed is the plain weighted mean to the bound 2kc/Σqᵢ,
Σqᵢ is L·Σnᵢ, nothing the ServerApp's code receives carries an array, and a coordinate outside the
clipping range is counted. Run by crates/python/tests/flower.rs with the other unit tests.
"""

import sys
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from slora_flower import secagg  # noqa: E402

TaskIdentity.run_id = 1
TaskIdentity.node_id = 1
TaskIdentity.task_id = 1


class Nodes:
    def __init__(self, pids: dict):
        self.pid_of = pids
        self.has_switch = set()

    def node_of(self, pid):
        return next((n for n, p in self.pid_of.items() if p == pid), None)


class Grid:
    """Every node runs `secaggplus_mod` around `fit` with its own persistent Context."""

    def __init__(self, nodes: dict, fit):
        self.contexts = {n: Context(1, n, {}, RecordDict(), {}) for n in nodes}
        self.fit = fit

    def send_and_receive(self, messages, *, timeout=None):
        # Each node gets its own copy, as over the wire (the mod edits what it receives).
        replies = []
        for m in messages:
            received = Message(recorddict_from_proto(recorddict_to_proto(m.content)), m.metadata.dst_node_id, m.metadata.message_type)
            reply = secaggplus_mod(received, self.contexts[m.metadata.dst_node_id], self._train)
            replies.append(Message(recorddict_from_proto(recorddict_to_proto(reply.content)), reply_to=received))
        return replies

    def _train(self, msg: Message, context: Context) -> Message:
        return secagg.client_reply(msg, lambda download, config: self.fit(context.node_id, download, config))


class Server:
    """What `secagg.run_round` calls of `slora.Server`; keeps what `accept_aggregate` is handed."""

    def __init__(self, download: dict, rows: list):
        self.download, self._rows, self.accepted = download, rows, None

    def rows(self):
        return self._rows

    def global_state(self):
        return self.download

    def update_norm(self, pid, state):
        return float(np.sqrt(sum(((state[n].astype(np.float64) - self.download[n]) ** 2).sum() for n in state)))

    def set_max_update_norm(self, bound):
        self.bound = bound

    def accept_aggregate(self, fields, mean, total_weight):
        self.accepted = (fields, mean, total_weight)


SETTINGS = {
    "round-timeout": 10.0,
    "max-update-norm-factor": 10.0,
    "secagg-clipping-range": 0.125,
    "secagg-quantization-range": 1 << 22,
    "secagg-num-shares": 1.0,
    "secagg-threshold": 0.67,
    "secagg-audit-dir": "",
}


def run(deltas: dict, rows: list):
    rng = np.random.default_rng(1)
    download = {"a.weight": rng.normal(size=(4, 6)).astype(np.float32), "b.bias": rng.normal(size=7).astype(np.float32)}
    node_of_pid = {pid: 100 + pid for pid in deltas}

    def fit(node, state, config):
        pid = node - 100
        upload = {n: (state[n] + deltas[pid][n]).astype(np.float32) for n in state}
        return upload, [(0.5, rows[pid])], rows[pid], 0.1, {"client": pid, "round": int(config["round"]), "base-digest": "d"}

    nodes = Nodes({node: pid for pid, node in node_of_pid.items()})
    server = Server(download, rows)
    grid = Grid(nodes.pid_of, fit)
    plan = (1, 1, sorted(deltas), 0)
    ledger = secagg.run_round(server, "lora", grid, nodes, SETTINGS, Context(1, 0, {}, RecordDict(), {}), plan, None, {"bound": None})
    uploads = {pid: {n: (download[n] + deltas[pid][n]).astype(np.float32) for n in download} for pid in deltas}
    return server, ledger, download, uploads


class SecureRound(unittest.TestCase):
    def test_the_aggregate_is_the_plain_mean_to_the_bound_and_no_reply_carries_an_array(self):
        rng = np.random.default_rng(2)
        rows = [31, 17, 52]
        deltas = {pid: {"a.weight": rng.normal(scale=0.02, size=(4, 6)), "b.bias": rng.normal(scale=0.02, size=7)} for pid in range(3)}
        server, ledger, download, uploads = run(deltas, rows)
        self.assertEqual(ledger["refused"], [])
        fields, mean, total = server.accepted
        self.assertEqual([f[0] for f in fields], [0, 1, 2])
        self.assertEqual([f[3] for f in fields], rows)
        s = ledger["secagg"]
        scale = s["weight_scale"]
        self.assertEqual(scale, 1 << 16)  # 2^16 · 52 <= 2^22 < 2^17 · 52
        self.assertEqual(total, sum(rows), "Σqᵢ / L: the rows the aggregate was weighted by")
        self.assertEqual(s["total_weight"], scale * sum(rows))
        bound = secagg.error_bound(3, SETTINGS["secagg-clipping-range"], s["total_weight"])
        for n in download:
            plain = sum(rows[p] * uploads[p][n].astype(np.float64) for p in range(3)) / sum(rows)
            allowed = bound + np.spacing(np.abs(plain).astype(np.float32)).astype(np.float64) + 1e-12
            err = np.abs(mean[n].astype(np.float64) - plain.astype(np.float32).astype(np.float64))
            self.assertTrue((err <= allowed).all(), f"{n}: {err.max()} > {bound}")
        self.assertEqual(s["clipped"], {"0": 0, "1": 0, "2": 0})
        self.assertEqual(s["individual_parameters_seen"], 0)
        stages = [x["stage"] for x in s["received"]]
        self.assertEqual(stages, ["setup"] * 3 + ["share_keys"] * 3 + ["collect_masked_vectors"] * 3 + ["unmask"] * 3)
        self.assertTrue(all(x["arrays"] == [] for x in s["received"]), s["received"])
        self.assertTrue(all(x["masked"] == ["int64"] for x in s["received"] if x["stage"] == "collect_masked_vectors"))

    def test_a_coordinate_beyond_the_clipping_range_is_counted(self):
        rows = [10, 10]
        deltas = {pid: {"a.weight": np.zeros((4, 6)), "b.bias": np.zeros(7)} for pid in range(2)}
        deltas[1]["b.bias"][3] = 1.0  # weighted by 10/52·…, still far above c = 0.125
        server, ledger, _, _ = run(deltas, rows)
        self.assertEqual(ledger["secagg"]["clipped"], {"0": 0, "1": 1})

    def test_fewer_than_two_clients_are_refused_without_a_round(self):
        server, ledger, _, _ = run({0: {"a.weight": np.zeros((4, 6)), "b.bias": np.zeros(7)}}, [10])
        self.assertIsNone(server.accepted)
        self.assertIn("at least 2 clients", ledger["refused"][0]["reason"])


if __name__ == "__main__":
    unittest.main()
