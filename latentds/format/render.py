"""Any value from a file, a server or a command line rendered safely for a terminal or a log.

A stranger's manifest may hold a string where an object is expected, ``1e308`` where a byte count is, a list of
a million items, or text with ESC/OSC sequences that would retitle or clear a terminal. Every printer and every
error message that shows such a value goes through :func:`safe` (text) or :func:`number` (figures): control and
format characters come out escaped (``\\x1b``), unpaired surrogates as ``\\udNNN``, and everything is cut to a
length. Nothing here raises on any input, and nothing imports torch.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["mib", "number", "safe", "shown_json"]


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def safe(value: Any, limit: int = 120) -> str:
    """``value`` as one line of printable text of at most ``limit`` characters (plus '...'); never raises."""
    try:
        if isinstance(value, str):
            text = value[: limit * 4 + 16]  # a 16 MiB string is escaped only as far as it is shown
        elif isinstance(value, (bool, int, float)) or value is None:
            text = number(value)
        elif isinstance(value, BaseException):
            text = str(value)[: limit * 4 + 16]
        else:
            text = shown_json(value, limit)
        text = _escape(text)
    except Exception:  # noqa: BLE001 - a printer must print something: repr of a hostile object may fail
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def shown_json(value: Any, limit: int = 120) -> str:
    """A container as compact JSON, at most about ``limit`` characters (deep or long values are cut, not walked)."""
    if isinstance(value, dict):
        items = []
        for i, (k, v) in enumerate(value.items()):
            if i == 8 or sum(map(len, items)) > limit:
                items.append(f"... ({len(value)} keys)")
                break
            items.append(f"{json.dumps(safe(k, 40))}: {shown_json(v, limit // 2) if isinstance(v, (dict, list)) else _scalar(v)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            if i == 8 or sum(map(len, items)) > limit:
                items.append(f"... ({len(value)} items)")
                break
            items.append(shown_json(v, limit // 2) if isinstance(v, (dict, list)) else _scalar(v))
        return "[" + ", ".join(items) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(safe(value, 60), ensure_ascii=False)
    return number(value) if isinstance(value, (bool, int, float)) or value is None else f"<{type(value).__name__}>"


def number(value: Any, unit: str = "") -> str:
    """A figure without assumptions: a bool, a 400-digit integer, 1e308, 1e-300 or a non-number all print."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) < 10**15:
            return f"{value:,}{unit}"
        exponent = int(abs(value).bit_length() * math.log10(2))  # str() of a 5,000-digit int raises
        return f"{'-' if value < 0 else ''}~10**{exponent}{unit}"
    if isinstance(value, float):
        return (f"{value:,.6g}" if math.isfinite(value) else str(value)) + unit
    return safe(value, 40)


def mib(value: Any) -> str:
    """A byte count as 'X.XX MiB', or the value escaped when it is not a sane non-negative number of bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 2**63:
        return f"{value / 2**20:,.2f} MiB"
    return number(value) + " (not a byte count)"
