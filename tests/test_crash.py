"""kill -9 at the worst moment: no partial file under a final name, and nothing left after the next run.

Each command runs in a child process that SIGKILLs itself at its first rename of a finished staging file into
place (``os.replace``): the staging file is complete and the final name not yet written, the moment a crash
leaves the most behind. The same command is then run again, normally: it must succeed and leave no staging
file anywhere under the test folder.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from latentds.format.staging import staging_file, sweep_stale, sweep_tree
from tests.conftest import make_lds
from tests.fakedata import create_image_folder

REPO = Path(__file__).resolve().parent.parent
DIE_AT_RENAME = (
    "import os, signal, sys\n"
    "os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "from latentds.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
ENCODE_FAST = [
    "--preset", "smoke", "--device", "cpu", "--ipc", "1", "-q",
    "--set", "gan.iterations=2", "--set", "gan.ema_start=1", "--set", "gan.batch_size=4", "--set", "classifier.epochs=1",
    "--set", "invert.iterations=2", "--set", "condense.iterations=2", "--set", "condense.batch_syn=1",
    "--set", "condense.batch_real=4", "--set", "condense.eval_nets=0", "--set", "subset_size=3",
]


def _run(argv: list[str], *, die: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", DIE_AT_RENAME, *argv] if die else [sys.executable, "-m", "latentds", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def _staged(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp"))


def _command(tmp: Path, name: str) -> tuple[list[str], Path]:
    """The argv of ``name`` and the final path it writes, with its inputs made in ``tmp``."""
    if name == "encode":
        folder = create_image_folder(tmp / "images", (3, 32, 32), per_class=3)
        return ["encode", str(folder), str(tmp / "enc.lds"), *ENCODE_FAST], tmp / "enc.lds"
    a = make_lds(tmp / "a.lds", n=6)
    if name == "merge":
        from tests.test_merge import split

        a, b = split(a, tmp, 3)
        return ["-q", "merge", str(a), str(b), str(tmp / "merged.lds")], tmp / "merged.lds"
    if name == "unpack":
        packed = tmp / "src.lds.zst"
        subprocess.run([sys.executable, "-m", "latentds", "-q", "pack", str(a), str(packed)], check=True)
        return ["-q", "unpack", str(packed), str(tmp / "out.lds")], tmp / "out.lds"
    out = tmp / {"pack": "out.lds.zst", "export-npz": "out.npz", "export-folder": "out_png"}[name]
    return ["-q", name.split("-")[0], str(a), str(out)], out


@pytest.mark.parametrize("command", ["pack", "unpack", "export-npz", "export-folder", "merge", "encode"])
def test_kill_9_leaves_no_partial_output_and_the_next_run_cleans_up(tmp_path: Path, command: str) -> None:
    argv, final = _command(tmp_path, command)
    killed = _run(argv, die=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not final.exists()  # never a partial file under the final name
    assert _staged(tmp_path), "the kill should have left a staging entry for the next run to remove"
    again = _run(argv, die=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert final.exists() and _staged(tmp_path) == []


def test_sweep_keeps_the_staging_files_of_live_writers(tmp_path: Path) -> None:
    out = tmp_path / "x.lds"
    fd, mine = staging_file(out)  # this (live) process's
    os.close(fd)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = mine.name[len(".x.lds.") :].split("-")[0]
    gone = tmp_path / f".x.lds.{host}-{dead.pid}.abc123.tmp"
    other_host = tmp_path / f".x.lds.000000-{dead.pid}.abc123.tmp"
    other_file = tmp_path / f".y.lds.{host}-{dead.pid}.abc123.tmp"
    for p in (gone, other_host, other_file):
        p.write_bytes(b"partial")
    assert sweep_stale(out) == [gone]
    assert mine.exists() and other_host.exists() and other_file.exists() and not gone.exists()


@pytest.mark.parametrize("fmt", ["out.npz", "out_png"])
def test_exports_follow_the_umask(tmp_path: Path, fmt: str) -> None:
    from latentds.export import export

    src = make_lds(tmp_path / "a.lds", n=6)
    old = os.umask(0o022)
    try:
        out = export(src, tmp_path / fmt, progress=False)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == (0o755 if out.is_dir() else 0o644), oct(mode)  # not mkstemp's 0600 / mkdtemp's 0700


def test_sweep_tree_clears_a_work_dir_of_dead_writers_only(tmp_path: Path) -> None:
    fd, live = staging_file(tmp_path / "gan" / "state.safetensors")
    os.close(fd)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = live.parent / live.name.replace(f"-{os.getpid()}.", f"-{dead.pid}.")
    stale.write_bytes(b"half a checkpoint")
    (tmp_path / "classes").mkdir()
    stale_dir = tmp_path / "classes" / stale.name.replace("state.safetensors", "out_png")
    stale_dir.mkdir()
    assert sorted(sweep_tree(tmp_path)) == sorted([stale, stale_dir]) and live.exists()
