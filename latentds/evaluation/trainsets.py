"""Training sets for evaluation: a .lds decoded, plain GAN samples, or real images (whole or ipc per class).

    train = training_set("cifar10_ipc10.lds")        # or "gan:G.lds", "cifar10", "pixels.npz", a folder
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentds.devices import resolve_device
from latentds.errors import ConfigError
from latentds.evaluation.config import DECODE_MODES
from latentds.progress import progress_bar
from latentds.tensors import by_class, channel_stats, normalize

__all__ = ["DECODE_BATCH", "TrainSet", "training_set"]

DECODE_BATCH = 1024  # latents per generator forward pass when decoding up front


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
    image_shape: tuple[int, int, int] | None = None  # (C, H, W); None: taken from the images or the latent dataset
    latent_dataset: Any = None  # a LatentDataset when decode="per-epoch": decoded through a DataLoader each epoch
    source: dict[str, Any] | None = None  # the real data behind it: {"name", "fingerprint"} (a .lds: its provenance's)

    def __post_init__(self) -> None:
        if self.images is not None:
            derived = tuple(int(v) for v in self.images.shape[1:])
        elif self.latent_dataset is not None:
            derived = tuple(int(v) for v in self.latent_dataset.image_shape)
        else:
            derived = None
        if self.image_shape is None and derived is None:
            raise ValueError("TrainSet: pass image_shape (C, H, W), or the images or latent_dataset it comes from")
        if self.image_shape is not None and derived is not None and tuple(self.image_shape) != derived:
            raise ValueError(f"TrainSet: image_shape {tuple(self.image_shape)} but the data is {derived}")
        self.image_shape = tuple(int(v) for v in (derived or self.image_shape))  # type: ignore[assignment]

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


def _lds_set(
    spec: str, ipc: int | None, seed: int, device: torch.device, decode: str, progress: bool, precision: str = "auto"
) -> TrainSet:
    from latentds.dataset import LatentDataset

    path = Path(spec).expanduser()
    ds = LatentDataset(path, normalize=True, device=device, precision=precision)
    image = ds.manifest["image"]
    if ipc is not None:
        ds = ds.subset(_subset_per_class(torch.from_numpy(ds.labels), ds.classes, ipc, seed, str(path)).numpy())
    labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
    n = len(ds)
    images = None
    if decode == "once":
        # Deterministic decoding: decoding once and caching equals decoding on the fly every epoch.
        parts = []
        for lo in progress_bar(range(0, n, DECODE_BATCH), progress, desc="decode", unit="batch"):
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
        source={"fingerprint": _source_fingerprint(ds.manifest)},
    )


def _source_fingerprint(manifest: dict[str, Any]) -> str | None:
    """The content hash of the data a .lds was encoded from, if its provenance records one."""
    source = manifest.get("provenance", {}).get("source")
    fingerprint = source.get("fingerprint") if isinstance(source, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def _load_gan(path: Path, device: torch.device) -> tuple[nn.Module, list[str], tuple[float, float], dict | None, int]:
    """(generator, classes, generator_range, image section or None, generator bytes) from a .lds or checkpoint."""

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
        for lo_i in progress_bar(range(0, labels.numel(), DECODE_BATCH), progress, desc="sample", unit="batch"):
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
    m, s = channel_stats(mean, std)
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
    m, s = channel_stats(mean, std)
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
        source={"name": src.name, "fingerprint": src.fingerprint},
    )
