"""The benchmark's vocabulary: methods, schedules, cells, settings and the command line."""

from __future__ import annotations

from cifar10_bench.runlog import REPO, fmt_ipc


import argparse
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpeg"
DEFAULT_GENERATOR = Path("bench/artifacts/cifar10-biggan32-w16-2000it.safetensors")
DEFAULT_OUT = Path("bench/results")
DEFAULT_WORK = Path("/tmp/latentds-bench")

METHODS = ("gan", "inversion", "itgan", "random", "dm", "dm_random", "real")
RUN_ORDER = ("random", "gan", "itgan", "inversion", "dm", "dm_random", "real")  # within an ipc; the real row last
DEFAULT_METHODS = ("random", "gan", "itgan", "inversion", "dm", "dm_random")  # "real": opt-in (--with-real), ~40 min on a CPU
GAN_METHODS = ("gan", "inversion", "itgan")  # artefacts made with the generator
ENCODE_METHODS = ("inversion", "itgan", "dm", "dm_random")  # artefacts that depend on the encode config
ARCH_LABELS = {"convnet3": "ConvNet-3", "resnet18_cifar": "ResNet-18"}
METHOD_LABELS = {
    "gan": "GAN (random z)",
    "inversion": "GAN inversion",
    "itgan": "IT-GAN",
    "random": "random real",
    "dm": "DM (pixels, IT-GAN's pool)",
    "dm_random": "DM (pixels, random nets)",
    "real": "whole real set",
}

# Storage reference: CIFAR-10's training set as raw uint8 pixels, and the official python archive.
CIFAR10_RAW_PIXEL_BYTES = 50_000 * 3 * 32 * 32  # 153,600,000 B = 146.5 MiB
CIFAR10_ARCHIVE_BYTES = 170_498_071  # cifar-10-python.tar.gz = 162.6 MiB

# The CPU schedule: the cpu preset shortened so the whole run fits a few hours on 2 cores (GAN 2,000 instead of
# 6,000 iterations; classifier 4 epochs with a snapshot each; condensation 500 instead of 1,000 steps). They
# come before the user's --set, which can override any of them. The committed generator at DEFAULT_GENERATOR
# was trained with exactly this GAN section; if it is missing the harness retrains it with it.
CPU_SCHEDULE = ("gan.iterations=2000", "classifier.epochs=4", "classifier.snapshot_every=1", "condense.iterations=500")

# Evaluation schedules (epochs) per (arch, ipc); ipc None = the whole training set. Shortened from the
# paper's 300 (ConvNet) / 200 (ResNet-18) epochs so the CPU run stays within a few hours. Batch 256 means one
# SGD step per epoch at 10/class and two at 50/class, so ConvNet gets the same 100 steps at both sizes.
# Override with --epochs ARCH[:IPC]=E.
DEFAULT_EPOCHS: dict[tuple[str, int | None], int] = {
    ("convnet3", 10): 100,
    ("convnet3", 50): 50,
    ("convnet3", None): 2,
    ("resnet18_cifar", 10): 40,
    ("resnet18_cifar", 50): 20,
    ("resnet18_cifar", None): 2,
}

# The paper's evaluation schedules (ConvNet-3 300 epochs, ResNet-18 200): `--schedule paper`, the default on a GPU.
# Every record keeps each seed's final training accuracy (`final_train_acc`); the table shows its mean, so a cell
# that has not converged (far below 100 %) is visible next to its test accuracy.
PAPER_EPOCHS: dict[tuple[str, int | None], int] = {
    ("convnet3", 10): 300,
    ("convnet3", 50): 300,
    ("convnet3", None): 300,
    ("resnet18_cifar", 10): 200,
    ("resnet18_cifar", 50): 200,
    ("resnet18_cifar", None): 200,
}

# Cost model for --plan: seconds on the 2-core development machine with 2 torch threads (quiet machine unless
# noted). Sources: the cpu preset's description (single-thread per-step figures, used as they are: a
# conservative stand-in for 2 threads on a shared machine) and measured evaluation costs.
COST = {
    "gan_iteration": 0.76,  # cpu preset GAN (width 16, batch 32, 2 D steps), per G iteration
    "classifier_epoch": 42.0,  # ConvNet-3 width 64 over 50,000 images (~7 min for 10 epochs)
    "invert_image_step": 0.007,  # per latent and Adam step (0.07 s per class-step at 10/class, 0.35 at 50)
    "condense_step": (0.0875, 0.00625),  # a + b * ipc per class-step (0.15 s at 10/class, 0.4 at 50)
    "dm_step": (0.06, 0.002),  # a + b * ipc per class-step: no generator; estimated, not measured
    "write_lds": 10.0,  # classifier/pool loading, eval nets, writing the file
    "load_source": 15.0,  # decoding the 60,000 JPEGs once for a training_set() call on real images
    "epoch_image": {"convnet3": 0.0075, "resnet18_cifar": 0.048},  # one training epoch, per image (DSA on)
    "test_10k": {"convnet3": 15.0, "resnet18_cifar": 60.0},  # one pass over 10,000 test images
}
TYPICAL_CLASS_SIZE = 5000  # CIFAR-10 images per class, for estimates made without loading the data

# --tiny: a synthetic 2-class problem, the smoke preset cut down further, 1-2 epochs.
TINY_IPCS = (2, 4)
TINY_EPOCHS = {("convnet3", 2): 2, ("convnet3", 4): 2, ("convnet3", None): 1, ("resnet18_cifar", 2): 1}
TINY_OVERRIDES = (
    "gan.iterations=20", "gan.ema_start=10", "gan.checkpoint_every=20", "classifier.epochs=1",
    "invert.iterations=3", "condense.iterations=3", "condense.batch_real=8", "condense.batch_syn=4",
    "condense.eval_nets=1",
)
TINY_CLASSES = ("cat", "dog")
TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS = 12, 10


# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One (method, ipc, architecture) evaluation: ``seeds`` networks trained for ``epochs``."""

    method: str
    ipc: int | None  # images per class; None = the whole training set ("real")
    arch: str
    epochs: int
    seeds: int


@dataclass
class Settings:
    data: str
    out: Path
    work: Path
    generator: Path
    ipcs: list[int | None]
    seeds: int
    methods: list[str]
    archs: list[str]
    resnet_ipcs: list[int | None]
    epochs: dict[tuple[str, int | None], int]
    preset: str
    overrides: list[str]
    device: str
    threads: int
    precision: str  # auto (the hardware class's rule) | fp32 | bf16: numerics of every encode and eval
    stem: str
    tiny: bool
    quiet: bool
    argv: list[str] = field(default_factory=list)

    @property
    def artifacts(self) -> Path:
        return self.work / "artifacts"

    def epochs_for(self, arch: str, ipc: int | None) -> int:
        if (arch, ipc) in self.epochs:
            return self.epochs[(arch, ipc)]
        if (arch, "*") in self.epochs:  # type: ignore[comparison-overlap]
            return self.epochs[(arch, "*")]  # type: ignore[index]
        known = sorted(k for (a, k) in self.epochs if a == arch and isinstance(k, int))
        if ipc is not None and known:  # nearest configured size at or above, else the largest
            above = [k for k in known if k >= ipc]
            return self.epochs[(arch, above[0] if above else known[-1])]
        raise SystemExit(f"no epoch count for {arch} at ipc {ipc}; pass --epochs {arch}:{ipc or 'all'}=E")


def cells(s: Settings) -> list[Cell]:
    """Every cell of the run, in run order: by ipc, then method, then architecture; the real row last."""
    out = []
    for ipc in s.ipcs:
        for method in RUN_ORDER:
            if method == "real" or method not in s.methods or (method == "random" and ipc is None):
                continue  # a "random subset" of everything is the real row
            for arch in s.archs:
                if arch != "convnet3" and ipc not in s.resnet_ipcs:
                    continue
                out.append(Cell(method, ipc, arch, s.epochs_for(arch, ipc), s.seeds))
    if "real" in s.methods:  # ConvNet only, unless the other networks are asked for at "all" (--resnet-ipc all)
        for arch in s.archs:
            if arch == "convnet3" or None in s.resnet_ipcs:
                out.append(Cell("real", None, arch, s.epochs_for(arch, None), s.seeds))
    return out


# --- records ---------------------------------------------------------------------------------------------
# How the evaluation ResNets are initialized. Records from before PyTorch's default init (the reference's) carry no
# "init" field: they were made with torchvision's kaiming-normal re-init, are marked in the table and rerun.
EVAL_INIT = "pytorch-default"


def _init_tag(arch: str, init: str | None) -> str | None:
    return (init or "torchvision") if arch.startswith("resnet") else None


def record_key(rec: dict[str, Any]) -> tuple:
    gen = rec.get("generator") or {}
    enc = (rec.get("encode_preset"), tuple(rec.get("encode_overrides") or ())) if rec["method"] in ENCODE_METHODS else None
    return (rec["method"], rec["ipc"], rec["arch"], rec["epochs"], rec["seeds"], gen.get("sha256"), enc,
            _init_tag(rec["arch"], rec.get("init")))


def cell_key(s: Settings, cell: Cell, gen_sha: str | None) -> tuple:
    enc = (s.preset, tuple(s.overrides)) if cell.method in ENCODE_METHODS else None
    sha = gen_sha if cell.method in GAN_METHODS else None
    return (cell.method, cell.ipc, cell.arch, cell.epochs, cell.seeds, sha, enc, _init_tag(cell.arch, EVAL_INIT))


def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc}); fix or move it away, then rerun") from None
    if not isinstance(records, list):
        raise SystemExit(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records



# --- the encode config -----------------------------------------------------------------------------------
# The committed benchmark generator (bench/artifacts) is a biggan32; pinning the architecture keeps its encode
# configs, work dirs and artefacts valid now that the presets name the any-size "biggan" family.
BENCH_GAN = ("gan.arch=biggan32", "gan.disc_arch=biggan32_disc")
# DM through the encode pipeline: pixels optimized from the selected real images, written as uint8 .npz.
DM_OVERRIDES = ("condense.parametrization=pixel", "condense.pixel_init=real")


def encode_overrides(s: Settings, ipc: int | None, extra: tuple[str, ...] = ()) -> list[str]:
    """The overrides on top of the preset that make a cell's encode config (what ``latentds encode --set`` takes)."""
    return [*BENCH_GAN, *s.overrides] + [f"ipc={'null' if ipc is None else ipc}", f"device={s.device}", *extra]


def encode_config(s: Settings, ipc: int | None, extra: tuple[str, ...] = ()):
    from latentds.encoding import apply_overrides, load_preset

    return apply_overrides(load_preset(s.preset), encode_overrides(s, ipc, extra))


def encode_flags(s: Settings, extra: tuple[str, ...] = ()) -> str:
    sets = " ".join(f"--set {shlex.quote(o)}" for o in [*BENCH_GAN, *s.overrides, *extra])
    return f"--preset {s.preset}" + (f" {sets}" if sets else "")


# --- estimates (for --plan) ------------------------------------------------------------------------------
def class_count(s: Settings) -> tuple[int, int, int]:
    """(classes, images per class, test images) without loading the data."""
    if s.tiny:
        return len(TINY_CLASSES), TINY_TRAIN_PER_CLASS, len(TINY_CLASSES) * TINY_TEST_PER_CLASS
    return 10, TYPICAL_CLASS_SIZE, 10_000

def parse_ipc(text: str) -> int | None:
    if text.lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value}")
    return value


def parse_epochs(items: list[str]) -> dict[tuple[str, Any], int]:
    out: dict[tuple[str, Any], int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        arch, _, ipc = key.partition(":")
        if not sep or not arch or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--epochs {item!r}: expected ARCH[:IPC]=E, e.g. convnet3:10=300 or resnet18_cifar=200")
        out[(arch, parse_ipc(ipc) if ipc else "*")] = int(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 (train/ and test/ image folders; default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {DEFAULT_OUT}; --tiny: WORK/results)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="artefacts, checkpoints, log (default %(default)s)")
    p.add_argument("--generator", type=Path, default=None,
                   help=f"generator safetensors; trained there if missing (default {DEFAULT_GENERATOR}; --tiny: WORK/tiny-generator.safetensors)")
    p.add_argument("--ipc", nargs="+", type=parse_ipc, default=None, help="images per class (default 10 50)")
    p.add_argument("--seeds", type=int, default=3, help="networks per cell (default %(default)s)")
    p.add_argument("--only", nargs="+", choices=METHODS, default=None, metavar="METHOD",
                   help=f"methods to run (default: {' '.join(DEFAULT_METHODS)}; 'real' with --with-real)")
    p.add_argument("--with-real", action="store_true", help="add the whole-real-set row (ConvNet only; ~40 min on a CPU)")
    p.add_argument("--archs", nargs="+", default=["convnet3", "resnet18_cifar"], help="evaluation networks")
    p.add_argument("--resnet-ipc", nargs="+", type=parse_ipc, default=None,
                   help="sizes at which networks other than convnet3 are evaluated (default: 10; --tiny: 2)")
    p.add_argument("--epochs", action="append", default=[], metavar="ARCH[:IPC]=E", help="override a schedule")
    p.add_argument("--schedule", choices=("cpu", "paper"), default=None,
                   help="evaluation epochs: the paper's (ConvNet-3 300, ResNet-18 200) or the CPU's shortened ones "
                        "(default: paper on a GPU, cpu elsewhere)")
    p.add_argument("--preset", default=None, help="encode preset (default cpu; --tiny: smoke)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="encode config override (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="numerics of every encode and eval: auto (the hardware class's rule, latentds.plan) or pinned")
    p.add_argument("--stem", default=None, help="results file name stem (default cifar10-cpu; --tiny: tiny-cpu)")
    p.add_argument("--plan", action="store_true", help="print the cells, their estimated times and the total; run nothing")
    p.add_argument("--artifacts-only", action="store_true", help="build the artefacts of the selected cells, no evaluation")
    p.add_argument("--tiny", action="store_true", help="a synthetic 2-class problem through the same code path (< 1 min)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or encode log echo")
    return p


def schedule_epochs(args: argparse.Namespace) -> dict[tuple[str, int | None], int]:
    """--tiny's, the paper's (--schedule paper; the default on a GPU) or the CPU's shortened epochs."""
    if args.tiny:
        return TINY_EPOCHS
    schedule = args.schedule
    if schedule is None:
        schedule = "paper" if args.device.startswith("cuda") or (args.device == "auto" and _cuda_available()) else "cpu"
    return PAPER_EPOCHS if schedule == "paper" else DEFAULT_EPOCHS


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def settings_from_args(args: argparse.Namespace, argv: list[str]) -> Settings:
    work = args.work
    overrides_epochs = parse_epochs(args.epochs)
    wildcard = {arch for (arch, ipc) in overrides_epochs if ipc == "*"}  # ARCH=E: every size, defaults dropped
    epochs: dict[tuple[str, Any], int] = {
        k: v for k, v in schedule_epochs(args).items() if k[0] not in wildcard}
    epochs.update(overrides_epochs)
    if args.tiny:
        data = str(work / "tiny-data.npz")
        overrides = list(TINY_OVERRIDES) + list(args.set)
    else:
        data = args.data
        overrides = (list(CPU_SCHEDULE) if args.preset in (None, "cpu") else []) + list(args.set)
    if args.precision != "auto":  # the encodes' numerics, recorded in their commands like any override
        overrides.append(f"precision={args.precision}")
    return Settings(
        data=data,
        out=args.out if args.out is not None else (work / "results" if args.tiny else REPO / DEFAULT_OUT),
        work=work,
        generator=args.generator if args.generator is not None else (
            work / "tiny-generator.safetensors" if args.tiny else REPO / DEFAULT_GENERATOR),
        ipcs=list(args.ipc) if args.ipc else (list(TINY_IPCS) if args.tiny else [10, 50]),
        seeds=args.seeds,
        methods=(list(args.only) if args.only else list(DEFAULT_METHODS)) + (["real"] if args.with_real or (
            args.tiny and not args.only) else []),
        archs=list(args.archs),
        resnet_ipcs=list(args.resnet_ipc) if args.resnet_ipc else ([TINY_IPCS[0]] if args.tiny else [10]),
        epochs=epochs,
        preset=args.preset or ("smoke" if args.tiny else "cpu"),
        overrides=overrides,
        device=args.device,
        threads=args.threads or os.cpu_count() or 1,
        precision=args.precision,
        stem=args.stem or ("tiny-cpu" if args.tiny else "cifar10-cpu"),
        tiny=args.tiny,
        quiet=args.quiet,
        argv=["python", "bench/run_cifar10.py", *argv],
    )


def artifact_name(method: str, ipc: int | None) -> str:
    return f"{method}_ipc{fmt_ipc(ipc)}"
