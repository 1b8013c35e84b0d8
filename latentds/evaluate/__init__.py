"""Evaluation: train fresh networks on a training set, test them on real images, report the final epoch.

    train = training_set("cifar10_ipc10.lds")        # or "gan:G.lds", "cifar10", "pixels.npz", a folder
    test = load_test_source("cifar10")
    result = evaluate(train, test, EvalConfig(arch="convnet3", epochs=300, seeds=3))

- :mod:`latentds.evaluate.config`: :class:`EvalConfig` (no torch: the CLI reads its defaults).
- :mod:`latentds.evaluate.trainsets`: :func:`training_set` and :class:`TrainSet`.
- :mod:`latentds.evaluate.protocol`: :func:`evaluate`, the protocol itself (documented there).
- :mod:`latentds.evaluate.commands`: the ``latentds eval`` subcommand.

Names are re-exported lazily, so importing the config does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = [
    "DECODE_MODES",
    "EvalConfig",
    "EvalResult",
    "TrainSet",
    "accuracy",
    "augment_per_image",
    "evaluate",
    "resolve_device",
    "training_set",
]

_HOMES = {
    "DECODE_MODES": "latentds.evaluate.config",
    "EvalConfig": "latentds.evaluate.config",
    "TrainSet": "latentds.evaluate.trainsets",
    "training_set": "latentds.evaluate.trainsets",
    "EvalResult": "latentds.evaluate.protocol",
    "accuracy": "latentds.evaluate.protocol",
    "evaluate": "latentds.evaluate.protocol",
    "augment_per_image": "latentds.augment",
    "resolve_device": "latentds.common",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'latentds.evaluate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallableModule(types.ModuleType):
    """This package can be called: ``latentds.evaluate(...)`` is :func:`latentds.api.evaluate` (the package and the
    top-level function share the name; calling the package is the function)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from latentds import api

        return api.evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
