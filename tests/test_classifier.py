"""Tests for latentds.encoding.classifier: training on a tiny synthetic set, caching, snapshots, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import latentds.encoding.classifier as classifier_mod
from latentds.checkpoint import read_model_metadata
from latentds.encoding.classifier import (
    CKPT_FILE,
    CLASSIFIER_FILE,
    accuracy,
    load_classifier,
    load_snapshots,
    train_classifier,
)
from latentds.encoding.config import ClassifierConfig
from latentds.encoding.state import TrainingInterrupted, load_state
from latentds.errors import ConfigError
from latentds.sources import ImageSet
from latentds.tensors import normalize
from tests.conftest import blobs

TINY = ClassifierConfig(width=16, epochs=4, batch_size=16, snapshot_every=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> ImageSet:
    return blobs()


@pytest.fixture(scope="module")
def test_set() -> ImageSet:
    return blobs(10, seed=1)


@pytest.fixture(scope="module")
def trained(data, test_set, tmp_path_factory) -> tuple[nn.Module, dict, Path]:
    work = tmp_path_factory.mktemp("classifier")
    model, stats = train_classifier(data, TINY, work, progress=False, test=test_set)
    return model, stats, work


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_learns_the_tiny_set(trained, data, test_set):
    model, stats, _ = trained
    assert not model.training and stats["cached"] is False
    assert stats["train_acc"] > 60 and stats["test_acc"] > 60  # percent; chance is 33
    assert stats["test_acc"] == accuracy(model, test_set.images, test_set.labels, *data.mean_std())
    assert stats["wall_time_s"] > 0 and stats["images_per_s"] > 0
    assert [h["epoch"] for h in stats["history"]] == [1, 2, 3, 4]


def test_saved_model_carries_normalization(trained, data):
    model, _, work = trained
    mean, std = data.mean_std()
    assert model.normalization == {"mean": mean, "std": std}
    loaded = load_classifier(work / CLASSIFIER_FILE)
    assert same_state(loaded, model) and loaded.normalization == model.normalization
    meta = read_model_metadata(work / CLASSIFIER_FILE)
    assert ClassifierConfig.from_dict(json.loads(meta["latentds.classifier_config"])) == TINY
    assert meta["latentds.data_fingerprint"] == data.fingerprint


def test_cache_hit_skips_training(trained, data, test_set, monkeypatch):
    model, stats, work = trained
    calls = []
    monkeypatch.setattr(classifier_mod, "dsa", lambda *a, **k: calls.append(1))  # training would call it
    again, cached = train_classifier(data, TINY, work, progress=False, test=test_set)
    assert calls == [] and cached["cached"] is True
    assert same_state(again, model) and cached["test_acc"] == stats["test_acc"]


def test_snapshots(trained):
    model, _, work = trained
    snaps = load_snapshots(work)
    assert [s.snapshot_epoch for s in snaps] == [2, 4]
    assert all(not s.training and s.normalization == model.normalization for s in snaps)
    assert same_state(snaps[-1], model) and not same_state(snaps[0], model)
    assert load_snapshots(work / "nowhere") == []


def test_resume_is_bit_identical(trained, data, tmp_path):
    model, _, _ = trained
    with pytest.raises(TrainingInterrupted):
        train_classifier(data, TINY, tmp_path, progress=False, stop_after=2)
    assert load_state(tmp_path / CKPT_FILE)[1]["epoch"] == 2
    resumed, stats = train_classifier(data, TINY, tmp_path, progress=False)
    assert same_state(resumed, model)
    assert [h["epoch"] for h in stats["history"]] == [1, 2, 3, 4]


def test_other_config_or_data_is_refused(trained, data):
    _, _, work = trained
    with pytest.raises(ConfigError, match=r"epochs: 4 -> 5"):
        train_classifier(data, replace(TINY, epochs=5), work, progress=False)
    with pytest.raises(ConfigError, match="other data"):
        train_classifier(blobs(seed=3), TINY, work, progress=False)


def test_dsa_off_and_lr_decay(data, tmp_path):
    cfg = ClassifierConfig(width=8, epochs=2, batch_size=32, dsa=False, lr_decay_epoch=1)
    assert cfg.decay_epoch == 1 and ClassifierConfig(epochs=200).decay_epoch == 100
    model, stats = train_classifier(data, cfg, tmp_path, progress=False)
    assert stats["train_acc"] is not None and not (tmp_path / "classifier_snapshots").exists()
    tensors, meta = load_state(tmp_path / CKPT_FILE)
    assert meta["opt"]["param_groups"][0]["lr"] == pytest.approx(0.001)  # decayed from epoch 1


def test_normalize():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(images, [0.0, 0.1, 0.5], [1.0, 0.1, 0.5])
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(normalize(images.float() / 255, [0.0, 0.1, 0.5], [1.0, 0.1, 0.5]), out)
    assert out.dtype == torch.float32


def test_config_validation():
    with pytest.raises(ConfigError, match="epochs"):
        ClassifierConfig(epochs=0)
    with pytest.raises(ConfigError, match="unknown field"):
        ClassifierConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="lr"):
        ClassifierConfig(lr=-1)
