"""Who may hold a partition: the ServerApp's partition query against a scripted Grid, the operator's
node-partitions file, and the registration tool against a scripted `flwr`. Run by
crates/python/tests/flower.rs (`python -m unittest discover -s flower/tests`), with flwr installed.
"""

import os
import stat
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from slora_flower.nodes import Nodes, load_node_partitions  # noqa: E402
from slora_flower.register import read_keys, register, write_binding  # noqa: E402


class Reply:
    def __init__(self, node, answer):
        self.metadata = type("Metadata", (), {"src_node_id": node})()
        self.content = {"config": {"partition-id": answer}}

    def has_error(self):
        return False


class Grid:
    """Lists `answers`' nodes; each answers the partition query with its value."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.asked = []

    def get_node_ids(self):
        return list(self.answers)

    def send_and_receive(self, messages, timeout):
        nodes = [m.metadata.dst_node_id for m in messages]
        self.asked += nodes
        return [Reply(n, self.answers[n]) for n in nodes]


# Flower's Message reads the run's identity, which a ServerApp process is given (flwr 1.42 pinned).
TaskIdentity.run_id = 1
TaskIdentity.node_id = 1
TaskIdentity.task_id = 1


def reasons(nodes: Nodes) -> dict:
    return {c["node"]: c["reason"] for c in nodes.conflicts}


class PartitionClaims(unittest.TestCase):
    def test_without_a_binding_the_first_claim_holds_and_others_are_refused(self):
        grid = Grid({11: 0, 12: 1, 13: 0, 14: "zero", 15: 7})
        nodes = Nodes(grid, 1.0, num_clients=3)
        nodes.refresh()
        self.assertEqual(nodes.pid_of, {11: 0, 12: 1})
        why = reasons(nodes)
        self.assertIn("claims partition 0, which node 11 holds", why[13])
        self.assertIn("malformed partition answer", why[14])
        self.assertIn("not an integer in 0..2", why[15])

    def test_a_binding_refuses_unbound_nodes_and_wrong_claims(self):
        # 21 and 22 are bound and honest; 23 is bound to 2 but claims 0; 24 is not bound at all.
        grid = Grid({21: 0, 22: 1, 23: 0, 24: 2})
        nodes = Nodes(grid, 1.0, num_clients=3, bound={21: 0, 22: 1, 23: 2})
        nodes.refresh()
        self.assertEqual(nodes.pid_of, {21: 0, 22: 1})
        why = reasons(nodes)
        self.assertEqual(why[23], "claims partition 0; the node-partitions file binds it to partition 2")
        self.assertIn("not in the node-partitions file", why[24])
        self.assertNotIn(24, grid.asked, "an unbound node is not even asked")
        # Refused nodes are not asked again, and nothing changes on the next refresh.
        grid.asked.clear()
        nodes.refresh()
        self.assertEqual(grid.asked, [])
        self.assertEqual(len(nodes.conflicts), 2)


class NodePartitionsFile(unittest.TestCase):
    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.remove, path)
        return path

    def test_reads_node_ids_and_partitions(self):
        path = self.write('[nodes]\n"1780232334453718310" = 0\n"42" = 2\n')
        self.assertEqual(load_node_partitions(path, 3), {1780232334453718310: 0, 42: 2})

    def test_bad_files_name_the_file_and_key(self):
        cases = {
            '[nodes]\n"1" = 0\n"2" = 0\n': "nodes.2: partition 0 is already bound to node 1",
            '[nodes]\n"1" = 3\n': "nodes.1: partition id must be an integer in 0..2 (got 3)",
            '[nodes]\n"1" = true\n': "nodes.1: partition id must be an integer in 0..2 (got True)",
            '[nodes]\n"node-a" = 0\n': "nodes.node-a: a node id is a non-negative integer",
            '[nodez]\n"1" = 0\n': "unknown key `nodez`",
            "": "no [nodes] table",
            "[nodes\n": "node-partitions",
        }
        for text, want in cases.items():
            path = self.write(text)
            with self.assertRaises(ValueError) as e:
                load_node_partitions(path, 3)
            self.assertIn(path, str(e.exception), text)
            self.assertIn(want, str(e.exception), text)


class Registration(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.root = Path(self.dir.name)
        for name in ("a.pub", "b.pub"):
            (self.root / name).write_text("ecdsa-sha2-nistp384 AAAA test\n")
        # A scripted `flwr`: registers any key except one whose name contains "refused".
        self.flwr = self.root / "flwr"
        self.flwr.write_text(
            "#!/usr/bin/env python3\nimport json, sys, zlib\nkey = sys.argv[3]\n"
            "print(json.dumps({'success': False} if 'refused' in key else {'success': True, 'node-id': zlib.crc32(key.encode())}))\n"
        )
        self.flwr.chmod(self.flwr.stat().st_mode | stat.S_IEXEC)

    def test_registers_every_key_and_writes_a_binding_the_server_reads(self):
        keys_file = self.root / "keys.toml"
        keys_file.write_text(f'[keys]\n0 = "{self.root / "a.pub"}"\n1 = "{self.root / "b.pub"}"\n')
        bound = register(read_keys(str(keys_file)), "local", flwr=str(self.flwr))
        self.assertEqual(sorted(bound.values()), [0, 1])
        out = self.root / "node-partitions.toml"
        write_binding(str(out), bound)
        self.assertEqual(load_node_partitions(str(out), 2), bound)
        self.assertFalse((self.root / "node-partitions.toml.tmp").exists())

    def test_a_failed_registration_names_the_partition(self):
        (self.root / "refused.pub").write_text("x\n")
        with self.assertRaises(RuntimeError) as e:
            register({0: str(self.root / "a.pub"), 1: str(self.root / "refused.pub")}, "local", flwr=str(self.flwr))
        self.assertIn("partition 1:", str(e.exception))

    def test_bad_key_lists_name_the_key(self):
        keys_file = self.root / "keys.toml"
        for text, want in {
            f'[keys]\n0 = "{self.root / "missing.pub"}"\n': "keys.0:",
            f'[keys]\n0 = "{self.root / "a.pub"}"\n1 = "{self.root / "a.pub"}"\n': "already partition 0's key",
            f'[keys]\nx = "{self.root / "a.pub"}"\n': "keys.x: a partition id",
        }.items():
            keys_file.write_text(text)
            with self.assertRaises(ValueError) as e:
                read_keys(str(keys_file))
            self.assertIn(want, str(e.exception))


if __name__ == "__main__":
    unittest.main()
