"""Progress bars that show only where someone watches: a terminal or a notebook, never a redirected log."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable``: hidden when not ``enabled``, and when stderr is not a terminal (a log file
    or CI gets the log lines, not carriage-return debris); notebooks keep their widget. tqdm is imported only
    when used."""
    from tqdm.auto import tqdm

    notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)  # tqdm.auto picked the widget
    if enabled and not notebook:  # a console bar: only on a terminal
        stream = kwargs.get("file") or sys.stderr
        enabled = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(iterable, disable=not enabled, **kwargs)
