"""What each cell and artefact costs, estimated from measured per-step figures (--plan)."""

from __future__ import annotations

from cifar10_bench.runlog import fmt_ipc, fmt_s
from cifar10_bench.settings import (
    COST,
    ENCODE_METHODS,
    GAN_METHODS,
    Cell,
    Settings,
    artifact_name,
    cell_key,
    class_count,
    encode_config,
)


import math
from typing import Any


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

# --- plan ------------------------------------------------------------------------------------------------
def plan(s: Settings, planned: list[Cell], done: dict[tuple, dict[str, Any]], gen_sha: str | None) -> float:
    """Print every step and cell with its estimate (or its measured time when done); return pending seconds."""
    from latentds.encoding import CLASSIFIER_FILE

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

