"""``encode``: a labelled image set in, a .lds file (frozen generator + one learned latent per image) out.

Stages, each cached or checkpointed in the work dir (default: ``OUT`` with suffix ``.work``):

    load source -> generator (train_gan, or --generator FILE) -> feature ConvNet (train_classifier)
    -> select images (ipc per class, seeded) -> inversion, one checkpoint per class (invert/)
    -> condensation, one checkpoint per work unit (units/) -> write the .lds

Every class and unit has its own seed derived from the config seed, so an interrupted run resumes from
the last checkpoint and ends with the same latents (bit-identical on the CPU), whatever order units ran in,
and whichever process ran them: under ``torchrun`` the classes and units are dealt out to the ranks (see
:mod:`latentds.encode.distributed`).

Work dir layout::

    config.json   the resolved config + source fingerprint; a rerun must match it
    encode.log    one line per stage event
    gan/          train_gan's checkpoint, generator.safetensors and samples.png
    classifier/   train_classifier's model, checkpoint and snapshots (the embedding pool)
    invert/       class_XXXXX.safetensors: latents after inversion, their image indices, stats
    units/        cXXXXX_sYYYY.safetensors: condensed latents of one unit, their indices, stats
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from latentds.common import by_class, freeze, resolve_device
from latentds.encode.condense import Unit, condense, derive_seed, work_units
from latentds.encode.config import EncodeConfig
from latentds.encode.distributed import DEFAULT_TIMEOUT_S, Group, assign, from_env
from latentds.encode.embed import EmbeddingSampler
from latentds.encode.invert import (
    InvertUnit,
    invert_latents,
    invert_units,
    units_per_pass,
)
from latentds.encode.state import load_state, save_state
from latentds.errors import ConfigError, LdsNotFoundError
from latentds.format import file_sha256
from latentds.models import generator_contract
from latentds.plan import Compute, get_plan, resolve_precision
from latentds.sources import ImageSet, is_named, load_source

__all__ = ["encode", "resolve_compute", "resolve_device", "select_images"]

# Fields that decide where or how verbosely a run goes, not what it computes: a rerun may change them.
# The precision is recorded as what it resolved to (the work dir's "compute" entry), not as asked.
NON_RESULT_FIELDS = ("device", "precision", "gan.checkpoint_every", "gan.sample_every", "condense.curve_points")
WARMUP_ITERATIONS = 2
SLOW_CPU_SECONDS = 3600.0  # a whole-set CPU estimate above this gets a suggestion to pass --ipc

# Test hook: called after each work unit's checkpoint is written (tests raise from it to simulate a kill).
_after_unit: Callable[[Unit], None] | None = None

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _compute_from(device: torch.device, desc: dict[str, Any]) -> Compute:
    """The Compute a work dir's ``compute`` record describes."""
    amp = desc.get("amp_dtype")
    return Compute(device, getattr(torch, amp) if amp else None, bool(desc.get("channels_last")))


def resolve_compute(device: torch.device, precision: str) -> Compute:
    """The training-stage settings for ``device``: the plan's (probed once per machine) for "auto"."""
    plan = get_plan(device, precision, decode=False)
    plan.apply_backend_flags()
    return plan.compute()


def select_images(labels: torch.Tensor, ipc: int | None, seed: int) -> torch.Tensor:
    """Positions of the images to encode: ``ipc`` per class drawn at random (all if None), by class then index."""
    chosen = []
    for c, idx in by_class(labels).items():
        if ipc is not None and ipc < len(idx):
            g = torch.Generator().manual_seed(derive_seed(seed, "select", c))
            idx = torch.sort(idx[torch.randperm(len(idx), generator=g)[:ipc]]).values
        chosen.append(idx)
    return torch.cat(chosen)


class _Log:
    """Appends timestamped lines to the work dir's log file; echoes them unless quiet."""

    def __init__(self, path: Path, quiet: bool, prefix: str = ""):
        self.path = path
        self.quiet = quiet
        self.prefix = prefix  # "[rank R/W] " under torchrun: ranks append to the same file

    def __call__(self, line: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {self.prefix}{line}\n")
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _result_config(cfg: EncodeConfig) -> dict[str, Any]:
    data = json.loads(json.dumps(asdict(cfg)))
    for key in NON_RESULT_FIELDS:
        section, _, name = key.partition(".")
        if name:
            data[section].pop(name, None)
        else:
            data.pop(section, None)
    return data


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_work_dir(work_dir: Path, record: dict[str, Any], precision: str) -> dict[str, Any]:
    """Write config.json, or refuse a work dir made by another config or other data; returns the record.

    ``record["compute"]`` (device type, autocast dtype, memory format) must match too, so a run never
    resumes on another kind of device or at another precision. Under ``precision="auto"`` a resumed run
    adopts the work dir's compute (a new probe on the same machine may choose differently).
    """
    path = work_dir / "config.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: unreadable ({exc}); delete the work dir {work_dir} or pass another --work-dir") from exc
        old, new = saved.get("compute"), record["compute"]
        if old != new:
            if old is None or old.get("device_type") != new["device_type"] or precision != "auto":
                raise ConfigError(
                    f"work dir {work_dir} was run with {_describe_compute(old)}, this run would use "
                    f"{_describe_compute(new)}; mixing them would change its numbers. Rerun with the same --device "
                    "and --precision (auto adopts the work dir's), or pass another --work-dir"
                )
            record = {**record, "compute": old}
        if saved != record:
            a, b = _flatten(saved), _flatten(record)
            diff = sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))
            shown = "; ".join(f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}" for k in diff[:8])
            hint = ""
            if (work_dir / "gan" / "generator.safetensors").exists():
                hint = (f" To reuse its trained generator, pass --generator {work_dir / 'gan' / 'generator.safetensors'} "
                        "with a new work dir.")
            raise ConfigError(
                f"work dir {work_dir} belongs to a run with different settings ({shown}{' ...' if len(diff) > 8 else ''}); "
                f"delete it or pass another --work-dir.{hint}"
            )
        return record
    from latentds.format.writer import atomic_write

    atomic_write(path, [json.dumps(record, indent=2, sort_keys=True).encode("utf-8")])
    return record


def _describe_compute(c: dict[str, Any] | None) -> str:
    if not c:
        return "an unrecorded device and precision (an older latentds)"
    layout = ", channels_last" if c.get("channels_last") else ""
    return f"{c.get('device_type')} {c.get('amp_dtype') or 'float32'}{layout}"


def _load_generator(path: Path, data: ImageSet, device: torch.device) -> nn.Module:
    from latentds.checkpoint import load_model

    generator = load_model(path, device)
    try:
        contract = generator_contract(generator)
    except ConfigError as e:
        raise ConfigError(f"generator {path} does not fit {data.name}: {e}") from None
    problems = []
    if contract.num_classes != data.num_classes:
        problems.append(f"it has {contract.num_classes} classes, the data {data.num_classes}")
    if contract.image_shape != data.image_shape:
        made, have = ("x".join(map(str, s)) for s in (contract.image_shape, data.image_shape))
        problems.append(f"it makes {made} images (C x H x W), the data has {have}")
    if problems:
        raise ConfigError(f"generator {path} does not fit {data.name}: {'; '.join(problems)}")
    return generator


def _fresh_storage(module: nn.Module) -> nn.Module:
    """Copy every parameter and buffer into its own allocation, in place; returns the module.

    Weights loaded from a safetensors file sit at unaligned offsets of one buffer, and oneDNN then picks
    kernels that round differently from those for freshly trained (aligned) weights. Copying both the same
    way makes a resumed run, which loads the cached generator, bit-identical to an uninterrupted one.
    """
    module.load_state_dict({k: v.detach().clone() for k, v in module.state_dict().items()}, assign=True)
    return module


def _json_safe(value: Any) -> Any:
    """Drop what JSON cannot hold (NaN, tensors) from stats destined for the manifest."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _json_safe(value.item())
    return str(value)


def _peak_memory(device: torch.device) -> dict[str, Any]:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    mem: dict[str, Any] = {"peak_rss_mib": round(rss_kib / 1024, 1)}
    if device.type == "cuda":
        mem["peak_cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return mem


# --- the pipeline ----------------------------------------------------------------------------------------
def encode(
    source: str,
    out: str | Path,
    cfg: EncodeConfig,
    work_dir: str | Path | None = None,
    generator_path: str | Path | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
    download: bool = False,
    group: Group | None = None,
    dist_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Encode the train split of ``source`` into the .lds file ``out``; returns its path.

    ``generator_path``: a generator to use instead of training one (a ``save_model`` safetensors file or a
    .lds). Reruns with the same work dir resume; a different config there raises ConfigError.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) or with an initialized process group, every
    rank calls this with the same arguments; ``group`` defaults to :func:`distributed.from_env`. Rank 0
    writes ``out``; the latents are the same as a single process would write.
    """
    cfg.check()
    own_group = group is None
    group = from_env(dist_timeout_s) if group is None else group
    try:
        return _encode(source, out, cfg, work_dir, generator_path, root, progress, quiet, download, group)
    finally:
        if own_group:
            group.close()


def _encode(
    source: str,
    out: str | Path,
    cfg: EncodeConfig,
    work_dir: str | Path | None,
    generator_path: str | Path | None,
    root: str | Path | None,
    progress: bool,
    quiet: bool,
    download: bool,
    group: Group,
) -> Path:
    t_start = time.perf_counter()
    if cfg.condense.parametrization != "latent":
        raise ConfigError(
            "encode writes latents, so condense.parametrization must be 'latent'; the 'pixel' (DM) baseline "
            "runs through latentds.encode.condense.condense directly"
        )
    out = Path(out)
    work_dir = Path(work_dir) if work_dir is not None else out.with_suffix(".work")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None and group.distributed:
        device = torch.device("cuda", group.local_rank % torch.cuda.device_count())  # one GPU per local rank
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # bare "cuda" tensors and library calls go to this rank's GPU, not cuda:0
    show = progress and not quiet and group.is_main  # one set of progress bars, rank 0's
    timing: dict[str, float] = {}
    stage_memory: dict[str, dict[str, Any]] = {}

    def end_stage(name: str, started: float) -> None:
        """Record a stage's wall time and the memory high-water mark at its end (RSS peaks are cumulative)."""
        timing[name] = time.perf_counter() - started
        stage_memory[name] = _peak_memory(device)

    t0 = time.perf_counter()
    first_loads = download and is_named(source)  # then the first rank of each machine loads (downloads) first
    if first_loads and group.local_rank != 0:
        group.barrier()
    data = load_source(source, "train", root=root, download=download, image_size=cfg.image_size, progress=show)
    if first_loads and group.local_rank == 0:
        group.barrier()
    end_stage("load_source", t0)
    gen_file = Path(generator_path) if generator_path is not None else None
    loaded = None
    if gen_file is not None:  # checked before anything is written
        if not gen_file.is_file():
            raise LdsNotFoundError(f"generator file not found: {gen_file}; pass a file written by train-gan or a .lds")
        loaded = _load_generator(gen_file, data, device)

    work_dir.mkdir(parents=True, exist_ok=True)
    log = _Log(work_dir / "encode.log", quiet or not group.is_main,
               f"[rank {group.rank}/{group.world_size}] " if group.distributed else "")
    # Rank 0 chooses the precision and memory format (probed once per machine) and the others follow it.
    compute = resolve_compute(device, cfg.precision) if group.is_main else None
    desc = group.broadcast_json({"device_type": device.type, **compute.describe()} if compute else None)
    record = {
        "config": _result_config(cfg),
        "source": {"name": data.name, "fingerprint": data.fingerprint},
        "generator_file_sha256": file_sha256(gen_file) if gen_file is not None else None,
        "compute": desc,
    }
    record = _check_work_dir(work_dir, record, resolve_precision(cfg.precision))
    compute = _compute_from(device, record["compute"])
    log(f"encode: {data.name}: {len(data)} images, {data.num_classes} classes, {data.image_shape}; "
        f"device {device}, {_describe_compute(record['compute'])}; work dir {work_dir}"
        + (f"; {group.world_size} ranks" if group.distributed else ""))
    mean, std = data.mean_std()

    # --- generator
    t0 = time.perf_counter()
    if loaded is not None:
        generator = loaded
        gan_stats: dict[str, Any] = {"file": str(gen_file), "sha256": record["generator_file_sha256"]}
        log(f"generator: loaded {gen_file} ({generator.arch_name})")
    else:
        from latentds.encode.gan import GENERATOR_FILE, train_gan

        if group.is_main:  # the others wait, then get rank 0's file and load it through the same cache check
            log(f"generator: training {cfg.gan.arch} (width {cfg.gan.width}) for {cfg.gan.iterations} iterations")
            generator, gan_stats = train_gan(data, cfg.gan, work_dir / "gan", device, show, log, compute=compute)
        group.sync_files([work_dir / "gan" / GENERATOR_FILE])
        if not group.is_main:
            generator, gan_stats = train_gan(data, cfg.gan, work_dir / "gan", device, False, log, compute=compute)
    generator = compute.prepare(freeze(_fresh_storage(generator.to(device))))
    end_stage("generator", t0)

    # --- feature net (inversion) and embedding pool (condensation)
    from latentds.encode.classifier import load_snapshots, train_classifier

    t0 = time.perf_counter()
    log(f"classifier: {cfg.classifier.arch} (width {cfg.classifier.width}), {cfg.classifier.epochs} epochs")
    if group.is_main:
        feature_net, cls_stats = train_classifier(data, cfg.classifier, work_dir / "classifier", device, show, log,
                                                  compute=compute)
    group.share_dir(work_dir / "classifier")
    if not group.is_main:
        feature_net, cls_stats = train_classifier(data, cfg.classifier, work_dir / "classifier", device, False, log,
                                                  compute=compute)
    feature_net = compute.prepare(freeze(_fresh_storage(feature_net.to(device))))
    pool = load_snapshots(work_dir / "classifier", device) if cfg.condense.pool_prob > 0 else []
    pool = [compute.prepare(_fresh_storage(net)) for net in pool]
    end_stage("classifier", t0)
    log(f"classifier: done; embedding pool of {len(pool)} pre-trained nets"
        + ("" if pool or cfg.condense.pool_prob == 0 else " (classifier.snapshot_every is 0: random nets only)"))

    # --- selection
    selected = select_images(data.labels, cfg.ipc, cfg.seed)  # (n,) positions into data, by class then index
    sel_labels = data.labels[selected]
    n = len(selected)
    classes_present = torch.unique(sel_labels).tolist()
    log(f"select: {n} images ({'all' if cfg.ipc is None else f'up to {cfg.ipc} per class'})")
    units = work_units(sel_labels, cfg.subset_size)
    inv_units = invert_units(sel_labels, cfg.invert.batch_size)  # positions into `selected`, by class then batch

    inv_dir, unit_dir = work_dir / "invert", work_dir / "units"
    inv_dir.mkdir(exist_ok=True)
    unit_dir.mkdir(exist_ok=True)
    inv_path = {u.name: inv_dir / f"{u.name}.safetensors" for u in inv_units}
    unit_path = {u.name: unit_dir / f"{u.name}.safetensors" for u in units}

    # Who does what: the items no rank has finished yet, dealt out by size (one rank: all of them).
    inv_done = group.any_rank_has([inv_path[u.name] for u in inv_units])
    unit_done = group.any_rank_has([unit_path[u.name] for u in units])
    todo_inv = [u for u, done in zip(inv_units, inv_done) if not done]
    inv_owner = dict(zip([u.name for u in todo_inv], assign([len(u.indices) for u in todo_inv], group.world_size)))
    my_inv = [u for u in todo_inv if inv_owner[u.name] == group.rank]
    todo_units = [u for u, done in zip(units, unit_done) if not done]
    unit_owner = dict(zip([u.name for u in todo_units], assign([len(u.indices) for u in todo_units], group.world_size)))
    mine = [u for u in todo_units if unit_owner[u.name] == group.rank]
    if group.distributed:
        log(f"shard: {len(todo_inv)} inversion units and {len(todo_units)} condensation units over "
            f"{group.world_size} ranks ({len(inv_units) - len(todo_inv)} and {len(units) - len(todo_units)} "
            f"already done); this rank: {len(my_inv)} and {len(mine)}")
    per_pass = units_per_pass(cfg.invert, device)
    class_size = {c: int((sel_labels == c).sum()) for c in classes_present}

    @functools.lru_cache(maxsize=1)  # units come by class: draw each class's z0 once, not once per unit
    def class_z0(c: int) -> torch.Tensor:
        """The class's z0 ~ N(0, I): one (n_class, D) draw from the class's seed."""
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "invert", c))
        return torch.randn(class_size[c], generator_contract(generator).latent_dim, generator=g)

    def z0_of(unit: InvertUnit) -> torch.Tensor:
        """The unit's rows of its class's z0."""
        return class_z0(unit.cls)[unit.offset : unit.offset + len(unit.indices)]

    if group.is_main:
        _estimate(cfg, data, selected, todo_inv, todo_units, per_pass, z0_of, generator, feature_net, pool, mean, std,
                  device, compute, log, group.world_size)

    # --- inversion: this rank's units, per_pass of them in each forward pass
    t0 = time.perf_counter()
    passes = [my_inv[i : i + per_pass] for i in range(0, len(my_inv), per_pass)]
    bar = tqdm(total=len(passes) * cfg.invert.iterations, desc="invert", unit="it", disable=not show, leave=False)
    for batch in passes:
        t_pass = time.perf_counter()
        idx = selected[torch.cat([u.indices for u in batch])]
        local = list(torch.arange(len(idx)).split([len(u.indices) for u in batch]))
        z0 = torch.cat([z0_of(u) for u in batch])
        lat, sts = invert_latents(generator, data.images[idx], data.labels[idx], z0, local, feature_net, cfg.invert,
                                  mean, std, device, compute, bar)
        seconds = (time.perf_counter() - t_pass) / len(batch)
        for u, rows, st in zip(batch, local, sts):
            save_state(inv_path[u.name], {"latents": lat[rows], "indices": idx[rows]},
                       {"kind": "invert", "unit": u.name, "class": u.cls, "stats": _json_safe({**st, "seconds": seconds})})
        names = batch[0].name + (f" .. {batch[-1].name}" if len(batch) > 1 else "")
        f0, f1, p0, p1 = (sum(st[k] * st["num_images"] for st in sts) / len(idx) for k in
                          ("initial_feature_loss", "final_feature_loss", "initial_recon_mse", "final_recon_mse"))
        log(f"invert {names} ({data.classes[batch[0].cls]}{' ...' if len(batch) > 1 else ''}): {len(idx)} images, "
            f"recon MSE {p0:.4f} -> {p1:.4f}, feature loss {f0:.4f} -> {f1:.4f} ({time.perf_counter() - t_pass:.1f} s)")
    bar.close()
    # Rank 0 needs every unit (for the stats); the others the inversion units of their condensation units' classes.
    needed = set(classes_present) if group.is_main else {u.cls for u in mine}
    want = [{0} | {unit_owner[cu.name] for cu in todo_units if cu.cls == u.cls} for u in inv_units]
    group.sync_files([inv_path[u.name] for u in inv_units], want)
    inv_latents = torch.empty(n, generator_contract(generator).latent_dim)
    inv_stats: list[dict[str, Any]] = []
    for u in inv_units:
        if u.cls not in needed:
            continue
        path = inv_path[u.name]
        tensors, meta = load_state(path)  # the checkpoint, not the in-memory copy: resumed runs see the same bits
        _check_indices(path, tensors["indices"], selected[u.indices])
        inv_latents[u.indices] = tensors["latents"]
        inv_stats.append({"class": u.cls, **meta["stats"]})
    end_stage("invert", t0)

    # --- condensation, one work unit at a time
    t0 = time.perf_counter()
    sampler = EmbeddingSampler(pool, cfg.condense.random_width, cfg.condense.pool_prob, data.num_classes,
                               data.image_shape[0], data.image_shape[1], device)
    for unit in mine:
        idx = selected[unit.indices]
        path = unit_path[unit.name]
        lat, st = condense(generator, inv_latents[unit.indices], data.images[idx],
                           data.images[data.class_indices(unit.cls)], unit.cls, sampler, cfg.condense, mean,
                           std, unit.seed(cfg.seed), device, show, compute)
        save_state(path, {"latents": lat, "indices": idx},
                   {"kind": "condense", "unit": unit.name, "stats": _json_safe(st)})
        log(f"condense {unit.name} ({data.classes[unit.cls]}): {len(idx)} latents, L_con {_fmt(st['first_loss'])} -> "
            f"{_fmt(st['last_loss'])}, eval {_fmt(st['eval_loss_before'])} -> {_fmt(st['eval_loss_after'])}, "
            f"moved {st['moved_fraction']:.0%} ({st['seconds']:.1f} s)")
        if _after_unit is not None:
            _after_unit(unit)
    group.sync_files([unit_path[u.name] for u in units], [{0}] * len(units))  # rank 0 writes the file
    if not group.is_main:
        end_stage("condense", t0)
        log(f"done: {len(mine)} units condensed; rank 0 writes {out}")
        group.barrier()  # return once the file exists
        return out
    final = torch.empty(n, generator_contract(generator).latent_dim)
    unit_stats: list[dict[str, Any]] = []
    for unit in units:
        idx = selected[unit.indices]
        path = unit_path[unit.name]
        tensors, meta = load_state(path)
        _check_indices(path, tensors["indices"], idx)
        final[unit.indices] = tensors["latents"]
        unit_stats.append({"unit": unit.name, **meta["stats"]})
    end_stage("condense", t0)

    # --- the file
    t0 = time.perf_counter()
    from latentds.lds import image_spec, save_lds

    provenance = {
        "method": "IT-GAN (GAN inversion + distribution-matching condensation of latents)",
        "source": {"name": data.name, "fingerprint": data.fingerprint, "num_images": len(data), "bytes": data.source_bytes},
        "selection": {"ipc": cfg.ipc, "num_latents": n, "seed": cfg.seed},
        "encode_config": json.loads(json.dumps(asdict(cfg))),
        "losses": _json_safe({
            "gan": _drop_keys(gan_stats, ("wall_time_s", "cached")),
            "classifier": _drop_keys(cls_stats, ("wall_time_s", "cached")),
            "invert": _summarize_invert(inv_stats),
            "condense": _summarize_condense(unit_stats),
        }),
        "python": platform.python_version(),
    }
    timing["total"] = time.perf_counter() - t_start
    provenance["run"] = {  # everything here depends on the machine and on resumes; the rest does not
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "memory": _peak_memory(device),
        "peak_memory_by_stage": stage_memory,  # high-water mark at the end of each stage, in stage order
        "device": str(device),
        "compute": record["compute"],
        "torch_threads": torch.get_num_threads(),
    }
    if group.distributed:
        provenance["run"]["distributed"] = {
            "world_size": group.world_size, "backend": "gloo",
            "units_by_rank": [sum(o == r for o in unit_owner.values()) for r in range(group.world_size)],
        }
    path = save_lds(out, generator, final, sel_labels, data.classes, image_spec(mean, std, data.image_shape, generator_contract(generator).output_range),
                    provenance, _DTYPES[cfg.latent_dtype])
    log(f"wrote {path} ({n} latents, {cfg.latent_dtype}; {path.stat().st_size / 2**20:.2f} MiB) in "
        f"{_duration(time.perf_counter() - t_start)}; write {time.perf_counter() - t0:.1f} s; "
        f"peak RSS {provenance['run']['memory']['peak_rss_mib']:.0f} MiB")
    group.barrier()
    return path


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"


def _drop_keys(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _check_indices(path: Path, stored: torch.Tensor, expected: torch.Tensor) -> None:
    if not torch.equal(stored.to(torch.int64), expected.to(torch.int64)):
        raise ConfigError(f"{path}: checkpoint covers other images than this run selects; delete the work dir "
                          f"{path.parent.parent} or pass another --work-dir")


def _summarize_invert(units: list[dict[str, Any]]) -> dict[str, Any]:
    """Image-weighted means of the units' losses, overall and per class, and the summed time."""
    keys = ("initial_recon_mse", "final_recon_mse", "initial_feature_loss", "final_feature_loss")

    def mean(rows: list[dict[str, Any]]) -> dict[str, float]:
        total = sum(r["num_images"] for r in rows) or 1
        return {k: sum(r[k] * r["num_images"] for r in rows) / total for k in keys}

    classes = sorted({u["class"] for u in units})
    summary: dict[str, Any] = mean(units)
    summary["per_class"] = {str(c): mean([u for u in units if u["class"] == c]) for c in classes}
    summary["units"] = len(units)
    summary["seconds"] = sum(u["seconds"] for u in units)
    return summary


def _summarize_condense(units: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean loss curve over units (same iterations in each) and per-unit first/last/eval figures."""
    curves = [u["loss_curve"] for u in units if u.get("loss_curve")]
    length = min((len(c) for c in curves), default=0)
    mean_curve = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
    keep = ("first_loss", "last_loss", "eval_loss_before", "eval_loss_after", "moved_fraction", "num_latents")
    return {
        "loss_curve": mean_curve,
        "loss_curve_start_iteration": units[0].get("loss_curve_start_iteration", [])[:length] if units else [],
        "units": [{"unit": u["unit"], **{k: u.get(k) for k in keep}} for u in units],
        "moved_fraction": min((u["moved_fraction"] for u in units), default=1.0),
        "seconds": sum(u["seconds"] for u in units),
    }


def _estimate(
    cfg: EncodeConfig,
    data: ImageSet,
    selected: torch.Tensor,
    pending_inv: list[InvertUnit],
    pending_units: list[Unit],
    per_pass: int,
    z0_of: Callable[[InvertUnit], torch.Tensor],
    generator: nn.Module,
    feature_net: nn.Module,
    pool: list[nn.Module],
    mean: list[float],
    std: list[float],
    device: torch.device,
    compute: Compute,
    log: _Log,
    ranks: int = 1,
) -> None:
    """Time a few iterations of each pending stage and log the estimated durations (nothing is kept).

    With several ranks the work divides among them (the estimate assumes all ranks are as fast as this one).
    """
    total = 0.0
    if pending_inv and cfg.invert.iterations > 0:
        batch = pending_inv[:per_pass]
        idx = selected[torch.cat([u.indices for u in batch])]
        local = list(torch.arange(len(idx)).split([len(u.indices) for u in batch]))
        z0 = torch.cat([z0_of(u) for u in batch])

        def run(iterations: int) -> None:
            invert_latents(generator, data.images[idx], data.labels[idx], z0, local, feature_net,
                           replace(cfg.invert, iterations=iterations), mean, std, device, compute)

        run(1)  # untimed: first calls pay one-off costs (kernel selection, allocator growth)
        t = time.perf_counter()
        run(WARMUP_ITERATIONS)
        per_iter = (time.perf_counter() - t) / WARMUP_ITERATIONS
        passes = math.ceil(len(pending_inv) / per_pass)
        # passes of the probe's size; smaller trailing passes cost about the same on a GPU, less on a CPU
        seconds = per_iter * cfg.invert.iterations * math.ceil(passes / ranks)
        total += seconds
        log(f"invert: {per_iter * 1000:.0f} ms per iteration per pass of {len(idx)} latents ({len(batch)} unit{'s' if len(batch) > 1 else ''}) -> "
            f"about {_duration(seconds)} for {passes} passes x {cfg.invert.iterations} iterations"
            + (f" over {ranks} ranks" if ranks > 1 else ""))
    if pending_units and cfg.condense.iterations > 0:
        unit = pending_units[0]
        b = min(cfg.condense.batch_syn, len(unit.indices))
        idx = selected[unit.indices[:b]]
        probe = replace(cfg.condense, iterations=WARMUP_ITERATIONS, eval_nets=0)
        sampler = EmbeddingSampler(pool, probe.random_width, probe.pool_prob, data.num_classes, data.image_shape[0],
                                   data.image_shape[1], device)
        z = torch.randn(b, generator_contract(generator).latent_dim, generator=torch.Generator().manual_seed(0))
        reals = data.images[data.class_indices(unit.cls)]
        condense(generator, z, data.images[idx], reals, unit.cls, sampler, replace(probe, iterations=1), mean, std, 0,
                 device, compute=compute)  # untimed warm-up
        t = time.perf_counter()
        condense(generator, z, data.images[idx], reals, unit.cls, sampler, probe, mean, std, 0, device, compute=compute)
        per_batch = (time.perf_counter() - t) / WARMUP_ITERATIONS
        batches = sum(math.ceil(len(u.indices) / cfg.condense.batch_syn) for u in pending_units)
        seconds = per_batch * cfg.condense.iterations * batches / ranks
        total += seconds
        log(f"condense: {per_batch * 1000:.0f} ms per batch of {b} latents -> about {_duration(seconds)} for "
            f"{len(pending_units)} units ({batches} batches per iteration in all) x {cfg.condense.iterations} iterations"
            + (f" over {ranks} ranks" if ranks > 1 else ""))
    if device.type == "cpu" and cfg.ipc is None and total > SLOW_CPU_SECONDS:
        log(f"note: encoding all {len(selected)} images on the CPU would take about {_duration(total)}; pass "
            "--ipc 10 or --ipc 50 to encode a class-balanced subset, or run on a GPU")
