"""The import round trip at the release's size: `import-itgan` of a G_ch 64, 10-class generator in the release's
state-dict layout (random weights and SN buffers), decoded images against the release's own forward pass.

    python tools/bench_import.py [--latents 256] [--out bench/results/import-cpu.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, save_result  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latents", type=int, default=256)
    p.add_argument("--out", type=Path, default=REPO / "bench/results/import-cpu.json")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch

    from latentds import LatentDataset
    from latentds.itgan import import_itgan
    from tests.test_itgan import release_forward, release_state

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        sd = release_state(0, g_ch=64, classes=10)
        z = torch.randn(args.latents, 128, generator=torch.Generator().manual_seed(1))
        labels = np.arange(args.latents) % 10
        torch.save(sd, t / "G_Pretrained_toy_exp0.pth")
        torch.save({"z_eff_all": z}, t / "EfficientGAN_final_toy.pt")
        np.savez(t / "labels.npz", images=np.random.default_rng(0).integers(0, 256, (args.latents, 32, 32, 3), dtype=np.uint8), labels=labels,
                 classes=np.array([f"c{i}" for i in range(10)]))
        t0 = time.perf_counter()
        out = import_itgan(t / "G_Pretrained_toy_exp0.pth", t / "EfficientGAN_final_toy.pt", str(t / "labels.npz"),
                           t / "release.lds", progress=False)
        seconds = time.perf_counter() - t0
        images, y = LatentDataset(out, normalize=False, precision="fp32").decode(range(args.latents))
        with torch.no_grad():
            expected = release_forward(sd, z, y) * 0.5 + 0.5
        diff = (images - expected).abs()
        params = sum(v.numel() for k, v in sd.items() if not k.endswith((".u0", ".sv0", "stored_mean", "stored_var")))
        result = {
            "command": f"python tools/bench_import.py --latents {args.latents}",
            "generator_params": params, "latents": args.latents, "import_seconds": round(seconds, 2),
            "max_abs_diff_01": float(diff.max()), "mean_abs_diff_01": float(diff.mean()),
            "note": "pixels in [0, 1]; latentds decodes the imported plain weights, the reference recomputes "
                    "spectral norms from u0 at every call as BigGAN-PyTorch does in eval mode",
        }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
