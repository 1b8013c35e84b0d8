"""The work directory of an encode run and the bookkeeping every stage shares (:class:`Run`).

A work dir holds ``config.json`` (the resolved config, the data's fingerprint and the compute it ran
with; a rerun must match it), ``encode.log`` and one folder per stage. :class:`Run` carries what the
stages need (config, data, device, compute, process group, log) and records each stage's wall time and
memory high-water mark, so the pipeline reads as a list of stages.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentds.encoding.config import EncodeConfig, config_diff, describe_diff
from latentds.encoding.distributed import Group
from latentds.errors import ConfigError
from latentds.plan import Compute, get_plan
from latentds.sources import ImageSet

__all__ = ["NON_RESULT_FIELDS", "Run", "RunLog", "check_work_dir", "resolve_compute"]

# Fields that decide where or how verbosely a run goes, or only how its result is stored, not what it computes:
# a rerun may change them (one work dir can write its latents as fp16 and as int8). The precision is recorded
# as what it resolved to (the work dir's "compute" entry), not as asked.
NON_RESULT_FIELDS = ("device", "precision", "latent_dtype", "generator_dtype", "gan.checkpoint_every",
                     "gan.sample_every", "amortized.checkpoint_every", "condense.curve_points")
# Result fields added after work dirs were first written, with the value that computes what runs without them
# did: a work dir that lacks one resumes when the run keeps that value.
ADDED_FIELDS = {"config.condense.pass_budget": None}

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Run:
    """What the stages of one encode run share; ``stage(name)`` times a stage and records its peak memory."""

    cfg: EncodeConfig
    data: ImageSet
    work_dir: Path
    device: torch.device
    compute: Compute
    group: Group
    log: RunLog
    show: bool  # progress bars (rank 0's only)
    record: dict[str, Any]  # what config.json holds
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    timing: dict[str, float] = field(default_factory=dict)
    stage_memory: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record the block's wall time and the memory high-water mark at its end (RSS peaks are cumulative)."""
        t0 = time.perf_counter()
        yield
        self.timing[name] = time.perf_counter() - t0
        self.stage_memory[name] = peak_memory(self.device)

    def run_info(self) -> dict[str, Any]:
        """The provenance entries that depend on the machine and on resumes (the rest of a file does not)."""
        return {
            "timing_s": {k: round(v, 3) for k, v in {**self.timing, "total": time.perf_counter() - self.started}.items()},
            "memory": peak_memory(self.device),
            "peak_memory_by_stage": self.stage_memory,  # high-water mark at the end of each stage, in stage order
            "device": str(self.device),
            "compute": self.record["compute"],
            "torch_threads": torch.get_num_threads(),
        }


def compute_from(device: torch.device, desc: dict[str, Any]) -> Compute:
    """The Compute a work dir's ``compute`` record describes."""
    amp = desc.get("amp_dtype")
    return Compute(device, getattr(torch, amp) if amp else None, bool(desc.get("channels_last")))


def resolve_compute(device: torch.device, precision: str) -> Compute:
    """The training-stage settings for ``device``: for "auto", the rule of its hardware class (latentds.plan)."""
    plan = get_plan(device, precision)
    plan.apply_backend_flags()
    return plan.compute()


class RunLog:
    """Appends timestamped lines to the work dir's log file; also logs them (``latentds`` logger) unless quiet."""

    def __init__(self, path: Path, quiet: bool, prefix: str = ""):
        self.path = path
        self.quiet = quiet
        self.prefix = prefix  # "[rank R/W] " under torchrun: ranks append to the same file

    def __call__(self, line: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {self.prefix}{line}\n")
        if not self.quiet:
            logger.info(line)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def result_config(cfg: EncodeConfig) -> dict[str, Any]:
    data = json.loads(json.dumps(asdict(cfg)))
    for key in NON_RESULT_FIELDS:
        section, _, name = key.partition(".")
        if name:
            data[section].pop(name, None)
        else:
            data.pop(section, None)
    return data


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_work_dir(work_dir: Path, record: dict[str, Any], precision: str) -> dict[str, Any]:
    """Write config.json, or refuse a work dir made by another config or other data; returns the record.

    ``record["compute"]`` (device type, autocast dtype, memory format) must match too, so a run never
    resumes on another kind of device or at another precision. Under ``precision="auto"`` a resumed run
    adopts the work dir's compute (its rule may differ on another machine, or in another latentds).
    """
    path = work_dir / "config.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: unreadable ({exc}); delete the work dir {work_dir} or pass another --work-dir") from exc
        old, new = saved.get("compute"), record["compute"]
        if old != new:
            if old is None or old.get("device_type") != new["device_type"] or precision != "auto":
                raise ConfigError(
                    f"work dir {work_dir} was run with {describe_compute(old)}, this run would use "
                    f"{describe_compute(new)}; mixing them would change its numbers. Rerun with the same --device "
                    "and --precision (auto adopts the work dir's), or pass another --work-dir"
                )
            record = {**record, "compute": old}
        a, b = flatten(saved), flatten(record)
        for key, value in ADDED_FIELDS.items():  # an older work dir ran with the value that field now names
            if key in b:
                a.setdefault(key, value)
        if a != b:
            diff = config_diff(a, b)
            shown = describe_diff(a, b, diff[:8], sep="; ")
            hint = ""
            if (work_dir / "gan" / "generator.safetensors").exists():
                hint = (f" To reuse its trained generator, pass --generator {work_dir / 'gan' / 'generator.safetensors'} "
                        "with a new work dir.")
            raise ConfigError(
                f"work dir {work_dir} belongs to a run with different settings ({shown}{' ...' if len(diff) > 8 else ''}); "
                f"delete it or pass another --work-dir.{hint}"
            )
        return record
    from latentds.format.writer import atomic_write

    atomic_write(path, [json.dumps(record, indent=2, sort_keys=True).encode("utf-8")])
    return record


def describe_compute(c: dict[str, Any] | None) -> str:
    if not c:
        return "an unrecorded device and precision (an older latentds)"
    layout = ", channels_last" if c.get("channels_last") else ""
    return f"{c.get('device_type')} {c.get('amp_dtype') or 'float32'}{layout}"


def fresh_storage(module: nn.Module) -> nn.Module:
    """Copy every parameter and buffer into its own allocation, in place; returns the module.

    Weights loaded from a safetensors file sit at unaligned offsets of one buffer, and oneDNN then picks
    kernels that round differently from those for freshly trained (aligned) weights. Copying both the same
    way makes a resumed run, which loads the cached generator, bit-identical to an uninterrupted one.
    """
    module.load_state_dict({k: v.detach().clone() for k, v in module.state_dict().items()}, assign=True)
    return module


def json_safe(value: Any) -> Any:
    """Drop what JSON cannot hold (NaN, tensors) from stats destined for the manifest."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return json_safe(value.item())
    return str(value)


def peak_memory(device: torch.device) -> dict[str, Any]:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    mem: dict[str, Any] = {"peak_rss_mib": round(rss_kib / 1024, 1)}
    if device.type == "cuda":
        mem["peak_cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return mem
