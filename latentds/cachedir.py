"""Where latentds keeps what it can recompute (checked remote byte ranges, downloaded datasets)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "LATENTDS_CACHE_DIR"


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/latentds`` (when absolute), else ``~/.cache/latentds``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "latentds"
