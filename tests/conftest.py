"""Shared fixtures: tiny, seeded .lds files built with the real writer and a tiny registered generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentds.lds import image_spec, save_lds
from latentds.models import create_model

CLASSES = ["cat", "dog", "ship"]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def make_lds(
    path: Path,
    n: int = 24,
    latent_dtype: torch.dtype | None = None,
    seed: int = 0,
    chunk_rows: int | None = None,
    classes: list[str] = CLASSES,
) -> Path:
    """A small .lds: biggan32_tiny (width 4) with seeded weights and latents, labels cycling over classes."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # model init inside create_model uses the global RNG; tests may reseed it
    g = create_model("biggan32_tiny", num_classes=len(classes), width=4).eval()
    latents = torch.randn(n, 128, generator=gen)
    labels = torch.arange(n) % len(classes)
    if chunk_rows is None:
        return save_lds(path, g, latents, labels, classes, image_spec(MEAN, STD), latent_dtype=latent_dtype)
    from latentds.format import write_lds

    return write_lds(
        path,
        latents=latents,
        labels=labels,
        classes=classes,
        generator_arch=g.arch_name,
        generator_args=g.arch_args,
        generator_state=g.state_dict(),
        image=image_spec(MEAN, STD),
        latent_dtype=latent_dtype,
        chunk_rows=chunk_rows,
    )


@pytest.fixture
def tiny_lds(tmp_path: Path) -> Path:
    return make_lds(tmp_path / "tiny.lds")
