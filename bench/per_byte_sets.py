"""What each cell of the per-byte benchmark (bench/per_byte.py) trains on: its byte budget, and the set itself
(real images filled into the budget, DM-condensed pixels, or a latentds encode), with what it cost."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from byte_budget import class_balanced_order, encode_jpeg, encode_png, fill_files, fill_mosaic

REPO = Path(__file__).resolve().parent.parent
DATA_DEFAULT = "../shared/datasets/cifar10-jpeg"
FILE_QUALITIES = (20, 75)  # per-file JPEG: 75 is what the shipped folder uses; below 20 the header dominates
MOSAIC_QUALITIES = (5, 20, 50)  # mosaics: 37, 111 and 224 bytes per image on CIFAR-10
# Budgets where the receiver already has the generator (one generator shared by many files, or shipped once):
# only latents and header are counted. latentds runs no cells there: its rows are its files at the budget named
# (the same bytes less the generator's), and the real-image methods fill what is left.
SHARED_BUDGETS = {"100-shared": "100"}
BUDGETS = {"100": 100, "500": 500, "all": None}  # latents per class (None: the whole training set)
BUDGETS.update({key: BUDGETS[source] for key, source in SHARED_BUDGETS.items()})  # the latents of the one named
ARTIFACTS = REPO / "bench/artifacts"
GENERATOR_PREFIX = "cifar10-biggan32-"  # bench/artifacts/<prefix><name>.safetensors: the generators cells can name
BENCHMARK_GENERATOR = "w16-2000it"  # the committed benchmark generator: its size sets the budgets
GENERATOR = ARTIFACTS / f"{GENERATOR_PREFIX}{BENCHMARK_GENERATOR}.safetensors"
LATENT_DIM = 128
HEADER_ALLOWANCE = 16_384  # the .lds manifest and safetensors header: too little (27,202 B at 100/class), so a
# latentds file overshoots its budget by ~11 KB (1.2 % at 100/class, in its favour); kept so budgets stay comparable
SHARED_HEADER_ALLOWANCE = 32_768  # at a shared budget: the measured header (27-29 KB) with room, in JPEG's favour
TRAIN_IMAGES = 50_000
PRECISION = "fp32"  # every cell on every CPU kind: one numerics, so cells measured on different machines compare
KEPT = "per-byte-sets"  # under --out: the latentds files the records trained on, committed (encodes take hours)
# The cells pin their condensation passes: the 5 the fast preset ran for lds_int8/fp16/fp32 when they were measured
# (it now gives each class 25,000 latent-passes, which is 5 only at the whole set), and a long condensation for
# lds_long/lds_prior: 200 passes at the preset's lr (31 min at 100/class on one thread, measured; the 10 and 50 per
# class benchmark ran 500 at lr 0.005).
FIXED = "condense.pass_budget=null"
PRESET_CONDENSE = ("condense.iterations=5", FIXED)
LONG_CONDENSE = ("condense.iterations=200", "condense.lr=0.01", FIXED)
FROM_PRIOR = ("amortized.steps=0", "invert.iterations=0")  # no encoder, no inversion: condense z ~ N(0, I)
# The accuracy-vs-passes curve: lds_prior stopped after fewer passes (the lr is constant, so each is the 200-pass
# run's trajectory cut short; tests/test_condense.py). 0 passes are the gan cell, 200 the lds_prior cell. 50 is also
# what the fast preset's pass budget gives 500 per class.
CURVE_PASSES = (25, 50, 100)
# Each latentds method's encode: its work dir's kind and its overrides of the fast preset (ipc and dtypes aside).
ENCODES = {
    "lds_int8": ("itgan", PRESET_CONDENSE), "lds_fp16": ("itgan", PRESET_CONDENSE), "lds_fp32": ("itgan", PRESET_CONDENSE),
    "inversion": ("inversion", ("condense.iterations=0",)),
    "lds_long": ("long", LONG_CONDENSE),  # IT-GAN as the fast preset inverts, condensed 40x longer
    "lds_prior": ("prior", FROM_PRIOR + LONG_CONDENSE),  # condensed from z ~ N(0, I)
    **{f"lds_prior_p{p}": (f"prior_p{p}", FROM_PRIOR + (f"condense.iterations={p}", "condense.lr=0.01", FIXED))
       for p in CURVE_PASSES},
}
LONG_METHODS = tuple(m for m, (_, extra) in ENCODES.items() if set(LONG_CONDENSE) <= set(extra))
CURVE_METHODS = tuple(f"lds_prior_p{p}" for p in CURVE_PASSES)
LDS_METHODS = ("lds_int8", "lds_fp16", "lds_fp32", "inversion", "gan", *LONG_METHODS, *CURVE_METHODS)
DM_OVERRIDES = ("condense.parametrization=pixel", "condense.pixel_init=real")  # DM: the fast preset on pixels
LONG_BUDGETS = ("100", "500")  # where long condensation and its curve fit (the whole set's would take days)


def generator_path(name: str) -> Path:
    return ARTIFACTS / f"{GENERATOR_PREFIX}{name}.safetensors"


def generator_fp16_bytes(path: Path = GENERATOR) -> int:
    """A generator's tensors stored as fp16 (every tensor of the file, buffers included)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return 2 * sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def lds_bytes(per_class: int | None, classes: int = 10, generator: bool = True) -> int:
    """The size of a latentds file with int8 latents (their scales in the manifest), uint8 labels and the benchmark
    generator in fp16: the budget every other method gets at that latent count. Without the generator (the
    receiver has it), latents and a header allowance that covers the measured one."""
    n = TRAIN_IMAGES if per_class is None else per_class * classes
    if not generator:
        return n * (LATENT_DIM + 1) + SHARED_HEADER_ALLOWANCE
    return generator_fp16_bytes() + n * (LATENT_DIM + 1) + HEADER_ALLOWANCE


def budget_bytes(budget: str) -> int:
    """A budget's bytes by its key (``100``, ``all``, ``100-shared``)."""
    return lds_bytes(BUDGETS[budget], generator=budget not in SHARED_BUDGETS)


def check_generator(name: str) -> Path:
    """The named generator's file, refused (one line) where it is missing or another size than the benchmark
    generator: budgets are that generator's bytes, so a generator of the same size keeps every other cell valid."""
    path = generator_path(name)
    if not path.is_file():
        raise SystemExit(f"per_byte: no generator {path.name} in bench/artifacts (--generator NAME names "
                         f"{GENERATOR_PREFIX}NAME.safetensors there)")
    if generator_fp16_bytes(path) != generator_fp16_bytes():
        raise SystemExit(f"per_byte: {path.name} is {generator_fp16_bytes(path):,} B in fp16, the benchmark generator "
                         f"{generator_fp16_bytes():,} B: the budgets are the benchmark generator's, so a generator "
                         "of another size would need budgets (and every other cell) of its own")
    return path


@dataclass(frozen=True)
class Cell:
    budget: str  # key of BUDGETS, or "ceiling"
    method: str  # png | jpeg_file_q75 | jpeg_mosaic_q20 | real_all | lds_int8 | lds_int8+w16-10000it (another generator)

    @property
    def name(self) -> str:
        return f"{self.method}@{self.budget}"

    @property
    def base(self) -> str:
        """The method without its generator: ``lds_int8+w16-10000it`` -> ``lds_int8``."""
        return self.method.split("+", 1)[0]

    @property
    def generator(self) -> str:
        """The name of the generator a latentds cell uses (the benchmark's unless the method names another)."""
        return self.method.split("+", 1)[1] if "+" in self.method else BENCHMARK_GENERATOR


def build_set(cell: Cell, args: argparse.Namespace) -> tuple[Path | str, dict]:
    """The cell's training set as an .npz of what a user would decode (cached), and what it cost in bytes."""
    from latentds.sources import load_source

    path = args.work / "sets" / f"{cell.name}.npz"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    if cell.base in LDS_METHODS:
        return build_lds(cell, args)
    if cell.method == "real_all":
        files = list((Path(args.data) / "train").rglob("*.jpg"))
        meta = {"images": len(files), "bytes": sum(f.stat().st_size for f in files),
                "what": "the whole training set as shipped: one JPEG file each"}
        return Path(args.data), meta
    data = load_source(args.data, split="train", progress=False)
    images = data.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) uint8
    labels = data.labels.numpy()
    budget = budget_bytes(cell.budget)
    order = class_balanced_order(labels, seed=0)
    if cell.method == "png":
        kept, decoded, total = fill_files(images, order, budget, encode_png)
    elif cell.method.startswith("jpeg_file_q"):
        q = int(cell.method.rsplit("q", 1)[1])
        kept, decoded, total = fill_files(images, order, budget, lambda im: encode_jpeg(im, q))
    elif cell.method.startswith("jpeg_mosaic_q"):
        kept, decoded, total = fill_mosaic(images, order, budget, int(cell.method.rsplit("q", 1)[1]))
    elif cell.method.startswith("dm_mosaic_q"):
        images, labels, encode = condense_pixels(cell, args, images, order, budget)
        kept, decoded, total = fill_mosaic(images, class_balanced_order(labels, seed=0), budget,
                                           int(cell.method.rsplit("q", 1)[1]))
    else:
        raise SystemExit(f"unknown method {cell.method}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=decoded, labels=labels[kept], classes=np.array(data.classes))
    meta = {"images": int(len(kept)), "bytes": int(total), "budget": budget,
            "per_class": np.bincount(labels[kept], minlength=len(data.classes)).tolist()}
    if cell.method.startswith("dm_mosaic_q"):
        meta["encode"] = encode
    meta_path.write_text(json.dumps(meta))
    return path, meta


def condense_pixels(cell: Cell, args: argparse.Namespace, images: np.ndarray, order: np.ndarray,
                    budget: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The DM baseline at the budget: as many images per class as real mosaics of the cell's quality fit,
    condensed as pixels by the fast preset (resumable work dir), returned as uint8 (n, 32, 32, 3) with labels."""
    import latentds

    quality = int(cell.method.rsplit("q", 1)[1])
    ipc = len(fill_mosaic(images, order, budget, quality)[0]) // 10
    if ipc == 0:
        return images[:0], np.zeros(0, np.int64), {}
    out = args.work / "sets" / f"{cell.name}.condensed.npz"
    overrides = [f"ipc={ipc}", *DM_OVERRIDES]
    if not out.exists():
        latentds.encode(args.data, out, "fast", overrides=overrides, work_dir=args.work / "encode" / f"dm@{cell.budget}.work",
                        progress=False, precision=PRECISION, device=args.device)
    with np.load(out) as f:
        return f["images"], f["labels"], {"preset": "fast", "overrides": overrides, "ipc": ipc}


def encode_dir(work: Path, kind: str, budget: str, generator: str) -> Path:
    """An encode's work dir: ``itgan`` or ``inversion`` at a budget, under a folder of its own for another generator."""
    base = work / "encode" if generator == BENCHMARK_GENERATOR else work / "encode" / generator
    return base / f"{kind}@{budget}.work"


INVERTING = ("itgan", "inversion", "long")  # the kinds whose encodes share the fast preset's encoder and inversion


def reuse_stages(work: Path, budget: str, target: Path, kind: str, generator: str) -> None:
    """Copy the stages that do not depend on what the target changes from another encode that has them finished:
    the classifier (it trains on the whole training set with the same config at every budget, for every kind and
    generator), the latent encoder (the same at every budget, but it learns one generator's inverse, so only from an
    encode with the same generator; ``prior`` kinds have none) and, for ``inversion`` and ``long``, the inverted latents
    (the same budget's, same generator): the result is the same, hours are not. Run cells that share a stage one
    after the other: a stage still being written is not told from a finished one."""
    same = [encode_dir(work, k, b, generator) for k in INVERTING for b in BUDGETS]
    everyone = same + sorted((work / "encode").glob("**/*@*.work"))
    parts = [("classifier", everyone), ("encoder", [] if kind.startswith("prior") else same)]
    if kind in ("inversion", "long"):
        parts.append(("invert", [encode_dir(work, k, budget, generator) for k in INVERTING]))
    for part, donors in parts:
        found = [d / part for d in donors if d != target and (d / part).is_dir()]
        if found and not (target / part).exists():
            shutil.copytree(found[0], target / part)


def build_lds(cell: Cell, args: argparse.Namespace) -> tuple[Path | str, dict]:
    """Encode (or reuse) the budget's latentds file; ``gan`` evaluates samples of the same generator instead."""
    import latentds

    ipc = BUDGETS[cell.budget]
    generator = check_generator(cell.generator)
    if cell.base == "gan":
        n = TRAIN_IMAGES // 10 if ipc is None else ipc
        return f"gan:{generator}", {
            "images": n * 10, "bytes": lds_bytes(ipc), "ipc": n,
            "what": "GAN samples, counted as an int8 .lds of the same latent count"}
    work = args.work
    kind, extra = ENCODES[cell.base]
    folder = encode_dir(work, kind, cell.budget, cell.generator)
    dtype = {"lds_fp16": "float16", "lds_fp32": "float32"}.get(cell.base, "int8")
    gen_dtype = "float32" if cell.base == "lds_fp32" else "float16"  # lds_fp32: the storage options' reference
    out = work / "sets" / f"{cell.name}.lds"
    overrides = [f"ipc={'null' if ipc is None else ipc}", f"latent_dtype={dtype}", f"generator_dtype={gen_dtype}",
                 *extra]
    reuse_stages(work, cell.budget, folder, kind, cell.generator)
    kept = args.out / KEPT / out.name
    if not out.exists() and kept.exists():  # a clean clone resumes after the encode
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, out)
    if not out.exists():
        t0 = time.perf_counter()
        latentds.encode(args.data, out, "fast", overrides=overrides, work_dir=folder, generator=generator,
                        progress=False, precision=PRECISION, device=args.device)
        (out.with_suffix(".json")).write_text(json.dumps({"encode_wall_s": time.perf_counter() - t0}))
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, kept)
    info = latentds.open_lds(out).manifest
    return out, {"images": int(info["num_samples"]), "bytes": out.stat().st_size, "budget": lds_bytes(ipc),
                 "encode": {"preset": "fast", "overrides": overrides, "generator": str(generator.relative_to(REPO)),
                            "timing_s": info["provenance"]["run"]["timing_s"], "compute": info["provenance"]["run"]["compute"]}}


def set_fingerprint(spec: Path | str) -> str:
    """The sha256 of a cell's training set file (a seed's result is reused only for the same bytes), or its name
    where it is not one file (the real folder, GAN samples of a committed generator)."""
    from latentds.format import file_sha256

    if isinstance(spec, Path) and spec.is_file():
        return file_sha256(spec)
    if str(spec).startswith("gan:"):  # samples of a generator: its bytes, wherever the file lies
        return f"gan:{file_sha256(Path(str(spec)[4:]))}"
    return str(spec)
