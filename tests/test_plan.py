"""The execution plan: probe, cache, overrides, and the rule that a machine without bf16 hardware stays fp32."""

from __future__ import annotations

import json

import pytest
import torch

from latentds import plan as plan_mod
from latentds.cli import main
from latentds.errors import ConfigError
from latentds.models import create_model
from latentds.plan import Compute, get_plan


def tiny_generator() -> torch.nn.Module:
    return create_model("biggan32_tiny", num_classes=3, width=4)


@pytest.fixture
def probing(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Turn the probe back on (conftest fixes the plan for the rest of the suite), with a private cache."""
    monkeypatch.setenv("LATENTDS_PROBE", "1")
    monkeypatch.setenv("LATENTDS_CACHE_DIR", str(tmp_path / "plans"))
    # the real probe, made small: one round, short timings, a narrow training net
    monkeypatch.setattr(plan_mod, "ROUNDS", 1)
    monkeypatch.setattr(plan_mod, "PROBE_SECONDS", 0.01)
    monkeypatch.setattr(plan_mod, "TRAIN_WIDTH", 8)
    return tmp_path / "plans"


def test_no_bf16_hardware_keeps_fp32_and_the_fixed_plan_without_a_probe(probing, monkeypatch):
    monkeypatch.setattr(plan_mod, "_cpu_has_bf16", lambda: False)
    plan = get_plan("cpu", "auto", workload="tiny", generator=tiny_generator)
    assert plan.source == "probe"
    assert plan.precision == "fp32" and plan.train_precision == "fp32"  # bf16 is never even tried
    assert all(not key.startswith("bf16") for part in plan.measured.values() for key in part)
    assert plan.decode_chunk in plan_mod.CPU_CHUNKS
    # the second call reads the cache: same choices, nothing measured again
    again = get_plan("cpu", "auto", workload="tiny", generator=tiny_generator)
    assert again.source == "cache" and again.to_dict() | {"source": "probe"} == plan.to_dict()
    # another workload is another key
    assert get_plan("cpu", "auto", workload="other", generator=tiny_generator).source == "probe"
    monkeypatch.setenv("LATENTDS_PROBE", "0")
    fixed = get_plan("cpu", "auto")
    assert (fixed.source, fixed.precision, fixed.channels_last, fixed.decode_chunk) == ("fixed", "fp32", False, 16)


def test_a_candidate_must_beat_fp32_contiguous_by_the_margin(probing, monkeypatch):
    """Near-ties keep today's numbers; a clear win is taken. Rates are faked, the probed code still runs."""
    monkeypatch.setattr(plan_mod, "_cpu_has_bf16", lambda: True)
    rates = {"fp32": 100.0, "fp32/channels_last": 105.0, "bf16": 150.0, "bf16/channels_last": 155.0}
    measured: list[str] = []

    def fake_rounds(calls, items, sync, rounds=None):
        for key, fn in calls.items():  # the real candidates run once each
            fn()
            measured.append(key)
        return {key: rates[key.split("@")[0]] for key in calls}

    monkeypatch.setattr(plan_mod, "_best_of_rounds", fake_rounds)
    monkeypatch.setattr(plan_mod, "_rate", lambda fn, items, sync, min_seconds=0.0: 1.0)  # other chunks: slower
    plan = get_plan("cpu", "auto", workload="tiny", generator=tiny_generator)
    assert plan.precision == "bf16" and not plan.channels_last  # bf16 won by 50 %; channels_last only by 3 %
    assert plan.train_precision == "bf16" and not plan.train_channels_last
    assert plan.compute().amp_dtype == torch.bfloat16
    assert plan.decode_chunk == 32 and len(measured) == 8  # 4 decode and 4 training candidates
    rates["bf16"], rates["bf16/channels_last"] = 108.0, 130.0  # bf16 alone within the margin, with channels_last not
    plan = get_plan("cpu", "bf16", workload="tiny2", generator=tiny_generator)  # fixed bf16: only the format is probed
    assert plan.precision == "bf16" and plan.channels_last


def test_precision_from_argument_environment_and_errors(probing, monkeypatch):
    monkeypatch.setenv("LATENTDS_PROBE", "0")
    monkeypatch.setenv("LATENTDS_PRECISION", "bf16")
    assert get_plan("cpu").precision == "bf16"  # the environment sets the default...
    assert get_plan("cpu", "fp32").precision == "fp32"  # ...and an explicit argument wins
    monkeypatch.setenv("LATENTDS_PRECISION", "fp8")
    with pytest.raises(ConfigError, match=r"\$LATENTDS_PRECISION must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        get_plan("cpu")
    monkeypatch.delenv("LATENTDS_PRECISION")
    with pytest.raises(ConfigError, match="fp16 is for GPU decoding"):
        get_plan("cpu", "fp16")


def test_unreadable_or_foreign_cache_entries_are_probed_again(probing, monkeypatch):
    monkeypatch.setattr(plan_mod, "_cpu_has_bf16", lambda: False)
    get_plan("cpu", "fp32", workload="tiny", generator=tiny_generator)
    (entry,) = probing.glob("plan-*.json")
    entry.write_text("{not json")
    assert get_plan("cpu", "fp32", workload="tiny", generator=tiny_generator).source == "probe"
    data = json.loads(entry.read_text())
    data["plan"]["decode_chunk"] = "lots"  # a damaged entry is not trusted
    entry.write_text(json.dumps(data))
    assert get_plan("cpu", "fp32", workload="tiny", generator=tiny_generator).source == "probe"
    data = json.loads(entry.read_text())
    data["key"]["torch"] = "0.0"  # written by another torch: not this machine's answer
    entry.write_text(json.dumps(data))
    assert get_plan("cpu", "fp32", workload="tiny", generator=tiny_generator).source == "probe"


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


def test_info_system_reports_the_plan(probing, monkeypatch, capsys):
    monkeypatch.setenv("LATENTDS_PROBE", "0")
    assert main(["info", "--system", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["device_type"] == "cpu" and "bf16_hardware" in report["machine"]
    assert report["plan"]["precision"] == "fp32" and report["plan"]["source"] == "fixed"
    assert main(["info", "--system", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "decode" in out and "training" in out and "no probe" in out
    assert main(["info"]) == 2
    assert "--system" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error(probing):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        get_plan("cuda")
