"""What an evaluation returns (torch-free: the CLI and the API read it without importing torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EvalResult"]


@dataclass(frozen=True)
class EvalResult:
    """Test accuracy of networks trained from scratch on one training set, one network per seed.

    Every accuracy in latentds is a percentage (0-100), here and in curves, logs and benchmark records.
    """

    accs: list[float]  # final-epoch test accuracy per seed, percent
    acc_mean: float  # percent
    acc_std: float  # population std over the seeds (ddof=0, as np.std in the DC/DSA/DM code), percent
    seeds: list[int]
    curves: list[dict[str, list[float]]]  # per seed: lr, loss, train_acc per epoch; test_epochs, test_acc
    seed_s: list[float]  # wall time of each seed (training + testing)
    eval_s: float  # wall time of the whole evaluation
    config: dict[str, Any]  # asdict(EvalConfig), device resolved
    train: dict[str, Any]  # TrainSet.summary(): what was trained on
    test: dict[str, Any]  # name and size of the test set

    @property
    def mean(self) -> float:
        """``acc_mean``: the mean test accuracy in percent."""
        return self.acc_mean

    @property
    def std(self) -> float:
        """``acc_std``: the spread over seeds in percent."""
        return self.acc_std

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
