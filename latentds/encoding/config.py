"""The encode configuration: one dataclass per stage and :class:`EncodeConfig` over them, without torch.

    cfg = EncodeConfig(ipc=10, gan=GANConfig(width=32))
    json.dumps(asdict(cfg))                       # written into the work dir and the .lds provenance

Reading a config imports no torch and no training code: the stages (:mod:`latentds.encoding.gan`, ...) import
their section from here. Presets, config files and ``section.field=value`` overrides are layered onto these
dataclasses by :mod:`latentds.encoding.presets`. Each section checks its own values on creation (or in
``check``); field comments give the reason for non-obvious defaults, which are the paper's unless said.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from latentds.errors import ConfigError

__all__ = [
    "GENERATOR_DTYPES",
    "AmortizedConfig",
    "DEFAULT_POLICY",
    "ENCODE_PRECISIONS",
    "LATENT_DTYPES",
    "POLICY_OPS",
    "ClassifierConfig",
    "CondenseConfig",
    "EncodeConfig",
    "GANConfig",
    "InvertConfig",
    "PoolConfig",
    "config_diff",
    "describe_diff",
    "parse_policy",
]

LATENT_DTYPES = ("float32", "float16", "bfloat16", "int8")  # int8: a float32 scale per dimension
GENERATOR_DTYPES = ("float32", "float16", "bfloat16")  # how the generator's weights are stored (decoding casts)
ENCODE_PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_POLICY = "translation,cutout"  # DiffAugment-BigGAN-CIFAR's
POLICY_OPS = ("color", "translation", "cutout")  # the DiffAugment ops, in the order they are applied
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # = latentds.augment.DEFAULT_STRATEGY (a test checks)
PARAMETRIZATIONS = ("latent", "pixel")
PIXEL_INITS = ("real", "noise")
DEFAULT_LOSS = "dm"  # always in condense's MATCHING_LOSSES; other names are looked up there


# --- checks shared by the sections and by resume ------------------------------------------------------------
def check_int(cfg: Any, name: str, minimum: int) -> None:
    """Raise ConfigError unless ``cfg.name`` is an int (not a bool) >= minimum."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be an integer >= {minimum}, got {value!r}")


def from_dict(cls: Any, d: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``d``; unknown fields raise ConfigError naming the valid ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {unknown}; valid fields: {', '.join(sorted(names))}")
    return cls(**d)


def config_diff(saved: dict[str, Any], current: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """Names of the fields whose values differ between two config dicts (JSON-normalized), minus ``ignore``."""
    a, b = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k, "<missing>") != b.get(k, "<missing>"))


def describe_diff(saved: dict[str, Any], current: dict[str, Any], names: list[str], sep: str = ", ") -> str:
    """`name: old -> new` for each differing field, for error messages."""
    return sep.join(f"{n}: {saved.get(n, '<missing>')!r} -> {current.get(n, '<missing>')!r}" for n in names)


def parse_policy(policy: str) -> tuple[str, ...]:
    """Validate a comma-separated DiffAugment policy; returns its ops in application order. ``""``/``"none"`` -> ``()``."""
    if policy.strip().lower() in ("", "none"):
        return ()
    tokens = [t.strip() for t in policy.split(",")]
    bad = [t for t in tokens if t not in POLICY_OPS]
    if bad:
        raise ConfigError(
            f"unknown DiffAugment op(s) {bad} in policy {policy!r}; valid ops are {', '.join(POLICY_OPS)} "
            f"joined by ',' (e.g. {DEFAULT_POLICY!r}), or 'none'"
        )
    return tuple(op for op in POLICY_OPS if op in tokens)


# --- the stages ---------------------------------------------------------------------------------------------
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
    diffaug: str = DEFAULT_POLICY  # DiffAugment policy on every D input (reals and fakes)
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


@dataclass
class ClassifierConfig:
    """How the real-data classifier is trained (defaults: the paper's ConvNet pre-training)."""

    arch: str = "convnet3"
    width: int | None = 128  # None: the architecture's own default (for models without a width argument)
    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_epoch: int | None = None  # lr x0.1 from this epoch on; None: epochs // 2 (0.01, then 0.001 from 100)
    dsa: bool = True  # DSA augmentation, one op per batch, as when evaluating condensed sets
    snapshot_every: int = 0  # >0: also save the model every this many epochs (embedding-network pool)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            check_int(self, name, 1)
        check_int(self, "snapshot_every", 0)
        if self.lr_decay_epoch is not None:
            check_int(self, "lr_decay_epoch", 0)
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"ClassifierConfig.{name} must be a number >= 0, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        """Build from a dict (e.g. parsed JSON), rejecting unknown fields."""
        return from_dict(cls, d, "classifier config")

    @property
    def decay_epoch(self) -> int:
        return self.epochs // 2 if self.lr_decay_epoch is None else self.lr_decay_epoch


@dataclass
class PoolConfig:
    """How the embedding pool is built beyond the main classifier's snapshots (default: nothing more)."""

    runs: int = 0  # independent classifier runs (own seed, own data subset) whose snapshots join the pool
    epochs: int = 5  # epochs of each pool run
    snapshot_every: int = 1  # a pool member every this many epochs of a run
    subset: int = 10000  # training images per pool run (0: every image not held out)
    val_size: int = 2000  # training images held out of every pool run; candidates' accuracy is measured on them
    min_acc: float = 0.0  # drop candidates whose held-out accuracy (percent, 0..100) is below this
    include_main: bool = True  # the main classifier's snapshots join the pool too

    def __post_init__(self) -> None:
        check_int(self, "runs", 0)
        check_int(self, "epochs", 1)
        check_int(self, "snapshot_every", 1)
        check_int(self, "subset", 0)
        check_int(self, "val_size", 0)
        if isinstance(self.min_acc, bool) or not isinstance(self.min_acc, (int, float)) or not 0 <= self.min_acc <= 100:
            raise ConfigError(f"PoolConfig.min_acc must be a percentage in [0, 100], got {self.min_acc!r}")
        if not isinstance(self.include_main, bool):
            raise ConfigError(f"PoolConfig.include_main must be true or false, got {self.include_main!r}")


@dataclass
class InvertConfig:
    """Hyperparameters of the inversion stage (defaults: the paper's)."""

    iterations: int = 5000  # Adam steps per unit of latents
    lr: float = 0.1  # large on purpose: z starts at N(0, I) and must travel far
    batch_size: int = 50  # latents per work unit, all of one class (the reference's batch)
    lambda_pixel: float = 1.0  # weight of the pixel MSE next to the feature MSE
    units_per_pass: int = 0  # units sharing a forward pass; 0: 1 on a CPU, ~2,000 latents' worth on a GPU


@dataclass
class CondenseConfig:
    """Hyperparameters of the condensation stage (defaults: the paper's released CIFAR-10 run)."""

    iterations: int = 5000  # passes over all latents of a unit; one Adam step each (with pass_budget: the most)
    # Latent-passes per class: a class of n latents gets min(iterations, pass_budget // n) passes (at least 1), so
    # condensation costs about the same at any latent count and few latents get the passes many cannot afford.
    # None: every class gets ``iterations``.
    pass_budget: int | None = None
    lr: float = 0.001  # Adam lr on z (the paper's ablation: 0.001 is best)
    lr_pixel: float = 1.0  # parametrization "pixel": SGD lr on images, momentum 0.5, as DM optimizes its images
    batch_real: int = 500  # real images of the class per L_con term (the released runs)
    batch_syn: int = 500  # latents per forward pass; a unit is covered in ceil(n / batch_syn) batches
    lam: float = 0.0  # weight of the paired regularizer R (paper searched 1e-4..1e-1; released run: 0)
    dsa_strategy: str = DSA_STRATEGY
    random_width: int = 128  # channels of the random ConvNet-3 embedding nets (2048-d feature at 32x32)
    pool_prob: float = 1.0  # chance a draw comes from the pre-trained pool (paper: pool beats random by ~1.5 pt)
    parametrization: str = "latent"  # "latent" (IT-GAN) or "pixel" (DM baseline: images optimized, no G)
    pixel_init: str = "real"  # "pixel" only: start from the paired real images or from N(0, 1) noise
    eval_nets: int = 2  # fixed random nets that measure L_con (no augmentation) before/after; 0 = skip
    curve_points: int = 100  # the loss curve kept in stats is averaged down to this many points
    loss: str = DEFAULT_LOSS  # the matching loss, a name in condense's MATCHING_LOSSES ("dm": the paper's)

    def check(self) -> None:
        """Raise ConfigError on values the stage cannot run with."""
        if self.loss != DEFAULT_LOSS:  # only another name needs the registry (which imports torch)
            from latentds.encoding.losses import MATCHING_LOSSES

            if self.loss not in MATCHING_LOSSES:
                raise ConfigError(f"condense.loss must be one of {sorted(MATCHING_LOSSES)}, got {self.loss!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"condense.parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        if self.pixel_init not in PIXEL_INITS:
            raise ConfigError(f"condense.pixel_init must be one of {PIXEL_INITS}, got {self.pixel_init!r}")
        for name in ("batch_real", "batch_syn", "random_width", "curve_points"):
            if getattr(self, name) < 1:
                raise ConfigError(f"condense.{name} must be >= 1, got {getattr(self, name)}")
        if self.iterations < 0 or self.eval_nets < 0:
            raise ConfigError("condense.iterations and condense.eval_nets must be >= 0")
        if self.pass_budget is not None and (isinstance(self.pass_budget, bool) or not isinstance(self.pass_budget, int)
                                             or self.pass_budget < 1):
            raise ConfigError(f"condense.pass_budget must be an integer >= 1 or null, got {self.pass_budget!r}")
        if not 0.0 <= self.lam <= 1.0 or not 0.0 <= self.pool_prob <= 1.0:
            raise ConfigError(f"condense.lam and condense.pool_prob must lie in [0, 1], got {self.lam}, {self.pool_prob}")

    def passes(self, class_latents: int) -> int:
        """The passes each unit of a class with ``class_latents`` latents gets (see ``pass_budget``)."""
        if self.pass_budget is None or self.iterations == 0:
            return self.iterations
        return max(1, min(self.iterations, self.pass_budget // max(1, class_latents)))


@dataclass
class AmortizedConfig:
    """The latent encoder E(x, y) -> z that starts inversion (latentds.encoding.amortized); steps 0: none, the
    paper's z0 ~ N(0, I). Not in the paper: it replaces most per-image inversion steps at whole-set scale."""

    steps: int = 0  # Adam steps on E, each on a random class-balanced batch of real images
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 32  # channels of E's first conv (doubled twice)
    lambda_pixel: float = 1.0  # as invert.lambda_pixel
    lambda_prior: float = 0.1  # keeps mean(z^2) near 1, the scale G was trained on
    checkpoint_every: int = 200  # steps between checkpoints in the work dir

    def __post_init__(self) -> None:
        ints = (self.steps, self.batch_size, self.width, self.checkpoint_every)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints) or self.steps < 0 or min(ints[1:]) < 1:
            raise ConfigError("amortized.steps must be >= 0; batch_size, width and checkpoint_every >= 1 (integers)")
        if not self.lr > 0 or self.lambda_pixel < 0 or self.lambda_prior < 0:
            raise ConfigError("amortized.lr must be > 0 and the lambdas >= 0")


# --- the whole run ------------------------------------------------------------------------------------------
SECTIONS = ("gan", "classifier", "pool", "amortized", "invert", "condense")


@dataclass
class EncodeConfig:
    """Everything that determines an encode run's result (plus ``device``, which only decides where it runs)."""

    gan: GANConfig = field(default_factory=GANConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)  # condensation's embedding nets beyond the snapshots
    amortized: AmortizedConfig = field(default_factory=AmortizedConfig)  # inversion's learned starting point
    invert: InvertConfig = field(default_factory=InvertConfig)
    condense: CondenseConfig = field(default_factory=CondenseConfig)
    ipc: int | None = None  # latents (images) per class; None: one per training image (the paper)
    image_size: int | None = None  # resize the data to image_size x image_size (antialiased); None: native size
    seed: int = 0  # image selection, z0 and every work unit's seed derive from this
    latent_dtype: str = "float16"  # storage dtype in the .lds; fp16 halves the file, decoded images barely change
    generator_dtype: str = "float32"  # storage dtype of the generator's weights in the .lds (fp16: half the bytes)
    subset_size: int = 1250  # latents learned jointly per unit (paper: 1250 for CIFAR-10, 500 for CIFAR-100)
    device: str = "auto"  # "auto": cuda if available, else cpu
    precision: str = "auto"  # training stages: "auto" (the hardware class's rule, latentds.plan), "fp32" or "bf16"

    def check(self) -> None:
        """Raise ConfigError on values that cannot run (section dataclasses check their own on creation)."""
        if self.ipc is not None and (isinstance(self.ipc, bool) or not isinstance(self.ipc, int) or self.ipc < 1):
            raise ConfigError(f"ipc must be a positive integer or null (all images), got {self.ipc!r}")
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or not 8 <= self.image_size <= 1024):
            raise ConfigError(f"image_size must be an integer in 8..1024 or null (native size), got {self.image_size!r}")
        if self.latent_dtype not in LATENT_DTYPES:
            raise ConfigError(f"latent_dtype must be one of {LATENT_DTYPES}, got {self.latent_dtype!r}")
        if self.generator_dtype not in GENERATOR_DTYPES:
            raise ConfigError(f"generator_dtype must be one of {GENERATOR_DTYPES}, got {self.generator_dtype!r}")
        if isinstance(self.subset_size, bool) or not isinstance(self.subset_size, int) or self.subset_size < 1:
            raise ConfigError(f"subset_size must be a positive integer, got {self.subset_size!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.precision not in ENCODE_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(ENCODE_PRECISIONS)} (fp16 is for decoding only), "
                              f"got {self.precision!r}")
        if self.invert.iterations < 0 or self.invert.batch_size < 1 or self.invert.lr <= 0:
            raise ConfigError("invert.iterations must be >= 0, invert.batch_size >= 1 and invert.lr > 0")
        if isinstance(self.invert.units_per_pass, bool) or self.invert.units_per_pass < 0:
            raise ConfigError(f"invert.units_per_pass must be >= 0 (0: the device's default), got {self.invert.units_per_pass!r}")
        self.condense.check()


SECTION_TYPES: dict[str, type] = {
    "gan": GANConfig,
    "classifier": ClassifierConfig,
    "pool": PoolConfig,
    "amortized": AmortizedConfig,
    "invert": InvertConfig,
    "condense": CondenseConfig,
}
