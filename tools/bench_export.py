"""Export throughput and peak memory per format: `latentds export` of a 10,000-image .lds.

    python tools/bench_export.py [--rows 10000] [--formats npz,h5,folder,webdataset,hf] [--out bench/results/export-cpu.json]

The file holds a CIFAR-layout generator (biggan32, width 16 by default: on a CPU the paper's width 64 decodes
so slowly that the formats' own costs vanish) and fp16 latents. Each format runs as a fresh
`latentds -q export` child; the figures are its wall time (images/s, decoding included), its peak resident set
size (VmHWM, which starts afresh with the child) and the output's size. Memory that stays flat as the file
grows is the point: exporters stream batches, they do not hold the decoded set.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, machine, run_cli, save_result  # noqa: E402


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--formats", default="npz,h5,folder,webdataset,hf")
    p.add_argument("--width", type=int, default=16,
                   help="generator width (64 is the paper's, ~38 img/s on 2 CPU cores: decoding would hide the formats)")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/export-cpu.json")
    args = p.parse_args()

    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.manual_seed(0)
        g = create_model("biggan32", num_classes=10, latent_dim=128, width=args.width).eval()
        src = save_lds(t / "set.lds", g, torch.randn(args.rows, 128), torch.arange(args.rows) % 10,
                       [f"class{i}" for i in range(10)], image_spec([0.5] * 3, [0.25] * 3, g.contract.image_shape, g.contract.output_range),
                       latent_dtype=torch.float16)
        for fmt in args.formats.split(","):
            out = t / ("out.npz" if fmt == "npz" else "out.h5" if fmt == "h5" else f"out_{fmt}")
            r = run_cli("export", str(src), str(out), "--format", fmt)
            if r["exit"] != 0:
                print(r["message"], file=sys.stderr)
                return 1
            run = {"format": fmt, "images": args.rows, "seconds": r["seconds"],
                   "images_per_s": round(args.rows / r["seconds"], 1), "peak_rss_mib": r["peak_rss_mib"],
                   "output_mib": round(_size(out) / 2**20, 2)}
            runs.append(run)
            print(f"{fmt:>10}: {run['images_per_s']:8.1f} img/s, peak {run['peak_rss_mib']:7.1f} MiB, "
                  f"{run['output_mib']:.1f} MiB out", flush=True)
        decoded_mib = args.rows * 3 * 32 * 32 / 2**20
    result = {
        "command": f"python tools/bench_export.py --rows {args.rows} --formats {args.formats} --width {args.width}",
        "generator": f"biggan32 width {args.width}",
        "machine": machine(), "threads": torch.get_num_threads(),
        "note": f"the decoded set is {decoded_mib:.1f} MiB as uint8; seconds include process start and the "
                "generator's load (about 2-3 s)",
        "runs": runs,
    }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
