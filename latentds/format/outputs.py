"""Checks every output path passes before any work starts, so a bad one fails in a line, not after decoding.

Each verb that writes (export, preview, pack, unpack, merge, import-itgan) calls :func:`check_output` first:
the output is not one of the inputs (by identity on disk, also through links), its parent is an existing
folder the user can write to, its name leaves room for the staging name beside it (``staging.py``), it is not a
symbolic link (latentds never writes through one: the link would be replaced, or its target overwritten),
and it does not exist unless replacing it was asked for. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from latentds.errors import UsageError
from latentds.format.render import safe

__all__ = ["NAME_MAX", "OutputPathError", "check_output"]

#: Longest file name most file systems take (ext4, APFS, NTFS: 255 bytes).
NAME_MAX = 255
#: What a staging name adds around the final name: "." + name + ".<host6>-<pid>.<random8>.tmp".
STAGING_OVERHEAD = 40


class OutputPathError(UsageError):
    """An output path that cannot be written as asked (an input, a link, a missing folder, a name too long)."""


def _check_folder(out: Path, shown: str, inputs: Iterable[str | os.PathLike], force: bool, marker: str | None) -> None:
    """An existing output folder: empty, or (with ``force``) one that latentds wrote and that holds no input."""
    if not out.is_dir():
        raise OutputPathError(f"{shown}: already exists and is not a folder; remove it, or choose another output path")
    if not any(out.iterdir()):
        return
    if not force:
        raise OutputPathError(f"{shown}: already exists; pass --force to replace it, or choose another output path")
    if marker is None or not (out / marker).is_file():
        raise OutputPathError(f"{shown}: already exists and was not written by latentds (no {marker or 'marker'} "
                              "file in it), so --force does not delete it; remove it yourself, or choose another path")
    for src in inputs:
        try:
            inside = Path(src).resolve().is_relative_to(out.resolve())
        except (OSError, RuntimeError):
            inside = False
        if inside:
            raise OutputPathError(f"{shown}: holds an input ({safe(str(src), 200)}); replacing the folder would delete "
                                  "it: write the output elsewhere")


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False


def check_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    force: bool = False,
    folder: bool = False,
    suffixes: tuple[str, ...] = (),
    marker: str | None = None,
) -> Path:
    """Refuse (OutputPathError, a usage error) an output path that cannot be written safely; returns it.

    ``folder``: the output is a folder, which may exist if empty or, with ``force``, if it holds the file ``marker``
    (a folder latentds wrote: it is replaced, by the caller, after the new one is complete); any other folder is
    never replaced, and neither is one that holds an input. Otherwise an existing regular file is replaced
    (atomically, at the end) only with ``force``. ``suffixes``: the allowed file suffixes, lowercase (empty: any).
    """
    out = Path(out)
    shown = safe(str(out), 200)
    name = out.name
    if not name or name in (".", ".."):
        raise OutputPathError(f"{shown}: not a file name; name the output file or folder")
    if len(name.encode("utf-8", "surrogateescape")) + STAGING_OVERHEAD > NAME_MAX:
        raise OutputPathError(f"{shown}: the name is {len(name.encode('utf-8', 'surrogateescape'))} bytes; at most "
                              f"{NAME_MAX - STAGING_OVERHEAD} fit (the staging file beside it adds {STAGING_OVERHEAD} "
                              f"to the {NAME_MAX}-byte limit of file names); choose a shorter name")
    if suffixes and out.suffix.lower() not in suffixes:
        raise OutputPathError(f"{shown}: unknown suffix '{safe(out.suffix, 20)}'; use {', '.join(suffixes)}")
    for src in inputs:
        if _same(Path(src), out):
            raise OutputPathError(f"{shown}: is also an input ({safe(str(src), 200)}); write the output elsewhere")
    if out.is_symlink():
        raise OutputPathError(f"{shown}: is a symbolic link; latentds does not write through links (it would replace "
                              "the link or overwrite its target): give the real path, or remove the link")
    parent = out.parent
    if not parent.exists():
        raise OutputPathError(f"{shown}: the folder {safe(str(parent), 200)} does not exist; create it first")
    if not parent.is_dir():
        raise OutputPathError(f"{shown}: {safe(str(parent), 200)} is not a folder; choose an output inside a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{shown}: the folder {safe(str(parent), 200)} is not writable")
    if out.exists():
        if folder:
            _check_folder(out, shown, inputs, force, marker)
        elif out.is_dir():
            raise OutputPathError(f"{shown}: is a folder; give a file name for this output")
        elif not force:
            raise OutputPathError(f"{shown}: already exists; pass --force to replace it, or choose another output path")
        elif not out.is_file():
            raise OutputPathError(f"{shown}: is not a regular file (a device or a pipe?); choose another output path")
    return out
