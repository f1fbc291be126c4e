"""The ServerApp: the pipeline's server for each method, over Flower's Grid.

For every round, `slora.Server` (the pipeline's FedAvg server, in Rust) samples the clients with the
run seed, by partition id; this app sends the global state to the SuperNodes that hold those
partitions, waits `round-timeout` seconds, and hands the replies back in the sampled order, so the
average is the in-process run's, bit for bit, when every reply arrives. A reply that is an error, or
whose tensors do not match the global state, is refused with its reason logged and recorded; a
round goes on with the replies it accepted (at least `min-replies`). Every round is checkpointed in
`out-dir`, and a restarted ServerApp resumes there.

With run-config `secagg` (slora_flower/secagg.py), every round runs Flower's SecAgg+ instead: the
ServerApp receives only masked vectors and the fields in the clear, and hands the server the
unmasked weighted mean of the round's updates (`slora.Server.accept_aggregate`).

SLoRA: Stage-1 rounds (the masked values and the head travel), then the switch (every node receives
Stage 1's ΔW values once and rebuilds the corrected base by the same decomposition the server runs),
then Stage-2 LoRA rounds.

Outputs in `out-dir`: `metrics.parquet` (the pipeline's schema; `clients` counts the replies
averaged), `report/` (the pipeline's report of those metrics: index.html, report.md, figures),
`deployment.md`, `deployment.json` and `rounds.jsonl` (per round: sampled, sent, replied, refused
with reasons, and the bytes of every message as Flower serialised it next to the pipeline's
accounting).
"""

import json
import os
import time
from logging import INFO, WARNING

import flwr
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

import slora

from . import secagg
from .nodes import Nodes, load_node_partitions
from .wire import from_record, message_bytes, to_record

app = ServerApp()


def _record(ledger: dict, entry: dict) -> None:
    """Appends `entry` to the ledger and to `rounds.jsonl` at once: a ServerApp that dies keeps the
    record of the rounds it finished, and its successor appends to it."""
    ledger["entries"].append(entry)
    with open(ledger["path"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def _parse_reply(reply) -> tuple:
    """A train reply's fields, or an exception saying which one is malformed."""
    metrics, echo = reply.content["metrics"], reply.content["config"]
    losses = list(zip(metrics["step-losses"], metrics["step-rows"], strict=True))
    update = from_record(reply.content["update"])
    return int(echo["round"]), str(echo["base-digest"]), update, int(metrics["num-examples"]), losses, float(metrics["train-seconds"])


def _norm_bound(server, parsed: dict, factor: float):
    """The update-norm bound set from the first round this ServerApp runs: `factor` × the median
    distance of that round's well-formed replies from their download (None without replies)."""
    norms = []
    for pid, fields in parsed.items():
        try:
            norms.append(server.update_norm(pid, fields[2]))
        except Exception:
            pass
    norms = sorted(n for n in norms if n == n and n != float("inf"))
    if not norms:
        return None
    mid = len(norms) // 2
    median = norms[mid] if len(norms) % 2 else (norms[mid - 1] + norms[mid]) / 2
    return factor * median


def _plain_round(server, method: str, grid: Grid, nodes: Nodes, settings: dict, plan, switch, norm: dict) -> dict:
    """One round with every reply in the clear: send, wait, check each reply, accept it or refuse it."""
    round_, _, chosen, _ = plan
    global_record = to_record(server.global_state())
    sent, messages = [], []
    for pid in chosen:
        node = nodes.node_of(pid)
        if node is None:
            continue
        content = RecordDict({"global": global_record, "config": ConfigRecord({"method": method, "round": round_, "client": pid})})
        if switch is not None and node not in nodes.has_switch:
            content["switch"] = switch
        messages.append(Message(content, node, "train", group_id=str(round_)))
        sent.append(pid)
    bytes_down = [message_bytes(m) for m in messages]
    replies = list(grid.send_and_receive(messages, timeout=settings["round-timeout"]))
    by_pid, refused = {}, []
    for reply in replies:
        node = reply.metadata.src_node_id
        pid = nodes.pid_of.get(node)
        if pid is None:
            log(WARNING, "%s round %s: a reply from node %s, which holds no known partition, is ignored", method, round_, node)
            continue
        if reply.has_error():
            refused.append({"client": pid, "reason": f"error reply: {reply.error.reason}"})
            continue
        by_pid[pid] = reply
    bytes_up, accepted, parsed = [], [], {}
    for pid in chosen:  # the sampled order: the in-process engine's order of addition
        reply = by_pid.get(pid)
        if reply is None:
            continue
        bytes_up.append(message_bytes(reply))
        try:
            parsed[pid] = _parse_reply(reply)
        except Exception as e:  # no reply can raise past this handler
            refused.append({"client": pid, "reason": f"malformed reply: {type(e).__name__}: {e}"})
    if norm.get("bound") is None and settings["max-update-norm-factor"] > 0:
        norm["bound"] = _norm_bound(server, parsed, settings["max-update-norm-factor"])
        server.set_max_update_norm(norm["bound"])
    for pid in chosen:
        if pid not in parsed:
            continue
        try:
            server.accept(pid, *parsed[pid])
            accepted.append(pid)
            if switch is not None:
                nodes.has_switch.add(by_pid[pid].metadata.src_node_id)
        except Exception as e:  # the server's reason (ValueError), or a value Python cannot pass
            refused.append({"client": pid, "reason": str(e)})
    return {"sent": sent, "replied": sorted(by_pid), "accepted": accepted, "refused": refused, "flower_bytes_down": bytes_down, "flower_bytes_up": bytes_up}


def _run_rounds(server, method: str, grid: Grid, nodes: Nodes, settings: dict, ledger: dict, context: Context, switch=None) -> None:
    norm = {"bound": None}
    if settings["secagg"]:
        server.check_secure_aggregation()  # central DP and per-upload aggregations, refused by key
    while (plan := server.begin_round()) is not None:
        round_, _, chosen, switch_bytes = plan
        nodes.refresh()
        if settings["secagg"]:
            r = secagg.run_round(server, method, grid, nodes, settings, context, plan, switch, norm)
        else:
            r = _plain_round(server, method, grid, nodes, settings, plan, switch, norm)
        for x in r["refused"]:
            log(WARNING, "%s round %s: refused the reply of client %s: %s", method, round_, x["client"], x["reason"])
        # A majority of the sampled clients by default: one bad node cannot set the global state.
        need = settings["min-replies"] or len(chosen) // 2 + 1
        if len(r["accepted"]) < need:
            raise RuntimeError(f"{method} round {round_}: {len(r['accepted'])} accepted replies < min-replies {need} (sampled {chosen}, sent {r['sent']})")
        row = server.finish_round()
        entry = {
            "method": method,
            "round": round_,
            "sampled": chosen,
            "sent": r["sent"],
            "replied": r["replied"],
            "accepted": r["accepted"],
            "refused": r["refused"],
            "flower_bytes_down": r["flower_bytes_down"],
            "flower_bytes_up": r["flower_bytes_up"],
            "accounted_bytes_down_per_client": row["bytes_down_per_client"],
            "accounted_bytes_up_per_client": row["bytes_up_per_client"],
            "switch_bytes_per_client": switch_bytes,
            "max_update_norm": norm["bound"],
            "partition_conflicts": nodes.conflicts[:],
            "accuracy": row["accuracy"],
            "train_loss": row["train_loss"],
            "wall_seconds": row["wall_seconds"],
        }
        if "secagg" in r:
            entry["secagg"] = r["secagg"]
        _record(ledger, entry)
        log(INFO, "%s round %s: sampled %s, accepted %s, train loss %.4f, accuracy %s", method, round_, chosen, r["accepted"], row["train_loss"], row["accuracy"])
        if settings["stop-after-round"] == round_:
            # Test aid (run-config): a ServerApp that dies here, after the round's checkpoint.
            raise RuntimeError(f"stop-after-round: stopping after round {round_} as asked")


def _broadcast_switch(grid: Grid, nodes: Nodes, switch, method: str, timeout: float, ledger: dict) -> None:
    nodes.refresh()
    messages = [Message(RecordDict({"switch": switch}), node, "query.switch") for node in sorted(nodes.pid_of)]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    for reply in replies:
        if not reply.has_error():
            nodes.has_switch.add(reply.metadata.src_node_id)
    _record(
        ledger,
        {
            "method": method,
            "switch": True,
            "sent": sorted(nodes.pid_of[n] for n in nodes.pid_of),
            "acknowledged": sorted(nodes.pid_of.get(r.metadata.src_node_id) for r in replies if not r.has_error()),
            "flower_bytes_down": [message_bytes(m) for m in messages],
        },
    )


def _deployment_md(servers, rounds: list, wall: float) -> str:
    lines = ["# SLoRA on Flower: the deployment", "", f"Wall time {wall:.1f} s. The pipeline's report of these metrics is in report/.", "", "## Metrics (the pipeline's table)", "", "```", slora.metrics_table(servers), "```", ""]
    lines += ["## Rounds as Flower carried them", "", "| method | round | sampled | accepted | refused | Flower bytes down / client | accounted | Flower bytes up / client | accounted |", "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rounds:
        if r.get("switch"):
            lines.append(f"| {r['method']} | switch | | {r['acknowledged']} | | {_mean(r['flower_bytes_down'])} | | | |")
            continue
        refused = "; ".join(f"{x['client']}: {x['reason']}" for x in r["refused"])
        lines.append(
            f"| {r['method']} | {r['round']} | {r['sampled']} | {r['accepted']} | {refused} | {_mean(r['flower_bytes_down'])} | {r['accounted_bytes_down_per_client']} | {_mean(r['flower_bytes_up'])} | {r['accounted_bytes_up_per_client']} |"
        )
    return "\n".join(lines) + "\n"


def _mean(values: list) -> str:
    return f"{sum(values) / len(values):.0f}" if values else "–"


def _flag(key: str, value) -> bool:
    """A run-config switch: a TOML bool, or its text."""
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("true", "false"):
        return value is True or text == "true"
    raise ValueError(f"run-config `{key}` = {value!r}: give true or false")


def _nodes(grid: Grid, settings: dict, num_clients: int) -> Nodes:
    path = settings["node-partitions"]
    bound = load_node_partitions(path, num_clients) if path else None
    if bound is not None:
        log(INFO, "node-partitions %s: %d nodes bound to partitions; any other node is refused", path, len(bound))
    return Nodes(grid, settings["round-timeout"], num_clients, bound)


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    for key in ("config", "data-dir", "out-dir"):
        if not str(rc.get(key, "")):
            raise ValueError(f"run-config: `{key}` is empty (give an absolute path)")
    config, data_dir, out_dir = str(rc["config"]), str(rc["data-dir"]), str(rc["out-dir"])
    overrides = str(rc.get("overrides", "")).split()
    methods = [m.strip() for m in str(rc.get("methods", "slora,lora")).split(",") if m.strip()]
    settings = {
        "round-timeout": float(rc.get("round-timeout", 120.0)),
        "min-replies": int(rc.get("min-replies", 0)),  # 0: a majority of the sampled clients
        "stop-after-round": int(rc.get("stop-after-round", 0)),
        "max-update-norm-factor": float(rc.get("max-update-norm-factor", 10.0)),  # 0: no bound
        "node-partitions": str(rc.get("node-partitions", "")),  # "": partitions as the nodes say
        # Secure aggregation (Flower's SecAgg+, slora_flower/secagg.py): the ServerApp sees only
        # each round's weighted mean update.
        "secagg": _flag("secagg", rc.get("secagg", False)),
        "secagg-clipping-range": float(rc.get("secagg-clipping-range", 1.0)),
        "secagg-quantization-range": int(rc.get("secagg-quantization-range", 1 << 22)),
        "secagg-num-shares": rc.get("secagg-num-shares", 1.0),
        "secagg-threshold": rc.get("secagg-threshold", 0.67),
        "secagg-audit-dir": str(rc.get("secagg-audit-dir", "")),  # test aid: what the ServerApp received
    }
    num_clients = int(rc.get("num-clients", 0)) or None
    checkpoints = os.path.join(out_dir, "checkpoints")
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()

    servers = []
    ledger = {"path": os.path.join(out_dir, "rounds.jsonl"), "entries": []}
    nodes = None
    for method in methods:
        if method == "slora":
            stage1 = slora.Server(config, "slora-stage1", data_dir, overrides, num_clients, checkpoints)
            nodes = nodes or _nodes(grid, settings, stage1.num_clients())
            if not nodes.pid_of:
                nodes.wait_for(stage1.num_clients(), float(rc.get("wait-for-nodes", 120.0)))
            _run_rounds(stage1, "slora-stage1", grid, nodes, settings, ledger, context)
            switch = to_record(stage1.switch_payload())
            stage2 = slora.Server(config, "slora-stage2", data_dir, overrides, num_clients, checkpoints, stage1)
            if stage2.completed_rounds() == 0:
                # A Stage 2 resumed mid-way sends the payload with its train messages instead, to
                # every node that has not acknowledged it since this ServerApp started.
                _broadcast_switch(grid, nodes, switch, "slora-stage2", settings["round-timeout"], ledger)
            _run_rounds(stage2, "slora-stage2", grid, nodes, settings, ledger, context, switch=switch)
            servers += [stage1, stage2]
        else:
            server = slora.Server(config, method, data_dir, overrides, num_clients, checkpoints)
            nodes = nodes or _nodes(grid, settings, server.num_clients())
            if not nodes.pid_of:
                nodes.wait_for(server.num_clients(), float(rc.get("wait-for-nodes", 120.0)))
            _run_rounds(server, method, grid, nodes, settings, ledger, context)
            servers.append(server)

    metrics_file = os.path.join(out_dir, "metrics.parquet")
    slora.write_metrics(metrics_file, servers)
    wall = time.perf_counter() - start
    with open(ledger["path"]) as f:
        rounds = [json.loads(line) for line in f]  # this run's and any earlier (resumed) run's
    with open(os.path.join(out_dir, "deployment.json"), "w") as f:
        json.dump({"methods": methods, "node_partitions": settings["node-partitions"] or None, "secagg": settings["secagg"], "wall_seconds": wall, "resumed_from": {s.method(): s.resumed_from() for s in servers}, "rounds": rounds}, f, indent=1)
    with open(os.path.join(out_dir, "deployment.md"), "w") as f:
        f.write(_deployment_md(servers, rounds, wall))
    refused = sum(len(r.get("refused", [])) for r in rounds)
    missing = sum(len(r["sampled"]) - len(r["accepted"]) - len(r.get("refused", [])) for r in rounds if "sampled" in r)
    setup = [
        (
            "Deployment",
            f"Flower {flwr.__version__}, methods {', '.join(methods)}: {len(set(nodes.pid_of.values()))} SuperNodes at the end; round timeout {settings['round-timeout']:g} s, "
            f"min-replies {settings['min-replies']}; {missing} sampled replies missing, {refused} refused (deployment.md)"
            + ("; secure aggregation (Flower's SecAgg+): the server saw only each round's weighted mean update" if settings["secagg"] else ""),
        )
    ]
    slora.render_report(config, data_dir, metrics_file, servers, os.path.join(out_dir, "report"), overrides, setup)
    log(INFO, "wrote %s (%.1f s)", out_dir, wall)
