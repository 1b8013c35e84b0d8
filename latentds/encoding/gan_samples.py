"""What a trained generator makes: batches of images, a class-per-row sample grid, a quality figure, and
BigGAN's "standing statistics" for its batch norms."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from latentds.models import generator_contract, output_to_unit
from latentds.tensors import normalize

__all__ = ["frechet_distance", "gan_quality", "generate", "random_latents", "sample_grid", "standing_stats"]


@torch.no_grad()
def generate(
    generator: nn.Module, z: Tensor, y: Tensor, batch_size: int = 500, device: str | torch.device | None = None
) -> Tensor:
    """Images (N, C, H, W) in the generator's output range, on the CPU, from latents (N, D) and labels (N,), in
    batches."""
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    out = []
    for i in range(0, z.shape[0], batch_size):
        out.append(generator(z[i : i + batch_size].to(device), y[i : i + batch_size].to(device)).cpu())
    return torch.cat(out)


def _class_grid_inputs(generator: nn.Module, num_classes: int, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_classes * per_class, generator_contract(generator).latent_dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(per_class)  # class c fills row c of the grid
    return z, y


def sample_grid(
    generator: nn.Module, num_classes: int, per_class: int, path: str | Path, seed: int = 0,
    device: str | torch.device | None = None,
) -> Path:
    """Write a PNG grid of generated samples, one row per class, ``per_class`` columns (eval mode used)."""
    from torchvision.utils import save_image

    from latentds.format.writer import atomic_write

    was_training = generator.training
    generator.eval()
    try:
        z, y = _class_grid_inputs(generator, num_classes, per_class, seed)
        images = generate(generator, z, y, device=device)
    finally:
        generator.train(was_training)
    buffer = io.BytesIO()
    unit = output_to_unit(images, generator_contract(generator).output_range)  # [0, 1] pixels
    save_image(unit, buffer, format="png", nrow=per_class, padding=1)
    return atomic_write(path, [buffer.getvalue()])


@torch.no_grad()
def gan_quality(
    generator: nn.Module,
    classifier: nn.Module,
    num_classes: int,
    n_per_class: int = 100,
    seed: int = 0,
    device: str | torch.device = "cpu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    real: Any = None,
) -> dict[str, Any]:
    """Accuracy of a real-data classifier on class-conditional samples (higher: more recognizable samples), and
    with ``real`` (an :class:`~latentds.sources.ImageSet`) a Fréchet distance in that classifier's feature space.

    ``mean``/``std``: the classifier's input normalization; by default ``classifier.normalization``
    (set by :func:`latentds.encoding.classifier.train_classifier` / ``load_classifier``).

    The Fréchet distance is FID's formula on the classifier's ``embed`` features (for ConvNet-3 the flattened
    last block) instead of Inception-v3's pool features: ``frechet`` between the samples and as many real
    images of the same classes, and ``frechet_real`` between those real images and as many *other* real ones,
    the floor that sampling noise alone gives at this size. Its scale is not FID's: compare it only with
    figures from the same classifier. Lower is better.
    """
    if mean is None or std is None:
        norm = getattr(classifier, "normalization", None)
        if norm is None:
            raise ValueError("gan_quality needs the classifier's input mean/std: pass mean= and std=")
        mean, std = norm["mean"], norm["std"]
    generator.eval().to(device)
    classifier.eval().to(device)
    contract = generator_contract(generator)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_classes * n_per_class, contract.latent_dim, generator=g)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)

    def samples(i: int) -> Tensor:
        """Generated images i .. i + 500 as [0, 1] pixels."""
        return output_to_unit(generator(z[i : i + 500].to(device), y[i : i + 500].to(device)), contract.output_range)

    correct = torch.zeros(num_classes, dtype=torch.int64)
    for i in range(0, z.shape[0], 500):
        images = samples(i)
        pred = classifier(normalize(images, mean, std)).argmax(1).cpu()
        correct += torch.bincount(y[i : i + 500][pred == y[i : i + 500]], minlength=num_classes)
    per_class = (100.0 * correct.double() / n_per_class).tolist()  # percent, as every accuracy in latentds
    out: dict[str, Any] = {"accuracy": 100.0 * float(correct.sum()) / z.shape[0], "per_class_accuracy": per_class,
                           "n": int(z.shape[0])}
    if real is not None and hasattr(classifier, "embed"):
        # two disjoint real draws of n_per_class per class (fewer where a class is small)
        pick = torch.Generator().manual_seed(seed + 1)
        first, second = [], []
        for c in range(num_classes):
            idx = real.class_indices(c)
            idx = idx[torch.randperm(idx.numel(), generator=pick)]
            k = min(n_per_class, idx.numel() // 2)
            first.append(idx[:k])
            second.append(idx[k : 2 * k])
        first, second = torch.cat(first), torch.cat(second)

        def features(batches) -> Tensor:
            return torch.cat([classifier.embed(normalize(x.to(device), mean, std)).double().cpu() for x in batches])

        fake = features(samples(i) for i in range(0, z.shape[0], 500))
        real_a = features(real.images[first[i : i + 500]].float() / 255.0 for i in range(0, first.numel(), 500))
        real_b = features(real.images[second[i : i + 500]].float() / 255.0 for i in range(0, second.numel(), 500))
        out.update(frechet=frechet_distance(fake, real_a), frechet_real=frechet_distance(real_b, real_a),
                   frechet_feature=f"{type(classifier).__name__}.embed, {fake.shape[1]}-d",
                   frechet_n=[int(fake.shape[0]), int(real_a.shape[0])])
    return out


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of two (N, D) feature sets, in float64.

    The matrix square roots come from symmetric eigendecompositions (no scipy), negative eigenvalues from
    rounding clipped to zero.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    d = a.shape[1]
    cov_a, cov_b = torch.cov(a.T).reshape(d, d), torch.cov(b.T).reshape(d, d)
    w, v = torch.linalg.eigh(cov_a)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * middle)


def random_latents(
    batch_size: int, latent_dim: int, num_classes: int, g: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """z ~ N(0, I) (B, latent_dim) and y ~ uniform over the classes (B,)."""
    z = torch.randn(batch_size, latent_dim, generator=g)
    y = torch.randint(num_classes, (batch_size,), generator=g)
    return z.to(device), y.to(device)


@torch.no_grad()
def standing_stats(
    generator: nn.Module, num_classes: int, seed: int = 0, batches: int = 20, batch_size: int = 100
) -> None:
    """Recompute batch-norm running statistics as cumulative averages over random (z, y) batches (BigGAN's
    "standing stats"), so eval-mode decoding uses statistics of the final weights. Leaves the model in eval."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    generator.train()
    for _ in range(batches):
        z, y = random_latents(batch_size, generator_contract(generator).latent_dim, num_classes, g, device)
        generator(z, y)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.eval()
