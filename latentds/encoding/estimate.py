"""Before the long stages start: time a few iterations of each and log how long the run will take."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from latentds.encoding.condense import Unit, condense, unit_passes
from latentds.encoding.config import EncodeConfig
from latentds.encoding.embed import EmbeddingSampler
from latentds.encoding.invert import InvertUnit, invert_latents
from latentds.encoding.workdir import RunLog, duration
from latentds.models import generator_contract
from latentds.plan import Compute
from latentds.sources import ImageSet

__all__ = ["estimate"]

WARMUP_ITERATIONS = 2
SLOW_CPU_SECONDS = 3600.0  # a whole-set CPU estimate above this gets a suggestion to pass --ipc


def _fixed_and_per_iteration(run: Callable[[int], None]) -> tuple[float, float]:
    """Seconds a call costs whatever its iterations (targets, optimizer set-up) and seconds per iteration, from
    a call of 1 and one of 1 + WARMUP_ITERATIONS: dividing one call's time by its iterations counted the set-up
    as iterations (a whole-set CPU inversion was estimated at 2.4 h; its 200 passes took about 18 s each, 1 h)."""
    t = time.perf_counter()
    run(1)
    one = time.perf_counter() - t
    t = time.perf_counter()
    run(1 + WARMUP_ITERATIONS)
    more = time.perf_counter() - t
    per_iteration = max(more - one, 0.0) / WARMUP_ITERATIONS
    return max(one - per_iteration, 0.0), per_iteration


def estimate(
    cfg: EncodeConfig,
    data: ImageSet,
    selected: torch.Tensor,
    pending_inv: list[InvertUnit],
    pending_units: list[Unit],
    per_pass: int,
    z0_of: Callable[[InvertUnit], torch.Tensor],
    generator: nn.Module | None,
    feature_net: nn.Module | None,
    pool: list[nn.Module],
    mean: list[float],
    std: list[float],
    device: torch.device,
    compute: Compute,
    log: RunLog,
    ranks: int = 1,
) -> None:
    """Time a few iterations of each pending stage and log the estimated durations (nothing is kept).

    With several ranks the work divides among them (the estimate assumes all ranks are as fast as this one).
    """
    total = 0.0
    if pending_inv and cfg.invert.iterations > 0 and generator is not None and feature_net is not None:
        batch = pending_inv[:per_pass]
        idx = selected[torch.cat([u.indices for u in batch])]
        local = list(torch.arange(len(idx)).split([len(u.indices) for u in batch]))
        z0 = torch.cat([z0_of(u) for u in batch])

        def run(iterations: int) -> None:
            invert_latents(generator, data.images[idx], data.labels[idx], z0, local, feature_net,
                           replace(cfg.invert, iterations=iterations), mean, std, device, compute)

        run(1)  # untimed: first calls pay one-off costs (kernel selection, allocator growth)
        fixed, per_iter = _fixed_and_per_iteration(run)
        passes = math.ceil(len(pending_inv) / per_pass)
        # passes of the probe's size; smaller trailing passes cost about the same on a GPU, less on a CPU
        seconds = (fixed + per_iter * cfg.invert.iterations) * math.ceil(passes / ranks)
        total += seconds
        units = f"{len(batch)} unit{'s' if len(batch) > 1 else ''}"
        log(f"invert: {per_iter * 1000:.0f} ms per iteration + {fixed * 1000:.0f} ms per pass of {len(idx)} latents "
            f"({units}) -> about {duration(seconds)} for {passes} passes x {cfg.invert.iterations} iterations"
            + (f" over {ranks} ranks" if ranks > 1 else ""))
    if pending_units and cfg.condense.iterations > 0:
        unit = pending_units[0]
        b = min(cfg.condense.batch_syn, len(unit.indices))
        idx = selected[unit.indices[:b]]
        probe = replace(cfg.condense, eval_nets=0)
        sampler = EmbeddingSampler(pool, probe.random_width, probe.pool_prob, data.num_classes, data.image_shape[0],
                                   data.image_shape[1], device)
        z = None if generator is None else torch.randn(  # None: pixels (the DM baseline)
            b, generator_contract(generator).latent_dim, generator=torch.Generator().manual_seed(0))
        reals = data.images[data.class_indices(unit.cls)]

        def step(iterations: int) -> None:
            condense(generator, z, data.images[idx], reals, unit.cls, sampler, replace(probe, iterations=iterations),
                     mean, std, 0, device, compute=compute)

        step(1)  # untimed warm-up
        fixed, per_batch = _fixed_and_per_iteration(step)
        passes = unit_passes(cfg.condense, pending_units, data.labels[selected])
        batches = sum(math.ceil(len(u.indices) / cfg.condense.batch_syn) for u in pending_units)
        batch_passes = sum(math.ceil(len(u.indices) / cfg.condense.batch_syn) * passes[u.name] for u in pending_units)
        seconds = (fixed * len(pending_units) + per_batch * batch_passes) / ranks
        total += seconds
        counts = sorted(set(passes.values()))
        shown = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        log(f"condense: {per_batch * 1000:.0f} ms per batch of {b} latents + {fixed * 1000:.0f} ms per unit -> "
            f"about {duration(seconds)} for {len(pending_units)} units ({batches} batches per iteration in all) x "
            f"{shown} iterations"
            + (f" over {ranks} ranks" if ranks > 1 else ""))
    if device.type == "cpu" and cfg.ipc is None and total > SLOW_CPU_SECONDS:
        log(f"note: encoding all {len(selected)} images on the CPU would take about {duration(total)}; pass "
            "--ipc 10 or --ipc 50 to encode a class-balanced subset, or run on a GPU")
