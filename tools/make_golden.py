"""Regenerate tests/data/golden.lds and the pixels it must decode to (tests/data/golden_pixels.npy).

    python tools/make_golden.py

Run this only when the format or the generator architecture changes on purpose, then read the diff:
tests/test_golden.py asserts that today's reader and generator decode the committed file to the
committed pixels, so an accidental change to either shows up as a failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentds import LatentDataset
from latentds import image_spec, save_lds
from latentds.models import create_model

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"


def main() -> None:
    torch.manual_seed(20261121)
    generator = create_model("biggan32_tiny", num_classes=3, width=4).eval()
    with torch.no_grad():
        for param in generator.parameters():  # N(0, 0.02) at width 4 decodes to a near-constant image
            param.mul_(3)
        for module in generator.modules():  # non-trivial batch-norm statistics, so decoding uses them
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
    latents = torch.randn(6, 128, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    path = save_lds(
        OUT / "golden.lds",
        generator,
        latents,
        labels,
        ["red", "green", "blue"],
        image_spec([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], generator.contract.image_shape, generator.contract.output_range),
        provenance={"source": {"name": "golden", "fingerprint": "none"}, "created": "2026-11-21T00:00:00+00:00"},
        latent_dtype=torch.float16,
    )
    images, _ = LatentDataset(path, normalize=False).decode(np.arange(6))
    np.save(OUT / "golden_pixels.npy", images.numpy().astype(np.float32), allow_pickle=False)
    print(f"wrote {path} ({path.stat().st_size} bytes) and golden_pixels.npy")


if __name__ == "__main__":
    main()
