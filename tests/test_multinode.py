"""Encoding across "machines": two torchrun nodes of one rank each, meeting through a c10d rendezvous on
127.0.0.1, against one process.

Each node is its own ``torchrun --nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT``
launcher, as on two hosts; with ``PER_RANK_WORK`` each rank has its own work dir, as machines without a shared
file system have, so checkpoints travel through the process group only. The short test runs in the default
suite; the slow one kills a node mid-run and resumes both from their work dirs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import SCRIPT, assert_same_tensors, encode_argv
from test_pipeline import FAST, fast_config, folder, reference  # noqa: F401 (fixtures: the single-process encode)

from latentds.format import LdsReader

pytestmark = pytest.mark.usefixtures("one_thread")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(tmp_path: Path, argv: list[str], timeout: float = 300, **env: str) -> list[subprocess.CompletedProcess]:
    """Start node 0 and node 1 (one rank each) on a fresh loopback rendezvous; wait for both."""
    script = tmp_path / "rank.py"
    script.write_text(SCRIPT)
    port = free_port()
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}  # the reference runs on one thread too
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", f"latentds-{port}", "--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1",
               "--max-restarts", "0", str(script), *argv]
        procs.append(subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for node, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
    return results


def test_two_nodes_on_loopback_write_the_single_process_file(reference, folder, tmp_path):
    out, work = tmp_path / "two.lds", tmp_path / "work"
    nodes = two_nodes(tmp_path, encode_argv(folder, out), PER_RANK_WORK=str(work))
    assert all(n.returncode == 0 for n in nodes), "\n".join(n.stdout[-3000:] for n in nodes)
    assert_same_tensors(reference, out)
    dist = LdsReader(out).manifest["provenance"]["run"]["distributed"]
    assert dist["world_size"] == 2 and sorted(dist["units_by_rank"]) == [3, 3]
    # no shared file system: each rank kept its own units; rank 0 received the rest to write the file
    assert len(list((work / "rank1" / "units").glob("*.safetensors"))) == 3
    assert len(list((work / "rank0" / "units").glob("*.safetensors"))) == 6


@pytest.mark.slow
def test_a_killed_node_resumes_from_the_work_dirs(reference, folder, tmp_path):
    """A node dies after its first unit (as a lost machine would); torchrun stops the other; the same two
    commands run again skip every finished item, wherever it lies, and write the single-process file."""
    out, work = tmp_path / "resumed.lds", tmp_path / "work"
    nodes = two_nodes(tmp_path, encode_argv(folder, out), PER_RANK_WORK=str(work), FAIL_RANK="1")
    assert any(n.returncode != 0 for n in nodes) and not out.exists()
    assert "simulated crash" in "".join(n.stdout for n in nodes)
    assert len(list((work / "rank1" / "units").glob("*.safetensors"))) == 1
    nodes = two_nodes(tmp_path, encode_argv(folder, out), PER_RANK_WORK=str(work))
    assert all(n.returncode == 0 for n in nodes), "\n".join(n.stdout[-3000:] for n in nodes)
    assert_same_tensors(reference, out)
    log = (work / "rank0" / "encode.log").read_text()
    assert "already done" in log.split("[rank 0/2] encode:")[-1]


@pytest.mark.slow
def test_two_nodes_sharing_a_work_dir(reference, folder, tmp_path):
    """On a shared file system both ranks use one work dir: nothing is copied, the file is the same."""
    out = tmp_path / "shared.lds"
    nodes = two_nodes(tmp_path, encode_argv(folder, out))
    assert all(n.returncode == 0 for n in nodes), "\n".join(n.stdout[-3000:] for n in nodes)
    assert_same_tensors(reference, out)
    assert len(list((tmp_path / "shared.work" / "units").glob("*.safetensors"))) == 6
