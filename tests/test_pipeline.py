"""Tests for the encode pipeline, its config and its CLI commands, end to end on a tiny PNG folder."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import precisions
from PIL import Image

from latentds.encoding import pipeline
from latentds.encoding.config import CondenseConfig, EncodeConfig
from latentds.encoding.presets import apply_overrides, list_presets, load_preset
from latentds.errors import (
    ConfigError,
    EmptyClassError,
    LdsNotFoundError,
    SourceNotFoundError,
)
from latentds.format import LdsReader

CLASSES = ["cat", "dog", "ship"]
PER_CLASS = 5
# The smoke preset, shrunk further: a few GAN iterations, two units per class with a partial last batch.
FAST = [
    "gan.iterations=6", "gan.ema_start=3", "gan.checkpoint_every=3", "gan.batch_size=4",
    "classifier.epochs=1", "invert.iterations=3", "condense.iterations=3", "condense.batch_syn=2",
    "condense.batch_real=4", "condense.eval_nets=1", "subset_size=3", "device=cpu",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_folder(root: Path, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


def crash_after(units: int, seen: list[str]):
    """An ``_after_unit`` hook that records unit names and simulates a kill after ``units`` of them."""

    def hook(unit) -> None:
        seen.append(unit.name)
        if len(seen) == units:
            raise KeyboardInterrupt("simulated kill")

    return hook


def fast_config(*extra: str) -> EncodeConfig:
    return apply_overrides(load_preset("smoke"), FAST + list(extra))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images") / "data")


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """One uninterrupted encode, shared by the tests below."""
    out = tmp_path_factory.mktemp("ref") / "ref.lds"
    return pipeline.run(str(folder), out, fast_config(), progress=False, quiet=True)


# --- config ------------------------------------------------------------------------------------------------
def test_reading_a_config_imports_no_torch():
    """The stage configs live in encoding/config.py and the layering in encoding/presets.py, both torch-free."""
    import subprocess
    import sys

    code = ("import sys, latentds.encoding.config as c, latentds.encoding.presets as p; "
            "cfg = p.apply_overrides(p.load_preset('smoke'), ['gan.width=8', 'condense.lr=0.1']); "
            "assert isinstance(cfg.gan, c.GANConfig) and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_condense_default_strategy_is_augment_s():
    from latentds.augment import DEFAULT_STRATEGY

    assert EncodeConfig().condense.dsa_strategy == DEFAULT_STRATEGY


def test_default_preset_by_device():
    from latentds.encoding.presets import default_preset

    assert default_preset("cuda") == "paper" and default_preset("cuda:1") == "paper"
    assert default_preset("cpu") == "cpu"  # never the paper's GPU-days schedule on a CPU


def test_image_size_field():
    cfg = apply_overrides(load_preset("smoke"), ["image_size=28"])
    assert cfg.image_size == 28
    for bad in ("image_size=4", "image_size=true", "image_size=2.5"):
        with pytest.raises(ConfigError, match="image_size"):
            apply_overrides(cfg, [bad])


def test_presets_load_and_differ():
    assert {"smoke", "paper", "cpu"} <= set(list_presets())
    smoke, paper, cpu = load_preset("smoke"), load_preset("paper"), load_preset("cpu")
    assert smoke.gan.arch == "biggan" and smoke.gan.width == 4 and smoke.ipc == 30
    assert all(p.gan.arch == "biggan" and p.gan.disc_arch == "biggan_disc" for p in (smoke, paper, cpu))  # any size
    assert smoke.image_size is None  # native size
    assert paper.gan.width == 64 and paper.gan.iterations == 250_000
    assert paper.invert.iterations == 5000 and paper.invert.lr == 0.1 and paper.invert.batch_size == 50
    assert paper.condense.iterations == 5000 and paper.condense.lr == 0.001 and paper.condense.batch_real == 500
    assert paper.subset_size == 1250 and paper.ipc is None and paper.condense.lam == 0.0
    assert 16 <= cpu.gan.width <= 32
    # every preset is valid JSON that round-trips through asdict
    for name in ("smoke", "paper", "cpu"):
        cfg = load_preset(name)
        assert apply_overrides(cfg, []) == cfg
        json.dumps(asdict(cfg))


def test_overrides_apply_with_types():
    cfg = apply_overrides(load_preset("smoke"), [
        "condense.lr=0.01", "gan.width=32", "ipc=10", "gan.betas=[0.5, 0.9]", "gan.diffaug=translation",
        "latent_dtype=bfloat16", "classifier.width=null", "invert.lambda_pixel=2", "condense.eval_nets=0",
    ])
    assert cfg.condense.lr == 0.01 and cfg.gan.width == 32 and cfg.ipc == 10
    assert cfg.gan.betas == (0.5, 0.9) and cfg.gan.diffaug == "translation" and cfg.latent_dtype == "bfloat16"
    assert cfg.classifier.width is None and cfg.invert.lambda_pixel == 2.0 and cfg.condense.eval_nets == 0
    assert apply_overrides(cfg, ["ipc=none"]).ipc is None


@pytest.mark.parametrize("override, words", [
    ("condense.lrr=0.1", ["condense.lrr", "lr_pixel", "batch_real"]),  # names the valid fields
    ("foo=1", ["foo", "subset_size"]),
    ("gan.width=wide", ["gan.width", "integer"]),
    ("ipc=1.5", ["ipc"]),
    ("invert.units_per_pass=true", ["invert.units_per_pass", "integer"]),
    ("latent_dtype=int4", ["latent_dtype", "float16", "int8"]),
    ("nosection.x=1", ["nosection"]),
    ("ipc", ["key=value"]),
    ("condense.parametrization=pixels", ["parametrization"]),
])
def test_bad_overrides_raise_config_error(override, words):
    with pytest.raises(ConfigError) as err:
        apply_overrides(load_preset("smoke"), [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="smoke"):
        load_preset("fastest")


def test_select_images_is_seeded_per_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 2])
    sel = pipeline.select_images(labels, 2, seed=0)
    assert labels[sel].tolist() == [0, 0, 1, 1, 2]
    assert torch.equal(sel, pipeline.select_images(labels, 2, seed=0))
    assert pipeline.select_images(labels, None, 0).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    picks = {tuple(pipeline.select_images(labels, 2, seed=s).tolist()) for s in range(10)}
    assert len(picks) > 1


# --- end to end --------------------------------------------------------------------------------------------
def test_encode_writes_a_verified_lds_that_loads_as_a_dataset(reference, folder):
    from latentds.dataset import LatentDataset

    reader = LdsReader(reference, verify=True)
    m = reader.manifest
    assert m["num_samples"] == 3 * PER_CLASS and m["classes"] == CLASSES
    labels = reader.labels()
    assert labels.tolist() == sorted(labels.tolist())  # by class, then original index
    prov = m["provenance"]
    assert prov["source"]["num_images"] == 3 * PER_CLASS and len(prov["source"]["fingerprint"]) == 64
    assert prov["source"]["bytes"] > 0
    assert prov["encode_config"]["condense"]["batch_syn"] == 2
    cond = prov["losses"]["condense"]
    assert len(cond["loss_curve"]) == 3 and len(cond["units"]) == 6  # 5 per class in units of 3 + 2
    assert cond["moved_fraction"] == 1.0  # every latent was optimized
    assert prov["losses"]["invert"]["final_feature_loss"] < prov["losses"]["invert"]["initial_feature_loss"]
    assert prov["run"]["memory"]["peak_rss_mib"] > 0 and prov["run"]["timing_s"]["condense"] >= 0
    by_stage = prov["run"]["peak_memory_by_stage"]
    assert list(by_stage) == ["load_source", "generator", "classifier", "invert", "condense"]
    peaks = [v["peak_rss_mib"] for v in by_stage.values()]
    assert peaks == sorted(peaks) and peaks[-1] <= prov["run"]["memory"]["peak_rss_mib"]
    assert "torch" in prov and "tool" in prov
    assert reader.tensors["latents"].dtype == "F16"
    ds = LatentDataset(reference)
    x, y = ds[0]
    assert len(ds) == 3 * PER_CLASS and tuple(x.shape) == (3, 32, 32) and y == 0
    work = reference.with_suffix(".work")
    assert (work / "config.json").is_file() and (work / "encode.log").is_file()
    log = (work / "encode.log").read_text()
    for stage in ("generator:", "classifier:", "select:", "invert c", "condense c", "wrote"):
        assert stage in log
    assert len(list((work / "units").glob("*.safetensors"))) == 6


def test_the_file_records_its_source_by_name_and_hash_not_by_path(reference, folder, capsys):
    from latentds.cli import main
    from latentds.sources import load_source

    with LdsReader(reference) as r:
        source = r.manifest["provenance"]["source"]
        manifest_text = json.dumps(r.manifest)
    assert source["kind"] == "imagefolder" and source["name"] == folder.name and "path" not in source
    assert str(folder) not in manifest_text and str(folder.parent) not in manifest_text  # no directory layout
    assert main(["info", str(reference)]) == 0
    assert str(folder.parent) not in capsys.readouterr().out
    data = load_source(str(folder))
    assert data.provenance(with_path=True)["path"] == str(folder)  # what --record-source-path records


def test_resume_after_interruption_gives_identical_latents(reference, folder, tmp_path, monkeypatch):
    out = tmp_path / "resumed.lds"
    cfg = fast_config()
    seen = []
    monkeypatch.setattr(pipeline, "_after_unit", crash_after(2, seen))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(str(folder), out, cfg, progress=False, quiet=True)
    assert not out.exists()
    assert len(list((tmp_path / "resumed.work" / "units").glob("*.safetensors"))) == 2
    # the remaining units only: the two finished ones are loaded from their checkpoints
    monkeypatch.setattr(pipeline, "_after_unit", lambda unit: seen.append(unit.name))
    pipeline.run(str(folder), out, cfg, progress=False, quiet=True)
    assert len(seen) == 6 and len(set(seen)) == 6
    a, b = LdsReader(reference), LdsReader(out)
    assert torch.equal(a.latents(), b.latents()) and torch.equal(a.labels(), b.labels())
    assert a.manifest["provenance"]["losses"]["condense"]["loss_curve"] == \
        b.manifest["provenance"]["losses"]["condense"]["loss_curve"]


def test_rerun_with_other_config_is_refused(reference, folder):
    with pytest.raises(ConfigError, match="delete it or pass another --work-dir"):
        pipeline.run(str(folder), reference, fast_config("condense.lr=0.5"), progress=False, quiet=True)
    # fields that do not change results may differ; with every checkpoint present nothing is recomputed
    latents = LdsReader(reference).latents()
    pipeline.run(str(folder), reference, fast_config("gan.checkpoint_every=1"), progress=False, quiet=True)
    assert torch.equal(LdsReader(reference).latents(), latents)


def test_warm_up_estimates_are_logged_and_whole_set_cpu_runs_suggest_ipc(folder, tmp_path, monkeypatch):
    from latentds.encoding import estimate

    monkeypatch.setattr(estimate, "SLOW_CPU_SECONDS", 0.0)  # any whole-set CPU job counts as long here
    assert pipeline.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    out = pipeline.run(str(folder), tmp_path / "all.lds", fast_config("ipc=null"), progress=False, quiet=True)
    log = (tmp_path / "all.work" / "encode.log").read_text()
    assert "invert: " in log and "per iteration" in log and "condense: " in log and "about" in log
    assert "pass --ipc 10 or --ipc 50" in log
    assert LdsReader(out).manifest["num_samples"] == 3 * PER_CLASS


def test_bad_inputs_raise_source_errors(tmp_path):
    with pytest.raises(SourceNotFoundError):
        pipeline.run(str(tmp_path / "missing"), tmp_path / "x.lds", fast_config(), progress=False, quiet=True)
    root = write_folder(tmp_path / "data", per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(EmptyClassError, match="empty"):
        pipeline.run(str(root), tmp_path / "y.lds", fast_config(), progress=False, quiet=True)
    assert not (tmp_path / "x.work").exists() and not (tmp_path / "y.work").exists()


def test_generator_file_must_fit_the_data(reference, folder, tmp_path):
    from latentds.checkpoint import save_model
    from latentds.models import create_model

    wrong = save_model(tmp_path / "g5.safetensors", create_model("biggan32_tiny", num_classes=5, width=4))
    with pytest.raises(ConfigError, match="5 classes"):
        pipeline.run(str(folder), tmp_path / "z.lds", fast_config(), generator_path=wrong, progress=False, quiet=True)
    with pytest.raises(LdsNotFoundError):
        pipeline.run(str(folder), tmp_path / "z.lds", fast_config(), generator_path=tmp_path / "none.safetensors",
                        progress=False, quiet=True)
    assert not (tmp_path / "z.work").exists()  # refused before anything was written


# --- commands ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The real CLI parser, so these tests also cover the wiring in latentds.cli."""
    from latentds.cli import build_parser as cli_parser

    return cli_parser()


def test_encode_command_with_existing_generator(reference, folder, tmp_path):
    generator = reference.with_suffix(".work") / "gan" / "generator.safetensors"
    out = tmp_path / "cli.lds"
    args = build_parser().parse_args(
        ["encode", str(folder), str(out), "--preset", "smoke", "--ipc", "2", "--seed", "3", "--device", "cpu",
         "--generator", str(generator), "--latent-dtype", "float32", "-q"]
        + [a for item in FAST if not item.startswith("gan.") for a in ("--set", item)]
    )
    assert args.func(args) == 0
    reader = LdsReader(out, verify=True)
    assert reader.manifest["num_samples"] == 6 and reader.tensors["latents"].dtype == "F32"
    assert reader.manifest["provenance"]["encode_config"]["seed"] == 3


def test_train_gan_command(folder, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="latentds")
    out = tmp_path / "g.safetensors"
    args = build_parser().parse_args(
        ["train-gan", str(folder), str(out), "--preset", "smoke", "--device", "cpu", "--quality-per-class", "4"]
        + [a for item in FAST if item.startswith(("gan.", "classifier.")) for a in ("--set", item)]
    )
    assert args.func(args) == 0
    from latentds.checkpoint import load_model

    assert load_model(out).num_classes == 3
    assert (tmp_path / "g.samples.png").is_file()
    assert "quality" in capsys.readouterr().out
    assert caplog.messages[0] == f"train-gan: loading {folder}"  # said before the first wait, as encode does


def test_smoke_preset_end_to_end_unchanged(tmp_path):
    root = write_folder(tmp_path / "data", per_class=8)
    out = pipeline.run(str(root), tmp_path / "smoke.lds", load_preset("smoke"), progress=False, quiet=True)
    assert LdsReader(out, verify=True).manifest["num_samples"] == 24


# --- precision: a rule, recorded in the work dir, resumes within it ------------------------------------------
def same_tensors(a: Path, b: Path) -> None:
    """Latents, labels and every generator tensor of two files, bit for bit."""
    ra, rb = LdsReader(a), LdsReader(b)
    assert set(ra.tensors) == set(rb.tensors)
    for name in ra.tensors:
        assert torch.equal(ra.tensor(name), rb.tensor(name)), name


def test_same_encode_twice_with_the_default_settings_gives_the_same_file(folder, tmp_path, monkeypatch):
    """No pinned precision: "auto" is the hardware class's rule (bf16 on CPUs with AMX or AVX512-BF16, fp32
    elsewhere), never a timing, so two runs in one process store the same tensors, and record the same compute."""
    from latentds.plan import get_plan

    monkeypatch.delenv("LATENTDS_PRECISION")
    first = pipeline.run(str(folder), tmp_path / "a.lds", fast_config(), progress=False, quiet=True)
    second = pipeline.run(str(folder), tmp_path / "b.lds", fast_config(), progress=False, quiet=True)
    same_tensors(first, second)
    expected = get_plan("cpu").compute().describe()
    for path in (first, second):
        assert LdsReader(path).manifest["provenance"]["run"]["compute"] == {"device_type": "cpu", **expected}
    assert "precision: training" in (tmp_path / "a.work" / "encode.log").read_text()  # auto's choice, said once


@pytest.mark.parametrize("precision", precisions())
def test_interrupted_run_resumes_bit_identically_at_each_precision(precision, folder, tmp_path, monkeypatch):
    """Each numerics path this machine runs: an interrupted run resumes to the bits of an uninterrupted one
    and records its precision; "auto" adopts the work dir's, an explicit other precision is refused."""
    cfg = fast_config(f"precision={precision}")
    ref = pipeline.run(str(folder), tmp_path / "ref.lds", cfg, progress=False, quiet=True)
    compute = LdsReader(ref).manifest["provenance"]["run"]["compute"]
    amp = None if precision == "fp32" else "bfloat16"
    assert compute == {"device_type": "cpu", "amp_dtype": amp, "channels_last": False}
    out = tmp_path / "resumed.lds"
    monkeypatch.setattr(pipeline, "_after_unit", crash_after(3, []))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(str(folder), out, cfg, progress=False, quiet=True)
    monkeypatch.setattr(pipeline, "_after_unit", None)
    other = "fp32" if precision == "bf16" else "bf16"
    with pytest.raises(ConfigError, match=f"was run with cpu {amp or 'float32'}, this run would use cpu"):
        pipeline.run(str(folder), out, fast_config(f"precision={other}"), progress=False, quiet=True)
    monkeypatch.delenv("LATENTDS_PRECISION")  # "auto", whatever this machine's rule says: adopts the work dir's
    pipeline.run(str(folder), out, fast_config(), progress=False, quiet=True)
    same_tensors(ref, out)


def test_packed_inversion_units_match_one_unit_per_pass(reference, folder, tmp_path):
    """Units sharing a forward pass get the updates they would get alone, up to float rounding."""
    out = pipeline.run(str(folder), tmp_path / "packed.lds", fast_config("invert.units_per_pass=3",
                          "condense.iterations=0"), progress=False, quiet=True)
    single = pipeline.run(str(folder), tmp_path / "single.lds", fast_config("condense.iterations=0"),
                             progress=False, quiet=True)
    a, b = LdsReader(single).latents(), LdsReader(out).latents()
    assert torch.allclose(a, b, atol=2e-3)  # fp16 storage: one ulp of ~4 is 2e-3
    inv = LdsReader(out).manifest["provenance"]["losses"]["invert"]
    assert inv["units"] == 3 and set(inv["per_class"]) == {"0", "1", "2"}


def test_dm_pixel_baseline_runs_through_the_pipeline(folder, tmp_path):
    """condense.parametrization=pixel: no generator, no inversion; uint8 images in an .npz; resumable."""
    cfg = fast_config("condense.parametrization=pixel", "condense.pixel_init=real", "ipc=2")
    with pytest.raises(ConfigError, match=r"\.npz"):
        pipeline.run(str(folder), tmp_path / "dm.lds", cfg, progress=False, quiet=True)
    out = pipeline.run(str(folder), tmp_path / "dm.npz", cfg, progress=False, quiet=True)
    with np.load(out, allow_pickle=False) as z:
        images, labels, classes = z["images"], z["labels"], list(z["classes"])
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32, 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] and classes == CLASSES
    work = tmp_path / "dm.work"
    assert not (work / "gan").exists() and not any((work / "invert").iterdir())  # no generator, no inversion
    first = images.copy()
    (tmp_path / "dm.npz").unlink()
    units = sorted((work / "units").glob("*.safetensors"))
    units[-1].unlink()  # a lost unit is recomputed to the same pixels
    out = pipeline.run(str(folder), tmp_path / "dm.npz", cfg, progress=False, quiet=True)
    with np.load(out, allow_pickle=False) as z:
        assert np.array_equal(z["images"], first)


def test_python_api_encode_returns_a_typed_result(reference, folder, tmp_path):
    """latentds.encode: the CLI's layers (preset, config file, overrides, fields) and a result read from the file."""
    import latentds

    generator = reference.with_suffix(".work") / "gan" / "generator.safetensors"
    config = tmp_path / "run.toml"
    config.write_text('preset = "smoke"\nseed = 3\n[invert]\niterations = 2\n')
    result = latentds.encode(
        str(folder), tmp_path / "api.lds", config=config, generator=generator, progress=False,
        overrides={k: json.loads(v) if v[0].isdigit() else v
                   for k, v in (item.split("=", 1) for item in FAST if not item.startswith("gan."))},
        ipc=2, latent_dtype="float32",
    )
    assert isinstance(result, latentds.EncodeResult) and result.preset == "smoke"
    assert result.num_samples == 6 and result.num_classes == 3 and result.file_bytes == result.path.stat().st_size
    assert result.manifest["provenance"]["encode_config"]["seed"] == 3
    assert result.manifest["provenance"]["encode_config"]["invert"]["iterations"] == 3  # overrides beat the file
    assert "total" in result.stage_seconds and result.final_losses["condense_loss"] is not None
    given = result.manifest["provenance"]["losses"]["gan"]  # a given generator: its name and hash, not its folder
    assert given["file"] == "generator.safetensors" and len(given["sha256"]) == 64
    assert str(generator.parent) not in json.dumps(result.manifest)


def test_config_file_layers_and_errors(tmp_path):
    from latentds.encoding.presets import build_config

    f = tmp_path / "c.json"
    f.write_text('{"preset": "smoke", "ipc": 4, "gan": {"width": 8}}')
    cfg, preset = build_config(None, f, ["gan.width=16"], seed=9, condense={"lr": 0.5})
    assert preset == "smoke" and cfg.ipc == 4 and cfg.gan.width == 16 and cfg.seed == 9 and cfg.condense.lr == 0.5
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        build_config(None, f)
    with pytest.raises(ConfigError, match="cannot read"):
        build_config(None, tmp_path / "missing.toml")
    f.write_text('{"preset": 5}')
    with pytest.raises(ConfigError, match="unknown preset 5"):
        build_config(None, f)


def test_python_api_train_gan(folder, tmp_path):
    import latentds
    from latentds.checkpoint import load_model

    out, stats = latentds.train_gan(str(folder), tmp_path / "g.safetensors", "smoke", device="cpu", progress=False,
                                    gan={"iterations": 2, "ema_start": 1, "batch_size": 4})
    assert load_model(out).num_classes == 3 and stats["iterations"] == 2


def test_a_pass_budget_gives_each_class_its_share_of_passes(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(3)
    for c, n in (("cat", 2), ("dog", 6)):  # classes of other sizes: 8 // 2 = 4 passes, 8 // 6 = 1
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    out = pipeline.run(str(root), tmp_path / "b.lds",
                       fast_config("ipc=null", "condense.iterations=4", "condense.pass_budget=8", "subset_size=4"),
                       progress=False, quiet=True)
    units = LdsReader(out).manifest["provenance"]["losses"]["condense"]["units"]
    assert {u["unit"]: u["passes"] for u in units} == {"c00000_s0000": 4, "c00001_s0000": 1, "c00001_s0001": 1}
    assert "c00001_s0001 (dog): 3 latents, 1 passes" in (tmp_path / "b.work" / "encode.log").read_text()
    assert CondenseConfig(iterations=200, pass_budget=25_000).passes(100) == 200  # the cap
    assert CondenseConfig(iterations=200, pass_budget=25_000).passes(5_000) == 5
    assert CondenseConfig(iterations=0, pass_budget=25_000).passes(10) == 0  # no condensation stays none
    fast = load_preset("fast").condense  # the whole set keeps its 5 passes (its 2.2 h); fewer latents get more
    assert [fast.passes(n) for n in (5_000, 500, 100, 10)] == [5, 50, 200, 200]
    for bad in (0, -3, 2.5, True, "many"):
        with pytest.raises(ConfigError, match="condense.pass_budget"):
            CondenseConfig(pass_budget=bad).check()


def test_a_work_dir_from_before_the_pass_budget_resumes_unless_the_run_sets_one(reference, folder):
    record = reference.with_suffix(".work") / "config.json"
    saved = json.loads(record.read_text())
    assert saved["config"]["condense"].pop("pass_budget") is None
    record.write_text(json.dumps(saved))  # as an older latentds wrote it
    latents = LdsReader(reference).latents()
    pipeline.run(str(folder), reference, fast_config(), progress=False, quiet=True)
    assert torch.equal(LdsReader(reference).latents(), latents)
    with pytest.raises(ConfigError, match="condense.pass_budget: None -> 100"):
        pipeline.run(str(folder), reference, fast_config("condense.pass_budget=100"), progress=False, quiet=True)
