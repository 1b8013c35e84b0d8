"""The per-byte benchmark (bench/per_byte.py, bench/byte_budget.py): what fits in a budget, class balance,
lossless tiling, and cells that resume from the committed records in a later session."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pb():
    return _load("byte_budget")


@pytest.fixture(scope="module")
def bench():
    return _load("per_byte")


def _images(n: int = 200, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    colour = rng.integers(40, 216, (n, 1, 1, 3))  # smooth images (a colour and a ramp each): what JPEG is made for
    ramp = np.linspace(-30, 30, 32)[None, :, None, None] * rng.choice([-1, 1], (n, 1, 1, 1))
    images = np.clip(colour + ramp + rng.normal(0, 2, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return images, labels


def test_every_prefix_of_the_order_is_class_balanced(pb):
    _, labels = _images()
    order = pb.class_balanced_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(len(labels)))
    for k in (10, 50, 200):
        assert np.bincount(labels[order[:k]], minlength=10).tolist() == [k // 10] * 10


def test_files_fill_the_budget_and_count_a_label_byte_each(pb):
    images, labels = _images()
    order = pb.class_balanced_order(labels, seed=0)
    sizes = [len(pb.encode_png(images[i])) + 1 for i in order]
    budget = sum(sizes[:37]) + sizes[37] - 1  # one byte short of the 38th image
    kept, decoded, total = pb.fill_files(images, order, budget, pb.encode_png)
    assert len(kept) == 37 and total == sum(sizes[:37]) <= budget
    assert np.array_equal(decoded, images[kept])  # PNG is lossless


def test_mosaic_tiles_come_back_in_order_and_within_the_budget(pb):
    images, labels = _images()
    order = pb.class_balanced_order(labels, seed=0)
    blobs, counts = pb.mosaic_bytes(images[order[:130]], quality=95)
    back = pb.unmosaic(blobs, counts)
    assert back.shape == (130, 32, 32, 3)
    dist = np.abs(back[:, None].astype(int) - images[order[:130]][None].astype(int)).mean(axis=(2, 3, 4))
    assert (dist.argmin(axis=1) == np.arange(130)).all()  # each tile is its own image, in order
    assert dist.diagonal().max() < 6  # q95 on 16x16-aligned tiles (chroma MCUs too): no tile bleeds into another
    budget = sum(len(b) for b in blobs) + 130
    kept, decoded, total = pb.fill_mosaic(images, order, budget, quality=95)
    assert total <= budget and len(kept) % 10 == 0 and len(kept) >= 120 and len(decoded) == len(kept)


def test_a_budget_nothing_fits_in_is_said_not_rounded_up(pb):
    images, labels = _images()
    order = pb.class_balanced_order(labels, seed=0)
    kept, decoded, total = pb.fill_mosaic(images, order, 100, quality=50)
    assert len(kept) == 0 and total == 0 and decoded.shape[0] == 0
    kept, _, total = pb.fill_files(images, order, 100, pb.encode_png)
    assert len(kept) == 0 and total == 0


def test_a_cell_resumes_from_the_committed_seeds_and_saves_each_new_one(bench, tmp_path, monkeypatch):
    import latentds

    cell = bench.Cell("100", "png")
    meta = {"images": 500, "bytes": 1234, "budget": 2000}
    monkeypatch.setattr(bench, "build_set", lambda c, args: (tmp_path / "set.npz", meta))
    evaluated = []

    def fake_evaluate(spec, test, *, seed, epochs, **kw):
        evaluated.append(seed)
        return type("R", (), {"accs": [50.0 + seed], "curves": [{"train_acc": [0.9]}], "config": {"compute": {}}})()

    monkeypatch.setattr(latentds, "evaluate", fake_evaluate)
    args = type("A", (), {"work": tmp_path, "seeds": 3, "steps": 1000, "data": "cifar", "device": "cpu"})()
    epochs = bench.epochs_for(500, 1000)
    same = {"epochs": epochs, "seconds": 1.0, "final_train_acc": 0.9, "compute": {},
            "set_sha256": str(tmp_path / "set.npz")}
    prior = {"seed_runs": [{"seed": 0, "acc": 40.0, **same},
                           {"seed": 1, "acc": 41.0, **same, "set_sha256": "another set's bytes"}]}
    partials = []
    record = bench.run_cell(cell, args, lambda line: None, partials.append, prior)
    assert evaluated == [1, 2]  # seed 0 came from the committed record; seed 1 was run on other bytes: rerun
    assert record["command"].startswith("python bench/per_byte.py --only png --budgets 100 --steps 1000 --seeds 3  #")
    ceiling = bench.run_cell(bench.Cell("ceiling", "real_all"), args, lambda line: None, lambda partial: None)
    assert ceiling["command"].startswith("python bench/per_byte.py --only real_all --steps 1000")  # no --budgets ceiling
    assert record["accs"] == [40.0, 51.0, 52.0] and not record.get("partial")
    assert [p["accs"] for p in partials] == [[40.0], [40.0, 51.0]] and all(p["partial"] for p in partials)
    ceiling = {**record, "cell": "real_all@ceiling", "budget": "ceiling", "method": "real_all", "bytes": 44_000_000}
    bench.write_outputs([partials[-1], ceiling], tmp_path)  # a running cell is listed as running, not as a result
    assert "running: 2 of 3 seeds, 40.00, 51.00" in (tmp_path / "per-byte-cpu.md").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "per-byte-cpu.png").stat().st_size > 10_000


def test_redo_reruns_a_finished_cell_only_where_its_set_is_other_bytes(bench, tmp_path, monkeypatch):
    import json

    import latentds

    evaluated = []

    def fake_evaluate(spec, test, *, seed, epochs, **kw):
        evaluated.append(seed)
        return type("R", (), {"accs": [60.0 + seed], "curves": [{"train_acc": [0.9]}], "config": {"compute": {}}})()

    monkeypatch.setattr(latentds, "evaluate", fake_evaluate)
    monkeypatch.setattr(bench, "build_set", lambda c, args: (tmp_path / "set.npz", {"images": 500, "bytes": 1, "budget": 2}))
    monkeypatch.setattr(bench, "write_outputs", lambda records, out, stem: (out / f"{stem}.json").write_text(json.dumps(records)))
    epochs = bench.epochs_for(500, 1000)
    run = {"epochs": epochs, "seconds": 1.0, "final_train_acc": 0.9, "compute": {}}
    finished = {"cell": "png@100", "steps": 1000, "seeds": 3, "acc_mean": 41.0, "accs": [40.0, 41.0, 42.0],
                "seed_runs": [{"seed": s, "acc": 40.0 + s, **run} for s in range(3)]}  # no set named: an old record
    results = tmp_path / "per-byte-cpu.json"
    results.write_text(json.dumps([finished]))
    argv = ["per_byte.py", "--only", "png", "--budgets", "100", "--work", str(tmp_path), "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 0 and evaluated == []  # a finished cell is not run again
    monkeypatch.setattr(sys, "argv", argv + ["--redo"])
    assert bench.main() == 0 and evaluated == [0, 1, 2]  # the record named no set: every seed ran on the new one
    (rec,) = json.loads(results.read_text())
    assert rec["accs"] == [60.0, 61.0, 62.0] and {r["set_sha256"] for r in rec["seed_runs"]} == {str(tmp_path / "set.npz")}
    assert bench.main() == 0 and evaluated == [0, 1, 2]  # the same bytes again: every seed kept (the work dir's)
    monkeypatch.setattr(bench, "build_set", lambda c, args: (tmp_path / "other.npz", {"images": 500, "bytes": 1, "budget": 2}))
    assert bench.main() == 0 and evaluated == [0, 1, 2] * 2  # other bytes: the work dir's seeds of the old set rerun
    for seed in range(3):
        (tmp_path / "cells" / "png@100" / f"seed{seed}.json").unlink()
    assert bench.main() == 0 and evaluated == [0, 1, 2] * 2  # the same bytes: every seed kept, from the records alone


def test_bytes_per_image_counts_a_label_byte_and_mosaics_share_their_headers(pb):
    images, _ = _images(n=100)
    sizes = pb.bytes_per_image(images, (20,), (20,))
    assert sizes["raw_uint8"] == 32 * 32 * 3 + 1
    assert sizes["jpeg_file_q20"] == round(sum(len(pb.encode_jpeg(im, 20)) for im in images) / 100 + 1, 1)
    assert sizes["jpeg_mosaic_q20"] < sizes["jpeg_file_q20"] < sizes["png_file"]  # the JPEG header, paid once


def test_the_dm_cell_condenses_as_many_images_as_real_mosaics_fit_and_ships_them_as_mosaics(bench, tmp_path,
                                                                                              monkeypatch):
    from PIL import Image

    images, labels = _images(n=120)
    for i, (im, c) in enumerate(zip(images, labels)):
        (tmp_path / "data" / "train" / f"c{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / "data" / "train" / f"c{c}" / f"{i}.png")
    pb = sys.modules["byte_budget"]
    order = pb.class_balanced_order(labels, seed=0)
    budget = sum(len(b) for b in pb.mosaic_bytes(images[order[:60]], 20)[0]) + 60  # 6 real images per class
    sets = sys.modules["per_byte_sets"]
    monkeypatch.setattr(sets, "lds_bytes", lambda per_class, classes=10, generator=True: budget)
    # 3 passes, not the 200 the preset's pass budget gives 6 per class: this is about bytes, not condensation
    monkeypatch.setattr(sets, "DM_OVERRIDES", (*sets.DM_OVERRIDES, "condense.iterations=3"))
    args = type("A", (), {"work": tmp_path / "work", "data": str(tmp_path / "data"), "device": "cpu"})()
    path, meta = bench.build_set(bench.Cell("100", "dm_mosaic_q20"), args)
    assert meta["encode"]["ipc"] == 6 and "condense.parametrization=pixel" in meta["encode"]["overrides"]
    assert 0 < meta["bytes"] <= budget and meta["images"] % 10 == 0 and meta["images"] <= 60
    with np.load(path) as f:
        assert f["images"].shape == (meta["images"], 32, 32, 3) and f["images"].dtype == np.uint8
        assert np.bincount(f["labels"], minlength=10).tolist() == [meta["images"] // 10] * 10
    with np.load(tmp_path / "work" / "sets" / "dm_mosaic_q20@100.condensed.npz") as f:
        condensed = f["images"]
    assert condensed.shape == (60, 32, 32, 3)
    assert not any(np.array_equal(condensed[0], im) for im in images)  # condensed, not the real images passed on


def _generator(path: Path, width: int) -> Path:
    """A biggan32 generator file of the given width, written the way train-gan writes them."""
    from latentds.checkpoint import save_model
    from latentds.models import create_model

    save_model(path, create_model("biggan32", width=width, num_classes=10, latent_dim=128))
    return path


def test_another_generator_gets_cells_of_its_own_and_must_be_the_budgets_size(bench, tmp_path, monkeypatch):
    sets = sys.modules["per_byte_sets"]
    monkeypatch.setattr(sets, "ARTIFACTS", tmp_path)
    monkeypatch.setattr(sets, "GENERATOR", _generator(tmp_path / "cifar10-biggan32-w16-2000it.safetensors", 16))
    _generator(tmp_path / "cifar10-biggan32-w16-longer.safetensors", 16)
    _generator(tmp_path / "cifar10-biggan32-w32.safetensors", 32)
    assert sets.check_generator("w16-longer") == tmp_path / "cifar10-biggan32-w16-longer.safetensors"
    for name, said in (("w32", "would need budgets"), ("nope", "no generator")):
        with pytest.raises(SystemExit, match=said):
            sets.check_generator(name)
    names = [c.name for c in bench.cells(["100"], ["lds_int8", "gan", "jpeg_mosaic_q20"], "w16-longer")]
    assert names == ["lds_int8+w16-longer@100", "gan+w16-longer@100", "jpeg_mosaic_q20@100"]
    cell = bench.Cell("100", "gan+w16-longer")
    assert (cell.base, cell.generator) == ("gan", "w16-longer")
    assert [c.name for c in bench.cells(["100"], ["lds_int8"])] == ["lds_int8@100"]  # the benchmark's: names kept


def test_a_new_generator_reuses_the_classifier_but_never_another_generators_encoder(tmp_path):
    sets = sys.modules["per_byte_sets"]
    old = sets.encode_dir(tmp_path, "itgan", "100", sets.BENCHMARK_GENERATOR)
    for part in ("classifier", "encoder", "invert"):
        (old / part).mkdir(parents=True)
    target = sets.encode_dir(tmp_path, "itgan", "500", "w16-longer")
    assert target == tmp_path / "encode" / "w16-longer" / "itgan@500.work"
    sets.reuse_stages(tmp_path, "500", target, "itgan", "w16-longer")
    assert sorted(p.name for p in target.iterdir()) == ["classifier"]  # the encoder learnt the old generator's inverse
    inversion = sets.encode_dir(tmp_path, "inversion", "100", sets.BENCHMARK_GENERATOR)
    sets.reuse_stages(tmp_path, "100", inversion, "inversion", sets.BENCHMARK_GENERATOR)
    assert sorted(p.name for p in inversion.iterdir()) == ["classifier", "encoder", "invert"]


def test_gan_samples_are_fingerprinted_by_the_generators_bytes(tmp_path):
    sets = sys.modules["per_byte_sets"]
    from latentds.format import file_sha256

    gen = _generator(tmp_path / "g.safetensors", 16)
    assert sets.set_fingerprint(f"gan:{gen}") == f"gan:{file_sha256(gen)}"  # no machine's path in the records


def test_a_family_keeps_its_colour_whatever_else_is_recorded_and_another_generator_is_dashed():
    report = _load("per_byte_report")
    assert report._style("lds_int8") == (report.COLOURS["lds_int8"], "o", "-")
    assert report._style("lds_int8+w16-10000it") == (report.COLOURS["lds_int8"], "s", "--")
    assert len(set(report.COLOURS.values())) == len(report.COLOURS)  # no two families share a colour


def test_the_long_condensation_cells_run_where_they_fit_and_reuse_only_what_they_share(bench, tmp_path):
    sets = sys.modules["per_byte_sets"]
    names = [c.name for c in bench.cells(["100", "500", "all"], ["lds_long", "lds_prior"], "w16-longer")]
    assert names == ["lds_long+w16-longer@500", "lds_long+w16-longer@100",
                     "lds_prior+w16-longer@500", "lds_prior+w16-longer@100"]  # never the whole set: days of passes
    inverted = sets.encode_dir(tmp_path, "inversion", "100", "w16-longer")  # any kind that inverts is a donor
    for part in ("classifier", "encoder", "invert"):
        (inverted / part).mkdir(parents=True)
    long = sets.encode_dir(tmp_path, "long", "100", "w16-longer")
    sets.reuse_stages(tmp_path, "100", long, "long", "w16-longer")
    assert sorted(p.name for p in long.iterdir()) == ["classifier", "encoder", "invert"]
    prior = sets.encode_dir(tmp_path, "prior", "100", "w16-longer")
    sets.reuse_stages(tmp_path, "100", prior, "prior", "w16-longer")
    assert sorted(p.name for p in prior.iterdir()) == ["classifier"]  # it starts from z ~ N(0, I): no encoder
    other = sets.encode_dir(tmp_path, "long", "500", "w16-longer")
    sets.reuse_stages(tmp_path, "500", other, "long", "w16-longer")
    assert sorted(p.name for p in other.iterdir()) == ["classifier", "encoder"]  # another budget's latents: not its own
    kind, overrides = sets.ENCODES["lds_prior"]
    assert kind == "prior" and {"amortized.steps=0", "invert.iterations=0", *sets.LONG_CONDENSE} <= set(overrides)


def test_a_full_method_name_selects_that_method_alone_and_the_passes_curve_runs_where_long_condensation_does(
        bench, tmp_path):
    sets = sys.modules["per_byte_sets"]
    alone = [c.name for c in bench.cells(["100", "500"], ["lds_prior"], "w16-longer")]
    assert alone == ["lds_prior+w16-longer@500", "lds_prior+w16-longer@100"]  # not its shorter-pass cells too
    curve = [c.name for c in bench.cells(["100", "500", "all"], ["lds_prior_p50"], "w16-longer")]
    assert curve == ["lds_prior_p50+w16-longer@500", "lds_prior_p50+w16-longer@100"]  # never the whole set
    family = [c.name for c in bench.cells(["100"], ["lds_prior_p"], "w16-longer")]  # a prefix: the family
    assert family == [f"lds_prior_p{p}+w16-longer@100" for p in sets.CURVE_PASSES]
    kind, overrides = sets.ENCODES["lds_prior_p50"]
    long_kind, long_overrides = sets.ENCODES["lds_prior"]
    # the same encode as lds_prior but for its pass count, in a work dir of its own that takes no encoder
    assert set(overrides) ^ set(long_overrides) == {"condense.iterations=50", "condense.iterations=200"}
    inverted = sets.encode_dir(tmp_path, "inversion", "100", "w16-longer")
    for part in ("classifier", "encoder", "invert"):
        (inverted / part).mkdir(parents=True)
    target = sets.encode_dir(tmp_path, kind, "100", "w16-longer")
    sets.reuse_stages(tmp_path, "100", target, kind, "w16-longer")
    assert sorted(p.name for p in target.iterdir()) == ["classifier"]


def test_the_passes_curve_reads_each_cells_pass_count_from_its_encode(tmp_path):
    report = _load("per_byte_report")

    def record(method, passes, accs, partial=False):
        encode = None if passes is None else {"overrides": ["ipc=100", f"condense.iterations={passes}"]}
        return {"cell": f"{method}@100", "method": method, "budget": "100", "bytes": 1, "images": 1000, "accs": accs,
                "acc_mean": None if partial else sum(accs) / len(accs), "acc_std": 0.1, "seeds": 3,
                "partial": partial, "encode": encode, "epochs": 256, "budget_bytes": 1}

    records = [record("gan+g", None, [44.0]), record("lds_prior+g", 200, [53.0]),
               record("lds_prior_p50+g", 50, [51.0], partial=True), record("lds_int8+g", 5, [39.0]),
               record("lds_prior", 200, [40.0])]  # the benchmark generator's: no curve cell, no series
    assert [(n, r["method"]) for n, r in report.passes_curve(records)[("g", "100")]] == [
        (0, "gan+g"), (50, "lds_prior_p50+g"), (200, "lds_prior+g")]
    assert list(report.passes_curve(records)) == [("g", "100")]
    report.write_outputs(records, tmp_path, "per-byte-test", {"100": 1}, {})
    pytest.importorskip("matplotlib")
    assert (tmp_path / "per-byte-test-passes.png").stat().st_size > 0


def test_a_shared_generator_budget_counts_latentds_files_without_their_generator(bench, tmp_path):
    sets = sys.modules["per_byte_sets"]
    report = _load("per_byte_report")
    assert sets.budget_bytes("100-shared") == 1000 * (sets.LATENT_DIM + 1) + sets.SHARED_HEADER_ALLOWANCE
    assert (sets.budget_bytes("100") - sets.generator_fp16_bytes() - sets.HEADER_ALLOWANCE
            == sets.budget_bytes("100-shared") - sets.SHARED_HEADER_ALLOWANCE)  # the same latents, no generator
    names = [c.name for c in bench.cells(["100-shared"], ["lds", "gan", "jpeg_mosaic_q20", "png"], "w16-longer")]
    assert names == ["jpeg_mosaic_q20@100-shared", "png@100-shared"]  # latentds' rows there are its @100 files

    def record(method, budget, size, accs):
        return {"cell": f"{method}@{budget}", "method": method, "budget": budget, "bytes": size, "images": 1000,
                "accs": accs, "acc_mean": sum(accs) / len(accs), "acc_std": 0.1, "seeds": 3, "epochs": 256}

    records = [record("lds_prior+g", "100", 910_000, [53.0]), record("lds_long+g", "100", 911_000, [49.0]),
               record("lds_int8", "500", 1_425_000, [35.0]), record("jpeg_mosaic_q20", "100-shared", 160_000, [47.0])]
    rows = report.shared_rows(records, {"100-shared": "100"}, 753_172)
    assert [(r["cell"], r["bytes"]) for r in rows] == [("lds_prior+g@100-shared", 910_000 - 753_172)]
    report.write_outputs(records, tmp_path, "per-byte-test", {"100": 900_000, "100-shared": 161_768}, {},
                         {"100-shared": "100"}, 753_172)
    assert [r["cell"] for r in json.loads((tmp_path / "per-byte-test.json").read_text())] == [
        r["cell"] for r in records]  # derived rows are drawn and tabled, never saved as records
    table = (tmp_path / "per-byte-test.md").read_text()
    assert "| 100-shared | lds_prior+g (generator not counted) | 1,000 | 156,828 |" in table
    assert "100/class, generator shared: 161,768" in table
    assert report._style("lds_prior+g" + report.SHARED) == (report.COLOURS["lds_prior"], "D", "--")


@pytest.mark.parametrize("argv, said", [
    (["--only", "nosuch", "lds"], "no method nosuch (methods: "),  # a typo is refused, not skipped
    (["--only", "lds_int8", "--budgets", "100-shared"], "latentds' rows are its files at 100 per class"),
    (["--only", "lds_prior", "--budgets", "all"], "long condensation and its passes curve run at 100 and 500"),
])
def test_a_selection_that_runs_nothing_says_why_in_one_line(bench, tmp_path, monkeypatch, capsys, argv, said):
    monkeypatch.setattr(sys, "argv", ["per_byte.py", *argv, "--plan", "--work", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith("per_byte.py: error: --only") and said in err[-1]
