"""The run log and how numbers are written in it and in the records."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent  # bench/cifar10_bench/ -> the repository




def portable(text: str) -> str:
    """Paths in recorded commands made relative to the repository (``../shared/...``), not this machine's."""
    return text.replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../")


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes via the library's atomic writer (temp file + fsync + rename)."""
    from latentds.format import atomic_write

    atomic_write(path, [data])


def file_sha256(path: Path) -> str:
    from latentds.format import (
        file_sha256 as sha256_of,  # imported here, as all of latentds: --help needs no torch
    )

    return sha256_of(path)


# --- logging ---------------------------------------------------------------------------------------------
class Log:
    """Timestamped lines to stdout and to WORK/bench.log."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def __call__(self, line: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {line}\n")
        print(f"[{stamp}] {line}", flush=True)


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_ipc(ipc: int | None) -> str:
    return "all" if ipc is None else str(ipc)


def pct(part: float, whole: float) -> str:
    p = 100.0 * part / whole
    return f"{p:.2f} %" if p < 1 else f"{p:.1f} %" if p < 10 else f"{p:.0f} %"


def mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"
