"""Condensation's embedding-network pool: snapshots of independent real-data classifier runs, filtered by accuracy.

The reference IT-GAN code draws each step's embedding net from a pool of up to 5,000 ConvNets pre-trained on
real data and filtered by validation accuracy; DM draws a freshly initialized one every step. Here:

- ``pool.runs = 0`` (the default): the pool is the main classifier's snapshots (``classifier.snapshot_every``).
- ``pool.runs = R``: R more classifiers are trained, each from its own seed on its own random subset of
  ``pool.subset`` training images, for ``pool.epochs`` epochs, keeping a snapshot every ``pool.snapshot_every``
  epochs. ``pool.val_size`` training images are held out of every pool run; each candidate's accuracy on them is
  measured and candidates under ``pool.min_acc`` are dropped. The main classifier's snapshots join the pool when
  ``pool.include_main`` (they trained on the held-out images, so their figure is a training accuracy).
- ``condense.pool_prob`` mixes the pool with fresh randomly initialized ConvNets (0: random nets only, DM's way).

Pool runs use the main classifier's section (architecture, width, optimizer, DSA) and the whole set's
normalization. Their files live in ``<work dir>/classifier/pool/run_XX/`` (train_classifier's own files: cached
and resumable), so a resumed encode or a torchrun rank loads them instead of training again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentds.encoding.classifier import accuracy, load_snapshots, train_classifier
from latentds.encoding.config import ClassifierConfig, PoolConfig
from latentds.errors import ConfigError
from latentds.plan import Compute
from latentds.sources import ImageSet

__all__ = ["build_pool", "pool_split"]

POOL_DIR = "pool"


def pool_split(n: int, cfg: PoolConfig, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(held-out indices, one index set per pool run), drawn from ``seed`` alone; every set sorted ascending."""
    from latentds.encoding.condense import derive_seed

    g = torch.Generator().manual_seed(derive_seed(seed, "pool-split"))
    perm = torch.randperm(n, generator=g)
    val_size = min(cfg.val_size, n - 1) if cfg.runs else min(cfg.val_size, n)
    val, rest = perm[:val_size].sort().values, perm[val_size:]
    take = rest.numel() if cfg.subset == 0 else min(cfg.subset, rest.numel())
    runs = []
    for r in range(cfg.runs):
        gr = torch.Generator().manual_seed(derive_seed(seed, "pool-run", r))
        runs.append(rest[torch.randperm(rest.numel(), generator=gr)[:take]].sort().values)
    return val, runs


def build_pool(
    data: ImageSet,
    classifier: ClassifierConfig,
    cfg: PoolConfig,
    folder: str | Path,
    device: torch.device,
    seed: int,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    compute: Compute | None = None,
    normalization: tuple[list[float], list[float]] | None = None,
) -> tuple[list[nn.Module], dict[str, Any]]:
    """The embedding pool (eval-mode nets, each with ``pool_name`` and ``val_acc``) and its provenance stats.

    ``folder`` is the main classifier's work folder: its snapshots, and the pool runs under ``folder/pool``.
    """
    from latentds.encoding.condense import derive_seed

    say = log or (lambda _line: None)
    folder = Path(folder)
    mean, std = normalization or data.mean_std()
    val, run_indices = pool_split(len(data), cfg, seed)
    candidates: list[nn.Module] = []
    if cfg.include_main:
        for net in load_snapshots(folder, device):
            net.pool_name, net.held_out_seen = f"main/epoch_{net.snapshot_epoch:04d}", True
            candidates.append(net)
    train_seconds, cached = 0.0, 0
    for r, idx in enumerate(run_indices):
        subset = ImageSet.from_tensors(data.images[idx], data.labels[idx], data.classes, f"{data.name} [pool run {r}]")
        run_cfg = dataclasses.replace(classifier, epochs=cfg.epochs, snapshot_every=cfg.snapshot_every,
                                      lr_decay_epoch=None, seed=derive_seed(seed, "pool-classifier", r))
        say(f"pool: run {r + 1}/{cfg.runs}: {classifier.arch} on {len(subset)} images, {cfg.epochs} epochs")
        _, stats = train_classifier(subset, run_cfg, folder / POOL_DIR / f"run_{r:02d}", device, progress, None,
                                    compute=compute, normalization=(mean, std))
        train_seconds += float(stats.get("train_seconds") or 0.0)  # all sessions, cached runs too
        cached += bool(stats.get("cached"))
        for net in load_snapshots(folder / POOL_DIR / f"run_{r:02d}", device):
            net.pool_name, net.held_out_seen = f"run_{r:02d}/epoch_{net.snapshot_epoch:04d}", False
            candidates.append(net)
    kept, table = [], []
    images, labels = data.images[val], data.labels[val]
    for net in candidates:
        net.val_acc = accuracy(net, images, labels, mean, std, device) if len(val) else None
        keep = net.val_acc is None or net.val_acc >= cfg.min_acc
        table.append({"net": net.pool_name, "held_out_acc": net.val_acc, "seen_held_out": net.held_out_seen,
                      "kept": keep})
        if keep:
            kept.append(net)
    accs = [t["held_out_acc"] for t in table if t["kept"] and t["held_out_acc"] is not None]
    stats = {
        "size": len(kept), "candidates": len(candidates), "runs": cfg.runs, "min_acc": cfg.min_acc,
        "held_out": int(len(val)), "train_seconds": train_seconds, "runs_cached": cached,
        "held_out_acc_range": [min(accs), max(accs)] if accs else None, "nets": table,
    }
    if candidates and not kept:
        raise ConfigError(f"pool.min_acc {cfg.min_acc} drops all {len(candidates)} candidate nets (best held-out "
                          f"accuracy {max(t['held_out_acc'] for t in table):.2f} %); lower it")
    say(f"pool: {len(kept)} of {len(candidates)} nets kept"
        + (f" (held-out accuracy {min(accs):.1f}..{max(accs):.1f} %)" if accs else ""))
    return kept, stats
