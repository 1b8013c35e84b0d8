#!/usr/bin/env python
"""Embedding-pool ablation on CIFAR-10: the same IT-GAN encode with different embedding networks.

    python bench/pool_ablation.py                      # every variant at 10 per class, ConvNet-3, 3 seeds
    python bench/pool_ablation.py --variants pool4 random --seeds 1
    python bench/pool_ablation.py --tiny --work /tmp/pa   # the same code path on a synthetic 2-class set

Variants (encode overrides on top of bench/run_cifar10.py's CPU schedule, which trains the main classifier 4
epochs with a snapshot after each):

- ``pool4``   the main classifier's 4 snapshots, drawn every step (the benchmark's setting until now)
- ``pool54``  those 4 plus 10 independent classifier runs (own seed, own 10,000-image subset, 5 epochs, a
              snapshot per epoch): 54 nets (``pool.runs=10``)
- ``mix54``   pool54 drawn with probability 0.5, else a fresh random ConvNet (``condense.pool_prob=0.5``)
- ``random``  a fresh randomly initialized ConvNet every step, as DM does (``condense.pool_prob=0``)

Everything else is shared and identical: the generator, the main classifier, the selected images and their
inversion (computed once, copied into each variant's work dir), the condensation schedule and seeds. Each
finished variant is appended to ``OUT/<stem>.json`` with its pool statistics and the command that rebuilds it,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_cifar10 as rc  # noqa: E402  (the benchmark's harness: settings, artefacts, cells, records)

VARIANTS: dict[str, tuple[str, ...]] = {
    "pool4": (),
    "pool54": ("pool.runs=10", "pool.epochs=5", "pool.snapshot_every=1", "pool.subset=10000", "pool.val_size=2000"),
    "mix54": ("pool.runs=10", "pool.epochs=5", "pool.snapshot_every=1", "pool.subset=10000", "pool.val_size=2000",
              "condense.pool_prob=0.5"),
    "random": ("condense.pool_prob=0",),
}
TINY_VARIANTS: dict[str, tuple[str, ...]] = {
    "pool4": (),
    "pool54": ("pool.runs=2", "pool.epochs=1", "pool.subset=8", "pool.val_size=4"),
    "mix54": ("pool.runs=2", "pool.epochs=1", "pool.subset=8", "pool.val_size=4", "condense.pool_prob=0.5"),
    "random": ("condense.pool_prob=0",),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--ipc", type=int, default=None, help="images per class (default 10; --tiny: 2)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="ConvNet-3 epochs (default the benchmark's schedule)")
    p.add_argument("--work", type=Path, default=Path("/tmp/latentds-pool"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--stem", default=None, help="results file stem (default cifar10-cpu-pool; --tiny: tiny-pool)")
    p.add_argument("--generator", type=Path, default=None)
    p.add_argument("--data", default=str(rc.DEFAULT_DATA))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    base = _base_settings(args)
    ipc = args.ipc or (rc.TINY_IPCS[0] if args.tiny else 10)
    epochs = args.epochs or base.epochs_for("convnet3", ipc)
    stem = args.stem or ("tiny-pool" if args.tiny else "cifar10-cpu-pool")
    table = TINY_VARIANTS if args.tiny else VARIANTS
    results = base.out / f"{stem}.json"

    import torch

    torch.set_num_threads(base.threads)
    log = rc.Log(base.work / "pool_ablation.log")
    if args.tiny:
        rc.make_tiny_data(Path(base.data))
    records = rc.load_records(results)
    data = rc.Data(base.data, log)
    first_invert: Path | None = None
    first_pool: Path | None = None  # pool runs are the same wherever pool.* is: train once (their files check it)
    for name in args.variants:
        s = rc.Settings(**{**base.__dict__, "work": base.work / name, "overrides": base.overrides + list(table[name]),
                           "argv": ["python", "bench/pool_ablation.py", *argv]})
        wants_pool = any(o.startswith("pool.runs=") for o in table[name])
        enc_dir = _share_common_work(base, s, data, log, ipc, first_invert, first_pool if wants_pool else None)
        done = [r for r in records if r.get("variant") == name and r["ipc"] == ipc and r["epochs"] == epochs
                and r["seeds"] == args.seeds]
        t0 = time.perf_counter()
        art = rc.build_artifact(s, "itgan", ipc, data, log)
        first_invert = first_invert or (enc_dir / "invert")
        if wants_pool and first_pool is None:
            first_pool = enc_dir / "classifier" / "pool"
        if done:
            log(f"{name}: already measured ({done[-1]['acc_mean']:.2f} %)")
            continue
        cell = rc.Cell("itgan", ipc, "convnet3", epochs, args.seeds)
        rec = rc.run_cell(s, cell, art, data, lambda line, n=name: log(f"[{n}] {line}"))
        _record(rec, name, table[name], art.spec, time.perf_counter() - t0, argv, results, log)
    for r in rc.load_records(results):
        if r.get("variant") in args.variants:
            print(f"{r['variant']:8s} ipc {r['ipc']}: {r['acc_mean']:.2f} ± {r['acc_std']:.2f} %  pool {r['pool'].get('size', 0)}")
    return 0


def _base_settings(args: argparse.Namespace):
    """The benchmark's settings for these arguments (ConvNet-3 only), before any variant's overrides."""
    base_argv = ["--work", str(args.work), "--archs", "convnet3", "--seeds", str(args.seeds), "--data", args.data]
    for flag, value in (("--generator", args.generator), ("--threads", args.threads), ("--out", args.out)):
        if value is not None:
            base_argv += [flag, str(value)]
    base_argv += (["--tiny"] if args.tiny else []) + (["--quiet"] if args.quiet else [])
    return rc.settings_from_args(rc.build_parser().parse_args(base_argv), base_argv)


def _share_common_work(base, s, data, log, ipc: int, first_invert: Path | None, first_pool: Path | None) -> Path:
    """Copy what every variant shares into its work dir (the main classifier, the inversion, pool runs)."""
    s.work.mkdir(parents=True, exist_ok=True)
    shared_cls = base.work / "shared-classifier"
    if not (shared_cls / "classifier.safetensors").exists():
        rc.ensure_classifier(rc.Settings(**{**base.__dict__, "work": base.work / "shared"}), data, log)
        shutil.copytree(base.work / "shared" / "classifier", shared_cls, dirs_exist_ok=True)
    if not (s.work / "classifier").exists():
        shutil.copytree(shared_cls, s.work / "classifier")
    enc_dir = s.work / "encode" / f"{rc.artifact_name('itgan', ipc)}.work"
    if first_invert is not None and not (enc_dir / "invert").exists():
        shutil.copytree(first_invert, enc_dir / "invert")
    if first_pool is not None and not (enc_dir / "classifier" / "pool").exists():
        shutil.copytree(s.work / "classifier", enc_dir / "classifier", dirs_exist_ok=True)
        shutil.copytree(first_pool, enc_dir / "classifier" / "pool")
    return enc_dir


def _record(rec: dict, name: str, overrides, spec: str, wall_s: float, argv: list[str], results: Path, log) -> None:
    """Add the variant's pool and losses (read from its .lds) to its record and append it to the results."""
    from latentds import open_lds

    with open_lds(spec) as f:
        losses = f.manifest["provenance"]["losses"]
    pool = dict(losses["classifier"].get("pool") or {})
    pool.pop("nets", None)  # the per-net table stays in the .lds provenance
    rec.update(variant=name, variant_overrides=list(overrides), pool=pool, pool_prob=losses["classifier"].get("pool_prob"),
               condense_final=(losses.get("condense") or {}).get("final"), variant_wall_s=wall_s,
               harness=" ".join(["python", "bench/pool_ablation.py", *argv]))
    records = rc.load_records(results) + [rec]
    rc.write_atomic(results, (rc.portable(json.dumps(records, indent=1)) + "\n").encode("utf-8"))
    log(f"{name}: {rec['acc_mean']:.2f} ± {rec['acc_std']:.2f} % (pool {pool.get('size', 0)} nets, "
        f"pool_prob {rec['pool_prob']}; train acc {rec['final_train_acc']})")


if __name__ == "__main__":
    sys.exit(main())
