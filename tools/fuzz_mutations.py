"""How tools/fuzz_lds.py mutates a valid .lds: byte-level edits and structure-aware, re-signed manifest edits.

Each mutation kind (``KINDS``) takes the bytes of a small valid file and returns a hostile variant; the
structure-aware ones change one field of the manifest (type swapped, extreme number, hostile Unicode, deep
nesting, empty container, deleted, duplicated, an unknown field added) and sign the result again with a correct
manifest sha256, as a hostile sender would. ``base_file`` writes the valid starting point.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import struct
from pathlib import Path

HOSTILE_VALUES = [0, -1, 2**31, 2**63, 2**64 + 5, 10**400, 1e30, -1e-9, float("nan"), True, None, "x", "\x1b[2J",
                  [], [1, 2], {}, {"a": 1}, "F32", [[[[[[]]]]]]]
EXTREME_NUMBERS = [1e308, -1e308, 5e-324, 1e-300, -0.0, 0, -1, 2**31, 2**63, -(2**63), 2**64, 10**100, 10**400,
                   1.5, 0.1, 65537, 1e-9, 1e15]
UNICODE = ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "\x9b31m", "\x07\x08\x7f",
           "\u202etxt.exe", "\ud800", "\x00", "a" * 100_000, "é" * 300, "\r\n", "🙂" * 60, "", " 1 . 0 ", "１.０"]
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t and \n
SERVER_MODES = ("ok", "ok", "ok", "bad-status", "many-headers", "huge-range", "broken-chunked", "reason-escape",
                "redirect-offsite", "not-206")


def base_file(path: Path, seed: int = 0) -> bytes:
    """A tiny valid .lds whose provenance holds every field the writers record (so every one gets mutated)."""
    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)  # the same generator in both base files: they merge
    g = create_model("biggan", num_classes=3, width=1, latent_dim=8, image_size=16, channels=1).eval()
    gen = torch.Generator().manual_seed(seed)
    prov = {"source": {"name": "fake", "fingerprint": "ab" * 32, "num_images": 30, "bytes": 4096},
            "method": "fuzz base", "selection": {"ipc": 3, "num_latents": 10, "seed": 0},
            "encode_config": {"gan": {"width": 1, "lr": 0.0002}, "ipc": 3}, "losses": {"condense": {"loss_curve": [1.0, 0.5]}},
            "run": {"timing_s": {"total": 1.5}}, "release": {"generator_file": "g.pth", "latents_key": None},
            "parts": [{"file": "a.lds", "sha256": "cd" * 32, "rows": [0, 5], "latent_dtype": "F16",
                       "provenance": {"source": {"name": "part"}}}]}
    out = save_lds(path, g, torch.randn(10, 8, generator=gen), torch.arange(10) % 3, ["a", "b", "c"],
                   image_spec([0.5], [0.25], (1, 16, 16), (-1.0, 1.0)), prov, latent_dtype=torch.float16)
    return out.read_bytes()


def split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict | str, data: bytes) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header, allow_nan=True)).encode("utf-8", "surrogatepass")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def paths(obj, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            yield from paths(v, (*prefix, i))


def set_path(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _get_path(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _nested(rng: random.Random) -> object:
    depth = rng.choice([5, 20, 63, 64, 65, 200])
    value: object = rng.choice([[], {}, 1, "x"])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _nodes(obj: object, limit: int = 2_000_000) -> int:
    """JSON nodes in ``obj`` (shared references counted each time, as json.dumps writes them), stopping at ``limit``."""
    count, stack = 0, [obj]
    while stack and count < limit:
        v = stack.pop()
        count += 1
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return count


def _structured(manifest: dict, rng: random.Random) -> None:
    """One structure-aware edit of one manifest field (any depth: provenance and extra fields included)."""
    choices = [p for p, _ in paths(manifest) if p]
    path = rng.choice(choices)
    op = rng.randrange(9)
    parent = _get_path(manifest, path[:-1])
    if op == 0:  # type swapped
        value = rng.choice(["text", 7, 2.5, [1, "a"], {"x": 1}, None, True, False])
    elif op == 1:
        value = rng.choice(EXTREME_NUMBERS)
        if rng.random() < 0.3:  # a list of them where a list of numbers is expected
            value = [value] * rng.choice([0, 1, 2, 3, 1000])
    elif op == 2:
        value = rng.choice(UNICODE)
    elif op == 3:
        value = _nested(rng)
    elif op == 4:
        value = rng.choice([[], {}, "", [[]], [{}]])
    elif op == 5:  # deleted
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and parent:
            parent.pop(path[-1] if path[-1] < len(parent) else -1)
        return
    elif op == 6:  # an unknown extra field beside it
        target = parent if isinstance(parent, dict) else manifest
        target[rng.choice(UNICODE[:8] + ["extra", "__proto__", ""])] = rng.choice(HOSTILE_VALUES + UNICODE[:5])
        return
    elif op == 7:  # a list made long, or an object given many keys
        old = _get_path(manifest, path)
        value = [old] * rng.choice([2, 100, 10_000]) if rng.random() < 0.5 else {f"k{i}": old for i in range(1000)}
    else:
        value = copy.deepcopy(rng.choice(HOSTILE_VALUES))
    set_path(manifest, path, value)


def _zst(raw: bytes, rng: random.Random) -> bytes:
    """``raw`` in a zstd frame, sometimes with a hostile frame header (declared size) or tail."""
    import zstandard

    size = len(raw)
    if rng.random() < 0.5:  # the inner header's offsets lie about the size
        header, data = split(raw)
        name = rng.choice([k for k in header if k != "__metadata__"])
        header[name]["data_offsets"][1] = rng.choice([float("inf"), 1e300, -1, 2**64, "x", header[name]["data_offsets"][1] + 8])
        raw = join(header, data)
        size = len(raw)
    declared = rng.choice([size, size, size + 1, max(size - 1, 0), 2**30, 2**33])
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
    frame = bytearray(cctx.compress(raw))
    if declared != size:  # rewrite the frame header's content size field (FCS, 4 or 8 bytes after the descriptor)
        desc = frame[4]
        fcs_flag, single = desc >> 6, (desc >> 5) & 1
        width = [1 if single else 0, 2, 4, 8][fcs_flag]
        pos = 5 + (0 if single else 1) + [0, 1, 2, 4][desc & 3]
        if width >= 4 and declared < 2 ** (8 * width):
            frame[pos : pos + width] = declared.to_bytes(width, "little")
    if rng.random() < 0.1:
        frame += bytes(rng.randrange(1, 16))
    return bytes(frame)


KINDS = ("bit-flips", "truncate-or-extend", "header-value", "manifest-value-resigned", "generator-args-resigned",
         "spliced-json", "manifest-structure-resigned", "zst-wrapped")


def mutate(raw: bytes, rng: random.Random, kind: int) -> bytes:
    if kind == 0:  # bit flips
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 1:  # truncation or extension
        return raw[: rng.randrange(len(raw))] if rng.random() < 0.7 else raw + bytes(rng.randrange(1, 64))
    if kind == 7:
        inner = mutate(raw, rng, rng.choice([3, 6, 6])) if rng.random() < 0.5 else raw
        return _zst(inner, rng)
    header, data = split(raw)
    manifest = json.loads(header["__metadata__"]["latentds.manifest"])
    if kind in (2, 3):  # a header value replaced (kind 2) or a manifest value replaced and re-signed (kind 3)
        target = header if kind == 2 else manifest
        choices = [p for p, _ in paths(target) if p and p[0] != "__metadata__"]
        set_path(target, rng.choice(choices), copy.deepcopy(rng.choice(HOSTILE_VALUES)))
    elif kind == 4:  # manifest keys removed, generator args scaled
        args = manifest["generator"]["args"]
        key = rng.choice(sorted(args))
        args[key] = rng.choice([0, 1, 7, 10**6, 2**40, -3, args[key]])
        if rng.random() < 0.3:
            manifest.pop(rng.choice(sorted(manifest)), None)
    elif kind == 5:  # deep nesting or long numbers spliced into the header text
        text = json.dumps(header)
        cut = rng.randrange(len(text))
        junk = rng.choice(["[" * 50_000, "9" * 6000, '"\\ud800"', "{" * 3000, "1e999", "1e400", "-1e400"])
        return join(text[:cut] + junk + text[cut:], data)
    else:  # kind 6: one to three structure-aware edits
        for _ in range(rng.choice([1, 1, 2, 3])):
            _structured(manifest, rng)
    if kind in (3, 4, 6):
        # Repeated lengthening can nest 10,000 x 10,000 shared references: written out, gigabytes (the fuzzer's own
        # json.dumps was OOM-killed at 22 GB on input 26,795 of seed 0). Past 2 M nodes the manifest is written as
        # what it would be, a text far over the 8 MiB bound, without expanding it.
        big = _nodes(manifest) >= 2_000_000
        text = '{"format": "latentds", "pad": "' + "x" * (9 << 20) + '"}' if big else json.dumps(manifest, allow_nan=True)
        header["__metadata__"] = {"latentds.manifest": text,
                                  "latentds.manifest_sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}
    return join(header, data)
