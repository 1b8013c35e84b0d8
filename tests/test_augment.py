"""Tests for latentds.augment: Siamese sharing, seeding, per-op behaviour and gradients, known values."""

from __future__ import annotations

import pytest
import torch

from latentds.augment import (
    DEFAULT_STRATEGY,
    OPS,
    DSAParams,
    SiameseAugment,
    apply_dsa,
    dsa,
    parse_strategy,
)
from latentds.errors import ConfigError

# One non-identity parameter set per op, so every op can be forced.
FORCED = {
    "color": DSAParams("color", {"brightness": 0.3, "saturation": 1.5, "contrast": 0.7}),
    "crop": DSAParams("crop", {"dx": 3, "dy": -2}),
    "cutout": DSAParams("cutout", {"top": 4, "left": 10, "height": 16, "width": 16}),
    "flip": DSAParams("flip", {"flip": 1}),
    "scale": DSAParams("scale", {"sx": 1.15, "sy": 0.9}),
    "rotate": DSAParams("rotate", {"degrees": 12.0}),
}


def images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """Random, non-symmetric images (B, 3, size, size)."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_forced_covers_every_op():
    assert set(FORCED) == set(OPS) == set(parse_strategy(DEFAULT_STRATEGY))


# --- Siamese / broadcast ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", sorted(OPS))
def test_same_params_give_the_same_transform_to_any_batch(op):
    a, b = images(3, seed=1), images(7, seed=2)
    p = FORCED[op]
    torch.testing.assert_close(apply_dsa(torch.cat([a, b]), p), torch.cat([apply_dsa(a, p), apply_dsa(b, p)]))
    # A batch of 3 and a batch of 7 sharing their first image give the same first output.
    b[0] = a[0]
    torch.testing.assert_close(apply_dsa(a, p)[0], apply_dsa(b, p)[0])


@pytest.mark.parametrize("seed", range(12))
def test_sampled_params_are_siamese_and_broadcast(seed):
    p = DSAParams.sample(generator=seed)
    real, syn = images(5, seed=3), images(2, seed=4)
    syn[1] = real[0]
    torch.testing.assert_close(apply_dsa(real, p)[0], apply_dsa(syn, p)[1])
    same = images(1, seed=5).expand(4, -1, -1, -1)
    out = apply_dsa(same, p)
    torch.testing.assert_close(out, out[:1].expand_as(out))


def test_siamese_augment_stream():
    real, syn = images(4, seed=6), images(2, seed=7)
    syn[0] = real[0]
    aug = SiameseAugment(DEFAULT_STRATEGY, seed=0)
    ops = set()
    for _ in range(20):
        ra, sa = aug(real, syn)
        torch.testing.assert_close(ra[0], sa[0])
        ops.add(aug.next().op)
    assert len(ops) >= 4  # the stream draws a variety of ops
    p1, p2 = SiameseAugment(seed=5).next(), SiameseAugment(seed=5).next()
    assert p1 == p2


# --- seeding ---------------------------------------------------------------------------------------------
def test_same_seed_same_output_different_seeds_differ():
    x = images(2)
    torch.testing.assert_close(dsa(x, 123), dsa(x, 123))
    torch.testing.assert_close(dsa(x, torch.Generator().manual_seed(9)), dsa(x, 9))
    draws = [DSAParams.sample(generator=s) for s in range(10)]
    assert len({p.op for p in draws}) >= 3
    assert len({tuple(sorted(p.values.items())) for p in draws}) == 10


def test_global_rng_untouched():
    state = torch.get_rng_state()
    dsa(images(2), 1)
    DSAParams.sample()  # no seed: fresh entropy, still not the global RNG
    SiameseAugment().next()
    assert torch.equal(state, torch.get_rng_state())


def test_generator_advances():
    g = torch.Generator().manual_seed(0)
    draws = [DSAParams.sample(generator=g) for _ in range(5)]
    assert len({tuple(sorted(p.values.items())) for p in draws}) == 5


def test_sampled_ranges():
    g = torch.Generator().manual_seed(0)
    seen: dict[str, list[dict[str, float]]] = {op: [] for op in OPS}
    for _ in range(600):
        p = DSAParams.sample(generator=g)
        seen[p.op].append(p.values)
    assert all(len(v) > 50 for v in seen.values())  # one op drawn uniformly per call
    for v in seen["color"]:
        assert -0.5 <= v["brightness"] <= 0.5 and 0 <= v["saturation"] < 2 and 0.5 <= v["contrast"] < 1.5
    assert {v["dx"] for v in seen["crop"]} == set(range(-4, 5)) == {v["dy"] for v in seen["crop"]}
    for v in seen["cutout"]:
        assert v["height"] == v["width"] == 16 and -8 <= v["top"] <= 24 and -8 <= v["left"] <= 24
    assert {v["flip"] for v in seen["flip"]} == {0.0, 1.0}
    for v in seen["scale"]:
        assert 1 / 1.2 <= v["sx"] <= 1.2 and 1 / 1.2 <= v["sy"] <= 1.2
    assert all(-15 <= v["degrees"] <= 15 for v in seen["rotate"])


def test_image_size_scales_crop_and_cutout():
    g = torch.Generator().manual_seed(0)
    crops = [DSAParams.sample("crop", g, image_size=(64, 16)) for _ in range(200)]
    assert max(p.values["dy"] for p in crops) == 8 and max(p.values["dx"] for p in crops) == 2
    p = DSAParams.sample("cutout", g, image_size=(64, 16))
    assert (p.values["height"], p.values["width"]) == (32, 8)


# --- each op ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", sorted(OPS))
def test_op_changes_image_keeps_shape_dtype_and_is_differentiable(op):
    x0 = images(2, seed=8)
    x = x0.clone().requires_grad_(True)
    out = apply_dsa(x, FORCED[op])
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x0)
    torch.testing.assert_close(x.detach(), x0)  # the input is not modified
    (out * torch.linspace(0.5, 1.5, out.numel()).view_as(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_keeps_float64(op):
    x = images(1).double()
    assert apply_dsa(x, FORCED[op]).dtype == torch.float64


def test_cutout_gradient_is_the_mask():
    x = images(2).requires_grad_(True)
    apply_dsa(x, DSAParams("cutout", {"top": -3, "left": 20, "height": 16, "width": 16})).sum().backward()
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[0:13, 20:32] = True  # the square clipped to the image
    assert torch.all(x.grad[:, :, inside] == 0) and torch.all(x.grad[:, :, ~inside] == 1)


# --- known values ----------------------------------------------------------------------------------------
def test_crop_dx1_shifts_one_column_with_zero_fill():
    x = images(2)
    out = apply_dsa(x, DSAParams("crop", {"dx": 1, "dy": 0}))
    assert torch.all(out[..., 0] == 0)
    torch.testing.assert_close(out[..., 1:], x[..., :-1])
    out = apply_dsa(x, DSAParams("crop", {"dx": 0, "dy": -2}))
    assert torch.all(out[..., -2:, :] == 0)
    torch.testing.assert_close(out[..., :-2, :], x[..., 2:, :])


def test_flip_is_torch_flip_and_no_flip_is_identity():
    x = images(3)
    torch.testing.assert_close(apply_dsa(x, DSAParams("flip", {"flip": 1})), torch.flip(x, dims=[-1]))
    torch.testing.assert_close(apply_dsa(x, DSAParams("flip", {"flip": 0})), x)


def test_rotate_zero_and_scale_one_are_identity():
    x = images(2)
    torch.testing.assert_close(apply_dsa(x, DSAParams("rotate", {"degrees": 0})), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_dsa(x, DSAParams("scale", {"sx": 1, "sy": 1})), x, atol=1e-5, rtol=0)


def test_rotate_90_degrees_matches_rot90():
    x = images(1)
    out = apply_dsa(x, DSAParams("rotate", {"degrees": 90}))
    rotated = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, -1)]
    assert any(torch.allclose(out, r, atol=1e-5) for r in rotated)


def test_scale_two_zooms_out_with_zero_border():
    x = torch.ones(1, 1, 33, 33)
    out = apply_dsa(x, DSAParams("scale", {"sx": 2, "sy": 2}))  # samples [-2, 2]: content shrinks to the centre
    assert out[0, 0, 16, 16] == 1 and out[0, 0, 0, 0] == 0 and out[0, 0, 16, 0] == 0


def test_color_components():
    x = images(2)
    brightness = DSAParams("color", {"brightness": 0.25, "saturation": 1, "contrast": 1})
    torch.testing.assert_close(apply_dsa(x, brightness), x + 0.25)
    grey = apply_dsa(x, DSAParams("color", {"brightness": 0, "saturation": 0, "contrast": 1}))
    torch.testing.assert_close(grey, x.mean(dim=1, keepdim=True).expand_as(x))
    flat = apply_dsa(x, DSAParams("color", {"brightness": 0, "saturation": 1, "contrast": 0}))
    torch.testing.assert_close(flat, x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x))


# --- strategies and errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["none", "None", ""])
def test_none_strategy_returns_input(strategy):
    x = images(2)
    assert dsa(x, 0, strategy) is x
    assert DSAParams.sample(strategy).op == "none"


def test_single_token_strategy_always_draws_it():
    assert {DSAParams.sample("crop_crop", s).op for s in range(5)} == {"crop"}


@pytest.mark.parametrize("strategy", ["color_blur", "colour", "crop__flip", "Crop"])
def test_unknown_token_raises_config_error(strategy):
    with pytest.raises(ConfigError, match="unknown DSA op") as info:
        DSAParams.sample(strategy, 0)
    assert "cutout" in str(info.value)  # names the valid ops
    with pytest.raises(ConfigError):
        SiameseAugment(strategy)
    with pytest.raises(ConfigError):
        dsa(images(1), 0, strategy)


def test_bad_params_raise_config_error():
    with pytest.raises(ConfigError, match="'blur'"):
        DSAParams("blur", {})
    with pytest.raises(ConfigError, match="missing"):
        DSAParams("crop", {"dx": 1})


def test_rejects_non_image_tensors():
    with pytest.raises(ValueError):
        apply_dsa(torch.zeros(3, 32, 32), FORCED["flip"])
    with pytest.raises(ValueError):
        apply_dsa(torch.zeros(1, 3, 32, 32, dtype=torch.long), FORCED["flip"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_result_on_cuda():
    x = images(2)
    for seed in range(6):
        torch.testing.assert_close(dsa(x.cuda(), seed).cpu(), dsa(x, seed), atol=1e-5, rtol=1e-5)


# --- per-image sampling: vectorised, the same numbers as drawing image by image -----------------------
def _old_samplers():
    """The scalar samplers as they were before sampling was vectorised: the reference for the numbers."""
    from latentds import augment as A

    def uniform(g, low, high):
        return low + (high - low) * torch.rand((), generator=g).item()

    def randint(g, low, high):
        return int(torch.randint(low, high + 1, (), generator=g).item())

    def color(g, size):
        return {"brightness": uniform(g, -0.5, 0.5) * A.BRIGHTNESS, "saturation": uniform(g, 0.0, 1.0) * A.SATURATION,
                "contrast": uniform(g, 0.0, 1.0) + A.CONTRAST}

    def crop(g, size):
        max_dy, max_dx = (int(s * A.CROP_RATIO + 0.5) for s in size)
        return {"dx": float(randint(g, -max_dx, max_dx)), "dy": float(randint(g, -max_dy, max_dy))}

    def cutout(g, size):
        h, w = (int(s * A.CUTOUT_RATIO + 0.5) for s in size)
        cy, cx = randint(g, 0, size[0] - h % 2), randint(g, 0, size[1] - w % 2)
        return {"top": float(cy - h // 2), "left": float(cx - w // 2), "height": float(h), "width": float(w)}

    def flip(g, size):
        return {"flip": float(uniform(g, 0.0, 1.0) < A.FLIP_PROB)}

    def scale(g, size):
        return {"sx": uniform(g, 1 / A.SCALE_RATIO, A.SCALE_RATIO), "sy": uniform(g, 1 / A.SCALE_RATIO, A.SCALE_RATIO)}

    def rotate(g, size):
        return {"degrees": uniform(g, -A.ROTATE_DEGREES, A.ROTATE_DEGREES)}

    return {"color": color, "crop": crop, "cutout": cutout, "flip": flip, "scale": scale, "rotate": rotate}


@pytest.mark.parametrize("size", [(32, 32), (28, 28), (64, 16)])
def test_samplers_draw_the_numbers_they_always_drew(size):
    """Condensation's Siamese params (and so every encode) keep their exact numbers."""
    old = _old_samplers()
    for op in OPS:
        g_old, g_new = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        for _ in range(20):
            assert OPS[op][0](g_new, size) == old[op](g_old, size), op
        assert torch.equal(g_old.get_state(), g_new.get_state())
    for seed in range(30):  # the op choice too
        a = DSAParams.sample(generator=seed, image_size=size)
        assert a == DSAParams.sample(generator=seed, image_size=size)


@pytest.mark.parametrize("size", [(32, 32), (64, 16)])
def test_per_image_dsa_is_vectorised_with_the_same_numbers(size, monkeypatch):
    """augment_per_image draws a batch's numbers in one call (eval's DSA cost 2-4 ms per batch of 256 in
    Python before), and gives the very images, and leaves the generator where, image-by-image sampling did."""
    from latentds import augment as A

    old = _old_samplers()
    x = torch.rand(64, 3, *size, generator=torch.Generator().manual_seed(0))

    def reference(x, g, strategy):
        tokens = parse_strategy(strategy)
        op = tokens[int(torch.randint(len(tokens), (), generator=g))]
        return A._apply_per_image(x, op, [old[op](g, size) for _ in range(x.shape[0])])

    calls = []
    real_rand, real_randint = torch.rand, torch.randint
    monkeypatch.setattr(torch, "rand", lambda *a, **k: calls.append("rand") or real_rand(*a, **k))
    monkeypatch.setattr(torch, "randint", lambda *a, **k: calls.append("randint") or real_randint(*a, **k))
    for op in [DEFAULT_STRATEGY, *OPS]:
        g_ref, g_new = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for _ in range(4):
            expected = reference(x, g_ref, op)
            calls.clear()
            got = A.augment_per_image(x, g_new, op)
            assert torch.equal(got, expected), op
            if size[0] == size[1]:
                assert len(calls) == 2, (op, calls)  # the op, then one call for every image's numbers
        assert torch.equal(g_ref.get_state(), g_new.get_state())
