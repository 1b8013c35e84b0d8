"""The embedding pool: independent classifier runs held out from a validation split, an accuracy filter, provenance."""

from __future__ import annotations

import pytest
import torch

from latentds.encoding import pipeline
from latentds.encoding.config import ClassifierConfig, PoolConfig
from latentds.encoding.pool import build_pool, pool_split
from latentds.encoding.presets import apply_overrides, load_preset
from latentds.errors import ConfigError
from latentds.lds import open_lds
from tests.conftest import blobs
from tests.test_pipeline import FAST, write_folder

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CLASSIFIER = ClassifierConfig(width=8, epochs=1, batch_size=16, snapshot_every=1)


def test_split_holds_out_images_from_every_run_and_depends_on_the_seed_only():
    cfg = PoolConfig(runs=3, subset=20, val_size=10)
    val, runs = pool_split(60, cfg, seed=5)
    assert len(val) == 10 and [len(r) for r in runs] == [20, 20, 20]
    for r in runs:
        assert not set(r.tolist()) & set(val.tolist())
    assert len({tuple(r.tolist()) for r in runs}) == 3  # each run its own subset
    val2, runs2 = pool_split(60, cfg, seed=5)
    assert torch.equal(val, val2) and all(torch.equal(a, b) for a, b in zip(runs, runs2))
    assert not torch.equal(pool_split(60, cfg, seed=6)[0], val)
    # subset 0 or larger than what is left: every image that is not held out
    assert len(pool_split(60, PoolConfig(runs=1, subset=0, val_size=10), 0)[1][0]) == 50


def test_pool_runs_snapshots_filter_and_cache(tmp_path):
    data = blobs(12)
    cfg = PoolConfig(runs=2, epochs=2, snapshot_every=1, subset=20, val_size=8, include_main=False)
    nets, stats = build_pool(data, TINY_CLASSIFIER, cfg, tmp_path, torch.device("cpu"), seed=0)
    assert len(nets) == stats["size"] == stats["candidates"] == 4  # 2 runs x 2 snapshots
    assert [t["net"] for t in stats["nets"]] == ["run_00/epoch_0001", "run_00/epoch_0002", "run_01/epoch_0001",
                                                 "run_01/epoch_0002"]
    accs = [t["held_out_acc"] for t in stats["nets"]]
    assert all(0.0 <= a <= 100.0 for a in accs) and stats["held_out"] == 8
    # the two runs start from different seeds: their first snapshots differ
    a, b = (dict(n.named_parameters())["classifier.weight"] for n in (nets[0], nets[2]))
    assert not torch.equal(a, b)
    # a second call loads the runs' files instead of training (same nets, same figures)
    again, stats2 = build_pool(data, TINY_CLASSIFIER, cfg, tmp_path, torch.device("cpu"), seed=0)
    assert stats["runs_cached"] == 0 and stats2["runs_cached"] == 2
    assert stats2["nets"] == stats["nets"] and stats2["train_seconds"] == stats["train_seconds"]
    # the filter keeps exactly the nets at or above the threshold
    cut = sorted(accs)[2]
    kept, stats3 = build_pool(data, TINY_CLASSIFIER, PoolConfig(**{**cfg.__dict__, "min_acc": cut}), tmp_path,
                              torch.device("cpu"), seed=0)
    assert len(kept) == sum(a >= cut for a in accs) == stats3["size"]
    assert [t["kept"] for t in stats3["nets"]] == [a >= cut for a in accs]
    assert max(accs) < 100.0  # one or two epochs of a width-8 net: a threshold of 100 % drops every candidate
    with pytest.raises(ConfigError, match="drops all"):
        build_pool(data, TINY_CLASSIFIER, PoolConfig(**{**cfg.__dict__, "min_acc": 100.0}), tmp_path,
                   torch.device("cpu"), seed=0)


@pytest.mark.parametrize("field, value", [("runs", -1), ("epochs", 0), ("min_acc", 101), ("val_size", 1.0),
                                          ("include_main", 1)])
def test_bad_pool_fields_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        PoolConfig(**{field: value})


def test_encode_records_the_pool_in_the_provenance(tmp_path):
    folder = write_folder(tmp_path / "data", per_class=8)
    cfg = apply_overrides(load_preset("smoke"), FAST + ["pool.runs=2", "pool.epochs=1", "pool.subset=8",
                                                        "pool.val_size=6", "condense.pool_prob=0.5"])
    out = pipeline.run(str(folder), tmp_path / "p.lds", cfg, progress=False, quiet=True)
    with open_lds(out) as f:
        prov = f.manifest["provenance"]
    pool = prov["losses"]["classifier"]["pool"]
    assert prov["encode_config"]["pool"]["runs"] == 2 and prov["encode_config"]["condense"]["pool_prob"] == 0.5
    # the main classifier's one snapshot (smoke: snapshot_every 1, FAST: 1 epoch) + 2 runs x 1 epoch
    assert pool["size"] == pool["candidates"] == 3 and pool["held_out"] == 6
    assert [t["seen_held_out"] for t in pool["nets"]] == [True, False, False]
    assert prov["losses"]["classifier"]["pool_prob"] == 0.5
