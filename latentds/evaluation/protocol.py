"""The evaluation protocol: train fresh networks on a training set, test them on real images, report the final epoch.

    train = training_set("cifar10_ipc10.lds")        # or "gan:G.lds", "cifar10", "pixels.npz", a folder
    test = load_source("cifar10", split="test")
    result = evaluate(train, test, EvalConfig(arch="convnet3", epochs=300, seeds=3))
    print(f"{result.acc_mean:.2f} +- {result.acc_std:.2f} %")

The protocol (method.md, "Evaluation protocol", after DC/DSA/DM's ``evaluate_synset``): for each seed a
freshly initialized network; SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 256, lr x0.1 from half
the epochs on; DSA on every training batch; cross-entropy. The test accuracy after the *final* epoch is
reported (never the best epoch), as mean +- population std (ddof=0, as ``np.std`` in the DC/DM code)
over the seeds. Two small departures from that code: it trains ``epochs + 1`` epochs and rebuilds the
optimizer at the lr drop (dropping the momentum buffer); here it is exactly ``epochs`` epochs, one
optimizer.

DSA: as in the reference evaluation (``DiffAugment`` with ``seed=-1``, i.e. not Siamese, not batch-wise),
one op of the strategy is drawn per batch and its numbers per image (``EvalConfig.dsa_per_image``). The
numbers come from :mod:`latentds.augment`'s samplers; only their application is batched here.
``dsa_per_image=False`` applies one transform to the whole batch (:func:`latentds.augment.dsa`).

Decoding a .lds once: the generator is frozen and in eval mode, so decoding is deterministic and caching
the decoded float images for the whole run gives the same training data as decoding through
:class:`~latentds.dataset.LatentDataset` every epoch (up to float rounding that depends on the decode
batch), at a fraction of the cost on a CPU. ``decode="per-epoch"`` does the latter literally, through a
DataLoader over the LatentDataset each epoch, in the same order.

Randomness: per seed, three independent streams derived from it (``np.random.SeedSequence``): the model's
initialization (the global CPU RNG inside ``torch.random.fork_rng``, restored afterwards: the registry's
factories use PyTorch's default init), the data order and the DSA numbers (explicit ``torch.Generator``\\ s).
The same seed gives the same accuracy on the same machine and device (on CUDA, cuDNN may choose
nondeterministic kernels unless ``torch.backends.cudnn.deterministic`` is set by the caller).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentds.augment import augment_per_image, dsa
from latentds.devices import resolve_device
from latentds.errors import SourceMismatchError
from latentds.evaluation.config import EvalConfig
from latentds.evaluation.result import EvalResult
from latentds.evaluation.trainsets import TrainSet
from latentds.plan import Compute, get_plan
from latentds.progress import progress_bar, shows_bar
from latentds.sources import ImageSet
from latentds.tensors import channel_stats, normalize

__all__ = ["accuracy", "train_and_test"]

TEST_BATCH = 1000  # images per forward pass when testing (no grad)
LR_DROP = 0.1


def accuracy(
    model: nn.Module, test: ImageSet, mean: list[float], std: list[float], device: torch.device | str = "cpu",
    compute: Compute | None = None,
) -> float:
    """Top-1 accuracy (percent) on ``test``, normalized with ``mean``/``std``, in batches of 1000, no grad."""
    device = torch.device(device)
    compute = compute or Compute(device)
    m, s = channel_stats(mean, std, device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for lo in range(0, len(test), TEST_BATCH):
            x = normalize(test.images[lo : lo + TEST_BATCH].to(device), m, s)
            y = test.labels[lo : lo + TEST_BATCH].to(device)
            with compute.autocast():
                logits = model(x)
            correct += (logits.argmax(dim=1) == y).sum()
    model.train(was_training)
    return 100.0 * int(correct.item()) / len(test)


def _check_classes(train: TrainSet, test: ImageSet) -> None:
    if train.num_classes != test.num_classes:
        raise SourceMismatchError(
            f"the training set ({train.description}) has {train.num_classes} classes but the test set "
            f"{test.name} has {test.num_classes}; train and test on the same classes"
        )
    placeholder = [str(i) for i in range(train.num_classes)]  # class names unknown (e.g. a bare .npz)
    if train.classes != test.classes and placeholder not in (train.classes, test.classes):
        diff = [(a, b) for a, b in zip(train.classes, test.classes) if a != b]
        raise SourceMismatchError(
            f"class names differ between the training set ({train.spec}) and the test set ({test.name}) at "
            f"{len(diff)} label(s), e.g. {diff[:3]}; labels would mean different classes"
        )
    if tuple(train.image_shape) != tuple(test.image_shape):
        raise SourceMismatchError(
            f"training images are {'x'.join(map(str, train.image_shape))} (C x H x W) but test images ({test.name}) "
            f"are {'x'.join(map(str, test.image_shape))}; resize real images with --image-size (image_size=) to "
            "match, or evaluate against test data of the training images' shape"
        )


def _fresh_model(cfg: EvalConfig, train: TrainSet, seed: int) -> nn.Module:
    """A newly initialized ``cfg.arch``, its init drawn from ``seed`` (the global RNG is restored afterwards)."""
    from latentds.models import create_model, input_args

    # channels, size and (for ConvNets) depth by resolution; the user's model_args win
    args: dict[str, Any] = {"num_classes": train.num_classes, **input_args(cfg.arch, train.image_shape), **cfg.model_args}
    # The registry's factories use PyTorch's default init, which draws from the global CPU RNG.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        return create_model(cfg.arch, **args)


def _batches(
    train: TrainSet, x_all: Tensor | None, y_all: Tensor | None, batch_size: int, order: torch.Generator, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled batches (x (B, C, H, W) normalized, y (B,)) on ``device``."""
    chunks = list(torch.randperm(len(train), generator=order).split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:  # BatchNorm cannot train on a batch of one
        chunks[-2:] = [torch.cat(chunks[-2:])]
    if train.latent_dataset is None:
        assert x_all is not None and y_all is not None
        for idx in chunks:
            idx = idx.to(device)
            yield x_all[idx], y_all[idx]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(train.latent_dataset, batch_sampler=[idx.tolist() for idx in chunks], num_workers=0)
    for x, y in loader:  # decoded by the generator now, this epoch
        yield x.to(device), y.to(device)


def _train_one(
    train: TrainSet,
    data: tuple[Tensor | None, Tensor],
    test: ImageSet,
    cfg: EvalConfig,
    seed: int,
    device: torch.device,
    progress: bool,
    compute: Compute | None = None,
    name: str = "",
    log: Callable[[str], None] | None = None,
) -> tuple[float, dict[str, list[float]]]:
    """Train one fresh network; its final-epoch test accuracy and its curves. ``data``: train's tensors on device.
    ``name`` labels its bar and lines ("seed 0 (1/3)"); where no bar shows (a redirected log), ``log`` gets a line
    every tenth of the epochs instead."""
    compute = compute or Compute(device)
    init_seed, order_seed, dsa_seed = (int(v) for v in np.random.SeedSequence(seed).generate_state(3))
    order = torch.Generator().manual_seed(order_seed)
    dsa_gen = torch.Generator().manual_seed(dsa_seed)
    model = compute.prepare(_fresh_model(cfg, train, init_seed).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    x_all, y_all = data
    curve: dict[str, list[float]] = {"lr": [], "loss": [], "train_acc": [], "test_epochs": [], "test_acc": []}
    acc = float("nan")
    name = name or f"seed {seed}"
    bar = progress_bar(range(cfg.epochs), progress, desc=name, unit="ep", leave=False)
    every = max(1, cfg.epochs // 10) if log is not None and progress and not shows_bar(progress) else 0
    for epoch in bar:
        lr = cfg.lr * (LR_DROP if epoch >= cfg.decay_epoch else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for x, y in _batches(train, x_all, y_all, cfg.batch_size, order, device):
            if cfg.dsa:
                x = augment_per_image(x, dsa_gen, cfg.dsa_strategy) if cfg.dsa_per_image else dsa(x, dsa_gen, cfg.dsa_strategy)
            with compute.autocast():
                logits = model(x).float()
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum()
        curve["lr"].append(lr)
        curve["loss"].append(loss_sum.item() / len(train))
        curve["train_acc"].append(100.0 * correct.item() / len(train))
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            acc = accuracy(model, test, train.mean, train.std, device, compute)
            curve["test_epochs"].append(epoch + 1)
            curve["test_acc"].append(acc)
        post = {"loss": f"{curve['loss'][-1]:.3f}", "acc": f"{curve['train_acc'][-1]:.1f}"}
        if curve["test_acc"]:
            post["test"] = f"{curve['test_acc'][-1]:.2f}"
        bar.set_postfix(post, refresh=False)
        if every and (epoch + 1) % every == 0 and epoch + 1 < cfg.epochs:
            log(f"{name}: epoch {epoch + 1}/{cfg.epochs}, train loss {curve['loss'][-1]:.4f}, "
                f"train acc {curve['train_acc'][-1]:.1f} %")
    bar.close()
    return acc, curve  # acc: after the final epoch, never the best one


def train_and_test(
    train: TrainSet,
    test: ImageSet,
    cfg: EvalConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Train ``cfg.seeds`` fresh networks on ``train`` and test each after its final epoch on ``test``.

    The test images are normalized with the training set's mean/std. ``log`` receives one line per seed.
    """
    cfg = cfg or EvalConfig()
    cfg.validate()
    _check_classes(train, test)
    device = resolve_device(cfg.device)
    plan = get_plan(device, cfg.precision)
    plan.apply_backend_flags()
    compute = plan.compute()
    if log is not None:
        log(f"precision: {plan.describe()}")
        log(f"training {cfg.seeds} {cfg.arch} network{'s' if cfg.seeds > 1 else ''} on {len(train):,} images, "
            f"{cfg.epochs} epochs each, testing on {len(test):,}")
    start = time.perf_counter()
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    data = (train.images.to(device) if train.images is not None else None, train.labels.to(device))
    accs, curves, seed_s = [], [], []
    for k, seed in enumerate(seeds):
        t0 = time.perf_counter()
        name = f"seed {seed} ({k + 1}/{len(seeds)})"
        acc, curve = _train_one(train, data, test, cfg, seed, device, progress, compute, name, log)
        seed_s.append(time.perf_counter() - t0)
        accs.append(acc)
        curves.append(curve)
        if log is not None:
            log(
                f"{name}: {acc:.2f} % after epoch {cfg.epochs} "
                f"(train loss {curve['loss'][-1]:.4f}, train acc {curve['train_acc'][-1]:.1f} %, {seed_s[-1]:.1f} s)"
            )
    config = asdict(cfg)
    config["device"] = str(device)
    config["compute"] = compute.describe()
    config["hardware_class"] = plan.hardware
    return EvalResult(
        accs=accs,
        acc_mean=float(np.mean(accs)),
        acc_std=float(np.std(accs, ddof=0)),
        seeds=seeds,
        curves=curves,
        seed_s=seed_s,
        eval_s=time.perf_counter() - start,
        config=config,
        train=train.summary(),
        test={"name": test.name, "num_images": len(test)},
    )
