"""Architectures and their registry: generators, discriminators, embedding and evaluation networks.

Models know nothing of files: saving and loading them is :mod:`latentds.checkpoint` (and :mod:`latentds.lds`).

    model = create_model("biggan32", num_classes=10)
    model.arch_name, model.arch_args  # enough, with the weights, to rebuild it
"""

from __future__ import annotations

# Importing the architecture modules registers their factories.
from latentds.models import biggan, convnet, resnet  # noqa: F401
from latentds.models.biggan import BigGANDiscriminator, BigGANGenerator
from latentds.models.convnet import VGG, ConvNet
from latentds.models.registry import (
    GeneratorContract,
    accepts_argument,
    count_parameters,
    create_model,
    generator_contract,
    input_args,
    is_model,
    list_models,
    output_to_unit,
    register_model,
    seeded_model,
    uint8_to_output,
    unregister_model,
)
from latentds.models.resnet import CifarMobileNetV2, CifarResNet
from latentds.models.spectral import apply_spectral_norm, remove_spectral_norm

__all__ = [
    "VGG",
    "BigGANDiscriminator",
    "BigGANGenerator",
    "CifarMobileNetV2",
    "CifarResNet",
    "ConvNet",
    "GeneratorContract",
    "accepts_argument",
    "apply_spectral_norm",
    "count_parameters",
    "create_model",
    "generator_contract",
    "input_args",
    "is_model",
    "list_models",
    "output_to_unit",
    "register_model",
    "remove_spectral_norm",
    "seeded_model",
    "uint8_to_output",
    "unregister_model",
]
