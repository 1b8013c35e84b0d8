"""Tests for the model registry and architectures: every registered model, at tiny sizes."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from latentds.errors import ConfigError, LatentdsError, UnknownModelError
from latentds.models import (
    apply_spectral_norm,
    count_parameters,
    create_model,
    is_model,
    list_models,
    register_model,
    registry,
    remove_spectral_norm,
)


@dataclass(frozen=True)
class Spec:
    """How to build a registered model small and feed it: kind picks the input maker."""

    kind: str  # "generator" (z, y) | "discriminator" (x, y) | "classifier" (x)
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch: int = 3
    image_shape: tuple[int, int, int] = (3, 32, 32)  # (C, H, W) made or consumed


# Conditional models use 3 classes and batch 3 so the labels cover every class (every embedding row is used).
SPECS: dict[str, Spec] = {
    "biggan": Spec("generator", dict(num_classes=3, latent_dim=16, width=4, image_size=28, channels=1),
                   image_shape=(1, 28, 28)),
    "biggan_disc": Spec("discriminator", dict(num_classes=3, width=4, image_size=64, channels=2),
                        image_shape=(2, 64, 64)),
    "biggan32": Spec("generator", dict(num_classes=3, latent_dim=16, width=4)),
    "biggan32_tiny": Spec("generator", dict(num_classes=3, latent_dim=16)),
    "biggan32_disc": Spec("discriminator", dict(num_classes=3, width=4)),
    "biggan32_disc_tiny": Spec("discriminator", dict(num_classes=3)),
    "convnet3": Spec("classifier", dict(width=8)),
    "resnet18_cifar": Spec("classifier", batch=2),
    "vgg11_cifar": Spec("classifier", batch=2),
    "mobilenetv2_cifar": Spec("classifier", batch=2),
}
NAMES = sorted(SPECS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)  # model init draws from the global RNG


def make_inputs(model: nn.Module, spec: Spec) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    b = spec.batch
    if spec.kind == "generator":
        y = torch.arange(b) % model.num_classes
        return torch.randn(b, model.latent_dim, generator=g), y
    if spec.kind == "discriminator":
        y = torch.arange(b) % model.num_classes
        return torch.rand(b, *spec.image_shape, generator=g) * 2 - 1, y
    return (torch.randn(b, spec.kwargs.get("channels", 3), 32, 32, generator=g),)


def expected_shape(spec: Spec) -> tuple[int, ...]:
    if spec.kind == "generator":
        return (spec.batch, *spec.image_shape)
    if spec.kind == "discriminator":
        return (spec.batch,)
    return (spec.batch, spec.kwargs.get("num_classes", 10))


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- every registered model ----------------------------------------------------------------------------
def test_every_builtin_model_has_a_test_spec() -> None:
    builtin = set()
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        if type(model).__module__.startswith("latentds."):
            builtin.add(name)
    assert builtin == set(SPECS)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_finite(name: str) -> None:
    spec = SPECS[name]
    model = create_model(name, **spec.kwargs)
    out = model(*make_inputs(model, spec))
    assert out.shape == expected_shape(spec)
    assert torch.isfinite(out).all()
    if spec.kind == "generator":
        assert out.abs().max() <= 1.0
    if spec.kind == "classifier":
        feat = model.embed(make_inputs(model, spec)[0])
        assert feat.shape == (spec.batch, model.feat_dim)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    spec = SPECS[name]
    model = create_model(name, **spec.kwargs)
    out = model(*make_inputs(model, spec))
    out.square().mean().backward()
    total = 0.0
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
        total += p.grad.abs().sum().item()
    assert total > 0
    # with labels covering all classes, every row of every class embedding learns
    for mname, m in model.named_modules():
        if isinstance(m, nn.Embedding):
            w = m.parametrizations.weight.original if parametrize.is_parametrized(m) else m.weight
            assert (w.grad.abs().sum(dim=1) > 0).all(), f"an embedding row of {mname} got no gradient"


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name: str) -> None:
    spec = SPECS[name]
    model = create_model(name, **spec.kwargs).eval()
    inputs = make_inputs(model, spec)
    with torch.no_grad():
        assert torch.equal(model(*inputs), model(*inputs))


@pytest.mark.parametrize("name", NAMES)
def test_meta_construction_matches_cpu(name: str) -> None:
    kwargs = SPECS[name].kwargs
    with torch.device("meta"):
        meta = create_model(name, **kwargs)
    assert all(t.is_meta for t in meta.state_dict().values())
    cpu = create_model(name, **kwargs)
    assert state_shapes(meta) == state_shapes(cpu)
    assert count_parameters(meta) == count_parameters(cpu)


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_from_name_and_json_args(name: str) -> None:
    spec = SPECS[name]
    model = create_model(name, **spec.kwargs).eval()
    assert model.arch_name == name
    # arch_args holds every argument, defaults resolved, so a stored file never depends on defaults.
    assert {k: model.arch_args[k] for k in spec.kwargs} == spec.kwargs
    assert set(model.arch_args) == set(inspect.signature(_factory(name)).parameters)
    args = json.loads(json.dumps(model.arch_args))
    rebuilt = create_model(model.arch_name, **args).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    inputs = make_inputs(model, spec)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*inputs), model(*inputs), rtol=0, atol=0)


# --- exact sizes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("biggan32", {}, 4_304_387),
        ("biggan32", {"num_classes": 100}, 4_580_867),
        ("biggan32", {"spectral_norm": True}, 4_304_387),  # SN adds buffers, not parameters
        ("biggan32_disc", {}, 4_207_361),
        ("convnet3", {}, 320_010),
        ("convnet3", {"norm": "batchnorm"}, 320_010),
        ("convnet3", {"norm": "none"}, 320_010 - 3 * 256),
        ("resnet18_cifar", {}, 11_173_962),
    ],
)
def test_parameter_counts(name: str, kwargs: dict[str, Any], expected: int) -> None:
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    assert count_parameters(model) == expected


def test_biggan32_disc_block_sizes() -> None:
    with torch.device("meta"):
        disc = create_model("biggan32_disc")
    sizes = [count_parameters(b) for b in disc.blocks]
    assert sizes == [598_272, 1_245_952, 1_180_160, 1_180_160]


def test_biggan32_full_size_forward() -> None:
    gen = create_model("biggan32").eval()
    z, y = torch.randn(2, 128), torch.tensor([0, 9])
    with torch.no_grad():
        assert gen(z, y).shape == (2, 3, 32, 32)


def test_convnet3_default_embedding_is_2048() -> None:
    net = create_model("convnet3")
    assert net.feat_dim == 2048
    assert net.embed(torch.randn(2, 3, 32, 32)).shape == (2, 2048)
    assert isinstance(net.features[1], nn.GroupNorm) and net.features[1].num_groups == 128


def test_generator_depends_on_label() -> None:
    gen = create_model("biggan32_tiny", num_classes=3, latent_dim=16).eval()
    z = torch.randn(1, 16).expand(3, 16)
    with torch.no_grad():
        out = gen(z, torch.arange(3))
    assert not torch.allclose(out[0], out[1])
    assert not torch.allclose(out[1], out[2])


# --- spectral normalization ------------------------------------------------------------------------------
def test_spectral_norm_wraps_convs_and_linears_only_in_generator() -> None:
    gen = create_model("biggan32_tiny", spectral_norm=True)
    for m in gen.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert parametrize.is_parametrized(m, "weight")
        if isinstance(m, nn.Embedding):
            assert not parametrize.is_parametrized(m)
    disc = create_model("biggan32_disc_tiny")
    assert all(
        parametrize.is_parametrized(m, "weight")
        for m in disc.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))
    )
    plain_disc = create_model("biggan32_disc_tiny", spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain_disc.modules())


def test_remove_spectral_norm_gives_plain_generator() -> None:
    kwargs = dict(num_classes=3, latent_dim=16)
    sn = create_model("biggan32_tiny", spectral_norm=True, **kwargs)
    z, y = torch.randn(3, 16), torch.arange(3)
    for _ in range(2):
        sn(z, y)  # train mode: power iterations and BN running stats move
    sn.eval()
    with torch.no_grad():
        before = sn(z, y)
    assert remove_spectral_norm(sn) is sn
    assert not any(parametrize.is_parametrized(m) for m in sn.modules())

    plain = create_model("biggan32_tiny", spectral_norm=False, **kwargs)
    assert state_shapes(sn) == state_shapes(plain)
    plain.load_state_dict(sn.state_dict(), strict=True)
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(sn(z, y), before)
        torch.testing.assert_close(plain(z, y), before, rtol=0, atol=0)


def test_remove_spectral_norm_keeps_the_normalized_weight() -> None:
    lin = nn.Linear(8, 4)
    apply_spectral_norm(lin).eval()
    expected = lin.weight.detach().clone()
    remove_spectral_norm(lin)
    torch.testing.assert_close(lin.weight.detach(), expected)
    assert torch.linalg.matrix_norm(lin.weight.detach(), ord=2) == pytest.approx(1.0, abs=0.05)


# --- registry errors -------------------------------------------------------------------------------------
def test_unknown_model_names_the_bad_name_and_lists_valid_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("biggan64")
    msg = str(info.value)
    assert "'biggan64'" in msg
    assert all(name in msg for name in list_models())
    assert isinstance(info.value, KeyError) and isinstance(info.value, LatentdsError)
    assert not is_model("biggan64") and is_model("biggan32")


def test_bad_keyword_raises_config_error_naming_model_and_argument() -> None:
    with pytest.raises(ConfigError, match=r"biggan32.*'widht'.*width=64"):
        create_model("biggan32", widht=8)


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("biggan32", {"width": 0}, "width must be >= 1"),
        ("biggan32", {"num_classes": 2.5}, "num_classes must be an integer"),
        ("biggan32", {"latent_dim": True}, "latent_dim must be an integer"),
        ("biggan32", {"spectral_norm": "yes"}, "spectral_norm must be one of"),
        ("biggan32_disc", {"spectral_norm": 1}, "spectral_norm must be one of"),
        ("convnet3", {"norm": "layernorm"}, "norm must be one of"),
        ("convnet3", {"image_size": 4}, "too small for depth 3"),
        ("biggan", {"image_size": 9}, "cannot make 9x9"),
        ("biggan", {"image_size": 2**20}, "image_size must be <= 1024"),
        ("resnet18_cifar", {"channels": 0}, "channels must be >= 1"),
        ("convnet3", {"width": torch.tensor(8)}, "JSON-serializable"),
    ],
)
def test_bad_values_raise_config_error(name: str, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        create_model(name, **kwargs)


def test_list_models_is_sorted_and_register_model_uses_function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    names = list_models()
    assert names == sorted(names)

    def aaa_tiny_linear(features: int = 2) -> nn.Module:
        return nn.Linear(features, 1)

    assert register_model(aaa_tiny_linear) is aaa_tiny_linear
    assert list_models()[0] == "aaa_tiny_linear"
    model = create_model("aaa_tiny_linear", features=3)
    assert model.arch_name == "aaa_tiny_linear" and model.arch_args == {"features": 3}

    def aaa_other() -> nn.Module:
        return nn.Identity()

    aaa_other.__name__ = "aaa_tiny_linear"
    with pytest.raises(ValueError, match="already registered"):
        register_model(aaa_other)


def _factory(name: str):
    from latentds.models.registry import _REGISTRY

    return _REGISTRY[name]


# --- the generator contract and shapes by resolution --------------------------------------------------
@pytest.mark.parametrize(("size", "channels", "bottom", "blocks", "d_blocks"),
                         [(28, 1, 7, 2, 4), (32, 3, 4, 3, 4), (64, 3, 4, 4, 5), (16, 1, 4, 2, 3), (48, 2, 6, 3, 5)])
def test_biggan_layout_by_size(size: int, channels: int, bottom: int, blocks: int, d_blocks: int) -> None:
    from latentds.models import generator_contract

    g = create_model("biggan", num_classes=2, latent_dim=8, width=2, image_size=size, channels=channels)
    d = create_model("biggan_disc", num_classes=2, width=2, image_size=size, channels=channels)
    assert (g.bottom_width, len(g.blocks), len(d.blocks)) == (bottom, blocks, d_blocks)
    contract = generator_contract(g)
    assert contract.image_shape == (channels, size, size) and contract.latent_dim == 8 and contract.num_classes == 2
    x = g(torch.randn(2, 8), torch.tensor([0, 1]))
    assert tuple(x.shape[1:]) == contract.image_shape and x.abs().max() <= contract.output_range[1]
    assert d(x, torch.tensor([0, 1])).shape == (2,)


def test_biggan_at_32_is_biggan32() -> None:
    """The generic factory at 32x32 RGB builds the same modules in the same order: same init, same keys."""
    torch.manual_seed(3)
    a = create_model("biggan32", width=4)
    torch.manual_seed(3)
    b = create_model("biggan", width=4, image_size=32, channels=3)
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_every_generator_declares_a_contract() -> None:
    from latentds.models import generator_contract

    for name, spec in SPECS.items():
        if spec.kind == "generator":
            model = create_model(name, **spec.kwargs)
            assert generator_contract(model).image_shape == spec.image_shape
    with pytest.raises(ConfigError, match="not a generator"):
        generator_contract(create_model("convnet3", width=4))


@pytest.mark.parametrize(("shape", "depth", "feat"), [((1, 28, 28), 3, 1152), ((3, 32, 32), 3, 2048),
                                                      ((3, 64, 64), 4, 2048), ((2, 16, 16), 2, 2048)])
def test_convnet_by_resolution(shape: tuple[int, int, int], depth: int, feat: int) -> None:
    from latentds.models import input_args

    args = input_args("convnet3", shape)
    assert args == {"channels": shape[0], "image_size": shape[1], "depth": depth}
    net = create_model("convnet3", num_classes=4, **args)
    assert net.feat_dim == feat  # width 128
    assert net(torch.randn(2, *shape)).shape == (2, 4)
    assert input_args("resnet18_cifar", shape) == {"channels": shape[0]}


def test_resnet18_cifar_uses_pytorchs_default_init():
    """The reference evaluation nets keep PyTorch's default init: conv weights ~ U(-b, b), b = 1/sqrt(fan_in)
    (kaiming-uniform with a = sqrt(5)), not torchvision's kaiming-normal (std sqrt(2 / fan_out))."""
    import math

    from latentds.models import create_model

    torch.manual_seed(0)
    net = create_model("resnet18_cifar", num_classes=10)
    w = net.layer4[0].conv1.weight.detach()  # 256 -> 512, 3x3: fan_in 2304, fan_out 4608
    bound = 1.0 / math.sqrt(256 * 9)
    assert float(w.abs().max()) <= bound
    assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.05 * bound  # uniform: std = bound / sqrt(3)
    fc = net.fc.weight.detach()
    assert float(fc.abs().max()) <= 1.0 / math.sqrt(512)


def test_spectral_norm_power_iteration_runs_outside_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast (bf16 training) the power iteration and sigma stay fp32: CUDA's autocast would run
    ``mv`` in bf16. Checked on the CPU by watching the autocast state where torch's spectral norm calls mv."""
    lin = apply_spectral_norm(nn.Linear(16, 8)).train()
    ref = nn.Linear(16, 8)
    apply_spectral_norm(ref).train()
    ref.load_state_dict(lin.state_dict())
    seen: list[bool] = []
    mv = torch.mv

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return mv(*args, **kwargs)

    monkeypatch.setattr(torch, "mv", spy)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(x)
        weight = lin.weight
    assert seen and not any(seen)  # every mv of the power iteration and of sigma ran with autocast off
    assert out.dtype == torch.bfloat16 and weight.dtype == torch.float32  # only the layer itself runs in bf16
    monkeypatch.undo()
    ref(x)  # the same two power iterations, without autocast
    torch.testing.assert_close(weight, ref.weight, rtol=0, atol=0)  # same u, v and sigma as plain fp32


def test_spectral_norm_keeps_torchs_state_dict_and_numbers() -> None:
    """Checkpoints written before the fp32 wrapper load unchanged: same keys, same buffers, same weights."""
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(3)
    ours = apply_spectral_norm(nn.Conv2d(4, 6, 3)).train()
    torch.manual_seed(3)
    theirs = spectral_norm(nn.Conv2d(4, 6, 3), n_power_iterations=1, eps=1e-8).train()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for _ in range(3):
        assert torch.equal(ours.weight, theirs.weight)
