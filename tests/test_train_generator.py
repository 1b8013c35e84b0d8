"""bench/train_generator.py: a generator trained over several sessions, each stopping at a checkpoint that is kept
in the repository, gives the generator of one uninterrupted run, and the record names every session."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

from tests.fakedata import create_image_folder

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "gan.batch_size=4", "--set", "gan.checkpoint_every=2", "--set", "gan.ema_start=1",
        "--set", "gan.width=8", "--set", "gan.disc_width=8"]


def _load(name: str):
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_sessions_resume_from_the_kept_checkpoint_and_end_where_one_run_does(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    tg = _load("train_generator")
    monkeypatch.setattr(tg.sets, "ARTIFACTS", tmp_path / "artifacts")
    torch.set_num_threads(1)
    data = str(create_image_folder(tmp_path / "data", (3, 32, 32), per_class=4, splits=("train", "test")))
    common = ["--iterations", "4", "--name", "tiny", "--data", data, *TINY]
    kept = tmp_path / "artifacts" / "training" / "tiny"

    assert tg.main([*common, "--work", str(tmp_path / "a"), "--hours", "0"]) == 0  # a session: one chunk, then stop
    assert tg.committed_iteration(kept / tg.CHECKPOINT) == 2
    shutil.rmtree(tmp_path / "a")  # the next session is a clean clone: no work dir, only what was committed
    assert tg.main([*common, "--work", str(tmp_path / "b")]) == 0
    out = tmp_path / "artifacts" / "cifar10-biggan32-tiny.safetensors"
    record = json.loads((kept / "record.json").read_text())
    assert [(s["from_iteration"], s["to_iteration"]) for s in record["sessions"]] == [(0, 2), (2, 4)]
    assert record["iterations"] == 4 and record["gan_config"]["width"] == 8 and "--set gan.width=8" in record["command"]
    assert not (kept / tg.CHECKPOINT).exists()  # done: the generator is the artefact, the resume state goes

    from latentds.encoding import CLASSIFIER_FILE, build_config, train_classifier
    from latentds.sources import load_source

    cfg, _ = build_config("smoke", None, ["classifier.epochs=1"])
    train_classifier(load_source(data, "train", progress=False), cfg.classifier, tmp_path / "clf", progress=False)
    monkeypatch.setattr(tg.sets, "ARTIFACTS", tmp_path / "once")
    judged = [*common, "--work", str(tmp_path / "c"), "--classifier", str(tmp_path / "clf" / CLASSIFIER_FILE)]
    assert tg.main(judged) == 0  # one session, never stopped, its samples judged after every chunk
    once, twice = load_file(tmp_path / "once" / out.name), load_file(out)
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)
    quality = json.loads((tmp_path / "once" / "training" / "tiny" / "record.json").read_text())["quality"]
    assert [q["iteration"] for q in quality["points"]] == [2, 4]
    assert 0 <= quality["classifier_test_accuracy"] <= 100
    assert all(0 <= q["accuracy"] <= 100 and q["frechet"] >= 0 for q in quality["points"] + [quality["benchmark_generator"]])
    assert tg.main([*common, "--work", str(tmp_path / "c")]) == 0  # finished: says so, trains nothing
