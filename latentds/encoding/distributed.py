"""Data-parallel encoding under ``torchrun``: ranks share the one-off stages and split the work units.

``torchrun --nproc-per-node N -m latentds encode ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` set; :func:`from_env` joins them into a
process group. Then, in :func:`latentds.encoding.pipeline.run`:

- rank 0 trains (or loads) the generator and the feature ConvNet; the other ranks wait, then read them;
- the pending inversion classes and condensation units are dealt out to the ranks (longest first, by size),
  each rank checkpointing its own in the work dir as a single process would;
- rank 0 collects the unit checkpoints and writes the .lds.

Every class and unit has its own seed, so the result does not depend on which rank ran what. Ranks exchange
only small messages and checkpoint files, never gradients, so the group always uses the gloo backend (it
runs on CPU-only machines too, and NCCL's bandwidth would buy nothing here). Files travel through the
group, so the work dir does not have to be on a shared file system; on a shared one, nothing is copied.

A long shared stage (training the generator takes hours) keeps the other ranks waiting in a collective,
so the group's timeout defaults to a day (``--dist-timeout``). If a rank dies, torchrun stops the others;
finished classes and units stay checkpointed, and rerunning the same command skips them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from latentds.errors import ConfigError

__all__ = ["DEFAULT_TIMEOUT_S", "Group", "assign", "from_env"]

DEFAULT_TIMEOUT_S = 24 * 3600.0


class Group:
    """The ranks of one encode run; a single process is a group of one, where every method is a no-op."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, owns_group: bool = False,
                 pg: Any = None):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self._owns = owns_group  # we initialized the process group, so we destroy it
        self.pg = pg  # the gloo group the collectives run in (None: the default group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, world_size={self.world_size}, local_rank={self.local_rank})"

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier(group=self.pg)

    def _all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """(n,) from every rank -> (world, n)."""
        if not self.distributed:
            return t.unsqueeze(0)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        torch.distributed.all_gather(out, t, group=self.pg)
        return torch.stack(out)

    def present(self, paths: Sequence[Path]) -> torch.Tensor:
        """(world, len(paths)) bool: which rank has which file (a collective: every rank must call it)."""
        have = torch.tensor([Path(p).is_file() for p in paths], dtype=torch.uint8)
        return self._all_gather(have).bool()

    def any_rank_has(self, paths: Sequence[Path]) -> list[bool]:
        return self.present(paths).any(0).tolist() if paths else []

    def broadcast_json(self, obj: Any = None, src: int = 0) -> Any:
        """Rank ``src``'s JSON-able ``obj`` on every rank (the others pass nothing)."""
        if not self.distributed:
            return obj
        data = json.dumps(obj).encode("utf-8") if self.rank == src else b""
        return json.loads(self._broadcast_bytes(data, src).decode("utf-8"))

    def _broadcast_bytes(self, data: bytes, src: int) -> bytes:
        size = torch.tensor([len(data)], dtype=torch.int64)
        torch.distributed.broadcast(size, src, group=self.pg)
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.rank == src else torch.empty(
            int(size), dtype=torch.uint8)
        if int(size):
            torch.distributed.broadcast(buf, src, group=self.pg)
        return buf.numpy().tobytes()

    def sync_files(self, paths: Sequence[Path], want: Sequence[Iterable[int]] | None = None) -> int:
        """Make each file exist on the ranks that want it, copied from the lowest rank that has it.

        ``want``: for each path, the ranks that need it (default: every rank). Every rank must call this
        with the same paths. Files are written atomically; a rank that already has a file (a shared file
        system, or an earlier run) receives nothing. Returns the bytes this rank received.
        """
        from latentds.format.writer import atomic_write

        paths = [Path(p) for p in paths]
        if not paths:
            return 0
        have = self.present(paths)
        everyone = range(self.world_size)
        received = 0
        for j, path in enumerate(paths):
            holders = torch.nonzero(have[:, j]).flatten().tolist()
            if not holders:
                raise RuntimeError(f"{path}: no rank has this file, so it cannot be shared (was it deleted mid-run?)")
            src = holders[0]
            targets = sorted(r for r in set(everyone if want is None else want[j]) if not have[r, j])
            for dst in targets:  # every rank walks the same list in the same order, so sends and receives pair up
                if self.rank == src:
                    data = path.read_bytes()
                    torch.distributed.send(torch.tensor([len(data)], dtype=torch.int64), dst, group=self.pg)
                    if data:
                        torch.distributed.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst, group=self.pg)
                elif self.rank == dst:
                    size = torch.empty(1, dtype=torch.int64)
                    torch.distributed.recv(size, src, group=self.pg)
                    buf = torch.empty(int(size), dtype=torch.uint8)
                    if int(size):
                        torch.distributed.recv(buf, src, group=self.pg)
                    atomic_write(path, [buf.numpy().tobytes()])
                    received += int(size)
        return received

    def share_dir(self, folder: Path, src: int = 0) -> int:
        """Copy every file under ``folder`` on rank ``src`` to the ranks that lack it; returns bytes received."""
        folder = Path(folder)
        names = None
        if self.rank == src:
            names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                           if p.is_file() and not p.name.startswith("."))  # skip atomic_write's temp files
        names = self.broadcast_json(names, src)
        return self.sync_files([folder / n for n in names])

    def close(self) -> None:
        if self._owns and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self._owns = False


def from_env(timeout_s: float = DEFAULT_TIMEOUT_S) -> Group:
    """The group torchrun (or any env:// launcher) set up, or a single-process group.

    Reuses a process group the caller already initialized (adding a gloo group beside an NCCL-only one,
    since ranks exchange CPU tensors); otherwise initializes one with the gloo backend from
    ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        pg = None if "gloo" in str(dist.get_backend()).lower() else dist.new_group(backend="gloo")
        return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns_group=False,
                     pg=pg)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Group()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run a single process")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set; start the ranks with torchrun")
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=_dt.timedelta(seconds=timeout_s))
    return Group(rank, world, local_rank, owns_group=True)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def assign(costs: Sequence[float], world_size: int) -> list[int]:
    """Deal items to ranks, longest first to the least-loaded rank (ties: the lower index); item -> rank.

    A pure function of its inputs, so every rank computes the same assignment.
    """
    load = [0.0] * world_size
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner
