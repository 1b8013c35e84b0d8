"""Running a cell and writing what it measured: records, the Markdown table, the plot."""

from __future__ import annotations

from cifar10_bench.artifacts import Artifact, Data, device_string, resolve_device
from cifar10_bench.runlog import Log, fmt_ipc, fmt_s, mib, pct, portable, write_atomic
from cifar10_bench.settings import (
    ARCH_LABELS,
    CIFAR10_ARCHIVE_BYTES,
    CIFAR10_RAW_PIXEL_BYTES,
    ENCODE_METHODS,
    EVAL_INIT,
    METHOD_LABELS,
    PAPER_EPOCHS,
    RUN_ORDER,
    Cell,
    Settings,
    _init_tag,
)


import datetime as _dt
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

















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


