"""The `latentds` command line: a thin shell over the library. ``main(argv) -> exit code``.

Exit codes: 0 success; 1 the input is bad or corrupt (``verify``: the file is corrupt); 2 usage error
(bad arguments, a path that does not exist). Errors print as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentds.version import __version__
from latentds.argtypes import positive_int, zstd_level
from latentds.errors import (
    ConfigError,
    LatentdsError,
    LdsNotFoundError,
    SourceNotFoundError,
    UsageError,
)

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def _ratio(r: float) -> str:
    """'4.00x smaller' or, when the file is the bigger one (a small set with its generator), '5.10x larger'."""
    return f"{r:.2f}x smaller" if r >= 1 else f"{1 / r:.2f}x larger (the generator dominates at this size)"


def _file_summary(path: str) -> dict[str, Any]:
    """Sizes and counts of a .lds, computed from the header alone (nothing decoded)."""
    from latentds.format import spec
    from latentds.lds import open_lds

    with open_lds(path) as reader:
        m = reader.manifest
        sizes = {"latents": 0, "labels": 0, "generator": 0}
        for name, info in reader.tensors.items():
            key = "generator" if name.startswith(spec.GENERATOR_PREFIX) else name
            sizes[key] = sizes.get(key, 0) + info.nbytes
        counts: list[int | None] = [None] * len(m["classes"])  # remote: the header alone, labels not fetched
        if not reader.is_remote:
            counts = [0] * len(m["classes"])
            for y in reader.array(spec.LABELS).tolist():
                counts[y] += 1
        disk = reader.file_size if reader.is_remote else Path(reader.path).stat().st_size
        image = m["image"]
        raw_pixels = m["num_samples"] * image["channels"] * image["height"] * image["width"]
        summary: dict[str, Any] = {
            "path": str(path),
            "file_bytes": disk,
            "content_bytes": reader.file_size,
            "header_bytes": reader.header_bytes,
            "tensor_bytes": sizes,
            "latent_dtype": reader.tensors[spec.LATENTS].dtype,
            "per_class": dict(zip(m["classes"], counts)),
            "raw_uint8_pixel_bytes": raw_pixels,
            "ratio_vs_raw_pixels": raw_pixels / disk if disk else None,
            "manifest": m,
        }
        source_bytes = (m["provenance"].get("source") or {}).get("bytes")
        if source_bytes:
            summary["source_bytes"] = source_bytes
            summary["ratio_vs_source"] = source_bytes / disk
        return summary


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
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    if args.system:
        return cmd_system(args)
    if args.file is None:
        raise LdsNotFoundError("latentds info: give a .lds file, or --system for this machine's execution plan")
    s = _file_summary(args.file)
    if args.json:
        json.dump(s, sys.stdout, indent=2)
        print()
        return EXIT_OK
    m = s["manifest"]
    gen, image, prov = m["generator"], m["image"], m["provenance"]
    counts = list(s["per_class"].values())
    lines = [
        ("file", f"{s['path']} ({_mib(s['file_bytes'])}; header {s['header_bytes']:,} bytes)"),
        ("format", f"{m['format']} {m['format_version']}"),
        ("samples", f"{m['num_samples']:,} latents x {m['latent_dim']} ({s['latent_dtype']}, {_mib(s['tensor_bytes']['latents'])})"),
        ("classes", f"{len(m['classes'])}: " + ", ".join(m["classes"][:10]) + (" ..." if len(m["classes"]) > 10 else "")),
        ("per class", "(not read: labels of a remote file are fetched when decoding)" if None in counts
         else f"{min(counts):,} .. {max(counts):,}" if counts else "-"),
        ("generator", f"{gen['arch']} {json.dumps(gen['args'])}, {gen.get('param_count', gen.get('stored_numel', 0)):,} params ({_mib(s['tensor_bytes']['generator'])})"),
        ("image", f"{image['channels']}x{image['height']}x{image['width']}, mean {image['mean']}, std {image['std']}"),
        ("vs raw pixels", f"{_mib(s['raw_uint8_pixel_bytes'])} as uint8 -> {_ratio(s['ratio_vs_raw_pixels'])}"),
    ]
    source = prov.get("source") or {}
    if source:
        text = f"{source.get('name', '?')}"
        if source.get("fingerprint"):
            text += f" (sha256 {str(source['fingerprint'])[:16]}...)"
        if "ratio_vs_source" in s:
            text += f", {_mib(s['source_bytes'])} -> {_ratio(s['ratio_vs_source'])}"
            total = source.get("num_images")
            if total and total != m["num_samples"]:
                text += f" (this file stands for {m['num_samples']:,} of its {total:,} images)"
        lines.append(("source", text))
    parts = prov.get("parts") if prov.get("method") == "merge" else None
    if isinstance(parts, list):
        shown = ", ".join(f"{p.get('file', '?')} [{p.get('rows', ['?', '?'])[0]}:{p.get('rows', ['?', '?'])[1]}]"
                          for p in parts[:4] if isinstance(p, dict))
        lines.append(("merged from", f"{len(parts)} files: {shown}" + (f" (+{len(parts) - 4} more)" if len(parts) > 4 else "")))
    lines.append(("created", f"{prov.get('created', '?')} by {prov.get('tool', '?')}, torch {prov.get('torch', '?')}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {_printable(value)}")
    return EXIT_OK


def _printable(text: str) -> str:
    """Text from a file, safe for a terminal: control characters escaped, unpaired surrogates replaced."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def cmd_verify(args: argparse.Namespace) -> int:
    from latentds.errors import ChecksumError, LdsError
    from latentds.lds import open_lds

    try:
        with open_lds(args.file) as reader:
            problems = reader.verify()
    except LdsNotFoundError:
        raise
    except LdsError as exc:
        problems = exc.problems if isinstance(exc, ChecksumError) and exc.problems else [str(exc)]
        print(f"{args.file}: CORRUPT: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if problems:
        for p in problems:
            print(f"{args.file}: CORRUPT: {p}", file=sys.stderr)
        return EXIT_BAD_INPUT
    n = len(reader.tensors)
    if not args.quiet:
        print(f"{args.file}: OK ({n} tensors and {len(reader.manifest['integrity']['latents_chunks'])} latent chunks match their sha256)")
    return EXIT_OK


def _refuse_existing(path: str | Path, force: bool) -> None:
    """One policy for every verb that writes a file: an existing output is replaced (atomically) only with --force."""
    if Path(path).exists() and not force:
        raise UsageError(f"{path}: already exists; pass --force to replace it, or choose another output path")


def cmd_export(args: argparse.Namespace) -> int:
    from latentds.export import export

    out = export(args.file, args.out, batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                 overwrite=args.force, fmt=args.format, shard_size=args.shard_size)
    if not args.quiet:
        print(f"wrote {out}")
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from latentds.export import preview

    out = preview(args.file, args.out, per_class=args.per_class, seed=args.seed, device=args.device)
    if not args.quiet:
        print(f"wrote {out}")
    return EXIT_OK


def _byte_bar(path: str, desc: str, quiet: bool):
    from latentds.common import progress_bar

    return progress_bar(None, not quiet, total=Path(path).stat().st_size, desc=desc, unit="B", unit_scale=True)


def cmd_pack(args: argparse.Namespace) -> int:
    from latentds.format import pack
    from latentds.lds import open_lds

    open_lds(args.file).close()  # refuse to wrap something that is not a valid .lds
    out = args.out or args.file + ".zst"
    _refuse_existing(out, args.force)
    with _byte_bar(args.file, "pack", args.quiet) as bar:
        pack(args.file, out, level=args.level, progress=bar.update)
    if not args.quiet:
        before, after = Path(args.file).stat().st_size, Path(out).stat().st_size
        print(f"wrote {out} ({_mib(after)}, {after / before:.1%} of {_mib(before)})")
    return EXIT_OK


def cmd_unpack(args: argparse.Namespace) -> int:
    from latentds.format import unpack
    from latentds.lds import open_lds

    if args.out:
        out = args.out
    elif args.file.endswith(".zst"):
        out = args.file[: -len(".zst")]
    else:
        raise UsageError(f"{args.file}: does not end in .zst; name the output file")
    _refuse_existing(out, args.force)
    with _byte_bar(args.file, "unpack", args.quiet) as bar:
        unpack(args.file, out, progress=bar.update)
    open_lds(out).close()
    if not args.quiet:
        print(f"wrote {out}")
    return EXIT_OK


def cmd_import_itgan(args: argparse.Namespace) -> int:
    from latentds.itgan import import_itgan

    _refuse_existing(args.out, args.force)
    out = import_itgan(args.generator, args.latents, args.labels_from, args.out, latents_key=args.latents_key,
                       root=args.root, download=args.download, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {out} (verified)")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    import torch

    from latentds.merge import merge

    if len(args.files) < 3:  # asked wrongly, like every usage error: exit 2
        raise UsageError("usage: latentds merge A.lds B.lds [...] OUT.lds (at least two inputs and the output)")
    *inputs, out = args.files
    if out.endswith(".zst"):
        raise UsageError(f"{out}: merge writes a plain .lds; compress it afterwards with `latentds pack`")
    _refuse_existing(out, args.force)
    dtype = getattr(torch, args.latent_dtype) if args.latent_dtype else None
    path = merge(inputs, out, latent_dtype=dtype)
    if not args.quiet:
        from latentds.format import LdsReader

        with LdsReader(path) as r:
            print(f"wrote {path}: {r.num_samples} latents from {len(inputs)} files, {r.num_classes} classes, "
                  f"{_mib(path.stat().st_size)}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from latentds.models import list_models

    print("\n".join(list_models()))
    return EXIT_OK


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentds", description="Compressed datasets: a generator plus learned latents, in a .lds file."
    )
    parser.add_argument("--version", action="version", version=f"latentds {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or chatter (also after the verb)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars or chatter")
        return p

    p = add("info", cmd_info, "show a .lds file's manifest, sizes and compression ratios (or --system: this machine)")
    p.add_argument("file", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--system", action="store_true",
                   help="instead of a file: this machine, its bf16 hardware and the execution plan (precision, memory "
                        "format, decode chunk) that latentds uses on its hardware class")
    p.add_argument("--device", default=None, help="with --system: cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="with --system")
    p.add_argument("--measure", action="store_true",
                   help="with --system: also time each precision and memory format here (about 15 s); informational, "
                        "the plan stays its rule")

    p = add("verify", cmd_verify, "check every checksum; exit 0 intact, 1 corrupt, 2 usage error")
    p.add_argument("file")

    p = add("export", cmd_export, "decode everything to an ImageFolder tree (OUT/), OUT.npz, OUT.h5, "
            "WebDataset shards or a Hugging Face datasets folder")
    p.add_argument("file")
    p.add_argument("out")
    p.add_argument("--format", choices=("folder", "npz", "h5", "webdataset", "hf"), default=None,
                   help="default: from OUT's suffix (.npz, .h5, none: folder); webdataset and hf write folders")
    p.add_argument("--shard-size", type=positive_int, default=10_000, help="images per WebDataset shard")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    p = add("preview", cmd_preview, "save a PNG grid of decoded samples, one row per class")
    p.add_argument("file")
    p.add_argument("out")
    p.add_argument("--per-class", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")

    p = add("pack", cmd_pack, "compress FILE.lds into FILE.lds.zst (zstd with checksum) for transport")
    p.add_argument("file")
    p.add_argument("out", nargs="?")
    p.add_argument("--level", type=zstd_level, default=10, help="zstd level 1..22 (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    p = add("unpack", cmd_unpack, "decompress FILE.lds.zst into FILE.lds")
    p.add_argument("file")
    p.add_argument("out", nargs="?")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    p = add("merge", cmd_merge, "combine .lds files that share a generator into one (rows in argument order)")
    p.add_argument("files", nargs="+", metavar="FILE", help="two or more .lds files, then the output file")
    p.add_argument("--latent-dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="storage dtype of the merged latents (default: the inputs' if they agree, else float32)")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")

    p = add("import-itgan", cmd_import_itgan,
            "convert the official IT-GAN release (G_Pretrained_*.pth + EfficientGAN_final_*.pt) into a verified .lds")
    p.add_argument("generator", help="G_Pretrained_<dataset>_exp<k>.pth (BigGAN state dict)")
    p.add_argument("latents", help="EfficientGAN_final_...pt (z_eff_all) or GANInversion_final_...pt (z_inverse_all)")
    p.add_argument("out", help="the .lds to write")
    p.add_argument("--labels-from", required=True, metavar="SOURCE",
                   help="the dataset the latents follow row for row: cifar10, cifar100, or any source latentds reads")
    p.add_argument("--latents-key", default=None, help="the dict key of the latents (default: z_eff_all or z_inverse_all)")
    p.add_argument("--root", default=None, help="where cifar10/cifar100 live (default: the user cache dir)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=False,
                   help="fetch cifar10/cifar100 into --root when missing (needs a network)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    add("models", cmd_models, "list registered architectures")

    from latentds.encoding.commands import register as register_encode
    from latentds.evaluation.commands import register as register_eval

    register_encode(add)
    register_eval(add)
    return parser


class _LogHandler(logging.Handler):
    """The library's log records on stderr, one line each, written around a live progress bar (tqdm.write)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
            if record.levelno >= logging.WARNING:
                line = f"latentds: {record.levelname.lower()}: {line}"
            if "tqdm" in sys.modules:  # a bar may be on screen: print above it, not through it
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def configure_logging(quiet: bool) -> None:
    """Send the ``latentds`` logger to stderr: info and up, or warnings only with ``-q``."""
    logger = logging.getLogger("latentds")
    if not any(isinstance(h, _LogHandler) for h in logger.handlers):
        logger.addHandler(_LogHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(bool(getattr(args, "quiet", False)))
    try:
        return int(args.func(args))
    except (ConfigError, LdsNotFoundError, SourceNotFoundError, UsageError) as exc:  # asked wrongly: usage
        print(f"latentds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LatentdsError as exc:
        print(f"latentds: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("latentds: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `latentds info x.lds | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # silence the flush at exit
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
