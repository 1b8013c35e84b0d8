"""The execution plan: the numerics and batch sizes latentds runs with on the device at hand.

    plan = get_plan("cpu")                        # a rule for this machine's hardware class: no stopwatch
    plan.decode_dtype, plan.channels_last, plan.decode_chunk
    compute = plan.compute()                      # what training stages use: autocast dtype, memory format
    with compute.autocast(): loss = net(x)

Results depend on the seed, the config and declared numeric choices, never on timing. Every choice that
changes numbers (the autocast dtype of training, the decode dtype, the memory format, the decode chunk) is a
*rule per hardware class* (:data:`CLASSES`), each backed by a measurement recorded next to it; nothing is
probed or cached, so the same command on the same machine class gives the same bytes. ``latentds info
--system --measure`` times the alternatives on the machine at hand, to check a rule, without changing it.

Precision: ``"auto"`` (the hardware class's rule), ``"fp32"`` (fp32 everywhere, TF32 off),
``"bf16"`` (bf16 training autocast and bf16 decoding, also on a CPU without bf16 hardware, where it is
slow), ``"fp16"`` (GPU decoding only; training stays fp32 because fp16 training needs loss scaling). The
environment variable ``LATENTDS_PRECISION`` sets the default for every call that gets ``"auto"``; an explicit
argument wins over it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from latentds.errors import ConfigError

__all__ = [
    "CLASSES",
    "DTYPES",
    "PRECISIONS",
    "Compute",
    "HardwareClass",
    "Plan",
    "get_plan",
    "hardware_class",
    "images_per_second",
    "machine_info",
    "measure",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENV_PRECISION = "LATENTDS_PRECISION"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardwareClass:
    """The plan's rule for one kind of hardware: what ``"auto"`` means there and why."""

    name: str
    auto_train: str  # autocast dtype of training stages under "auto": fp32 | bf16
    auto_decode: str  # decode weight dtype under "auto": fp32 | bf16 | fp16
    decode_channels_last: bool
    decode_chunk: int  # images per generator pass
    evidence: str  # the measurement the rule rests on


# Each rule is a measurement, not a guess; a class nobody has measured keeps fp32 (an explicit precision
# still works there). Decoding chunks of 8 or more give bit-identical images per row whatever the chunk
# (BigGAN-32 width 16, fp32 and bf16, contiguous and channels_last, measured on the AMX Xeon), so the chunk
# only sets speed; the dtype and memory format change the rounding and are fixed per class.
CLASSES: dict[str, HardwareClass] = {
    "cpu": HardwareClass(
        "cpu", "fp32", "fp32", True, 16,
        "2-core AMD EPYC, no bf16 hardware (bench/results/speed-cpu.json): decode fp32 channels_last 1.4-1.8x "
        "contiguous; ConvNet-3 training channels_last 7-12 % slower; emulated bf16 matmul 110x slower than fp32. "
        "CPUs with other bf16 hardware (ARM BF16) are in this class until measured (--precision bf16 tries it)"),
    "cpu-avx512bf16": HardwareClass(
        "cpu-avx512bf16", "bf16", "bf16", True, 16,
        "2-core AMD EPYC with AVX512-BF16, no AMX (bench/results/plan-rules-cpu-avx512bf16.json, python "
        "tools/bench_plan_rules.py, two runs): a ConvNet-3 width-128 training step in bf16 2.1-2.3x fp32 and "
        "2.3-2.6x bf16 channels_last; BigGAN-32 width-16 decode in bf16 channels_last 1.7-1.8x fp32 channels_last "
        "at 16 per pass, chunks of 16-128 within 5 % of each other"),
    "cpu-amx": HardwareClass(
        "cpu-amx", "bf16", "bf16", True, 16,
        "2-core Xeon with AMX (bench/results/plan-rules-cpu-amx.json, python tools/bench_plan_rules.py): a ConvNet-3 "
        "width-128 training step in bf16 1.7-2.3x fp32 and 2.5x bf16 channels_last; BigGAN-32 width-16 decode in bf16 "
        "channels_last 3-5x fp32 at 16 per pass, with 16-32 per pass the fastest chunks"),
    "cuda": HardwareClass(
        "cuda", "fp32", "fp16", False, 1024,
        "GPUs before compute capability 8.0 run bf16 emulated; fp16 decodes natively. Not yet measured here"),
    "cuda-bf16": HardwareClass(
        "cuda-bf16", "bf16", "bf16", False, 1024,
        "compute capability 8.0+ runs bf16 natively. Not yet measured here (tools/gpu_check.sh measures it)"),
}


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
    """The choices for one device: the hardware class's rule applied to the requested precision."""

    device: str
    precision: str  # decode weights dtype: fp32 | bf16 | fp16
    channels_last: bool  # decode memory format
    decode_chunk: int  # images per generator pass when decoding
    train_precision: str  # autocast dtype of training stages: fp32 | bf16
    train_channels_last: bool  # training memory format: contiguous on every class measured so far
    hardware: str = "cpu"  # the name of the HardwareClass the rule came from
    requested: str = "auto"  # the precision asked for ("auto" or a pinned one)

    @property
    def decode_dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def compute(self) -> Compute:
        """The training-stage settings of this plan."""
        amp = None if self.train_precision == "fp32" else DTYPES[self.train_precision]
        return Compute(torch.device(self.device), amp, self.train_channels_last)

    def apply_backend_flags(self) -> None:
        """On CUDA, fix what would otherwise vary: no TF32 in fp32 stages, no cuDNN autotuning by stopwatch
        (it picks convolution algorithms by timing, and they round differently). Process-wide; a no-op on a CPU."""
        if torch.device(self.device).type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    def describe(self) -> str:
        """One line for logs: what runs, and the rule that chose it."""
        how = "pinned" if self.requested != "auto" else f"auto, rule for {self.hardware}"
        layout = "channels_last" if self.channels_last else "contiguous"
        return (f"training {self.train_precision}, decoding {self.precision} {layout} in chunks of "
                f"{self.decode_chunk} ({how}; pin with --precision or ${ENV_PRECISION})")

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


def _cpu_class() -> str:
    """The CPU's hardware class from its flags: AMX, else AVX512-BF16, else plain (bf16 emulated or unmeasured)."""
    _, flags = _cpu_model_and_flags()
    return "cpu-amx" if "amx_bf16" in flags else "cpu-avx512bf16" if "avx512_bf16" in flags else "cpu"


def _cuda_has_bf16(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 0)  # Ampere and later; earlier GPUs emulate it


def hardware_class(device: str | torch.device = "cpu") -> HardwareClass:
    """The rule that applies to ``device`` (decided by CPU flags or CUDA capability, never by timing)."""
    device = torch.device(device)
    if device.type == "cuda":
        return CLASSES["cuda-bf16" if _cuda_has_bf16(device) else "cuda"]
    return CLASSES[_cpu_class()]


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """The machine: device model, bf16 hardware, threads, torch and CUDA versions, hardware class."""
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
    info["hardware_class"] = hardware_class(device).name
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


def get_plan(device: str | torch.device = "cpu", precision: str | None = "auto") -> Plan:
    """The execution plan for ``device`` at ``precision`` ("auto": the hardware class's rule)."""
    device = torch.device(device)
    precision = resolve_precision(precision)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 is for GPU decoding; on the CPU use auto, fp32 or bf16")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but CUDA is not available; use device 'cpu'")
    rule = hardware_class(device)
    decode = rule.auto_decode if precision == "auto" else precision
    train = rule.auto_train if precision == "auto" else ("fp32" if precision == "fp16" else precision)
    return Plan(str(device), decode, rule.decode_channels_last, rule.decode_chunk, train, False,
                hardware=rule.name, requested=precision)


# --- measuring a rule (informational: nothing here changes a plan) ----------------------------------------------
def images_per_second(fn: Callable[[], Any], items: int, sync: Callable[[], None], seconds: float) -> float:
    """Items per second of ``fn``: one warm-up call, then the fastest of three timed spans of ``seconds / 3``."""
    fn()
    sync()
    best = 0.0
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < seconds / 3:
            fn()
            sync()
            calls += 1
        best = max(best, calls * items / (time.perf_counter() - start))
    return best


def measure(device: str | torch.device = "cpu", generator: nn.Module | None = None,
            seconds: float = 0.6) -> dict[str, dict[str, float]]:
    """Images per second of each numeric choice on this machine (decode and a ConvNet-3 training step), for
    ``latentds info --system --measure``: shows whether the hardware class's rule fits, never changes it."""
    from latentds.models import create_model

    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    dtypes = ["fp32", "bf16"] + (["fp16"] if cuda else [])
    out: dict[str, dict[str, float]] = {"decode": {}, "train": {}}
    base = (generator or create_model("biggan32", num_classes=10, width=16)).eval().requires_grad_(False)
    chunk = CLASSES["cuda"].decode_chunk if cuda else CLASSES["cpu"].decode_chunk
    z = torch.randn(chunk, int(base.latent_dim), generator=gen).to(device)
    y = (torch.arange(chunk) % int(base.num_classes)).to(device)
    with torch.no_grad():
        for name in dtypes:
            for cl in (False, True):
                g = _decode_model(base, device, name, cl)
                zd = z.to(DTYPES[name])
                out["decode"][f"{name}{'/channels_last' if cl else ''}@{chunk}"] = round(
                    images_per_second(lambda g=g, zd=zd: g(zd, y), chunk, sync, seconds), 1)
    batch = 256 if cuda else 64
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    t = (torch.arange(batch) % 10).to(device)
    for name in dtypes[:2]:
        for cl in (False, True):
            net = create_model("convnet3", num_classes=10, width=128).to(device)
            compute = Compute(device, None if name == "fp32" else DTYPES[name], cl)
            compute.prepare(net)
            xin = x.contiguous(memory_format=torch.channels_last) if cl else x

            def step(net: nn.Module = net, compute: Compute = compute, xin: torch.Tensor = xin) -> None:
                with compute.autocast():
                    loss = torch.nn.functional.cross_entropy(net(xin).float(), t)
                loss.backward()

            out["train"][f"{name}{'/channels_last' if cl else ''}@{batch}"] = round(images_per_second(step, batch, sync, seconds), 1)
    return out


def _decode_model(base: nn.Module, device: torch.device, dtype: str, channels_last: bool) -> nn.Module:
    import copy

    g = copy.deepcopy(base).to(device=device, dtype=DTYPES[dtype])
    return g.to(memory_format=torch.channels_last) if channels_last else g


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")
