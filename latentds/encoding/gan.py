"""``latentds train-gan``: train the class-conditional BigGAN generator (DiffAugment-BigGAN-CIFAR recipe).

    generator, stats = train_gan(train_set, GANConfig(), work_dir, device="cuda")

The loop, per G iteration: ``d_steps`` discriminator steps, each on a fresh class-balanced real batch and
fresh fakes, then one generator step; hinge loss; Adam (betas (0, 0.999)); DiffAugment
("translation,cutout", per sample) on every D input, random horizontal flips of the reals; spectral norm on
G and D; an EMA copy of G (plain copy before ``ema_start``: :func:`get_ema_decay`). Every random number of an
iteration is drawn on the CPU first (:func:`draw_iteration`, in the order the steps use them) and reaches the
device in one copy per dtype, so a GPU never waits on dozens of small host-to-device copies.

Files in ``work_dir`` (:mod:`latentds.encoding.gan_state`):

- ``gan_ckpt.safetensors``: G, D, EMA, both optimizers, iteration, RNG state; written every
  ``checkpoint_every`` iterations and at the end. A new call with the same config (``iterations`` may be
  larger) resumes from it; on the CPU the result is bit-identical to an uninterrupted run.
- ``generator.safetensors``: the EMA generator without spectral norm (``save_model``; config, data
  fingerprint and stats in its metadata). A later call with the same config returns it without training.
- ``samples.png``: a class-per-row grid from the final generator (and ``samples/iter_XXXXXXX.png`` every
  ``sample_every`` iterations).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentds.devices import resolve_device
from latentds.encoding.config import EncodeConfig, GANConfig
from latentds.encoding.diffaug import augment_with, draw_params, flip_with
from latentds.encoding.gan_samples import (
    gan_quality,
    generate,
    random_latents,
    sample_grid,
    standing_stats,
)
from latentds.encoding.gan_state import (
    CKPT_FILE,
    GENERATOR_FILE,
    META_CONFIG,
    META_STATS,
    GANState,
    final_generator,
    finished_generator,
    grid_columns,
    save_generator,
)
from latentds.encoding.state import TrainingInterrupted
from latentds.encoding.workdir import resolve_compute
from latentds.errors import LatentdsError
from latentds.format.staging import atomic_write
from latentds.models import generator_contract, uint8_to_output
from latentds.plan import Compute
from latentds.progress import progress_bar
from latentds.sources import ImageSet, load_source

__all__ = [
    "CKPT_FILE",
    "GENERATOR_FILE",
    "META_CONFIG",
    "META_STATS",
    "GANRun",
    "TrainingDivergedError",
    "draw_iteration",
    "gan_quality",
    "generate",
    "get_ema_decay",
    "sample_grid",
    "standing_stats",
    "train_gan",
    "train_gan_file",
]

LOG_EVERY = 500  # iterations between log lines and loss-history entries (fewer for short runs)


class TrainingDivergedError(LatentdsError):
    """A loss became NaN or infinite."""


def train_gan(
    data: ImageSet,
    cfg: GANConfig,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    *,
    stop_after: int | None = None,
    compute: Compute | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or resume, or load the finished) GAN on ``data``; returns (EMA generator in eval mode, stats).

    ``compute``: autocast dtype and memory format of G and D (default fp32, contiguous: bit-identical
    resumes on the CPU); the EMA copy, the optimizer states and the saved generator stay fp32.
    The generator has no spectral norm and ``arch_args['spectral_norm'] is False``, ready for a .lds file.
    stats: ``d_loss``/``g_loss`` (mean over the last log window), ``iterations``, ``train_seconds`` (all
    sessions), ``wall_time_s`` (this call), ``iterations_per_s`` and ``images_per_s`` (generated images
    per second: batch_size x (d_steps + 1) per iteration; no device syncs are added to measure them),
    ``history`` (mean losses every ``min(LOG_EVERY, iterations // 10)`` iterations), ``cached``.
    ``stop_after`` (tests) raises :class:`TrainingInterrupted` after that many iterations of this call,
    leaving the last periodic checkpoint on disk, as a crash would.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    compute = compute or Compute(device)
    say = log or (lambda _line: None)
    start = time.perf_counter()
    cached = finished_generator(work_dir, cfg, data, device, say)
    if cached is not None:
        return cached[0], {**cached[1], "wall_time_s": time.perf_counter() - start}
    state = GANState.build(cfg, data, device)
    ckpt = work_dir / CKPT_FILE
    if ckpt.exists():
        state.resume(ckpt, cfg, data)
        say(f"train-gan: resuming from {ckpt} at iteration {state.it}/{cfg.iterations}")
    session_its, session_seconds = _train_loop(state, cfg, data, work_dir, device, compute, progress, say, stop_after)
    say("train-gan: saving the generator and a grid of its samples")
    generator = final_generator(state.ema, cfg, data.num_classes, data.image_shape).to(device)
    stats = _stats(state, cfg, device, session_its, session_seconds)
    save_generator(work_dir, generator, cfg, data, stats)
    stats["wall_time_s"] = time.perf_counter() - start
    say(f"train-gan: done, {state.it} iterations; generator saved to {work_dir / GENERATOR_FILE}")
    return generator, stats


@dataclass
class GANRun:
    """What :func:`train_gan_file` trained, and on what (for samples and a quality figure after it)."""

    generator: nn.Module
    stats: dict[str, Any]
    data: ImageSet
    device: torch.device
    compute: Compute
    work_dir: Path


def train_gan_file(
    source: str, out: Path, cfg: EncodeConfig, work_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None, download: bool = False, progress: bool = True,
) -> GANRun:
    """``train-gan``: load ``source``, train (or resume) the generator of ``cfg.gan`` in the work dir (default:
    ``out`` with suffix ``.work``), copy it to ``out``. The copy carries the GAN config, the data fingerprint
    and the training stats in its metadata."""
    folder = Path(work_dir) if work_dir is not None else out.with_suffix(".work")
    device = resolve_device(cfg.device)
    compute = resolve_compute(device, cfg.precision)
    log = logging.getLogger("latentds.train_gan").info if progress else (lambda _line: None)
    log(f"train-gan: loading {source}")  # before the first long wait (minutes for a 50,000-image folder)
    data = load_source(source, "train", root=root, download=download, image_size=cfg.image_size, progress=progress)
    generator, stats = train_gan(data, cfg.gan, folder / "gan", device, progress, log, compute=compute)
    atomic_write(out, [(folder / "gan" / GENERATOR_FILE).read_bytes()])
    return GANRun(generator, stats, data, device, compute, folder)


def get_ema_decay(cfg: GANConfig, it: int) -> float:
    """The EMA decay after iteration ``it`` (1-based): 0 (a plain copy of G) before ``ema_start``, then ``ema_decay``."""
    return 0.0 if it < cfg.ema_start else cfg.ema_decay


# --- the random numbers of one iteration ----------------------------------------------------------------------
class RealSampler:
    """Class-balanced batches: y ~ uniform over classes, then an image of class y uniformly at random, as pixels
    in the generator's output range."""

    def __init__(self, data: ImageSet, device: torch.device, output_range: tuple[float, float]):
        order = torch.argsort(data.labels, stable=True)
        counts = torch.bincount(data.labels, minlength=data.num_classes)
        self.starts = torch.cumsum(counts, 0) - counts  # first position of each class in `order`
        self.counts = counts
        self.images = data.images[order].to(device)  # uint8, grouped by class
        self.num_classes = data.num_classes
        self.output_range = output_range

    def draw(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """(positions into the grouped images (B,), labels (B,)) on the CPU."""
        y = torch.randint(self.num_classes, (batch_size,), generator=g)
        pos = self.starts[y] + (torch.rand(batch_size, generator=g, dtype=torch.float64) * self.counts[y]).long()
        return pos, y

    def images_at(self, pos: Tensor) -> Tensor:
        """The images at ``pos`` (on their device), (B, C, H, W) float32 in the output range."""
        return uint8_to_output(self.images[pos], self.output_range)


@dataclass
class StepDraws:
    """The random numbers of one D step (reals, flips) or G step (``pos`` None), in the order they are drawn."""

    pos: Tensor | None  # (B,) real images (grouped by class)
    y_real: Tensor | None  # (B,)
    z: Tensor  # (B, latent_dim)
    y_fake: Tensor  # (B,)
    flip: Tensor | None  # (B, 1, 1, 1) uniform numbers for the reals' flips (None: no flips)
    aug: dict[str, Tensor]  # DiffAugment parameters of the D input (fakes, then reals)

    def to(self, device: torch.device) -> StepDraws:
        return StepDraws(*_to_device([self.pos, self.y_real, self.z, self.y_fake, self.flip], device),
                         dict(zip(self.aug, _to_device(list(self.aug.values()), device))))


def draw_iteration(
    cfg: GANConfig, reals: RealSampler, latent_dim: int, image_hw: tuple[int, int], g: torch.Generator
) -> list[StepDraws]:
    """Every random number of one G iteration (``d_steps`` D steps, then the G step) from the CPU generator ``g``."""
    steps, b, (h, w) = [], cfg.batch_size, image_hw
    for _ in range(cfg.d_steps):
        pos, y_real = reals.draw(b, g)
        z, y_fake = random_latents(b, latent_dim, reals.num_classes, g, torch.device("cpu"))
        flip = torch.rand((b, 1, 1, 1), generator=g) if cfg.flip else None
        steps.append(StepDraws(pos, y_real, z, y_fake, flip, draw_params(cfg.diffaug, 2 * b, h, w, g)))
    z, y_fake = random_latents(b, latent_dim, reals.num_classes, g, torch.device("cpu"))
    steps.append(StepDraws(None, None, z, y_fake, None, draw_params(cfg.diffaug, b, h, w, g)))
    return steps


def _to_device(tensors: list[Tensor | None], device: torch.device) -> list[Tensor | None]:
    """``tensors`` on ``device`` in one copy per dtype (pinned and non-blocking on CUDA); on the CPU, as they are."""
    if device.type == "cpu":
        return tensors
    out: list[Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        if t is not None:
            by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx])
        flat = (flat.pin_memory() if device.type == "cuda" else flat).to(device, non_blocking=True)
        for i, part in zip(idx, flat.split([tensors[i].numel() for i in idx])):
            out[i] = part.view(tensors[i].shape)
    return out


# --- training -----------------------------------------------------------------------------------------------
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Parameters: ema = decay * ema + (1 - decay) * model; buffers (BN statistics, SN vectors) copied.

    Multi-tensor (foreach) kernels: a handful of launches per step instead of one or two per tensor.
    ``mul_`` then ``add_`` (not ``lerp_``) keeps the arithmetic, and so the bits, of the per-tensor loop.
    """
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if decay == 0.0:
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_mul_(ema_params, decay)
        torch._foreach_add_(ema_params, params, alpha=1.0 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))


def _gan_step(
    state: GANState, cfg: GANConfig, reals: RealSampler, draws: list[StepDraws], compute: Compute
) -> tuple[Tensor, Tensor]:
    """One G iteration: ``d_steps`` D steps on fresh reals and fakes, then one G step (hinge). Returns the losses."""
    g_net, d_net = state.g, state.d
    # --- discriminator: d_steps steps on fresh reals and fresh fakes
    g_net.requires_grad_(False)
    d_net.requires_grad_(True)
    for step in draws[:-1]:
        real = reals.images_at(step.pos)
        with torch.no_grad(), compute.autocast():
            fake = g_net(step.z, step.y_fake).float()
        with compute.autocast():
            x = torch.cat([fake, flip_with(real, step.flip) if step.flip is not None else real])
            out = d_net(augment_with(x, cfg.diffaug, step.aug), torch.cat([step.y_fake, step.y_real])).float()
        d_fake, d_real = out[: cfg.batch_size], out[cfg.batch_size :]  # one D pass for both, like BigGAN
        d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()  # hinge
        state.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        state.opt_d.step()
    # --- generator: one step
    g_net.requires_grad_(True)
    d_net.requires_grad_(False)
    step = draws[-1]
    with compute.autocast():
        x = augment_with(g_net(step.z, step.y_fake).float(), cfg.diffaug, step.aug)
        g_loss = -d_net(x, step.y_fake).float().mean()
    state.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    state.opt_g.step()
    return d_loss, g_loss


def _train_loop(
    state: GANState, cfg: GANConfig, data: ImageSet, work_dir: Path, device: torch.device, compute: Compute,
    progress: bool, say: Callable[[str], None], stop_after: int | None,
) -> tuple[int, float]:
    """Train from ``state.it`` to ``cfg.iterations``: EMA, loss log, samples and checkpoints on schedule.
    Returns (iterations, seconds) of this session."""
    k, ckpt = data.num_classes, work_dir / CKPT_FILE
    contract = generator_contract(state.g)
    reals = RealSampler(data, device, contract.output_range)
    compute.prepare(state.g)
    compute.prepare(state.d)
    log_every = min(LOG_EVERY, max(1, cfg.iterations // 10))
    bar = progress_bar(None, progress, total=cfg.iterations, initial=state.it, desc="train-gan", unit="it", leave=False)
    window = torch.zeros(2, dtype=torch.float64, device=device)  # summed (d_loss, g_loss) since the last log
    window_n, session_its = 0, 0
    session_start = time.perf_counter()
    state.g.train()
    state.d.train()
    try:
        while state.it < cfg.iterations:
            t_loop = time.perf_counter()
            draws = [d.to(device) for d in draw_iteration(cfg, reals, contract.latent_dim, data.image_shape[1:], state.rng)]
            d_loss, g_loss = _gan_step(state, cfg, reals, draws, compute)
            state.it += 1
            it = state.it
            session_its += 1
            _update_ema(state.ema, state.g, get_ema_decay(cfg, it))
            window += torch.stack([d_loss.detach(), g_loss.detach()]).double()
            window_n += 1
            state.train_seconds += time.perf_counter() - t_loop
            if it % 10 == 0 or it == cfg.iterations or it % log_every == 0:
                dl, gl = (window / window_n).tolist()
                if not (math.isfinite(dl) and math.isfinite(gl)):
                    raise TrainingDivergedError(
                        f"train-gan: non-finite loss by iteration {it} (mean d_loss {dl}, g_loss {gl}); "
                        "lower lr_g/lr_d and start over in a new work dir"
                    )
                bar.set_postfix(d_loss=f"{dl:.3f}", g_loss=f"{gl:.3f}", refresh=False)
            if it % log_every == 0 or it == cfg.iterations:
                dl, gl = (window / window_n).tolist()
                state.history.append({"iteration": it, "d_loss": dl, "g_loss": gl})
                window.zero_()
                window_n = 0
                say(f"train-gan iteration {it}/{cfg.iterations}: d_loss {dl:.4f}, g_loss {gl:.4f}, "
                    f"{session_its / (time.perf_counter() - session_start):.2f} it/s")
            if cfg.sample_every and it % cfg.sample_every == 0:
                path = work_dir / "samples" / f"iter_{it:07d}.png"
                sample_grid(state.ema, k, grid_columns(k), path, seed=cfg.seed, device=device)
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                state.save(ckpt, cfg, data)
            bar.update(1)
            if stop_after is not None and session_its >= stop_after and it < cfg.iterations:
                raise TrainingInterrupted(f"stopped after {session_its} iterations (stop_after)")
    finally:
        bar.close()
    return session_its, time.perf_counter() - session_start


def _stats(state: GANState, cfg: GANConfig, device: torch.device, session_its: int, seconds: float) -> dict[str, Any]:
    last = state.history[-1] if state.history else {}
    return {
        "iterations": state.it,
        "d_loss": last.get("d_loss"),
        "g_loss": last.get("g_loss"),
        "train_seconds": state.train_seconds,
        "iterations_per_s": session_its / seconds if session_its else None,
        "images_per_s": session_its * cfg.batch_size * (cfg.d_steps + 1) / seconds if session_its else None,
        "device": str(device),
        "history": state.history,
        "cached": False,
    }
