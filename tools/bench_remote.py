"""Bytes a remote read costs: `info` and decoding 1,000 rows of a 50,000-row .lds served over HTTP.

    python tools/bench_remote.py [--rows 50000] [--out bench/results/remote-cpu.json]

A range-capable HTTP server on 127.0.0.1 (the one tests/test_remote.py uses) serves a .lds with the paper's
generator (biggan32, width 64: the ~4.3M-parameter CIFAR generator) and fp16 latents; the figures are the
requests made and body bytes served for each step, against the file's size, with a cold and then a warm cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, save_result  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--decode", type=int, default=1000)
    p.add_argument("--out", type=Path, default=REPO / "bench/results/remote-cpu.json")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LATENTDS_CACHE_DIR"] = str(Path(tmp) / "cache")
        import torch

        from latentds import LatentDataset
        from latentds import image_spec, open_lds, save_lds
        from latentds.models import create_model
        from tests.test_remote import RangeServer

        www = Path(tmp) / "www"
        www.mkdir()
        torch.manual_seed(0)
        g = create_model("biggan32", num_classes=10, latent_dim=128).eval()
        path = save_lds(www / "set.lds", g, torch.randn(args.rows, 128), torch.arange(args.rows) % 10,
                        [f"class{i}" for i in range(10)], image_spec([0.5] * 3, [0.25] * 3, g.contract.image_shape, g.contract.output_range),
                        latent_dtype=torch.float16)
        size = path.stat().st_size
        server = RangeServer(www)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"{server.url}/set.lds"

        def step(what: str, fn) -> dict:
            server.requests = server.bytes_served = 0
            t0 = time.perf_counter()
            fn()
            r = {"step": what, "requests": server.requests, "bytes": server.bytes_served,
                 "fraction_of_file": round(server.bytes_served / size, 5), "seconds": round(time.perf_counter() - t0, 3)}
            print(f"{r['bytes']:>12,} bytes in {r['requests']} requests ({r['fraction_of_file']:.2%})  {what}", flush=True)
            return r

        rows = list(range(args.decode))
        steps = [
            step("info (open: header only)", lambda: open_lds(url).close()),
            step(f"decode rows 0-{args.decode - 1}, cold cache", lambda: LatentDataset(url, precision="fp32").decode(rows)),
            step(f"decode rows 0-{args.decode - 1} again in a new dataset, warm cache",
                 lambda: LatentDataset(url, precision="fp32").decode(rows)),
        ]
        server.shutdown()
        with open_lds(path) as r:
            header, chunk_rows = r.header_bytes, r.manifest["integrity"]["latents_chunk_rows"]
    result = {
        "command": f"python tools/bench_remote.py --rows {args.rows}",
        "file_bytes": size, "header_bytes": header, "latents_chunk_rows": chunk_rows,
        "generator": "biggan32 width 64 (fp32), latents fp16", "steps": steps,
    }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
