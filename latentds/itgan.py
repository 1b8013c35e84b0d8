"""Import the official IT-GAN release (the paper authors' generator and latents) into a verified .lds.

The release ships, per dataset and experiment k:

- ``G_Pretrained_<dataset>_exp<k>.pth``: a BigGAN-PyTorch generator state dict (G_ch 64, dim_z 128, bottom
  width 4, no attention, G_shared False, hier False) in its spectral-norm parametrization: every conv and linear
  has its raw ``weight`` plus a power-iteration vector ``u0`` and a singular-value record ``sv0``; conditional
  batch norms have ``gain``/``bias`` embeddings and ``stored_mean``/``stored_var``; the output BN has plain
  ``gain``/``bias`` vectors.
- ``EfficientGAN_final_<dataset>_ConvNet_lrz0.001_exp<k>.pt``: a dict with ``z_eff_all`` [N, 128], one latent
  per training image in torchvision's training-set order (no labels); ``GANInversion_final_..._lrz0.100_...pt``
  holds ``z_inverse_all`` (the inversion).

Both are read with ``torch.load(weights_only=True)`` (tensors and plain containers only; no code runs). The
generator becomes latentds's ``biggan32`` with plain weights: BigGAN-PyTorch divides each weight by its spectral
norm at every forward pass, estimated by one power iteration from the stored ``u0`` (in eval mode ``u0`` is not
updated), so the importer stores ``weight / sigma`` computed exactly that way; decoded images then equal the
release's within float rounding. Labels and class names come from the named dataset, in its training-set order.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from latentds.budget import check_budget
from latentds.errors import ReleaseFormatError, SourceNotFoundError
from latentds.format.header import file_sha256
from latentds.format.outputs import check_output
from latentds.format.render import safe

__all__ = ["RELEASE_NORMALIZATION", "import_itgan", "release_to_state_dict"]

#: The normalization the release's code (DC/DM/IT-GAN utilities) applies after mapping x*0.5+0.5.
RELEASE_NORMALIZATION = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    "cifar100": ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762]),
}
LATENT_KEYS = ("z_eff_all", "z_inverse_all")
SN_EPS = 1e-8  # BigGAN-PyTorch's SN eps for G
#: torch.save stores its records uncompressed; a compressed record is inflated whole into memory by torch.load,
#: so one that inflates past this is refused before loading (a 255 KiB deflated record can declare 200 MiB).
MAX_COMPRESSED_RECORD = 1 << 20
MAX_RECORDS = 100_000


def _check_archive(path: Path, what: str) -> None:
    """Bound what torch.load would allocate for a zip-format file, from its central directory, before loading:
    every record's declared size in total within the memory budget, compressed records small."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format stores raw bytes: it cannot declare more than the file holds
        with zipfile.ZipFile(path) as zf:
            records = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ReleaseFormatError(f"{path}: a damaged zip archive ({safe(exc, 120)}); not the release's {what}") from None
    if len(records) > MAX_RECORDS:
        raise ReleaseFormatError(f"{path}: {len(records):,} records; the release's {what} has a few hundred")
    for info in records:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_COMPRESSED_RECORD:
            raise ReleaseFormatError(
                f"{path}: record '{safe(info.filename, 80)}' is compressed and inflates to {info.file_size:,} bytes "
                f"(from {info.compress_size:,}); torch.save stores records uncompressed, so this is not the release's "
                f"{what} (refused before loading: it would be inflated whole into memory)")
    total = sum(info.file_size for info in records)
    check_budget(f"{path}: loading the {what}", total, f"{len(records):,} records declaring {total:,} bytes")


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: " + ("not a regular file" if path.exists() else "no such file") + f" ({what})")
    _check_archive(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals, zip and EOF errors: all mean "not this file"
        raise ReleaseFormatError(
            f"{path}: cannot be read as the release's {what} with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
        ) from None


def _sn_sigma(weight: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
    """The spectral norm BigGAN-PyTorch divides by in eval mode: one power iteration from the stored u."""
    w = weight.reshape(weight.shape[0], -1).double()
    u = u0.reshape(1, -1).double()
    v = F.normalize(u @ w, eps=SN_EPS)
    u = F.normalize(v @ w.t(), eps=SN_EPS)
    return ((v @ w.t()) @ u.t()).squeeze()


def release_to_state_dict(state: dict[str, torch.Tensor], where: str = "generator") -> tuple[dict[str, torch.Tensor], dict]:
    """A latentds ``biggan32`` state dict (plain weights) from a release state dict, and the model arguments."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReleaseFormatError(f"{where}: not a state dict of tensors (the release's .pth is one)")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.0\.", k))})
    need = ["linear.weight", "linear.u0", "output_layer.2.weight", "blocks.0.0.bn1.gain.weight"]
    missing = [k for k in need if k not in state]
    if missing or blocks != [0, 1, 2]:
        raise ReleaseFormatError(
            f"{where}: not a 32x32 BigGAN generator state dict of the release (missing {missing or 'nothing'}; "
            f"blocks {blocks}, expected three)"
        )
    num_classes, ch = state["blocks.0.0.bn1.gain.weight"].shape
    latent_dim = state["linear.weight"].shape[1]
    channels = state["output_layer.2.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise ReleaseFormatError(f"{where}: missing {key!r}; not the release's generator layout")
        used.add(key)
        return state[key].float()

    def sn(src: str, dst: str) -> None:  # a spectral-normalized layer: weight / sigma(weight, u0)
        weight = take(f"{src}.weight")
        sigma = _sn_sigma(weight, take(f"{src}.u0"))
        if not torch.isfinite(sigma) or sigma <= 0:
            raise ReleaseFormatError(f"{where}: {src} has a degenerate spectral norm ({float(sigma)})")
        out[f"{dst}.weight"] = (weight.double() / sigma).float()
        out[f"{dst}.bias"] = take(f"{src}.bias")
        used.update(k for k in (f"{src}.sv0",) if k in state)  # the training-time record: not used to decode

    def ccbn(src: str, dst: str) -> None:
        out[f"{dst}.gain.weight"] = take(f"{src}.gain.weight")
        out[f"{dst}.bias.weight"] = take(f"{src}.bias.weight")
        out[f"{dst}.bn.running_mean"] = take(f"{src}.stored_mean")
        out[f"{dst}.bn.running_var"] = take(f"{src}.stored_var")
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)

    sn("linear", "linear")
    for i in blocks:
        ccbn(f"blocks.{i}.0.bn1", f"blocks.{i}.bn1")
        ccbn(f"blocks.{i}.0.bn2", f"blocks.{i}.bn2")
        for conv in ("conv1", "conv2", "conv_sc"):
            sn(f"blocks.{i}.0.{conv}", f"blocks.{i}.{conv}")
    out["out_bn.weight"] = take("output_layer.0.gain")
    out["out_bn.bias"] = take("output_layer.0.bias")
    out["out_bn.running_mean"] = take("output_layer.0.stored_mean")
    out["out_bn.running_var"] = take("output_layer.0.stored_var")
    out["out_bn.num_batches_tracked"] = torch.tensor(0)
    sn("output_layer.2", "out_conv")
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise ReleaseFormatError(f"{where}: unexpected tensors {unexpected[:4]}; not the release's generator layout "
                                 "(attention, a shared embedding or hierarchical z are not part of it)")
    if ch % 4:
        raise ReleaseFormatError(f"{where}: block width {ch} is not 4 x G_ch")
    args = {"num_classes": int(num_classes), "latent_dim": int(latent_dim), "width": int(ch) // 4}
    if channels != 3:
        raise ReleaseFormatError(f"{where}: the release's generator makes 3 channels, this one {channels}")
    return out, args


def import_itgan(
    generator: str | os.PathLike,
    latents: str | os.PathLike,
    labels_from: str,
    out: str | os.PathLike,
    *,
    latents_key: str | None = None,
    root: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Convert the release's generator (.pth) and latents (.pt) into ``out`` (.lds), verified after writing.

    ``labels_from``: the dataset whose training set the latents follow, row for row (``cifar10``, ``cifar100``,
    or any source latentds reads, in its own order); its labels and class names go into the file, and for
    CIFAR the normalization the release used.
    """
    from latentds.lds import image_spec, open_lds, save_lds
    from latentds.models import create_model
    from latentds.sources import load_source

    gpath, zpath = Path(generator), Path(latents)
    check_output(out, [gpath, zpath], force=True)  # parent folder, name length, no link: before anything is read
    state, args = release_to_state_dict(_load(gpath, "generator state dict"), str(gpath))
    zfile = _load(zpath, "latents dict")
    if isinstance(zfile, torch.Tensor):
        z, key = zfile, None
    elif isinstance(zfile, dict):
        keys = [latents_key] if latents_key else [k for k in LATENT_KEYS if k in zfile]
        if not keys or keys[0] not in zfile:
            raise ReleaseFormatError(f"{zpath}: no latents under {latents_key or ' or '.join(LATENT_KEYS)}; "
                                     f"keys: {sorted(map(str, zfile))[:6]}")
        key = keys[0]
        z = zfile[key]
    else:
        raise ReleaseFormatError(f"{zpath}: holds a {type(zfile).__name__}, not the release's dict of latents")
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != args["latent_dim"] or not z.is_floating_point():
        raise ReleaseFormatError(f"{zpath}: latents must be a float [N, {args['latent_dim']}] tensor, "
                                 f"found {getattr(z, 'dtype', type(z).__name__)} {list(getattr(z, 'shape', []))}")
    z = z.detach().float().cpu()
    if not torch.isfinite(z).all():
        raise ReleaseFormatError(f"{zpath}: the latents hold NaN or infinite values")

    data = load_source(labels_from, "train", root=root, download=download, progress=progress)
    if len(data) != z.shape[0]:
        raise ReleaseFormatError(f"{zpath}: {z.shape[0]:,} latents but {labels_from} has {len(data):,} training "
                                 "images; the latents follow the training set row for row")
    if data.num_classes != args["num_classes"]:
        raise ReleaseFormatError(f"{gpath}: a generator for {args['num_classes']} classes, but {labels_from} has "
                                 f"{data.num_classes}")
    g = create_model("biggan32", spectral_norm=False, **args).eval()
    g.load_state_dict(state)
    name = labels_from.lower()
    mean, std = RELEASE_NORMALIZATION.get(name) or data.mean_std()
    provenance = {
        "method": "itgan-import",
        "release": {
            "generator_file": gpath.name, "generator_sha256": file_sha256(gpath),
            "latents_file": zpath.name, "latents_sha256": file_sha256(zpath), "latents_key": key,
            "labels_from": data.provenance()["name"],  # a name, never the local path it was read from
            "normalization": "release" if name in RELEASE_NORMALIZATION else "data",
        },
        "source": data.provenance(),
    }
    path = save_lds(out, g, z, data.labels, list(data.classes), image_spec(mean, std, (3, 32, 32), (-1.0, 1.0)), provenance,
                    latent_dtype=torch.float32)
    with open_lds(path, verify=True):
        pass
    return path
