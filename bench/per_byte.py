"""Accuracy per byte on CIFAR-10: latentds against what a user would ship instead, at equal file sizes.

    python bench/per_byte.py --plan                 # the cells, their byte budgets and which are done
    python bench/per_byte.py                        # run every pending cell (resumable, seed by seed)
    python bench/per_byte.py --only jpeg_mosaic png --budgets 500
    python bench/per_byte.py --only lds_int8 --budgets all   # the whole-set cell: a ~2 h encode, then 3 seeds
    python bench/per_byte.py --only lds --budgets 100 --redo  # finished cells on their sets as built now: seeds
                                                    # that trained on other bytes run again, the others are kept
    python bench/per_byte.py --sizes                # bytes per image of every format (seconds)

Budgets are the sizes of latentds files at 100 and 500 latents per class and at the whole training set
(int8 latents, fp16 generator: ``lds_bytes``). At each budget, every method trains ConvNet-3 from scratch on
what fits in that many bytes and is tested on the real test split (3 seeds, the same schedule for all):

- ``png``: a class-balanced random subset of the real images, one PNG file each, as many as fit;
- ``jpeg_file_qQ``: the same as one JPEG file each at quality Q (PIL's encoder, Q in FILE_QUALITIES);
- ``jpeg_mosaic_qQ``: the images tiled into 1280x1280 JPEG mosaics (40 x 40 images; 32x32 tiles fall on 8x8
  DCT blocks, so no image bleeds into another) at quality Q: the headers are paid once per mosaic, not once
  per image, which is what a user who cares about bytes would do with JPEG;
- ``lds_int8`` / ``lds_fp16``: latentds itself, ``latentds encode --preset fast`` (amortized inversion, a few
  refinement and condensation passes) with the committed benchmark generator stored in fp16, at the budget's
  latent count, latents stored as int8 (the budget's own size) or fp16; ``lds_fp32``: the same encode (one work
  dir: storage dtypes do not change the result) written with fp32 latents and an fp32 generator, the reference
  that measures what each storage option costs in accuracy;
- ``inversion``: the same latents before condensation (``condense.iterations=0``), int8;
- ``gan``: plain GAN samples at the same latent count (z ~ N(0, I)), counted as the int8 file would be;
- ``dm_mosaic_qQ``: DM-condensed images (``condense.parametrization=pixel``: the fast preset's condensation on
  pixels, started from real images, no generator) shipped as quality-Q mosaics: as many per class as the real
  images' mosaics fit in the budget, condensed, then filled into the budget like any other mosaic.

The whole real training set as shipped (``real_all``: 50,000 JPEG files, quality ~75) is the ceiling.
Byte counts are what the files take: images plus one label byte per image (a class id fits in a uint8).
Schedule: ``--steps`` SGD steps of batch 256 for every cell (epochs = steps x 256 / images, at least 1, at
most 300), ConvNet-3, DSA, SGD lr 0.01 momentum 0.9, lr x0.1 at half: every cell sees the same number of
gradient steps, whatever its image count. Every encode and evaluation runs in fp32 (``PRECISION``), whatever the
CPU's rule, so that cells measured on different kinds of machine compare.

Every seed's result is saved in ``--work`` as it finishes and in the records (``--out``/per-byte-cpu.json, one per
cell with its command; ``"partial": true`` until its last seed), with the sha256 of the set it trained on; the
table goes to per-byte-cpu.md and the plot to per-byte-cpu.png. A cell stopped at any point resumes with the same
command, in a later session from a clean clone too: finished seeds are taken from the committed records when the
set's bytes are the same, and every latentds file (0.9-7.2 MB; the whole set's is a ~2-hour encode on 2 CPU
cores) is kept in bench/results/per-byte-sets/ once written, so only evaluation is left to redo, on the very
bytes the records name (``--redo`` reruns only the seeds whose set is other bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import per_byte_report as report  # noqa: E402
from byte_budget import (  # noqa: E402
    MOSAIC, bytes_per_image, class_balanced_order, encode_jpeg, encode_png, fill_files, fill_mosaic)

DATA_DEFAULT = "../shared/datasets/cifar10-jpeg"
FILE_QUALITIES = (20, 75)  # per-file JPEG: 75 is what the shipped folder uses; below 20 the header dominates
MOSAIC_QUALITIES = (5, 20, 50)  # mosaics: 37, 111 and 224 bytes per image on CIFAR-10
BUDGETS = {"100": 100, "500": 500, "all": None}  # latents per class (None: the whole training set)
GENERATOR = REPO / "bench/artifacts/cifar10-biggan32-w16-2000it.safetensors"  # the benchmark generator
LATENT_DIM = 128
HEADER_ALLOWANCE = 16_384  # the .lds manifest and safetensors header: too little (27,202 B at 100/class), so a
# latentds file overshoots its budget by ~11 KB (1.2 % at 100/class, in its favour); kept so budgets stay comparable
TRAIN_IMAGES = 50_000
PRECISION = "fp32"  # every cell on every CPU kind: one numerics, so cells measured on different machines compare
KEPT = "per-byte-sets"  # under --out: the latentds files the records trained on, committed (encodes take hours)
PAPER = {"100/class": (55.8, 57.3), "500/class": (69.7, 71.3), "whole set": (82.8, 82.8)}  # ConvNet-3, IT-GAN


def generator_fp16_bytes() -> int:
    """The benchmark generator's tensors stored as fp16 (every tensor of the file, buffers included)."""
    from safetensors import safe_open

    with safe_open(str(GENERATOR), "pt") as f:
        return 2 * sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def lds_bytes(per_class: int | None, classes: int = 10) -> int:
    """The size of a latentds file with int8 latents (their scales in the manifest), uint8 labels and an fp16
    generator: the budget every other method gets at that latent count."""
    n = TRAIN_IMAGES if per_class is None else per_class * classes
    return generator_fp16_bytes() + n * (LATENT_DIM + 1) + HEADER_ALLOWANCE


@dataclass(frozen=True)
class Cell:
    budget: str  # key of BUDGETS, or "ceiling"
    method: str  # png | jpeg_file_q75 | jpeg_mosaic_q20 | real_all

    @property
    def name(self) -> str:
        return f"{self.method}@{self.budget}"


LDS_METHODS = ("lds_int8", "lds_fp16", "lds_fp32", "inversion", "gan")


def cells(budgets: list[str], methods: list[str] | None) -> list[Cell]:
    """In run order: the ceiling, then method by method (the strongest baseline first), budgets largest first."""
    names = list(LDS_METHODS) + ([f"jpeg_mosaic_q{q}" for q in (20,)] + ["dm_mosaic_q20"] + [f"jpeg_file_q{q}" for q in (75,)]
             + [f"jpeg_mosaic_q{q}" for q in MOSAIC_QUALITIES if q != 20] + ["png"]
             + [f"jpeg_file_q{q}" for q in FILE_QUALITIES if q != 75])
    out = [Cell("ceiling", "real_all")] if not methods or "real_all" in methods else []
    order = [b for b in ("all", "500", "100") if b in budgets]
    out += [Cell(b, m) for m in names for b in order if not methods or any(m.startswith(x) for x in methods)]
    return out


def build_set(cell: Cell, args: argparse.Namespace) -> tuple[Path, dict]:
    """The cell's training set as an .npz of what a user would decode (cached), and what it cost in bytes."""
    from latentds.sources import load_source

    work = args.work
    path = work / "sets" / f"{cell.name}.npz"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    if cell.method in LDS_METHODS:
        return build_lds(cell, args)
    if cell.method == "real_all":
        files = list((Path(args.data) / "train").rglob("*.jpg"))
        meta = {"images": len(files), "bytes": sum(f.stat().st_size for f in files),
                "what": "the whole training set as shipped: one JPEG file each"}
        return Path(args.data), meta
    data = load_source(args.data, split="train", progress=False)
    images = data.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) uint8
    labels = data.labels.numpy()
    budget = lds_bytes(BUDGETS[cell.budget])
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
    overrides = [f"ipc={ipc}", "condense.parametrization=pixel", "condense.pixel_init=real"]
    if not out.exists():
        latentds.encode(args.data, out, "fast", overrides=overrides, work_dir=args.work / "encode" / f"dm@{cell.budget}.work",
                        progress=False, precision=PRECISION, device=args.device)
    with np.load(out) as f:
        return f["images"], f["labels"], {"preset": "fast", "overrides": overrides, "ipc": ipc}


def reuse_stages(work: Path, budget: str, encode_dir: Path, with_inversion: bool) -> None:
    """Copy the stages that do not depend on the latent count from another budget's encode (the classifier and
    the latent encoder train on the whole training set with the same config at every budget), and, for
    ``inversion``, the inverted latents of the same budget's IT-GAN run: the result is the same, hours are not."""
    donors = [work / "encode" / f"itgan@{b}.work" for b in BUDGETS]
    for part in ("classifier", "encoder"):
        found = [d / part for d in donors if (d / part).is_dir()]
        if found and not (encode_dir / part).exists():
            shutil.copytree(found[0], encode_dir / part)
    donor = work / "encode" / f"itgan@{budget}.work" / "invert"
    if with_inversion and donor.is_dir() and not (encode_dir / "invert").exists():
        shutil.copytree(donor, encode_dir / "invert")


def build_lds(cell: Cell, args: argparse.Namespace) -> tuple[Path | str, dict]:
    """Encode (or reuse) the budget's latentds file; ``gan`` evaluates samples of the same generator instead."""
    import latentds

    ipc = BUDGETS[cell.budget]
    if cell.method == "gan":
        n = TRAIN_IMAGES // 10 if ipc is None else ipc
        return f"gan:{GENERATOR}", {"images": n * 10, "bytes": lds_bytes(ipc), "ipc": n,
                                    "what": "GAN samples, counted as an int8 .lds of the same latent count"}
    work = args.work
    encode_dir = work / "encode" / f"{'inversion' if cell.method == 'inversion' else 'itgan'}@{cell.budget}.work"
    dtype = {"lds_fp16": "float16", "lds_fp32": "float32"}.get(cell.method, "int8")
    gen_dtype = "float32" if cell.method == "lds_fp32" else "float16"  # lds_fp32: the storage options' reference
    out = work / "sets" / f"{cell.name}.lds"
    overrides = [f"ipc={'null' if ipc is None else ipc}", f"latent_dtype={dtype}", f"generator_dtype={gen_dtype}"]
    if cell.method == "inversion":
        overrides.append("condense.iterations=0")
    reuse_stages(work, cell.budget, encode_dir, with_inversion=cell.method == "inversion")
    kept = args.out / KEPT / out.name
    if not out.exists() and kept.exists():  # a clean clone resumes after the encode
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, out)
    if not out.exists():
        t0 = time.perf_counter()
        latentds.encode(args.data, out, "fast", overrides=overrides, work_dir=encode_dir, generator=GENERATOR,
                        progress=False, precision=PRECISION, device=args.device)
        (out.with_suffix(".json")).write_text(json.dumps({"encode_wall_s": time.perf_counter() - t0}))
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, kept)
    info = latentds.open_lds(out).manifest
    return out, {"images": int(info["num_samples"]), "bytes": out.stat().st_size, "budget": lds_bytes(ipc),
                 "encode": {"preset": "fast", "overrides": overrides, "generator": str(GENERATOR.relative_to(REPO)),
                            "timing_s": info["provenance"]["run"]["timing_s"], "compute": info["provenance"]["run"]["compute"]}}


# --- running a cell -------------------------------------------------------------------------------------------
def epochs_for(images: int, steps: int) -> int:
    return int(min(300, max(1, round(steps * 256 / max(images, 1)))))


def set_fingerprint(spec: Path | str) -> str:
    """The sha256 of a cell's training set file (a seed's result is reused only for the same bytes), or its name
    where it is not one file (the real folder, GAN samples of the committed generator)."""
    if isinstance(spec, Path) and spec.is_file():
        from latentds.format import file_sha256

        return file_sha256(spec)
    return str(spec)


def machine(device: str) -> str:
    sys.path.insert(0, str(REPO / "tools"))
    from benchlib import machine as described

    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(torch.device(device))}, host {described()}"
    return described()


def run_cell(cell: Cell, args: argparse.Namespace, log, save_partial, prior: dict | None = None) -> dict:
    """Evaluate the cell seed by seed. A finished seed is kept in ``--work`` and, through ``save_partial``, in the
    committed records (``"partial": true``), so that a cell resumes in a later session from a clean clone."""
    import latentds

    spec, meta = build_set(cell, args)
    if meta["images"] == 0:  # not one image fits: said in the record and the table, never rounded up
        log(f"{cell.name}: not a single image fits in {meta['budget']:,} bytes")
        return {"cell": cell.name, "budget": cell.budget, "method": cell.method, "bytes": 0, "images": 0,
                "budget_bytes": meta["budget"], "acc_mean": None, "acc_std": None, "accs": [], "seeds": args.seeds,
                "steps": args.steps, "fits": False}
    epochs = epochs_for(meta["images"], args.steps)
    folder = args.work / "cells" / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    accs, seconds = [], []
    set_sha = set_fingerprint(spec)
    committed = {s["seed"]: s for s in (prior or {}).get("seed_runs", []) if s.get("set_sha256") == set_sha}
    if (prior or {}).get("seed_runs") and not committed:
        log(f"{cell.name}: its set is not the bytes the records trained on ({set_sha[:12]}): every seed runs again")
    spec_arg = spec if isinstance(spec, str) else os.path.relpath(spec, REPO)
    record = {
        "cell": cell.name, "budget": cell.budget, "method": cell.method, "bytes": meta["bytes"],
        "images": meta["images"], "budget_bytes": meta.get("budget"), "seeds": args.seeds, "epochs": epochs,
        "steps": args.steps, "machine": machine(args.device), "encode": meta.get("encode"), "set_sha256": set_sha,
        "command": f"python bench/per_byte.py --only {cell.method} --budgets {cell.budget} --steps {args.steps} "
                   f"--seeds {args.seeds}  # then: latentds eval {spec_arg} --test {args.data} --arch convnet3 "
                   f"--epochs {epochs} --seeds {args.seeds} --precision {PRECISION}",
    }
    runs = []
    for seed in range(args.seeds):
        done = folder / f"seed{seed}.json"  # the seed as run here, kept only for the bytes it trained on
        local = json.loads(done.read_text()) if done.exists() else {}
        if local.get("set_sha256") == set_sha:
            r = local
        elif seed in committed and committed[seed]["epochs"] == epochs:
            r = committed[seed]
            log(f"{cell.name}: seed {seed}: {r['acc']:.2f} % from the committed records")
        else:
            t0 = time.perf_counter()
            extra = {"ipc": meta["ipc"]} if "ipc" in meta else {}
            res = latentds.evaluate(spec, args.data, arch="convnet3", epochs=epochs, seeds=1, seed=seed, device=args.device,
                                    precision=PRECISION, progress=False, **extra)
            r = {"acc": res.accs[0], "seconds": time.perf_counter() - t0, "final_train_acc": res.curves[0]["train_acc"][-1],
                 "compute": res.config["compute"], "set_sha256": set_sha}
            done.write_text(json.dumps(r))
            log(f"{cell.name}: seed {seed}: {r['acc']:.2f} % ({r['seconds'] / 60:.1f} min)")
        runs.append({"seed": seed, "epochs": epochs, "set_sha256": set_sha, **r})
        accs.append(r["acc"])
        seconds.append(r["seconds"])
        if seed + 1 < args.seeds:
            save_partial({**record, "partial": True, "seed_runs": list(runs), "acc_mean": None, "acc_std": None,
                          "accs": list(accs)})
    return {**record, "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)), "accs": accs,
            "eval_s": seconds, "compute": r["compute"], "seed_runs": runs}


def write_outputs(records: list[dict], out: Path, stem: str = "per-byte-cpu") -> None:
    report.write_outputs(records, out, stem, {k: lds_bytes(v) for k, v in BUDGETS.items()}, PAPER)


def write_sizes(out: Path) -> int:
    """What one image costs in each format, on the first 4 mosaics' worth of the class-balanced order, next to
    what one latent row costs in a .lds (its label byte included; the generator and header come on top)."""
    from latentds.sources import load_source

    data = load_source(DATA_DEFAULT, split="train", progress=False)
    images = data.images.permute(0, 2, 3, 1).numpy()
    n = 4 * MOSAIC * MOSAIC
    order = class_balanced_order(data.labels.numpy(), seed=0)[:n]
    sizes = bytes_per_image(images[order], (5, 20, 50, 75), MOSAIC_QUALITIES + (75,))
    sizes.update({f"lds_latent_{d}": float(LATENT_DIM * w + 1) for d, w in (("int8", 1), ("fp16", 2), ("fp32", 4))})
    record = {"images": n, "bytes_per_image": sizes, "generator_fp16_bytes": generator_fp16_bytes(),
              "command": "python bench/per_byte.py --sizes"}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


def save_record(record: dict, results: Path, out: Path) -> None:
    """Replace the cell's record (reread first: other processes append too) and redraw the table and plot."""
    records = json.loads(results.read_text()) if results.exists() else []
    write_outputs([r for r in records if r["cell"] != record["cell"]] + [record], out, results.stem)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    p.add_argument("--only", nargs="+", default=None, metavar="METHOD", help="method name prefixes to run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000, help="SGD steps per network (default %(default)s)")
    p.add_argument("--work", type=Path, default=Path("../latentds-bench/per-byte"))
    p.add_argument("--data", default=DATA_DEFAULT, help="CIFAR-10 as an image folder (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu (the committed records) or cuda (records named -gpu)")
    p.add_argument("--out", type=Path, default=REPO / "bench/results")
    p.add_argument("--redo", action="store_true", help="run finished cells again on their sets as built now: "
                   "seeds that trained on the same bytes are kept, the others run again")
    p.add_argument("--plan", action="store_true", help="list the cells and budgets; run nothing")
    p.add_argument("--sizes", action="store_true", help="bytes per image of every format (a few seconds); run nothing else")
    args = p.parse_args()
    if args.sizes:
        return write_sizes(args.out / "per-byte-sizes.json")
    planned = cells(args.budgets, args.only)
    stem = "per-byte-cpu" if args.device == "cpu" else "per-byte-gpu"
    results = args.out / f"{stem}.json"
    records = json.loads(results.read_text()) if results.exists() else []
    done = {r["cell"] for r in records
            if r.get("steps") == args.steps and r.get("seeds") == args.seeds and not r.get("partial")}
    logfile = args.work / "per-byte.log"
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        stamped = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}"
        print(stamped, flush=True)
        with open(logfile, "a", encoding="utf-8") as f:
            f.write(stamped + "\n")

    for cell in planned:
        state = "done" if cell.name in done else "pending"
        budget = "-" if cell.budget == "ceiling" else f"{lds_bytes(BUDGETS[cell.budget]):,} B"
        print(f"  {cell.name:28s} {budget:>14s}  {state}")
    if args.plan:
        return 0
    for cell in planned:
        if cell.name in done and not args.redo:
            continue
        log(f"cell start: {cell.name}")
        prior = next((r for r in records if r["cell"] == cell.name and r.get("steps") == args.steps), None)
        record = run_cell(cell, args, log, lambda partial: save_record(partial, results, args.out), prior)
        save_record(record, results, args.out)
        if record["acc_mean"] is not None:
            log(f"cell done: {cell.name}: {record['acc_mean']:.2f} ± {record['acc_std']:.2f} % on "
                f"{record['images']:,} images in {record['bytes']:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
