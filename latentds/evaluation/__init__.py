"""Evaluation: train fresh networks on a training set, test them on real images, report the final epoch.

    train = training_set("cifar10_ipc10.lds")        # or "gan:G.lds", "cifar10", "pixels.npz", a folder
    test = load_test_source("cifar10")
    result = train_and_test(train, test, EvalConfig(arch="convnet3", epochs=300, seeds=3))

- :mod:`latentds.evaluation.config`: :class:`EvalConfig` (no torch: the CLI reads its defaults).
- :mod:`latentds.evaluation.trainsets`: :func:`training_set` and :class:`TrainSet`.
- :mod:`latentds.evaluation.protocol`: :func:`train_and_test`, the protocol itself (documented there).
- :mod:`latentds.evaluation.result`: :class:`EvalResult` (accuracies in percent; no torch).
- :mod:`latentds.evaluation.commands`: the ``latentds eval`` subcommand.

From paths rather than sets, the same is :func:`latentds.evaluate`.

Names are re-exported lazily, so importing the config does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DECODE_MODES",
    "EvalConfig",
    "EvalResult",
    "TrainSet",
    "accuracy",
    "augment_per_image",
    "train_and_test",
    "resolve_device",
    "training_set",
]

_HOMES = {
    "DECODE_MODES": "latentds.evaluation.config",
    "EvalConfig": "latentds.evaluation.config",
    "TrainSet": "latentds.evaluation.trainsets",
    "training_set": "latentds.evaluation.trainsets",
    "EvalResult": "latentds.evaluation.result",
    "accuracy": "latentds.evaluation.protocol",
    "train_and_test": "latentds.evaluation.protocol",
    "augment_per_image": "latentds.augment",
    "resolve_device": "latentds.devices",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'latentds.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
