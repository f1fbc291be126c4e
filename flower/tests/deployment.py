"""A real Flower deployment on 127.0.0.1, as CI runs it (crates/python/tests/flower.rs drives this):
one `flower-superlink` and one `flower-supernode` per client, separate OS processes talking
Flower's Fleet protocol, then `flwr run` of this app. Scenarios:

- `plain`: the methods on an insecure local link; the ServerApp's outputs land in `--out`.
- `tls`: the same over TLS, with certificates from scripts/make_certs.sh (the CA verifies the
  SuperLink; every SuperNode and `flwr` connect with it).
- `auth`: SuperNode authentication over TLS, identities bound to partitions: the keys registered
  by `python -m slora_flower.register` connect and train; a registered key that the binding does not
  hold is refused by the ServerApp, an unregistered one by the SuperLink.
- `faults`: a SuperNode killed mid-run (and restarted, so it rejoins), one SuperNode whose replies
  is malformed once (node-config `inject-fault-round`), and the ServerApp stopped and started again (it
  resumes from its round checkpoints).
- `secagg`: the methods under secure aggregation (Flower's SecAgg+, run-config `secagg=true`), every
  client every round. Each client keeps its upload on its own host and the ServerApp keeps what it
  received (test aids `secagg-audit-dir`); `check_secagg` then compares every round's aggregate
  with the plain FedAvg of those uploads, against the bound, and each masked vector with its
  client's update.

Prints one JSON line per scenario with the wall time of `flwr run` and what happened.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    def __init__(self, args, name: str, tls: bool):
        self.args, self.tls = args, tls
        self.work = Path(args.work) / name
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.bin = Path(args.python).parent
        self.env = dict(os.environ)
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env['PATH']}"
        self.env["PYTHONPATH"] = args.module_dir
        self.env["FLWR_HOME"] = str(self.work / "flwr-home")
        self.env.setdefault("RAYON_NUM_THREADS", "1")
        self.env["FLWR_TELEMETRY_ENABLED"] = "0"  # no network: do not try to report usage
        self.port = free_port()
        self.procs = {}
        self.logs = {}
        if tls:
            subprocess.run(["bash", str(ROOT / "scripts" / "make_certs.sh"), str(self.work / "certs")], check=True, capture_output=True)
        home = self.work / "flwr-home"
        home.mkdir()
        security = f'root-certificates = "{self.work / "certs" / "ca.crt"}"' if tls else "insecure = true"
        (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{self.port}"\n{security}\n')

    def start(self, name: str, cmd: list) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.work, start_new_session=True)

    def security(self, server: bool) -> list:
        if not self.tls:
            return ["--insecure"]
        certs = self.work / "certs"
        if server:
            return ["--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key")]
        return ["--root-certificates", str(certs / "ca.crt")]

    def superlink(self, *extra: str) -> None:
        self.start(
            "superlink",
            [str(self.bin / "flower-superlink"), *self.security(True), "--host", "127.0.0.1", "--port", str(self.port), "--disable-runtime-dependency-installation", *extra],
        )

    def flwr(self, *args: str) -> str:
        out = subprocess.run([str(self.bin / "flwr"), *args], env=self.env, cwd=self.work, capture_output=True, text=True, timeout=120)
        return out.stdout + out.stderr

    def supernode(self, pid: int, extra: str = "", key: str = "", name: str = "") -> None:
        node_config = f'partition-id={pid} partition-dir="{self.args.partition_dir}" {extra}'.strip()
        self.start(
            name or f"supernode-{pid}",
            [
                str(self.bin / "flower-supernode"),
                *self.security(False),
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
                *(["--auth-supernode-private-key", key, "--max-retries", "3"] if key else []),
            ],
        )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def run(self, out: Path, methods: str, extra: str = "", timeout: float = 900, overrides: str = "") -> dict:
        run_config = " ".join(
            [
                f'config="{self.args.config}"',
                f'overrides="{overrides or self.args.overrides}"',
                f'methods="{methods}"',
                f'data-dir="{self.args.partition_dir}"',
                f'out-dir="{out}"',
                f"num-clients={self.args.clients}",
                extra,
            ]
        ).strip()
        start = time.perf_counter()
        cmd = [str(self.bin / "flwr"), "run", str(ROOT / "flower"), "local", "--stream", "--run-config", run_config]
        with open(self.work / "flwr-run.log", "ab") as log:
            code = subprocess.run(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.work, timeout=timeout).returncode
        return {"exit": code, "wall_seconds": time.perf_counter() - start}

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for log in self.logs.values():
            log.close()


def wait_for_file(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.2)
    return False


def auth(args) -> dict:
    """SuperNode authentication, and identities bound to partitions: one key per partition is
    registered by `python -m slora_flower.register` (which writes the node-partitions file), a
    registered key outside that file claims partition 1, and an unregistered key tries to connect.
    Then LoRA runs 2 rounds with the binding: the SuperLink refuses the stranger, the ServerApp the
    impostor, and the honest nodes train."""
    d = Deployment(args, "auth", tls=True)
    out = Path(args.out) / "auth"
    shutil.rmtree(out, ignore_errors=True)
    try:
        d.superlink("--enable-supernode-auth")
        time.sleep(2)
        keys = {}
        for name in [f"partition-{pid}" for pid in range(args.clients)] + ["impostor", "stranger"]:
            subprocess.run(["ssh-keygen", "-t", "ecdsa", "-b", "384", "-N", "", "-q", "-f", str(d.work / name)], check=True)
            keys[name] = str(d.work / name)
        keys_file, binding = d.work / "keys.toml", d.work / "node-partitions.toml"
        keys_file.write_text("[keys]\n" + "".join(f'{pid} = "{keys[f"partition-{pid}"]}.pub"\n' for pid in range(args.clients)))
        env = dict(d.env, PYTHONPATH=f"{ROOT / 'flower'}{os.pathsep}{d.env['PYTHONPATH']}")
        registered = subprocess.run([args.python, "-m", "slora_flower.register", str(keys_file), "local", str(binding)], env=env, cwd=d.work, capture_output=True, text=True, timeout=300)
        impostor = d.flwr("supernode", "register", keys["impostor"] + ".pub", "local")
        for pid in range(args.clients):
            d.supernode(pid, key=keys[f"partition-{pid}"])
        d.supernode(1, key=keys["impostor"], name="supernode-impostor")
        d.supernode(1, key=keys["stranger"], name="supernode-stranger")
        deadline = time.monotonic() + 60
        listed = ""
        while time.monotonic() < deadline:
            listed = d.flwr("supernode", "list", "local", "--format", "json")
            if listed.count('"online"') >= args.clients + 1:
                break
            time.sleep(1)
        d.procs["supernode-stranger"].wait(timeout=60)
        stranger = (d.work / "supernode-stranger.log").read_text()
        result = {
            "scenario": "auth",
            "registered": registered.returncode == 0 and binding.is_file() and "registered successfully" in impostor,
            "register_output": (registered.stdout + registered.stderr).strip()[-500:],
            "registered_online": '"online"' in listed,
            "stranger_refused": "Failed to activate SuperNode" in stranger,
            "stranger_exit": d.procs["supernode-stranger"].returncode,
        }
        overrides = f"{args.overrides} stage1.rounds=1 stage2.rounds=1"
        result.update(d.run(out, "lora", f'round-timeout=60 node-partitions="{binding}"', overrides=overrides))
        return result
    finally:
        d.stop()


def scenario(args, name: str) -> dict:
    if name == "auth":
        return auth(args)
    tls = name == "tls"
    d = Deployment(args, name, tls)
    out = Path(args.out) / name
    shutil.rmtree(out, ignore_errors=True)
    result = {"scenario": name}
    try:
        d.superlink()
        time.sleep(2)
        if name == "hostile":
            return hostile(args, d, out, result)
        if name == "secagg":
            return secagg(args, d, out, result)
        for pid in range(args.clients):
            d.supernode(pid, f"inject-fault-round={args.fault_round}" if name == "faults" and pid == args.faulty else "")
        if name != "faults":
            result.update(d.run(out, args.tls_methods if tls else args.methods))
            return result
        # Faults: LoRA with a short round timeout. The node of partition `--victim` is killed once
        # round 1's checkpoint exists (so it misses round 2); partition `--faulty` sends a malformed
        # reply in round `--fault-round`; the ServerApp stops after that round and is run again,
        # after the killed node was restarted (it rejoins under a new node id).
        victim = args.victim
        extra = f"round-timeout={args.fault_timeout} min-replies=1"
        first = {}

        def kill_when_round(path: Path) -> None:
            if wait_for_file(path, 300):
                d.kill(f"supernode-{victim}")
                first["killed_after_round"] = 1

        import threading

        killer = threading.Thread(target=kill_when_round, args=(out / "checkpoints" / "lora" / "round-00001.safetensors",))
        killer.start()
        stop_after = f"{extra} stop-after-round={args.fault_round}"
        result["first_run"] = d.run(out, "lora", stop_after)
        killer.join()
        result.update(first)
        d.supernode(victim)  # rejoins
        time.sleep(3)
        result["second_run"] = d.run(out, "lora", extra)
        return result
    finally:
        d.stop()


# What the hostile node (partition `--hostile`) sends in rounds 2 to 6 instead of its honest reply.
HOSTILE_PLAN = "claim-1e9@2,negative-count@3,non-array@4,replay@5,huge@6"


def hostile(args, d: Deployment, out: Path, result: dict) -> dict:
    """LoRA over 6 rounds with every client sampled every round: the honest nodes, one hostile node
    (HOSTILE_PLAN), a node whose partition answer is not a partition id, and, started last, a
    second node claiming partition 0. Every bad reply must be refused with its reason and the run
    must finish on the honest replies."""
    for pid in range(args.clients):
        d.supernode(pid, f'hostile="{HOSTILE_PLAN}"' if pid == args.hostile else "")
    d.supernode(0, 'hostile-partition-answer="not-a-partition"', name="supernode-garbled")
    time.sleep(3)
    d.supernode(0, "", name="supernode-duplicate")
    time.sleep(3)
    overrides = f"{args.overrides} federation.clients_per_round={args.clients} stage1.rounds=3 stage2.rounds=3"
    result.update(d.run(out, "lora", "round-timeout=60", overrides=overrides))
    return result


def secagg(args, d: Deployment, out: Path, result: dict) -> dict:
    """The methods under SecAgg+ with every client every round (k = clients), Stage 1 and Stage 2 one
    round each, then `check_secagg` on what the run kept."""
    server_audit, client_audit = d.work / "audit-server", d.work / "audit-clients"
    for pid in range(args.clients):
        d.supernode(pid, f'secagg-audit-dir="{client_audit}"')
    overrides = f"{args.overrides} federation.clients_per_round={args.clients} stage1.rounds=1 stage2.rounds=1"
    extra = f'secagg=true secagg-clipping-range={args.secagg_clipping_range} secagg-audit-dir="{server_audit}" round-timeout=120'
    result.update(d.run(out, args.methods, extra, overrides=overrides))
    if result["exit"] == 0:
        result["rounds"] = check_secagg(args, out, server_audit, client_audit)
    return result


def _prefixed(npz, prefix: str) -> dict:
    return {k[len(prefix) :]: npz[k] for k in npz.files if k.startswith(prefix)}


def check_secagg(args, out: Path, server_audit: Path, client_audit: Path) -> list:
    """Per SecAgg+ round: the aggregate the ServerApp handed its server against the plain FedAvg
    (`slora.fedavg`, the server's own weighted mean) of the uploads its clients kept, per coordinate,
    against the bound 2kc/Σqᵢ plus one float32 spacing (both sides are rounded to float32) and 1e-12
    for float64 arithmetic; whether every client trained from the state the server sent (and the
    next round's download is this round's aggregate); and each masked vector the ServerApp received,
    decoded as if it were the only one, against its client's update (a correlation near 0)."""
    sys.path.insert(0, args.module_dir)
    import numpy as np

    import slora

    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    checked, previous = [], {}
    for r in rounds:
        if "secagg" not in r:
            continue
        s, method, round_ = r["secagg"], r["method"], r["round"]
        c, t = s["clipping_range"], s["quantization_range"]
        server = np.load(server_audit / f"{method}-round-{round_:05d}-server.npz")
        download, mean = _prefixed(server, "download/"), _prefixed(server, "mean/")
        names = sorted(download)
        uploads, same_download, correlations, decoded_error = [], True, [], []
        for pid in s["contributors"]:
            kept = np.load(client_audit / f"{method}-round-{round_:05d}-client-{pid:05d}.npz")
            upload, down, rows = _prefixed(kept, "upload/"), _prefixed(kept, "download/"), int(kept["rows"])
            same_download &= all(np.array_equal(down[n], download[n]) for n in names)
            uploads.append((upload, rows))
            delta = np.concatenate([(upload[n].astype(np.float64) - down[n].astype(np.float64)).ravel() for n in names])
            masked = np.load(server_audit / f"{method}-round-{round_:05d}-masked-client-{pid:05d}.npz")
            vectors = [masked[f"arr_{i}"] for i in range(len(masked.files))]
            weight = round(rows / s["max_weight"] * t) / t
            decoded = (np.concatenate([v.ravel() for v in vectors[1:]]).astype(np.float64) * (2 * c / t) - c) / weight
            correlations.append(float(abs(np.corrcoef(decoded, delta)[0, 1])))
            decoded_error.append(float(np.linalg.norm(decoded - delta) / max(np.linalg.norm(delta), 1e-30)))
        plain = slora.fedavg(uploads)
        bound = s["bound_per_coordinate"]
        worst, worst_ratio = 0.0, 0.0
        for n in names:
            a, b = mean[n].astype(np.float64), plain[n].astype(np.float64)
            err = np.abs(a - b)
            allowed = bound + np.spacing(np.maximum(np.abs(mean[n]), np.abs(plain[n])).astype(np.float32)).astype(np.float64) + 1e-12
            worst, worst_ratio = max(worst, float(err.max())), max(worst_ratio, float((err / allowed).max()))
        chained = method not in previous or all(np.array_equal(previous[method][n], download[n]) for n in names)
        previous[method] = mean
        largest = max(float(np.abs(u[n].astype(np.float64) - download[n].astype(np.float64)).max()) for u, _ in uploads for n in names)
        checked.append(
            {
                "method": method,
                "round": round_,
                "clients": len(uploads),
                "coordinates": int(sum(download[n].size for n in names)),
                "bound": bound,
                "max_error": worst,
                "max_error_over_allowed": worst_ratio,
                "largest_update_coordinate": largest,
                "same_download": bool(same_download),
                "chained": bool(chained),
                "max_abs_correlation": max(correlations),
                "min_decoded_relative_error": min(decoded_error),
            }
        )
    return checked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--python", required=True, help="the venv's python (flwr and numpy installed)")
    p.add_argument("--module-dir", required=True, help="folder holding the `slora` module")
    p.add_argument("--config", required=True)
    p.add_argument("--overrides", default="")
    p.add_argument("--partition-dir", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--methods", default="slora,lora")
    p.add_argument("--tls-methods", default="lora")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fault-timeout", type=float, default=30.0)
    p.add_argument("--victim", type=int, default=0, help="faults: the partition whose node is killed after round 1")
    p.add_argument("--faulty", type=int, default=1, help="faults: the partition whose reply is malformed")
    p.add_argument("--fault-round", type=int, default=3, help="faults: the round of the malformed reply, after which the ServerApp stops")
    p.add_argument("--hostile", type=int, default=2, help="hostile: the partition whose node sends bad replies")
    p.add_argument("--secagg-clipping-range", type=float, default=0.25, help="secagg: SecAgg+'s clipping range of the weighted updates")
    p.add_argument("scenarios", nargs="+", choices=["plain", "tls", "auth", "faults", "hostile", "secagg"])
    args = p.parse_args()
    for name in args.scenarios:
        print(json.dumps(scenario(args, name)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
