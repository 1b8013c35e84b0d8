"""The ConvNet trained on the real data: feature extractor for GAN inversion, embedding pool, quality figure.

    model, stats = train_classifier(train_set, ClassifierConfig(), work_dir, device="cuda", test=test_set)
    logits = model(normalize(images_uint8, *train_set.mean_std()))

Files in ``work_dir``:

- ``classifier.safetensors``: the trained model (``save_model``); its metadata holds the config, the data
  fingerprint, the input normalization and the stats. A later call with the same config and data loads it
  instead of training.
- ``classifier_ckpt.safetensors``: per-epoch training state (model, SGD momentum, RNG); an interrupted run
  resumes from it bit-identically (on the CPU).
- ``classifier_snapshots/epoch_XXXX.safetensors``: models every ``snapshot_every`` epochs, for the
  embedding-network pool (:func:`load_snapshots`).

Inputs are normalized with the training set's per-channel mean/std; models returned here carry them as
``model.normalization = {"mean": [...], "std": [...]}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentds.augment import DEFAULT_STRATEGY, dsa
from latentds.checkpoint import load_model, read_model_metadata, save_model
from latentds.encoding.config import ClassifierConfig, config_diff, describe_diff
from latentds.encoding.state import (
    CheckpointError,
    TrainingInterrupted,
    load_module_tensors,
    load_state,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_state,
    set_rng_state,
)
from latentds.errors import ConfigError
from latentds.models import input_args, seeded_model
from latentds.plan import Compute
from latentds.progress import progress_bar
from latentds.sources import ImageSet
from latentds.tensors import normalize

__all__ = [
    "CLASSIFIER_FILE",
    "accuracy",
    "get_lr",
    "load_classifier",
    "load_snapshots",
    "train_classifier",
]

CLASSIFIER_FILE = "classifier.safetensors"
CKPT_FILE = "classifier_ckpt.safetensors"
SNAPSHOT_DIR = "classifier_snapshots"
META_CONFIG = "latentds.classifier_config"
META_DATA = "latentds.data_fingerprint"
META_NORM = "latentds.normalization"
META_STATS = "latentds.classifier_stats"


@torch.no_grad()
def accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy in percent (as everywhere in latentds) of ``model`` (put in eval mode) on uint8 images
    (N, C, H, W) and labels (N,)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(0, images.shape[0], batch_size):
        x = normalize(images[i : i + batch_size].to(device), mean, std)
        correct += (model(x).argmax(1) == labels[i : i + batch_size].to(device)).sum()
    return 100.0 * int(correct) / max(1, images.shape[0])


# --- loading --------------------------------------------------------------------------------------------
def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A classifier saved by :func:`train_classifier` (or a snapshot), eval mode, with ``normalization``."""
    meta = read_model_metadata(path)
    model = load_model(path, device)
    if META_NORM in meta:
        model.normalization = json.loads(meta[META_NORM])
    return model


def load_snapshots(work_dir: str | Path, device: str | torch.device = "cpu") -> list[nn.Module]:
    """The snapshots written with ``snapshot_every > 0``, oldest first (an empty list if there are none)."""
    files = sorted((Path(work_dir) / SNAPSHOT_DIR).glob("epoch_*.safetensors"))
    models = []
    for f in files:
        m = load_classifier(f, device)
        m.snapshot_epoch = int(f.stem.split("_")[1])
        models.append(m)
    return models


# --- training -------------------------------------------------------------------------------------------
def get_lr(cfg: ClassifierConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based): ``cfg.lr``, x0.1 from ``cfg.decay_epoch`` on."""
    return cfg.lr * (0.1 if epoch >= cfg.decay_epoch else 1.0)


def train_classifier(
    data: ImageSet,
    cfg: ClassifierConfig,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    test: ImageSet | None = None,
    *,
    stop_after: int | None = None,
    compute: Compute | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or load the cached) classifier on ``data``; returns (model in eval mode, stats).

    ``normalization``: the input (mean, std); default ``data.mean_std()`` (a pool run on a subset passes the
    whole set's, so every embedding net sees the inputs condensation feeds it).

    ``compute``: autocast dtype and memory format (default fp32, contiguous: bit-identical resumes).

    stats: ``train_acc`` (last epoch, on augmented batches), ``test_acc`` (when ``test`` is given),
    ``wall_time_s`` (this call), ``train_seconds`` (all sessions), ``images_per_s``, ``cached``.
    ``stop_after`` (tests) raises :class:`TrainingInterrupted` after that many epochs of this call.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    say = log or (lambda _line: None)
    start = time.perf_counter()
    mean, std = ([float(v) for v in normalization[0]], [float(v) for v in normalization[1]]) if normalization \
        else data.mean_std()
    final = work_dir / CLASSIFIER_FILE
    if final.exists():
        model, stats = _cached(final, data, cfg, test, mean, std, device, start)
        say(f"classifier: using cached {final}")
        return model, stats

    compute = compute or Compute(device)
    state = _ClassifierState.build(cfg, data, device, compute)
    ckpt = work_dir / CKPT_FILE
    if ckpt.exists():
        state.resume(ckpt, cfg, data)
        say(f"classifier: resuming from {ckpt} at epoch {state.epoch}/{cfg.epochs}")
    extra = {META_NORM: json.dumps({"mean": mean, "std": std}), META_DATA: data.fingerprint,
             META_CONFIG: json.dumps(asdict(cfg), sort_keys=True)}
    epochs_this_call, session_seconds = _train_loop(state, cfg, data, work_dir, mean, std, extra, device, compute,
                                                    progress, say, stop_after)
    model, history, n = state.model.eval(), state.history, len(data)
    stats: dict[str, Any] = {
        "train_acc": history[-1]["train_acc"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "epochs": cfg.epochs,
        "train_seconds": state.train_seconds,
        "images_per_s": n * epochs_this_call / session_seconds if epochs_this_call else None,
        "history": history,
        "cached": False,
    }
    if test is not None:
        stats.update(_test_stats(model, test, mean, std, device))
        say(f"classifier: test acc {stats['test_acc']:.2f} %")
    save_model(final, model, extra={**extra, META_STATS: json.dumps(stats)})
    model.normalization = {"mean": mean, "std": std}
    stats["wall_time_s"] = time.perf_counter() - start
    return model, stats


def _cached(
    final: Path, data: ImageSet, cfg: ClassifierConfig, test: ImageSet | None, mean: list[float], std: list[float],
    device: torch.device, start: float,
) -> tuple[nn.Module, dict[str, Any]]:
    """The finished classifier of this config and data, with its stats (tested on ``test`` if not yet)."""
    meta = read_model_metadata(final)
    _check_same_run(final, meta.get(META_DATA), json.loads(meta.get(META_CONFIG, "{}")), data, asdict(cfg))
    model = load_classifier(final, device)
    stats = json.loads(meta.get(META_STATS, "{}"))
    stats.update(cached=True, wall_time_s=time.perf_counter() - start)
    if test is not None and stats.get("test_fingerprint") != test.fingerprint:
        stats.update(_test_stats(model, test, mean, std, device))
    return model, stats


@dataclass(eq=False)
class _ClassifierState:
    """What a classifier checkpoint holds: the model, SGD (momentum), the RNG and the counters."""

    model: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator  # CPU: batch order and DSA parameters
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    @classmethod
    def build(cls, cfg: ClassifierConfig, data: ImageSet, device: torch.device, compute: Compute) -> _ClassifierState:
        """A fresh model (seeded init) shaped for the data: channels, size and (ConvNets) depth by input_args."""
        kwargs: dict[str, Any] = {"num_classes": data.num_classes, **input_args(cfg.arch, data.image_shape)}
        if cfg.width is not None:
            kwargs["width"] = cfg.width
        model = compute.prepare(seeded_model(cfg.seed, cfg.arch, **kwargs).to(device))
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return cls(model, opt, torch.Generator().manual_seed(cfg.seed))

    def resume(self, ckpt: Path, cfg: ClassifierConfig, data: ImageSet) -> None:
        """Load a checkpoint written by :meth:`save` for the same data and config."""
        tensors, meta = load_state(ckpt)
        if meta.get("kind") != "classifier":
            raise CheckpointError(f"{ckpt}: not a classifier checkpoint (kind {meta.get('kind')!r})")
        _check_same_run(ckpt, meta.get("data_fingerprint"), meta.get("config", {}), data, asdict(cfg))
        load_module_tensors(self.model, tensors, "model.")
        optimizer_from_tensors(self.opt, tensors, meta["opt"], "opt.")
        set_rng_state(self.gen, tensors["rng"])
        self.epoch, self.history, self.train_seconds = meta["epoch"], meta["history"], meta["train_seconds"]

    def save(self, ckpt: Path, cfg: ClassifierConfig, data: ImageSet) -> None:
        opt_tensors, opt_meta = optimizer_to_tensors(self.opt, "opt.")
        save_state(
            ckpt,
            {**module_tensors(self.model, "model."), **opt_tensors, "rng": rng_state(self.gen)},
            {"kind": "classifier", "epoch": self.epoch, "config": asdict(cfg), "data_fingerprint": data.fingerprint,
             "opt": opt_meta, "history": self.history, "train_seconds": self.train_seconds},
        )


def _train_loop(
    state: _ClassifierState, cfg: ClassifierConfig, data: ImageSet, work_dir: Path, mean: list[float],
    std: list[float], extra: dict[str, str], device: torch.device, compute: Compute, progress: bool,
    say: Callable[[str], None], stop_after: int | None,
) -> tuple[int, float]:
    """Train from ``state.epoch`` to ``cfg.epochs``: SGD on DSA-augmented batches, a snapshot and a checkpoint
    after each epoch on schedule. Returns (epochs, seconds) of this session."""
    model, opt, gen = state.model, state.opt, state.gen
    images, labels = data.images.to(device), data.labels.to(device)
    n = images.shape[0]
    snap_dir, ckpt = work_dir / SNAPSHOT_DIR, work_dir / CKPT_FILE
    if cfg.snapshot_every:
        snap_dir.mkdir(exist_ok=True)
    bar = progress_bar(None, progress, total=cfg.epochs, initial=state.epoch, desc="classifier", unit="epoch", leave=False)
    session_start, epochs_this_call = time.perf_counter(), 0
    try:
        while state.epoch < cfg.epochs:
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = get_lr(cfg, state.epoch)
            model.train()
            perm = torch.randperm(n, generator=gen).to(device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            for i in range(0, n, cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                x = normalize(images[idx], mean, std)
                if cfg.dsa:
                    x = dsa(x, gen, DEFAULT_STRATEGY)
                with compute.autocast():
                    out = model(x).float()
                loss = F.cross_entropy(out, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct += (out.argmax(1) == labels[idx]).sum()
                loss_sum += loss.detach() * idx.shape[0]
            state.epoch += 1
            epoch = state.epoch
            epochs_this_call += 1
            state.train_seconds += time.perf_counter() - t0
            state.history.append({"epoch": epoch, "loss": float(loss_sum) / n, "train_acc": 100.0 * int(correct) / n})  # percent
            if cfg.snapshot_every and (epoch % cfg.snapshot_every == 0 or epoch == cfg.epochs):
                save_model(snap_dir / f"epoch_{epoch:04d}.safetensors", model, extra={**extra, "latentds.epoch": str(epoch)})
            state.save(ckpt, cfg, data)
            last = state.history[-1]
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['train_acc']:.1f}")
            if epoch % 10 == 0 or epoch == cfg.epochs:
                say(f"classifier epoch {epoch}/{cfg.epochs}: loss {last['loss']:.4f}, train acc {last['train_acc']:.2f} %")
            if stop_after is not None and epochs_this_call >= stop_after and epoch < cfg.epochs:
                raise TrainingInterrupted(f"stopped after {epochs_this_call} epochs (stop_after)")
    finally:
        bar.close()
    return epochs_this_call, time.perf_counter() - session_start


def _test_stats(model: nn.Module, test: ImageSet, mean: list[float], std: list[float], device: torch.device) -> dict[str, Any]:
    return {"test_acc": accuracy(model, test.images, test.labels, mean, std, device), "test_fingerprint": test.fingerprint}


def _check_same_run(
    path: Path, fingerprint: str | None, saved_cfg: dict[str, Any], data: ImageSet, cfg: dict[str, Any]
) -> None:
    """Refuse to reuse or resume ``path`` if it was made from other data or another config."""
    if fingerprint != data.fingerprint:
        raise ConfigError(
            f"{path}: made from other data (fingerprint {str(fingerprint)[:12]}..., this data "
            f"{data.fingerprint[:12]}...); use another work dir, or delete the file to start over"
        )
    diff = config_diff(saved_cfg, cfg)
    if diff:
        raise ConfigError(
            f"{path}: made with a different config ({describe_diff(saved_cfg, cfg, diff)}); use another "
            "work dir, or delete the file to start over"
        )
