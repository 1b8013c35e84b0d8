"""A typed schema for the whole manifest: optional and provenance fields included, not only what decoding needs.

``manifest.validate_manifest`` checks the fields a reader relies on; :func:`check_schema` then checks every field
the spec names, wherever it sits: its JSON type, the range of a number, the length of a string or list, the
keys of an object. Unknown extra fields stay allowed (forward compatibility, spec section 4), bounded only by
the manifest's size and nesting depth (``header.MAX_JSON_DEPTH``), and are shown escaped by every printer.
A violation is a :class:`ManifestError` naming the field's path, what it holds (escaped, cut short) and what is
allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from latentds.errors import ManifestError
from latentds.format.render import safe

__all__ = ["MANIFEST", "Schema", "check_schema"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
U63 = 2**63


class Schema:
    """One node of the schema: ``problem(value)`` is None when ``value`` fits, else what is allowed."""

    def problem(self, value: Any, path: str, where: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, value: Any, path: str, where: str) -> None:
        allowed = self.problem(value, path, where)
        if allowed is not None:
            raise ManifestError(f"{where}: manifest field '{safe(path, 80)}' must be {allowed}, found "
                                f"{safe(value, 60)}; the file is corrupt or was not written by a latentds writer")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Int(Schema):
    lo: int = 0
    hi: int = U63  # exclusive

    def problem(self, value: Any, path: str, where: str) -> str | None:
        ok = _is_int(value) and self.lo <= value < self.hi
        return None if ok else f"an integer in [{self.lo}, {'2**63' if self.hi == U63 else self.hi})"


@dataclass(frozen=True)
class Num(Schema):
    lo: float = -1e300
    hi: float = 1e300

    def problem(self, value: Any, path: str, where: str) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            ok = ok and math.isfinite(value) and self.lo <= value <= self.hi
        except OverflowError:  # a 400-digit integer
            ok = False
        return None if ok else f"a finite number in [{self.lo:g}, {self.hi:g}]"


@dataclass(frozen=True)
class Str(Schema):
    max_len: int = 1024
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()

    def problem(self, value: Any, path: str, where: str) -> str | None:
        if self.choices:
            return None if value in self.choices and isinstance(value, str) else f"one of {', '.join(self.choices)}"
        ok = isinstance(value, str) and len(value) <= self.max_len
        if ok and self.pattern is not None:
            ok = bool(self.pattern.fullmatch(value))
        return None if ok else ("a lowercase hex sha256" if self.pattern is _HEX64 else
                                f"a string of at most {self.max_len:,} characters")


@dataclass(frozen=True)
class Bool(Schema):
    def problem(self, value: Any, path: str, where: str) -> str | None:
        return None if isinstance(value, bool) else "true or false"


@dataclass(frozen=True)
class Null(Schema):
    def problem(self, value: Any, path: str, where: str) -> str | None:
        return None if value is None else "null"


@dataclass(frozen=True)
class Either(Schema):
    options: tuple[Schema, ...]

    def problem(self, value: Any, path: str, where: str) -> str | None:
        found = [o.problem(value, path, where) for o in self.options]
        return None if None in found else " or ".join(str(f) for f in found)


@dataclass(frozen=True)
class Anything(Schema):
    """Any JSON value (its depth is bounded when the manifest is parsed)."""

    def problem(self, value: Any, path: str, where: str) -> str | None:
        return None


@dataclass(frozen=True)
class List(Schema):
    item: Schema = field(default_factory=Anything)
    max_len: int = 1 << 20
    length: int | None = None

    def problem(self, value: Any, path: str, where: str) -> str | None:
        if not isinstance(value, list) or len(value) > self.max_len or (self.length is not None and len(value) != self.length):
            n = f"{self.length}" if self.length is not None else f"at most {self.max_len:,}"
            return f"a list of {n} items"
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]", where)
        return None


@dataclass(frozen=True)
class Obj(Schema):
    """An object whose named fields have the given schemas (when present); other keys are allowed."""

    fields: Mapping[str, Schema] = field(default_factory=dict)
    lazy: tuple[str, ...] = ()  # fields whose schema is this object's own (a merged file's parts' provenance)

    def problem(self, value: Any, path: str, where: str) -> str | None:
        if not isinstance(value, dict):
            return "an object"
        for key, schema in self.fields.items():
            if key in value:
                schema.check(value[key], f"{path}.{key}" if path else key, where)
        for key in self.lazy:
            if key in value:
                self.check(value[key], f"{path}.{key}" if path else key, where)
        return None


_TEXT = Str(1024)
_HEX = Str(64, _HEX64)
_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")

_SOURCE = Obj({"name": _TEXT, "fingerprint": Str(256), "num_images": Int(), "bytes": Either((Int(), Null()))})
_RELEASE = Obj({"generator_file": _TEXT, "generator_sha256": _HEX, "latents_file": _TEXT, "latents_sha256": _HEX,
                "latents_key": Either((_TEXT, Null())), "labels_from": _TEXT, "normalization": _TEXT})


@dataclass(frozen=True)
class _Provenance(Obj):
    """Provenance: the writers' fields typed; a merged file's parts each carry their input's provenance."""

    def problem(self, value: Any, path: str, where: str) -> str | None:
        found = super().problem(value, path, where)
        if found is None and isinstance(value.get("parts"), list):
            for i, part in enumerate(value["parts"]):
                _PART.check(part, f"{path}.parts[{i}]", where)
                if isinstance(part, dict) and "provenance" in part:
                    self.check(part["provenance"], f"{path}.parts[{i}].provenance", where)
        return found


_PART = Obj({"file": Str(4096), "sha256": _HEX, "rows": List(Int(), length=2), "latent_dtype": Str(choices=_DTYPES),
             "provenance": Obj()})
PROVENANCE = _Provenance({
    "source": _SOURCE, "release": _RELEASE, "tool": _TEXT, "torch": _TEXT, "created": _TEXT, "python": _TEXT,
    "method": _TEXT, "generator_sha256": _HEX, "parts": List(Obj(), max_len=1 << 16), "encode_config": Obj(),
    "losses": Obj(), "run": Obj(), "selection": Obj(),
})
_TENSOR = Obj({"dtype": Str(choices=_DTYPES), "shape": List(Int(), max_len=8), "sha256": _HEX})

#: The manifest's schema beyond what ``validate_manifest`` requires (spec/FORMAT.md section 4 lists every field).
MANIFEST = Obj({
    "format": Str(64),
    "format_version": Str(16),
    "num_classes": Int(1, 2**31),
    "latents": Obj({"encoding": Str(64), "scale": List(Num(0, 1e4), max_len=1 << 20)}),
    "generator": Obj({
        "arch": Str(128),
        "args": Obj(),
        "conditioning": Str(64),
        "truncation": Null(),
        "param_count": Int(),
        "stored_numel": Int(),
    }),
    "provenance": PROVENANCE,
    "integrity": Obj({"algorithm": Str(16), "latents_chunk_rows": Int(1, 2**31),
                      "latents_chunks": List(_HEX, max_len=1 << 20)}),
})


def check_schema(manifest: dict[str, Any], where: str) -> None:
    """Raise ManifestError unless every field the spec names has its type, range and length."""
    MANIFEST.check(manifest, "", where)
    tensors = manifest.get("integrity", {}).get("tensors")
    if isinstance(tensors, dict):
        for name, entry in tensors.items():
            _TENSOR.check(entry, f"integrity.tensors.{name}", where)
    args = manifest.get("generator", {}).get("args")
    if isinstance(args, dict):
        for key, value in args.items():  # factory arguments: scalars or short lists, never deep structures
            _ARG.check(value, f"generator.args.{key}", where)


_ARG = Either((Int(-U63, U63), Num(), Bool(), Str(256), Null(), List(Either((Int(-U63, U63), Num(), Bool(), Str(256))), max_len=64)))
