"""What a GAN run keeps on disk: the resumable training state and the finished generator.

- :class:`GANState`: G, D, the EMA copy, both optimizers, the RNG and the counters; built fresh for the data,
  saved to ``gan_ckpt.safetensors`` and resumed from it (same data and config, only :data:`RESUME_IGNORED`
  fields may change).
- :func:`final_generator`: the EMA generator with spectral norm folded into its weights and standing
  batch-norm statistics; :func:`save_generator` writes it (with samples) as ``generator.safetensors``, and
  :func:`finished_generator` returns it to a later call with the same config instead of training again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentds.checkpoint import load_model, read_model_metadata, save_model
from latentds.encoding.config import GANConfig, config_diff, describe_diff
from latentds.encoding.gan_samples import sample_grid, standing_stats
from latentds.encoding.state import (
    CheckpointError,
    load_module_tensors,
    load_state,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_state,
    set_rng_state,
)
from latentds.errors import ConfigError, UnsupportedImageError
from latentds.lds import image_spec
from latentds.models import (
    generator_contract,
    input_args,
    remove_spectral_norm,
    seeded_model,
)
from latentds.sources import ImageSet

__all__ = [
    "CKPT_FILE",
    "GENERATOR_FILE",
    "META_CONFIG",
    "META_DATA",
    "META_STATS",
    "RESUME_IGNORED",
    "GANState",
    "final_generator",
    "finished_generator",
    "grid_columns",
    "save_generator",
]

GENERATOR_FILE = "generator.safetensors"
CKPT_FILE = "gan_ckpt.safetensors"
META_CONFIG = "latentds.gan_config"
META_DATA = "latentds.data_fingerprint"
META_STATS = "latentds.gan_stats"
# Fields that do not change the trajectory of a run: a checkpoint made with other values may be resumed.
RESUME_IGNORED = ("iterations", "checkpoint_every", "sample_every")


def generator_args(cfg: GANConfig, num_classes: int, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The generator factory's arguments: the data's shape where the factory takes it, the config's width."""
    return {**input_args(cfg.arch, image_shape), "width": cfg.width, "num_classes": num_classes}


@dataclass(eq=False)
class GANState:
    """Everything a GAN checkpoint holds: G, D, the EMA copy, both optimizers, the RNG and the counters."""

    g: nn.Module
    d: nn.Module
    ema: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    rng: torch.Generator  # CPU: real batches, z, y, augmentation
    it: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    @classmethod
    def build(cls, cfg: GANConfig, data: ImageSet, device: torch.device) -> GANState:
        """Fresh G, D and EMA (seeded init; the global RNG is left alone), shaped for the data: the factories get
        the data's channels and image_size where they take them, and G's contract must produce that shape."""
        k = data.num_classes
        g_args = {**generator_args(cfg, k, data.image_shape), "spectral_norm": True}
        d_args = {**input_args(cfg.disc_arch, data.image_shape), "width": cfg.disc_width, "num_classes": k,
                  "spectral_norm": True}
        g_net = seeded_model(cfg.seed, cfg.arch, **g_args).to(device)
        made = generator_contract(g_net).image_shape
        if made != data.image_shape:
            raise UnsupportedImageError(
                f"{data.name}: images are {'x'.join(map(str, data.image_shape))} (C x H x W) but {cfg.arch} makes "
                f"{'x'.join(map(str, made))}; use gan.arch=biggan (any size and channel count) or resize the data "
                "with --image-size"
            )
        d_net = seeded_model(cfg.seed + 1, cfg.disc_arch, **d_args).to(device)
        ema = seeded_model(cfg.seed, cfg.arch, **g_args).to(device)
        ema.load_state_dict(g_net.state_dict())
        ema.eval().requires_grad_(False)
        opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        return cls(g_net, d_net, ema, opt_g, opt_d, torch.Generator().manual_seed(cfg.seed))

    def resume(self, ckpt: Path, cfg: GANConfig, data: ImageSet) -> None:
        """Load a checkpoint written by :meth:`save` for the same data and config."""
        tensors, meta = load_state(ckpt)
        if meta.get("kind") != "gan":
            raise CheckpointError(f"{ckpt}: not a GAN checkpoint (kind {meta.get('kind')!r})")
        check_data(ckpt, meta.get("data_fingerprint"), data)
        check_config(ckpt, meta["config"], asdict(cfg))
        if meta["iteration"] > cfg.iterations:
            raise ConfigError(f"{ckpt}: already at iteration {meta['iteration']}, beyond iterations={cfg.iterations}; "
                              "ask for at least as many iterations, or use another work dir")
        for prefix, module in (("G.", self.g), ("D.", self.d), ("EMA.", self.ema)):
            load_module_tensors(module, tensors, prefix)
        optimizer_from_tensors(self.opt_g, tensors, meta["opt_g"], "optG.")
        optimizer_from_tensors(self.opt_d, tensors, meta["opt_d"], "optD.")
        set_rng_state(self.rng, tensors["rng"])
        self.it, self.history, self.train_seconds = meta["iteration"], meta["history"], meta["train_seconds"]

    def save(self, ckpt: Path, cfg: GANConfig, data: ImageSet) -> None:
        tg, mg = optimizer_to_tensors(self.opt_g, "optG.")
        td, md = optimizer_to_tensors(self.opt_d, "optD.")
        tensors = {**module_tensors(self.g, "G."), **module_tensors(self.d, "D."), **module_tensors(self.ema, "EMA."),
                   **tg, **td, "rng": rng_state(self.rng)}
        save_state(ckpt, tensors, {"kind": "gan", "iteration": self.it, "config": asdict(cfg),
                                   "data_fingerprint": data.fingerprint, "num_classes": data.num_classes, "opt_g": mg,
                                   "opt_d": md, "history": self.history, "train_seconds": self.train_seconds})


# --- the finished generator ---------------------------------------------------------------------------------
def finished_generator(
    work_dir: Path, cfg: GANConfig, data: ImageSet, device: torch.device, say: Callable[[str], None]
) -> tuple[nn.Module, dict[str, Any]] | None:
    """The generator a finished run with this config left in ``work_dir``, if any (other settings: refused,
    unless only RESUME_IGNORED fields differ and the checkpoint is there to continue from)."""
    final, ckpt, cfg_dict = work_dir / GENERATOR_FILE, work_dir / CKPT_FILE, asdict(cfg)
    if not final.exists():
        return None
    meta = read_model_metadata(final)
    saved = json.loads(meta.get(META_CONFIG, "{}"))
    check_data(final, meta.get(META_DATA), data)
    if not config_diff(saved, cfg_dict):
        say(f"train-gan: using the finished generator {final}")
        return load_model(final, device), {**json.loads(meta.get(META_STATS, "{}")), "cached": True}
    check_config(final, saved, cfg_dict)  # only RESUME_IGNORED fields differ: continue from the checkpoint
    if not ckpt.exists():
        changed = describe_diff(saved, cfg_dict, config_diff(saved, cfg_dict))
        raise CheckpointError(f"{final} was trained with other settings ({changed}) and {ckpt} is missing, "
                              "so it cannot be continued; use another work dir")
    return None


def final_generator(ema: nn.Module, cfg: GANConfig, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The EMA generator with spectral norm folded into the weights, rebuilt with spectral_norm=False.

    The stored SN vectors and BN statistics belong to the live G, not to the averaged weights, so
    sigma is re-estimated by power iteration and BN statistics are recomputed ("standing stats").
    """
    args = generator_args(cfg, num_classes, image_shape)
    sn = seeded_model(0, cfg.arch, **args, spectral_norm=True)
    sn.load_state_dict(ema.state_dict())
    _converge_spectral_norm(sn)
    remove_spectral_norm(sn.eval())  # eval: use the converged SN vectors, no further power iteration
    plain = seeded_model(0, cfg.arch, **args, spectral_norm=False)
    plain.load_state_dict(sn.state_dict())
    standing_stats(plain, num_classes, seed=cfg.seed)
    return plain.eval()


@torch.no_grad()
def _converge_spectral_norm(model: nn.Module, iterations: int = 30) -> None:
    """Run power iterations on every spectral-norm parametrization (each weight access in train mode is one)."""
    model.train()
    parametrized = [m for m in model.modules() if hasattr(m, "parametrizations") and "weight" in m.parametrizations]
    for _ in range(iterations):
        for m in parametrized:
            m.weight  # noqa: B018 - the access performs one power iteration
    model.eval()


def save_generator(work_dir: Path, generator: nn.Module, cfg: GANConfig, data: ImageSet, stats: dict[str, Any]) -> None:
    """generator.safetensors (+ samples.png). Class names and normalization travel with the generator, so
    `eval gan:FILE` and `encode --generator` need no data."""
    k = data.num_classes
    mean, std = data.mean_std()
    image = image_spec(mean, std, data.image_shape, generator_contract(generator).output_range)
    save_model(work_dir / GENERATOR_FILE, generator, extra={
        META_CONFIG: json.dumps(asdict(cfg), sort_keys=True), META_DATA: data.fingerprint,
        "latentds.classes": json.dumps(data.classes), "latentds.image": json.dumps(image), META_STATS: json.dumps(stats)})
    sample_grid(generator, k, grid_columns(k), work_dir / "samples.png", seed=cfg.seed,
                device=next(generator.parameters()).device)


def grid_columns(num_classes: int) -> int:
    """Samples per class in the progress grids: 10, fewer for many classes (at most ~100 images)."""
    return min(10, max(1, 100 // num_classes))


def check_data(path: Path, fingerprint: str | None, data: ImageSet) -> None:
    """Refuse a file made from other data than ``data``."""
    if fingerprint != data.fingerprint:
        raise ConfigError(
            f"{path}: made from other data (fingerprint {str(fingerprint)[:12]}..., this data "
            f"{data.fingerprint[:12]}...); use another work dir, or delete it to start over"
        )


def check_config(path: Path, saved: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Refuse a file made with a GAN config that differs in more than RESUME_IGNORED."""
    diff = config_diff(saved, cfg, ignore=RESUME_IGNORED)
    if diff:
        raise ConfigError(
            f"{path}: made with a different GAN config ({describe_diff(saved, cfg, diff)}); only "
            f"{', '.join(RESUME_IGNORED)} may change when resuming. Use another work dir, or delete it to start over"
        )
