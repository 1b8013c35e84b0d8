"""``latentds info``: a file's manifest, sizes and ratios (or, with ``--system``, this machine's plan).

Everything printed comes from a stranger's file, so every value goes through ``format.render``: text escaped,
numbers formatted whatever their size, a field of an unexpected type shown as what it is, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from latentds.format.render import mib, number, safe, shown_json

__all__ = ["cmd_info", "cmd_system", "file_summary"]

EXIT_OK = 0
#: Manifest keys `info` prints on their own lines; any other top-level key is listed, escaped, under "other".
KNOWN_FIELDS = ("format", "format_version", "num_samples", "latent_dim", "num_classes", "classes", "latents", "image",
                "generator", "provenance", "integrity")


def _ratio(r: Any) -> str:
    """'4.00x smaller' or, when the file is the bigger one (a small set with its generator), '5.10x larger'."""
    if not isinstance(r, (int, float)) or not 0 < r < float("inf"):
        return "-"
    return f"{r:.2f}x smaller" if r >= 1 else f"{1 / r:.2f}x larger (the generator dominates at this size)"


def file_summary(path: str) -> dict[str, Any]:
    """Sizes and counts of a .lds, computed from the header alone (nothing decoded)."""
    from latentds.format import spec
    from latentds.lds import open_lds

    with open_lds(path, budget=False) as reader:  # info decodes nothing: a generator too large to run still shows
        m = reader.manifest
        sizes = {"latents": 0, "labels": 0, "generator": 0}
        for name, info in reader.tensors.items():
            key = "generator" if name.startswith(spec.GENERATOR_PREFIX) else name
            sizes[key] = sizes.get(key, 0) + info.nbytes
        counts: list[int | None] = [None] * len(m["classes"])  # remote: the header alone, labels not fetched
        if not reader.is_remote:
            counts = [int(v) for v in _bincount(reader.array(spec.LABELS), len(m["classes"]))]
        disk = reader.file_size if reader.is_remote or reader.local_copy else Path(reader.path).stat().st_size
        image = m["image"]
        raw_pixels = m["num_samples"] * image["channels"] * image["height"] * image["width"]
        summary: dict[str, Any] = {
            "path": str(path),
            "file_bytes": disk,
            "content_bytes": reader.file_size,
            "header_bytes": reader.header_bytes,
            "tensor_bytes": sizes,
            "latent_dtype": reader.tensors[spec.LATENTS].dtype,
            "latent_encoding": m["latents"]["encoding"],
            "bytes_per_sample": disk / m["num_samples"] if m["num_samples"] else None,  # the generator included
            "per_class": dict(zip(m["classes"], counts)),
            "raw_uint8_pixel_bytes": raw_pixels,
            "ratio_vs_raw_pixels": raw_pixels / disk if disk else None,
            "manifest": m,
        }
        source_bytes = (m["provenance"].get("source") or {}).get("bytes")
        if source_bytes:
            summary["source_bytes"] = source_bytes
            summary["ratio_vs_source"] = source_bytes / disk if disk else None
        return summary


def _per_sample(s: dict[str, Any]) -> str:
    """Bytes of file per sample (the generator included) and, when the source's size is known, per source image."""
    if s["bytes_per_sample"] is None:
        return "-"
    text = f"{number(round(s['bytes_per_sample']))} bytes of file per image, generator included"
    source = s["manifest"]["provenance"].get("source") or {}
    n_src = source.get("num_images")
    if s.get("source_bytes") and isinstance(n_src, int) and n_src > 0:
        text += f"; the source: {number(round(s['source_bytes'] / n_src))} bytes per image"
    return text


def _bincount(labels: Any, k: int) -> list[int]:
    import numpy as np

    return np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=k).tolist()


def _lines(s: dict[str, Any]) -> list[tuple[str, str]]:
    m = s["manifest"]
    gen, image, prov = m["generator"], m["image"], m["provenance"]
    counts = list(s["per_class"].values())
    classes = m["classes"]
    params = gen.get("param_count", gen.get("stored_numel", 0))
    lines = [
        ("file", f"{safe(s['path'], 200)} ({mib(s['file_bytes'])}; header {number(s['header_bytes'])} bytes)"),
        ("format", f"{safe(m['format'])} {safe(m['format_version'])}"),
        ("samples", f"{number(m['num_samples'])} latents x {number(m['latent_dim'])} ({s['latent_dtype']}"
                    f"{', int8 codes x a scale per dimension' if s['latent_encoding'] == 'int8' else ''}, "
                    f"{mib(s['tensor_bytes']['latents'])})"),
        ("per sample", _per_sample(s)),
        ("classes", f"{len(classes)}: " + ", ".join(safe(c, 40) for c in classes[:10]) + (" ..." if len(classes) > 10 else "")),
        ("per class", "(not read: labels of a remote file are fetched when decoding)" if None in counts
         else f"{number(min(counts))} .. {number(max(counts))}" if counts else "-"),
        ("generator", f"{safe(gen['arch'], 60)} {shown_json(gen['args'], 200)}, {number(params)} params "
                      f"({mib(s['tensor_bytes']['generator'])})"),
        ("image", f"{number(image['channels'])}x{number(image['height'])}x{number(image['width'])}, "
                  f"mean {shown_json(image['mean'])}, std {shown_json(image['std'])}"),
        ("vs raw pixels", f"{mib(s['raw_uint8_pixel_bytes'])} as uint8 -> {_ratio(s['ratio_vs_raw_pixels'])}"),
    ]
    source = prov.get("source") or {}
    if source:
        text = safe(source.get("name", "?"), 80)
        if isinstance(source.get("kind"), str) and source["kind"] != "named":
            text = f"{safe(source['kind'], 20)} {text}"
        if source.get("fingerprint"):
            text += f" (sha256 {safe(source['fingerprint'], 16)}...)"
        if "ratio_vs_source" in s:
            text += f", {mib(s['source_bytes'])} -> {_ratio(s['ratio_vs_source'])}"
            total = source.get("num_images")
            if total and total != m["num_samples"]:
                text += f" (this file stands for {number(m['num_samples'])} of its {number(total)} images)"
        lines.append(("source", text))
    parts = prov.get("parts") if prov.get("method") == "merge" else None
    if isinstance(parts, list):
        shown = ", ".join(f"{safe(p.get('file', '?'), 60)} {_rows(p.get('rows'))}" for p in parts[:4] if isinstance(p, dict))
        lines.append(("merged from", f"{len(parts)} files: {shown}" + (f" (+{len(parts) - 4} more)" if len(parts) > 4 else "")))
    lines.append(("created", f"{safe(prov.get('created', '?'), 40)} by {safe(prov.get('tool', '?'), 60)}, "
                             f"torch {safe(prov.get('torch', '?'), 40)}"))
    other = [k for k in m if k not in KNOWN_FIELDS]
    if other:
        lines.append(("other fields", "; ".join(f"{safe(k, 40)}: {shown_json(m[k], 80)}" for k in other[:8])
                      + (f" (+{len(other) - 8} more)" if len(other) > 8 else "")))
    return lines


def _rows(rows: Any) -> str:
    """A part's row range as '[start:end]', or whatever it holds, escaped."""
    if isinstance(rows, list) and len(rows) == 2:
        return f"[{number(rows[0])}:{number(rows[1])}]"
    return shown_json(rows, 40)


def cmd_info(args: argparse.Namespace) -> int:
    from latentds.errors import LdsNotFoundError

    if args.system:
        return cmd_system(args)
    if args.file is None:
        raise LdsNotFoundError("latentds info: give a .lds file, or --system for this machine's execution plan")
    s = file_summary(args.file)
    if args.json:  # ensure_ascii: every control character is a \\u escape in the JSON text
        json.dump(s, sys.stdout, indent=2, ensure_ascii=True)
        print()
        return EXIT_OK
    _print_table(_lines(s))
    return EXIT_OK


def _print_table(lines: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {safe(value, 100_000)}")


def cmd_system(args: argparse.Namespace) -> int:
    """`latentds info --system`: this machine, its hardware class and the plan latentds runs with on it."""
    import torch

    from latentds.plan import CLASSES, get_plan, machine_info, measure

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    info = machine_info(device)
    plan = get_plan(device, args.precision)
    report: dict = {"machine": info, "plan": plan.to_dict(), "rule": CLASSES[plan.hardware].evidence}
    if args.measure:
        logging.getLogger("latentds").info("measuring decode and training rates for each precision and memory format (about 15 s)")
        report["measured"] = measure(device)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return EXIT_OK
    hw = info.get("gpu") or info.get("cpu")
    lines = [
        ("device", f"{device}: {hw}" + (f", {info['threads']} threads" if "threads" in info else "")),
        ("bf16 hardware", ("yes" if info["bf16_hardware"] else "no") + (f" ({', '.join(info['bf16_flags'])})" if info.get("bf16_flags") else "")),
        ("torch", f"{info['torch']}" + (f", CUDA {info['cuda']}" if info.get("cuda") else "") + (f", {info['capability']}" if isinstance(info.get("capability"), str) else "")),
        ("hardware class", plan.hardware),
        ("decode", f"{plan.precision}, {'channels_last' if plan.channels_last else 'contiguous'}, chunks of {plan.decode_chunk}"),
        ("training", f"{plan.train_precision}, {'channels_last' if plan.train_channels_last else 'contiguous'}"),
        ("chosen by", "--precision " + plan.requested if plan.requested != "auto" else "the class's rule (auto), not by timing"),
        ("rule's evidence", report["rule"]),
    ]
    for part, figures in report.get("measured", {}).items():
        lines.append((f"measured {part}", ", ".join(f"{k} {v:g}/s" for k, v in figures.items())))
    _print_table(lines)
    return EXIT_OK
