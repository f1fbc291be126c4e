"""Secure aggregation (run-config `secagg`): Flower's SecAgg+ around the rounds of `slora.Server`.

Why this design. In flwr 1.42, SecAgg+ exists only on the legacy path: `SecAggPlusWorkflow`
(`flwr.server.workflow`) needs a `LegacyContext` whose legacy `Strategy` supplies `configure_fit`
and takes `aggregate_fit`, and `secaggplus_mod` (`flwr.client.mod`) parses the ClientApp's reply as a
fit result. The Message-API strategies (`flwr.serverapp.strategy`) have no secure aggregation, so a
`Strategy` subclass around `slora.Server` would bring Flower's DP wrappers, which the deployment does
not use (its DP is the project's, in `slora.Server`, so in-process and deployed runs agree), and
no SecAgg+. So the ServerApp keeps its own round loop and runs the legacy workflow once per round:
`slora.Server` still samples, checks, averages, evaluates and checkpoints; the workflow's strategy
(`_Round`) hands the workflow the round's sampled nodes and takes back the unmasked aggregate.

What the ServerApp receives per round: public keys, encrypted key shares, each client's masked
integer vector (its update quantised and masked modulo 2³², uniform on its own), the shares that
unmask the sum, and each reply's fields in the clear (round, digest, rows, step losses, seconds).
The workflow sums the masked vectors and removes the masks: only the weighted mean of the updates
is ever unmasked. `Recorder` logs every reply the ServerApp's code gets back, so a run can show it.

The arithmetic (flwr 1.42.0's `secaggplus_mod`, `quantization.py`, `secaggplus_workflow.py`): client i
sends δᵢ = upload − download in float64; the mod weighs it by dqᵢ = qᵢ/T with
qᵢ = round(nᵢ/max_weight·T), clips each coordinate of dqᵢ·δᵢ to ±c, maps it to
pᵢ = (·+c)·T/(2c) and rounds stochastically to Qᵢ ∈ {⌈pᵢ⌉−1, ⌈pᵢ⌉} (|Qᵢ−pᵢ| < 1), and prepends qᵢ.
The workflow unmasks ΣQᵢ and Σqᵢ and returns A = (ΣQᵢ·2c/T − k·c)·T/Σqᵢ over the k clients. With
max_weight = T/L (L the largest power of two with L·max nᵢ ≤ T), qᵢ = L·nᵢ exactly, so without clipping
A = Σnᵢδᵢ/Σnᵢ + E with |E| < 2kc/Σqᵢ per coordinate: the plain FedAvg mean update, to the quantisation.
The ServerApp adds A to the download in float64 and hands the float32 result to the server.
"""

import json
import os
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat import LegacyContext
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow import constant as workflow_constant
from flwr.server.workflow.secure_aggregation import secaggplus_workflow

from .wire import message_bytes

MODULUS = 1 << 32  # SecAggPlusWorkflow's default modulus_range


def weight_scale(quantization_range: int, max_rows: int) -> int:
    """L: the largest power of two with L·max_rows ≤ T, so that qᵢ = L·nᵢ exactly (max_weight = T/L)."""
    if max_rows < 1 or quantization_range < max_rows:
        raise ValueError(f"run-config secagg-quantization-range = {quantization_range}: must be at least the largest client's rows ({max_rows})")
    return 1 << ((quantization_range // max_rows).bit_length() - 1)


def client_weight(rows: int, max_weight: float, quantization_range: int) -> float:
    """dqᵢ: the factor `secaggplus_mod` multiplies a client's vector by (its own expression)."""
    return round(rows / max_weight * quantization_range) / quantization_range


def error_bound(clients: int, clipping_range: float, total_weight: int) -> float:
    """The per-coordinate bound on |A − plain mean update|: 2kc/Σqᵢ (see the module docs)."""
    return 2 * clients * clipping_range / total_weight


class Recorder:
    """The ServerApp's Grid, recording every reply its code receives: per reply, its node, the
    SecAgg+ stage it answers, each Array it carries (record, key, dtype, shape) and, in the
    collect stage, the dtype of the masked vectors (kept, with `keep_masked`, for the audit); and
    the bytes of every message each way."""

    def __init__(self, grid, keep_masked: bool = False):
        self._grid = grid
        self.received, self.masked, self._keep = [], {}, keep_masked
        self.bytes_down, self.bytes_up = {}, {}

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        stage = None
        for m in messages:
            configs = m.content.config_records.get(RECORD_KEY_CONFIGS)
            stage = str(configs[Key.STAGE]) if configs is not None and Key.STAGE in configs else m.metadata.message_type
            node = m.metadata.dst_node_id
            self.bytes_down[node] = self.bytes_down.get(node, 0) + message_bytes(m)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for r in replies:
            self._note(r, stage)
        return replies

    def _note(self, reply, stage) -> None:
        node = reply.metadata.src_node_id
        entry = {"node": node, "stage": stage, "error": reply.has_error(), "arrays": [], "masked": None}
        if not reply.has_error():
            self.bytes_up[node] = self.bytes_up.get(node, 0) + message_bytes(reply)
            for record, arrays in reply.content.array_records.items():
                entry["arrays"] += [[record, key, a.dtype, list(a.shape)] for key, a in arrays.items()]
            configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is not None and Key.MASKED_PARAMETERS in configs:
                try:
                    vectors = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]]
                    entry["masked"] = sorted({str(v.dtype) for v in vectors})
                    if self._keep:
                        self.masked[node] = vectors
                except Exception as e:  # a hostile reply: the workflow refuses it
                    entry["masked"] = [f"unreadable: {type(e).__name__}"]
        self.received.append(entry)


class _SecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, keeping the total weight Σqᵢ it unmasks (the aggregate's first
    entry, which the workflow divides by and drops) so that the server can check it against the
    registered rows. flwr is pinned (1.42.0): the unmask stage reads `factor_extract` from its
    module, which is wrapped for the length of that stage."""

    total_weight = None

    def unmask_stage(self, grid, context, state) -> bool:
        original = secaggplus_workflow.factor_extract

        def keep(parameters):
            factor, rest = original(parameters)
            self.total_weight = int(factor)
            return factor, rest

        secaggplus_workflow.factor_extract = keep
        try:
            return super().unmask_stage(grid, context, state)
        finally:
            secaggplus_workflow.factor_extract = original


class _Round(Strategy):
    """The legacy strategy of one SecAgg+ round: `configure_fit` returns the instructions the
    ServerApp made for the sampled nodes; `aggregate_fit` keeps what the workflow hands it (the
    unmasked aggregate, set as every result's parameters, and each result's fields)."""

    def __init__(self, instructions: list):
        self.instructions, self.results, self.failures = instructions, [], []
        self.aggregate, self.individual = None, 0

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return self.instructions

    def aggregate_fit(self, server_round, results, failures):
        self.results, self.failures = [(proxy.node_id, fitres) for proxy, fitres in results], list(failures)
        if results:
            shared = results[0][1].parameters
            # The workflow sets one aggregate as every result's parameters: count any other.
            self.individual = sum(1 for _, fitres in results if fitres.parameters is not shared)
            self.aggregate = parameters_to_ndarrays(shared)
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def _fields(pid: int, fitres) -> tuple:
    """The fields in the clear of client `pid`'s reply (the partition its node holds, not what
    the reply says), as `slora.Server.accept_aggregate` takes them."""
    m = fitres.metrics
    losses = [(float(loss), int(rows)) for loss, rows in zip(json.loads(str(m["step-losses"])), json.loads(str(m["step-rows"])), strict=True)]
    return pid, int(m["round"]), str(m["base-digest"]), int(fitres.num_examples), losses, float(m["train-seconds"])


def run_round(server, method: str, grid, nodes, settings: dict, context, plan, switch, norm: dict) -> dict:
    """One round of `server` under SecAgg+: the workflow's four stages, then the aggregate into the
    server (`accept_aggregate`). Returns what the ServerApp's ledger records (as the plain round)."""
    round_, _, chosen, _ = plan
    sent = [pid for pid in chosen if nodes.node_of(pid) is not None]
    recorder = Recorder(grid, keep_masked=bool(settings["secagg-audit-dir"]))
    if switch is not None:
        # Stage 2 resumed mid-way: a node without the switch payload gets it first.
        missing = [nodes.node_of(pid) for pid in sent if nodes.node_of(pid) not in nodes.has_switch]
        if missing:
            acks = recorder.send_and_receive([Message(RecordDict({"switch": switch}), node, "query.switch") for node in missing], timeout=settings["round-timeout"])
            nodes.has_switch.update(r.metadata.src_node_id for r in acks if not r.has_error())
    c, t = float(settings["secagg-clipping-range"]), int(settings["secagg-quantization-range"])
    if not (np.isfinite(c) and c > 0):
        raise ValueError(f"run-config secagg-clipping-range = {c}: must be a finite number > 0")
    if t * max(len(chosen), 1) >= MODULUS:
        raise ValueError(f"run-config secagg-quantization-range = {t}: {len(chosen)} clients × {t} overflow the modulus 2^32")
    scale = weight_scale(t, max(server.rows()))
    max_weight = t / scale
    download = server.global_state()
    names = sorted(download)
    parameters = ndarrays_to_parameters([download[n] for n in names])
    instructions = []
    for pid in sent:
        node = nodes.node_of(pid)
        config = {"method": method, "round": round_, "client": pid, "names": json.dumps(names), "secagg-clipping-range": c, "secagg-quantization-range": t, "secagg-max-weight": max_weight}
        instructions.append((GridClientProxy(node, recorder, 0), FitIns(parameters, config)))
    strategy = _Round(instructions)
    workflow = _SecAggPlus(
        settings["secagg-num-shares"], settings["secagg-threshold"], max_weight=max_weight, clipping_range=c, quantization_range=t, modulus_range=MODULUS, timeout=settings["round-timeout"]
    )
    legacy = LegacyContext(context, strategy=strategy)
    legacy.state = RecordDict({workflow_constant.MAIN_CONFIGS_RECORD: ConfigRecord({workflow_constant.Key.CURRENT_ROUND: round_}), workflow_constant.MAIN_PARAMS_RECORD: ArrayRecord()})
    refused, accepted, halted = [], [], None
    if len(sent) < 2:
        halted = f"SecAgg+ needs at least 2 clients; {len(sent)} of the sampled have a node"
    else:
        try:
            workflow(recorder, legacy)
        except Exception as e:  # a hostile or broken reply: no reply can raise past this handler
            halted = f"SecAgg+ failed: {type(e).__name__}: {e}"
    if halted is None and (strategy.aggregate is None or workflow.total_weight is None):
        halted = "SecAgg+ halted (too few nodes answered a stage; see the log)"
    total = workflow.total_weight
    by_pid = {nodes.pid_of.get(node): fitres for node, fitres in strategy.results}
    contributors = [pid for pid in chosen if pid in by_pid]
    fields, mean, clipped = [], None, {}
    if halted is None:
        try:
            fields = [_fields(pid, by_pid[pid]) for pid in contributors]
            clipped = {pid: int(by_pid[pid].metrics["secagg-clipped"]) for pid in contributors}
            if total % scale:
                raise ValueError(f"the total weight {total} is not a multiple of the weight scale {scale}")
        except Exception as e:  # one malformed reply spoils the aggregate it is in
            halted = f"a malformed reply in the aggregate: {type(e).__name__}: {e}"
    if halted is not None:
        refused = [{"client": pid, "reason": halted} for pid in (contributors or sent)]
    else:
        mean = {n: (download[n].astype(np.float64) + a).astype(np.float32) for n, a in zip(names, strategy.aggregate, strict=True)}
        if norm.get("bound") is None and settings["max-update-norm-factor"] > 0:
            # The first aggregate sets the bound that later aggregates are held to.
            norm["bound"] = settings["max-update-norm-factor"] * server.update_norm(contributors[0], mean)
            server.set_max_update_norm(norm["bound"])
        try:
            server.accept_aggregate(fields, mean, total // scale)
            accepted = contributors
        except Exception as e:  # the server's reason (ValueError)
            refused = [{"client": pid, "reason": str(e)} for pid in contributors]
    if any(v != 0 for v in clipped.values()):
        log(WARNING, "%s round %s: clients clipped coordinates to ±secagg-clipping-range %g: %s", method, round_, c, clipped)
    _audit(settings["secagg-audit-dir"], round_, method, recorder, nodes, download, mean)
    return {
        "sent": sent,
        "replied": sorted(contributors),
        "accepted": accepted,
        "refused": refused,
        "flower_bytes_down": [recorder.bytes_down.get(nodes.node_of(pid), 0) for pid in sent],
        "flower_bytes_up": [recorder.bytes_up.get(nodes.node_of(pid), 0) for pid in contributors],
        "secagg": {
            "clipping_range": c,
            "quantization_range": t,
            "modulus_range": MODULUS,
            "max_weight": max_weight,
            "weight_scale": scale,
            "total_weight": total,
            "contributors": contributors,
            "bound_per_coordinate": error_bound(len(contributors), c, total) if total else None,
            "clipped": {str(k): v for k, v in clipped.items()},
            "individual_parameters_seen": strategy.individual,
            "received": recorder.received,
        },
    }


def _audit(folder: str, round_: int, method: str, recorder: Recorder, nodes, download: dict, mean) -> None:
    """Test aid (run-config `secagg-audit-dir`): what the ServerApp received and made in a round —
    each client's masked vectors and the state it handed the server — for the deployment test's
    check that a masked vector says nothing of its client's update."""
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    for node, vectors in recorder.masked.items():
        pid = nodes.pid_of.get(node)
        np.savez(os.path.join(folder, f"{method}-round-{round_:05d}-masked-client-{pid:05d}.npz"), *vectors)
    if mean is not None:
        np.savez(os.path.join(folder, f"{method}-round-{round_:05d}-server.npz"), **{f"download/{n}": v for n, v in download.items()}, **{f"mean/{n}": v for n, v in mean.items()})


def client_reply(msg: Message, fit) -> Message:
    """The ClientApp's half, called by `secaggplus_mod` in its collect stage: the global state
    from the legacy fit instructions, `fit(global_state, config)` → `(upload, losses, rows,
    seconds, echo)`, and the reply the mod masks: the update relative to the download in float64
    (small values, so the clipping range can be tight), the rows (the mod's weight) and the fields
    the server checks in the clear."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = fitins.config
    names = json.loads(str(config["names"]))
    download = dict(zip(names, parameters_to_ndarrays(fitins.parameters), strict=True))
    upload, losses, rows, seconds, echo = fit(download, config)
    delta = [upload[n].astype(np.float64) - download[n].astype(np.float64) for n in names]
    weight = client_weight(rows, float(config["secagg-max-weight"]), int(config["secagg-quantization-range"]))
    c = float(config["secagg-clipping-range"])
    clipped = sum(int(np.count_nonzero(np.abs(d * weight) > c)) for d in delta)
    metrics = {
        **echo,
        "train-seconds": seconds,
        "step-losses": json.dumps([float(loss) for loss, _ in losses]),
        "step-rows": json.dumps([int(r) for _, r in losses]),
        "secagg-clipped": clipped,
    }
    fitres = FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(delta), num_examples=rows, metrics=metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)
