"""``encode``: a labelled image set in, a .lds file (frozen generator + one learned latent per image) out.

Stages (:mod:`latentds.encoding.stages`), each cached or checkpointed in the work dir (default: ``OUT`` with
suffix ``.work``):

    load source -> generator (train_gan, or --generator FILE) -> feature ConvNet (train_classifier)
    -> select images (ipc per class, seeded) -> inversion, one checkpoint per class (invert/)
    -> condensation, one checkpoint per work unit (units/) -> write the .lds

With ``condense.parametrization="pixel"`` the same pipeline is the DM baseline: no generator and no
inversion; the selected real images are condensed as pixels and written as uint8 to an ``.npz``.

Every class and unit has its own seed derived from the config seed, so an interrupted run resumes from
the last checkpoint and ends with the same latents (bit-identical on the CPU), whatever order units ran in,
and whichever process ran them: under ``torchrun`` the classes and units are dealt out to the ranks (see
:mod:`latentds.encoding.distributed`).

Work dir layout::

    config.json   the resolved config + source fingerprint; a rerun must match it
    encode.log    one line per stage event
    gan/          train_gan's checkpoint, generator.safetensors and samples.png
    classifier/   train_classifier's model, checkpoint and snapshots (the embedding pool)
    invert/       class_XXXXX.safetensors: latents after inversion, their image indices, stats
    units/        cXXXXX_sYYYY.safetensors: condensed latents of one unit, their indices, stats
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from latentds.devices import resolve_device
from latentds.encoding.amortized import encoder_stage
from latentds.encoding.condense import Unit
from latentds.encoding.config import EncodeConfig
from latentds.encoding.distributed import DEFAULT_TIMEOUT_S, Group, from_env
from latentds.encoding.estimate import estimate
from latentds.encoding.output import write_lds, write_pixels
from latentds.encoding.stages import (
    classifier_stage,
    condense_stage,
    generator_stage,
    invert_stage,
    load_generator,
    plan_work,
    select_images,
)
from latentds.encoding.workdir import (
    NON_RESULT_FIELDS,
    Run,
    RunLog,
    check_work_dir,
    compute_from,
    describe_compute,
    peak_memory,
    resolve_compute,
    result_config,
)
from latentds.errors import ConfigError, LdsNotFoundError
from latentds.format import file_sha256
from latentds.format.staging import sweep_tree
from latentds.plan import get_plan, resolve_precision
from latentds.sources import is_named, load_source

__all__ = ["NON_RESULT_FIELDS", "resolve_compute", "resolve_device", "run", "select_images"]

# Test hook: called after each work unit's checkpoint is written (tests raise from it to simulate a kill).
_after_unit: Callable[[Unit], None] | None = None


def run(
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
    record_source_path: bool = False,
) -> Path:
    """Encode the train split of ``source`` into the .lds file ``out``; returns its path.

    ``generator_path``: a generator to use instead of training one (a ``save_model`` safetensors file or a
    .lds). Reruns with the same work dir resume; a different config there raises ConfigError. The file records
    its source's kind, name and content hash; its full local path only with ``record_source_path``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) or with an initialized process group, every
    rank calls this with the same arguments; ``group`` defaults to :func:`distributed.from_env`. Rank 0
    writes ``out``; the latents are the same as a single process would write.
    """
    cfg.check()
    own_group = group is None
    group = from_env(dist_timeout_s) if group is None else group
    try:
        request = _Request(str(source), Path(out), cfg, Path(work_dir) if work_dir is not None else None,
                           Path(generator_path) if generator_path is not None else None, root, progress, quiet,
                           download, record_source_path)
        return _encode(request, group)
    finally:
        if own_group:
            group.close()


@dataclass(frozen=True)
class _Request:
    """What the caller asked for (encode's arguments)."""

    source: str
    out: Path
    cfg: EncodeConfig
    work_dir: Path | None
    generator_path: Path | None
    root: str | Path | None
    progress: bool
    quiet: bool
    download: bool
    record_source_path: bool = False


def _encode(req: _Request, group: Group) -> Path:
    cfg, out, generator_path = req.cfg, req.out, req.generator_path
    pixels = cfg.condense.parametrization == "pixel"
    _check_output(out, pixels, generator_path)
    run, loaded = _open_run(req, group)
    if pixels:
        generator, gan_stats = None, {}
    else:
        with run.stage("generator"):
            generator, gan_stats = generator_stage(run, loaded, generator_path)
    with run.stage("classifier"):
        feature_net, pool, cls_stats = classifier_stage(run, need_feature_net=not pixels)
    encoder, enc_stats = None, {}
    if not pixels and cfg.amortized.steps > 0:
        with run.stage("encoder"):
            encoder, enc_stats = encoder_stage(run, generator, feature_net)
        cls_stats = {**cls_stats, "encoder": enc_stats}
    work = plan_work(run, generator, encoder)
    if run.group.is_main:
        estimate(cfg, run.data, work.selected, work.todo_inv, work.todo_units, work.per_pass, work.z0_of, generator,
                 feature_net, pool, run.mean, run.std, run.device, run.compute, run.log, run.group.world_size)
    inv_latents, inv_stats = None, []
    if not pixels:
        with run.stage("invert"):
            inv_latents, inv_stats = invert_stage(run, work, generator, feature_net)
    with run.stage("condense"):
        result, unit_stats = condense_stage(run, work, generator, pool, inv_latents, _after_unit)
    if result is None:  # another rank writes the file
        run.log(f"done: {len(work.mine)} units condensed; rank 0 writes {out}")
        run.group.barrier()  # return once the file exists
        return out
    losses = {"gan": gan_stats, "classifier": cls_stats, "invert": inv_stats, "condense": unit_stats}
    path = write_pixels(run, out, work, result) if pixels else write_lds(run, out, work, generator, result, losses,
                                                                                 req.record_source_path)
    run.group.barrier()
    return path


def _check_output(out: Path, pixels: bool, generator_path: str | Path | None) -> None:
    """Refuse an output that does not fit the parametrization before anything runs."""
    if pixels and out.suffix.lower() != ".npz":
        raise ConfigError(f"{out}: condense.parametrization 'pixel' (the DM baseline) writes uint8 images to an "
                          ".npz file; name the output *.npz")
    if pixels and generator_path is not None:
        raise ConfigError("condense.parametrization 'pixel' optimizes pixels and uses no generator; drop --generator")


def _open_run(req: _Request, group: Group) -> tuple[Run, nn.Module | None]:
    """Load the data, check a given generator against it, and open (or resume) the work dir."""
    cfg, source, download = req.cfg, req.source, req.download
    work_dir = req.work_dir if req.work_dir is not None else req.out.with_suffix(".work")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None and group.distributed:
        device = torch.device("cuda", group.local_rank % torch.cuda.device_count())  # one GPU per local rank
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # bare "cuda" tensors and library calls go to this rank's GPU, not cuda:0
    show = req.progress and not req.quiet and group.is_main  # one set of progress bars, rank 0's
    t0 = time.perf_counter()
    first_loads = download and is_named(source)  # then the first rank of each machine loads (downloads) first
    if first_loads and group.local_rank != 0:
        group.barrier()
    if show:  # before the first long wait: reading (and decoding) the source
        logging.getLogger(__name__).info(f"encode: loading {source}")
    data = load_source(source, "train", root=req.root, download=download, image_size=cfg.image_size, progress=show)
    if first_loads and group.local_rank == 0:
        group.barrier()
    load_seconds = time.perf_counter() - t0
    gen_file = req.generator_path
    loaded = None
    if gen_file is not None:  # checked before anything is written
        if not gen_file.is_file():
            raise LdsNotFoundError(f"generator file not found: {gen_file}; pass a file written by train-gan or a .lds")
        loaded = load_generator(gen_file, data, device)

    work_dir.mkdir(parents=True, exist_ok=True)
    if group.is_main:  # what a killed run left half-written (its finished files are what resume reads)
        sweep_tree(work_dir)
    log = RunLog(work_dir / "encode.log", req.quiet or not group.is_main,
                 f"[rank {group.rank}/{group.world_size}] " if group.distributed else "")
    # Rank 0 applies the rule of its hardware class (latentds.plan) and the others follow it, whatever their
    # own hardware; every rank sets the backend flags that keep CUDA results from varying.
    plan = get_plan(device, cfg.precision)
    plan.apply_backend_flags()
    desc = group.broadcast_json({"device_type": device.type, **plan.compute().describe()} if group.is_main else None)
    record = {
        "config": result_config(cfg),
        "source": {"name": data.name, "fingerprint": data.fingerprint},
        "generator_file_sha256": file_sha256(gen_file) if gen_file is not None else None,
        "compute": desc,
    }
    record = check_work_dir(work_dir, record, resolve_precision(cfg.precision))
    run = Run(cfg, data, work_dir, device, compute_from(device, record["compute"]), group, log, show, record)
    adopted = " (adopted from the work dir)" if record["compute"] != desc else ""
    log(f"precision: training {describe_compute(record['compute'])}{adopted}; {plan.describe()}")
    run.started = t0  # the total includes loading the source
    run.timing["load_source"] = load_seconds
    run.stage_memory["load_source"] = peak_memory(device)
    log(f"encode: {data.name}: {len(data)} images, {data.num_classes} classes, {data.image_shape}; "
        f"device {device}, {describe_compute(record['compute'])}; work dir {work_dir}"
        + (f"; {group.world_size} ranks" if group.distributed else ""))
    run.mean, run.std = data.mean_std()
    return run, loaded


