"""Encoding under torchrun (2 ranks, gloo, on the CPU) against a single process, and the sharding helpers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import precisions
from test_pipeline import FAST, fast_config, folder, reference  # noqa: F401 (fixtures: the single-process encode to match)

from latentds.encoding.distributed import Group, assign, from_env
from latentds.format import LdsReader

pytestmark = pytest.mark.usefixtures("one_thread")

# Runs the CLI in each rank. With PER_RANK_WORK each rank has its own work dir (as on machines without a
# shared file system), so checkpoints must travel through the process group. With FAIL_RANK set, that rank
# dies right after checkpointing its first unit, as a killed process would.
SCRIPT = textwrap.dedent("""
    import os, sys
    from latentds import cli
    from latentds.encoding import pipeline

    rank = int(os.environ["RANK"])
    argv = sys.argv[1:]
    if os.environ.get("PER_RANK_WORK"):
        argv += ["--work-dir", os.path.join(os.environ["PER_RANK_WORK"], f"rank{rank}")]
    if os.environ.get("FAIL_RANK") == str(rank):
        def die(unit):
            print(f"rank {rank}: simulated crash after {unit.name}", flush=True)
            os._exit(3)
        pipeline._after_unit = die
    sys.exit(cli.main(argv))
""")


def torchrun(tmp_path: Path, argv: list[str], nproc: int = 2, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "rank.py"
    script.write_text(SCRIPT)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}  # the reference runs on one thread too
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(script), *argv]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


def encode_argv(folder: Path, out: Path, precision: str = "fp32") -> list[str]:
    sets = [x for s in FAST for x in ("--set", s)]
    return ["encode", str(folder), str(out), "--preset", "smoke", "--quiet", "--precision", precision, *sets]


def assert_same_tensors(a: Path, b: Path) -> None:
    ra, rb = LdsReader(a, verify=True), LdsReader(b, verify=True)
    assert set(ra.tensors) == set(rb.tensors)
    for name in ra.tensors:  # latents, labels and every generator tensor, bit for bit
        assert torch.equal(ra.tensor(name), rb.tensor(name)), name


def untimed(d):
    """Stats without wall times and rates."""
    if isinstance(d, dict):
        return {k: untimed(v) for k, v in d.items() if not ("seconds" in k or k.endswith("per_s"))}
    if isinstance(d, list):
        return [untimed(v) for v in d]
    return d


@pytest.mark.parametrize("precision", precisions())
def test_two_ranks_write_the_single_process_file(precision, reference, folder, tmp_path):
    if precision != "fp32":  # the module's reference is the suite's fp32
        from latentds.encoding import pipeline

        reference = pipeline.run(str(folder), tmp_path / "ref.lds", fast_config(f"precision={precision}"),
                                    progress=False, quiet=True)
    out = tmp_path / "two.lds"
    res = torchrun(tmp_path, encode_argv(folder, out, precision))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_tensors(reference, out)
    m = LdsReader(out).manifest["provenance"]
    assert m["run"]["distributed"]["world_size"] == 2
    assert sorted(m["run"]["distributed"]["units_by_rank"]) == [3, 3]  # 6 units of 3 + 2 latents, dealt out evenly
    # the loss records do not depend on who ran what either (timings do)
    assert untimed(m["losses"]) == untimed(LdsReader(reference).manifest["provenance"]["losses"])
    log = (tmp_path / "two.work" / "encode.log").read_text()
    assert "[rank 0/2]" in log and "[rank 1/2]" in log and "this rank: " in log
    # each unit was condensed exactly once
    assert sum(line.count("] condense c") for line in log.splitlines()) == 6


def test_killed_rank_resumes_without_a_shared_file_system(reference, folder, tmp_path):
    out = tmp_path / "resumed.lds"
    work = tmp_path / "work"
    res = torchrun(tmp_path, encode_argv(folder, out), PER_RANK_WORK=str(work), FAIL_RANK="1")
    assert res.returncode != 0 and "simulated crash" in res.stdout + res.stderr
    assert not out.exists()
    # rank 1 kept the unit it finished; rank 0 got the generator and classifier only through the group...
    assert len(list((work / "rank1" / "units").glob("*.safetensors"))) == 1
    assert (work / "rank1" / "gan" / "generator.safetensors").is_file()
    assert (work / "rank1" / "classifier").is_dir()
    # ... and the rerun skips every finished unit, wherever it lies, then rank 0 collects the rest
    res = torchrun(tmp_path, encode_argv(folder, out), PER_RANK_WORK=str(work))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_tensors(reference, out)
    log = (work / "rank0" / "encode.log").read_text().split("[rank 0/2] encode:")[-1]  # the second run
    inv_done, units_done = map(int, re.search(r"\((\d+) and (\d+) already done\)", log).groups())
    assert units_done >= 1 and inv_done >= 1
    assert len(list((work / "rank0" / "units").glob("*.safetensors"))) == 6  # rank 0 holds all for the write


def test_assign_deals_longest_first_and_is_deterministic():
    costs = [5, 5, 5, 5, 2, 10]
    owner = assign(costs, 2)
    assert owner == assign(costs, 2)
    loads = [sum(c for c, o in zip(costs, owner) if o == r) for r in range(2)]
    assert sorted(loads) == [15, 17]  # 10 | 5 5 | 5 5 | 2 to the lighter rank (greedy, not optimal: 16/16 exists)
    assert assign(costs, 1) == [0] * 6
    assert assign([], 3) == []
    assert sorted(assign([1] * 7, 3)) == [0, 0, 0, 1, 1, 2, 2]


def test_single_process_group_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    g = from_env()
    assert (g.rank, g.world_size, g.is_main, g.distributed) == (0, 1, True, False)
    g.barrier()
    assert g.broadcast_json({"a": 1}) == {"a": 1}
    (tmp_path / "f").write_bytes(b"x")
    assert g.sync_files([tmp_path / "f"]) == 0
    with pytest.raises(RuntimeError, match="no rank has this file"):
        g.sync_files([tmp_path / "missing"])
    assert isinstance(g, Group)


def test_world_size_without_a_rendezvous_is_a_clear_error(monkeypatch):
    from latentds.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        from_env()


def test_scaling_model_counts_units_and_divides_the_work(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tools" / "scaling_model.py"
    spec = importlib.util.spec_from_file_location("scaling_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "s.json"
    assert mod.main(["--preset", "smoke", "--ranks", "1", "2", "64", "--set", "condense.batch_syn=16",
                     "--set", "invert.batch_size=8", "--set", "condense.batch_real=16", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["datasets"]
    assert [r["units"] for r in rows.values()] == [40, 100, 2000]  # subsets of 1,250: 4, 1 and 2 per class
    # inversion is dealt out in units of invert.batch_size images, so it scales past the number of classes
    assert [r["invert_units"] for r in rows.values()] == [10 * 625, 100 * 63, 1000 * 161]
    for r in rows.values():
        one, two, many = (r["by_ranks"][k] for k in ("1", "2", "64"))
        assert one == pytest.approx(r["serial_s"]) and one / 2 * (1 - 1e-9) <= two < one and many <= two


def test_cli_dist_timeout_default_matches_the_library():
    from latentds.encoding.commands import DIST_TIMEOUT_HOURS
    from latentds.encoding.distributed import DEFAULT_TIMEOUT_S

    assert DIST_TIMEOUT_HOURS * 3600 == DEFAULT_TIMEOUT_S
