"""The Python API for the long jobs, next to the CLI: ``latentds.encode``, ``latentds.train_gan``, ``latentds.evaluate``.

    import latentds
    result = latentds.encode("path/to/images", "out.lds", preset="smoke", ipc=10, gan={"iterations": 200})
    result.path, result.num_samples, result.file_bytes, result.stage_seconds, result.final_losses

Configuration layers as on the command line: the preset, then ``config`` (a JSON/TOML file or a dict), then
``overrides`` (``{"condense.lr": 0.01}`` or ``["condense.lr=0.01"]``), then keyword fields. Progress goes to
tqdm bars and the ``latentds`` logger (``logging.basicConfig(level=logging.INFO)`` to see it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentds.evaluation.result import EvalResult

__all__ = ["EncodeResult", "EvalResult", "encode", "evaluate", "train_gan"]


@dataclass(frozen=True)
class EncodeResult:
    """What an encode run produced, read back from the file it wrote."""

    path: Path
    num_samples: int
    num_classes: int
    file_bytes: int
    preset: str
    source_bytes: int | None = None  # the source data's size, when known (the compression baseline)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # load_source, generator, ..., total
    final_losses: dict[str, float | None] = field(default_factory=dict)  # invert and condense, last values
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)  # empty for the pixel baseline's .npz

    @property
    def ratio_vs_source(self) -> float | None:
        return self.source_bytes / self.file_bytes if self.source_bytes and self.file_bytes else None


def encode(
    source: str | os.PathLike,
    out: str | os.PathLike,
    preset: str | None = None,
    *,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    work_dir: str | os.PathLike | None = None,
    generator: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = True,
    **fields: Any,
) -> EncodeResult:
    """Encode the train split of ``source`` (an image folder, .npz/.h5, ``cifar10``...) into ``out``.

    ``generator``: a trained generator file (or a .lds) to use instead of training one. Reruns with the same
    ``work_dir`` (default ``out`` with suffix ``.work``) resume. Fields: any config field, e.g. ``ipc=10``,
    ``device="cpu"``, ``seed=1``, ``gan={"iterations": 100}``.
    """
    from latentds.encoding.pipeline import run as run_encode
    from latentds.encoding.presets import build_config

    cfg, used = build_config(preset, config, overrides, **fields)
    path = run_encode(str(source), Path(out), cfg, work_dir=work_dir, generator_path=generator, root=root,
                      progress=progress, quiet=False, download=download)
    return _result(Path(path), used)


def _result(path: Path, preset: str) -> EncodeResult:
    if path.suffix.lower() == ".npz":  # the DM pixel baseline: images, no manifest
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"]
            return EncodeResult(path, len(labels), len(z["classes"]), path.stat().st_size, preset)
    from latentds.format import LdsReader

    with LdsReader(path) as reader:
        m = reader.manifest
    prov = m.get("provenance", {})
    losses = prov.get("losses", {})
    invert, condense = losses.get("invert") or {}, losses.get("condense") or {}
    curve = condense.get("loss_curve") or []
    final = {
        "invert_feature_loss": invert.get("final_feature_loss"),
        "invert_recon_mse": invert.get("final_recon_mse"),
        "condense_loss": curve[-1] if curve else None,
    }
    return EncodeResult(
        path=path, num_samples=int(m["num_samples"]), num_classes=len(m["classes"]),
        file_bytes=path.stat().st_size, preset=preset,
        source_bytes=(prov.get("source") or {}).get("bytes"),
        stage_seconds=dict((prov.get("run") or {}).get("timing_s") or {}), final_losses=final, manifest=m,
    )


def train_gan(
    source: str | os.PathLike,
    out: str | os.PathLike,
    preset: str | None = None,
    *,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    work_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = True,
    **fields: Any,
) -> tuple[Path, dict[str, Any]]:
    """Train only the generator (the ``gan`` section of the config) and save it to ``out``; (path, stats).

    The file is what ``encode(..., generator=out)`` and ``latentds eval gan:FILE`` take.
    """
    from latentds.encoding.gan import train_gan_file
    from latentds.encoding.presets import build_config

    cfg, _ = build_config(preset, config, overrides, **fields)
    run = train_gan_file(str(source), Path(out), cfg, work_dir, root, download, progress)
    return Path(out), run.stats


def evaluate(
    train: str | os.PathLike,
    test: str | os.PathLike,
    *,
    arch: str = "convnet3",
    epochs: int = 300,
    seeds: int = 3,
    ipc: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = True,
    **options: Any,
) -> EvalResult:
    """Train ``arch`` on ``train`` (a .lds, ``gan:FILE``, an image source, optionally ``ipc`` per class) and test
    on ``test``, ``seeds`` times; other ``options`` are ``EvalConfig`` fields (``lr``, ``dsa``, ``precision``)."""
    import logging

    from latentds.evaluation.config import EvalConfig
    from latentds.evaluation.protocol import train_and_test
    from latentds.evaluation.trainsets import training_set
    from latentds.sources import load_test_source

    image_size = options.pop("image_size", None)
    cfg = EvalConfig(arch=arch, epochs=epochs, seeds=seeds, batch_size=batch_size, device=device, **options)
    cfg.validate()
    train_set = training_set(str(train), ipc=ipc, root=root, device=cfg.device, progress=progress,
                             download=download, precision=cfg.precision, image_size=image_size)
    test_set = load_test_source(str(test), root=root, progress=progress, download=download, image_size=image_size)
    return train_and_test(train_set, test_set, cfg, progress=progress, log=logging.getLogger("latentds.evaluation").info)
