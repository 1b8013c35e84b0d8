"""The end of an encode run: the .lds (generator + latents + provenance) or, for the DM baseline, an .npz."""

from __future__ import annotations

import io
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentds.encoding.workdir import Run, duration, json_safe
from latentds.models import generator_contract

__all__ = ["write_lds", "write_pixels"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}


def write_lds(
    run: Run, out: Path, work: Any, generator: nn.Module, latents: torch.Tensor, losses: dict[str, Any],
    record_source_path: bool = False,
) -> Path:
    """Write the .lds: generator, latents, labels, classes, image spec and provenance (``work``: pipeline.Work).
    The source is recorded by kind, name and content hash; its full local path only with ``record_source_path``."""
    from latentds.lds import image_spec, save_lds

    cfg, data, group = run.cfg, run.data, run.group
    clock = time.perf_counter
    t0 = clock()
    n = len(work.selected)
    provenance = {
        "method": "IT-GAN (GAN inversion + distribution-matching condensation of latents)",
        "source": data.provenance(with_path=record_source_path),
        "selection": {"ipc": cfg.ipc, "num_latents": n, "seed": cfg.seed},
        "encode_config": json.loads(json.dumps(asdict(cfg))),
        "losses": json_safe({
            "gan": _drop_keys(losses["gan"], ("wall_time_s", "cached")),
            "classifier": _drop_keys(losses["classifier"], ("wall_time_s", "cached")),
            "invert": _summarize_invert(losses["invert"]),
            "condense": _summarize_condense(losses["condense"]),
        }),
        "python": platform.python_version(),
    }
    provenance["run"] = run.run_info()  # everything here depends on the machine and on resumes; the rest does not
    if group.distributed:
        provenance["run"]["distributed"] = {
            "world_size": group.world_size, "backend": "gloo",
            "units_by_rank": [sum(o == r for o in work.unit_owner.values()) for r in range(group.world_size)],
        }
    image = image_spec(run.mean, run.std, data.image_shape, generator_contract(generator).output_range)
    path = save_lds(out, generator, latents, work.labels, data.classes, image, provenance, _DTYPES[cfg.latent_dtype],
                    generator_dtype=_DTYPES[cfg.generator_dtype])
    run.log(f"wrote {path} ({n} latents, {cfg.latent_dtype}, generator {cfg.generator_dtype}; "
            f"{path.stat().st_size / 2**20:.2f} MiB) in "
            f"{duration(clock() - run.started)}; write {clock() - t0:.1f} s; "
            f"peak RSS {provenance['run']['memory']['peak_rss_mib']:.0f} MiB")
    return path


def write_pixels(run: Run, out: Path, work: Any, images: torch.Tensor) -> Path:
    """The DM baseline's result: the condensed images as uint8 (N, H, W, C) in an .npz, with labels and classes."""
    from latentds.format.writer import atomic_write

    m = torch.tensor(run.mean).view(1, -1, 1, 1)
    s = torch.tensor(run.std).view(1, -1, 1, 1)
    pixels = (images * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)  # un-normalized, rounded to 8 bits
    buffer = io.BytesIO()
    np.savez(buffer, images=pixels.permute(0, 2, 3, 1).numpy(), labels=work.labels.numpy().astype(np.int64),
             classes=np.array(run.data.classes))
    path = atomic_write(out, [buffer.getvalue()])
    run.log(f"wrote {path} ({len(images)} condensed images as uint8; {path.stat().st_size / 2**20:.2f} MiB) in "
            f"{duration(time.perf_counter() - run.started)}")
    return path


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"


def _drop_keys(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _summarize_invert(units: list[dict[str, Any]]) -> dict[str, Any]:
    """Image-weighted means of the units' losses, overall and per class, and the summed time."""
    keys = ("initial_recon_mse", "final_recon_mse", "initial_feature_loss", "final_feature_loss")

    def mean(rows: list[dict[str, Any]]) -> dict[str, float]:
        total = sum(r["num_images"] for r in rows) or 1
        return {k: sum(r[k] * r["num_images"] for r in rows) / total for k in keys}

    classes = sorted({u["class"] for u in units})
    summary: dict[str, Any] = mean(units)
    summary["per_class"] = {str(c): mean([u for u in units if u["class"] == c]) for c in classes}
    summary["units"] = len(units)
    summary["seconds"] = sum(u["seconds"] for u in units)
    return summary


def _summarize_condense(units: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean loss curve over the units that ran as many passes as the first (``condense.pass_budget`` gives a
    class of other size another count) and per-unit first/last/eval figures."""
    starts = units[0].get("loss_curve_start_iteration", []) if units else []
    curves = [u["loss_curve"] for u in units if u.get("loss_curve") and u.get("loss_curve_start_iteration", []) == starts]
    length = min((len(c) for c in curves), default=0)
    mean_curve = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
    keep = ("first_loss", "last_loss", "eval_loss_before", "eval_loss_after", "moved_fraction", "num_latents", "passes")
    return {
        "loss_curve": mean_curve,
        "loss_curve_start_iteration": starts[:length],
        "units": [{"unit": u["unit"], **{k: u.get(k) for k in keep}} for u in units],
        "moved_fraction": min((u["moved_fraction"] for u in units), default=1.0),
        "seconds": sum(u["seconds"] for u in units),
    }
