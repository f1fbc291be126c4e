"""Registers one SuperNode public key per partition with the SuperLink and writes the binding the
ServerApp reads (run-config `node-partitions`):

    python -m slora_flower.register KEYS.toml SUPERLINK OUT.toml

KEYS.toml is the operator's list, one public key (P-384, OpenSSH or PEM) per partition id:

    [keys]
    0 = "/etc/flower/keys/hospital-a.pub"
    1 = "/etc/flower/keys/hospital-b.pub"

Each key is registered with `flwr supernode register KEY SUPERLINK --format json`, which answers
with the node id the SuperLink binds to that key; OUT.toml maps those node ids to the partitions.
Nothing is written unless every key registered.
"""

import json
import os
import subprocess
import sys

from .nodes import read_table


def read_keys(path: str) -> dict:
    """partition id -> public key path, from KEYS.toml; ValueError naming the file and key."""
    table = read_table(path, "keys", "partition id = public key path")
    keys, seen = {}, {}
    for pid, key in table.items():
        if not pid.isdigit():
            raise ValueError(f"{path}: keys.{pid}: a partition id is a non-negative integer")
        if not isinstance(key, str) or not os.path.isfile(key):
            raise ValueError(f"{path}: keys.{pid}: {key!r} is not a readable public key file")
        if key in seen:
            raise ValueError(f"{path}: keys.{pid}: {key} is already partition {seen[key]}'s key")
        keys[int(pid)] = key
        seen[key] = int(pid)
    return keys


def register(keys: dict, superlink: str, flwr: str = "flwr") -> dict:
    """node id -> partition id, registering every key (RuntimeError on the first that fails)."""
    bound = {}
    for pid, key in sorted(keys.items()):
        out = subprocess.run([flwr, "supernode", "register", key, superlink, "--format", "json"], capture_output=True, text=True)
        try:
            answer = json.loads(out.stdout)
            node = int(answer["node-id"]) if answer.get("success") else None
        except (ValueError, KeyError, TypeError):
            node = None
        if node is None:
            raise RuntimeError(f"partition {pid}: `flwr supernode register {key}` failed: {(out.stdout + out.stderr).strip()}")
        bound[node] = pid
    return bound


def write_binding(path: str, bound: dict) -> None:
    """Writes the node-partitions file atomically (a temp file, then a rename)."""
    lines = ["# node id (as `flwr supernode register` answered) = partition id", "[nodes]"]
    lines += [f'"{node}" = {pid}' for node, pid in sorted(bound.items(), key=lambda kv: kv[1])]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    keys_file, superlink, out = argv
    try:
        bound = register(read_keys(keys_file), superlink)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_binding(out, bound)
    print(f"{out}: {len(bound)} nodes bound to partitions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
