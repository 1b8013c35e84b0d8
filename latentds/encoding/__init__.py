"""The IT-GAN encoder: train the GAN and the real-data classifier, invert, condense, write the .lds file.

The whole run is :func:`latentds.encode` (latentds.api) or ``latentds encode`` (the CLI); both call
:func:`latentds.encoding.pipeline.run`. The stages are plain functions, one module each, usable alone and
used by the benchmarks (this package's ``__all__`` is that stage API); their configs live in the torch-free
:mod:`latentds.encoding.config`:

- :mod:`~latentds.encoding.gan`: ``train_gan`` (the class-conditional GAN) and ``gan_quality``.
- :mod:`~latentds.encoding.classifier`: ``train_classifier`` (the real-data ConvNet: features and pool).
- :mod:`~latentds.encoding.pool`: ``train_pool`` (independent classifier runs for the embedding pool).
- :mod:`~latentds.encoding.amortized`: ``train_encoder``/``predict_latents`` (a learned image -> latent map: the
  inversion's starting point at whole-set scale).
- :mod:`~latentds.encoding.invert`: ``invert_latents`` (one latent per real image).
- :mod:`~latentds.encoding.condense`: ``condense`` (distribution matching on latents, or on pixels for DM).
- :mod:`~latentds.encoding.workdir`, :mod:`~latentds.encoding.state`: the work dir, checkpoints, resume.

Names are re-exported lazily: importing a config does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {  # name -> its module (or "module:attribute" where the face names it more precisely)
    "EncodeConfig": "latentds.encoding.config",
    "GANConfig": "latentds.encoding.config",
    "ClassifierConfig": "latentds.encoding.config",
    "PoolConfig": "latentds.encoding.config",
    "InvertConfig": "latentds.encoding.config",
    "CondenseConfig": "latentds.encoding.config",
    "apply_overrides": "latentds.encoding.presets",
    "build_config": "latentds.encoding.presets",
    "load_preset": "latentds.encoding.presets",
    "NON_RESULT_FIELDS": "latentds.encoding.workdir",
    "run": "latentds.encoding.pipeline",
    "train_gan": "latentds.encoding.gan",
    "gan_quality": "latentds.encoding.gan",
    "GENERATOR_FILE": "latentds.encoding.gan",
    "GAN_META_CONFIG": "latentds.encoding.gan:META_CONFIG",  # keys of a generator file's metadata
    "GAN_META_STATS": "latentds.encoding.gan:META_STATS",
    "CLASSIFIER_META_STATS": "latentds.encoding.classifier:META_STATS",
    "train_classifier": "latentds.encoding.classifier",
    "load_classifier": "latentds.encoding.classifier",
    "accuracy": "latentds.encoding.classifier",
    "CLASSIFIER_FILE": "latentds.encoding.classifier",
    "InvertUnit": "latentds.encoding.invert",
    "invert_latents": "latentds.encoding.invert",
    "invert_images": "latentds.encoding.invert:invert",  # not "invert": that is the module's name too
    "units_per_pass": "latentds.encoding.invert",
    "assign": "latentds.encoding.distributed",
    "AmortizedConfig": "latentds.encoding.config",
    "train_encoder": "latentds.encoding.amortized",
    "predict_latents": "latentds.encoding.amortized",
    "condense_unit": "latentds.encoding.condense:condense",  # not "condense": that is the module's name too
    "work_units": "latentds.encoding.condense",
    "EmbeddingSampler": "latentds.encoding.embed",
    "random_convnet": "latentds.encoding.embed",
    "load_state": "latentds.encoding.state",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module, _, attribute = _HOMES[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module 'latentds.encoding' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
