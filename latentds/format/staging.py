"""Atomic writes through staging files, and cleanup of the staging files a killed writer leaves behind.

Every output (a .lds, a pack, an export, a checkpoint) is written to a staging file or folder beside its final
path, named ``.<final name>.<host>-<pid>.<random>.tmp``, then renamed into place: a crash leaves the old file or
none under the final name, never a partial one. A ``kill -9`` cannot clean up after itself, so the next write
of the same path removes the staging entries whose writer is gone (same host, process no longer running);
those of a live writer, or of another machine sharing the folder, are left alone. Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["atomic_write", "replace_staged", "replace_staged_dir", "staging_dir", "staging_file", "sweep_stale",
           "sweep_tree"]

logger = logging.getLogger(__name__)
_STAGED = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.tmp")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or not a pid we can ask about): not ours to judge
    return True


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the staging files and folders left beside ``path`` by writers of it that were killed."""
    path = Path(path)
    return _sweep(path.parent, path.name)


def sweep_tree(root: str | os.PathLike) -> list[Path]:
    """Remove every killed writer's staging entry under ``root`` (an encode work dir, on resume)."""
    removed = []
    for folder, dirs, _files in os.walk(root):
        removed += _sweep(Path(folder), None)
        dirs[:] = [d for d in dirs if not _STAGED.fullmatch(d)]
    return removed


def _sweep(folder: Path, name: str | None) -> list[Path]:
    prefix, host, removed = f".{name}." if name else ".", _host(), []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        m = _STAGED.fullmatch(entry.name)
        if m is None or (name and m["name"] != name) or m["host"] != host or _alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
        logger.info(f"removed {entry.path}, left by an interrupted write")
    return removed


def _prefix(path: Path) -> str:
    return f".{path.name}.{_host()}-{os.getpid()}."


def staging_file(path: str | os.PathLike) -> tuple[int, Path]:
    """(open fd, path) of a new staging file for ``path``, with the permissions an ordinary file gets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
    return fd, Path(tmp)


def staging_dir(path: str | os.PathLike) -> Path:
    """A new staging folder for ``path``, with the permissions an ordinary folder gets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    return tmp


def _fsync_dir(folder: Path) -> None:
    try:  # make a rename durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write(
    path: str | os.PathLike,
    chunks: Iterable[bytes | memoryview],
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write chunks to a staging file beside ``path``, fsync it, then rename it into place.

    A crash or an exception leaves either the old file or no file under ``path``, never a partial one.
    ``check(staged_path)`` runs on the complete staged file before the rename; raising there keeps the old file.
    """
    path = Path(path)
    fd, tmp = staging_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def replace_staged(tmp: Path, path: Path) -> None:
    """Rename a finished staging file or folder into place (durably)."""
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def replace_staged_dir(tmp: Path, path: Path) -> None:
    """Put a finished staging folder in place of ``path``, which may be absent, empty, or a folder to replace: the
    two are swapped in one step where the system can (Linux ``renameat2`` with ``RENAME_EXCHANGE``), else by two
    renames a moment apart; the old folder is deleted only after the new one is in place (a crash before that
    leaves it under a staging name, which the next write of ``path`` sweeps)."""
    if not path.exists():
        replace_staged(tmp, path)
        return
    if not any(path.iterdir()):
        path.rmdir()
        replace_staged(tmp, path)
        return
    if _exchange(tmp, path):
        old = tmp  # the exchange left the old folder under the staging name
    else:
        old = path.parent / f"{_prefix(path)}{secrets.token_hex(4)}.tmp"
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux >= 3.15 with glibc >= 2.28); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
