"""Which SuperNode holds which partition, and who may claim one.

Without a binding, a partition id is what a node says it holds (node-config `partition-id`); the
first node to claim a partition keeps it while it is listed, and a second claim is refused and
logged, not obeyed. With SuperNode authentication on, the SuperLink ties each node id to the public
key registered for it (`flwr supernode register`), so the operator can bind identities to data: the
run-config key `node-partitions` names a TOML file written by `python -m slora_flower.register`
(or by hand from `flwr supernode register`'s output):

    [nodes]
    "1780232334453718310" = 0   # node id -> partition id

Then a node that is not in the file is refused, and a node that claims another partition than its
own is refused, whatever it answers. Every refusal is kept in `conflicts` (the ledger's
`partition_conflicts`) with its reason.
"""

import time
import tomllib
from logging import INFO, WARNING

from flwr.app import Message, RecordDict
from flwr.common.logger import log


def read_table(path: str, name: str, what: str, label: str = "") -> dict:
    """The one table `[name]` of the TOML file at `path` (the operator's files hold nothing else).
    Raises ValueError naming `label` and the file: unreadable, not TOML, another key, or no entries."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{label}{path}: {e}") from None
    unknown = sorted(set(doc) - {name})
    if unknown:
        raise ValueError(f"{label}{path}: unknown key `{unknown[0]}` (only a [{name}] table)")
    table = doc.get(name)
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{label}{path}: no [{name}] table of {what}")
    return table


def load_node_partitions(path: str, num_clients: int) -> dict:
    """The operator's binding, node id -> partition id, from the TOML file at `path`. Raises
    ValueError naming the file and the key on anything but one `[nodes]` table of integer node ids
    mapped to distinct partition ids in 0..num_clients-1."""
    table = read_table(path, "nodes", "node id = partition id", label="node-partitions ")
    bound, holder = {}, {}
    for key, pid in table.items():
        if not key.isdigit():
            raise ValueError(f"node-partitions {path}: nodes.{key}: a node id is a non-negative integer")
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < num_clients:
            raise ValueError(f"node-partitions {path}: nodes.{key}: partition id must be an integer in 0..{num_clients - 1} (got {pid!r})")
        if pid in holder:
            raise ValueError(f"node-partitions {path}: nodes.{key}: partition {pid} is already bound to node {holder[pid]}")
        bound[int(key)] = pid
        holder[pid] = int(key)
    return bound


class Nodes:
    """Which SuperNode holds which partition id: asked of every node the Grid lists, again for
    nodes that (re)join. `bound` (node id -> partition id, from `load_node_partitions`) decides it
    when given; a node's own answer must then agree."""

    def __init__(self, grid, timeout: float, num_clients: int, bound: dict | None = None):
        self.grid = grid
        self.timeout = timeout
        self.num_clients = num_clients
        self.bound = bound
        self.conflicts = []  # claims refused at the partition query, with reasons
        self.pid_of = {}  # node id -> partition id
        self.has_switch = set()  # node ids holding SLoRA's switch payload
        self.silent = set()  # node ids that did not answer the partition query (not asked again)
        self.refused = set()  # node ids refused by the binding (not asked again)

    def refresh(self) -> None:
        listed = set(self.grid.get_node_ids())
        for gone in set(self.pid_of) - listed:
            del self.pid_of[gone]
            self.has_switch.discard(gone)
        new = sorted(listed - set(self.pid_of) - self.silent - self.refused)
        if self.bound is not None:
            for node in [n for n in new if n not in self.bound]:
                self.refused.add(node)
                self._conflict(node, None, "not in the node-partitions file: no partition is bound to this node")
            new = [n for n in new if n in self.bound]
        if not new:
            return
        asks = [Message(RecordDict(), node, "query.partition") for node in new]
        # A node that does not answer within the timeout (e.g. a dead one the SuperLink still
        # lists) is not asked again: a restarted SuperNode comes back under a new id.
        self.silent.update(new)
        for reply in self.grid.send_and_receive(asks, timeout=self.timeout):
            self.silent.discard(reply.metadata.src_node_id)
            if reply.has_error():
                log(WARNING, "node %s did not say its partition id: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            node = reply.metadata.src_node_id
            try:
                answer = reply.content["config"]["partition-id"]
                if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < self.num_clients:
                    raise ValueError(f"partition-id {answer!r} is not an integer in 0..{self.num_clients - 1}")
                pid = answer
            except Exception as e:  # whatever a node answers, the run goes on without it
                self._conflict(node, None, f"malformed partition answer: {e}")
                continue
            if self.bound is not None and self.bound.get(node) != pid:
                # An authenticated node holds the partition the operator bound to its key, or none.
                self.refused.add(node)
                self._conflict(node, pid, f"claims partition {pid}; the node-partitions file binds it to partition {self.bound.get(node)}")
                continue
            # A partition is held by the first node that claimed it while that node is listed (a
            # rejoined node's old id is dropped above): a second claim does not evict it.
            holder = self.node_of(pid)
            if holder is not None and holder != node:
                self._conflict(node, pid, f"claims partition {pid}, which node {holder} holds")
                continue
            self.pid_of[node] = pid
            log(INFO, "node %s holds partition %s", node, pid)

    def _conflict(self, node, pid, reason: str) -> None:
        log(WARNING, "node %s refused at the partition query: %s", node, reason)
        self.conflicts.append({"node": node, "partition": pid, "reason": reason})

    def node_of(self, pid: int):
        for node, p in self.pid_of.items():
            if p == pid:
                return node
        return None

    def wait_for(self, num_clients: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.refresh()
            if len(set(self.pid_of.values())) >= num_clients or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        missing = sorted(set(range(num_clients)) - set(self.pid_of.values()))
        if missing:
            log(WARNING, "no SuperNode holds partitions %s; their rounds go on without them", missing)
