"""The per-byte benchmark's outputs (bench/per_byte.py): the records, a Markdown table and the accuracy-per-byte plot."""

from __future__ import annotations

import json
import re
from pathlib import Path

CURVE = re.compile(r"lds_prior_p\d+")  # the accuracy-vs-passes cells: drawn against passes, not bytes


SHARED_SHOWN = ("lds_int8", "lds_prior")  # latentds' rows at a shared-generator budget: the fast preset and the best


def shared_rows(records: list[dict], shared: dict[str, str], generator_bytes: int) -> list[dict]:
    """latentds' rows at each shared-generator budget, derived (never saved): its cells at the budget named, their
    file less the generator's tensors (``generator_bytes``; its manifest entries stay counted)."""
    return [{**r, "cell": f"{r['method']}@{key}", "budget": key, "bytes": r["bytes"] - generator_bytes,
             "generator_shared": True}
            for key, source in shared.items() for r in records
            if r["budget"] == source and r["method"].split("+")[0] in SHARED_SHOWN and r.get("accs")]


def write_outputs(records: list[dict], out: Path, stem: str, budgets: dict[str, int],
                  paper: dict[str, tuple[float, float]], shared: dict[str, str] | None = None,
                  generator_bytes: int = 0) -> None:
    """The records as JSON, the table (per-byte-*.md) and the plot (per-byte-*.png): a running cell is listed with
    its seeds so far and drawn hollow; the plot keeps the best point per budget of each family (JPEG's best quality).
    At a shared-generator budget (``shared``: its key -> the budget whose files it counts without their generator)
    the table and plot add latentds' rows, derived from the records, not saved in them."""
    (out / f"{stem}.json").write_text(json.dumps(records, indent=1) + "\n")
    shared = shared or {}
    records = records + shared_rows(records, shared, generator_bytes)
    lines = ["# Accuracy per byte on CIFAR-10 (ConvNet-3, real test split)", "",
             "| budget | method | images | bytes | MB | acc (%) | epochs |", "|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["bytes"], r["method"])):
        if r.get("partial"):
            lines.append(f"| {r['budget']} | {r['method']} | {r['images']:,} | {r['bytes']:,} | {r['bytes'] / 1e6:.2f} | "
                         f"running: {len(r['accs'])} of {r['seeds']} seeds, {', '.join(f'{a:.2f}' for a in r['accs'])} | {r['epochs']} |")
            continue
        if r["acc_mean"] is None:
            lines.append(f"| {r['budget']} | {r['method']} | 0 | - | - | does not fit in {r['budget_bytes']:,} bytes | - |")
            continue
        method = r["method"] + (" (generator not counted)" if r.get("generator_shared") else "")
        lines.append(f"| {r['budget']} | {method} | {r['images']:,} | {r['bytes']:,} | {r['bytes'] / 1e6:.2f} | "
                     f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {r['epochs']} |")
    lines += ["", "Budgets (bytes): " + ", ".join(f"{_budget_label(k, shared)}: {v:,}" for k, v in budgets.items()),
              "Paper (IT-GAN, ConvNet-3): " + ", ".join(f"{k} {a}-{b} %" if a != b else f"{k} {a} %"
                                                          for k, (a, b) in paper.items())]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(records, out / f"{stem}.png", budgets, paper, shared)
    plot_passes(records, out / f"{stem}-passes.png")


def _budget_label(key: str, shared: dict[str, str]) -> str:
    """``100`` -> 100/class, ``all`` -> whole set; a shared-generator budget (a key of ``shared``) is labelled as the
    budget it counts without its generator: ``100-shared`` -> 100/class, generator shared."""
    if key in shared:
        return _budget_label(shared[key], {}) + ", generator shared"
    return "whole set" if key == "all" else f"{key}/class"


def passes(record: dict) -> int | None:
    """How many condensation passes a latentds-from-samples cell ran: 0 for GAN samples, the encode's
    ``condense.iterations`` for lds_prior and its curve cells, None for every other method."""
    base = record["method"].split("+")[0]
    if base == "gan":
        return 0
    if base != "lds_prior" and not CURVE.fullmatch(base):
        return None
    given = [o.split("=", 1)[1] for o in (record.get("encode") or {}).get("overrides", [])
             if o.startswith("condense.iterations=")]
    return int(given[-1]) if given else None


def passes_curve(records: list[dict]) -> dict[tuple[str, str], list[tuple[int, dict]]]:
    """(generator tag, budget) -> [(passes, record)] by passes, where a curve cell was run: GAN samples (0 passes)
    and lds_prior's cells, finished or running."""
    series: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for r in records:
        n = passes(r)
        if n is not None and r.get("accs"):
            series.setdefault((r["method"].partition("+")[2], r["budget"]), []).append((n, r))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in sorted(series.items())
            if any(CURVE.fullmatch(r["method"].split("+")[0]) for _, r in v)}


def plot_passes(records: list[dict], path: Path) -> None:
    """Accuracy against condensation passes (symlog: 0 is the samples themselves), one line per generator and
    budget, finished points with their seed spread, running ones hollow."""
    series = passes_curve(records)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not series:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, ((generator, budget), pts) in enumerate(series.items()):
        colour = f"C{i}"
        done = [(n, r) for n, r in pts if not r.get("partial")]
        ax.errorbar([n for n, _ in done], [r["acc_mean"] for _, r in done], [r["acc_std"] for _, r in done],
                    marker="o", capsize=3, color=colour, label=f"{budget}/class, generator {generator or 'benchmark'}")
        for n, r in pts:
            if r.get("partial"):
                ax.plot(n, _mean(r), marker="o", mfc="none", color=colour, ls="none")
                ax.annotate(f"{len(r['accs'])}/{r['seeds']} seeds", (n, _mean(r)), xytext=(5, -11),
                            textcoords="offset points", fontsize=7)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("condensation passes from z ~ N(0, I) (0: the GAN's samples)")
    ax.set_ylabel("ConvNet-3 test accuracy on CIFAR-10 (%)")
    ax.set_title("What condensation passes buy (same SGD steps per cell; mean ± std over seeds)", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean(record: dict) -> float:
    """A cell's mean accuracy over the seeds it has so far (a running cell's point)."""
    return sum(record["accs"]) / len(record["accs"])


def _families(records: list[dict]) -> dict[str, list[dict]]:
    """Finished and running cells by family (JPEG mosaics of every quality are one family, lds_prior and its
    shorter-pass curve cells another), the best point per budget of each (JPEG: the best quality at that budget);
    a running cell's point is the mean of its seeds so far."""
    families: dict[str, dict[str, dict]] = {}
    for r in records:
        if not r.get("accs") or r["method"] == "real_all":
            continue
        fam = r["method"].rsplit("_q", 1)[0] if "_q" in r["method"] else r["method"]
        fam = CURVE.sub("lds_prior", fam)  # a curve cell is lds_prior with fewer passes: one family, its best drawn
        fam += SHARED if r.get("generator_shared") else ""
        best = families.setdefault(fam, {}).get(r["budget"])
        if best is None or _mean(r) > _mean(best):
            families[fam][r["budget"]] = r
    return {fam: sorted(rs.values(), key=lambda r: r["bytes"]) for fam, rs in sorted(families.items())}


COLOURS = {"jpeg_mosaic": "C1", "jpeg_file": "C5", "png": "C7", "dm_mosaic": "C8", "lds_int8": "C3", "lds_fp16": "C2",
           "lds_fp32": "C6", "inversion": "C0", "gan": "C9", "lds_long": "C4", "lds_prior": "k"}


SHARED = " (generator not counted)"  # the family suffix of latentds' rows at a shared-generator budget


def _style(family: str) -> tuple[str, str, str]:
    """A family's colour, marker and line, the same in every redraw whatever else is recorded: another generator's
    cells (``lds_int8+NAME``) take their method's colour with square markers and a dashed line; the same files
    counted without their generator, diamonds."""
    method, _, generator = family.removesuffix(SHARED).partition("+")
    marker = "D" if family.endswith(SHARED) else "s" if generator else "o"
    return COLOURS.get(method, "0.5"), marker, "--" if generator else "-"


def plot(records: list[dict], path: Path, budgets: dict[str, int], paper: dict[str, tuple[float, float]],
         shared: dict[str, str]) -> None:
    """Accuracy against file size on a log axis: the budgets as vertical lines, the paper's IT-GAN figures as
    horizontal bands, finished cells filled with their seed spread, running cells hollow with their seed count,
    and the whole real training set (the ceiling) as a star."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, size in budgets.items():
        ax.axvline(size / 1e6, ls=":", color="grey", lw=1)
        ax.annotate(_budget_label(name, shared), (size / 1e6, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=8)
    for name, (lo, hi) in paper.items():
        ax.axhspan(lo - 0.15, hi + 0.15, color="tab:grey", alpha=0.15, lw=0)
        ax.annotate(f"paper, IT-GAN {name} (its own file size)", (0.995, hi), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=7, color="dimgrey")
    labelled: list[tuple[int, int]] = []  # (images, bytes): points side by side with one image count get one label
    for i, (fam, pts) in enumerate(_families(records).items()):
        colour, marker, line = _style(fam)
        done = [r for r in pts if not r.get("partial")]
        if done:
            ax.errorbar([r["bytes"] / 1e6 for r in done], [r["acc_mean"] for r in done],
                        [r["acc_std"] for r in done], marker=marker, ls=line, capsize=3, color=colour, label=fam)
        running = [r for r in pts if r.get("partial")]
        for r in pts:
            note = f"{r['images']:,} img"
            if r.get("partial"):  # one legend entry per family, only where it has no finished point to carry it
                ax.plot(r["bytes"] / 1e6, _mean(r), marker=marker, mfc="none", color=colour, ls="none",
                        label=f"{fam} (running)" if not done and r is running[0] else None)
                note += f", {len(r['accs'])}/{r['seeds']} seeds"
            elif any(n == r["images"] and abs(b - r["bytes"]) < 0.2 * b for n, b in labelled):
                continue
            labelled.append((r["images"], r["bytes"]))
            ax.annotate(note, (r["bytes"] / 1e6, _mean(r)), xytext=(5, 4 if i % 2 == 0 else -11), textcoords="offset points",
                        fontsize=7)  # neighbouring families label above and below their points
    for r in (r for r in records if r["method"] == "real_all" and r.get("accs")):
        ax.plot(r["bytes"] / 1e6, _mean(r), marker="*", ms=12, color="black", ls="none",
                mfc="none" if r.get("partial") else "black", label="whole real set, JPEG files (ceiling)")
    ax.set_xscale("log")
    ax.set_xlim(min(budgets.values()) / 1e6 * 0.6, 60)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("bytes shipped (MB, log scale)")
    ax.set_ylabel("ConvNet-3 test accuracy on CIFAR-10 (%)")
    ax.set_title("Accuracy per byte (same SGD steps for every cell, at most 300 epochs; mean ± std over seeds)", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
