"""Differentiable Siamese augmentation (DSA), as used by dataset condensation (DC / DSA / DM) and IT-GAN.

A strategy such as ``"color_crop_cutout_flip_scale_rotate"`` lists ops separated by ``_``. Each call draws
*one* op (DM's single-op mode) and its random numbers into a :class:`DSAParams`; applying the same params to
the real and the synthetic batch gives both the identical transform ("Siamese"). One transform is broadcast
over the whole batch, so batches of different sizes can share it.

Every op is built from arithmetic, masks, padding/slicing and ``grid_sample``, so gradients flow back to the
input image (the synthetic images, and through them the latents). Random numbers come only from an explicit
CPU ``torch.Generator`` (or an int seed): the same seed gives the same transform on any device, and the
global RNG is never touched.

Ops (ranges from the DSA reference code, ``ParamDiffAug``):

==========  ===================================================================================
color       brightness ``x + U(-0.5, 0.5)``, then saturation ``(x - m_c) * U[0, 2) + m_c`` (m_c: mean
            over channels), then contrast ``(x - m) * U[0.5, 1.5) + m`` (m: per-image mean over C, H, W)
crop        integer translation by up to ``round(0.125 * size)`` px (+-4 at 32x32), zero fill
cutout      one zero square of ``round(0.5 * size)`` px (16x16 at 32x32), centre anywhere in the image
flip        horizontal flip with p = 0.5
scale       ``sx, sy ~ U[1/1.2, 1.2]`` (affine_grid / grid_sample, bilinear, zero padding)
rotate      angle ``~ U(-15, 15)`` degrees (affine_grid / grid_sample, bilinear, zero padding)
==========  ===================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from latentds.errors import ConfigError

__all__ = [
    "DEFAULT_STRATEGY",
    "OPS",
    "DSAParams",
    "SiameseAugment",
    "apply_dsa",
    "augment_per_image",
    "dsa",
    "parse_strategy",
]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"

# Ranges of the reference implementation (ParamDiffAug in the DC/DSA/DM code).
BRIGHTNESS = 1.0  # x + (u - 0.5) * 1.0
SATURATION = 2.0  # factor u * 2.0
CONTRAST = 0.5  # factor u + 0.5
CROP_RATIO = 0.125  # max shift as a fraction of the side (4 px at 32)
CUTOUT_RATIO = 0.5  # square side as a fraction of the side (16 px at 32)
FLIP_PROB = 0.5
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0

_NONE = "none"  # a strategy of "none" (or "") applies nothing


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy string into its op tokens, checking each; ``"none"`` or ``""`` gives ``()``."""
    if strategy.strip().lower() in ("", _NONE):
        return ()
    tokens = tuple(strategy.split("_"))
    for token in tokens:
        if token not in OPS:
            raise ConfigError(
                f"unknown DSA op {token!r} in strategy {strategy!r}; valid ops are {', '.join(OPS)} "
                f"joined by '_' (e.g. {DEFAULT_STRATEGY!r}), or 'none'"
            )
    return tokens


def _cpu_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU generator from a generator, an int seed, or None (fresh, non-deterministically seeded)."""
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(f"DSA samples on the CPU; got a generator on {generator.device}, pass a CPU one")
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()  # OS entropy; the global RNG stays untouched
    else:
        g.manual_seed(int(generator))
    return g


# --- sampling: draws and values per op ---------------------------------------------------------------
# An op's random numbers are *draws* (integer or uniform, each with its range; ``_Draws``), turned into its
# values column by column (float64 (n,) tensors, the arithmetic of Python floats). Drawing for n images is
# one (n, draws) call on the generator, which yields the same numbers as n x draws scalar calls in image
# order (torch's CPU generator fills a tensor serially, and a uniform or an integer draw takes one 32-bit
# word either way): per-image sampling is vectorised without changing a single number.
_Draws = list[tuple[bool, float, float]]  # (integer, low, high): integers in [low, high], uniforms in [low, high)


def _crop_max(size: tuple[int, int]) -> tuple[int, int]:
    return int(size[0] * CROP_RATIO + 0.5), int(size[1] * CROP_RATIO + 0.5)  # (dy, dx): 4 px at 32


def _cutout_side(size: tuple[int, int]) -> tuple[int, int]:
    return int(size[0] * CUTOUT_RATIO + 0.5), int(size[1] * CUTOUT_RATIO + 0.5)  # (h, w): 16 px at 32


def _crop_draws(size: tuple[int, int]) -> _Draws:
    max_dy, max_dx = _crop_max(size)
    return [(True, -max_dx, max_dx), (True, -max_dy, max_dy)]


def _cutout_draws(size: tuple[int, int]) -> _Draws:
    h, w = _cutout_side(size)  # the centre lies in [0, H] like the reference's (even side): it may hang over an edge
    return [(True, 0, size[0] - h % 2), (True, 0, size[1] - w % 2)]


def _cutout_values(d: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    h, w = _cutout_side(size)
    return {"top": d[0] - h // 2, "left": d[1] - w // 2, "height": torch.full_like(d[0], h),
            "width": torch.full_like(d[1], w)}


_Values = Callable[[list[Tensor], tuple[int, int]], dict[str, Tensor]]
# op -> (its draws for an image size, its values from the drawn columns)
_SAMPLING: dict[str, tuple[Callable[[tuple[int, int]], _Draws], _Values]] = {
    "color": (lambda size: [(False, -0.5, 0.5), (False, 0.0, 1.0), (False, 0.0, 1.0)],
              lambda d, size: {"brightness": d[0] * BRIGHTNESS, "saturation": d[1] * SATURATION,
                               "contrast": d[2] + CONTRAST}),
    "crop": (_crop_draws, lambda d, size: {"dx": d[0], "dy": d[1]}),
    "cutout": (_cutout_draws, _cutout_values),
    "flip": (lambda size: [(False, 0.0, 1.0)], lambda d, size: {"flip": (d[0] < FLIP_PROB).double()}),
    "scale": (lambda size: [(False, 1 / SCALE_RATIO, SCALE_RATIO)] * 2, lambda d, size: {"sx": d[0], "sy": d[1]}),
    "rotate": (lambda size: [(False, -ROTATE_DEGREES, ROTATE_DEGREES)], lambda d, size: {"degrees": d[0]}),
}


def _draw(g: torch.Generator, draws: _Draws, n: int) -> list[Tensor]:
    """The draws of ``n`` images, image after image: one float64 (n,) column per draw."""
    if all(not integer for integer, _, _ in draws):  # uniforms: one rand call, then each column's range
        u = torch.rand((n, len(draws)), generator=g).double()
        return [low + (high - low) * u[:, j] for j, (_, low, high) in enumerate(draws)]
    if len(set(draws)) == 1:  # integers of one range
        _, low, high = draws[0]
        return list(torch.randint(int(low), int(high) + 1, (n, len(draws)), generator=g).double().unbind(1))
    cols: list[list[float]] = [[] for _ in draws]  # integers of several ranges (a non-square image): in order
    for _ in range(n):
        for col, (_, low, high) in zip(cols, draws):
            col.append(float(torch.randint(int(low), int(high) + 1, (), generator=g)))
    return [torch.tensor(col, dtype=torch.float64) for col in cols]


def _sample_columns(op: str, g: torch.Generator, size: tuple[int, int], n: int) -> dict[str, Tensor]:
    """``op``'s values for ``n`` images: one float64 (n,) tensor per value name."""
    draws, values = _SAMPLING[op]
    return values(_draw(g, draws(size), n), size)


def _sampler(op: str) -> Callable[[torch.Generator, tuple[int, int]], dict[str, float]]:
    def sample(g: torch.Generator, size: tuple[int, int]) -> dict[str, float]:
        return {k: float(v[0]) for k, v in _sample_columns(op, g, size, 1).items()}

    sample.__name__ = f"_sample_{op}"
    return sample


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=g).item())


# --- application: one function per op, (x, values) -> x; all differentiable w.r.t. x ------------------
def _apply_color(x: Tensor, v: dict[str, float]) -> Tensor:
    x = x + v["brightness"]
    m = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    x = (x - m) * v["saturation"] + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - m) * v["contrast"] + m


def _apply_crop(x: Tensor, v: dict[str, float]) -> Tensor:
    # out[..., i, j] = x[..., i - dy, j - dx], zero where that falls outside: content moves right/down.
    dx, dy = round(v["dx"]), round(v["dy"])
    h, w = x.shape[-2:]
    pad = max(abs(dx), abs(dy))
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def _apply_cutout(x: Tensor, v: dict[str, float]) -> Tensor:
    h, w = x.shape[-2:]
    top, left = round(v["top"]), round(v["left"])
    bottom, right = top + round(v["height"]), left + round(v["width"])
    mask = torch.ones(h, w, dtype=x.dtype, device=x.device)
    mask[max(top, 0) : max(min(bottom, h), 0), max(left, 0) : max(min(right, w), 0)] = 0
    return x * mask  # the mask is built fresh, so the input is never written to


def _apply_flip(x: Tensor, v: dict[str, float]) -> Tensor:
    return x.flip(-1) if v["flip"] >= 0.5 else x


def _apply_affine(x: Tensor, theta: list[list[float]]) -> Tensor:
    """Warp every image with the same 2x3 affine matrix (normalized coordinates, align_corners=True)."""
    t = torch.tensor(theta, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)  # (B, 2, 3)
    grid = F.affine_grid(t, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _apply_scale(x: Tensor, v: dict[str, float]) -> Tensor:
    return _apply_affine(x, [[v["sx"], 0.0, 0.0], [0.0, v["sy"], 0.0]])


def _apply_rotate(x: Tensor, v: dict[str, float]) -> Tensor:
    a = math.radians(v["degrees"])
    return _apply_affine(x, [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])


_Sampler = Callable[[torch.Generator, tuple[int, int]], dict[str, float]]
_Applier = Callable[[Tensor, dict[str, float]], Tensor]

# op token -> (sampler, applier, value names)
OPS: dict[str, tuple[_Sampler, _Applier, tuple[str, ...]]] = {
    "color": (_sampler("color"), _apply_color, ("brightness", "saturation", "contrast")),
    "crop": (_sampler("crop"), _apply_crop, ("dx", "dy")),
    "cutout": (_sampler("cutout"), _apply_cutout, ("top", "left", "height", "width")),
    "flip": (_sampler("flip"), _apply_flip, ("flip",)),
    "scale": (_sampler("scale"), _apply_scale, ("sx", "sy")),
    "rotate": (_sampler("rotate"), _apply_rotate, ("degrees",)),
}


@dataclass(frozen=True)
class DSAParams:
    """Everything needed to replay one augmentation: the op drawn and its sampled numbers.

    ``op`` is a token of :data:`OPS` or ``"none"``; ``values`` holds that op's numbers, e.g. ``{"dx": 3.0,
    "dy": -1.0}`` for crop. Crop offsets and the cutout square are in pixels of the ``image_size`` sampled for.
    """

    op: str
    values: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op != _NONE and self.op not in OPS:
            raise ConfigError(f"unknown DSA op {self.op!r}; valid ops are {', '.join(OPS)} or 'none'")
        needed = OPS[self.op][2] if self.op in OPS else ()
        missing = [k for k in needed if k not in self.values]
        if missing:
            raise ConfigError(f"DSA op {self.op!r} needs values {list(needed)}; missing {missing}")
        object.__setattr__(self, "values", {k: float(val) for k, val in self.values.items()})

    @classmethod
    def sample(
        cls,
        strategy: str = DEFAULT_STRATEGY,
        generator: torch.Generator | int | None = None,
        *,
        image_size: tuple[int, int] = (32, 32),
    ) -> DSAParams:
        """Draw one op of ``strategy`` uniformly, then its values, from a CPU generator (or int seed)."""
        tokens = parse_strategy(strategy)
        if not tokens:
            return cls(_NONE)
        g = _cpu_generator(generator)
        op = tokens[_randint(g, 0, len(tokens) - 1)]
        size = (int(image_size[0]), int(image_size[1]))
        return cls(op, OPS[op][0](g, size))


def apply_dsa(x: Tensor, params: DSAParams) -> Tensor:
    """Apply one sampled augmentation to every image of ``x`` (B, C, H, W); same shape, device and dtype."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"DSA expects a float tensor of shape (B, C, H, W); got {x.dtype} {tuple(x.shape)}")
    if params.op == _NONE:
        return x
    return OPS[params.op][1](x, params.values).contiguous()


def dsa(x: Tensor, generator: torch.Generator | int | None = None, strategy: str = DEFAULT_STRATEGY) -> Tensor:
    """Sample one augmentation for ``x``'s image size and apply it (to both batches: use SiameseAugment)."""
    params = DSAParams.sample(strategy, generator, image_size=(x.shape[-2], x.shape[-1]))
    return apply_dsa(x, params)


class SiameseAugment:
    """A seeded stream of DSA params, one per step, to share between the real and the synthetic batch.

    >>> aug = SiameseAugment(DEFAULT_STRATEGY, seed=0)
    >>> p = aug.next()
    >>> real_aug, syn_aug = apply_dsa(real, p), apply_dsa(syn, p)   # or: real_aug, syn_aug = aug(real, syn)
    """

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        seed: torch.Generator | int | None = None,
        *,
        image_size: tuple[int, int] = (32, 32),
    ):
        parse_strategy(strategy)  # fail at construction, not at the first step
        self.strategy = strategy
        self.image_size = image_size
        self.generator = _cpu_generator(seed)

    def next(self, image_size: tuple[int, int] | None = None) -> DSAParams:
        """The params for the next step."""
        return DSAParams.sample(self.strategy, self.generator, image_size=image_size or self.image_size)

    def __call__(self, *batches: Tensor) -> tuple[Tensor, ...]:
        """Draw one set of params (for the first batch's image size) and apply it to every batch."""
        params = self.next((batches[0].shape[-2], batches[0].shape[-1]))
        return tuple(apply_dsa(b, params) for b in batches)


# --- per-image numbers, as the reference evaluation applies DSA ------------------------------------------
def augment_per_image(x: Tensor, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY) -> Tensor:
    """DSA as the reference evaluation applies it: one op per batch, its random numbers per image.

    The numbers are those of :mod:`latentds.augment`'s samplers (same ranges, same generator stream, image
    after image), drawn for the whole batch in one call.
    """
    tokens = parse_strategy(strategy)
    if not tokens:
        return x
    op = tokens[int(torch.randint(len(tokens), (), generator=generator))]
    size = (int(x.shape[-2]), int(x.shape[-1]))
    return _apply_columns(x, op, _sample_columns(op, generator, size, x.shape[0]))


def _apply_per_image(x: Tensor, op: str, values: list[dict[str, float]]) -> Tensor:
    """Apply ``op`` to each image of ``x`` (B, C, H, W) with its own numbers; equals apply_dsa image by image."""
    cols = {k: torch.tensor([v[k] for v in values], dtype=torch.float64) for k in OPS[op][2]}
    return _apply_columns(x, op, cols)


def _apply_columns(x: Tensor, op: str, columns: dict[str, Tensor]) -> Tensor:
    """Apply ``op`` to each image of ``x`` (B, C, H, W) with the numbers in ``columns`` ((B,) each)."""
    b, _, h, w = x.shape
    cols = {k: v.to(device=x.device, dtype=torch.float32, non_blocking=True) for k, v in columns.items()}

    def col(key: str) -> Tensor:  # (B,) on x's device
        return cols[key]

    if op == "color":
        x = x + col("brightness").view(b, 1, 1, 1)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * col("saturation").view(b, 1, 1, 1) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * col("contrast").view(b, 1, 1, 1) + m
    if op == "crop":  # out[i, j] = x[i - dy, j - dx], zero outside
        dx, dy = col("dx").round().long(), col("dy").round().long()
        pad = int(max(columns["dx"].abs().max(), columns["dy"].abs().max()).round())  # host columns: no device sync
        padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
        c = x.shape[1]
        rows = torch.arange(h, device=x.device).view(1, h) - dy.view(b, 1) + pad  # (B, H)
        cols = torch.arange(w, device=x.device).view(1, w) - dx.view(b, 1) + pad  # (B, W)
        # two gathers (rows, then columns): the same values as one advanced index, at half its cost on a CPU
        x = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * pad))  # (B, C, H, W + 2p)
        return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
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
