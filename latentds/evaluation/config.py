"""How networks are trained and tested (:class:`EvalConfig`); free of torch so the CLI builds its parser fast."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from latentds.errors import ConfigError

__all__ = ["DECODE_MODES", "DEFAULT_STRATEGY", "EvalConfig"]

DECODE_MODES = ("once", "per-epoch")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # = latentds.augment.DEFAULT_STRATEGY (test)


@dataclass
class EvalConfig:
    """How networks are trained on a training set and tested (defaults: method.md's protocol)."""

    arch: str = "convnet3"
    model_args: dict[str, Any] = field(default_factory=dict)  # extra create_model() arguments, e.g. {"width": 32}
    epochs: int = 300  # condensation papers run ConvNet 300-1000 epochs on small sets; IT-GAN's ResNet runs 200
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_at: float = 0.5  # lr x0.1 from epoch floor(epochs * lr_decay_at) on (0-based); 1.0 = never
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    dsa_per_image: bool = True  # numbers drawn per image, as the reference evaluation; False: one per batch
    seeds: int = 3  # networks trained, with seeds seed, seed + 1, ...
    seed: int = 0
    device: str = "auto"  # "auto": cuda if available, else cpu
    precision: str = "auto"  # training and decoding: "auto" (the hardware class's rule, latentds.plan), "fp32", "bf16"
    eval_every: int = 0  # also test every N epochs (curves); 0 = only after the final epoch, the one reported

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name in ("epochs", "batch_size", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"EvalConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ConfigError(f"EvalConfig.eval_every must be an int >= 0 (0 = final epoch only), got {self.eval_every!r}")
        if not 0.0 <= float(self.lr_decay_at) <= 1.0:
            raise ConfigError(f"EvalConfig.lr_decay_at must lie in [0, 1] (a fraction of the epochs), got {self.lr_decay_at!r}")
        if not float(self.lr) > 0:
            raise ConfigError(f"EvalConfig.lr must be > 0, got {self.lr!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"EvalConfig.model_args must be a dict of create_model() arguments, got {self.model_args!r}")
        if self.dsa:
            from latentds.augment import parse_strategy

            parse_strategy(self.dsa_strategy)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"EvalConfig.precision must be auto, fp32 or bf16, got {self.precision!r}")
        from latentds.devices import resolve_device

        resolve_device(self.device)

    @property
    def decay_epoch(self) -> int:
        """First (0-based) epoch trained at the dropped lr."""
        return int(math.floor(self.epochs * float(self.lr_decay_at)))
