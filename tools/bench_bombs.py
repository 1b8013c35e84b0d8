"""Peak memory of `latentds verify` / `unpack` on hostile and oversized inputs, against what they declare.

    python tools/bench_bombs.py [--mib 256] [--out bench/results/bombs-cpu.json]

Each case runs the CLI in a fresh child process and reads the child's peak resident set size (VmHWM from
/proc/self/status at exit: unlike ru_maxrss, which Linux carries over from the parent through fork and exec,
it starts afresh with the new program). The figure that matters is the peak above the baseline (verify of a tiny file: Python, torch and the
reader) compared with the sizes the input declares: a hostile input may make latentds hold what it declares
(a file that really is that large would need it), never more than one decompression step above it.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine, run_cli, save_result  # noqa: E402

MIB = 1 << 20


def big_lds(path: Path, mib: int) -> Path:
    """A valid .lds whose latents (all zero: finite, and they compress to almost nothing) take ``mib`` MiB."""
    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan", num_classes=2, width=1, latent_dim=128, image_size=16, channels=1).eval()
    n = mib * MIB // (128 * 4)
    return save_lds(path, g, torch.zeros(n, 128), torch.arange(n) % 2, ["a", "b"],
                    image_spec([0.5], [0.25], (1, 16, 16)), latent_dtype=torch.float32)


def zeros_frame(path: Path, size: int) -> Path:
    """One zstd frame (content size and checksum present) of ``size`` zero bytes: not a .lds inside."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    block = bytes(16 * MIB)
    with open(path, "wb") as f, cctx.stream_writer(f, size=size) as w:
        for lo in range(0, size, len(block)):
            w.write(block[: min(len(block), size - lo)])
    return path


def header_bomb(path: Path, kind: str) -> Path:
    """A plain file whose header is the 16 MiB maximum: one deep nesting, or 200,000 empty tensors."""
    if kind == "nesting":
        text = b"[" * (16 * MIB)
    else:
        entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(200_000))
        text = ("{" + entries + "}").encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256, help="size of the large latents tensor")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/bombs-cpu.json")
    args = p.parse_args()
    from latentds.format import pack

    sys.path.insert(0, str(REPO))
    from tests.conftest import make_lds

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        tiny = make_lds(t / "tiny.lds", n=6)
        big = big_lds(t / "big.lds", args.mib)
        packed = pack(big, t / "big.lds.zst", level=3)
        zeros = zeros_frame(t / "zeros.lds.zst", 4 * 1024 * MIB)
        plan = [
            ("baseline: verify a 6-row .lds", tiny.stat().st_size, ("verify", str(tiny))),
            (f"verify a plain .lds with {args.mib} MiB of latents (memory-mapped)", big.stat().st_size,
             ("verify", str(big))),
            (f"verify a {packed.stat().st_size // 1024} KiB .lds.zst that inflates to a {args.mib} MiB .lds "
             "(decompressed into memory)", big.stat().st_size, ("verify", str(packed))),
            (f"unpack the same {packed.stat().st_size // 1024} KiB .lds.zst to disk", big.stat().st_size,
             ("unpack", str(packed), str(t / "unpacked.lds"))),
            (f"verify a {zeros.stat().st_size // 1024} KiB zstd frame declaring 4 GiB of zeros (not a .lds)",
             4 * 1024 * MIB, ("verify", str(zeros))),
            ("unpack that 4 GiB zeros frame", 4 * 1024 * MIB, ("unpack", str(zeros), str(t / "zeros.lds"))),
            ("verify a 16 MiB header of nested '['", 16 * MIB, ("verify", str(header_bomb(t / "nest.lds", "nesting")))),
            ("verify a 16 MiB header listing 200,000 empty tensors", 16 * MIB,
             ("verify", str(header_bomb(t / "many.lds", "many")))),
        ]
        for what, declared, argv in plan:
            r = run_cli(*argv, env={"OMP_NUM_THREADS": "1"})
            r["message"] = r["message"].replace(f"{t}/", "")  # the scratch dir is this run's, not the reader's
            cases.append({"case": what, "declared_mib": round(declared / MIB, 1), **r})
            print(f"{r['peak_rss_mib']:8.1f} MiB  exit {r['exit']}  {what}: {r['message']}", flush=True)
    base = cases[0]["peak_rss_mib"]
    for c in cases:
        c["above_baseline_mib"] = round(c["peak_rss_mib"] - base, 1)
        c["above_declared_mib"] = round(c["peak_rss_mib"] - base - c["declared_mib"], 1)
    result = {
        "command": f"python tools/bench_bombs.py --mib {args.mib}",
        "machine": machine(),
        "note": "peak RSS of a fresh `latentds -q ...` child (VmHWM); above_declared = peak - baseline - "
                "declared size (negative: less than the input declares)",
        "cases": cases,
    }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
