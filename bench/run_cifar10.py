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

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the harness package beside this script

from cifar10_bench.artifacts import *  # noqa: F401,F403,E402
from cifar10_bench.costs import *  # noqa: F401,F403,E402
from cifar10_bench.report import *  # noqa: F401,F403,E402
from cifar10_bench.settings import *  # noqa: F401,F403,E402


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
