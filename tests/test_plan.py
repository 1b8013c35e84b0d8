"""The execution plan: a rule per hardware class (never a timing), overrides, and what info --system shows."""

from __future__ import annotations

import json
import os

import pytest
import torch

from latentds import plan as plan_mod
from latentds.cli import main
from latentds.errors import ConfigError
from latentds.models import create_model
from latentds.plan import CLASSES, Compute, get_plan


@pytest.fixture
def auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pinned precision (the suite pins fp32): what a user gets by default."""
    monkeypatch.delenv("LATENTDS_PRECISION")


def _flags(monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    monkeypatch.setattr(plan_mod, "_cpu_model_and_flags", lambda: ("a CPU", {"avx2", "fma", *flags}))


@pytest.mark.parametrize("flags, expected", [
    ((), ("cpu", "fp32", "fp32")),
    (("bf16",), ("cpu", "fp32", "fp32")),  # ARM's BF16: not measured yet, so fp32
    (("avx512_bf16",), ("cpu-avx512bf16", "bf16", "bf16")),
    (("avx512_bf16", "amx_bf16", "amx_tile"), ("cpu-amx", "bf16", "bf16")),
])
def test_auto_is_the_hardware_class_rule(auto, monkeypatch, flags, expected):
    """A CPU without bf16 hardware keeps fp32 (bf16 would be emulated); an AMX or AVX512-BF16 CPU trains and
    decodes in bf16. Decided by CPU flags alone: timing never enters, so every call agrees."""
    _flags(monkeypatch, *flags)
    bf16 = expected[1] == "bf16"
    plans = [get_plan("cpu") for _ in range(3)]
    assert all(p == plans[0] for p in plans)
    plan = plans[0]
    assert (plan.hardware, plan.train_precision, plan.precision) == expected
    assert plan.channels_last and plan.decode_chunk == 16 and not plan.train_channels_last
    assert plan.compute().amp_dtype == (torch.bfloat16 if bf16 else None)
    assert plan.requested == "auto" and "auto, rule for " + expected[0] in plan.describe()
    assert CLASSES[plan.hardware].evidence  # each rule names the measurement behind it


def test_pinned_precisions_override_the_rule(auto, monkeypatch):
    for flags in ((), ("avx512_bf16",), ("amx_bf16",)):
        _flags(monkeypatch, *flags)
        fp32, bf16 = get_plan("cpu", "fp32"), get_plan("cpu", "bf16")
        assert (fp32.precision, fp32.train_precision, fp32.requested) == ("fp32", "fp32", "fp32")
        assert (bf16.precision, bf16.train_precision) == ("bf16", "bf16")  # runs anywhere, emulated if need be


def test_precision_from_argument_environment_and_errors(monkeypatch):
    monkeypatch.setenv("LATENTDS_PRECISION", "bf16")
    assert get_plan("cpu").precision == "bf16"  # the environment sets the default...
    assert get_plan("cpu", "fp32").precision == "fp32"  # ...and an explicit argument wins
    monkeypatch.setenv("LATENTDS_PRECISION", "fp8")
    with pytest.raises(ConfigError, match=r"\$LATENTDS_PRECISION must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        get_plan("cpu")
    monkeypatch.delenv("LATENTDS_PRECISION")
    with pytest.raises(ConfigError, match="fp16 is for GPU decoding"):
        get_plan("cpu", "fp16")


def test_the_plan_touches_no_cache(auto, tmp_path, monkeypatch):
    """Nothing is probed, so nothing is cached: the user's cache folder stays as it was."""
    monkeypatch.setenv("LATENTDS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    get_plan("cpu")
    assert not os.listdir(tmp_path)


def test_decoding_chunk_does_not_change_the_images():
    """Why the chunk may be chosen for speed alone: each row decodes to the same bits in chunks of 8 or more."""
    torch.manual_seed(0)
    g = create_model("biggan32_tiny", num_classes=3, width=4).eval()
    z, y = torch.randn(64, 128), torch.arange(64) % 3
    with torch.no_grad():
        whole = g(z, y)
        for chunk in (8, 16, 32):
            assert torch.equal(torch.cat([g(z[i:i + chunk], y[i:i + chunk]) for i in range(0, 64, chunk)]), whole)


def test_compute_autocast_and_memory_format():
    net = create_model("convnet3", num_classes=3, width=8)
    x = torch.randn(2, 3, 32, 32)
    assert Compute().autocast().__class__.__name__ == "nullcontext"
    c = Compute(torch.device("cpu"), torch.bfloat16, True)
    c.prepare(net)
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    with c.autocast():
        assert net(x).dtype == torch.bfloat16
    assert c.describe() == {"amp_dtype": "bfloat16", "channels_last": True}


def test_info_system_reports_the_rule(auto, monkeypatch, capsys):
    _flags(monkeypatch)
    assert main(["info", "--system", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["device_type"] == "cpu" and "bf16_hardware" in report["machine"]
    assert report["plan"]["precision"] == "fp32" and report["plan"]["hardware"] == "cpu"
    assert "measured" not in report and "AMD EPYC" in report["rule"]
    assert main(["info", "--system", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "decode" in out and "training" in out and "not by timing" in out
    assert main(["info"]) == 2
    assert "--system" in capsys.readouterr().err


def test_info_system_measure_times_the_alternatives_without_changing_the_plan(auto, monkeypatch, capsys):
    monkeypatch.setattr(plan_mod, "images_per_second", lambda fn, items, sync, seconds: (fn(), 100.0)[1])  # run once, no clock
    assert main(["info", "--system", "--json", "--device", "cpu", "--measure"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["measured"]) == {"decode", "train"}
    assert {"fp32@16", "bf16/channels_last@16"} <= set(report["measured"]["decode"])
    assert {"fp32@64", "bf16@64"} <= set(report["measured"]["train"])
    assert report["plan"] == get_plan("cpu").to_dict()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        get_plan("cuda")
