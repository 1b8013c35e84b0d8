"""An evaluation from names, the one path of ``latentds eval`` and :func:`latentds.evaluate`: load the training set
and the test set, warn when the test set is the training data, train and test.

    result = evaluate_sources("out.lds", "images/", EvalConfig(epochs=300, seeds=3), log=print)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from latentds.evaluation.config import EvalConfig
from latentds.evaluation.protocol import train_and_test
from latentds.evaluation.result import EvalResult
from latentds.evaluation.trainsets import TrainSet, training_set
from latentds.sources import ImageSet, load_test_source

__all__ = ["evaluate_sources", "same_data"]

logger = logging.getLogger("latentds.evaluation")


def evaluate_sources(
    train: str,
    test: str,
    cfg: EvalConfig,
    *,
    ipc: int | None = None,
    data_seed: int = 0,
    root: str | None = None,
    download: bool = True,
    decode: str = "once",
    image_size: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = logger.info,
) -> EvalResult:
    """Train ``cfg.seeds`` networks on the training set named ``train`` and test them on ``test`` (see
    :func:`latentds.evaluate` for every argument); ``log`` gets the progress lines (None: silent)."""
    cfg.validate()  # a bad option fails before any data is loaded
    say = log or (lambda _line: None)
    say(f"eval: loading the training set {train} and the test set {test}")
    train_set = training_set(str(train), ipc=ipc, seed=data_seed, root=root, decode=decode, device=cfg.device,
                             progress=progress, download=download, precision=cfg.precision, image_size=image_size)
    test_set = load_test_source(str(test), root=root, progress=progress, download=download, image_size=image_size)
    say(f"train: {train_set.description} ({train_set.bytes:,} bytes)")
    say(f"test:  {test_set.name}: {len(test_set):,} images")
    overlap = same_data(train_set, test_set)
    if overlap:
        logger.warning(f"the test set {test} is {overlap}: the accuracy measures memorization, not generalization; "
                       "give --test (test=) held-out images, e.g. DIR/test/ or cifar10's test split")
    return train_and_test(train_set, test_set, cfg, progress=progress, log=log)


def same_data(train: TrainSet, test: ImageSet) -> str | None:
    """How the test set is the training set's own data (same folder or file, same content hash), or None."""
    source = train.source or {}
    if source.get("fingerprint") == test.fingerprint:
        what = "the data this file was encoded from" if train.spec.lower().endswith((".lds", ".lds.zst")) else \
            "the training images"
        return f"{what} (same content sha256 {test.fingerprint[:12]}...)"
    if source.get("name") and source.get("name") == test.name:
        return f"the training set's own source ({test.name})"
    return None
