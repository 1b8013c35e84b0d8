"""The file verbs of the command line: ``info``, ``verify``, ``export``, ``preview``, ``pack``, ``unpack``,
``merge`` and ``import-itgan``, wired in by :func:`register` (as ``encoding.commands`` and
``evaluation.commands`` wire in theirs). The parser is built without torch; each handler imports what it runs.

Every output path is checked (``format.outputs.check_output``) before any work: never an input, an existing
parent folder, a name that fits, no symbolic link, and nothing replaced without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from latentds.argtypes import positive_int, zstd_level
from latentds.errors import UsageError
from latentds.files.info import cmd_info
from latentds.format.outputs import check_output
from latentds.format.render import mib, safe

__all__ = ["cmd_export", "cmd_import_itgan", "cmd_merge", "cmd_pack", "cmd_preview", "cmd_unpack", "cmd_verify",
           "register"]

EXIT_OK, EXIT_BAD_INPUT = 0, 1
Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def cmd_verify(args: argparse.Namespace) -> int:
    from latentds.errors import LdsError, LdsNotFoundError, RemoteReadError
    from latentds.lds import open_lds

    where = safe(args.file, 200)
    try:
        with open_lds(args.file, budget=False) as reader:
            problems = reader.verify()  # a URL: streamed from the server and hashed piece by piece
    except (LdsNotFoundError, RemoteReadError):  # not found, unreachable, refused: exit 2, 3, 4, never "corrupt"
        raise
    except LdsError as exc:
        print(f"{where}: CORRUPT: {type(exc).__name__}: {safe(exc, 2000)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if problems:
        for p in problems:
            print(f"{where}: CORRUPT: {safe(p, 2000)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        print(f"{where}: OK ({len(reader.tensors)} tensors and {len(reader.manifest['integrity']['latents_chunks'])} "
              "latent chunks match their sha256)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from latentds.budget import parse_size
    from latentds.export import export

    out = export(args.file, args.out, batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                 overwrite=args.force, fmt=args.format, shard_size=args.shard_size,
                 shard_bytes=parse_size(args.shard_bytes, "--shard-bytes"), shuffle=args.shuffle, seed=args.seed)
    if not args.quiet:
        print(f"wrote {safe(str(out), 200)}")
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from latentds.preview import preview

    out = preview(args.file, args.out, per_class=args.per_class, seed=args.seed, device=args.device,
                  overwrite=args.force, scale=args.scale, names=args.names)
    if not args.quiet:
        print(f"wrote {safe(str(out), 200)}")
    return EXIT_OK


def _byte_bar(path: str, desc: str, quiet: bool):  # noqa: ANN202 - a tqdm bar, imported lazily
    from latentds.progress import progress_bar

    return progress_bar(None, not quiet, total=Path(path).stat().st_size, desc=desc, unit="B", unit_scale=True)


def cmd_pack(args: argparse.Namespace) -> int:
    from latentds.format import pack
    from latentds.lds import open_lds

    out = args.out or args.file + ".zst"
    check_output(out, [args.file], force=args.force)
    open_lds(args.file, budget=False).close()  # refuse to wrap something that is not a valid .lds
    with _byte_bar(args.file, "pack", args.quiet) as bar:
        pack(args.file, out, level=args.level, progress=bar.update)
    if not args.quiet:
        before, after = Path(args.file).stat().st_size, Path(out).stat().st_size
        print(f"wrote {safe(out, 200)} ({mib(after)}, {after / max(before, 1):.1%} of {mib(before)})")
    return EXIT_OK


def cmd_unpack(args: argparse.Namespace) -> int:
    from latentds.format import unpack
    from latentds.lds import open_lds

    if args.out:
        out = args.out
    elif args.file.endswith(".zst"):
        out = args.file[: -len(".zst")]
    else:
        raise UsageError(f"{safe(args.file, 200)}: does not end in .zst; name the output file")
    check_output(out, [args.file], force=args.force)
    with _byte_bar(args.file, "unpack", args.quiet) as bar:
        unpack(args.file, out, progress=bar.update)
    open_lds(out, budget=False).close()
    if not args.quiet:
        print(f"wrote {safe(out, 200)}")
    return EXIT_OK


def cmd_import_itgan(args: argparse.Namespace) -> int:
    from latentds.itgan import import_itgan

    check_output(args.out, [args.generator, args.latents], force=args.force)
    out = import_itgan(args.generator, args.latents, args.labels_from, args.out, latents_key=args.latents_key,
                       root=args.root, download=args.download, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {safe(str(out), 200)} (verified)")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    if len(args.files) < 3:  # asked wrongly, like every usage error: exit 2
        raise UsageError("usage: latentds merge A.lds B.lds [...] OUT.lds (at least two inputs and the output)")
    *inputs, out = args.files
    if out.endswith(".zst"):
        raise UsageError(f"{safe(out, 200)}: merge writes a plain .lds; compress it afterwards with `latentds pack`")
    check_output(out, inputs, force=args.force)
    import torch

    from latentds.format import LdsReader
    from latentds.merge import merge

    dtype = getattr(torch, args.latent_dtype) if args.latent_dtype else None
    path = merge(inputs, out, latent_dtype=dtype)
    if not args.quiet:
        with LdsReader(path) as r:
            print(f"wrote {safe(str(path), 200)}: {r.num_samples} latents from {len(inputs)} files, {r.num_classes} "
                  f"classes, {mib(path.stat().st_size)}")
    return EXIT_OK


def register(add: Add) -> None:
    """Add the file verbs through the CLI's ``add(name, func, help)``."""
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

    p = add("verify", cmd_verify, "check every checksum; exit 0 intact, 1 corrupt, 2 usage error or not found, "
            "3 a URL's server unreachable, 4 refused")
    p.add_argument("file")

    p = add("export", cmd_export, "decode everything to an ImageFolder tree (OUT/), OUT.npz, OUT.h5, "
            "WebDataset shards or a Hugging Face datasets folder")
    p.add_argument("file")
    p.add_argument("out")
    p.add_argument("--format", choices=("folder", "npz", "h5", "webdataset", "hf"), default=None,
                   help="default: from OUT's suffix (.npz, .h5, none: folder); webdataset and hf write folders")
    p.add_argument("--shard-bytes", default="3000000000", metavar="SIZE",
                   help="WebDataset: close a shard at this size (e.g. 500M; default 3e9 bytes, as ShardWriter's maxsize)")
    p.add_argument("--shard-size", type=positive_int, default=100_000, metavar="N",
                   help="WebDataset: and at N images (default %(default)s, as ShardWriter's maxcount)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="write the rows in a random order (default: yes; a .lds holds them by class); every image "
                        "keeps its .lds row as its name, key or 'rows' entry")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled order (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true",
                   help="replace OUT if it exists (a folder only if an export wrote it); the old output stays until "
                        "the new one is complete")

    p = add("preview", cmd_preview, "save a PNG (or .jpg) grid of decoded samples, one row per class, labelled")
    p.add_argument("file")
    p.add_argument("out")
    p.add_argument("--per-class", type=positive_int, default=10)
    p.add_argument("--scale", type=int, choices=(1, 2, 4), default=1, help="show each image 2x or 4x its size")
    p.add_argument("--names", action=argparse.BooleanOptionalAction, default=True,
                   help="write each row's class name at its left (default: yes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

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
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch cifar10/cifar100 into --root when missing (default: yes; needs a network)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
