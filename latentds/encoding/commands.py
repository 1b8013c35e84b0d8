"""CLI subcommands of the encode pipeline: ``encode`` and ``train-gan`` (wired in by :func:`register`)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

# torch-free: the parser is built without torch; the commands import the rest when they run
from latentds.encoding.config import ENCODE_PRECISIONS, LATENT_DTYPES, EncodeConfig
from latentds.encoding.presets import list_presets

__all__ = ["cmd_encode", "cmd_train_gan", "register"]

DIST_TIMEOUT_HOURS = 24.0  # = distributed.DEFAULT_TIMEOUT_S; not imported from there, to keep torch out of --help

logger = logging.getLogger(__name__)

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _config(args: argparse.Namespace) -> EncodeConfig:
    """The preset (by device when none is named), --config, the dedicated flags, then --set (later wins)."""
    from latentds.encoding.presets import build_config

    overrides = []
    for flag, key in (("ipc", "ipc"), ("seed", "seed"), ("device", "device"), ("latent_dtype", "latent_dtype"),
                      ("precision", "precision"), ("image_size", "image_size")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg, preset = build_config(args.preset, args.config, overrides + list(args.set or []))
    if args.preset is None and args.config is None and os.environ.get("RANK", "0") == "0":
        logger.info(f"no --preset given: using '{preset}' for this "
                    f"{'GPU' if preset == 'paper' else 'CPU-only machine'} "
                    "(see --preset; 'smoke' checks the pipeline in minutes)")
    return cfg


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, choices=list_presets(),
                   help="hyperparameter preset (default: 'paper' on a GPU, 'cpu' otherwise); 'smoke' checks the "
                        "pipeline in minutes on a CPU")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="resize the images to NxN (antialiased) before anything else (default: keep their size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: the preset's (auto)")
    p.add_argument("--precision", choices=ENCODE_PRECISIONS, default=None,
                   help="training stages: auto (default: the hardware class's rule, never a timing; "
                        "`latentds info --system` shows it), fp32 (bit-identical resumes on a CPU) or bf16; "
                        "also $LATENTDS_PRECISION")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints and logs (default: OUT with suffix .work)")
    p.add_argument("--root", default=None, help="where cifar10/cifar100 live (default: the user cache dir)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch cifar10/cifar100 into --root when missing (default: yes; needs a network)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a JSON or TOML file of config fields (and optionally \"preset\"); flags and --set apply on top")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config field, e.g. --set condense.lr=0.01 --set gan.width=32 (repeatable)")


def cmd_encode(args: argparse.Namespace) -> int:
    from latentds.encoding.pipeline import run

    cfg = _config(args)
    path = run(args.source, args.out, cfg, work_dir=args.work_dir, generator_path=args.generator, root=args.root,
                  progress=not args.quiet, quiet=args.quiet, download=args.download,
                  dist_timeout_s=args.dist_timeout * 3600, record_source_path=args.record_source_path)
    if not args.quiet and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 writes the file
        print(f"wrote {path}")
    return 0


def cmd_train_gan(args: argparse.Namespace) -> int:
    import torch

    from latentds.encoding.gan import gan_quality, sample_grid, train_gan_file

    cfg = _config(args)
    out = Path(args.out)
    show = not args.quiet
    run = train_gan_file(args.source, out, cfg, args.work_dir, args.root, args.download, show)
    generator, stats, data, device, compute = run.generator, run.stats, run.data, run.device, run.compute

    def log(line: str) -> None:
        if show:
            logger.info(line)

    samples = out.with_name(out.name.split(".")[0] + ".samples.png")
    per_class = min(10, max(1, 100 // data.num_classes))
    sample_grid(generator, data.num_classes, per_class, samples, seed=cfg.seed, device=device)
    if show:
        print(f"wrote {out} ({stats.get('iterations')} iterations) and {samples}")
    if not args.no_quality:
        from latentds.encoding.classifier import train_classifier

        classifier, _ = train_classifier(data, cfg.classifier, run.work_dir / "classifier", device, show, log,
                                         compute=compute)
        with torch.no_grad():
            quality = gan_quality(generator, classifier, data.num_classes, args.quality_per_class, cfg.seed, device,
                                  real=data)
        if show:
            print(f"quality: a real-data {cfg.classifier.arch} classifies {quality['accuracy']:.1f} % of "
                  f"{quality['n']} class-conditional samples correctly")
            if "frechet" in quality:
                print(f"quality: Fréchet distance in its feature space ({quality['frechet_feature']}) "
                      f"{quality['frechet']:.2f}; between two real draws of the same size {quality['frechet_real']:.2f}")
    return 0


def register(add: Add) -> None:
    """Add the ``encode`` and ``train-gan`` subcommands through the CLI's ``add(name, func, help)``."""
    p = add("encode", cmd_encode, "encode an image dataset into a .lds file (train GAN, invert, condense)")
    p.add_argument("source", help="cifar10, cifar100, an image folder, or a .npz/.h5 file")
    p.add_argument("out", type=Path, help="the .lds file to write")
    _common(p)
    p.add_argument("--ipc", type=int, default=None, help="images (latents) per class; default: all")
    p.add_argument("--generator", type=Path, default=None,
                   help="use this generator (.safetensors from train-gan, or a .lds) instead of training one")
    p.add_argument("--latent-dtype", choices=LATENT_DTYPES, default=None, help="storage dtype (default float16)")
    p.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_HOURS, metavar="HOURS",
                   help="under torchrun: how long ranks wait for each other, e.g. while rank 0 trains the "
                        "generator (default: %(default)g)")
    p.add_argument("--record-source-path", action="store_true",
                   help="also record the source's full local path in the file (default: its kind, name and sha256 "
                        "only, so a shared file does not show where you keep your data)")

    p = add("train-gan", cmd_train_gan, "train only the class-conditional generator (+ samples and a quality figure)")
    p.add_argument("source", help="cifar10, cifar100, an image folder, or a .npz/.h5 file")
    p.add_argument("out", type=Path, help="the generator file to write (.safetensors)")
    _common(p)
    p.add_argument("--no-quality", action="store_true",
                   help="skip training the real-data classifier that measures sample quality")
    p.add_argument("--quality-per-class", type=int, default=100, help="samples per class for the quality figure")
