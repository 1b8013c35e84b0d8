"""The CIFAR-10 benchmark harness (bench/run_cifar10.py), end to end on its --tiny synthetic problem."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "run_cifar10.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FIELDS = {
    "method": str, "ipc": (int, type(None)), "arch": str, "seeds": int, "acc_mean": float, "acc_std": float,
    "accs": list, "bytes": int, "generator": (dict, type(None)), "encode_s": float, "eval_s": float, "epochs": int,
    "command": str, "device": str,
}


def _bench(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, time.perf_counter() - t0


def _module():
    spec = importlib.util.spec_from_file_location("run_cifar10", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_cifar10"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("bench")
    args = ("--tiny", "--work", str(work), "--out", str(work / "results"), "--threads", "1", "--quiet")
    first, first_s = _bench(*args)
    return {"work": work, "args": args, "out": work / "results", "first": first, "first_s": first_s}


def test_tiny_run_records(tiny_run: dict) -> None:
    bench = _module()
    records = json.loads((tiny_run["out"] / "tiny-cpu.json").read_text())
    assert isinstance(records, list)
    keys = {(r["method"], r["ipc"], r["arch"]) for r in records}
    expected = {(m, ipc, "convnet3") for m in bench.DEFAULT_METHODS for ipc in bench.TINY_IPCS}
    expected |= {(m, bench.TINY_IPCS[0], "resnet18_cifar") for m in bench.DEFAULT_METHODS}
    expected |= {("real", None, "convnet3")}
    assert keys == expected and len(records) == len(expected)  # each cell exactly once
    for r in records:
        for name, kind in FIELDS.items():
            assert isinstance(r[name], kind), (name, r[name])
        assert r["seeds"] == 3 and len(r["accs"]) == 3 and all(0.0 <= a <= 100.0 for a in r["accs"])
        assert r["acc_mean"] == pytest.approx(sum(r["accs"]) / 3)
        assert r["acc_std"] >= 0 and r["bytes"] > 0 and r["eval_s"] > 0 and r["encode_s"] >= 0
        assert r["epochs"] == bench.TINY_EPOCHS[(r["arch"], r["ipc"])]
        assert (r["generator"] is not None) == (r["method"] in bench.GAN_METHODS)
        if r["generator"] is not None:
            assert len(r["generator"]["sha256"]) == 64 and r["generator"]["gan_config"]["iterations"] == 20
        assert r["command"].split()[0] in ("latentds", "python") and f"--epochs {r['epochs']}" in r["command"]
    by = {(r["method"], r["ipc"], r["arch"]): r for r in records}
    ipc = bench.TINY_IPCS[0]
    n = 2 * ipc  # two classes
    assert by[("random", ipc, "convnet3")]["bytes"] == n * 3072  # uint8 pixels
    assert by[("dm", ipc, "convnet3")]["bytes"] == by[("dm_random", ipc, "convnet3")]["bytes"] == n * 3072
    # DM as published draws random nets only; DM beside IT-GAN shares its pool
    assert "condense.pool_prob=0" in by[("dm_random", ipc, "convnet3")]["command"]
    assert "pool_prob" not in by[("dm", ipc, "convnet3")]["command"]
    gen = by[("gan", ipc, "convnet3")]["generator"]
    assert by[("gan", ipc, "convnet3")]["bytes"] == gen["bytes"] + n * 128 * 2  # generator + fp16 latents
    lds = Path(by[("itgan", ipc, "convnet3")]["artifact"]["spec"])
    assert by[("itgan", ipc, "convnet3")]["bytes"] == lds.stat().st_size
    assert by[("itgan", ipc, "convnet3")]["encode_s"] > 0


def test_tiny_run_markdown_and_log(tiny_run: dict) -> None:
    bench = _module()
    md = (tiny_run["out"] / "tiny-cpu.md").read_text()
    main_table = md.split("\n\n")[1]  # the title, then the table of every cell
    rows = [line for line in main_table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    labels = [(cells[1].strip(), cells[2].strip()) for cells in (row.split("|") for row in rows)]
    expected = [(bench.METHOD_LABELS[m], str(i)) for i in bench.TINY_IPCS for m in bench.RUN_ORDER if m != "real"]
    assert labels == expected + [(bench.METHOD_LABELS["real"], "all")]
    assert "pending" not in main_table and "epochs" in md and "Machine:" in md
    # the equal-storage table: per IT-GAN cell, each pixel method's largest cell within the .lds's bytes
    matched = md.split("At equal storage")[1].split("\n\n")[1].splitlines()[2:]
    assert len(matched) == len(bench.TINY_IPCS) + 1  # ConvNet at both sizes, ResNet at the first
    assert all(line.count("|") == 6 for line in matched)
    log = (tiny_run["work"] / "bench.log").read_text()
    assert log.count("cell start:") == log.count("cell done:") == len(rows) + len(bench.DEFAULT_METHODS)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (tiny_run["out"] / "tiny-cpu.png").exists()
    else:
        assert (tiny_run["out"] / "tiny-cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_cells(tiny_run: dict) -> None:
    path = tiny_run["out"] / "tiny-cpu.json"
    before = path.read_text()
    proc, seconds = _bench(*tiny_run["args"])
    assert path.read_text() == before
    assert "0 pending" in proc.stdout and "cell start" not in proc.stdout
    assert seconds < max(10.0, tiny_run["first_s"] / 2)


@pytest.mark.parametrize("method", ["random", "gan", "itgan"])
def test_record_command_reproduces_the_cell(tiny_run: dict, method: str, capsys: pytest.CaptureFixture) -> None:
    """The eval part of a record's command, run through the CLI, gives the same accuracies (same machine)."""
    import torch

    from latentds.cli import main as cli_main

    records = json.loads((tiny_run["out"] / "tiny-cpu.json").read_text())
    rec = next(r for r in records if r["method"] == method and r["arch"] == "convnet3")
    argv = shlex.split(rec["command"].split(" && ")[-1])
    assert argv[:2] == ["latentds", "eval"]
    out = tiny_run["work"] / f"{method}.eval.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the harness ran (--threads 1): same kernels, same rounding
    try:
        assert cli_main([*argv[1:], "--json", str(out), "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["accs"] == pytest.approx(rec["accs"])


def test_plan_prints_cells_and_total(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = _module()
    assert bench.main(["--plan", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r"), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.strip().startswith("eval ") for line in lines) == 18  # 6 methods x (ConvNet 10, 50; ResNet 10)
    assert sum(line.strip().startswith("encode ") for line in lines) == 8  # itgan, inversion, dm, dm_random at 10 and 50
    assert any(line.startswith("total:") and " h" in line for line in lines)
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()  # --plan runs nothing


def test_epochs_fallback_and_overrides() -> None:
    bench = _module()
    epochs = {**bench.DEFAULT_EPOCHS, **bench.parse_epochs(["convnet3:20=77", "vgg11_cifar=5"])}
    s = bench.Settings(data="d", out=Path("o"), work=Path("w"), generator=Path("g"), ipcs=[10], seeds=3,
                       methods=["random"], archs=["convnet3"], resnet_ipcs=[10], epochs=epochs, preset="cpu",
                       overrides=[], device="cpu", threads=1, precision="auto", stem="x", tiny=False, quiet=True)
    assert s.epochs_for("convnet3", 20) == 77
    assert s.epochs_for("convnet3", 30) == bench.DEFAULT_EPOCHS[("convnet3", 50)]  # the next configured size up
    assert s.epochs_for("convnet3", 500) == bench.DEFAULT_EPOCHS[("convnet3", 50)]  # beyond: the largest
    assert s.epochs_for("vgg11_cifar", 10) == 5
    with pytest.raises(SystemExit):
        bench.parse_epochs(["convnet3:10"])


def test_existing_artifact_is_checked_before_reuse(tiny_run: dict, tmp_path: Path) -> None:
    """An .lds found in --work is used only if its encode config and generator are the benchmark's."""
    from latentds.checkpoint import save_model
    from latentds.models import create_model

    bench = _module()
    s = bench.settings_from_args(bench.build_parser().parse_args(list(tiny_run["args"])), list(tiny_run["args"]))
    ipc = bench.TINY_IPCS[0]
    lds = tiny_run["work"] / "artifacts" / f"itgan_ipc{ipc}.lds"
    bench.check_existing_lds(lds, bench.encode_config(s, ipc), s.generator)  # the one the run made: accepted
    with pytest.raises(SystemExit, match="condense.iterations"):
        bench.check_existing_lds(lds, bench.encode_config(s, ipc, ("condense.iterations=7",)), s.generator)
    other = save_model(tmp_path / "other.safetensors", create_model("biggan32_tiny", num_classes=2, width=4))
    with pytest.raises(SystemExit, match="another generator"):
        bench.check_existing_lds(lds, bench.encode_config(s, ipc), other)


def test_schedule_paper_or_cpu() -> None:
    bench = _module()

    def epochs(*argv: str) -> dict:
        return bench.settings_from_args(bench.build_parser().parse_args(list(argv)), list(argv)).epochs

    assert epochs("--device", "cpu") == bench.DEFAULT_EPOCHS  # a CPU gets the shortened schedule
    paper = epochs("--schedule", "paper", "--device", "cpu")
    assert paper[("convnet3", 10)] == paper[("convnet3", 50)] == 300 and paper[("resnet18_cifar", 10)] == 200
    assert epochs("--schedule", "cpu", "--device", "cuda") == bench.DEFAULT_EPOCHS
    assert epochs("--schedule", "paper", "--epochs", "convnet3:10=7")[("convnet3", 10)] == 7  # overrides still win
