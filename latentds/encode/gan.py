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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentds.checkpoint import load_model, read_model_metadata, save_model
from latentds.common import normalize
from latentds.encode.common import (
    check_int,
    config_diff,
    describe_diff,
    from_dict,
    seeded_model,
)
from latentds.encode.diffaug import diff_augment, parse_policy, random_flip
from latentds.encode.state import (
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


# --- sampling helpers -----------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    generator: nn.Module, z: Tensor, y: Tensor, batch_size: int = 500, device: str | torch.device | None = None
) -> Tensor:
    """Images in [-1, 1] (N, 3, H, W) on the CPU from latents (N, D) and labels (N,), in batches."""
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    out = []
    for i in range(0, z.shape[0], batch_size):
        out.append(generator(z[i : i + batch_size].to(device), y[i : i + batch_size].to(device)).cpu())
    return torch.cat(out)


def _class_grid_inputs(generator: nn.Module, num_classes: int, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_classes * per_class, generator_contract(generator).latent_dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(per_class)  # class c fills row c of the grid
    return z, y


def sample_grid(
    generator: nn.Module, num_classes: int, per_class: int, path: str | Path, seed: int = 0,
    device: str | torch.device | None = None,
) -> Path:
    """Write a PNG grid of generated samples, one row per class, ``per_class`` columns (eval mode used)."""
    from torchvision.utils import save_image

    from latentds.format.writer import atomic_write

    was_training = generator.training
    generator.eval()
    try:
        z, y = _class_grid_inputs(generator, num_classes, per_class, seed)
        images = generate(generator, z, y, device=device)
    finally:
        generator.train(was_training)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.staging.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images * 0.5 + 0.5, str(tmp), nrow=per_class, padding=1)
    try:
        return atomic_write(path, [tmp.read_bytes()])
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def gan_quality(
    generator: nn.Module,
    classifier: nn.Module,
    num_classes: int,
    n_per_class: int = 100,
    seed: int = 0,
    device: str | torch.device = "cpu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy of a real-data classifier on class-conditional samples (higher: more recognizable samples).

    ``mean``/``std``: the classifier's input normalization; by default ``classifier.normalization``
    (set by :func:`latentds.encode.classifier.train_classifier` / ``load_classifier``).
    """
    if mean is None or std is None:
        norm = getattr(classifier, "normalization", None)
        if norm is None:
            raise ValueError("gan_quality needs the classifier's input mean/std: pass mean= and std=")
        mean, std = norm["mean"], norm["std"]
    generator.eval().to(device)
    classifier.eval().to(device)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_classes * n_per_class, generator_contract(generator).latent_dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    correct = torch.zeros(num_classes, dtype=torch.int64)
    for i in range(0, z.shape[0], 500):
        images = generator(z[i : i + 500].to(device), y[i : i + 500].to(device)) * 0.5 + 0.5  # [0, 1]
        pred = classifier(normalize(images, mean, std)).argmax(1).cpu()
        correct += torch.bincount(y[i : i + 500][pred == y[i : i + 500]], minlength=num_classes)
    per_class = (correct.double() / n_per_class).tolist()
    return {"accuracy": float(correct.sum()) / z.shape[0], "per_class_accuracy": per_class, "n": int(z.shape[0])}


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


def _latents(
    batch_size: int, latent_dim: int, num_classes: int, g: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """z ~ N(0, I) (B, latent_dim) and y ~ uniform over the classes (B,)."""
    z = torch.randn(batch_size, latent_dim, generator=g)
    y = torch.randint(num_classes, (batch_size,), generator=g)
    return z.to(device), y.to(device)


@torch.no_grad()
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


def _final_generator(ema: nn.Module, cfg: GANConfig, num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The EMA generator with spectral norm folded into the weights, rebuilt with spectral_norm=False.

    The stored SN vectors and BN statistics belong to the live G, not to the averaged weights, so
    sigma is re-estimated by power iteration and BN statistics are recomputed ("standing stats").
    """
    args = {**input_args(cfg.arch, image_shape), "width": cfg.width, "num_classes": num_classes}
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


@torch.no_grad()
def standing_stats(
    generator: nn.Module, num_classes: int, seed: int = 0, batches: int = 20, batch_size: int = 100
) -> None:
    """Recompute batch-norm running statistics as cumulative averages over random (z, y) batches (BigGAN's
    "standing stats"), so eval-mode decoding uses statistics of the final weights. Leaves the model in eval."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    generator.train()
    for _ in range(batches):
        z, y = _latents(batch_size, generator_contract(generator).latent_dim, num_classes, g, device)
        generator(z, y)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.eval()


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
    cfg_dict = asdict(cfg)
    final = work_dir / GENERATOR_FILE
    ckpt = work_dir / CKPT_FILE
    k = data.num_classes

    if final.exists():
        meta = read_model_metadata(final)
        saved = json.loads(meta.get(META_CONFIG, "{}"))
        _check_data(final, meta.get(META_DATA), data)
        if not config_diff(saved, cfg_dict):
            stats = {**json.loads(meta.get(META_STATS, "{}")), "cached": True, "wall_time_s": time.perf_counter() - start}
            say(f"train-gan: using the finished generator {final}")
            return load_model(final, device), stats
        _check_config(final, saved, cfg_dict)  # only RESUME_IGNORED fields differ: continue from the checkpoint
        if not ckpt.exists():
            changed = describe_diff(saved, cfg_dict, config_diff(saved, cfg_dict))
            raise CheckpointError(f"{final} was trained with other settings ({changed}) and {ckpt} is missing, "
                                  "so it cannot be continued; use another work dir")

    # Build G, D and the EMA copy (seeded init; the global RNG is left alone).
    # The factories get the data's shape (channels, image_size) where they take it: the generator contract.
    g_args = {**input_args(cfg.arch, data.image_shape), "width": cfg.width, "num_classes": k, "spectral_norm": True}
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
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU: real batches, z, y, augmentation
    it, history, train_seconds = 0, [], 0.0

    if ckpt.exists():
        tensors, meta = load_state(ckpt)
        if meta.get("kind") != "gan":
            raise CheckpointError(f"{ckpt}: not a GAN checkpoint (kind {meta.get('kind')!r})")
        _check_data(ckpt, meta.get("data_fingerprint"), data)
        _check_config(ckpt, meta["config"], cfg_dict)
        if meta["iteration"] > cfg.iterations:
            raise ConfigError(f"{ckpt}: already at iteration {meta['iteration']}, beyond iterations={cfg.iterations}; "
                              "ask for at least as many iterations, or use another work dir")
        for prefix, module in (("G.", g_net), ("D.", d_net), ("EMA.", ema)):
            load_module_tensors(module, tensors, prefix)
        optimizer_from_tensors(opt_g, tensors, meta["opt_g"], "optG.")
        optimizer_from_tensors(opt_d, tensors, meta["opt_d"], "optD.")
        set_rng_state(gen, tensors["rng"])
        it, history, train_seconds = meta["iteration"], meta["history"], meta["train_seconds"]
        say(f"train-gan: resuming from {ckpt} at iteration {it}/{cfg.iterations}")

    def save_checkpoint() -> None:
        tg, mg = optimizer_to_tensors(opt_g, "optG.")
        td, md = optimizer_to_tensors(opt_d, "optD.")
        tensors = {**module_tensors(g_net, "G."), **module_tensors(d_net, "D."), **module_tensors(ema, "EMA."),
                   **tg, **td, "rng": rng_state(gen)}
        save_state(ckpt, tensors, {"kind": "gan", "iteration": it, "config": cfg_dict, "data_fingerprint": data.fingerprint,
                                   "num_classes": k, "opt_g": mg, "opt_d": md, "history": history,
                                   "train_seconds": train_seconds})

    reals = _RealSampler(data, device)
    latent_dim = generator_contract(g_net).latent_dim
    compute.prepare(g_net)
    compute.prepare(d_net)
    policy = cfg.diffaug

    def d_input(fake: Tensor, real: Tensor | None) -> Tensor:
        x = fake if real is None else torch.cat([fake, random_flip(real, gen) if cfg.flip else real])
        return diff_augment(x, policy, gen)

    from tqdm.auto import tqdm

    log_every = min(LOG_EVERY, max(1, cfg.iterations // 10))
    bar = tqdm(total=cfg.iterations, initial=it, desc="train-gan", unit="it", disable=not progress, leave=False)
    window = torch.zeros(2, dtype=torch.float64, device=device)  # summed (d_loss, g_loss) since the last log
    window_n, session_its = 0, 0
    session_start = time.perf_counter()
    g_net.train()
    d_net.train()
    try:
        while it < cfg.iterations:
            t_loop = time.perf_counter()
            # --- discriminator: d_steps steps on fresh reals and fresh fakes
            g_net.requires_grad_(False)
            d_net.requires_grad_(True)
            for _ in range(cfg.d_steps):
                real, y_real = reals.sample(cfg.batch_size, gen)
                z, y_fake = _latents(cfg.batch_size, latent_dim, k, gen, device)
                with torch.no_grad(), compute.autocast():
                    fake = g_net(z, y_fake).float()
                with compute.autocast():
                    out = d_net(d_input(fake, real), torch.cat([y_fake, y_real])).float()  # one D pass, like BigGAN
                d_fake, d_real = out[: cfg.batch_size], out[cfg.batch_size :]
                d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()  # hinge
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            # --- generator: one step
            g_net.requires_grad_(True)
            d_net.requires_grad_(False)
            z, y_fake = _latents(cfg.batch_size, latent_dim, k, gen, device)
            with compute.autocast():
                g_loss = -d_net(d_input(g_net(z, y_fake).float(), None), y_fake).float().mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            it += 1
            session_its += 1
            _update_ema(ema, g_net, 0.0 if it < cfg.ema_start else cfg.ema_decay)

            window += torch.stack([d_loss.detach(), g_loss.detach()]).double()
            window_n += 1
            train_seconds += time.perf_counter() - t_loop
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
                history.append({"iteration": it, "d_loss": dl, "g_loss": gl})
                window.zero_()
                window_n = 0
                say(f"train-gan iteration {it}/{cfg.iterations}: d_loss {dl:.4f}, g_loss {gl:.4f}, "
                    f"{session_its / (time.perf_counter() - session_start):.2f} it/s")
            if cfg.sample_every and it % cfg.sample_every == 0:
                path = work_dir / "samples" / f"iter_{it:07d}.png"
                sample_grid(ema, k, _grid_columns(k), path, seed=cfg.seed, device=device)
            if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                save_checkpoint()
            bar.update(1)
            if stop_after is not None and session_its >= stop_after and it < cfg.iterations:
                raise TrainingInterrupted(f"stopped after {session_its} iterations (stop_after)")
    finally:
        bar.close()

    session_seconds = time.perf_counter() - session_start
    generator = _final_generator(ema, cfg, k, data.image_shape).to(device)
    last = history[-1] if history else {}
    stats: dict[str, Any] = {
        "iterations": it,
        "d_loss": last.get("d_loss"),
        "g_loss": last.get("g_loss"),
        "train_seconds": train_seconds,
        "iterations_per_s": session_its / session_seconds if session_its else None,
        "images_per_s": session_its * cfg.batch_size * (cfg.d_steps + 1) / session_seconds if session_its else None,
        "device": str(device),
        "history": history,
        "cached": False,
    }
    # Class names and normalization travel with the generator, so `eval gan:FILE` and `encode --generator` need no data.
    mean, std = data.mean_std()
    save_model(final, generator, extra={META_CONFIG: json.dumps(cfg_dict, sort_keys=True), META_DATA: data.fingerprint,
                                         "latentds.classes": json.dumps(data.classes),
                                         "latentds.image": json.dumps(image_spec(mean, std, data.image_shape)),
                                         META_STATS: json.dumps(stats)})
    sample_grid(generator, k, _grid_columns(k), work_dir / "samples.png", seed=cfg.seed, device=device)
    stats["wall_time_s"] = time.perf_counter() - start
    say(f"train-gan: done, {it} iterations; generator saved to {final}")
    return generator, stats


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
