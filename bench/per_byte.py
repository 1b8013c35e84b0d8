"""Accuracy per byte on CIFAR-10: latentds against what a user would ship instead, at equal file sizes.

    python bench/per_byte.py --plan                 # the cells, their byte budgets and which are done
    python bench/per_byte.py                        # run every pending cell (resumable, seed by seed)
    python bench/per_byte.py --only jpeg_mosaic png --budgets 500
    python bench/per_byte.py --only jpeg_mosaic --budgets 100-shared   # the receiver already has the generator
    python bench/per_byte.py --only lds_int8 --budgets all   # the whole-set cell: a ~2 h encode, then 3 seeds
    python bench/per_byte.py --only lds --budgets 100 --redo  # finished cells on their sets as built now: seeds
                                                    # that trained on other bytes run again, the others are kept
    python bench/per_byte.py --sizes                # bytes per image of every format (seconds)
    python bench/per_byte.py --only lds_long lds_prior --budgets 100 --generator w16-10000it  # longer condensation
    python bench/per_byte.py --only lds_prior_p --generator w16-10000it  # accuracy vs condensation passes
    python bench/per_byte.py --only lds gan inversion --generator w16-10000it   # the latentds cells with another
                                                    # generator of the same size (bench/artifacts): METHOD+NAME cells

Budgets are the sizes of latentds files at 100 and 500 latents per class and at the whole training set
(int8 latents, fp16 generator: ``lds_bytes``), and ``100-shared``: the 100-per-class file without its generator,
for a receiver who already has it (one generator behind many files, or shipped once); there latentds' rows are
its 100-per-class files counted without the generator's tensors, and the real-image methods fill latents and a
header allowance (``SHARED_HEADER_ALLOWANCE``, above latentds' own header). At each budget, every method trains
ConvNet-3 from scratch on what fits in that many bytes and is tested on the real test split (3 seeds, the same
schedule for all):

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
- ``lds_long``: the same encode condensed 40 times longer (``LONG_CONDENSE``: 200 passes), int8, at 100 and 500
  per class only (the fast preset's 5 passes are what the whole set affords; a few hundred per class afford more);
- ``lds_prior``: ``lds_long`` started from z ~ N(0, I) (``amortized.steps=0``, ``invert.iterations=0``): the
  GAN's own samples condensed, for a generator whose samples train better than its inverted latents;
- ``lds_prior_pN``: ``lds_prior`` given N condensation passes instead of 200 (N in ``CURVE_PASSES``), at 100 and
  500 per class: with ``gan`` (0 passes) and ``lds_prior`` (200) the accuracy-vs-passes curve, drawn in
  per-byte-cpu-passes.png, that says how many passes condensation needs;
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
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import per_byte_report as report  # noqa: E402
from byte_budget import MOSAIC, bytes_per_image, class_balanced_order  # noqa: E402
from per_byte_sets import (  # noqa: E402, F401 (re-exported: bench/storage_fidelity.py reads them from here)
    BENCHMARK_GENERATOR, BUDGETS, DATA_DEFAULT, FILE_QUALITIES, GENERATOR, LATENT_DIM, LDS_METHODS, MOSAIC_QUALITIES,
    CURVE_METHODS, LONG_BUDGETS, LONG_METHODS, PRECISION, SHARED_BUDGETS, Cell, budget_bytes, build_set, check_generator,
    generator_fp16_bytes, lds_bytes, set_fingerprint)

PAPER = {"100/class": (55.8, 57.3), "500/class": (69.7, 71.3), "whole set": (82.8, 82.8)}  # ConvNet-3, IT-GAN


def cells(budgets: list[str], methods: list[str] | None, generator: str = BENCHMARK_GENERATOR) -> list[Cell]:
    """In run order: the ceiling, then method by method (the strongest baseline first), budgets largest first.
    With another generator than the benchmark's, the latentds cells are its own (``lds_int8+NAME``)."""
    names = method_names(generator)
    out = [Cell("ceiling", "real_all")] if not methods or "real_all" in methods else []
    order = [b for b in ("all", "500", "100", *SHARED_BUDGETS) if b in budgets]
    out += [Cell(b, m) for m in names for b in order if selected(Cell(b, m), methods, names) and fits(Cell(b, m))]
    return out


def method_names(generator: str = BENCHMARK_GENERATOR) -> list[str]:
    """Every method in run order (the strongest baseline first), latentds' with ``+NAME`` for another generator."""
    tag = "" if generator == BENCHMARK_GENERATOR else f"+{generator}"
    return [m + tag for m in LDS_METHODS] + ([f"jpeg_mosaic_q{q}" for q in (20,)] + ["dm_mosaic_q20"] + [f"jpeg_file_q{q}" for q in (75,)]
            + [f"jpeg_mosaic_q{q}" for q in MOSAIC_QUALITIES if q != 20] + ["png"]
            + [f"jpeg_file_q{q}" for q in FILE_QUALITIES if q != 75])


def unknown_methods(methods: list[str] | None, generator: str) -> str | None:
    """``--only`` names that select no method (a typo would otherwise run the others silently), in one line."""
    names = method_names(generator)
    unknown = [m for m in methods or [] if m != "real_all" and not any(selected(Cell("100", n), [m], names) for n in names)]
    if not unknown:
        return None
    known = sorted({Cell("100", n).base for n in names} | {"real_all"})
    return f"--only: no method {', '.join(unknown)} (methods: {', '.join(known)}; a prefix selects a family)"


def nothing_planned(budgets: list[str], methods: list[str]) -> str:
    """Why known methods select no cell at the budgets asked for, in one line."""
    why = []
    if any(b in SHARED_BUDGETS for b in budgets):
        why.append(f"at a shared-generator budget latentds' rows are its files at {', '.join(SHARED_BUDGETS.values())} "
                   "per class less their generator (run those)")
    if any(b not in SHARED_BUDGETS and b not in LONG_BUDGETS for b in budgets):
        why.append(f"long condensation and its passes curve run at {' and '.join(LONG_BUDGETS)} per class only")
    return f"--only {' '.join(methods)} runs at none of --budgets {' '.join(budgets)}: " + "; ".join(why)


def selected(cell: Cell, methods: list[str] | None, names: list[str]) -> bool:
    """``--only``: a method's full name (``lds_prior``, ``lds_int8+w16-10000it``) selects that method alone, anything
    else is a family prefix (``lds``, ``jpeg_mosaic``): ``lds_prior`` does not also run its shorter-pass cells."""
    if not methods:
        return True
    bases = {Cell("100", n).base for n in names}
    return any(x in (cell.method, cell.base) if x in bases or x in names else cell.method.startswith(x)
               for x in methods)


def fits(cell: Cell) -> bool:
    """Long condensation and its passes curve run at 100 and 500 per class only (the whole set's would take days);
    at a shared-generator budget only the real-image methods run (latentds' rows there are its files, counted
    without their generator)."""
    if cell.budget in SHARED_BUDGETS:
        return cell.base not in LDS_METHODS
    return cell.budget in LONG_BUDGETS or cell.base not in LONG_METHODS + CURVE_METHODS


# --- running a cell -------------------------------------------------------------------------------------------
def epochs_for(images: int, steps: int) -> int:
    return int(min(300, max(1, round(steps * 256 / max(images, 1)))))


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
    import torch

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
    spec_arg = (f"gan:{os.path.relpath(spec[4:], REPO)}" if str(spec).startswith("gan:")
                else spec if isinstance(spec, str) else os.path.relpath(spec, REPO))
    generator_flag = f" --generator {cell.generator}" if cell.generator != BENCHMARK_GENERATOR else ""
    budget_flag = "" if cell.budget == "ceiling" else f" --budgets {cell.budget}"  # the ceiling runs at any budgets
    record = {
        "cell": cell.name, "budget": cell.budget, "method": cell.method, "bytes": meta["bytes"],
        "images": meta["images"], "budget_bytes": meta.get("budget"), "seeds": args.seeds, "epochs": epochs,
        "steps": args.steps, "machine": machine(args.device), "encode": meta.get("encode"), "set_sha256": set_sha,
        "command": f"python bench/per_byte.py --only {cell.base}{budget_flag} --steps {args.steps} "
                   f"--seeds {args.seeds}{generator_flag}  # then: latentds eval {spec_arg} --test {args.data} "
                   f"--arch convnet3 --epochs {epochs} --seeds {args.seeds} --precision {PRECISION}",
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
                 "compute": res.config["compute"], "threads": torch.get_num_threads(), "set_sha256": set_sha}
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
    report.write_outputs(records, out, stem, {k: budget_bytes(k) for k in BUDGETS}, PAPER, SHARED_BUDGETS,
                         generator_fp16_bytes())


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
    p.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                   help="methods to run: a full name runs that method alone, anything else is a prefix (lds, jpeg)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000, help="SGD steps per network (default %(default)s)")
    p.add_argument("--work", type=Path, default=Path("../latentds-bench/per-byte"))
    p.add_argument("--data", default=DATA_DEFAULT, help="CIFAR-10 as an image folder (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu (the committed records) or cuda (records named -gpu)")
    p.add_argument("--out", type=Path, default=REPO / "bench/results")
    p.add_argument("--generator", default=BENCHMARK_GENERATOR, metavar="NAME",
                   help="the latentds cells' generator, bench/artifacts/cifar10-biggan32-NAME.safetensors, of the "
                        "benchmark generator's size (default %(default)s; another one's cells are METHOD+NAME)")
    p.add_argument("--redo", action="store_true", help="run finished cells again on their sets as built now: "
                   "seeds that trained on the same bytes are kept, the others run again")
    p.add_argument("--plan", action="store_true", help="list the cells and budgets; run nothing")
    p.add_argument("--sizes", action="store_true", help="bytes per image of every format (a few seconds); run nothing else")
    args = p.parse_args()
    if args.sizes:
        return write_sizes(args.out / "per-byte-sizes.json")
    check_generator(args.generator)
    if unknown := unknown_methods(args.only, args.generator):
        p.error(unknown)
    planned = cells(args.budgets, args.only, args.generator)
    if not planned:
        p.error(nothing_planned(args.budgets, args.only))
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
        budget = "-" if cell.budget == "ceiling" else f"{budget_bytes(cell.budget):,} B"
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
