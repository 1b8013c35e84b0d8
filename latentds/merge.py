"""Merge .lds files that share a generator into one: ``latentds merge A.lds B.lds ... OUT.lds``.

The use: parts of one dataset encoded separately (by class, by machine, or in several sessions) become one
file. The parts must agree on everything a decoder uses: the generator (architecture, arguments and every
stored tensor, compared by the sha256 values in their manifests), the class list, and the image spec. The
merged file keeps the rows in argument order and records each part's file hash, row range and provenance.
Parts that share a row (the same latent with the same label) are refused as overlapping.

Latents of mixed dtypes are stored as float32, the one dtype all three widen to without loss.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from latentds.budget import check_budget
from latentds.errors import MergeError
from latentds.format import file_sha256, spec, write_lds
from latentds.format.outputs import check_output
from latentds.format.render import safe

__all__ = ["generator_digest", "merge"]

MAX_PARTS_JSON = spec.MAX_MANIFEST_BYTES // 2


def generator_digest(manifest: dict[str, Any]) -> str:
    """sha256 naming a stored generator: its architecture, arguments and each tensor's dtype, shape and sha256."""
    gen = manifest["generator"]
    tensors = manifest["integrity"]["tensors"]
    p = spec.GENERATOR_PREFIX
    ident = {
        "arch": gen["arch"],
        "args": gen["args"],
        "tensors": {k: [v["dtype"], v["shape"], v["sha256"]] for k, v in sorted(tensors.items()) if k.startswith(p)},
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _refuse_overlap(readers: list) -> None:
    """Refuse parts that share a (latent, label) row: a file merged with a part of itself, say."""
    seen: dict[bytes, tuple[Path, int]] = {}
    for r in readers:
        lat = r.array(spec.LATENTS)
        lab = r.labels().numpy()
        scale = str(r.manifest["latents"].get("scale", "")).encode()  # int8 codes are a latent only with their scale
        for i in range(len(lat)):
            key = lat[i].tobytes() + int(lab[i]).to_bytes(8, "little") + scale
            if key in seen and seen[key][0] != r.path:
                other, j = seen[key]
                raise MergeError(f"row {i} of {r.path} repeats row {j} of {other} (same latent and label): the parts "
                                 "overlap; merge files that hold different images")
            seen.setdefault(key, (r.path, i))


def _check_memory(readers: list, out: Path) -> None:
    """What merging holds at once, against the budget: every part's latents three times (stored, converted,
    concatenated), one key per row for the overlap check, the labels and the generator twice."""
    rows = sum(r.num_samples for r in readers)
    latent_bytes = sum(r.tensors[spec.LATENTS].nbytes for r in readers)
    gen_bytes = sum(t.nbytes for n, t in readers[0].tensors.items() if n.startswith(spec.GENERATOR_PREFIX))
    need = 3 * latent_bytes + rows * (readers[0].tensors[spec.LATENTS].nbytes // max(readers[0].num_samples, 1) + 136) \
        + 16 * rows + 2 * gen_bytes
    check_budget(f"{out}: merging {len(readers)} files of {rows:,} rows", need,
                 f"{latent_bytes / 2**20:,.1f} MiB of latents, {rows:,} rows, a {gen_bytes / 2**20:,.1f} MiB generator")


def merge(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    latent_dtype: torch.dtype | None = None,
) -> Path:
    """Write the rows of every input, in order, to ``out`` under their shared generator; returns ``out``.

    Every input is verified (all checksums) first. Raises :class:`MergeError` for files that do not fit
    together, naming the first file that differs and how.
    """
    from latentds.lds import open_lds

    paths = [Path(p) for p in inputs]
    out = Path(out)
    if len(paths) < 2:
        raise MergeError(f"merge needs at least two .lds files, got {len(paths)}")
    if any(out.resolve() == p.resolve() for p in paths if p.exists()):
        raise MergeError(f"{out}: the output is also an input; write the merged file somewhere else")
    check_output(out, paths, force=True)  # parent folder, name length, no symbolic link
    readers = []
    try:
        for p in paths:
            readers.append(open_lds(p, verify=True, budget=False))  # merge decodes nothing
        _check_memory(readers, out)
        first = readers[0]
        m0 = first.manifest
        digest0 = generator_digest(m0)
        parts, hashes = [], {}
        row = 0
        for r in readers:
            m = r.manifest
            digest = generator_digest(m)
            if digest != digest0:
                raise MergeError(
                    f"{r.path} and {first.path} were made with different generators ({safe(m['generator']['arch'], 60)} "
                    f"{digest[:12]} vs {safe(m0['generator']['arch'], 60)} {digest0[:12]}); only files that share one "
                    "generator can be merged (re-encode with --generator set to the same file)")
            if m["classes"] != m0["classes"]:
                diff = [f"{i}: '{safe(a, 40)}' vs '{safe(b, 40)}'" for i, (a, b) in enumerate(zip(m["classes"], m0["classes"])) if a != b]
                detail = (f"{len(m['classes'])} vs {len(m0['classes'])} classes" if len(m["classes"]) != len(m0["classes"])
                          else "class " + "; ".join(diff[:3]))
                raise MergeError(f"{r.path} and {first.path} have different class lists ({detail}); "
                                 "labels would not mean the same thing")
            if m["image"] != m0["image"]:
                keys = sorted(k for k in set(m["image"]) | set(m0["image"]) if m["image"].get(k) != m0["image"].get(k))
                raise MergeError(f"{r.path} and {first.path} have different image specs (differ in: {', '.join(safe(k, 40) for k in keys[:8])})")
            sha = file_sha256(r.path)
            if sha in hashes:
                raise MergeError(f"{r.path} is the same file as {hashes[sha]} (sha256 {sha[:12]}); given twice?")
            hashes[sha] = r.path
            parts.append({
                "file": r.path.name,
                "sha256": sha,
                "rows": [row, row + r.num_samples],
                "latent_dtype": r.tensors[spec.LATENTS].dtype,  # I8 for int8 parts
                "provenance": m.get("provenance", {}),
            })
            row += r.num_samples
        _refuse_overlap(readers)
        dtypes = {torch.int8 if r.int8 else r.tensor(spec.LATENTS).dtype for r in readers}
        if latent_dtype is None:  # the parts' storage when they agree (int8 parts: quantized again on the merged scale)
            latent_dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
        latents = torch.cat([r.latents().float() for r in readers])
        labels = torch.cat([r.labels() for r in readers])
        gen = m0["generator"]
        info = {k: v for k, v in gen.items() if k not in ("arch", "args", "conditioning", "truncation", "stored_numel")}
        if len(json.dumps(parts)) > MAX_PARTS_JSON:  # keep the manifest well inside its bound: drop loss curves
            parts = [{**p, "provenance": {k: v for k, v in p["provenance"].items() if k != "losses"}} for p in parts]
        provenance = {"method": "merge", "generator_sha256": digest0, "parts": parts}
        return write_lds(
            out, latents=latents, labels=labels, classes=list(m0["classes"]), generator_arch=gen["arch"],
            generator_args=gen["args"], generator_state=first.generator_state(), image=m0["image"],
            provenance=provenance, generator_info=info, latent_dtype=latent_dtype)
    finally:
        for r in readers:
            r.close()
