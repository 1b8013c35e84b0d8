"""Tests for latentds.evaluate and the eval command: tiny seeded sets, a narrow ConvNet, a few epochs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentds.evaluation.protocol as ev
from latentds.augment import (
    OPS,
    DSAParams,
    _apply_per_image,
    apply_dsa,
    augment_per_image,
)
from latentds.checkpoint import save_model
from latentds.dataset import LatentDataset
from latentds.errors import ConfigError, SourceMismatchError
from latentds.evaluation import EvalConfig, TrainSet, accuracy, train_and_test, training_set
from latentds.format import spec as lds_spec
from latentds.lds import open_lds
from latentds.models import create_model
from latentds.sources import ImageSet
from tests.conftest import CLASSES, MEAN, STD, make_lds

COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]  # one per class
FAST = dict(arch="convnet3", model_args={"width": 16}, batch_size=16, device="cpu")


def colored_set(per_class: int = 20, seed: int = 0, classes: list[str] = CLASSES) -> ImageSet:
    """Class-coloured 32x32 images plus noise: (per_class * 3) uint8 images, labels grouped by class."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c, color in enumerate(COLORS):
        base = np.array(color, dtype=np.float64).reshape(1, 3, 1, 1)
        noise = rng.normal(0, 40, size=(per_class, 3, 32, 32))
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
        labels += [c] * per_class
    return ImageSet.from_tensors(torch.from_numpy(np.concatenate(images)), torch.tensor(labels), classes, "synthetic")


def as_train_set(source: ImageSet) -> TrainSet:
    mean, std = source.mean_std()
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    images = (source.images.float() / 255 - m) / s
    return TrainSet(images, source.labels.clone(), list(source.classes), mean, std, "synthetic", 0, "synthetic")


@pytest.fixture(scope="module")
def tiny() -> tuple[TrainSet, ImageSet]:
    source = colored_set()
    return as_train_set(source), colored_set(per_class=10, seed=1)


# --- training -------------------------------------------------------------------------------------------
def test_learns_far_above_chance(tiny):
    train, test = tiny
    result = train_and_test(train, test, EvalConfig(epochs=6, seeds=1, **FAST), progress=False)
    assert result.accs[0] > 80.0  # chance is 33 %
    assert result.curves[0]["loss"][-1] < result.curves[0]["loss"][0]
    assert result.acc_mean == result.accs[0] and result.acc_std == 0.0


def test_same_seed_same_result_other_seed_different(tiny):
    train, test = tiny
    cfg = EvalConfig(epochs=2, seeds=2, **FAST)
    a = train_and_test(train, test, cfg, progress=False)
    b = train_and_test(train, test, cfg, progress=False)
    assert a.accs == b.accs and a.curves == b.curves
    assert a.seeds == [0, 1]
    assert a.curves[0]["loss"] != a.curves[1]["loss"]  # seed 1 is another network, data order and DSA draw
    # ... and seed 1 alone reproduces the second network of the pair
    c = train_and_test(train, test, EvalConfig(epochs=2, seeds=1, seed=1, **FAST), progress=False)
    assert c.curves[0] == a.curves[1]


def test_global_rng_untouched(tiny):
    train, test = tiny
    state = torch.get_rng_state()
    train_and_test(train, test, EvalConfig(epochs=1, seeds=1, **FAST), progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_mean_and_population_std_over_seeds(tiny, monkeypatch):
    train, test = tiny
    accs = iter([50.0, 60.0, 70.0])
    monkeypatch.setattr(ev, "_train_one", lambda *a, **k: (next(accs), {"loss": [1.0], "train_acc": [0.0]}))
    result = train_and_test(train, test, EvalConfig(epochs=1, seeds=3, **FAST), progress=False)
    assert result.acc_mean == pytest.approx(60.0)
    assert result.acc_std == pytest.approx(np.std([50, 60, 70]))  # ddof=0: 8.165, not 10.0


def test_lr_drops_tenfold_at_half(tiny):
    train, test = tiny
    result = train_and_test(train, test, EvalConfig(epochs=6, seeds=1, lr=0.02, **FAST), progress=False)
    assert result.curves[0]["lr"] == pytest.approx([0.02] * 3 + [0.002] * 3)
    never = train_and_test(train, test, EvalConfig(epochs=2, seeds=1, lr_decay_at=1.0, **FAST), progress=False)
    assert never.curves[0]["lr"] == pytest.approx([0.01, 0.01])


def test_final_epoch_reported_not_best(tiny, monkeypatch):
    train, test = tiny
    scripted = iter([90.0, 40.0, 95.0, 60.0])  # the best (95) is not the last (60)
    monkeypatch.setattr(ev, "accuracy", lambda *a, **k: next(scripted))
    result = train_and_test(train, test, EvalConfig(epochs=4, seeds=1, eval_every=1, **FAST), progress=False)
    assert result.curves[0]["test_epochs"] == [1, 2, 3, 4]
    assert result.curves[0]["test_acc"] == [90.0, 40.0, 95.0, 60.0]
    assert result.accs == [60.0]


def test_final_epoch_tested_even_off_the_eval_grid(tiny):
    train, test = tiny
    result = train_and_test(train, test, EvalConfig(epochs=3, seeds=1, eval_every=2, **FAST), progress=False)
    assert result.curves[0]["test_epochs"] == [2, 3]
    assert result.accs[0] == result.curves[0]["test_acc"][-1]


def test_test_set_normalized_with_train_mean_std(tiny, monkeypatch):
    train, test = tiny
    seen = {}

    def spy(model, test_set, mean, std, device="cpu", compute=None):
        seen["mean"], seen["std"] = mean, std
        return 0.0

    odd = TrainSet(train.images, train.labels, train.classes, [0.1, 0.2, 0.3], [0.9, 0.8, 0.7], "odd", 0, "odd")
    monkeypatch.setattr(ev, "accuracy", spy)
    train_and_test(odd, test, EvalConfig(epochs=1, seeds=1, **FAST), progress=False)
    assert seen == {"mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7]}


def test_train_set_shape_comes_from_its_data():
    """No hidden (3, 32, 32): the shape is the images' (or the decoding dataset's), and a wrong one is refused."""
    labels = torch.zeros(2, dtype=torch.int64)
    ts = TrainSet(torch.zeros(2, 1, 28, 28), labels, ["a"], [0.5], [0.25], "grey", 0, "grey")
    assert ts.image_shape == (1, 28, 28) and "1x28x28" in repr(ts)
    with pytest.raises(ValueError, match="image_shape"):
        TrainSet(torch.zeros(2, 1, 28, 28), labels, ["a"], [0.5], [0.25], "x", 0, "x", image_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="image_shape"):
        TrainSet(None, labels, ["a"], [0.5], [0.25], "x", 0, "x")


def test_accuracy_feeds_the_model_normalized_images(tiny):
    _, test = tiny
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 0.125]
    inputs = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            inputs.append(x.clone())
            return torch.zeros(x.shape[0], 3)

    acc = accuracy(Recorder(), test, mean, std)
    expected = (test.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(torch.cat(inputs), expected)
    assert acc == pytest.approx(100.0 / 3)  # always class 0


def test_class_mismatch_is_refused(tiny):
    train, _ = tiny
    other = colored_set(per_class=2, classes=["a", "b", "c"])
    with pytest.raises(SourceMismatchError, match="class names differ"):
        train_and_test(train, other, EvalConfig(epochs=1, seeds=1, **FAST), progress=False)
    nameless = colored_set(per_class=2, classes=["0", "1", "2"])  # e.g. an .npz without class names: allowed
    train_and_test(train, nameless, EvalConfig(epochs=1, seeds=1, **FAST), progress=False)


@pytest.mark.parametrize(
    "field, value", [("epochs", 0), ("seeds", 0), ("eval_every", -1), ("lr_decay_at", 1.5), ("dsa_strategy", "crop_zoom")]
)
def test_bad_config_is_refused(field, value):
    with pytest.raises(ConfigError, match=field if field != "dsa_strategy" else "zoom"):
        EvalConfig(**{field: value}).validate()


@pytest.mark.parametrize("op", list(OPS))
def test_per_image_dsa_equals_apply_dsa_image_by_image(op):
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    values = [OPS[op][0](g, (32, 32)) for _ in range(8)]
    ref = torch.cat([apply_dsa(x[i : i + 1], DSAParams(op, v)) for i, v in enumerate(values)])
    torch.testing.assert_close(_apply_per_image(x, op, values), ref, atol=1e-4, rtol=0)


def test_per_image_dsa_varies_within_a_batch_and_is_seeded():
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = augment_per_image(x, torch.Generator().manual_seed(3), "flip")
    assert torch.equal(a, augment_per_image(x, torch.Generator().manual_seed(3), "flip"))
    flipped = sum(torch.equal(a[i], x[i].flip(-1)) for i in range(32))
    assert 0 < flipped < 32  # each image flips on its own coin, not one transform for the batch


# --- training sets --------------------------------------------------------------------------------------
def test_lds_decoded_once(tmp_path):
    path = make_lds(tmp_path / "t.lds", n=12)
    ts = training_set(str(path))
    ref, labels = LatentDataset(path).decode(np.arange(12))
    torch.testing.assert_close(ts.images, ref)
    assert torch.equal(ts.labels, labels)
    assert (ts.mean, ts.std, ts.classes) == (MEAN, STD, CLASSES)
    assert ts.bytes == path.stat().st_size and len(ts) == 12


def test_lds_ipc_subset_is_seeded(tmp_path):
    path = make_lds(tmp_path / "t.lds", n=30)
    a, b, c = (training_set(str(path), ipc=3, seed=s) for s in (0, 0, 1))
    assert torch.bincount(a.labels).tolist() == [3, 3, 3]
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    with pytest.raises(ConfigError, match="fewer than ipc=11"):
        training_set(str(path), ipc=11)


def test_lds_per_epoch_decoding_matches_decoding_once(tmp_path):
    path = make_lds(tmp_path / "t.lds", n=24)
    once = training_set(str(path))
    per_epoch = training_set(str(path), decode="per-epoch")
    assert per_epoch.images is None and per_epoch.decode == "per-epoch"
    test = colored_set(per_class=4)
    cfg = EvalConfig(epochs=2, seeds=1, **{**FAST, "batch_size": 8})
    a = train_and_test(once, test, cfg, progress=False)
    b = train_and_test(per_epoch, test, cfg, progress=False)
    np.testing.assert_allclose(a.curves[0]["loss"], b.curves[0]["loss"], rtol=1e-4)


def test_gan_samples_from_lds(tmp_path):
    path = make_lds(tmp_path / "t.lds", n=6)
    ts = training_set(f"gan:{path}", ipc=4, seed=0)
    assert ts.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ts.images.shape == (12, 3, 32, 32) and torch.isfinite(ts.images).all()
    assert (ts.mean, ts.std) == (MEAN, STD)
    with open_lds(path) as reader:
        gen_bytes = sum(t.nbytes for n, t in reader.tensors.items() if n.startswith(lds_spec.GENERATOR_PREFIX))
    assert ts.bytes == gen_bytes + 12 * 128 * 4
    assert torch.equal(training_set(f"gan:{path}", ipc=4, seed=0).images, ts.images)
    assert not torch.equal(training_set(f"gan:{path}", ipc=4, seed=1).images, ts.images)
    with pytest.raises(ConfigError, match="need ipc"):
        training_set(f"gan:{path}")


def test_gan_samples_from_checkpoint(tmp_path):
    gen = create_model("biggan32_tiny", num_classes=3, width=4)
    ckpt = save_model(tmp_path / "g.safetensors", gen)
    ts = training_set(f"gan:{ckpt}", ipc=2)
    assert ts.classes == ["0", "1", "2"] and len(ts) == 6
    assert ts.bytes == ckpt.stat().st_size + 6 * 128 * 4
    # normalized with the samples' own statistics (no manifest to say otherwise)
    torch.testing.assert_close(ts.images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(ts.images.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def _write_folder(root: Path, source: ImageSet) -> None:
    for i, (img, y) in enumerate(zip(source.images, source.labels.tolist())):
        d = root / source.classes[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")


def test_real_folder_ipc_subset(tmp_path):
    source = colored_set(per_class=5)
    _write_folder(tmp_path / "imgs", source)
    ts = training_set(str(tmp_path / "imgs"), ipc=2, seed=0, progress=False)
    assert torch.bincount(ts.labels).tolist() == [2, 2, 2]
    assert ts.bytes == 6 * 3 * 32 * 32
    mean, std = source.mean_std()  # of the whole split, not of the 6 picked
    np.testing.assert_allclose(ts.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ts.std, std, rtol=1e-6)
    assert ts.classes == CLASSES
    # the images are a subset of the folder's, normalized
    restored = (ts.images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255
    pool = source.images.float()
    for img in restored:
        assert ((pool - img).abs().amax(dim=(1, 2, 3)) < 1e-3).any()


def test_real_npz_whole(tmp_path):
    source = colored_set(per_class=4)
    npz = tmp_path / "pixels.npz"
    np.savez(npz, images=source.images.permute(0, 2, 3, 1).numpy(), labels=source.labels.numpy(), classes=np.array(CLASSES))
    ts = training_set(str(npz))
    assert len(ts) == 12 and ts.bytes == npz.stat().st_size
    with pytest.raises(ConfigError, match="per-epoch"):
        training_set(str(npz), decode="per-epoch")


# --- command --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    """The real CLI parser, so these tests also cover the wiring in latentds.cli."""
    from latentds.cli import build_parser as cli_parser

    return cli_parser()


def test_eval_command_prints_and_writes_json(tmp_path, capsys):
    train, test = colored_set(per_class=6), colored_set(per_class=3, seed=1)
    npz = tmp_path / "set.npz"
    np.savez(
        npz,
        images=train.images.permute(0, 2, 3, 1).numpy(),
        labels=train.labels.numpy(),
        test_images=test.images.permute(0, 2, 3, 1).numpy(),
        test_labels=test.labels.numpy(),
        classes=np.array(CLASSES),
    )
    out = tmp_path / "r" / "eval.json"
    args = _parser().parse_args(
        ["eval", str(npz), "--test", str(npz), "--epochs", "2", "--seeds", "2", "--ipc", "3", "--batch-size", "8",
         "--model-args", '{"width": 8}', "--device", "cpu", "--json", str(out), "-q"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "(2 seeds, convnet3, 2 epochs)" in printed
    doc = json.loads(out.read_text())
    for key in ("train", "ipc", "arch", "epochs", "seeds", "accs", "acc_mean", "acc_std", "bytes", "eval_s", "curves", "config"):
        assert key in doc, key
    assert doc["train"] == str(npz) and doc["ipc"] == 3 and doc["seeds"] == 2 and len(doc["accs"]) == 2
    assert doc["bytes"] == 9 * 3 * 32 * 32
    assert doc["config"]["model_args"] == {"width": 8} and doc["config"]["device"] == "cpu"
    assert len(doc["curves"][0]["loss"]) == 2


def test_eval_command_rejects_bad_numbers():
    with pytest.raises(SystemExit):
        _parser().parse_args(["eval", "x", "--test", "y", "--epochs", "0"])


def test_config_default_strategy_is_augments():
    from latentds import augment
    from latentds.evaluation import config

    assert config.DEFAULT_STRATEGY == augment.DEFAULT_STRATEGY  # a copy: the config module stays torch-free


def test_python_api_evaluate(tmp_path):
    import latentds

    train, test = colored_set(per_class=6), colored_set(per_class=3, seed=1)
    npz = tmp_path / "set.npz"
    np.savez(npz, images=train.images.permute(0, 2, 3, 1).numpy(), labels=train.labels.numpy(),
             test_images=test.images.permute(0, 2, 3, 1).numpy(), test_labels=test.labels.numpy(),
             classes=np.array(CLASSES))
    result = latentds.evaluate(npz, npz, epochs=2, seeds=2, ipc=3, batch_size=8, device="cpu",
                               model_args={"width": 8}, progress=False)
    assert isinstance(result, latentds.EvalResult)  # one EvalResult, the protocol's
    assert len(result.accs) == 2 and 0 <= result.mean <= 100 and result.mean == result.acc_mean
    assert result.train["num_images"] == 9 and result.curves and result.config["arch"] == "convnet3"
    import inspect

    assert "epochs" in inspect.signature(latentds.evaluate).parameters  # a real function, not a callable module
