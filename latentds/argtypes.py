"""argparse value types shared by the CLI's verbs (no torch here: the parser is built without it)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "zstd_level"]


def positive_int(text: str) -> int:
    """An integer >= 1, or the parser's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def zstd_level(text: str) -> int:
    """A zstd compression level, 1..22."""
    value = positive_int(text)
    if value > 22:
        raise argparse.ArgumentTypeError(f"zstd levels are 1..22, got {value}")
    return value
