"""The per-byte benchmark's outputs (bench/per_byte.py): the records, a Markdown table and the accuracy-per-byte plot."""

from __future__ import annotations

import json
from pathlib import Path


def write_outputs(records: list[dict], out: Path, stem: str, budgets: dict[str, int],
                  paper: dict[str, tuple[float, float]]) -> None:
    """The records as JSON, the table (per-byte-*.md) and the plot (per-byte-*.png): a running cell is listed with
    its seeds so far, never plotted; the plot keeps the best point per budget of each family (JPEG's best quality)."""
    (out / f"{stem}.json").write_text(json.dumps(records, indent=1) + "\n")
    lines = ["# Accuracy per byte on CIFAR-10 (ConvNet-3, real test split)", "",
             "| budget | method | images | bytes | MB | acc (%) | epochs |", "|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["bytes"], r["method"])):
        if r.get("partial"):
            lines.append(f"| {r['budget']} | {r['method']} | {r['images']:,} | {r['bytes']:,} | {r['bytes'] / 1e6:.2f} | "
                         f"running: seeds {', '.join(f'{a:.2f}' for a in r['accs'])} of {r['seeds']} | {r['epochs']} |")
            continue
        if r["acc_mean"] is None:
            lines.append(f"| {r['budget']} | {r['method']} | 0 | - | - | does not fit in {r['budget_bytes']:,} bytes | - |")
            continue
        lines.append(f"| {r['budget']} | {r['method']} | {r['images']:,} | {r['bytes']:,} | {r['bytes'] / 1e6:.2f} | "
                     f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {r['epochs']} |")
    lines += ["", "Budgets (bytes): " + ", ".join(f"{k}/class: {v:,}" if k != "all" else f"all: {v:,}"
                                                  for k, v in budgets.items()),
              "Paper (IT-GAN, ConvNet-3): " + ", ".join(f"{k} {a}-{b} %" if a != b else f"{k} {a} %"
                                                          for k, (a, b) in paper.items())]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    families: dict[str, list[dict]] = {}
    for r in (r for r in records if r["acc_mean"] is not None and not r.get("partial")):
        families.setdefault(r["method"].rsplit("_q", 1)[0] if "_q" in r["method"] else r["method"], []).append(r)
    for fam, rs in sorted(families.items()):
        best: dict[str, dict] = {}
        for r in rs:  # the best point per budget (JPEG: the best quality at that budget)
            if r["budget"] not in best or r["acc_mean"] > best[r["budget"]]["acc_mean"]:
                best[r["budget"]] = r
        pts = sorted(best.values(), key=lambda r: r["bytes"])
        ax.errorbar([r["bytes"] / 1e6 for r in pts], [r["acc_mean"] for r in pts], [r["acc_std"] for r in pts],
                    marker="o", capsize=3, label=fam)
    ax.set_xscale("log")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("ConvNet-3 test accuracy (%)")
    ax.grid(True, alpha=0.3)
    if families:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=120)
