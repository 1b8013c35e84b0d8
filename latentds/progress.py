"""Progress bars that show only where someone watches: a terminal or a notebook, never a redirected log.

Every bar in latentds goes through :func:`progress_bar`; a library whose own bars latentds drives (Hugging Face
``datasets`` when exporting) is switched on or off by :func:`shows_bar`. Long work also says what it is doing in
one log line first (the ``latentds`` logger), so a redirected log shows the line and a terminal the bar too.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar", "shows_bar"]


def _notebook() -> bool:
    from tqdm.auto import tqdm

    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)  # tqdm.auto picked the widget


def shows_bar(enabled: bool = True, stream: Any = None) -> bool:
    """Whether a bar asked for with ``enabled`` is drawn: in a notebook, or when ``stream`` (default stderr) is a
    terminal. A log file, a pipe or CI gets none."""
    if not enabled:
        return False
    stream = stream if stream is not None else sys.stderr
    if bool(getattr(stream, "isatty", lambda: False)()):
        return True
    return _notebook()


def progress_bar(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable``: hidden when not ``enabled``, and when stderr is not a terminal (a log file
    or CI gets the log lines, not carriage-return debris); notebooks keep their widget. tqdm is imported only
    when used."""
    from tqdm.auto import tqdm

    show = shows_bar(enabled, kwargs.get("file"))
    return tqdm(iterable, disable=not show, **kwargs)
