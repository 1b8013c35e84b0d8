"""Train a benchmark generator for longer, across as many sessions as it takes, on whatever CPU each one has.

    python bench/train_generator.py                           # w16-10000it: the cpu preset's GAN, 10,000 iterations
    python bench/train_generator.py --hours 2.5               # stop cleanly at the first checkpoint past 2.5 h
    python bench/per_byte.py --only lds gan inversion --generator w16-10000it   # then: its cells (same budgets)

The committed benchmark generator (``cifar10-biggan32-w16-2000it``) is the `cpu` preset's GAN cut to 2,000
iterations; the per-byte curve says its images are the ceiling (5,000 and 50,000 latents train no better than
1,000). This trains the same architecture and width (so the same bytes: every budget and every non-latentds
cell of bench/per_byte.py stays valid) with the same config for ``--iterations``, fp32 on every CPU kind, one
thread (as the 2,000-iteration one was trained).

Resumable from a clean clone: training runs in chunks of ``gan.checkpoint_every`` iterations; after each, the
checkpoint (generator, discriminator, EMA, optimizers, RNG) is copied to ``bench/artifacts/training/NAME/``, to be
committed, and the record there (``record.json``) gets this session's segment: machine, iterations, seconds. A
session that starts with no work dir takes the committed checkpoint. When the last chunk is done the generator is
written to ``bench/artifacts/cifar10-biggan32-NAME.safetensors`` (its metadata: the GAN config and training
statistics) and the committed checkpoint is removed (the record stays). Within a session on one CPU kind, a chunked
run is bit-identical to an uninterrupted one; across CPU kinds the fp32 kernels round differently, so the record
names every session's machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "bench"))
from benchlib import machine, rel  # noqa: E402
import per_byte_sets as sets  # noqa: E402

CHECKPOINT = "gan_ckpt.safetensors"  # the name train_gan keeps its resume state under, in its work dir


def config(iterations: int, seed: int, overrides: list[str]):
    """The benchmark generator's GAN config (the cpu preset's GAN section) at ``iterations``."""
    from latentds.encoding import build_config

    cfg, _ = build_config("cpu", None, [f"seed={seed}", f"gan.iterations={iterations}", *overrides])
    return cfg.gan


def committed_iteration(path: Path) -> int:
    """The iteration a checkpoint file holds (its safetensors metadata), 0 where there is none."""
    if not path.is_file():
        return 0
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return int(json.loads(meta.get("latentds.state", "{}")).get("iteration", 0))


class Judge:
    """The quality of samples under one real-data classifier (gan_quality: its accuracy on 200 class-conditional
    samples per class, and a Fréchet distance in its features to as many real images), recorded per iteration."""

    PER_CLASS = 200

    def __init__(self, path: Path, data, source: str, seed: int, record: dict):
        from latentds.encoding import load_classifier
        from latentds.format import file_sha256

        self.classifier, self.data, self.seed, self.out = load_classifier(path), data, seed, record
        sha = file_sha256(path)
        self.out.setdefault("quality", {"classifier": rel(path), "classifier_sha256": sha,
                                        "per_class": self.PER_CLASS, "points": []})
        if self.out["quality"]["classifier_sha256"] != sha:
            raise SystemExit(f"train_generator: the record's quality figures were measured under another classifier "
                             f"({self.out['quality']['classifier']}); pass that one, or none")
        if "classifier_test_accuracy" not in self.out["quality"]:  # what "recognised" is read against
            from latentds.encoding import accuracy
            from latentds.sources import load_source

            test = load_source(source, "test", progress=False)
            norm = self.classifier.normalization
            self.out["quality"]["classifier_test_accuracy"] = round(float(
                accuracy(self.classifier, test.images, test.labels, norm["mean"], norm["std"])), 2)
        if "benchmark_generator" not in self.out["quality"]:
            from latentds.checkpoint import load_model

            self.out["quality"]["benchmark_generator"] = {"file": rel(sets.GENERATOR), **self.measure(load_model(sets.GENERATOR))}

    def measure(self, generator) -> dict:
        import torch

        from latentds.encoding import gan_quality

        with torch.no_grad():
            q = gan_quality(generator, self.classifier, self.data.num_classes, self.PER_CLASS, self.seed, "cpu",
                            real=self.data)
        return {k: round(q[k], 3) for k in ("accuracy", "frechet", "frechet_real") if k in q}

    def record(self, generator, iteration: int) -> None:
        point = {"iteration": iteration, **self.measure(generator)}
        self.out["quality"]["points"] = [p for p in self.out["quality"]["points"] if p["iteration"] != iteration] + [point]
        print(f"train_generator: iteration {iteration:,}: samples {point['accuracy']:.1f} % recognised, Fréchet "
              f"{point.get('frechet', float('nan')):.2f} (benchmark generator: "
              f"{self.out['quality']['benchmark_generator']['accuracy']:.1f} %)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=10_000)
    p.add_argument("--name", default=None, help="default: w16-<iterations>it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=sets.DATA_DEFAULT, help="CIFAR-10 as an image folder (default %(default)s)")
    p.add_argument("--work", type=Path, default=None, help="default: ../latentds-bench/generator-NAME")
    p.add_argument("--hours", type=float, default=None, help="stop at the first checkpoint after this many hours")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--classifier", type=Path, default=None,
                   help="a real-data classifier (train_classifier's file, e.g. an encode work dir's "
                        "classifier/classifier.safetensors): after every chunk, the samples' quality under it is "
                        "recorded, and the benchmark generator's once, so the record is a quality-vs-iterations curve")
    p.add_argument("--set", action="append", default=[], metavar="gan.KEY=VALUE",
                   help="another GAN config than the cpu preset's (then name it with --name)")
    args = p.parse_args(argv)
    name = args.name or f"w16-{args.iterations}it"
    work = (args.work or Path(f"../latentds-bench/generator-{name}")) / "gan"
    kept = sets.ARTIFACTS / "training" / name
    out = sets.generator_path(name)
    if out.exists():
        print(f"train_generator: {rel(out)} exists; nothing to do")
        return 0

    import torch

    from latentds.encoding import GENERATOR_FILE, train_gan
    from latentds.sources import load_source

    torch.set_num_threads(args.threads)
    from latentds.errors import LatentdsError

    try:
        cfg = config(args.iterations, args.seed, args.set)
    except LatentdsError as exc:  # a bad --iterations or --set: one line, as the CLI says it
        raise SystemExit(f"train_generator: {exc}") from None
    work.mkdir(parents=True, exist_ok=True)
    if committed_iteration(kept / CHECKPOINT) > committed_iteration(work / CHECKPOINT):
        shutil.copyfile(kept / CHECKPOINT, work / CHECKPOINT)  # a clean clone, or a lost work dir
    record_path = kept / "record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {
        "generator": rel(out), "gan_config": asdict(cfg),
        "data": args.data, "precision": "fp32", "sessions": [],
        "command": " ".join(["python bench/train_generator.py --iterations", str(args.iterations)]
                            + [f"--set {s}" for s in args.set] + ([f"--name {name}"] if args.name else []))}
    print(f"train_generator: loading {args.data}", flush=True)
    data = load_source(args.data, "train", progress=False)
    segment = {"machine": machine(), "torch": torch.__version__, "threads": args.threads,
               "started": time.strftime("%Y-%m-%d %H:%M"),
               "from_iteration": committed_iteration(work / CHECKPOINT), "to_iteration": None, "seconds": 0.0}
    record["sessions"].append(segment)
    judge = Judge(args.classifier, data, args.data, args.seed, record) if args.classifier else None
    t0 = time.perf_counter()
    it = segment["from_iteration"]
    while it < args.iterations:
        target = min(args.iterations, (it // cfg.checkpoint_every + 1) * cfg.checkpoint_every)
        generator, stats = train_gan(data, replace(cfg, iterations=target), work, "cpu",
                                     progress=False, log=lambda line: print(line, flush=True))
        it = stats["iterations"]
        if judge is not None:
            judge.record(generator, it)
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / CHECKPOINT, kept / CHECKPOINT)
        segment.update(to_iteration=it, seconds=round(time.perf_counter() - t0, 1), train_seconds=stats["train_seconds"])
        record_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"train_generator: iteration {it:,}/{args.iterations:,}; checkpoint kept in {rel(kept)}",
              flush=True)
        if args.hours is not None and time.perf_counter() - t0 > args.hours * 3600 and it < args.iterations:
            print(f"train_generator: stopped after {args.hours} h; the same command resumes at iteration {it:,}")
            return 0
    shutil.copyfile(work / GENERATOR_FILE, out)
    (kept / CHECKPOINT).unlink(missing_ok=True)
    record.update(iterations=it, train_seconds=stats["train_seconds"], bytes=os.path.getsize(out))
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"train_generator: wrote {rel(out)} ({it:,} iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
