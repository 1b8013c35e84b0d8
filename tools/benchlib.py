"""What the measuring tools share: the machine's name, saving a result (JSON + the command that made it), and
running the CLI in a fresh child whose peak memory is read from VmHWM (which, unlike ru_maxrss, Linux does
not carry over from the parent through fork and exec)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CHILD = (
    "import atexit, sys\n"
    "def hwm():\n"
    "    kib = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
    "    open(sys.argv[1], 'w').write(kib)\n"
    "atexit.register(hwm)\n"
    "from latentds.cli import main\n"
    "sys.exit(main(['-q', *sys.argv[2:]]))\n"
)


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), or the architecture where /proc/cpuinfo does not say."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())


def rel(path: Path | str) -> str:
    """A path relative to the repository (``../work/...`` outside it), never this machine's absolute layout."""
    return os.path.relpath(Path(path).resolve(), REPO)


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def save_result(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def run_cli(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``latentds -q ARGV`` in a fresh child: exit code, last stderr line, peak RSS (MiB), seconds."""
    env = {**os.environ, **(env or {})}
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as hwm:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, hwm.name, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        seconds = time.perf_counter() - start
        peak_kib = int(hwm.read() or 0)
    return {"exit": proc.returncode, "message": (proc.stderr.strip().splitlines() or [""])[-1][:160],
            "peak_rss_mib": round(peak_kib / 1024, 1), "seconds": round(seconds, 2)}
