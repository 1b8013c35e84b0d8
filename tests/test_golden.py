"""The committed golden file (made by tools/make_golden.py) must keep decoding to the committed pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentds.dataset import LatentDataset
from latentds.format import LdsReader

DATA = Path(__file__).parent / "data"


def test_golden_file_decodes_to_the_golden_pixels() -> None:
    with LdsReader(DATA / "golden.lds", verify=True) as reader:
        assert reader.manifest["format_version"] == "1.0"
        assert reader.classes == ["red", "green", "blue"]
        assert reader.tensors["latents"].dtype == "F16"
        assert reader.labels().tolist() == [0, 1, 2, 0, 1, 2]
    ds = LatentDataset(DATA / "golden.lds", normalize=False)
    images, labels = ds.decode(np.arange(6))
    expected = torch.from_numpy(np.load(DATA / "golden_pixels.npy", allow_pickle=False))
    assert images.shape == expected.shape == (6, 3, 32, 32)
    assert float(expected.std()) > 0.01  # the golden pixels are not a constant image
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    normalized = LatentDataset(DATA / "golden.lds")[4][0]
    torch.testing.assert_close(normalized, (expected[4] - 0.5) / 0.25, atol=1e-4, rtol=0)
