"""The Python API for the long jobs, next to the CLI: ``latentds.encode``, ``latentds.train_gan``, ``latentds.evaluate``.

    import latentds
    result = latentds.encode("path/to/images", "out.lds", preset="smoke", ipc=10, gan={"iterations": 200})
    result.path, result.num_samples, result.file_bytes, result.stage_seconds, result.final_losses

Configuration layers as on the command line: the preset, then ``config`` (a JSON/TOML file or a dict), then
``overrides`` (``{"condense.lr": 0.01}`` or ``["condense.lr=0.01"]``), then keyword fields. Progress goes to
the ``latentds`` logger (``logging.basicConfig(level=logging.INFO)`` to see it) and, on a terminal or in a
notebook, to progress bars (never into a redirected log).

Every option has one name and one default here and on the command line (``work_dir`` is ``--work-dir``,
``download=False`` is ``--no-download``). ``download`` defaults to True in both: naming ``cifar10`` or ``cifar100``
fetches it into ``root`` when it is missing, as the CLI always did (a path is never downloaded); pass
``download=False`` offline or on a cluster whose nodes must not fetch.
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
    download: bool = True,
    progress: bool = True,
    record_source_path: bool = False,
    **fields: Any,
) -> EncodeResult:
    """Encode the train split of ``source`` (an image folder, .npz/.h5, ``cifar10``...) into ``out``.

    ``preset``: ``smoke``, ``cpu``, ``fast`` or ``paper`` (default: ``paper`` on a GPU, ``cpu`` otherwise).
    ``config``: a JSON/TOML file or a dict of config fields; ``overrides``: ``--set`` style overrides.
    ``generator``: a trained generator file (or a .lds) to use instead of training one. Reruns with the same
    ``work_dir`` (default ``out`` with suffix ``.work``) resume. ``root``: where cifar10/cifar100 live;
    ``download``: fetch them there when missing (default True; ``--no-download``). ``progress``: log lines and,
    on a terminal, bars. ``record_source_path``: also record the source's full local path in the file (by default
    its kind, name and content hash only, as a shared file should; ``--record-source-path``). Fields: any config
    field, e.g. ``ipc=10``, ``device="cpu"``, ``seed=1``, ``gan={"iterations": 100}``.
    """
    from latentds.encoding.pipeline import run as run_encode
    from latentds.encoding.presets import build_config

    cfg, used = build_config(preset, config, overrides, **fields)
    path = run_encode(str(source), Path(out), cfg, work_dir=work_dir, generator_path=generator, root=root,
                      progress=progress, quiet=False, download=download, record_source_path=record_source_path)
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
    download: bool = True,
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
    seed: int = 0,
    ipc: int | None = None,
    data_seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "auto",
    image_size: int | None = None,
    decode: str = "once",
    root: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
    **options: Any,
) -> EvalResult:
    """Train ``seeds`` fresh ``arch`` networks on ``train`` and report their final-epoch accuracy on ``test``.

    The same as ``latentds eval TRAIN --test TEST``, option for option:

    - ``train``: a ``.lds`` (decoded), ``gan:FILE`` (plain GAN samples, needs ``ipc``), or real images
      (``cifar10``, an image folder, an .npz/.h5); ``ipc``: a random subset of that many per class, drawn with
      ``data_seed`` (``--ipc``, ``--data-seed``).
    - ``test``: the test split of a source (``cifar10``, ``DIR/test/``), or the whole of one without splits. A test
      set that is the training data (same folder or file, same content hash) is warned about.
    - ``arch``, ``epochs``, ``seeds`` (networks trained, with seeds ``seed``, ``seed + 1``, ...), ``batch_size``,
      ``device`` (auto, cpu, cuda), ``precision`` (auto, fp32, bf16), ``image_size`` (resize real images),
      ``decode`` ("once" or "per-epoch"), ``root`` and ``download`` (``--no-download``) as on the command line.
    - ``options``: other :class:`~latentds.evaluation.config.EvalConfig` fields: ``lr``, ``dsa`` (``--no-dsa``),
      ``dsa_per_image`` (``--dsa-per-batch``), ``model_args`` (``--model-args``), ``eval_every``.

    Returns an :class:`EvalResult`: ``acc_mean``, ``acc_std``, ``accs`` (percent), curves and timings.
    """
    from latentds.evaluation.config import EvalConfig
    from latentds.evaluation.run import evaluate_sources

    cfg = EvalConfig(arch=arch, epochs=epochs, seeds=seeds, seed=seed, batch_size=batch_size, device=device,
                     precision=precision, **options)
    return evaluate_sources(str(train), str(test), cfg, ipc=ipc, data_seed=data_seed,
                            root=None if root is None else str(root), download=download, decode=decode,
                            image_size=image_size, progress=progress)
