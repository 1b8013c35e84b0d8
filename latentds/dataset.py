"""LatentDataset: a torchvision-style dataset that decodes a .lds file's latents into images on the fly."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from latentds.devices import resolve_device
from latentds.errors import LatentdsError, LdsError
from latentds.format import LdsReader
from latentds.format.remote import is_url
from latentds.lds import load_generator, open_lds
from latentds.plan import Plan, get_plan
from latentds.tensors import channel_stats

Transform = Callable[[Any], Any]

class LatentDataset(Dataset):
    """Images decoded from a .lds file: ``dataset[i] -> (image, label)``.

    Args:
        path: a ``.lds`` (memory-mapped) or ``.lds.zst`` (decompressed into memory per process).
        transform / target_transform: applied per sample, torchvision-style.
        device: where the generator runs. ``"cuda"`` decodes in the main process only (use
            ``num_workers=0``); CPU decoding works in any number of workers.
        normalize: True returns images normalized with the manifest's mean/std; False returns [0, 1].
        precision: "auto" (default; ``$LATENTDS_PRECISION`` if set): the dtype, memory format and decode
            chunk that the device's hardware class runs fastest, a fixed rule per class, never a timing
            (:mod:`latentds.plan`); "fp32", "bf16" or "fp16" (GPU) pin the dtype.
            Images are returned as float32 either way. bf16 decoding differs from fp32 by less than one
            8-bit level (tested: max 2/255, mean 0.2/255 on [0, 1] pixels).
        dtype: the older spelling of ``precision`` (``torch.bfloat16`` = "bf16"); overrides it when given.
        batch_transform: applied to each decoded (B, C, H, W) batch before per-sample transforms,
            e.g. a GPU augmentation.
        indices: rows of the file this dataset exposes (default all); see :meth:`subset`.
        verify: check every sha256 in the file when it is opened.
        max_decode_batch: images per generator forward pass; a larger request is decoded in chunks of
            this size. Default: the plan's (16 on a CPU, where small chunks keep activations in cache;
            1024 on a GPU). Chunks of 8 or more decode each row to the same bits.

    ``__getitems__`` decodes a whole DataLoader batch in batched forward passes. Images and labels come
    back on ``device``; the tensors are ordinary (not inference-mode) tensors, so they can be trained on.
    The plan is chosen once, in the process that builds the dataset, and travels with it to workers; every
    process that builds or unpickles the dataset applies the plan's backend flags (on CUDA: TF32 and cuDNN
    autotuning off, process-wide: fp32 stays fp32, and the kernels do not change from run to run). The dataset
    pickles as its path and options: each worker opens the file and loads the generator once.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Transform | None = None,
        target_transform: Transform | None = None,
        device: str | torch.device = "cpu",
        normalize: bool = True,
        dtype: torch.dtype | None = None,
        precision: str = "auto",
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        verify: bool = False,
        max_decode_batch: int | None = None,
    ):
        self.path: Path | str = path if is_url(path) else Path(path)  # a URL is read in ranges (format/remote.py)
        self.transform = transform
        self.target_transform = target_transform
        self.device = resolve_device(device)  # "auto" works; an unusable device is a ConfigError
        self.normalize = normalize
        self.batch_transform = batch_transform
        if dtype is not None:
            names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
            if dtype not in names:
                raise LatentdsError(f"dtype must be one of torch.float32, torch.bfloat16, torch.float16; got {dtype}")
            precision = names[dtype]
        if max_decode_batch is not None and (isinstance(max_decode_batch, bool) or int(max_decode_batch) < 1):
            raise LatentdsError(f"max_decode_batch must be >= 1, got {max_decode_batch}")

        reader = open_lds(self.path, verify=verify)  # validated once, up front; kept for decoding in this process
        self.manifest: dict[str, Any] = reader.manifest
        self._manifest_sha256 = reader.manifest_sha256  # pins the file: a reopen (another process) must find it
        all_labels = reader.labels().numpy()
        self.plan: Plan = get_plan(self.device, precision)
        self.plan.apply_backend_flags()  # on CUDA: no TF32, no cuDNN autotuning (process-wide; see __setstate__)
        self.dtype = self.plan.decode_dtype
        self.max_decode_batch = int(max_decode_batch) if max_decode_batch is not None else self.plan.decode_chunk
        n = len(all_labels)
        if indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if self.indices.size and (self.indices.min() < -n or self.indices.max() >= n):
                raise IndexError(f"{self.path}: indices must lie in [0, {n}); got min {self.indices.min()}, max {self.indices.max()}")
            self.indices %= max(n, 1)
        self._all_labels = all_labels
        self.labels: np.ndarray = all_labels[self.indices].astype(np.int64)  # (N,): what `targets` lists
        self.classes: list[str] = list(self.manifest["classes"])
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        image = self.manifest["image"]
        self.image_shape = (image["channels"], image["height"], image["width"])
        self._reader: LdsReader | None = reader  # not pickled: each other process opens its own
        self._generator: torch.nn.Module | None = None

    @property
    def targets(self) -> list[int]:
        """The label of every sample, a list of ints as torchvision's datasets give (``labels`` is the same as a
        numpy array). Built on first use and not pickled: DataLoader workers that never read it hold no list."""
        cached = self.__dict__.get("_targets_list")
        if cached is None:
            cached = self.__dict__["_targets_list"] = self.labels.tolist()
        return cached

    # --- lazy, per-process state ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_generator"] = None
        state.pop("_targets_list", None)
        state.pop("_affine", None)  # derived from the manifest when the generator is loaded
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A copy in another process (a spawned DataLoader worker, a torch.multiprocessing rank) decodes under
        # the same backend flags as the process that chose the plan.
        self.__dict__.update(state)
        self.plan.apply_backend_flags()

    def _ensure_open(self) -> tuple[LdsReader, torch.nn.Module]:
        if self.device.type == "cuda" and get_worker_info() is not None:
            raise LatentdsError(
                "LatentDataset(device='cuda') decodes in the main process; use DataLoader(num_workers=0) "
                "(see the README, 'Fast GPU training'), or device='cpu' with workers"
            )
        if self._reader is None:
            reader = LdsReader(self.path, check_labels=False)
            if reader.manifest_sha256 != self._manifest_sha256:  # replaced since the dataset was created
                reader.close()
                raise LdsError(
                    f"{self.path}: the file changed after this dataset was created (its manifest hash differs); "
                    "its labels and classes no longer describe it. Create the LatentDataset again"
                )
            self._reader = reader
        if self._generator is None:
            self._generator = load_generator(self._reader, self.device, self.dtype, batch=self.max_decode_batch)
            if self.plan.channels_last:
                self._generator.to(memory_format=torch.channels_last)
            image = self.manifest["image"]
            lo, hi = image["generator_range"]
            mean, std = channel_stats(image["mean"], image["std"], self.device)
            # out = (G(z) - lo) / (hi - lo), then optionally (out - mean) / std: one fused affine map.
            scale = torch.full_like(mean, 1.0 / (hi - lo))
            shift = torch.full_like(mean, -lo / (hi - lo))
            if self.normalize:
                scale, shift = scale / std, (shift - mean) / std
            self._affine = (scale, shift)
        return self._reader, self._generator

    # --- decoding -------------------------------------------------------------------------------------
    def decode(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode dataset positions into ``(images (B, C, H, W) float32 on self.device, labels (B,) int64)``.

        No per-sample transforms; ``batch_transform`` is applied.
        """
        reader, generator = self._ensure_open()
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu()
        pos = self._positions(indices)
        rows = self.indices[pos]
        labels = torch.from_numpy(self._all_labels[rows].astype(np.int64)).to(self.device, non_blocking=True)
        out = []
        # no_grad, not inference_mode: inference tensors cannot be saved for backward, and users train on these.
        with torch.no_grad():
            for lo in range(0, len(rows), self.max_decode_batch):
                part = rows[lo : lo + self.max_decode_batch]
                z = reader.latents(part).to(self.device, self.dtype, non_blocking=True)
                x = generator(z, labels[lo : lo + self.max_decode_batch]).float()  # (b, C, H, W) in generator_range
                out.append(torch.addcmul(self._affine[1], x, self._affine[0]).contiguous())
            images = torch.cat(out) if out else torch.empty((0, *self.image_shape), device=self.device)
        if self.batch_transform is not None:
            images = self.batch_transform(images)
        return images, labels

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        images, labels = self.decode(indices)
        # Labels as ints (torchvision's targets) on the CPU; on a GPU, 0-d tensors on the device, so that
        # default_collate stacks them there and a batch arrives on the GPU whole.
        if self.device.type == "cpu" or self.target_transform is not None:
            targets: Sequence[Any] = labels.tolist()
        else:
            targets = labels.unbind()
        samples = []
        for img, label in zip(images, targets):
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                label = self.target_transform(label)
            samples.append((img, label))
        return samples

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.__getitems__([index])[0]

    def _positions(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Positions as int64 in [0, len), negative ones counted from the end; IndexError names the valid range."""
        n = len(self)
        pos = np.asarray(indices, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            bad = int(pos[(pos < -n) | (pos >= n)][0])
            valid = f"0..{n - 1} (or -{n}..-1 from the end)" if n else "none: the dataset is empty"
            raise IndexError(f"index {bad} is out of range for {self.path}: valid indices are {valid}, "
                             f"for its {n:,} samples")
        return pos % max(n, 1)

    def __len__(self) -> int:
        return len(self.indices)

    # --- subsets without decoding ---------------------------------------------------------------------
    def subset(
        self, indices: Sequence[int] | np.ndarray | None = None, classes: Sequence[int | str] | None = None
    ) -> LatentDataset:
        """A dataset over some positions of this one and/or some classes (by index or name). Decodes nothing."""
        pos = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if classes is not None:
            wanted = []
            for c in classes:
                if isinstance(c, str):
                    if c not in self.class_to_idx:
                        raise LatentdsError(f"unknown class {c!r}; classes in {self.path}: {', '.join(self.classes)}")
                    c = self.class_to_idx[c]
                if not 0 <= int(c) < len(self.classes):
                    raise LatentdsError(f"class index {c} out of range [0, {len(self.classes)}) for {self.path}")
                wanted.append(int(c))
            pos = pos[np.isin(self.labels[pos], wanted)]
        clone = object.__new__(LatentDataset)
        clone.__dict__.update(self.__getstate__())
        clone.indices = self.indices[pos]
        clone.labels = self._all_labels[clone.indices].astype(np.int64)
        return clone

    def per_class(self) -> dict[str, int]:
        """Number of samples per class name."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def __repr__(self) -> str:
        return (
            f"LatentDataset({str(self.path)!r}, samples={len(self)}, classes={len(self.classes)}, "
            f"image={'x'.join(map(str, self.image_shape))}, device={self.device})"
        )
