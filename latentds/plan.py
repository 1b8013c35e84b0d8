"""The execution plan: which precision, memory format and batch sizes run fastest on the device at hand.

    plan = get_plan("cpu")                        # probed once per machine, then read from the user cache
    plan.decode_dtype, plan.channels_last, plan.decode_chunk
    compute = plan.compute()                      # what training stages use: autocast dtype, memory format
    with compute.autocast(): loss = net(x)

Nothing is hard-coded per machine kind. A short probe times the candidates on this device and keeps the
fastest; a candidate is only tried where the hardware runs it natively (bf16 on CPUs with AVX512-BF16 or AMX,
bf16 on GPUs of compute capability 8.0 and up, fp16 on any GPU), so a machine without bf16 hardware keeps
fp32 and is never slower than before. Two workloads are probed, because they disagree: decoding (a frozen
BigGAN forward, no gradient) and training (ConvNet-3 forward + backward, the shape of every encode stage
and of ``eval``). Measured on a 2-core AMD EPYC: channels_last decodes 1.3-1.9x faster, but trains
ConvNet-3 0.7x as fast, so the two choices are separate.

Precision: ``"auto"`` (the probe), ``"fp32"`` (today's numbers, bit-reproducible resumes on the CPU),
``"bf16"``, ``"fp16"`` (GPU decoding only; training stages use bf16 or fp32 because fp16 training needs
loss scaling). The environment variable ``LATENTDS_PRECISION`` sets the default for every call that gets
``"auto"``; an explicit argument wins over it. The cache lives in ``$LATENTDS_CACHE_DIR``, else
``$XDG_CACHE_HOME/latentds/plans`` or ``~/.cache/latentds/plans``, one JSON file per machine key (device
model, CPU flags, thread count, torch version, workload); delete it to probe again. ``LATENTDS_PROBE=0``
turns measuring off (fp32 or the fixed precision, contiguous, chunks of 16 on a CPU and 1024 on a GPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentds.cachedir import ENV_CACHE, cache_home
from latentds.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "Compute",
    "Plan",
    "cache_dir",
    "get_plan",
    "machine_info",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENV_PRECISION = "LATENTDS_PRECISION"
ENV_PROBE = "LATENTDS_PROBE"  # "0": never measure, use the fixed defaults (fp32, contiguous, chunk 16 on a CPU)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PLAN_VERSION = 1  # bump when the probe changes what it measures: old cache entries are then ignored
CPU_CHUNKS = (8, 16, 32, 64, 128, 256)  # decode chunk candidates (images per generator pass)
GPU_CHUNKS = (256, 1024, 4096)
PROBE_SECONDS = 0.25  # minimum timed seconds per candidate
DECODE_BUDGET_S = 12.0  # give up on larger chunks once the decode probe has taken this long
ROUNDS = 3  # interleaved measurement rounds per candidate (the best of them counts)
TRAIN_WIDTH = 128  # the training probe's ConvNet-3 width: the paper's embedding and evaluation net
MARGIN = 1.10  # a candidate must beat fp32/contiguous by 10 % to replace it: near-ties keep today's numbers


@dataclass(frozen=True)
class Compute:
    """How a training stage runs: an autocast dtype (None: plain fp32) and the memory format of conv nets."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``amp_dtype`` on this device; a no-op for fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` in the plan's memory format (in place; returned for chaining)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def describe(self) -> dict[str, Any]:
        return {"amp_dtype": _dtype_name(self.amp_dtype), "channels_last": self.channels_last}


@dataclass(frozen=True)
class Plan:
    """The choices for one device; ``source`` says where they came from (probe, cache or fixed)."""

    device: str
    precision: str  # decode weights dtype: fp32 | bf16 | fp16
    channels_last: bool  # decode memory format
    decode_chunk: int  # images per generator pass when decoding
    train_precision: str  # autocast dtype of training stages: fp32 | bf16
    train_channels_last: bool
    # torch.compile is not probed: on the 2-core EPYC it took 31.6 s to compile the width-16 generator for a
    # 1.12x faster decode (344 -> 386 img/s), which pays off only after ~100,000 images; always False for now.
    compile: bool = False
    tf32: bool = False  # TF32 matmul/conv on CUDA (fp32 stages)
    cudnn_benchmark: bool = False
    source: str = "fixed"
    measured: dict[str, Any] = field(default_factory=dict)  # the probe's figures, images/s per candidate

    @property
    def decode_dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def compute(self) -> Compute:
        """The training-stage settings of this plan."""
        amp = None if self.train_precision == "fp32" else DTYPES[self.train_precision]
        return Compute(torch.device(self.device), amp, self.train_channels_last)

    def apply_backend_flags(self) -> None:
        """Turn on TF32 and cuDNN autotuning where the plan says so (process-wide; CUDA only)."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- what the hardware can do -------------------------------------------------------------------------------
def _cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                if key == "" and flags:  # end of the first processor's block
                    break
    except OSError:
        pass
    return model, flags


def _cpu_has_bf16() -> bool:
    """bf16 matmul in hardware: AVX512-BF16 or AMX on x86, BF16 on ARM (no emulation)."""
    _, flags = _cpu_model_and_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cuda_has_bf16(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 0)  # Ampere and later; earlier GPUs emulate it


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What the plan is keyed on: device model, bf16 hardware, threads, torch and CUDA versions."""
    device = torch.device(device)
    info: dict[str, Any] = {"device_type": device.type, "torch": torch.__version__, "machine": platform.machine()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info.update(gpu=torch.cuda.get_device_name(index), capability=list(torch.cuda.get_device_capability(index)),
                    cuda=torch.version.cuda, bf16_hardware=_cuda_has_bf16(torch.device("cuda", index)))
    else:
        model, flags = _cpu_model_and_flags()
        info.update(cpu=model, threads=torch.get_num_threads(), bf16_hardware=_cpu_has_bf16(),
                    bf16_flags=sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "bf16"}),
                    capability=torch.backends.cpu.get_cpu_capability())
    return info


# --- resolving a requested precision --------------------------------------------------------------------------
def resolve_precision(precision: str | None) -> str:
    """An explicit precision, else ``$LATENTDS_PRECISION``, else ``"auto"``; checked against PRECISIONS."""
    if precision is None or precision == "auto":
        precision = os.environ.get(ENV_PRECISION, "").strip().lower() or "auto"
        where = f"${ENV_PRECISION}"
    else:
        where = "precision"
    if precision not in PRECISIONS:
        raise ConfigError(f"{where} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cache_dir() -> Path:
    """Where probed plans are cached (see the module docstring)."""
    explicit = os.environ.get(ENV_CACHE, "")
    return Path(explicit) if explicit else cache_home() / "plans"


def get_plan(
    device: str | torch.device = "cpu",
    precision: str | None = "auto",
    workload: str = "biggan32",
    generator: Callable[[], nn.Module] | None = None,
    probe: bool = True,
    decode: bool = True,
) -> Plan:
    """The execution plan for ``device``.

    ``precision``: "auto" probes (or reads the cache); "fp32"/"bf16"/"fp16" fix the dtype and probe only the
    memory format and chunk size. ``workload`` names the generator the decode figures are for (its arch and
    args; the cache is keyed on it) and ``generator`` builds it for the probe (default: a BigGAN-32 at width
    16). ``probe=False`` skips all measuring: fp32 (or the fixed precision), contiguous, default chunks.
    ``decode=False`` probes only the training settings (what ``encode`` and ``eval`` need).
    """
    device = torch.device(device)
    precision = resolve_precision(precision)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 is for GPU decoding; on the CPU use auto, fp32 or bf16")
    if not probe or os.environ.get(ENV_PROBE, "").strip() == "0":
        return _default_plan(device, precision)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but CUDA is not available; use device 'cpu'")
    info = machine_info(device)
    key = {"version": PLAN_VERSION, "precision": precision, "workload": workload if decode else None, **info}
    path = cache_dir() / f"plan-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.json"
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    plan = _probe(device, precision, generator if decode else None, decode)
    _write_cache(path, key, plan)
    return plan


def _default_plan(device: torch.device, precision: str) -> Plan:
    cuda = device.type == "cuda"
    fixed = "fp32" if precision == "auto" else precision
    return Plan(str(device), fixed, False, GPU_CHUNKS[1] if cuda else 16,
                "fp32" if fixed == "fp16" else fixed, False, tf32=cuda, cudnn_benchmark=cuda)


def _read_cache(path: Path, key: dict[str, Any]) -> Plan | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        plan = replace(Plan(**data["plan"]), source="cache")
        ok = (plan.precision in DTYPES and plan.train_precision in ("fp32", "bf16") and type(plan.decode_chunk) is int
              and plan.decode_chunk >= 1 and all(isinstance(getattr(plan, f), bool) for f in
                                                 ("channels_last", "train_channels_last", "tf32", "cudnn_benchmark")))
        return plan if ok else None  # an edited or damaged entry: probe again
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # missing or unreadable: probe again


def _write_cache(path: Path, key: dict[str, Any], plan: Plan) -> None:
    try:
        from latentds.format.staging import atomic_write

        atomic_write(path, [json.dumps({"key": key, "plan": plan.to_dict()}, indent=2).encode("utf-8")])
    except OSError:
        pass  # a read-only home: the plan still holds for this process


# --- the probe ----------------------------------------------------------------------------------------------
def _rate(fn: Callable[[], Any], items: int, sync: Callable[[], None], min_seconds: float = PROBE_SECONDS) -> float:
    """Items per second of ``fn``: one warm-up call, then at least 3 timed calls and ``min_seconds``; the
    median call, so that a moment of load from another process does not decide the plan."""
    fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return items / sorted(times)[len(times) // 2]


def _best_of_rounds(calls: dict[str, Callable[[], Any]], items: int, sync: Callable[[], None],
                    rounds: int | None = None) -> dict[str, float]:
    """Each candidate's best rate over ``rounds`` interleaved rounds: load from other processes only slows
    a measurement down, and interleaving spreads it over all candidates alike."""
    best = dict.fromkeys(calls, 0.0)
    for _ in range(ROUNDS if rounds is None else rounds):
        for key, fn in calls.items():
            best[key] = max(best[key], _rate(fn, items, sync))
    return best


def _pick(rates: dict[str, float]) -> str:
    """The first candidate (fp32, contiguous), unless a later one beats the best so far by MARGIN."""
    keys = list(rates)
    winner = keys[0]
    for key in keys[1:]:
        if rates[key] > rates[winner] * MARGIN:
            winner = key
    return winner


def _candidates(device: torch.device, precision: str, training: bool) -> list[str]:
    if precision != "auto":
        return ["fp32" if training and precision == "fp16" else precision]
    if device.type == "cuda":
        native_bf16 = _cuda_has_bf16(device)
        if training:
            return ["fp32", "bf16"] if native_bf16 else ["fp32"]
        return ["fp32", "bf16", "fp16"] if native_bf16 else ["fp32", "fp16"]
    return ["fp32", "bf16"] if _cpu_has_bf16() else ["fp32"]


def _probe(device: torch.device, precision: str, generator: Callable[[], nn.Module] | None, decode: bool) -> Plan:
    from latentds.models import create_model

    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    if cuda:  # measure the fp32 candidates as they will run
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    measured: dict[str, Any] = {"decode": {}, "train": {}}
    gen = torch.Generator().manual_seed(0)

    default = _default_plan(device, precision)
    dtype, cl, best_chunk = default.precision, default.channels_last, default.decode_chunk
    if decode:
        dtype, cl, best_chunk = _probe_decode(device, precision, generator, sync, measured["decode"], gen)

    # Training: ConvNet-3 at width 128 (the paper's embedding and evaluation net) forward + backward under
    # autocast, contiguous or channels_last. The winner depends on the width: on a 2-core EPYC channels_last
    # was 1.1x faster at width 64 and 0.8x at width 128, so the probe measures the width that costs the most.
    batch = 256 if cuda else 64
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    y = (torch.arange(batch) % 10).to(device)
    steps: dict[str, tuple[Callable[[], None], str, bool]] = {}
    for tdtype in _candidates(device, precision, training=True):
        for tcl in (False, True):
            net = create_model("convnet3", num_classes=10, width=TRAIN_WIDTH).to(device)
            compute = Compute(device, None if tdtype == "fp32" else DTYPES[tdtype], tcl)
            compute.prepare(net)
            xin = x.contiguous(memory_format=torch.channels_last) if tcl else x

            def step(net: nn.Module = net, compute: Compute = compute, xin: torch.Tensor = xin) -> None:
                with compute.autocast():
                    loss = torch.nn.functional.cross_entropy(net(xin).float(), y)
                loss.backward()

            steps[f"{tdtype}{'/channels_last' if tcl else ''}@{batch}"] = (step, tdtype, tcl)
    rates = _best_of_rounds({k: v[0] for k, v in steps.items()}, batch, sync)
    measured["train"].update({k: round(v, 1) for k, v in rates.items()})
    _, train_dtype, train_cl = steps[_pick(rates)]
    return Plan(str(device), dtype, cl, best_chunk, train_dtype, train_cl, tf32=cuda, cudnn_benchmark=cuda,
                source="probe", measured=measured)


def _probe_decode(
    device: torch.device, precision: str, generator: Callable[[], nn.Module] | None, sync: Callable[[], None],
    measured: dict[str, Any], gen: torch.Generator,
) -> tuple[str, bool, int]:
    """Decoding: dtype x memory format at one chunk size, then the chunk size for the winner."""
    from latentds.models import create_model

    cuda = device.type == "cuda"
    build = generator or (lambda: create_model("biggan32", num_classes=10, width=16))
    base = build().eval().requires_grad_(False)
    latent_dim, classes = int(base.latent_dim), int(base.num_classes)
    first = 512 if cuda else 32
    z_all = torch.randn(max(GPU_CHUNKS) if cuda else max(CPU_CHUNKS), latent_dim, generator=gen).to(device)
    y_all = (torch.arange(z_all.shape[0]) % classes).to(device)
    models, calls = {}, {}
    for dtype in _candidates(device, precision, training=False):
        for cl in (False, True):
            g = models[dtype, cl] = _decode_model(base, device, dtype, cl)
            z = z_all[:first].to(DTYPES[dtype])
            calls[f"{dtype}{'/channels_last' if cl else ''}@{first}"] = (lambda g=g, z=z: g(z, y_all[:first]))
    with torch.no_grad():
        rates = _best_of_rounds(calls, first, sync)
    measured.update({k: round(v, 1) for k, v in rates.items()})
    winner = _pick(rates)
    dtype, cl = winner.split("@")[0].split("/")[0], "/channels_last" in winner
    best = (rates[winner], dtype, cl)
    g = models[dtype, cl]
    chunks = GPU_CHUNKS if cuda else CPU_CHUNKS
    best_chunk, best_rate, started = first, best[0], time.perf_counter()
    for chunk in chunks:
        if chunk == first:
            continue
        if time.perf_counter() - started + 3 * chunk / best_rate > DECODE_BUDGET_S:
            break  # this chunk would take too long to measure on this device
        with torch.no_grad():
            rate = _rate(lambda: g(z_all[:chunk].to(DTYPES[dtype]), y_all[:chunk]), chunk, sync)
        measured[f"{dtype}{'/channels_last' if cl else ''}@{chunk}"] = round(rate, 1)
        if rate > best_rate:
            best_chunk, best_rate = chunk, rate
    return dtype, cl, best_chunk


def _decode_model(base: nn.Module, device: torch.device, dtype: str, channels_last: bool) -> nn.Module:
    import copy

    g = copy.deepcopy(base).to(device=device, dtype=DTYPES[dtype])
    return g.to(memory_format=torch.channels_last) if channels_last else g


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")
