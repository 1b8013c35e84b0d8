"""The Python API shows itself (signatures, docstrings of the real call), and says each option as the CLI does."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np
import pytest

import latentds
from latentds.cli import build_parser
from tests.fakedata import create_image_folder, create_npz


def test_signatures_and_docstrings_are_the_real_call() -> None:
    params = inspect.signature(latentds.evaluate).parameters
    for name in ("train", "test", "arch", "epochs", "seeds", "seed", "ipc", "data_seed", "image_size", "decode",
                 "precision", "download"):
        assert name in params
        if name not in ("train", "test"):
            assert f"``{name}``" in latentds.evaluate.__doc__  # every option documented, under its own name
    assert "latentds eval TRAIN --test TEST" in latentds.evaluate.__doc__
    assert {"source", "out", "preset", "work_dir", "generator", "download"} <= set(inspect.signature(latentds.encode).parameters)


@pytest.mark.parametrize(("api", "argv"), [
    (latentds.encode, ["encode", "cifar10", "out.lds"]),
    (latentds.train_gan, ["train-gan", "cifar10", "g.safetensors"]),
    (latentds.evaluate, ["eval", "out.lds", "--test", "cifar10"]),
    ("import_itgan", ["import-itgan", "g.pth", "z.pt", "out.lds", "--labels-from", "cifar10"]),
])
def test_download_means_the_same_in_the_api_and_the_cli(api, argv: list[str]) -> None:
    if api == "import_itgan":
        from latentds.itgan import import_itgan as api
    default = inspect.signature(api).parameters["download"].default
    assert default is True and build_parser().parse_args(argv).download is default
    assert build_parser().parse_args([*argv, "--no-download"]).download is False


def test_eval_says_seeds_and_epochs_and_warns_when_testing_on_the_training_set(tmp_path: Path, caplog) -> None:
    npz = create_npz(tmp_path / "set.npz", (3, 16, 16), per_class=4)  # no test split: --test takes it whole
    with caplog.at_level(logging.INFO, logger="latentds"):
        latentds.evaluate(npz, npz, epochs=10, seeds=2, batch_size=8, device="cpu", model_args={"width": 4})
    text = caplog.text
    assert "training 2 convnet3 networks on 12 images, 10 epochs each" in text
    assert "seed 0 (1/2): epoch 5/10" in text and "seed 1 (2/2): epoch 9/10" in text  # no bar in a log: lines
    assert "seed 1 (2/2): " in text and "memorization" in text
    assert [r.levelname for r in caplog.records if "memorization" in r.getMessage()] == ["WARNING"]


def test_no_warning_when_the_test_split_is_held_out(tmp_path: Path, caplog) -> None:
    root = create_image_folder(tmp_path / "data", (3, 16, 16), per_class=3, splits=("train", "test"))
    with caplog.at_level(logging.INFO, logger="latentds"):
        result = latentds.evaluate(root, root, epochs=1, seeds=1, batch_size=8, device="cpu", model_args={"width": 4})
    assert "memorization" not in caplog.text and np.isfinite(result.acc_mean)


def test_a_lds_tested_on_the_data_it_was_encoded_from_is_warned_about(tmp_path: Path, caplog) -> None:
    import torch

    from latentds.lds import image_spec, save_lds
    from latentds.models import create_model
    from latentds.sources import load_test_source

    folder = create_image_folder(tmp_path / "data", (3, 32, 32), classes=("cat", "dog", "ship"), per_class=2)
    source = load_test_source(str(folder))
    g = create_model("biggan32_tiny", num_classes=3, width=4).eval()
    lds = save_lds(tmp_path / "a.lds", g, torch.randn(6, 128), torch.arange(6) % 3, ["cat", "dog", "ship"],
                   image_spec([0.5] * 3, [0.25] * 3, (3, 32, 32), (-1, 1)), {"source": {"kind": "imagefolder", "fingerprint": source.fingerprint}})
    with caplog.at_level(logging.INFO, logger="latentds"):
        latentds.evaluate(lds, folder, epochs=1, seeds=1, batch_size=8, device="cpu", model_args={"width": 4})
    assert "the data this file was encoded from" in caplog.text
