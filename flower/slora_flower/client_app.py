"""The ClientApp: one data holder. Its SuperNode's node-config says which client it is and where its
own shard is; it never sees another client's data.

node-config keys:
- `partition-id` (required): the client's index in the partition (its seeds derive from it);
- `partition-dir`: a folder holding `client-<id:05>.parquet` and `labels.json`, or
- `shard`: the client's Parquet file itself (`labels.json` beside it).

Every message builds the method's model with the Rust core, trains or answers, and returns; the
SuperNode keeps only the switch payload (SLoRA's ΔW) in the node's context between messages, and,
under secure aggregation (run-config `secagg`), the SecAgg+ keys and shares of the round in
progress (Flower's `secaggplus_mod` keeps them there).
"""

import os
import time

import numpy as np

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

import slora

from . import secagg
from .wire import from_record, to_record

app = ClientApp()

SWITCH = "slora-switch"
STAGE2 = "slora-stage2"


def _partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("node-config: `partition-id` is missing")
    return int(context.node_config["partition-id"])


def _shard(context: Context, pid: int) -> str:
    node = context.node_config
    if "shard" in node:
        return str(node["shard"])
    if "partition-dir" in node:
        return os.path.join(str(node["partition-dir"]), f"client-{pid:05d}.parquet")
    raise ValueError("node-config: give `shard` or `partition-dir`")


def _overrides(context: Context) -> list:
    return str(context.run_config.get("overrides", "")).split()


@app.query("partition")
def partition(msg: Message, context: Context) -> Message:
    """Which client this node is."""
    if "hostile-partition-answer" in context.node_config:
        # Test aid: a node whose answer is not a partition id.
        return Message(RecordDict({"config": ConfigRecord({"partition-id": str(context.node_config["hostile-partition-answer"])})}), reply_to=msg)
    pid = _partition_id(context)
    return Message(RecordDict({"config": ConfigRecord({"partition-id": pid})}), reply_to=msg)


@app.query("switch")
def switch(msg: Message, context: Context) -> Message:
    """SLoRA's switch: keep Stage 1's ΔW values for Stage 2 (the node rebuilds the corrected base)."""
    context.state[SWITCH] = msg.content["switch"]
    return Message(RecordDict({"config": ConfigRecord({"partition-id": _partition_id(context)})}), reply_to=msg)


def _fit(context: Context, config, global_state: dict) -> tuple:
    """One local round of the method `config` names, as the client `config` names (which must
    be this node's partition): `(update, step losses, rows, seconds, pid, round)`."""
    pid = _partition_id(context)
    method, round_, client = str(config["method"]), int(config["round"]), int(config["client"])
    if client != pid:
        raise ValueError(f"asked to train as client {client}, but this node is partition-id {pid}")
    stage1 = None
    if method == STAGE2:
        if SWITCH not in context.state:
            raise ValueError("slora-stage2 before the switch: this node holds no Stage-1 ΔW")
        stage1 = from_record(context.state[SWITCH])
    start = time.perf_counter()
    model = slora.Client(str(context.run_config["config"]), method, _shard(context, pid), _overrides(context), stage1)
    update, losses = model.fit(global_state, round_, pid)
    return update, losses, model.rows(), time.perf_counter() - start, pid, round_


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round of the message's method from its global state: the update, the rows (the FedAvg
    weight) and every step's loss. Under secure aggregation (run-config `secagg`), Flower's
    `secaggplus_mod` runs the protocol's four stages and masks what `_secure_fit` returns."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, _secure_fit)
    if "switch" in msg.content:
        context.state[SWITCH] = msg.content["switch"]
    global_state = from_record(msg.content["global"])
    update, losses, rows, seconds, pid, round_ = _fit(context, msg.content["config"], global_state)
    if int(context.node_config.get("inject-fault-round", 0)) == round_:
        # Test aid (node-config): this round's reply has a first tensor that lost its last entry,
        # which the server must refuse.
        name = sorted(update)[0]
        update[name] = update[name].reshape(-1)[:-1].copy()
    metrics = MetricRecord(
        {
            "num-examples": rows,
            "train-seconds": seconds,
            "step-losses": [float(loss) for loss, _ in losses],
            "step-rows": [int(rows) for _, rows in losses],
        }
    )
    # The round and the digest of the state it trained from: the server refuses a reply to another.
    echo = ConfigRecord({"client": pid, "round": round_, "base-digest": slora.state_digest(global_state)})
    content = RecordDict({"update": to_record(update), "metrics": metrics, "config": echo})
    content = _hostile(context, round_, content)
    return Message(content, reply_to=msg)


def _secure_fit(msg: Message, context: Context) -> Message:
    """The collect stage of SecAgg+: train, and reply with the update for the mod to mask."""

    def fit(global_state: dict, config) -> tuple:
        update, losses, rows, seconds, pid, round_ = _fit(context, config, global_state)
        audit = str(context.node_config.get("secagg-audit-dir", ""))
        if audit:
            # Test aid (node-config): this client's upload and download, kept on its own host for
            # the deployment test's comparison (the ServerApp never reads it).
            os.makedirs(audit, exist_ok=True)
            arrays = {**{f"upload/{n}": v for n, v in update.items()}, **{f"download/{n}": v for n, v in global_state.items()}}
            np.savez(os.path.join(audit, f"{config['method']}-round-{round_:05d}-client-{pid:05d}.npz"), rows=np.array(rows), **arrays)
        echo = {"client": pid, "round": round_, "base-digest": slora.state_digest(global_state)}
        return update, losses, rows, seconds, echo

    return secagg.client_reply(msg, fit)


def _hostile(context: Context, round_: int, content: RecordDict) -> RecordDict:
    """Test aid (node-config `hostile = "KIND@ROUND,…"`): what a bad client sends instead of its
    honest reply, for the deployment test of the server's checks. Kinds: `claim-1e9` (a 10⁹-example
    claim), `negative-count`, `non-array` (the update is not an ArrayRecord), `replay` (this node's
    round-1 reply again), `huge` (every value 1e30, finite)."""
    plan = dict(item.split("@") for item in str(context.node_config.get("hostile", "")).split(",") if "@" in item)
    if round_ == 1:
        for part in ("update", "metrics", "config"):
            context.state[f"first-reply-{part}"] = content[part]
    kind = next((k for k, r in plan.items() if int(r) == round_), None)
    if kind is None:
        return content
    metrics = dict(content["metrics"])
    if kind == "claim-1e9":
        metrics["num-examples"] = 10**9
        return RecordDict({"update": content["update"], "metrics": MetricRecord(metrics), "config": content["config"]})
    if kind == "negative-count":
        metrics["num-examples"] = -5
        return RecordDict({"update": content["update"], "metrics": MetricRecord(metrics), "config": content["config"]})
    if kind == "non-array":
        return RecordDict({"update": ConfigRecord({"not": "arrays"}), "metrics": content["metrics"], "config": content["config"]})
    if kind == "replay":
        return RecordDict({part: context.state[f"first-reply-{part}"] for part in ("update", "metrics", "config")})
    if kind == "huge":
        update = {name: np.full_like(value, 1e30) for name, value in from_record(content["update"]).items()}
        return RecordDict({"update": to_record(update), "metrics": content["metrics"], "config": content["config"]})
    raise ValueError(f"node-config hostile: unknown kind {kind!r}")
