"""``latentds train-gan``: train the class-conditional BigGAN generator (DiffAugment-BigGAN-CIFAR recipe).

    generator, stats = train_gan(train_set, GANConfig(), work_dir, device="cuda")

The loop, per G iteration: ``d_steps`` discriminator steps, each on a fresh class-balanced real batch and
fresh fakes, then one generator step; hinge loss; Adam (betas (0, 0.999)); DiffAugment
("translation,cutout", per sample) on every D input, random horizontal flips of the reals; spectral norm on
G and D; an EMA copy of G (plain copy before ``ema_start``).

Files in ``work_dir``:

- ``gan_ckpt.safetensors``: G, D, EMA, both optimizers, iteration, RNG state; written every
  ``checkpoint_every`` iterations and at the end. A new call with the same config (``iterations`` may be
  larger) resumes from it; on the CPU the result is bit-identical to an uninterrupted run.
- ``generator.safetensors``: the EMA generator without spectral norm (``save_model``; config, data
  fingerprint and stats in its metadata). A later call with the same config returns it without training.
- ``samples.png``: a class-per-row grid from the final generator (and ``samples/iter_XXXXXXX.png`` every
  ``sample_every`` iterations).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentds.checkpoint import load_model, read_model_metadata, save_model
from latentds.common import progress_bar
from latentds.encoding.common import (
    check_int,
    config_diff,
    describe_diff,
    from_dict,
    seeded_model,
)
from latentds.encoding.diffaug import diff_augment, parse_policy, random_flip
from latentds.encoding.gan_samples import (
    gan_quality,
    generate,
    random_latents,
    sample_grid,
    standing_stats,
)
from latentds.encoding.state import (
    CheckpointError,
    TrainingInterrupted,
    load_module_tensors,
    load_state,
    module_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_state,
    set_rng_state,
)
from latentds.errors import ConfigError, LatentdsError, UnsupportedImageError
from latentds.lds import image_spec
from latentds.models import generator_contract, input_args, remove_spectral_norm
from latentds.plan import Compute
from latentds.sources import ImageSet

__all__ = [
    "GENERATOR_FILE",
    "GANConfig",
    "TrainingDivergedError",
    "gan_quality",
    "generate",
    "sample_grid",
    "standing_stats",
    "train_gan",
]

GENERATOR_FILE = "generator.safetensors"
CKPT_FILE = "gan_ckpt.safetensors"
META_CONFIG = "latentds.gan_config"
META_DATA = "latentds.data_fingerprint"
META_STATS = "latentds.gan_stats"
LOG_EVERY = 500  # iterations between log lines and loss-history entries (fewer for short runs)
# Fields that do not change the trajectory of a run: a checkpoint made with other values may be resumed.
RESUME_IGNORED = ("iterations", "checkpoint_every", "sample_every")


class TrainingDivergedError(LatentdsError):
    """A loss became NaN or infinite."""


@dataclass
class GANConfig:
    """How the generator is trained; the defaults are the DiffAugment-BigGAN-CIFAR recipe of the paper."""

    arch: str = "biggan"  # any registered generator; it gets the data's channels and image_size (input_args)
    width: int = 64  # G_ch: 64 -> 256 channels, 4.3 M parameters
    disc_arch: str = "biggan_disc"
    disc_width: int = 64  # D_ch: 64 -> 256 channels, 4.2 M parameters
    iterations: int = 250_000  # G steps (about a day on 2 GPUs in the reference runs)
    batch_size: int = 50  # per D step and per G step
    d_steps: int = 4  # D steps per G step, each on fresh reals and fresh fakes
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)  # Adam; beta1 = 0 as in BigGAN
    ema_decay: float = 0.9999  # EMA of G's parameters: the generator that is kept
    ema_start: int = 1000  # before this iteration the EMA copy just tracks G
    diffaug: str = "translation,cutout"  # DiffAugment policy on every D input (reals and fakes)
    flip: bool = True  # random horizontal flips of the real images
    checkpoint_every: int = 1000  # iterations between resumable checkpoints (and always at the end)
    sample_every: int = 0  # >0: write samples/iter_XXXXXXX.png from the EMA generator this often
    seed: int = 0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]  # JSON gives a list
        for name in ("iterations", "batch_size", "d_steps", "checkpoint_every"):
            check_int(self, name, 1)
        for name in ("ema_start", "sample_every", "width", "disc_width"):
            check_int(self, name, 0 if name in ("ema_start", "sample_every") else 1)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"GANConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"GANConfig.ema_decay must be in [0, 1], got {self.ema_decay!r}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"GANConfig.{name} must be > 0, got {getattr(self, name)!r}")
        parse_policy(self.diffaug)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GANConfig:
        """Build from a dict (e.g. parsed JSON), rejecting unknown fields."""
        return from_dict(cls, d, "GAN config")


# --- training -------------------------------------------------------------------------------------------
class _RealSampler:
    """Class-balanced batches: y ~ uniform over classes, then an image of class y uniformly at random."""

    def __init__(self, data: ImageSet, device: torch.device):
        order = torch.argsort(data.labels, stable=True)
        counts = torch.bincount(data.labels, minlength=data.num_classes)
        self.starts = torch.cumsum(counts, 0) - counts  # first position of each class in `order`
        self.counts = counts
        self.order = order
        self.images = data.images[order].to(device)  # uint8, grouped by class
        self.num_classes = data.num_classes
        self.device = device

    def sample(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        y = torch.randint(self.num_classes, (batch_size,), generator=g)
        pos = self.starts[y] + (torch.rand(batch_size, generator=g, dtype=torch.float64) * self.counts[y]).long()
        x = self.images[pos.to(self.device)].float() / 127.5 - 1.0  # uint8 -> [-1, 1]
        return x, y.to(self.device)


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


def _generator_args(cfg: GANConfig, num_classes: int, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The generator factory's arguments: the data's shape where the factory takes it, the config's width."""
    return {**input_args(cfg.arch, image_shape), "width": cfg.width, "num_classes": num_classes}


def _final_generator(ema: nn.Module, cfg: GANConfig, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The EMA generator with spectral norm folded into the weights, rebuilt with spectral_norm=False.

    The stored SN vectors and BN statistics belong to the live G, not to the averaged weights, so
    sigma is re-estimated by power iteration and BN statistics are recomputed ("standing stats").
    """
    args = _generator_args(cfg, num_classes, image_shape)
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
    cached = _finished_generator(work_dir, cfg, data, device, say)
    if cached is not None:
        return cached[0], {**cached[1], "wall_time_s": time.perf_counter() - start}
    state = _GANState.build(cfg, data, device)
    ckpt = work_dir / CKPT_FILE
    if ckpt.exists():
        state.resume(ckpt, cfg, data)
        say(f"train-gan: resuming from {ckpt} at iteration {state.it}/{cfg.iterations}")
    session_its, session_seconds = _train_loop(state, cfg, data, work_dir, device, compute, progress, say, stop_after)
    generator = _final_generator(state.ema, cfg, data.num_classes, data.image_shape).to(device)
    stats = _stats(state, cfg, device, session_its, session_seconds)
    _save_generator(work_dir, generator, cfg, data, stats)
    stats["wall_time_s"] = time.perf_counter() - start
    say(f"train-gan: done, {state.it} iterations; generator saved to {work_dir / GENERATOR_FILE}")
    return generator, stats


def _finished_generator(
    work_dir: Path, cfg: GANConfig, data: ImageSet, device: torch.device, say: Callable[[str], None]
) -> tuple[nn.Module, dict[str, Any]] | None:
    """The generator a finished run with this config left in ``work_dir``, if any (other settings: refused,
    unless only RESUME_IGNORED fields differ and the checkpoint is there to continue from)."""
    final, ckpt, cfg_dict = work_dir / GENERATOR_FILE, work_dir / CKPT_FILE, asdict(cfg)
    if not final.exists():
        return None
    meta = read_model_metadata(final)
    saved = json.loads(meta.get(META_CONFIG, "{}"))
    _check_data(final, meta.get(META_DATA), data)
    if not config_diff(saved, cfg_dict):
        say(f"train-gan: using the finished generator {final}")
        return load_model(final, device), {**json.loads(meta.get(META_STATS, "{}")), "cached": True}
    _check_config(final, saved, cfg_dict)  # only RESUME_IGNORED fields differ: continue from the checkpoint
    if not ckpt.exists():
        changed = describe_diff(saved, cfg_dict, config_diff(saved, cfg_dict))
        raise CheckpointError(f"{final} was trained with other settings ({changed}) and {ckpt} is missing, "
                              "so it cannot be continued; use another work dir")
    return None


@dataclass(eq=False)
class _GANState:
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
    def build(cls, cfg: GANConfig, data: ImageSet, device: torch.device) -> _GANState:
        """Fresh G, D and EMA (seeded init; the global RNG is left alone), shaped for the data: the factories get
        the data's channels and image_size where they take them, and G's contract must produce that shape."""
        k = data.num_classes
        g_args = {**_generator_args(cfg, k, data.image_shape), "spectral_norm": True}
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
        _check_data(ckpt, meta.get("data_fingerprint"), data)
        _check_config(ckpt, meta["config"], asdict(cfg))
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


def _gan_step(
    state: _GANState, cfg: GANConfig, reals: _RealSampler, latent_dim: int, num_classes: int,
    d_input: Callable[[Tensor, Tensor | None], Tensor], compute: Compute, device: torch.device,
) -> tuple[Tensor, Tensor]:
    """One G iteration: ``d_steps`` D steps on fresh reals and fakes, then one G step (hinge). Returns the losses."""
    g_net, d_net, gen = state.g, state.d, state.rng
    # --- discriminator: d_steps steps on fresh reals and fresh fakes
    g_net.requires_grad_(False)
    d_net.requires_grad_(True)
    for _ in range(cfg.d_steps):
        real, y_real = reals.sample(cfg.batch_size, gen)
        z, y_fake = random_latents(cfg.batch_size, latent_dim, num_classes, gen, device)
        with torch.no_grad(), compute.autocast():
            fake = g_net(z, y_fake).float()
        with compute.autocast():
            out = d_net(d_input(fake, real), torch.cat([y_fake, y_real])).float()  # one D pass, like BigGAN
        d_fake, d_real = out[: cfg.batch_size], out[cfg.batch_size :]
        d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()  # hinge
        state.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        state.opt_d.step()
    # --- generator: one step
    g_net.requires_grad_(True)
    d_net.requires_grad_(False)
    z, y_fake = random_latents(cfg.batch_size, latent_dim, num_classes, gen, device)
    with compute.autocast():
        g_loss = -d_net(d_input(g_net(z, y_fake).float(), None), y_fake).float().mean()
    state.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    state.opt_g.step()
    return d_loss, g_loss


def _train_loop(
    state: _GANState, cfg: GANConfig, data: ImageSet, work_dir: Path, device: torch.device, compute: Compute,
    progress: bool, say: Callable[[str], None], stop_after: int | None,
) -> tuple[int, float]:
    """Train from ``state.it`` to ``cfg.iterations``: EMA, loss log, samples and checkpoints on schedule.
    Returns (iterations, seconds) of this session."""
    k, ckpt = data.num_classes, work_dir / CKPT_FILE
    reals = _RealSampler(data, device)
    latent_dim = generator_contract(state.g).latent_dim
    compute.prepare(state.g)
    compute.prepare(state.d)

    def d_input(fake: Tensor, real: Tensor | None) -> Tensor:
        x = fake if real is None else torch.cat([fake, random_flip(real, state.rng) if cfg.flip else real])
        return diff_augment(x, cfg.diffaug, state.rng)

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
            d_loss, g_loss = _gan_step(state, cfg, reals, latent_dim, k, d_input, compute, device)
            state.it += 1
            it = state.it
            session_its += 1
            _update_ema(state.ema, state.g, 0.0 if it < cfg.ema_start else cfg.ema_decay)

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
                sample_grid(state.ema, k, _grid_columns(k), path, seed=cfg.seed, device=device)
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                state.save(ckpt, cfg, data)
            bar.update(1)
            if stop_after is not None and session_its >= stop_after and it < cfg.iterations:
                raise TrainingInterrupted(f"stopped after {session_its} iterations (stop_after)")
    finally:
        bar.close()
    return session_its, time.perf_counter() - session_start


def _stats(state: _GANState, cfg: GANConfig, device: torch.device, session_its: int, seconds: float) -> dict[str, Any]:
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


def _save_generator(work_dir: Path, generator: nn.Module, cfg: GANConfig, data: ImageSet, stats: dict[str, Any]) -> None:
    """generator.safetensors (+ samples.png). Class names and normalization travel with the generator, so
    `eval gan:FILE` and `encode --generator` need no data."""
    k = data.num_classes
    mean, std = data.mean_std()
    image = image_spec(mean, std, data.image_shape, generator_contract(generator).output_range)
    save_model(work_dir / GENERATOR_FILE, generator, extra={
        META_CONFIG: json.dumps(asdict(cfg), sort_keys=True), META_DATA: data.fingerprint,
        "latentds.classes": json.dumps(data.classes), "latentds.image": json.dumps(image), META_STATS: json.dumps(stats)})
    sample_grid(generator, k, _grid_columns(k), work_dir / "samples.png", seed=cfg.seed,
                device=next(generator.parameters()).device)


def _grid_columns(num_classes: int) -> int:
    """Samples per class in the progress grids: 10, fewer for many classes (at most ~100 images)."""
    return min(10, max(1, 100 // num_classes))


def _check_data(path: Path, fingerprint: str | None, data: ImageSet) -> None:
    if fingerprint != data.fingerprint:
        raise ConfigError(
            f"{path}: made from other data (fingerprint {str(fingerprint)[:12]}..., this data "
            f"{data.fingerprint[:12]}...); use another work dir, or delete it to start over"
        )


def _check_config(path: Path, saved: dict[str, Any], cfg: dict[str, Any]) -> None:
    diff = config_diff(saved, cfg, ignore=RESUME_IGNORED)
    if diff:
        raise ConfigError(
            f"{path}: made with a different GAN config ({describe_diff(saved, cfg, diff)}); only "
            f"{', '.join(RESUME_IGNORED)} may change when resuming. Use another work dir, or delete it to start over"
        )
