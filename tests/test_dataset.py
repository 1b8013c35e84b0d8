"""LatentDataset: torchvision conventions, batched decoding, workers under fork and spawn, subsets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from latentds.dataset import LatentDataset
from latentds.errors import ChecksumError, LatentdsError
from latentds.format import pack
from tests.conftest import CLASSES, MEAN, STD, make_lds

ATOL = 1e-6  # batched convolution may round differently from single-image convolution


def all_images(ds: LatentDataset) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_torchvision_conventions(tiny_lds: Path) -> None:
    ds = LatentDataset(tiny_lds)
    assert len(ds) == 24
    assert ds.classes == CLASSES and ds.class_to_idx == {"cat": 0, "dog": 1, "ship": 2}
    assert type(ds.targets) is list and ds.targets[:4] == [0, 1, 2, 0]  # torchvision's type, not a numpy array
    image, label = ds[4]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1
    assert torch.isfinite(image).all()
    for bad in (lambda: ds[24], lambda: ds.decode([3, 99]), lambda: ds.__getitems__([-25])):
        with pytest.raises(IndexError, match=r"valid indices are 0\.\.23 \(or -24\.\.-1 from the end\)"):
            bad()
    assert torch.allclose(ds[-1][0], ds[23][0], atol=ATOL)


def test_normalization_follows_the_manifest(tiny_lds: Path) -> None:
    raw = LatentDataset(tiny_lds, normalize=False)[3][0]
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    norm = LatentDataset(tiny_lds)[3][0]
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(norm, expected, atol=1e-5)


def test_transforms_are_applied_per_sample(tiny_lds: Path) -> None:
    ds = LatentDataset(tiny_lds, transform=lambda x: x.flip(-1), target_transform=lambda y: y + 10)
    plain = LatentDataset(tiny_lds)
    image, label = ds[5]
    assert label == 12
    assert torch.allclose(image, plain[5][0].flip(-1), atol=ATOL)


def test_getitems_equals_getitem_whatever_the_batch(tiny_lds: Path) -> None:
    ds = LatentDataset(tiny_lds)
    single = all_images(ds)
    batch = ds.__getitems__(list(range(24)))
    assert [y for _, y in batch] == ds.targets
    assert torch.allclose(torch.stack([x for x, _ in batch]), single, atol=ATOL)
    shuffled = [17, 3, 3, 0, 23]
    picked = torch.stack([x for x, _ in ds.__getitems__(shuffled)])
    assert torch.allclose(picked, single[shuffled], atol=ATOL)
    small = LatentDataset(tiny_lds, max_decode_batch=5)  # several forward passes per batch
    assert torch.allclose(torch.stack([x for x, _ in small.__getitems__(list(range(24)))]), single, atol=ATOL)


@pytest.mark.parametrize("max_decode_batch, expected", [(None, [16, 8]), (24, [24]), (100, [24])])
def test_a_dataloader_batch_is_decoded_in_batched_passes(
    tiny_lds: Path, max_decode_batch: int | None, expected: list[int]
) -> None:
    """A batch of 24 runs the generator once per chunk of max_decode_batch (16 by default on the CPU)."""
    ds = LatentDataset(tiny_lds, max_decode_batch=max_decode_batch)
    ds._ensure_open()
    calls = []
    ds._generator.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    (images, labels), = list(DataLoader(ds, batch_size=24))
    assert calls == expected
    assert images.shape == (24, 3, 32, 32) and labels.tolist() == ds.targets


@pytest.mark.parametrize("workers, context", [(0, None), (2, "fork"), (2, "spawn")])
def test_same_images_with_any_worker_count(tiny_lds: Path, workers: int, context: str | None) -> None:
    ds = LatentDataset(tiny_lds)
    expected = all_images(ds)
    loader = DataLoader(ds, batch_size=7, num_workers=workers, multiprocessing_context=context)
    images, labels = map(torch.cat, zip(*loader))
    assert torch.allclose(images, expected, atol=ATOL)
    assert labels.tolist() == ds.targets


def test_pickles_as_a_path_even_after_use(tiny_lds: Path) -> None:
    ds = LatentDataset(tiny_lds)
    ds[0]  # opens the file and loads the generator
    blob = pickle.dumps(ds)
    assert len(blob) < tiny_lds.stat().st_size / 4  # no weights, no open handles: path, manifest and labels
    clone = pickle.loads(blob)
    assert clone._reader is None and clone._generator is None
    assert torch.allclose(clone[0][0], ds[0][0], atol=ATOL)


def test_subset_by_class_and_index_decodes_nothing(tiny_lds: Path) -> None:
    ds = LatentDataset(tiny_lds)
    dogs = ds.subset(classes=["dog"])
    assert ds._generator is None and dogs._generator is None
    assert len(dogs) == 8 and set(dogs.targets) == {1}
    assert dogs.per_class() == {"cat": 0, "dog": 8, "ship": 0}
    both = ds.subset(indices=[0, 1, 2, 3, 4, 5], classes=[0, "ship"])
    assert both.targets == [0, 2, 0, 2]
    assert torch.allclose(both[1][0], ds[2][0], atol=ATOL)
    assert torch.allclose(LatentDataset(tiny_lds, indices=[5, 6])[1][0], ds[6][0], atol=ATOL)
    with pytest.raises(LatentdsError, match="unknown class 'cow'.*cat, dog, ship"):
        ds.subset(classes=["cow"])
    with pytest.raises(IndexError):
        LatentDataset(tiny_lds, indices=[99])


def test_every_latent_dtype_decodes(tmp_path: Path) -> None:
    ref = all_images(LatentDataset(make_lds(tmp_path / "f32.lds")))
    for dtype, tol in [(torch.float16, 0.02), (torch.bfloat16, 0.1)]:
        got = all_images(LatentDataset(make_lds(tmp_path / f"{dtype}.lds", latent_dtype=dtype)))
        assert (got - ref).abs().max() < tol


def test_bfloat16_decoding_on_cpu(tiny_lds: Path) -> None:
    ref = LatentDataset(tiny_lds)[0][0]
    low = LatentDataset(tiny_lds, dtype=torch.bfloat16)[0][0]
    assert low.dtype == torch.float32 and (low - ref).abs().max() < 0.2


def test_reads_a_zst_file(tiny_lds: Path, tmp_path: Path) -> None:
    packed = pack(tiny_lds, tmp_path / "t.lds.zst")
    assert torch.allclose(all_images(LatentDataset(packed)), all_images(LatentDataset(tiny_lds)), atol=ATOL)


def test_verify_on_open(tiny_lds: Path) -> None:
    data = bytearray(tiny_lds.read_bytes())
    data[-3] ^= 1  # inside the last generator tensor
    tiny_lds.write_bytes(bytes(data))
    LatentDataset(tiny_lds)  # structure is fine
    with pytest.raises(ChecksumError):
        LatentDataset(tiny_lds, verify=True)


def test_cuda_decoding_is_refused_inside_workers(tiny_lds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # as on a GPU machine: constructing allocates
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda device=None: (8, 0))  # nothing on the GPU
    ds = LatentDataset(tiny_lds, device="cuda")
    monkeypatch.setattr("latentds.dataset.get_worker_info", lambda: object())
    with pytest.raises(LatentdsError, match="num_workers=0"):
        ds[0]


def test_batch_transform_sees_the_whole_batch(tiny_lds: Path) -> None:
    seen = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape)
        return x * 0

    ds = LatentDataset(tiny_lds, batch_transform=record)
    out = ds.__getitems__([0, 1, 2])
    assert seen == [(3, 3, 32, 32)] and all(float(x.abs().sum()) == 0 for x, _ in out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_gpu_decoding_matches_cpu(tiny_lds: Path) -> None:
    cpu = all_images(LatentDataset(tiny_lds))
    gpu = LatentDataset(tiny_lds, device="cuda")
    images, _ = gpu.decode(np.arange(len(gpu)))
    assert images.is_cuda and torch.allclose(images.cpu(), cpu, atol=1e-4)


def test_top_level_api(tiny_lds: Path) -> None:
    import latentds

    assert latentds.LatentDataset is LatentDataset
    with latentds.open_lds(tiny_lds) as f:
        assert f.num_samples == 24


# --- the execution plan and tensors that can be trained on ------------------------------------------------
def test_decoded_tensors_can_be_trained_on(tiny_lds: Path) -> None:
    """Decoded images are ordinary tensors: a network trains on them, in-place batch transforms work."""
    ds = LatentDataset(tiny_lds, batch_transform=lambda x: x.mul_(0.5))
    images, labels = ds.decode(range(8))
    assert not images.is_inference() and not labels.is_inference()
    conv = torch.nn.Conv2d(3, 4, 3)
    conv(images[0:1]).sum().backward()  # raised "Inference tensors cannot be saved for backward" before
    assert conv.weight.grad is not None
    image, _ = ds[0]
    conv(image[None]).sum().backward()
    # a short training run straight from decode(): the loss goes down
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = ds.decode(np.arange(len(ds)))
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_labels_come_back_on_the_decoding_device_and_index_tensors_work(tiny_lds: Path) -> None:
    ds = LatentDataset(tiny_lds)
    images, labels = ds.decode(torch.tensor([3, 4, 5]))
    assert labels.device == images.device and labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2]
    assert isinstance(ds[4][1], int)  # torchvision targets on the CPU


def test_the_plan_is_used_and_travels_to_workers(tiny_lds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan (here: fp32, contiguous, chunks of 5, set by hand) decodes the same images as the default
    one, whatever the batch composition, in the main process and in workers, which get the parent's plan."""
    from dataclasses import replace

    default = LatentDataset(tiny_lds)
    assert (default.plan.precision, default.plan.channels_last, default.max_decode_batch) == ("fp32", True, 16)
    reference = all_images(default)
    ds = LatentDataset(tiny_lds, max_decode_batch=5)
    ds.plan = replace(ds.plan, channels_last=False)
    assert ds.max_decode_batch == 5
    images, _ = ds.decode(np.arange(len(ds)))
    assert images.is_contiguous() and torch.allclose(images, reference, atol=ATOL)
    assert torch.allclose(ds.decode([7])[0][0], reference[7], atol=ATOL)
    loader = DataLoader(ds, batch_size=7, num_workers=2, multiprocessing_context="fork")
    got = torch.cat([x for x, _ in loader])
    assert torch.allclose(got, reference, atol=ATOL)
    assert pickle.loads(pickle.dumps(ds)).plan == ds.plan  # workers decode with the parent's plan


def test_bf16_decoding_stays_within_one_8bit_level(tiny_lds: Path) -> None:
    """The tolerance the docs state for bf16 decoding: pixels in [0, 1] within 2/255, mean within 0.5/255."""
    ref = LatentDataset(tiny_lds, normalize=False).decode(np.arange(24))[0]
    low_ds = LatentDataset(tiny_lds, normalize=False, precision="bf16")
    assert low_ds.dtype == torch.bfloat16
    low = low_ds.decode(np.arange(24))[0]
    assert low.dtype == torch.float32
    err = (low - ref).abs()
    assert err.max() < 2 / 255 and err.mean() < 0.5 / 255
    # and the same image whatever the batch, up to bf16 rounding of the batched kernels
    assert (low_ds.decode([9])[0][0] - low[9]).abs().max() < 2 / 255


def test_precision_argument_errors(tiny_lds: Path) -> None:
    from latentds.errors import ConfigError

    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp16"):
        LatentDataset(tiny_lds, precision="int8")
    with pytest.raises(LatentdsError, match="max_decode_batch must be >= 1"):
        LatentDataset(tiny_lds, max_decode_batch=0)


# --- backend flags of the plan ------------------------------------------------------------------------
def _flags() -> tuple[bool, ...]:
    b = torch.backends
    return (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic)


def _loosen() -> None:
    """What a user's training script (or torch's defaults on some versions) may have set: TF32 and autotuning on."""
    b = torch.backends
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic = True, True, True, False


@pytest.fixture
def saved_flags():
    before = _flags()
    yield
    b = torch.backends
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic = before


def test_cuda_dataset_applies_the_plans_backend_flags_here_and_in_copies(
    tiny_lds: Path, monkeypatch: pytest.MonkeyPatch, saved_flags: None
) -> None:
    """TF32 off and no cuDNN autotuning wherever a CUDA dataset decodes: in the process that builds it and in
    one that unpickles it (a spawned worker, a torch.multiprocessing rank). The flags are plain globals, so
    this runs without a GPU."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda device=None: (8, 0))
    _loosen()
    ds = LatentDataset(tiny_lds, device="cuda")
    assert _flags() == (False, False, False, True)
    blob = pickle.dumps(ds)
    _loosen()
    clone = pickle.loads(blob)
    assert _flags() == (False, False, False, True) and clone.plan == ds.plan
    _loosen()
    LatentDataset(tiny_lds)  # a CPU dataset leaves a GPU's flags alone
    pickle.loads(pickle.dumps(LatentDataset(tiny_lds)))
    assert _flags() == (True, True, True, False)
