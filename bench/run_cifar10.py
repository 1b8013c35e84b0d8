#!/usr/bin/env python
"""CIFAR-10 benchmark of latentds: IT-GAN next to its baselines, same training protocol for every method.

    python bench/run_cifar10.py                  # everything: resumes, skipping finished cells
    python bench/run_cifar10.py --plan           # the cells, their estimated times and the total; runs nothing
    python bench/run_cifar10.py --only itgan dm --ipc 10
    python bench/run_cifar10.py --tiny --work /tmp/b --out /tmp/b/results   # the same code path in seconds

Methods, at each images-per-class (ipc) size:

- ``gan``        plain GAN samples: z ~ N(0, I) through the generator (``latentds eval gan:GEN --ipc N``)
- ``inversion``  GAN inversion only: ``latentds encode`` with ``condense.iterations=0``
- ``itgan``      the full encode (inversion + condensation of the latents)
- ``random``     a random real subset of N images per class
- ``dm``         distribution matching on pixels: :func:`latentds.encoding.condense.condense` with
                 ``parametrization="pixel"``, the same loss, schedule, embedding nets and augmentation as
                 itgan's condensation, initialized from the same real images itgan's latents were inverted from
- ``dm_random``  DM as published: the same, but a freshly initialized random ConvNet every step
                 (``condense.pool_prob=0``) instead of itgan's pool of pre-trained nets
- ``real``       the whole real training set (ConvNet only, a few epochs; an upper bound, stated as such)

A *cell* is (method, ipc, architecture): ``seeds`` freshly initialized networks trained on the method's
artefact with :func:`latentds.evaluation.evaluate` and tested on the real test split. Every finished cell is
appended at once to ``OUT/<stem>.json`` (then the Markdown table and the PNG plot are rewritten), so an
interrupted run resumes where it stopped and a run can be spread over several sessions. Artefacts
(generator, classifier, .lds, .npz) and their checkpoints live in ``--work``; the encode pipeline resumes
from its own checkpoints too.

The figures are whatever was measured: nothing here is tuned to produce an ordering.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
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


# --- the encode config -----------------------------------------------------------------------------------
# The committed benchmark generator (bench/artifacts) is a biggan32; pinning the architecture keeps its encode
# configs, work dirs and artefacts valid now that the presets name the any-size "biggan" family.
BENCH_GAN = ("gan.arch=biggan32", "gan.disc_arch=biggan32_disc")
# DM through the encode pipeline: pixels optimized from the selected real images, written as uint8 .npz.
DM_OVERRIDES = ("condense.parametrization=pixel", "condense.pixel_init=real")


def encode_config(s: Settings, ipc: int | None, extra: tuple[str, ...] = ()):
    from latentds.encoding.config import apply_overrides, load_preset

    overrides = [*BENCH_GAN, *s.overrides] + [f"ipc={'null' if ipc is None else ipc}", f"device={s.device}", *extra]
    return apply_overrides(load_preset(s.preset), overrides)


def encode_flags(s: Settings, extra: tuple[str, ...] = ()) -> str:
    sets = " ".join(f"--set {shlex.quote(o)}" for o in [*BENCH_GAN, *s.overrides, *extra])
    return f"--preset {s.preset}" + (f" {sets}" if sets else "")


# --- estimates (for --plan) ------------------------------------------------------------------------------
def class_count(s: Settings) -> tuple[int, int, int]:
    """(classes, images per class, test images) without loading the data."""
    if s.tiny:
        return len(TINY_CLASSES), TINY_TRAIN_PER_CLASS, len(TINY_CLASSES) * TINY_TEST_PER_CLASS
    return 10, TYPICAL_CLASS_SIZE, 10_000


def estimate_generator(s: Settings) -> float:
    g = encode_config(s, None).gan
    scale = (g.width / 16) ** 2 * (g.batch_size / 32) * (g.d_steps + 1) / 3
    return g.iterations * COST["gan_iteration"] * scale


def estimate_classifier(s: Settings) -> float:
    k, per_class, _ = class_count(s)
    c = encode_config(s, None).classifier
    return c.epochs * COST["classifier_epoch"] * (k * per_class / 50_000) * ((c.width or 128) / 64) ** 2


def estimate_artifact(s: Settings, method: str, ipc: int | None, reuse_inversion: bool) -> float:
    """Seconds to build the artefact of (method, ipc), the shared generator and classifier excluded."""
    k, per_class, _ = class_count(s)
    n = per_class if ipc is None else min(ipc, per_class)
    cfg = encode_config(s, ipc)
    if method in ("gan", "random", "real"):
        return 0.0
    if method in ("dm", "dm_random"):
        a, b = COST["dm_step"]
        batch = min(n, cfg.condense.batch_syn)
        return cfg.condense.iterations * k * (a + b * batch) * math.ceil(n / cfg.condense.batch_syn)
    invert = 0.0 if (method == "inversion" and reuse_inversion) else cfg.invert.iterations * k * n * COST["invert_image_step"]
    if method == "inversion":
        return COST["load_source"] + invert + COST["write_lds"]
    a, b = COST["condense_step"]
    batch = min(n, cfg.condense.batch_syn)
    condense = cfg.condense.iterations * k * (a + b * batch) * math.ceil(n / cfg.condense.batch_syn)
    return COST["load_source"] + invert + condense + COST["write_lds"]


def estimate_cell(s: Settings, cell: Cell) -> float:
    k, per_class, n_test = class_count(s)
    n = k * (per_class if cell.ipc is None else cell.ipc)
    per_seed = cell.epochs * n * COST["epoch_image"].get(cell.arch, 0.05) + COST["test_10k"].get(cell.arch, 60.0) * n_test / 10_000
    load = COST["load_source"] if cell.method in ("random", "real") else 2.0
    return load + cell.seeds * per_seed


# --- data ------------------------------------------------------------------------------------------------
def make_tiny_data(path: Path) -> Path:
    """A seeded synthetic 2-class set (32x32 RGB) as an .npz with train and test splits."""
    import numpy as np

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]

    def images(count: int) -> tuple[np.ndarray, np.ndarray]:
        out, labels = [], []
        for c in range(len(TINY_CLASSES)):
            for _ in range(count):
                phase = rng.uniform(0, 2 * np.pi)
                wave = np.sin((yy if c == 0 else xx) / 2.5 + phase)  # class 0: horizontal stripes, 1: vertical
                tint = np.array([0.7, 0.4, 0.3]) if c == 0 else np.array([0.3, 0.4, 0.7])
                img = 0.5 + 0.25 * wave[None] * tint[:, None, None] + rng.normal(0, 0.08, (3, 32, 32))
                out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
                labels.append(c)
        return np.stack(out), np.array(labels, dtype=np.int64)

    tr_x, tr_y = images(TINY_TRAIN_PER_CLASS)
    te_x, te_y = images(TINY_TEST_PER_CLASS)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y,
             classes=np.array(TINY_CLASSES))
    return path


class Data:
    """The train and test splits, loaded on first use."""

    def __init__(self, spec: str, log: Log):
        self.spec, self.log = spec, log
        self._train = self._test = None

    @property
    def train(self):
        if self._train is None:
            from latentds.sources import load_source

            t0 = time.perf_counter()
            self._train = load_source(self.spec, "train", progress=False)
            self.log(f"data: {self._train.name}: {len(self._train):,} training images, "
                     f"{self._train.num_classes} classes ({time.perf_counter() - t0:.1f} s)")
        return self._train

    @property
    def test(self):
        if self._test is None:
            from latentds.sources import load_source

            self._test = load_source(self.spec, "test", progress=False)
            self.log(f"data: {len(self._test):,} test images")
        return self._test


# --- shared artefacts: generator and classifier ----------------------------------------------------------
def generator_info(path: Path) -> dict[str, Any]:
    """What the records say about the generator: file, hash, architecture and its GAN training config."""
    from safetensors import safe_open

    from latentds.checkpoint import META_ARCH, META_ARGS, read_model_metadata
    from latentds.encoding.gan import META_CONFIG, META_STATS

    meta = read_model_metadata(path)
    with safe_open(str(path), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    stats = json.loads(meta.get(META_STATS, "{}"))
    return {
        "file": str(path),
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "arch": meta.get(META_ARCH),
        "args": json.loads(meta.get(META_ARGS, "{}")),
        "tensor_elements": int(params),
        "gan_config": json.loads(meta[META_CONFIG]) if META_CONFIG in meta else None,  # None: not made by train-gan
        "train_s": stats.get("train_seconds"),
        "train_device": stats.get("device"),
    }


def ensure_generator(s: Settings, data: Data, log: Log) -> Path:
    """The generator at --generator, trained there (train_gan with the preset's GAN section) if missing."""
    if s.generator.is_file():
        return s.generator
    import torch

    from latentds.encoding.gan import GENERATOR_FILE, train_gan

    cfg = encode_config(s, None)
    log(f"generator: {s.generator} not found; training {cfg.gan.arch} width {cfg.gan.width} for "
        f"{cfg.gan.iterations} iterations (estimated {fmt_s(estimate_generator(s))}; resumable in {s.work / 'gan'})")
    t0 = time.perf_counter()
    train_gan(data.train, cfg.gan, s.work / "gan", torch.device(resolve_device(s)), not s.quiet and sys.stderr.isatty(), log,
              compute=bench_compute(s))
    s.generator.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(s.generator, (s.work / "gan" / GENERATOR_FILE).read_bytes())
    log(f"generator: wrote {s.generator} ({fmt_s(time.perf_counter() - t0)})")
    return s.generator


def ensure_classifier(s: Settings, data: Data, log: Log) -> Path:
    """The preset's real-data ConvNet (inversion features + embedding pool), trained once, shared by all encodes."""
    from latentds.encoding.classifier import CLASSIFIER_FILE, train_classifier

    folder = s.work / "classifier"
    if not (folder / CLASSIFIER_FILE).exists():
        cfg = encode_config(s, None)
        log(f"classifier: training {cfg.classifier.arch} width {cfg.classifier.width}, {cfg.classifier.epochs} epochs "
            f"(estimated {fmt_s(estimate_classifier(s))})")
        train_classifier(data.train, cfg.classifier, folder, resolve_device(s), not s.quiet and sys.stderr.isatty(), log,
                         compute=bench_compute(s))
    return folder


def bench_compute(s: Settings):
    """The training stages' precision and memory format: the plan's for the encode config's precision."""
    import torch

    from latentds.encoding.pipeline import resolve_compute

    return resolve_compute(torch.device(resolve_device(s)), encode_config(s, None).precision)


def resolve_device(s: Settings) -> str:
    from latentds.encoding.pipeline import resolve_device as rd

    return str(rd(s.device))


def device_string(s: Settings) -> str:
    import torch

    dev = resolve_device(s)
    if dev.startswith("cuda"):
        return f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


# --- per-method artefacts --------------------------------------------------------------------------------
@dataclass
class Artifact:
    spec: str  # what training_set() reads
    ipc: int | None  # its ipc argument
    bytes: int  # the storage column
    encode_s: float  # compute time of the method-specific stages (shared generator training excluded)
    make: str | None  # command that makes the artefact (None: nothing to make)
    generator: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


def artifact_name(method: str, ipc: int | None) -> str:
    return f"{method}_ipc{fmt_ipc(ipc)}"


def lds_encode_seconds(path: Path) -> tuple[float, dict[str, float]]:
    """Classifier + inversion + condensation compute seconds recorded in a .lds's provenance."""
    from latentds.lds import open_lds

    with open_lds(path) as reader:
        losses = reader.manifest["provenance"].get("losses", {})
    parts = {
        "classifier_s": float((losses.get("classifier") or {}).get("train_seconds") or 0.0),
        "invert_s": float((losses.get("invert") or {}).get("seconds") or 0.0),
        "condense_s": float((losses.get("condense") or {}).get("seconds") or 0.0),
    }
    return sum(parts.values()), parts


def lds_pool(path: Path) -> dict[str, Any] | None:
    """The embedding pool an encode used (size, runs, filter, held-out accuracy range, mix), from its provenance."""
    from latentds.lds import open_lds

    with open_lds(path) as reader:
        cls = (reader.manifest["provenance"].get("losses") or {}).get("classifier") or {}
    pool = {k: v for k, v in (cls.get("pool") or {}).items() if k != "nets"}  # the per-net table stays in the .lds
    return {**pool, "pool_prob": cls.get("pool_prob")} if pool else None


def build_encode(s: Settings, method: str, ipc: int | None, data: Data, log: Log) -> Artifact:
    """itgan / inversion: ``latentds encode`` with the preset (inversion: condense.iterations=0)."""
    from latentds.encoding.pipeline import run as encode

    gen = ensure_generator(s, data, log)
    extra = ("condense.iterations=0",) if method == "inversion" else ()
    name = artifact_name(method, ipc)
    out = s.artifacts / f"{name}.lds"
    work_dir = s.work / "encode" / f"{name}.work"
    make = (f"latentds encode {shlex.quote(s.data)} {shlex.quote(str(out))} {encode_flags(s, extra)} "
            f"{'' if ipc is None else f'--ipc {ipc} '}--generator {shlex.quote(str(gen))} "
            f"--work-dir {shlex.quote(str(work_dir))}")
    if not out.exists():
        # The classifier and (for inversion) the inversion checkpoints are identical across these runs
        # (same config, data, generator and seeds): copy them instead of recomputing (the pipeline checks
        # their config and indices when it loads them).
        classifier = ensure_classifier(s, data, log)
        work_dir.mkdir(parents=True, exist_ok=True)
        if not (work_dir / "classifier").exists():
            shutil.copytree(classifier, work_dir / "classifier")
        donor = s.work / "encode" / f"{artifact_name('itgan', ipc)}.work" / "invert"
        if method == "inversion" and donor.is_dir():
            (work_dir / "invert").mkdir(exist_ok=True)
            for f in donor.glob("c*_b*.safetensors"):  # the inversion units
                if not (work_dir / "invert" / f.name).exists():
                    shutil.copy2(f, work_dir / "invert" / f.name)
        cfg = encode_config(s, ipc, extra)
        log(f"encode {name}: {make}")
        t0 = time.perf_counter()
        encode(s.data, out, cfg, work_dir=work_dir, generator_path=gen, progress=not s.quiet and sys.stderr.isatty(),
               quiet=s.quiet)
        log(f"encode {name}: wrote {out} ({mib(out.stat().st_size)}) in {fmt_s(time.perf_counter() - t0)} wall")
    else:
        check_existing_lds(out, encode_config(s, ipc, extra), gen)
        log(f"encode {name}: using the existing {out} (its encode config and generator match)")
    encode_s, parts = lds_encode_seconds(out)
    return Artifact(str(out), None, out.stat().st_size, encode_s, make, generator_info(gen),
                    {"encode_parts_s": parts, "embedding_pool": lds_pool(out)})


def check_existing_lds(path: Path, cfg, generator: Path) -> None:
    """Refuse an artefact found in --work that was made with another encode config or another generator."""
    from dataclasses import asdict as _asdict

    from safetensors.torch import load_file

    from latentds.encoding.pipeline import NON_RESULT_FIELDS
    from latentds.lds import open_lds

    def result_fields(config: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for section, value in config.items():
            if isinstance(value, dict):
                flat.update({f"{section}.{k}": v for k, v in value.items()})
            else:
                flat[section] = value
        return {k: v for k, v in flat.items() if k not in NON_RESULT_FIELDS}

    with open_lds(path) as reader:
        made = reader.manifest["provenance"].get("encode_config") or {}
        stored = {k: v.float() if v.is_floating_point() else v for k, v in reader.generator_state().items()}
    want, have = result_fields(json.loads(json.dumps(_asdict(cfg)))), result_fields(made)
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        shown = "; ".join(f"{k}: {have.get(k, '<missing>')!r} (benchmark wants {want.get(k, '<missing>')!r})" for k in diff[:6])
        raise SystemExit(f"{path} was made with another encode config ({shown}); move it away to have it rebuilt")
    ref = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(generator)).items()}
    if set(ref) != set(stored) or any(not torch_equal(ref[k], stored[k]) for k in ref):
        raise SystemExit(f"{path} holds another generator than {generator}; move it away to have it rebuilt")


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def build_dm(s: Settings, ipc: int | None, data: Data, log: Log, method: str = "dm") -> Artifact:
    """DM: ``latentds encode`` with ``condense.parametrization=pixel``: itgan's selection, loss, schedule, nets,
    augmentation and seeds, on pixels (SGD, momentum 0.5, lr_pixel 1.0: the library's pixel-mode defaults).
    ``dm_random``: the same with a fresh random ConvNet every step, as DM was published."""
    from latentds.encoding.pipeline import run as encode
    from latentds.encoding.state import load_state

    name = artifact_name(method, ipc)
    out = s.artifacts / f"{name}.npz"
    sidecar = s.artifacts / f"{name}.json"
    work_dir = s.work / "encode" / f"{name}.work"
    extra = DM_OVERRIDES + (("condense.pool_prob=0",) if method == "dm_random" else ())
    make = (f"latentds encode {shlex.quote(s.data)} {shlex.quote(str(out))} {encode_flags(s, extra)} "
            f"{'' if ipc is None else f'--ipc {ipc} '}--work-dir {shlex.quote(str(work_dir))}")
    cfg = encode_config(s, ipc, extra)
    if not (out.exists() and sidecar.exists()):
        work_dir.mkdir(parents=True, exist_ok=True)
        classifier = None
        if cfg.condense.pool_prob > 0:
            classifier = ensure_classifier(s, data, log)  # the same embedding pool as itgan: copied, not retrained
            if not (work_dir / "classifier").exists():
                shutil.copytree(classifier, work_dir / "classifier")
        log(f"dm {name}: {make}")
        encode(s.data, out, cfg, work_dir=work_dir, progress=not s.quiet and sys.stderr.isatty(), quiet=s.quiet)
        seconds = sum(float(load_state(f)[1]["stats"]["seconds"]) for f in sorted((work_dir / "units").glob("*.safetensors")))
        cls_s = classifier_seconds(classifier) if classifier is not None else 0.0
        write_atomic(sidecar, json.dumps({"dm_s": seconds, "classifier_s": cls_s,
                                          "condense": asdict(cfg.condense)}, indent=2).encode())
        log(f"dm {name}: wrote {out} ({fmt_s(seconds)} of condensation)")
    info = json.loads(sidecar.read_text(encoding="utf-8"))
    n = _npz_count(out)
    return Artifact(str(out), None, n * math.prod(data.train.image_shape), info["dm_s"] + info["classifier_s"], make,
                    None, {"encode_parts_s": {"classifier_s": info["classifier_s"], "condense_s": info["dm_s"]},
                           "file_bytes": out.stat().st_size, "condense_config": info["condense"]})


def classifier_seconds(folder: Path) -> float:
    """Training seconds (all sessions) of the shared classifier, from its file's metadata."""
    from latentds.checkpoint import read_model_metadata
    from latentds.encoding.classifier import CLASSIFIER_FILE, META_STATS

    stats = json.loads(read_model_metadata(folder / CLASSIFIER_FILE).get(META_STATS, "{}"))
    return float(stats.get("train_seconds") or 0.0)


def _npz_count(path: Path) -> int:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return int(z["labels"].shape[0])


def build_artifact(s: Settings, method: str, ipc: int | None, data: Data, log: Log) -> Artifact:
    if method in ("itgan", "inversion"):
        return build_encode(s, method, ipc, data, log)
    if method in ("dm", "dm_random"):
        return build_dm(s, ipc, data, log, method)
    if method == "gan":
        gen = ensure_generator(s, data, log)
        info = generator_info(gen)
        latent_dim = int(info["args"].get("latent_dim", 128))
        k = data.train.num_classes
        n = ipc if ipc is not None else len(data.train) // k  # "all": as many samples as real images
        # generator file + one fp16 latent per image (labels are implicit: samples come grouped by class)
        return Artifact(f"gan:{gen}", n, gen.stat().st_size + k * n * latent_dim * 2, 0.0, None, info)
    k = data.train.num_classes
    c, h, w = data.train.image_shape
    if method == "random":
        return Artifact(s.data, ipc, k * ipc * c * h * w, 0.0, None, None)
    if method == "real":
        return Artifact(s.data, None, len(data.train) * c * h * w, 0.0, None, None,
                        {"source_file_bytes": data.train.source_bytes})
    raise SystemExit(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


# --- one cell --------------------------------------------------------------------------------------------
def run_cell(s: Settings, cell: Cell, art: Artifact, data: Data, log: Log) -> dict[str, Any]:
    from latentds.evaluation import EvalConfig, train_and_test, training_set

    cfg = EvalConfig(arch=cell.arch, epochs=cell.epochs, seeds=cell.seeds, seed=0, device=s.device,
                     precision=s.precision)
    train = training_set(art.spec, ipc=art.ipc, seed=0, device=resolve_device(s), progress=False)
    label = f"{cell.method} ipc {fmt_ipc(cell.ipc)} {cell.arch}"
    result = train_and_test(train, data.test, cfg, progress=not s.quiet and sys.stderr.isatty(),
                      log=lambda line: log(f"  {label}: {line}"))
    ipc_flag = f" --ipc {art.ipc}" if art.ipc is not None else ""
    device_flag = ("" if s.device == "auto" else f" --device {s.device}") + (
        "" if s.precision == "auto" else f" --precision {s.precision}")
    eval_cmd = (f"latentds eval {shlex.quote(art.spec)}{ipc_flag} --test {shlex.quote(s.data)} --arch {cell.arch} "
                f"--epochs {cell.epochs} --seeds {cell.seeds}{device_flag}")
    return {
        "method": cell.method,
        "ipc": cell.ipc,
        "arch": cell.arch,
        "seeds": cell.seeds,
        "acc_mean": result.acc_mean,
        "acc_std": result.acc_std,
        "accs": result.accs,
        "bytes": art.bytes,
        "generator": art.generator,
        "encode_s": art.encode_s,
        "eval_s": result.eval_s,
        "epochs": cell.epochs,
        "command": f"{art.make} && {eval_cmd}" if art.make else eval_cmd,
        "device": device_string(s),
        # context
        "num_images": len(train),
        "raw_bytes": {"uint8_pixels": len(data.train) * int(math.prod(data.train.image_shape)),
                      "cifar10_uint8_pixels": CIFAR10_RAW_PIXEL_BYTES, "cifar10_official_archive": CIFAR10_ARCHIVE_BYTES},
        "seed_values": result.seeds,
        "seed_s": result.seed_s,
        "acc_std_ddof": 0,
        "eval_config": result.config,
        "train_set": result.train,
        "encode_preset": s.preset if cell.method in ENCODE_METHODS else None,
        "encode_overrides": list(s.overrides) if cell.method in ENCODE_METHODS else None,
        "artifact": {"spec": art.spec, **art.extra},
        "final_train_loss": [c["loss"][-1] for c in result.curves],
        "final_train_acc": [c["train_acc"][-1] for c in result.curves],
        "init": EVAL_INIT,
        "tiny": s.tiny,
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": _torch_version(),
        "harness": " ".join(shlex.quote(a) for a in s.argv),
    }


def _torch_version() -> str:
    import torch

    return torch.__version__


# --- outputs ---------------------------------------------------------------------------------------------
def latest(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The last record of each (method, ipc, arch)."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in records:
        out[(r["method"], r["ipc"], r["arch"])] = r
    return out


def _order(method: str, ipc: int | None) -> tuple:
    return (ipc is None, ipc or 0, RUN_ORDER.index(method) if method in RUN_ORDER else 99)


def write_markdown(s: Settings, records: list[dict[str, Any]], planned: list[Cell], path: Path) -> None:
    last = latest(records)
    rows = sorted({(c.method, c.ipc) for c in planned} | {(m, i) for (m, i, _a) in last}, key=lambda r: _order(*r))
    archs = [a for a in ("convnet3", "resnet18_cifar") if a in s.archs or any(k[2] == a for k in last)]
    archs += sorted({k[2] for k in last} - set(archs))
    raw = next((r["raw_bytes"]["uint8_pixels"] for r in records if r.get("raw_bytes")), CIFAR10_RAW_PIXEL_BYTES)
    planned_keys = {(c.method, c.ipc, c.arch) for c in planned}
    head = ["method", "images/class"] + [f"{ARCH_LABELS.get(a, a)} acc (%)" for a in archs] + [
        "storage", "encode time", "eval time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, ipc in rows:
        cells_md, evals = [], []
        any_rec = None
        for a in archs:
            r = last.get((method, ipc, a))
            if r is None:
                cells_md.append("pending" if (method, ipc, a) in planned_keys else "")
                continue
            any_rec = any_rec or r
            train = r.get("final_train_acc")
            train_txt = f", train {sum(train) / len(train):.0f} %" if train else ""
            stale = "†" if _init_tag(a, r.get("init")) not in (None, EVAL_INIT) else ""
            cells_md.append(f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}{stale} ({r['epochs']} ep{train_txt})")
            evals.append(f"{ARCH_LABELS.get(a, a).split('-')[0]} {fmt_s(r['eval_s'])}")
        if any_rec is not None:
            storage = f"{mib(any_rec['bytes'])} ({pct(any_rec['bytes'], raw)} of raw)"
            enc = fmt_s(any_rec["encode_s"]) if any_rec["encode_s"] else "-"
        else:
            storage = enc = ""
        lines.append("| " + " | ".join([METHOD_LABELS.get(method, method), "all" if ipc is None else str(ipc),
                                         *cells_md, storage, enc, ", ".join(evals)]) + " |")

    lines += storage_matched_lines(records, archs)
    gen = next((r["generator"] for r in records if r.get("generator")), None)
    sched = sorted({(r["arch"], r["ipc"], r["epochs"]) for r in records} | {(c.arch, c.ipc, c.epochs) for c in planned},
                   key=lambda t: (t[0], t[1] is None, t[1] or 0))
    sched_txt = "; ".join(f"{ARCH_LABELS.get(a, a)} {e} epochs " + ("on the whole set" if i is None else f"at {i}/class")
                          for a, i, e in sched)
    devices = sorted({r["device"] for r in records}) or [device_string(s)]
    notes = [
        "",
        f"Evaluation (every cell, `latentds.evaluate`): {sched_txt}. SGD lr 0.01, momentum 0.9, weight decay 5e-4, "
        f"batch 256, lr x0.1 at half the epochs, DSA on every batch, accuracy after the final epoch on the "
        f"{'real test split' if not s.tiny else 'synthetic test split'}; mean ± std (ddof 0) over {s.seeds} seeds. "
        + ("The paper's schedule (`--schedule paper`)." if all(e == PAPER_EPOCHS.get((a, i)) for a, i, e in sched) else
         "Shortened from the paper's 300 (ConvNet) / 200 (ResNet-18) epochs to fit a CPU (`--schedule cpu`).")
        + " `train` is the final epoch's training accuracy (augmented batches), mean over the seeds: far below "
        "100 % means the schedule is too short for that cell.",
        f"Encode: preset `{s.preset}`" + (f" with {', '.join(f'`{o}`' for o in s.overrides)}" if s.overrides else "")
        + "; inversion = the same with `condense.iterations=0`; DM = the same condensation on pixels (SGD, momentum "
        "0.5, lr 1.0 as in DM; initialized from the same real images, same augmentation), stored as uint8, with "
        "IT-GAN's embedding pool (DM, pool) or a fresh random ConvNet every step as published (DM, random nets).",
        "Storage: the .lds file (generator included) for inversion and IT-GAN; generator file + fp16 latents for GAN; "
        f"uint8 pixels (N x 3072 B) for random, DM and the real set. Raw CIFAR-10: {mib(CIFAR10_RAW_PIXEL_BYTES)} of "
        f"uint8 pixels, {mib(CIFAR10_ARCHIVE_BYTES)} for the official archive.",
        "Encode time: compute time of the method's own stages (real-data classifier + inversion + condensation), "
        "from the artefact's provenance; the shared generator's training is listed below, not in the rows.",
    ]
    if gen:
        cfgg = gen.get("gan_config") or {}
        notes.append(f"Generator: `{gen['arch']}` {json.dumps(gen['args'], sort_keys=True)}, {mib(gen['bytes'])}, "
                     f"sha256 {gen['sha256'][:12]}; trained {cfgg.get('iterations', '?')} iterations "
                     f"(batch {cfgg.get('batch_size', '?')}, {cfgg.get('d_steps', '?')} D steps, EMA "
                     f"{cfgg.get('ema_decay', '?')}) in {fmt_s(gen.get('train_s'))} on {gen.get('train_device') or '?'}.")
    if any(_init_tag(r["arch"], r.get("init")) not in (None, EVAL_INIT) for r in last.values()):
        notes.append("† measured with torchvision's kaiming-normal ResNet init, before the evaluation nets took "
                     "PyTorch's default init (the reference's); rerunning the harness remeasures these cells.")
    notes.append(f"Machine: {'; '.join(devices)}. Figures are whatever was measured (no tuning for an ordering).")
    notes.append(f"Reproduce: `python bench/run_cifar10.py{' --tiny' if s.tiny else ''}`; each record's `command` in "
                 f"`{s.stem}.json` reruns one cell.")
    kind = "GPU" if resolve_device(s).startswith("cuda") else "CPU"
    title = "# Benchmark harness check (tiny synthetic problem)\n\n" if s.tiny else f"# CIFAR-10 benchmark ({kind})\n\n"
    write_atomic(path, portable(title + "\n".join(lines + notes) + "\n").encode("utf-8"))


def storage_matched_lines(records: list[dict[str, Any]], archs: list[str]) -> list[str]:
    """IT-GAN against the pixel methods at equal bytes: for each IT-GAN cell, each pixel method's measured cell
    with the most images that still fit in the .lds's bytes (the paper's own framing: same storage)."""
    last = latest(records)
    pixel_methods = [m for m in ("random", "dm", "dm_random") if any(k[0] == m for k in last)]
    rows = []
    for a in archs:
        for (method, ipc, arch), r in sorted(last.items(), key=lambda kv: _order(kv[0][0], kv[0][1])):
            if method != "itgan" or arch != a or ipc is None:
                continue
            budget = r["bytes"]
            per_image = next((q["bytes"] / q["num_images"] for q in last.values() if q["method"] == "random"), 3072)
            classes = max(1, r["num_images"] // ipc)
            fits = int(budget // (per_image * classes))  # images per class that fit in the .lds's bytes
            cols = []
            for m in pixel_methods:
                cands = [q for (mm, qi, qa), q in last.items() if mm == m and qa == a and qi is not None and q["bytes"] <= budget]
                best = max(cands, key=lambda q: q["bytes"], default=None)
                cols.append("-" if best is None else f"{best['acc_mean']:.2f} ± {best['acc_std']:.2f} ({best['ipc']}/class, "
                            f"{mib(best['bytes'])})" + ("" if best["ipc"] == fits else f"; {fits}/class fit: pending"))
            rows.append(f"| {ARCH_LABELS.get(a, a)} | IT-GAN {ipc}/class: {r['acc_mean']:.2f} ± {r['acc_std']:.2f} "
                        f"({mib(budget)}) | " + " | ".join(cols) + " |")
    if not rows:
        return []
    head = ["net", "IT-GAN (.lds bytes)"] + [f"{METHOD_LABELS[m]}, at most the same bytes" for m in pixel_methods]
    return ["", "At equal storage (uint8 pixels against the whole .lds, generator included; "
            "`--ipc N --only random dm dm_random` measures the N/class that fit):", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows]


def write_plot(s: Settings, records: list[dict[str, Any]], path: Path, log: Log) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot: matplotlib is not installed; skipping the PNG (pip install matplotlib)")
        return
    last = [r for r in latest(records).values() if r["arch"] == "convnet3"]
    if not last:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ipcs = sorted({r["ipc"] for r in last if r["ipc"] is not None})
    methods = [m for m in RUN_ORDER if m != "real"]
    for k, method in enumerate(methods):
        pts = sorted((r for r in last if r["method"] == method and r["ipc"] is not None), key=lambda r: r["ipc"])
        if pts:
            dodge = 1 + 0.025 * (k - (len(methods) - 1) / 2)  # side by side, so error bars do not overlap
            ax.errorbar([r["ipc"] * dodge for r in pts], [r["acc_mean"] for r in pts], yerr=[r["acc_std"] for r in pts],
                        marker="o", capsize=3, label=METHOD_LABELS[method])
    real = [r for r in last if r["method"] == "real"]
    if real:
        r = real[0]
        ax.axhline(r["acc_mean"], color="gray", linestyle="--", label=f"whole real set ({r['epochs']} ep)")
        ax.axhspan(r["acc_mean"] - r["acc_std"], r["acc_mean"] + r["acc_std"], color="gray", alpha=0.15)
    if ipcs:
        ax.set_xscale("log")
        ax.set_xticks(ipcs)
        ax.set_xticklabels([str(i) for i in ipcs])
        ax.minorticks_off()
    ax.set_xlabel("images (latents) per class")
    ax.set_ylabel("test accuracy (%), ConvNet-3")
    epochs = ", ".join(f"{r['epochs']} ep at {fmt_ipc(r['ipc'])}" for r in sorted(
        {(r["ipc"], r["epochs"]): r for r in last if r["ipc"] is not None}.values(), key=lambda r: r["ipc"]))
    ax.set_title(f"{'tiny synthetic check' if s.tiny else 'CIFAR-10'}: ConvNet-3, {epochs}, mean ± std", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(s: Settings, records: list[dict[str, Any]], planned: list[Cell], log: Log) -> None:
    write_markdown(s, records, planned, s.out / f"{s.stem}.md")
    write_plot(s, records, s.out / f"{s.stem}.png", log)


# --- plan ------------------------------------------------------------------------------------------------
def plan(s: Settings, planned: list[Cell], done: dict[tuple, dict[str, Any]], gen_sha: str | None) -> float:
    """Print every step and cell with its estimate (or its measured time when done); return pending seconds."""
    from latentds.encoding.classifier import CLASSIFIER_FILE

    rows: list[tuple[str, str, float | None]] = []
    by_group: dict[str, float] = {}  # pending seconds per ipc ("shared": generator and classifier)

    def add(what: str, status: str, secs: float | None, group: str | None = None) -> None:
        rows.append((what, status, secs))
        if group is not None and secs:
            by_group[group] = by_group.get(group, 0.0) + secs

    pending = [c for c in planned if cell_key(s, c, gen_sha) not in done]
    gen_s = 0.0
    if any(c.method in GAN_METHODS for c in pending) and not s.generator.is_file():
        gen_s = estimate_generator(s)
        add("generator (train-gan, the preset's GAN section)", "pending", gen_s, "generator")
    else:
        add(f"generator {s.generator}", "present" if s.generator.is_file() else "not needed", None)
    if any(c.method in ENCODE_METHODS for c in pending) and not (s.work / "classifier" / CLASSIFIER_FILE).exists():
        add("classifier (shared by inversion, IT-GAN, DM)", "pending", estimate_classifier(s), "shared")
    built = set()
    for c in planned:
        name = artifact_name(c.method, c.ipc)
        if c not in pending or name in built or c.method in ("gan", "random", "real"):
            continue
        built.add(name)
        exists = (s.artifacts / f"{name}.lds").exists() or (s.artifacts / f"{name}.npz").exists()
        reuse = any(x.method == "itgan" and x.ipc == c.ipc for x in planned) or (
            s.work / "encode" / f"{artifact_name('itgan', c.ipc)}.work" / "invert").is_dir()
        add(f"encode {name}", "present" if exists else "pending",
            0.0 if exists else estimate_artifact(s, c.method, c.ipc, reuse), f"ipc {fmt_ipc(c.ipc)}")
    done_s = 0.0
    for c in planned:
        rec = done.get(cell_key(s, c, gen_sha))
        what = f"eval {c.method:9s} ipc {fmt_ipc(c.ipc):>3s} {c.arch:14s} {c.epochs:4d} ep x {c.seeds} seeds"
        if rec is not None:
            add(what, f"done {rec['acc_mean']:.2f} ± {rec['acc_std']:.2f} %", rec["eval_s"])
            done_s += rec["eval_s"]
        else:
            add(what, "pending", estimate_cell(s, c), f"ipc {fmt_ipc(c.ipc)}")
    width = max(len(r[0]) for r in rows)
    print(f"plan ({'tiny' if s.tiny else 'CIFAR-10'}; estimates for the 2-core CPU at 2 threads; measured eval times "
          "for done cells):")
    if s.device not in ("auto", "cpu"):
        print(f"  note: the cost model is the 2-core CPU's; on {s.device} everything runs much faster")
    for what, status, secs in rows:
        print(f"  {what:<{width}}  {status:<22s} {fmt_s(secs) if secs is not None else ''}")
    total = sum(by_group.values())
    parts = ", ".join(f"{g} {fmt_s(v)}" for g, v in by_group.items())
    print(f"total: {fmt_s(total)} pending ({total / 3600:.2f} h; {parts}); without generator training "
          f"{(total - gen_s) / 3600:.2f} h; {len(pending)} of {len(planned)} cells pending, "
          f"{fmt_s(done_s)} of evaluation done")
    return total


# --- main ------------------------------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    s = settings_from_args(args, argv)
    if s.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    planned = cells(s)
    results_json = s.out / f"{s.stem}.json"
    records = load_records(results_json)
    gen_sha = file_sha256(s.generator) if s.generator.is_file() else None
    done = {record_key(r): r for r in records}
    if args.plan:
        plan(s, planned, done, gen_sha)
        return 0

    import torch

    torch.set_num_threads(s.threads)
    log = Log(s.work / "bench.log")
    if s.tiny:
        make_tiny_data(Path(s.data))
    pending = [c for c in planned if cell_key(s, c, gen_sha) not in done]
    log(f"bench: {len(planned)} cells, {len(pending)} pending; results {results_json}; work {s.work}; "
        f"{torch.get_num_threads()} threads")
    if not pending:
        write_outputs(s, records, planned, log)
        log("bench: nothing to do (every cell is finished); tables rewritten")
        return 0
    data = Data(s.data, log)
    t_run = time.perf_counter()
    artifacts: dict[str, Artifact] = {}
    for cell in planned:
        if cell_key(s, cell, gen_sha) in done:
            continue
        name = artifact_name(cell.method, cell.ipc)
        if name not in artifacts:
            artifacts[name] = build_artifact(s, cell.method, cell.ipc, data, log)
            gen_sha = file_sha256(s.generator) if s.generator.is_file() else None
        if args.artifacts_only:
            continue
        est = estimate_cell(s, cell)
        log(f"cell start: {cell.method} ipc {fmt_ipc(cell.ipc)} {cell.arch}, {cell.epochs} epochs x {cell.seeds} seeds "
            f"(estimated {fmt_s(est)})")
        t0 = time.perf_counter()
        rec = run_cell(s, cell, artifacts[name], data, log)
        records = load_records(results_json) + [rec]  # reread: another process may have appended meanwhile
        write_atomic(results_json, (portable(json.dumps(records, indent=1)) + "\n").encode("utf-8"))
        done[record_key(rec)] = rec
        write_outputs(s, records, planned, log)
        log(f"cell done:  {cell.method} ipc {fmt_ipc(cell.ipc)} {cell.arch}: {rec['acc_mean']:.2f} ± {rec['acc_std']:.2f} % "
            f"({fmt_s(time.perf_counter() - t0)}; run so far {fmt_s(time.perf_counter() - t_run)})")
    if args.artifacts_only:
        log(f"bench: artefacts built in {fmt_s(time.perf_counter() - t_run)}; {s.artifacts}")
        return 0
    write_outputs(s, records, planned, log)
    log(f"bench: finished in {fmt_s(time.perf_counter() - t_run)}; {results_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
