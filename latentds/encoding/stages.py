"""The stages of an encode run, as plain functions over a :class:`~latentds.encoding.workdir.Run` (what the
stages share: config, data, device, compute, process group, log, work dir). :mod:`latentds.encoding.pipeline`
calls them in order; each caches or checkpoints its result in the work dir, so a rerun resumes:

- :func:`generator_stage`: the given generator, or the one :func:`~latentds.encoding.gan.train_gan` trains (gan/).
- :func:`classifier_stage`: the real-data ConvNet (inversion's feature net) and the embedding pool (classifier/).
- :func:`plan_work`: the selected images (:func:`select_images`), cut into inversion and condensation units, the
  unfinished ones dealt out to the ranks.
- :func:`invert_stage`: one latent per selected image, one checkpoint per unit (invert/).
- :func:`condense_stage`: the latents (or pixels) condensed per unit, one checkpoint per unit (units/).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentds.checkpoint import load_model
from latentds.encoding.amortized import encoder_z0
from latentds.encoding.classifier import train_classifier
from latentds.encoding.condense import Unit, condense, derive_seed, unit_passes, work_units
from latentds.encoding.distributed import assign
from latentds.encoding.embed import EmbeddingSampler
from latentds.encoding.gan import GENERATOR_FILE, train_gan
from latentds.encoding.invert import (
    InvertUnit,
    invert_latents,
    invert_units,
    units_per_pass,
)
from latentds.encoding.output import fmt
from latentds.encoding.pool import build_pool
from latentds.encoding.state import load_state, save_state
from latentds.encoding.workdir import Run, fresh_storage, json_safe
from latentds.errors import ConfigError
from latentds.models import generator_contract
from latentds.progress import progress_bar
from latentds.sources import ImageSet
from latentds.tensors import by_class, freeze

__all__ = [
    "Work",
    "classifier_stage",
    "condense_stage",
    "generator_stage",
    "invert_stage",
    "load_generator",
    "plan_work",
    "select_images",
]


def select_images(labels: torch.Tensor, ipc: int | None, seed: int) -> torch.Tensor:
    """Positions of the images to encode: ``ipc`` per class drawn at random (all if None), by class then index."""
    chosen = []
    for c, idx in by_class(labels).items():
        if ipc is not None and ipc < len(idx):
            g = torch.Generator().manual_seed(derive_seed(seed, "select", c))
            idx = torch.sort(idx[torch.randperm(len(idx), generator=g)[:ipc]]).values
        chosen.append(idx)
    return torch.cat(chosen)


def load_generator(path: Path, data: ImageSet, device: torch.device) -> nn.Module:
    generator = load_model(path, device)
    try:
        contract = generator_contract(generator)
    except ConfigError as e:
        raise ConfigError(f"generator {path} does not fit {data.name}: {e}") from None
    problems = contract.mismatches("the data", num_classes=data.num_classes, image_shape=data.image_shape)
    if problems:
        raise ConfigError(f"generator {path} does not fit {data.name}: {'; '.join(problems)}")
    return generator


def generator_stage(run: Run, loaded: nn.Module | None, generator_path: str | Path | None) -> tuple[nn.Module, dict]:
    """The given generator, or the one train_gan trains (rank 0 trains; the others load its file)."""
    if loaded is not None:
        generator = loaded
        # its name and hash, not where it lives on this machine (as for the source: a shared file names no paths)
        stats: dict[str, Any] = {"file": Path(generator_path).name, "sha256": run.record["generator_file_sha256"]}
        run.log(f"generator: loaded {generator_path} ({generator.arch_name})")
    else:
        cfg, group = run.cfg, run.group
        if group.is_main:
            run.log(f"generator: training {cfg.gan.arch} (width {cfg.gan.width}) for {cfg.gan.iterations} iterations")
            generator, stats = train_gan(run.data, cfg.gan, run.work_dir / "gan", run.device, run.show, run.log,
                                         compute=run.compute)
        group.sync_files([run.work_dir / "gan" / GENERATOR_FILE])
        if not group.is_main:
            generator, stats = train_gan(run.data, cfg.gan, run.work_dir / "gan", run.device, False, run.log,
                                         compute=run.compute)
    return run.compute.prepare(freeze(fresh_storage(generator.to(run.device)))), stats


def classifier_stage(run: Run, need_feature_net: bool = True) -> tuple[nn.Module | None, list[nn.Module], dict]:
    """The real-data classifier (inversion's feature net) and its snapshots (condensation's embedding pool)."""
    cfg, group, folder = run.cfg, run.group, run.work_dir / "classifier"
    if not need_feature_net and cfg.condense.pool_prob == 0:
        run.log("classifier: not needed (no inversion, random embedding nets only)")
        return None, [], {}
    run.log(f"classifier: {cfg.classifier.arch} (width {cfg.classifier.width}), {cfg.classifier.epochs} epochs")
    if group.is_main:
        feature_net, stats = train_classifier(run.data, cfg.classifier, folder, run.device, run.show, run.log,
                                              compute=run.compute)
    group.share_dir(folder)
    if not group.is_main:
        feature_net, stats = train_classifier(run.data, cfg.classifier, folder, run.device, False, run.log,
                                              compute=run.compute)
    feature_net = run.compute.prepare(freeze(fresh_storage(feature_net.to(run.device)))) if need_feature_net else None
    pool: list[nn.Module] = []
    if cfg.condense.pool_prob > 0:
        if group.is_main:
            pool, stats["pool"] = build_pool(run.data, cfg.classifier, cfg.pool, folder, run.device, cfg.seed,
                                             progress=run.show, log=run.log, compute=run.compute,
                                             normalization=(run.mean, run.std))
        group.share_dir(folder)
        if not group.is_main:  # the pool runs' files are there now: this loads them
            pool, stats["pool"] = build_pool(run.data, cfg.classifier, cfg.pool, folder, run.device, cfg.seed,
                                             compute=run.compute, normalization=(run.mean, run.std))
        pool = [run.compute.prepare(fresh_storage(net)) for net in pool]
    stats["pool_prob"] = cfg.condense.pool_prob
    run.log(f"classifier: done; embedding pool of {len(pool)} pre-trained nets, drawn with probability "
            f"{cfg.condense.pool_prob:g} (else a fresh random ConvNet)"
            + ("" if pool or cfg.condense.pool_prob == 0 else " (no snapshots and pool.runs 0: random nets only)"))
    return feature_net, pool, stats


@dataclass
class Work:
    """The selected images, the work units over them, their checkpoints, and which of them this rank runs."""

    selected: torch.Tensor  # (n,) positions into the data, by class then index
    labels: torch.Tensor  # (n,) their labels
    inv_units: list[InvertUnit]
    units: list[Unit]
    inv_path: dict[str, Path]
    unit_path: dict[str, Path]
    todo_inv: list[InvertUnit]  # not finished by any rank
    todo_units: list[Unit]
    my_inv: list[InvertUnit]  # this rank's share of them
    mine: list[Unit]
    unit_owner: dict[str, int]
    per_pass: int  # inversion units per forward pass
    z0_of: Callable[[InvertUnit], torch.Tensor]


def plan_work(run: Run, generator: nn.Module | None, encoder: nn.Module | None = None) -> Work:
    """Select the images, cut them into inversion and condensation units, and deal the unfinished ones out.

    Inversion starts each class's latents at z0 ~ N(0, I) drawn from the class's seed, or, with a latent
    ``encoder`` (amortized.steps > 0), at its predictions for the class's images."""
    cfg, group = run.cfg, run.group
    selected = select_images(run.data.labels, cfg.ipc, cfg.seed)
    labels = run.data.labels[selected]
    run.log(f"select: {len(selected)} images ({'all' if cfg.ipc is None else f'up to {cfg.ipc} per class'})")
    units = work_units(labels, cfg.subset_size)
    # (pixels: no inversion, so no inversion units)
    inv_units = invert_units(labels, cfg.invert.batch_size) if generator is not None else []
    inv_dir, unit_dir = run.work_dir / "invert", run.work_dir / "units"
    inv_dir.mkdir(exist_ok=True)
    unit_dir.mkdir(exist_ok=True)
    inv_path = {u.name: inv_dir / f"{u.name}.safetensors" for u in inv_units}
    unit_path = {u.name: unit_dir / f"{u.name}.safetensors" for u in units}

    # Who does what: the items no rank has finished yet, dealt out by size (one rank: all of them).
    inv_done = group.any_rank_has([inv_path[u.name] for u in inv_units])
    unit_done = group.any_rank_has([unit_path[u.name] for u in units])
    todo_inv = [u for u, done in zip(inv_units, inv_done) if not done]
    inv_owner = dict(zip([u.name for u in todo_inv], assign([len(u.indices) for u in todo_inv], group.world_size)))
    todo_units = [u for u, done in zip(units, unit_done) if not done]
    unit_owner = dict(zip([u.name for u in todo_units], assign([len(u.indices) for u in todo_units], group.world_size)))
    my_inv = [u for u in todo_inv if inv_owner[u.name] == group.rank]
    mine = [u for u in todo_units if unit_owner[u.name] == group.rank]
    if group.distributed:
        run.log(f"shard: {len(todo_inv)} inversion units and {len(todo_units)} condensation units over "
                f"{group.world_size} ranks ({len(inv_units) - len(todo_inv)} and {len(units) - len(todo_units)} "
                f"already done); this rank: {len(my_inv)} and {len(mine)}")
    class_size = {c: len(idx) for c, idx in by_class(labels).items()}

    @functools.lru_cache(maxsize=1)  # units come by class: draw each class's z0 once, not once per unit
    def class_z0(c: int) -> torch.Tensor:
        """The class's z0: E's predictions, or one (n_class, D) draw of N(0, I) from the class's seed."""
        if encoder is not None:
            return encoder_z0(encoder, run, selected, labels, c)
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "invert", c))
        return torch.randn(class_size[c], generator_contract(generator).latent_dim, generator=g)

    def z0_of(unit: InvertUnit) -> torch.Tensor:
        """The unit's rows of its class's z0."""
        return class_z0(unit.cls)[unit.offset : unit.offset + len(unit.indices)]

    return Work(selected, labels, inv_units, units, inv_path, unit_path, todo_inv, todo_units, my_inv, mine,
                unit_owner, units_per_pass(cfg.invert, run.device), z0_of)


def invert_stage(
    run: Run, work: Work, generator: nn.Module, feature_net: nn.Module
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Invert this rank's units (``per_pass`` of them per forward pass), then gather the latents needed next."""
    cfg, data, group = run.cfg, run.data, run.group
    passes = [work.my_inv[i : i + work.per_pass] for i in range(0, len(work.my_inv), work.per_pass)]
    bar = progress_bar(None, run.show, total=len(passes) * cfg.invert.iterations, desc="invert", unit="it", leave=False)
    clock = time.perf_counter
    for batch in passes:
        t_pass = clock()
        idx = work.selected[torch.cat([u.indices for u in batch])]
        local = list(torch.arange(len(idx)).split([len(u.indices) for u in batch]))
        z0 = torch.cat([work.z0_of(u) for u in batch])
        lat, sts = invert_latents(generator, data.images[idx], data.labels[idx], z0, local, feature_net, cfg.invert,
                                  run.mean, run.std, run.device, run.compute, bar)
        seconds = (clock() - t_pass) / len(batch)
        for u, rows, st in zip(batch, local, sts):
            save_state(work.inv_path[u.name], {"latents": lat[rows], "indices": idx[rows]},
                       {"kind": "invert", "unit": u.name, "class": u.cls, "stats": json_safe({**st, "seconds": seconds})})
        names = batch[0].name + (f" .. {batch[-1].name}" if len(batch) > 1 else "")
        f0, f1, p0, p1 = (sum(st[k] * st["num_images"] for st in sts) / len(idx) for k in
                          ("initial_feature_loss", "final_feature_loss", "initial_recon_mse", "final_recon_mse"))
        run.log(f"invert {names} ({data.classes[batch[0].cls]}{' ...' if len(batch) > 1 else ''}): {len(idx)} images, "
                f"recon MSE {p0:.4f} -> {p1:.4f}, feature loss {f0:.4f} -> {f1:.4f} ({clock() - t_pass:.1f} s)")
    bar.close()
    # Rank 0 needs every unit (for the stats); the others the inversion units of their condensation units' classes.
    needed = set(torch.unique(work.labels).tolist()) if group.is_main else {u.cls for u in work.mine}
    want = [{0} | {work.unit_owner[cu.name] for cu in work.todo_units if cu.cls == u.cls} for u in work.inv_units]
    group.sync_files([work.inv_path[u.name] for u in work.inv_units], want)
    latents = torch.empty(len(work.selected), generator_contract(generator).latent_dim)
    stats: list[dict[str, Any]] = []
    for u in work.inv_units:
        if u.cls not in needed:
            continue
        path = work.inv_path[u.name]
        tensors, meta = load_state(path)  # the checkpoint, not the in-memory copy: resumed runs see the same bits
        _check_indices(path, tensors["indices"], work.selected[u.indices])
        latents[u.indices] = tensors["latents"]
        stats.append({"class": u.cls, **meta["stats"]})
    return latents, stats


def condense_stage(
    run: Run, work: Work, generator: nn.Module | None, pool: list[nn.Module], inv_latents: torch.Tensor | None,
    after_unit: Callable[[Unit], None] | None = None,
) -> tuple[torch.Tensor | None, list[dict[str, Any]]]:
    """Condense this rank's units; rank 0 then gathers every unit's result (the others get None). ``after_unit``
    is called after each unit's checkpoint is written (tests raise from it to simulate a kill)."""
    cfg, data, group = run.cfg, run.data, run.group
    key = "latents" if generator is not None else "images"  # pixels: normalized images (DM)
    sampler = EmbeddingSampler(pool, cfg.condense.random_width, cfg.condense.pool_prob, data.num_classes,
                               data.image_shape[0], data.image_shape[1], run.device)
    passes = unit_passes(cfg.condense, work.mine, data.labels[work.selected])
    for unit in work.mine:
        idx = work.selected[unit.indices]
        init = inv_latents[unit.indices] if inv_latents is not None else None
        unit_cfg = replace(cfg.condense, iterations=passes[unit.name])
        result, st = condense(generator, init, data.images[idx], data.images[data.class_indices(unit.cls)], unit.cls,
                              sampler, unit_cfg, run.mean, run.std, unit.seed(cfg.seed), run.device, run.show,
                              run.compute)
        save_state(work.unit_path[unit.name], {key: result, "indices": idx},
                   {"kind": "condense", "unit": unit.name, "stats": json_safe(st)})
        moved = f", moved {st['moved_fraction']:.0%}" if "moved_fraction" in st else ""
        run.log(f"condense {unit.name} ({data.classes[unit.cls]}): {len(idx)} {key}, {st['passes']} passes, "
                f"L_con {fmt(st['first_loss'])} -> "
                f"{fmt(st['last_loss'])}, eval {fmt(st['eval_loss_before'])} -> {fmt(st['eval_loss_after'])}"
                f"{moved} ({st['seconds']:.1f} s)")
        if after_unit is not None:
            after_unit(unit)
    group.sync_files([work.unit_path[u.name] for u in work.units], [{0}] * len(work.units))  # rank 0 writes
    if not group.is_main:
        return None, []
    shape = (generator_contract(generator).latent_dim,) if generator is not None else data.image_shape
    final = torch.empty(len(work.selected), *shape)
    stats: list[dict[str, Any]] = []
    for unit in work.units:
        path = work.unit_path[unit.name]
        tensors, meta = load_state(path)
        _check_indices(path, tensors["indices"], work.selected[unit.indices])
        final[unit.indices] = tensors[key]
        stats.append({"unit": unit.name, **meta["stats"]})
    return final, stats


def _check_indices(path: Path, stored: torch.Tensor, expected: torch.Tensor) -> None:
    if not torch.equal(stored.to(torch.int64), expected.to(torch.int64)):
        raise ConfigError(f"{path}: checkpoint covers other images than this run selects; delete the work dir "
                          f"{path.parent.parent} or pass another --work-dir")
