"""Condensation's matching losses: a registry of objectives (``name -> function``) and the paired regularizer.

A matching loss takes (net, real (B1, C, H, W), synthetic (B2, C, H, W), class) and returns a :class:`Match`.
Both batches arrive normalized and augmented with the same DSA transform, inside the compute's autocast. A new
condensation objective (e.g. gradient matching, which would backpropagate a classification loss through
``net``) is one function and one entry in :data:`MATCHING_LOSSES`; ``CondenseConfig.loss`` picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MATCHING_LOSSES", "Match", "MatchingLoss", "distribution_matching", "dm_loss", "matching_loss",
           "paired_loss"]


def dm_loss(feat_real: torch.Tensor, feat_syn: torch.Tensor) -> torch.Tensor:
    """Distribution matching: squared distance of the mean embeddings, (B1, F) and (B2, F) -> scalar."""
    return (feat_real.float().mean(0) - feat_syn.float().mean(0)).square().sum()


@dataclass
class Match:
    """What a matching loss returns: the loss, and the synthetic embeddings (B, F) the paired regularizer
    compares with the paired real images (None if the loss has no embedding; then ``lam`` must be 0)."""

    loss: torch.Tensor
    syn_features: torch.Tensor | None


MatchingLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], Match]


def distribution_matching(net: nn.Module, real: torch.Tensor, syn: torch.Tensor, label: int) -> Match:
    """DM (Zhao & Bilen 2023), the loss IT-GAN condenses with: match the mean embeddings of real and synthetic."""
    with torch.no_grad():
        feat_real = net.embed(real)  # (B1, F)
    feat_syn = net.embed(syn)  # (B2, F)
    return Match(dm_loss(feat_real, feat_syn), feat_syn)


MATCHING_LOSSES: dict[str, MatchingLoss] = {"dm": distribution_matching}


def paired_loss(feat_pair: torch.Tensor, feat_syn: torch.Tensor) -> torch.Tensor:
    """The regularizer R: mean over pairs of the squared distance, (B, F) and (B, F) -> scalar."""
    return (feat_pair.float() - feat_syn.float()).square().sum(1).mean()


def matching_loss(
    decode: Callable[[slice], torch.Tensor],
    n: int,
    real: torch.Tensor,
    nets: Sequence[nn.Module],
    batch: int,
) -> float:
    """Mean over ``nets`` of the DM loss between ``real`` (normalized, (m, C, H, W)) and all n decoded images.

    ``decode(slice)`` returns normalized synthetic images for that slice; decoding runs in batches.
    """
    total = 0.0
    with torch.no_grad():
        for net in nets:
            fr = torch.cat([net.embed(x).float() for x in real.split(batch)]).mean(0)
            fs = torch.cat([net.embed(decode(slice(lo, lo + batch))).float() for lo in range(0, n, batch)]).mean(0)
            total += float((fr - fs).square().sum())
    return total / len(nets)
