"""Preset names and the constants the CLI's parser needs, without importing torch (``latentds --help`` is fast).

Presets live in ``latentds/presets/<name>.json``; :func:`latentds.encoding.config.load_preset` reads them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ENCODE_PRECISIONS", "LATENT_DTYPES", "PRESET_DIR", "default_preset", "list_presets"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
LATENT_DTYPES = ("float32", "float16", "bfloat16")
ENCODE_PRECISIONS = ("auto", "fp32", "bf16")


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def default_preset(device: str) -> str:
    """The preset a run without ``--preset`` gets: ``paper`` on a GPU, ``cpu`` elsewhere (the paper's 250,000 GAN
    iterations would take weeks on a CPU)."""
    return "paper" if str(device).startswith("cuda") else "cpu"
