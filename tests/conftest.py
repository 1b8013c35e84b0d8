"""Shared fixtures: tiny, seeded .lds files built with the real writer and a tiny registered generator."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from latentds.lds import image_spec, save_lds
from latentds.models import create_model
from latentds.sources import ImageSet

CLASSES = ["cat", "dog", "ship"]


# The suite's environment, pinned when pytest loads this file: before any test module is imported (test_bench
# copies os.environ at import), before module-scoped fixtures run, and inherited by every subprocess and
# torchrun rank. fp32 everywhere, so a test compares like with like on every machine class (the determinism
# tests below choose their precision explicitly); caches in a private folder, never the user's ~/.cache.
_SCRATCH = tempfile.mkdtemp(prefix="latentds-tests-")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ.update({
    "LATENTDS_PRECISION": "fp32",
    "LATENTDS_CACHE_DIR": os.path.join(_SCRATCH, "cache"),
    "XDG_CACHE_HOME": os.path.join(_SCRATCH, "xdg"),
})

ENV_FORCE_BF16 = "LATENTDS_TEST_BF16"  # "1": run the bf16 determinism tests without bf16 hardware (emulated, slow)


def precisions() -> list:
    """The numerics-changing paths to test here: fp32 everywhere, bf16 where the CPU runs it natively (or
    when forced), each bf16 skip saying why."""
    from latentds.plan import _cpu_has_bf16

    run_bf16 = _cpu_has_bf16() or os.environ.get(ENV_FORCE_BF16) == "1"
    reason = f"no bf16 hardware on this CPU (bf16 would be emulated); {ENV_FORCE_BF16}=1 runs it anyway"
    return ["fp32", pytest.param("bf16", marks=() if run_bf16 else pytest.mark.skip(reason=reason))]


MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def make_lds(
    path: Path,
    n: int = 24,
    latent_dtype: torch.dtype | None = None,
    seed: int = 0,
    chunk_rows: int | None = None,
    classes: list[str] = CLASSES,
) -> Path:
    """A small .lds: biggan32_tiny (width 4) with seeded weights and latents, labels cycling over classes."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # model init inside create_model uses the global RNG; tests may reseed it
    g = create_model("biggan32_tiny", num_classes=len(classes), width=4).eval()
    latents = torch.randn(n, 128, generator=gen)
    labels = torch.arange(n) % len(classes)
    if chunk_rows is None:
        return save_lds(path, g, latents, labels, classes, image_spec(MEAN, STD, g.contract.image_shape, g.contract.output_range), latent_dtype=latent_dtype)
    from latentds.format import write_lds

    return write_lds(
        path,
        latents=latents,
        labels=labels,
        classes=classes,
        generator_arch=g.arch_name,
        generator_args=g.arch_args,
        generator_state=g.state_dict(),
        image=image_spec(MEAN, STD, g.contract.image_shape, g.contract.output_range),
        latent_dtype=latent_dtype,
        chunk_rows=chunk_rows,
    )


@pytest.fixture
def tiny_lds(tmp_path: Path) -> Path:
    return make_lds(tmp_path / "tiny.lds")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP hand-offs that dominate (and stall on a busy machine).

    Test modules of small training loops opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


COLOURS = torch.tensor([[220, 40, 40], [40, 200, 40], [40, 40, 220]], dtype=torch.float32)


def blobs(n_per_class: int = 20, seed: int = 0) -> ImageSet:
    """3 classes of 32x32 images: a disc of the class colour at a random place, on grey, plus noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    images, labels = [], []
    for c, colour in enumerate(COLOURS):
        for _ in range(n_per_class):
            cy, cx = torch.randint(8, 24, (2,), generator=g).float()
            r = 5 + 4 * torch.rand((), generator=g)
            disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()  # (32, 32)
            img = 100 + disc * (colour[:, None, None] - 100) + 20 * torch.randn(3, 32, 32, generator=g)
            images.append(img.clamp(0, 255).to(torch.uint8))
            labels.append(c)
    return ImageSet.from_tensors(torch.stack(images), torch.tensor(labels), ["red", "green", "blue"], f"blobs:{seed}")
