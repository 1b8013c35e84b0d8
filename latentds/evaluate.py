"""Evaluation: train fresh networks on a training set, test them on real images, report the final epoch.

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

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentds.augment import DEFAULT_STRATEGY, OPS, dsa, parse_strategy
from latentds.common import by_class, normalize, resolve_device
from latentds.errors import ConfigError, SourceMismatchError
from latentds.plan import Compute, get_plan
from latentds.sources import ImageSet

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

DECODE_MODES = ("once", "per-epoch")
TEST_BATCH = 1000  # images per forward pass when testing (no grad)
DECODE_BATCH = 1024  # latents per generator forward pass when decoding up front
LR_DROP = 0.1


@dataclass
class EvalConfig:
    """How networks are trained on a training set and tested (defaults: method.md's protocol)."""

    arch: str = "convnet3"
    model_args: dict[str, Any] = field(default_factory=dict)  # extra create_model() arguments, e.g. {"width": 32}
    epochs: int = 300  # condensation papers run ConvNet 300-1000 epochs on small sets; IT-GAN's ResNet runs 200
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_at: float = 0.5  # lr x0.1 from epoch floor(epochs * lr_decay_at) on (0-based); 1.0 = never
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    dsa_per_image: bool = True  # numbers drawn per image, as the reference evaluation; False: one per batch
    seeds: int = 3  # networks trained, with seeds seed, seed + 1, ...
    seed: int = 0
    device: str = "auto"  # "auto": cuda if available, else cpu
    precision: str = "auto"  # training and decoding: "auto" (measured per machine, latentds.plan), "fp32", "bf16"
    eval_every: int = 0  # also test every N epochs (curves); 0 = only after the final epoch, the one reported

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name in ("epochs", "batch_size", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"EvalConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ConfigError(f"EvalConfig.eval_every must be an int >= 0 (0 = final epoch only), got {self.eval_every!r}")
        if not 0.0 <= float(self.lr_decay_at) <= 1.0:
            raise ConfigError(f"EvalConfig.lr_decay_at must lie in [0, 1] (a fraction of the epochs), got {self.lr_decay_at!r}")
        if not float(self.lr) > 0:
            raise ConfigError(f"EvalConfig.lr must be > 0, got {self.lr!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"EvalConfig.model_args must be a dict of create_model() arguments, got {self.model_args!r}")
        if self.dsa:
            parse_strategy(self.dsa_strategy)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"EvalConfig.precision must be auto, fp32 or bf16, got {self.precision!r}")
        resolve_device(self.device)

    @property
    def decay_epoch(self) -> int:
        """First (0-based) epoch trained at the dropped lr."""
        return int(math.floor(self.epochs * float(self.lr_decay_at)))


# --------------------------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class TrainSet:
    """What a network trains on: normalized float images, labels, and where they came from."""

    images: Tensor | None  # (N, C, H, W) float32 normalized with mean/std, CPU; None if decoded per epoch
    labels: Tensor  # (N,) int64
    classes: list[str]
    mean: list[float]  # the normalization that belongs to the data (applied to the test set too)
    std: list[float]
    description: str
    bytes: int  # size of the artefact that stores this training set (the storage column)
    spec: str
    ipc: int | None = None
    image_shape: tuple[int, int, int] = (3, 32, 32)  # (C, H, W)
    latent_dataset: Any = None  # a LatentDataset when decode="per-epoch": decoded through a DataLoader each epoch

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def decode(self) -> str:
        return "per-epoch" if self.latent_dataset is not None else "once"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"TrainSet({self.description!r}, n={len(self)}, image={c}x{h}x{w}, bytes={self.bytes:,})"

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (no tensors)."""
        return {
            "spec": self.spec,
            "description": self.description,
            "num_images": len(self),
            "num_classes": self.num_classes,
            "ipc": self.ipc,
            "bytes": self.bytes,
            "mean": self.mean,
            "std": self.std,
            "decode": self.decode,
        }


def training_set(
    spec: str,
    ipc: int | None = None,
    seed: int = 0,
    root: str | None = None,
    *,
    decode: str = "once",
    device: str | torch.device = "cpu",
    mean_std: tuple[list[float], list[float]] | None = None,
    progress: bool = False,
    download: bool = False,
    precision: str = "auto",
    image_size: int | None = None,
) -> TrainSet:
    """Build the training set named by ``spec`` (``download``: fetch cifar10/cifar100 when missing).

    - ``*.lds`` / ``*.lds.zst``: the file's latents decoded by its generator (``decode="once"`` up front, or
      ``"per-epoch"``); normalized with the manifest's mean/std; with ``ipc`` a seeded random subset of the
      latents per class. ``bytes`` = file size.
    - ``gan:FILE`` (a .lds or a generator saved with ``save_model``): plain GAN samples, ``ipc`` per class
      (required) from seeded ``z ~ N(0, I)``. ``bytes`` = generator tensors + ``N * latent_dim * 4``.
    - anything else: :func:`latentds.sources.load_source` (``cifar10``, an image folder, an .npz/.h5), the
      train split, whole or ``ipc`` random images per class (seeded); normalized with the mean/std of the
      whole split. ``bytes`` = ``N * C * H * W`` (uint8 pixels) for a subset, the files' size for the whole.
      ``image_size`` resizes them (see load_source); decoded sets keep their generator's size.

    ``device`` is where a generator decodes, at ``precision`` (see :class:`~latentds.dataset.LatentDataset`);
    the returned images are float32 on the CPU. ``mean_std`` overrides
    the normalization of generator checkpoints and image sources (a .lds carries its own).
    """
    spec = str(spec)
    if decode not in DECODE_MODES:
        raise ConfigError(f"decode must be one of {', '.join(DECODE_MODES)}; got {decode!r}")
    if ipc is not None and (not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1):
        raise ConfigError(f"ipc (images per class) must be a positive int or None, got {ipc!r}")
    if mean_std is not None:
        mean_std = ([float(v) for v in mean_std[0]], [float(v) for v in mean_std[1]])
    if spec.startswith("gan:"):
        if decode != "once":
            raise ConfigError(f"{spec}: GAN samples are drawn once; decode='per-epoch' applies to .lds files")
        return _gan_set(spec, Path(spec[4:]).expanduser(), ipc, seed, resolve_device(device), mean_std, progress)
    if _is_lds(spec):
        if mean_std is not None:
            raise ConfigError(f"{spec}: a .lds is normalized with its manifest's mean/std; mean_std cannot override it")
        return _lds_set(spec, ipc, seed, resolve_device(device), decode, progress, precision)
    if decode != "once":
        raise ConfigError(f"{spec}: decode='per-epoch' applies to .lds files only, not to image sources")
    return _real_set(spec, ipc, seed, root, mean_std, progress, download, image_size)


def _is_lds(spec: str) -> bool:
    return spec.lower().endswith((".lds", ".lds.zst"))


def _subset_per_class(labels: Tensor, classes: list[str], ipc: int, seed: int, where: str) -> Tensor:
    """Indices of ``ipc`` random samples of every class (seeded), grouped by class."""
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    members = by_class(labels)
    for c, name in enumerate(classes):
        idx = members.get(c, labels.new_empty(0))
        if idx.numel() < ipc:
            raise ConfigError(
                f"{where}: class {name!r} has {idx.numel()} samples, fewer than ipc={ipc}; "
                f"use an ipc of at most {idx.numel()}, or omit ipc to use everything"
            )
        picked.append(idx[torch.randperm(idx.numel(), generator=g)[:ipc]])
    return torch.cat(picked)


def _stats(mean: list[float], std: list[float], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1),
        torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1),
    )


def _progress(iterable: Any, enabled: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, **kwargs)


def _lds_set(
    spec: str, ipc: int | None, seed: int, device: torch.device, decode: str, progress: bool, precision: str = "auto"
) -> TrainSet:
    from latentds.dataset import LatentDataset

    path = Path(spec).expanduser()
    ds = LatentDataset(path, normalize=True, device=device, precision=precision)
    image = ds.manifest["image"]
    if ipc is not None:
        ds = ds.subset(_subset_per_class(torch.from_numpy(ds.targets), ds.classes, ipc, seed, str(path)).numpy())
    labels = torch.from_numpy(np.asarray(ds.targets, dtype=np.int64))
    n = len(ds)
    images = None
    if decode == "once":
        # Deterministic decoding: decoding once and caching equals decoding on the fly every epoch.
        parts = []
        for lo in _progress(range(0, n, DECODE_BATCH), progress, desc="decode", unit="batch"):
            parts.append(ds.decode(np.arange(lo, min(lo + DECODE_BATCH, n)))[0].cpu())
        images = torch.cat(parts)  # (N, C, H, W)
    gen = ds.manifest["generator"]
    what = f"{ipc}/class random subset (seed {seed}) of the latents" if ipc else "all latents"
    return TrainSet(
        images=images,
        labels=labels,
        classes=list(ds.classes),
        mean=[float(v) for v in image["mean"]],
        std=[float(v) for v in image["std"]],
        description=f"{path.name}: {n} images decoded from {what} by {gen['arch']}",
        bytes=path.stat().st_size,
        spec=spec,
        ipc=ipc,
        image_shape=tuple(ds.image_shape),
        latent_dataset=ds if decode == "per-epoch" else None,
    )


def _load_gan(path: Path, device: torch.device) -> tuple[nn.Module, list[str], tuple[float, float], dict | None, int]:
    """(generator, classes, generator_range, image section or None, generator bytes) from a .lds or checkpoint."""
    import json

    from latentds.checkpoint import load_model, read_model_metadata
    from latentds.format import spec as lds_spec
    from latentds.lds import load_generator, open_lds
    from latentds.models import generator_contract

    if _is_lds(str(path)):
        with open_lds(path) as reader:
            generator = load_generator(reader, device)
            image = dict(reader.manifest["image"])
            classes = list(reader.manifest["classes"])
            nbytes = sum(t.nbytes for name, t in reader.tensors.items() if name.startswith(lds_spec.GENERATOR_PREFIX))
        lo, hi = image["generator_range"]
        return generator, classes, (float(lo), float(hi)), image, int(nbytes)
    generator = load_model(path, device)
    meta = read_model_metadata(path)
    contract = generator_contract(generator)
    # Optional metadata an encoder may store with a generator checkpoint: class names and the image section.
    classes = (json.loads(meta["latentds.classes"]) if "latentds.classes" in meta
               else [str(i) for i in range(contract.num_classes)])
    image = json.loads(meta["latentds.image"]) if "latentds.image" in meta else None
    lo, hi = contract.output_range
    return generator, classes, (float(lo), float(hi)), image, path.stat().st_size


def _gan_set(
    spec: str,
    path: Path,
    ipc: int | None,
    seed: int,
    device: torch.device,
    mean_std: tuple[list[float], list[float]] | None,
    progress: bool,
) -> TrainSet:
    if ipc is None:
        raise ConfigError(f"{spec}: GAN samples need ipc, the number of images to draw per class")
    from latentds.models import generator_contract

    generator, classes, (lo, hi), image, gen_bytes = _load_gan(path, device)
    latent_dim = generator_contract(generator).latent_dim
    labels = torch.arange(len(classes)).repeat_interleave(ipc)  # (N,) grouped by class
    z = torch.randn(labels.numel(), latent_dim, generator=torch.Generator().manual_seed(int(seed)))
    out = []
    with torch.inference_mode():
        for lo_i in _progress(range(0, labels.numel(), DECODE_BATCH), progress, desc="sample", unit="batch"):
            sl = slice(lo_i, lo_i + DECODE_BATCH)
            x = generator(z[sl].to(device), labels[sl].to(device)).float()
            out.append(((x - lo) / (hi - lo)).cpu())  # (b, C, H, W) on [0, 1]
    images = torch.cat(out)
    if mean_std is not None:
        mean, std = mean_std
    elif image is not None and "mean" in image:
        mean, std = [float(v) for v in image["mean"]], [float(v) for v in image["std"]]
    else:  # a bare checkpoint: normalize with the samples' own statistics (population std)
        mean = images.mean(dim=(0, 2, 3)).tolist()
        std = images.std(dim=(0, 2, 3), unbiased=False).tolist()
    m, s = _stats(mean, std)
    images = images.sub_(m).div_(s)
    return TrainSet(
        images=images,
        labels=labels,
        classes=classes,
        mean=mean,
        std=std,
        description=f"{path.name}: {labels.numel()} plain GAN samples ({ipc}/class, z ~ N(0, I), seed {seed}) of {generator.arch_name}",
        bytes=gen_bytes + labels.numel() * latent_dim * 4,  # generator + the latents at fp32
        spec=spec,
        ipc=ipc,
        image_shape=tuple(images.shape[1:]),
    )


def _real_set(
    spec: str,
    ipc: int | None,
    seed: int,
    root: str | None,
    mean_std: tuple[list[float], list[float]] | None,
    progress: bool,
    download: bool,
    image_size: int | None = None,
) -> TrainSet:
    from latentds.sources import load_source

    src = load_source(spec, "train", root=root, progress=progress, download=download, image_size=image_size)
    mean, std = mean_std if mean_std is not None else src.mean_std()  # of the whole split, not the subset
    c, h, w = src.image_shape
    if ipc is not None:
        idx = _subset_per_class(src.labels, src.classes, ipc, seed, src.name)
        pixels, labels = src.images[idx], src.labels[idx]
        nbytes = len(idx) * c * h * w  # uint8 pixels
        what = f"{ipc}/class random real subset (seed {seed})"
    else:
        pixels, labels = src.images, src.labels
        nbytes = src.source_bytes if src.source_bytes else len(src) * c * h * w
        what = "whole training split"
    m, s = _stats(mean, std)
    images = torch.cat([normalize(p, m, s) for p in pixels.split(4096)])  # (N, C, H, W) float32
    return TrainSet(
        images=images,
        labels=labels.clone(),
        classes=list(src.classes),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        description=f"{src.name}: {len(labels)} images, {what}",
        bytes=int(nbytes),
        spec=spec,
        ipc=ipc,
        image_shape=(c, h, w),
    )


# --------------------------------------------------------------------------------------------------------
def augment_per_image(x: Tensor, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY) -> Tensor:
    """DSA as the reference evaluation applies it: one op per batch, its random numbers per image.

    The numbers are drawn by :mod:`latentds.augment`'s samplers (same ranges), in image order.
    """
    tokens = parse_strategy(strategy)
    if not tokens:
        return x
    op = tokens[int(torch.randint(len(tokens), (), generator=generator))]
    size = (int(x.shape[-2]), int(x.shape[-1]))
    sampler = OPS[op][0]
    values = [sampler(generator, size) for _ in range(x.shape[0])]
    return _apply_per_image(x, op, values)


def _apply_per_image(x: Tensor, op: str, values: list[dict[str, float]]) -> Tensor:
    """Apply ``op`` to each image of ``x`` (B, C, H, W) with its own numbers; equals apply_dsa image by image."""
    b, _, h, w = x.shape

    def col(key: str) -> Tensor:  # (B,) on x's device
        return torch.tensor([v[key] for v in values], dtype=torch.float32, device=x.device)

    if op == "color":
        x = x + col("brightness").view(b, 1, 1, 1)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * col("saturation").view(b, 1, 1, 1) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * col("contrast").view(b, 1, 1, 1) + m
    if op == "crop":  # out[i, j] = x[i - dy, j - dx], zero outside
        dx, dy = col("dx").round().long(), col("dy").round().long()
        pad = int(max(dx.abs().max().item(), dy.abs().max().item()))
        padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H + 2p, W + 2p, C)
        rows = torch.arange(h, device=x.device).view(1, h) - dy.view(b, 1) + pad  # (B, H)
        cols = torch.arange(w, device=x.device).view(1, w) - dx.view(b, 1) + pad  # (B, W)
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        return padded[batch, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2).contiguous()
    if op == "cutout":
        top, left = col("top").round(), col("left").round()
        bottom, right = top + col("height").round(), left + col("width").round()
        r = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h)
        c = torch.arange(w, device=x.device, dtype=torch.float32).view(1, w)
        in_rows = (r >= top.view(b, 1)) & (r < bottom.view(b, 1))  # (B, H)
        in_cols = (c >= left.view(b, 1)) & (c < right.view(b, 1))  # (B, W)
        keep = ~(in_rows.view(b, h, 1) & in_cols.view(b, 1, w))
        return x * keep.view(b, 1, h, w).to(x.dtype)
    if op == "flip":
        return torch.where((col("flip") >= 0.5).view(b, 1, 1, 1), x.flip(-1), x)
    if op in ("scale", "rotate"):
        if op == "scale":
            sx, sy, zero = col("sx"), col("sy"), torch.zeros(b, device=x.device)
            theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
        else:
            a, zero = torch.deg2rad(col("degrees")), torch.zeros(b, device=x.device)
            cos, sin = torch.cos(a), torch.sin(a)
            theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    raise ConfigError(f"unknown DSA op {op!r}; valid ops are {', '.join(OPS)}")


# --------------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Accuracies of the networks trained on one training set, with their curves and timings."""

    accs: list[float]  # final-epoch test accuracy per seed, percent
    acc_mean: float
    acc_std: float  # population std over the seeds (ddof=0, as np.std in the DC/DSA/DM code)
    seeds: list[int]
    curves: list[dict[str, list[float]]]  # per seed: lr, loss, train_acc per epoch; test_epochs, test_acc
    seed_s: list[float]  # wall time of each seed (training + testing)
    eval_s: float  # wall time of the whole evaluation
    config: dict[str, Any]  # asdict(EvalConfig), device resolved
    train: dict[str, Any]  # TrainSet.summary()
    test: dict[str, Any]  # name and size of the test set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy(
    model: nn.Module, test: ImageSet, mean: list[float], std: list[float], device: torch.device | str = "cpu",
    compute: Compute | None = None,
) -> float:
    """Top-1 accuracy (percent) on ``test``, normalized with ``mean``/``std``, in batches of 1000, no grad."""
    device = torch.device(device)
    compute = compute or Compute(device)
    m, s = _stats(mean, std, device)
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
) -> tuple[float, dict[str, list[float]]]:
    """Train one fresh network; its final-epoch test accuracy and its curves. ``data``: train's tensors on device."""
    compute = compute or Compute(device)
    init_seed, order_seed, dsa_seed = (int(v) for v in np.random.SeedSequence(seed).generate_state(3))
    order = torch.Generator().manual_seed(order_seed)
    dsa_gen = torch.Generator().manual_seed(dsa_seed)
    model = compute.prepare(_fresh_model(cfg, train, init_seed).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    x_all, y_all = data
    curve: dict[str, list[float]] = {"lr": [], "loss": [], "train_acc": [], "test_epochs": [], "test_acc": []}
    acc = float("nan")
    bar = _progress(range(cfg.epochs), progress, desc=f"seed {seed}", unit="ep", leave=False)
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
    bar.close()
    return acc, curve  # acc: after the final epoch, never the best one


def evaluate(
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
    plan = get_plan(device, cfg.precision, decode=False)
    plan.apply_backend_flags()
    compute = plan.compute()
    start = time.perf_counter()
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    data = (train.images.to(device) if train.images is not None else None, train.labels.to(device))
    accs, curves, seed_s = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        acc, curve = _train_one(train, data, test, cfg, seed, device, progress, compute)
        seed_s.append(time.perf_counter() - t0)
        accs.append(acc)
        curves.append(curve)
        if log is not None:
            log(
                f"seed {seed}: {acc:.2f} % after epoch {cfg.epochs} "
                f"(train loss {curve['loss'][-1]:.4f}, train acc {curve['train_acc'][-1]:.1f} %, {seed_s[-1]:.1f} s)"
            )
    config = asdict(cfg)
    config["device"] = str(device)
    config["compute"] = compute.describe()
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
