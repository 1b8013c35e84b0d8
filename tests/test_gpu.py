"""The GPU checklist (../shared/GPU.md, step 2), and the half of each item that a CPU can check.

Tests marked ``gpu`` need CUDA and skip, saying so, everywhere else; ``bash tools/gpu_check.sh`` runs them
first on a GPU (``pytest -m gpu``). Where a defect does not depend on the device, a twin below checks it on
the CPU in the default suite: :class:`OnDevice` is a CPU tensor that, like a CUDA tensor, refuses to be read
as NumPy before ``.cpu()``; the backend flags and device checks are plain Python, run with CUDA faked.

Tolerances on a GPU (conftest pins fp32 for the suite; the plan turns TF32 and cuDNN autotuning off):
- fp32 decoding matches the CPU within ``FP32_ATOL`` = 1e-4 on [0, 1] pixels (1/40 of an 8-bit level: other
  convolution algorithms, the same arithmetic); the plan's own precision (bf16 on compute capability 8.0+,
  fp16 before) within the bound the README states for bf16: max < 2/255, mean < 0.5/255.
- a resumed encode equals the uninterrupted one bit for bit where the GPU repeats itself bit for bit; some
  CUDA kernels add with atomics (``grid_sample``'s backward, used by DSA in condensation), so the test
  accepts ``RUN_ATOL`` = 1e-2 on the stored tensors (fp16 latents: a few ulps) and prints which it was.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, make_lds
from torch.utils.data import DataLoader

from latentds import cli
from latentds.dataset import LatentDataset
from latentds.errors import ConfigError

HAS_CUDA = torch.cuda.is_available()

FP32_ATOL = 1e-4
RUN_ATOL = 1e-2


# --- a CPU stand-in for a device tensor -------------------------------------------------------------------
class OnDevice(torch.Tensor):
    """A CPU tensor that fails where a CUDA tensor fails on a machine with a GPU: read as NumPy (``.numpy()``,
    ``np.asarray``) before ``.cpu()``. Arithmetic, ``.to(dtype)``, indexing, ``.tolist()`` work, as on a GPU."""

    MESSAGE = ("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host "
               "memory first. (tests/test_gpu.py: a stand-in for a CUDA tensor)")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = super().__torch_function__(func, types, args, kwargs)
        to_host = func is torch.Tensor.cpu or (func is torch.Tensor.to and any(
            str(a) == "cpu" for a in [*args[1:], kwargs.get("device")] if isinstance(a, (str, torch.device))))
        return out.as_subclass(torch.Tensor) if to_host and isinstance(out, torch.Tensor) else out

    def numpy(self, *args, **kwargs):
        raise TypeError(self.MESSAGE)

    def __array__(self, *args, **kwargs):
        raise TypeError(self.MESSAGE)


def test_the_stand_in_fails_like_a_device_tensor():
    t = torch.arange(4).as_subclass(OnDevice)
    with pytest.raises(TypeError, match="Tensor.cpu"):
        t.numpy()
    with pytest.raises(TypeError, match="Tensor.cpu"):
        np.asarray(t * 2)
    assert (t * 2).cpu().numpy().tolist() == [0, 2, 4, 6] and t.to("cpu").numpy().shape == (4,)
    assert t.to(torch.float32).tolist() == [0.0, 1.0, 2.0, 3.0]  # a dtype change stays on the device


@pytest.fixture
def decode_on_device(monkeypatch):
    """LatentDataset.decode returns its images and labels as device stand-ins."""
    real = LatentDataset.decode

    def decode(self, indices):
        images, labels = real(self, indices)
        return images.as_subclass(OnDevice), labels.as_subclass(OnDevice)

    monkeypatch.setattr(LatentDataset, "decode", decode)


@pytest.fixture
def saved_backend_flags():
    """Restore the process-wide CUDA flags a (faked or real) CUDA plan sets."""
    b = torch.backends
    before = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic)
    yield
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.deterministic = before


@pytest.fixture
def one_fake_gpu(monkeypatch, saved_backend_flags):
    """CUDA as a one-GPU machine reports it, for code paths that only ask; allocating would still fail."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda device=None: (9, 0))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def all_pixels(path: Path, device: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    ds = LatentDataset(path, device=device, normalize=False, **kwargs)
    images, labels = ds.decode(np.arange(len(ds)))
    return images.cpu(), labels.cpu()


# === decoding =============================================================================================
@pytest.mark.parametrize("width", [None, 16])
@pytest.mark.usefixtures("saved_backend_flags")
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_fp32_decoding_matches_the_cpu(tmp_path, width):
    path = make_lds(tmp_path / "t.lds", n=64) if width is None else _biggan_lds(tmp_path / "w.lds", width)
    cpu, labels = all_pixels(path, "cpu", precision="fp32")
    gpu_ds = LatentDataset(path, device="cuda", normalize=False, precision="fp32")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32  # the plan's flags
    images, gpu_labels = gpu_ds.decode(np.arange(len(gpu_ds)))
    assert images.is_cuda and images.dtype == torch.float32 and torch.equal(gpu_labels.cpu(), labels)
    err = (images.cpu() - cpu).abs()
    print(f"fp32 gpu vs cpu: max {err.max():.2e}, mean {err.mean():.2e}")
    assert err.max() <= FP32_ATOL


@pytest.mark.parametrize("width", [None, 16])
@pytest.mark.usefixtures("saved_backend_flags")
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_decoding_at_the_plans_precision_stays_within_one_level(tmp_path, monkeypatch, width):
    from latentds.plan import hardware_class

    monkeypatch.delenv("LATENTDS_PRECISION")  # "auto": the rule of this GPU's class
    path = make_lds(tmp_path / "t.lds", n=64) if width is None else _biggan_lds(tmp_path / "w.lds", width)
    ref, _ = all_pixels(path, "cpu", precision="fp32")
    ds = LatentDataset(path, device="cuda", normalize=False)
    assert ds.plan.precision == hardware_class("cuda").auto_decode and ds.max_decode_batch == ds.plan.decode_chunk
    images, _ = ds.decode(np.arange(len(ds)))
    err = (images.cpu() - ref).abs()
    print(f"{ds.plan.precision} gpu vs fp32 cpu: max {err.max() * 255:.2f}/255, mean {err.mean() * 255:.3f}/255")
    assert images.dtype == torch.float32 and err.max() < 2 / 255 and err.mean() < 0.5 / 255


def _biggan_lds(path: Path, width: int, n: int = 64) -> Path:
    """A .lds with a real-size BigGAN-32 (random weights): the convolution algorithms a user's file gets."""
    from latentds.lds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan32", num_classes=len(CLASSES), width=width).eval()
    latents = torch.randn(n, 128, generator=torch.Generator().manual_seed(1))
    spec = image_spec([0.5] * 3, [0.25] * 3, g.contract.image_shape, g.contract.output_range)
    return save_lds(path, g, latents, torch.arange(n) % len(CLASSES), CLASSES, spec)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_decoded_batches_can_be_trained_on(tiny_lds):
    ds = LatentDataset(tiny_lds, device="cuda", batch_transform=lambda x: x.mul_(0.5))  # in place: allowed
    images, labels = ds.decode(range(12))
    assert images.is_cuda and not images.is_inference() and not images.requires_grad
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)).cuda()
    loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_labels_arrive_on_the_images_device(tiny_lds):
    ds = LatentDataset(tiny_lds, device="cuda")
    images, labels = ds.decode([0, 5, 7])
    assert labels.device == images.device and labels.dtype == torch.int64 and labels.tolist() == [0, 2, 1]
    image, label = ds[4]
    assert image.is_cuda and label.is_cuda and int(label) == 1
    (x, y), = list(DataLoader(ds, batch_size=len(ds), num_workers=0))
    assert x.is_cuda and y.is_cuda and y.tolist() == ds.targets
    with_target = LatentDataset(tiny_lds, device="cuda", target_transform=lambda t: t + 10)
    assert with_target[4][1] == 11  # a target transform gets a plain int, as on the CPU


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_training_from_pinned_cpu_batches(tiny_lds):
    """CPU decoding in workers, pinned, copied asynchronously: the usual loader for a GPU run."""
    ds = LatentDataset(tiny_lds)
    expected, _ = ds.decode(np.arange(len(ds)))
    loader = DataLoader(ds, batch_size=8, num_workers=2, pin_memory=True, multiprocessing_context="spawn")
    got, targets = [], []
    for x, y in loader:
        assert x.is_pinned() and y.is_pinned()
        got.append(x.to("cuda", non_blocking=True))
        targets.append(y.to("cuda", non_blocking=True))
    assert torch.allclose(torch.cat(got).cpu(), expected, atol=1e-6)  # other chunks: the CPU rounds alike (<1e-6)
    assert torch.cat(targets).tolist() == ds.targets


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_index_tensors_on_the_gpu_decode(tiny_lds):
    ds = LatentDataset(tiny_lds, device="cuda")
    by_list, labels = ds.decode([3, 9, 3])
    by_tensor, labels_t = ds.decode(torch.tensor([3, 9, 3], device="cuda"))
    assert torch.equal(by_list, by_tensor) and torch.equal(labels, labels_t)
    sampler_batch = torch.randperm(len(ds), device="cuda")[:5]  # as a GPU-side sampler hands them over
    assert ds.decode(sampler_batch)[0].shape == (5, 3, 32, 32)


# === encode, eval, export on the GPU ======================================================================
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_smoke_encode_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    from test_pipeline import crash_after, fast_config, write_folder

    from latentds.encoding import pipeline
    from latentds.format import LdsReader

    folder = write_folder(tmp_path / "data")
    cfg = fast_config("device=cuda")
    first = pipeline.run(str(folder), tmp_path / "a.lds", cfg, progress=False, quiet=True)
    again = pipeline.run(str(folder), tmp_path / "b.lds", cfg, progress=False, quiet=True)
    monkeypatch.setattr(pipeline, "_after_unit", crash_after(2, []))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(str(folder), tmp_path / "r.lds", cfg, progress=False, quiet=True)
    monkeypatch.setattr(pipeline, "_after_unit", None)
    resumed = pipeline.run(str(folder), tmp_path / "r.lds", cfg, progress=False, quiet=True)
    run = LdsReader(resumed).manifest["provenance"]["run"]
    assert run["device"].startswith("cuda") and run["compute"]["device_type"] == "cuda"
    repeat, diff = _tensor_diff(first, again), _tensor_diff(first, resumed)
    print(f"cuda encode: two runs differ by {repeat}, the resumed run by {diff}")
    if repeat == 0.0:
        assert diff == 0.0  # this GPU repeats itself bit for bit: so must a resume
    assert diff <= RUN_ATOL


def _tensor_diff(a: Path, b: Path) -> float:
    """The largest absolute difference over every tensor of two .lds files (latents, labels, generator)."""
    from latentds.format import LdsReader

    ra, rb = LdsReader(a, verify=True), LdsReader(b, verify=True)
    assert set(ra.tensors) == set(rb.tensors)
    return max(float((ra.tensor(n).double() - rb.tensor(n).double()).abs().max()) for n in ra.tensors)


@pytest.mark.parametrize("decode", ["once", "per-epoch"])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_eval_trains_and_tests_on_cuda(tmp_path, capsys, decode):
    from fakedata import create_npz

    lds = make_lds(tmp_path / "t.lds", n=30)
    test = create_npz(tmp_path / "test.npz", (3, 32, 32), classes=CLASSES, per_class=4)
    argv = ["eval", str(lds), "--test", str(test), "--device", "cuda", "--epochs", "2", "--seeds", "2",
            "--model-args", '{"width": 16}', "--decode", decode, "--json", "-", "-q"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    result = json.loads(out)
    assert result["config"]["device"].startswith("cuda") and len(result["accs"]) == 2
    assert all(0 <= a <= 100 for a in result["accs"])
    code, out2, err = run_cli(capsys, *argv)
    print(f"eval on cuda ({decode}): {result['accs']} then {json.loads(out2)['accs']}")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_export_from_a_cuda_decoded_dataset(tmp_path, capsys):
    lds = make_lds(tmp_path / "t.lds", n=40)
    for device in ("cpu", "cuda"):
        code, _, err = run_cli(capsys, "export", str(lds), str(tmp_path / f"{device}.npz"), "--device", device, "-q")
        assert code == 0, err
    cpu, gpu_ = np.load(tmp_path / "cpu.npz"), np.load(tmp_path / "cuda.npz")
    assert np.array_equal(cpu["labels"], gpu_["labels"]) and list(gpu_["classes"]) == CLASSES
    levels = np.abs(cpu["images"].astype(int) - gpu_["images"].astype(int))
    assert levels.max() <= 1  # fp32 on both: only a pixel on a rounding boundary may move one level


# === numerics the CPU cannot show =========================================================================
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_spectral_norm_stays_fp32_under_bf16_autocast():
    from latentds.models import apply_spectral_norm

    torch.manual_seed(0)
    a = apply_spectral_norm(torch.nn.Conv2d(64, 128, 3)).cuda().train()
    b = apply_spectral_norm(torch.nn.Conv2d(64, 128, 3)).cuda().train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 64, 8, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a(x)
    b(x)  # the same power iteration in plain fp32
    sa, sb = a.parametrizations.weight[0], b.parametrizations.weight[0]
    assert torch.equal(sa._u, sb._u) and torch.equal(sa._v, sb._v)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_per_image_dsa_matches_the_cpu():
    from latentds.augment import OPS, augment_per_image

    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for op in OPS:
        on_gpu = augment_per_image(x.cuda(), torch.Generator().manual_seed(1), op)
        on_cpu = augment_per_image(x, torch.Generator().manual_seed(1), op)
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=1e-5, msg=op)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (tools/gpu_check.sh runs it)")
def test_gpu_device_index_beyond_this_machine_is_refused():
    from latentds.devices import resolve_device

    count = torch.cuda.device_count()
    assert resolve_device(f"cuda:{count - 1}").index == count - 1
    with pytest.raises(ConfigError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


# === the CPU halves =======================================================================================
def test_index_tensors_from_any_device_decode(tiny_lds):
    """decode() copies an index tensor to the host before NumPy sees it (a CUDA sampler's output)."""
    ds = LatentDataset(tiny_lds)
    expected, labels = ds.decode([3, 9, 3])
    for index in (torch.tensor([3, 9, 3]).as_subclass(OnDevice), torch.tensor([3, 9, 3], dtype=torch.int32),
                  np.array([3, 9, 3])):
        got, got_labels = ds.decode(index)
        assert torch.equal(got, expected) and torch.equal(got_labels, labels)


@pytest.mark.usefixtures("decode_on_device")
@pytest.mark.parametrize("fmt, name", [("npz", "x.npz"), ("folder", "x"), ("webdataset", "wds"), ("h5", "x.h5")])
def test_export_never_reads_a_device_tensor_as_numpy(tiny_lds, tmp_path, fmt, name):
    """Every exporter copies decoded images and labels to the host before NumPy (``labels.numpy()`` on a
    CUDA tensor was the certain failure GPU.md listed)."""
    from latentds.export import export

    out = export(tiny_lds, tmp_path / name, fmt=fmt, progress=False)
    assert out.exists()


@pytest.mark.usefixtures("decode_on_device")
def test_preview_loader_and_eval_sets_never_read_a_device_tensor_as_numpy(tiny_lds, tmp_path):
    from latentds.evaluation import training_set
    from latentds.export import preview

    preview(tiny_lds, tmp_path / "grid.png", per_class=2)
    ds = LatentDataset(tiny_lds)
    (x, y), = list(DataLoader(ds, batch_size=len(ds)))
    assert y.tolist() == ds.targets
    train = training_set(str(tiny_lds), ipc=2, seed=0)
    assert len(train.labels) == 2 * len(CLASSES)


def test_device_index_beyond_the_machine_is_one_line(one_fake_gpu, tiny_lds, tmp_path, capsys):
    from latentds.devices import resolve_device

    assert resolve_device("cuda:0").index == 0 and resolve_device("cuda").index is None
    with pytest.raises(ConfigError, match=r"'cuda:7' requested but this machine has 1 CUDA device \(cuda:0\)"):
        resolve_device("cuda:7")
    with pytest.raises(ConfigError, match="cuda:7"):
        LatentDataset(tiny_lds, device="cuda:7")
    code, _, err = run_cli(capsys, "export", str(tiny_lds), str(tmp_path / "x.npz"), "--device", "cuda:7")
    assert code == 2 and err.count("\n") == 1 and "has 1 CUDA device" in err
    assert not (tmp_path / "x.npz").exists()


def test_encode_on_a_missing_or_absent_gpu_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from test_pipeline import write_folder

    folder = write_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "o.lds"
    if not HAS_CUDA:
        code, _, err = run_cli(capsys, "encode", str(folder), str(out), "--preset", "smoke", "--device", "cuda")
        assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err, err
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    code, _, err = run_cli(capsys, "encode", str(folder), str(out), "--preset", "smoke", "--set", "device=cuda:7")
    assert code == 2 and err.count("\n") == 1 and "has 1 CUDA device" in err, err
    assert not out.exists() and not out.with_suffix(".work").exists()


@pytest.mark.usefixtures("one_thread")
def test_a_cpu_work_dir_resumed_on_cuda_is_refused_and_kept(tmp_path, monkeypatch, saved_backend_flags):
    """An interrupted CPU run, resumed with device=cuda: one ConfigError naming both, every file untouched."""
    from test_pipeline import crash_after, fast_config, write_folder

    from latentds.encoding import pipeline

    folder = write_folder(tmp_path / "data")
    out = tmp_path / "o.lds"
    monkeypatch.setattr(pipeline, "_after_unit", crash_after(2, []))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(str(folder), out, fast_config(), progress=False, quiet=True)
    monkeypatch.setattr(pipeline, "_after_unit", None)
    work = out.with_suffix(".work")
    before = _snapshot(work)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(ConfigError) as err:
        pipeline.run(str(folder), out, fast_config("device=cuda"), progress=False, quiet=True)
    message = str(err.value)
    assert "\n" not in message and "was run with cpu float32, this run would use cuda" in message, message
    assert "--work-dir" in message
    after = _snapshot(work)
    after.pop("encode.log", None)  # the refused run may say it started; nothing else may change
    before.pop("encode.log", None)
    assert after == before and not out.exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_check_script_data_is_what_its_tool_makes(tmp_path):
    """tests/data/gpu_check.npz (the smoke encode's input on a machine without network) is reproducible."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("gpu_check", root / "tools" / "gpu_check.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    made = tool.make_data(tmp_path / "made.npz")
    shipped, fresh = np.load(root / "tests" / "data" / "gpu_check.npz"), np.load(made)
    assert sorted(shipped.files) == sorted(fresh.files)
    for key in shipped.files:
        assert np.array_equal(shipped[key], fresh[key]), key
    assert (root / "tests" / "data" / "gpu_check.npz").stat().st_size < 300_000
