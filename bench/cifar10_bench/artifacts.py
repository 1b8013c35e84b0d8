"""What the cells train on: the generator, the shared classifier, encoded .lds files, DM images, real subsets."""

from __future__ import annotations

from cifar10_bench.costs import estimate_classifier, estimate_generator
from cifar10_bench.runlog import Log, file_sha256, fmt_s, mib, write_atomic
from cifar10_bench.settings import (
    DM_OVERRIDES,
    METHODS,
    TINY_CLASSES,
    TINY_TEST_PER_CLASS,
    TINY_TRAIN_PER_CLASS,
    Settings,
    artifact_name,
    encode_config,
    encode_flags,
    encode_overrides,
)


import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


# --- data ------------------------------------------------------------------------------------------------
def make_tiny_data(path: Path) -> Path:
    """A seeded synthetic 2-class set (32x32 RGB) as an .npz with train and test splits."""
    import numpy as np

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]

    def images(count: int) -> tuple[np.ndarray, np.ndarray]:
        out, labels = [], []
        for c in range(len(TINY_CLASSES)):
            for _ in range(count):
                phase = rng.uniform(0, 2 * np.pi)
                wave = np.sin((yy if c == 0 else xx) / 2.5 + phase)  # class 0: horizontal stripes, 1: vertical
                tint = np.array([0.7, 0.4, 0.3]) if c == 0 else np.array([0.3, 0.4, 0.7])
                img = 0.5 + 0.25 * wave[None] * tint[:, None, None] + rng.normal(0, 0.08, (3, 32, 32))
                out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
                labels.append(c)
        return np.stack(out), np.array(labels, dtype=np.int64)

    tr_x, tr_y = images(TINY_TRAIN_PER_CLASS)
    te_x, te_y = images(TINY_TEST_PER_CLASS)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y,
             classes=np.array(TINY_CLASSES))
    return path


class Data:
    """The train and test splits, loaded on first use."""

    def __init__(self, spec: str, log: Log):
        self.spec, self.log = spec, log
        self._train = self._test = None

    @property
    def train(self):
        if self._train is None:
            from latentds.sources import load_source

            t0 = time.perf_counter()
            self._train = load_source(self.spec, "train", progress=False)
            self.log(f"data: {self._train.name}: {len(self._train):,} training images, "
                     f"{self._train.num_classes} classes ({time.perf_counter() - t0:.1f} s)")
        return self._train

    @property
    def test(self):
        if self._test is None:
            from latentds.sources import load_source

            self._test = load_source(self.spec, "test", progress=False)
            self.log(f"data: {len(self._test):,} test images")
        return self._test


# --- shared artefacts: generator and classifier ----------------------------------------------------------
# --- shared artefacts: generator and classifier ----------------------------------------------------------
def generator_info(path: Path) -> dict[str, Any]:
    """What the records say about the generator: file, hash, architecture and its GAN training config."""
    from safetensors import safe_open

    from latentds.checkpoint import META_ARCH, META_ARGS, read_model_metadata
    from latentds.encoding import GAN_META_CONFIG as META_CONFIG
    from latentds.encoding import GAN_META_STATS as META_STATS

    meta = read_model_metadata(path)
    with safe_open(str(path), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    stats = json.loads(meta.get(META_STATS, "{}"))
    return {
        "file": str(path),
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "arch": meta.get(META_ARCH),
        "args": json.loads(meta.get(META_ARGS, "{}")),
        "tensor_elements": int(params),
        "gan_config": json.loads(meta[META_CONFIG]) if META_CONFIG in meta else None,  # None: not made by train-gan
        "train_s": stats.get("train_seconds"),
        "train_device": stats.get("device"),
    }


def ensure_generator(s: Settings, data: Data, log: Log) -> Path:
    """The generator at --generator, trained there (train_gan with the preset's GAN section) if missing."""
    if s.generator.is_file():
        return s.generator
    import latentds

    cfg = encode_config(s, None)
    log(f"generator: {s.generator} not found; training {cfg.gan.arch} width {cfg.gan.width} for "
        f"{cfg.gan.iterations} iterations (estimated {fmt_s(estimate_generator(s))}; resumable in {s.work / 'gan'})")
    t0 = time.perf_counter()
    s.generator.parent.mkdir(parents=True, exist_ok=True)
    latentds.train_gan(s.data, s.generator, s.preset, overrides=encode_overrides(s, None), work_dir=s.work,
                       progress=not s.quiet and sys.stderr.isatty())
    log(f"generator: wrote {s.generator} ({fmt_s(time.perf_counter() - t0)})")
    return s.generator


def ensure_classifier(s: Settings, data: Data, log: Log) -> Path:
    """The preset's real-data ConvNet (inversion features + embedding pool), trained once, shared by all encodes."""
    from latentds.encoding import CLASSIFIER_FILE, train_classifier

    folder = s.work / "classifier"
    if not (folder / CLASSIFIER_FILE).exists():
        cfg = encode_config(s, None)
        log(f"classifier: training {cfg.classifier.arch} width {cfg.classifier.width}, {cfg.classifier.epochs} epochs "
            f"(estimated {fmt_s(estimate_classifier(s))})")
        train_classifier(data.train, cfg.classifier, folder, resolve_device(s), not s.quiet and sys.stderr.isatty(), log,
                         compute=bench_compute(s))
    return folder


def bench_compute(s: Settings):
    """The training stages' precision and memory format: the plan's for the encode config's precision."""
    from latentds.plan import get_plan

    return get_plan(resolve_device(s), encode_config(s, None).precision).compute()


def resolve_device(s: Settings) -> str:
    from latentds.evaluation import resolve_device as rd

    return str(rd(s.device))


def device_string(s: Settings) -> str:
    import torch

    dev = resolve_device(s)
    if dev.startswith("cuda"):
        return f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


# --- per-method artefacts --------------------------------------------------------------------------------
@dataclass
class Artifact:
    spec: str  # what training_set() reads
    ipc: int | None  # its ipc argument
    bytes: int  # the storage column
    encode_s: float  # compute time of the method-specific stages (shared generator training excluded)
    make: str | None  # command that makes the artefact (None: nothing to make)
    generator: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)




def lds_encode_seconds(path: Path) -> tuple[float, dict[str, float]]:
    """Classifier + inversion + condensation compute seconds recorded in a .lds's provenance."""
    from latentds import open_lds

    with open_lds(path) as reader:
        losses = reader.manifest["provenance"].get("losses", {})
    parts = {
        "classifier_s": float((losses.get("classifier") or {}).get("train_seconds") or 0.0),
        "invert_s": float((losses.get("invert") or {}).get("seconds") or 0.0),
        "condense_s": float((losses.get("condense") or {}).get("seconds") or 0.0),
    }
    return sum(parts.values()), parts


def lds_pool(path: Path) -> dict[str, Any] | None:
    """The embedding pool an encode used (size, runs, filter, held-out accuracy range, mix), from its provenance."""
    from latentds import open_lds

    with open_lds(path) as reader:
        cls = (reader.manifest["provenance"].get("losses") or {}).get("classifier") or {}
    pool = {k: v for k, v in (cls.get("pool") or {}).items() if k != "nets"}  # the per-net table stays in the .lds
    return {**pool, "pool_prob": cls.get("pool_prob")} if pool else None


def build_encode(s: Settings, method: str, ipc: int | None, data: Data, log: Log) -> Artifact:
    """itgan / inversion: ``latentds encode`` with the preset (inversion: condense.iterations=0)."""
    import latentds

    gen = ensure_generator(s, data, log)
    extra = ("condense.iterations=0",) if method == "inversion" else ()
    name = artifact_name(method, ipc)
    out = s.artifacts / f"{name}.lds"
    work_dir = s.work / "encode" / f"{name}.work"
    make = (f"latentds encode {shlex.quote(s.data)} {shlex.quote(str(out))} {encode_flags(s, extra)} "
            f"{'' if ipc is None else f'--ipc {ipc} '}--generator {shlex.quote(str(gen))} "
            f"--work-dir {shlex.quote(str(work_dir))}")
    if not out.exists():
        # The classifier and (for inversion) the inversion checkpoints are identical across these runs
        # (same config, data, generator and seeds): copy them instead of recomputing (the pipeline checks
        # their config and indices when it loads them).
        classifier = ensure_classifier(s, data, log)
        work_dir.mkdir(parents=True, exist_ok=True)
        if not (work_dir / "classifier").exists():
            shutil.copytree(classifier, work_dir / "classifier")
        donor = s.work / "encode" / f"{artifact_name('itgan', ipc)}.work" / "invert"
        if method == "inversion" and donor.is_dir():
            (work_dir / "invert").mkdir(exist_ok=True)
            for f in donor.glob("c*_b*.safetensors"):  # the inversion units
                if not (work_dir / "invert" / f.name).exists():
                    shutil.copy2(f, work_dir / "invert" / f.name)
        log(f"encode {name}: {make}")
        t0 = time.perf_counter()
        latentds.encode(s.data, out, s.preset, overrides=encode_overrides(s, ipc, extra), work_dir=work_dir,
                        generator=gen, progress=not s.quiet and sys.stderr.isatty())
        log(f"encode {name}: wrote {out} ({mib(out.stat().st_size)}) in {fmt_s(time.perf_counter() - t0)} wall")
    else:
        check_existing_lds(out, encode_config(s, ipc, extra), gen)
        log(f"encode {name}: using the existing {out} (its encode config and generator match)")
    encode_s, parts = lds_encode_seconds(out)
    return Artifact(str(out), None, out.stat().st_size, encode_s, make, generator_info(gen),
                    {"encode_parts_s": parts, "embedding_pool": lds_pool(out)})


def check_existing_lds(path: Path, cfg, generator: Path) -> None:
    """Refuse an artefact found in --work that was made with another encode config or another generator."""
    from dataclasses import asdict as _asdict

    from safetensors.torch import load_file

    from latentds import open_lds
    from latentds.encoding import NON_RESULT_FIELDS

    def result_fields(config: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for section, value in config.items():
            if isinstance(value, dict):
                flat.update({f"{section}.{k}": v for k, v in value.items()})
            else:
                flat[section] = value
        return {k: v for k, v in flat.items() if k not in NON_RESULT_FIELDS}

    with open_lds(path) as reader:
        made = reader.manifest["provenance"].get("encode_config") or {}
        stored = {k: v.float() if v.is_floating_point() else v for k, v in reader.generator_state().items()}
    want, have = result_fields(json.loads(json.dumps(_asdict(cfg)))), result_fields(made)
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        shown = "; ".join(f"{k}: {have.get(k, '<missing>')!r} (benchmark wants {want.get(k, '<missing>')!r})" for k in diff[:6])
        raise SystemExit(f"{path} was made with another encode config ({shown}); move it away to have it rebuilt")
    ref = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(generator)).items()}
    if set(ref) != set(stored) or any(not torch_equal(ref[k], stored[k]) for k in ref):
        raise SystemExit(f"{path} holds another generator than {generator}; move it away to have it rebuilt")


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def build_dm(s: Settings, ipc: int | None, data: Data, log: Log, method: str = "dm") -> Artifact:
    """DM: ``latentds encode`` with ``condense.parametrization=pixel``: itgan's selection, loss, schedule, nets,
    augmentation and seeds, on pixels (SGD, momentum 0.5, lr_pixel 1.0: the library's pixel-mode defaults).
    ``dm_random``: the same with a fresh random ConvNet every step, as DM was published."""
    import latentds
    from latentds.encoding import load_state

    name = artifact_name(method, ipc)
    out = s.artifacts / f"{name}.npz"
    sidecar = s.artifacts / f"{name}.json"
    work_dir = s.work / "encode" / f"{name}.work"
    extra = DM_OVERRIDES + (("condense.pool_prob=0",) if method == "dm_random" else ())
    make = (f"latentds encode {shlex.quote(s.data)} {shlex.quote(str(out))} {encode_flags(s, extra)} "
            f"{'' if ipc is None else f'--ipc {ipc} '}--work-dir {shlex.quote(str(work_dir))}")
    cfg = encode_config(s, ipc, extra)
    if not (out.exists() and sidecar.exists()):
        work_dir.mkdir(parents=True, exist_ok=True)
        classifier = None
        if cfg.condense.pool_prob > 0:
            classifier = ensure_classifier(s, data, log)  # the same embedding pool as itgan: copied, not retrained
            if not (work_dir / "classifier").exists():
                shutil.copytree(classifier, work_dir / "classifier")
        log(f"dm {name}: {make}")
        latentds.encode(s.data, out, s.preset, overrides=encode_overrides(s, ipc, extra), work_dir=work_dir,
                        progress=not s.quiet and sys.stderr.isatty())
        seconds = sum(float(load_state(f)[1]["stats"]["seconds"]) for f in sorted((work_dir / "units").glob("*.safetensors")))
        cls_s = classifier_seconds(classifier) if classifier is not None else 0.0
        write_atomic(sidecar, json.dumps({"dm_s": seconds, "classifier_s": cls_s,
                                          "condense": asdict(cfg.condense)}, indent=2).encode())
        log(f"dm {name}: wrote {out} ({fmt_s(seconds)} of condensation)")
    info = json.loads(sidecar.read_text(encoding="utf-8"))
    n = _npz_count(out)
    return Artifact(str(out), None, n * math.prod(data.train.image_shape), info["dm_s"] + info["classifier_s"], make,
                    None, {"encode_parts_s": {"classifier_s": info["classifier_s"], "condense_s": info["dm_s"]},
                           "file_bytes": out.stat().st_size, "condense_config": info["condense"]})


def classifier_seconds(folder: Path) -> float:
    """Training seconds (all sessions) of the shared classifier, from its file's metadata."""
    from latentds.checkpoint import read_model_metadata
    from latentds.encoding import CLASSIFIER_FILE
    from latentds.encoding import CLASSIFIER_META_STATS as META_STATS

    stats = json.loads(read_model_metadata(folder / CLASSIFIER_FILE).get(META_STATS, "{}"))
    return float(stats.get("train_seconds") or 0.0)


def _npz_count(path: Path) -> int:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return int(z["labels"].shape[0])


def build_artifact(s: Settings, method: str, ipc: int | None, data: Data, log: Log) -> Artifact:
    if method in ("itgan", "inversion"):
        return build_encode(s, method, ipc, data, log)
    if method in ("dm", "dm_random"):
        return build_dm(s, ipc, data, log, method)
    if method == "gan":
        gen = ensure_generator(s, data, log)
        info = generator_info(gen)
        latent_dim = int(info["args"].get("latent_dim", 128))
        k = data.train.num_classes
        n = ipc if ipc is not None else len(data.train) // k  # "all": as many samples as real images
        # generator file + one fp16 latent per image (labels are implicit: samples come grouped by class)
        return Artifact(f"gan:{gen}", n, gen.stat().st_size + k * n * latent_dim * 2, 0.0, None, info)
    k = data.train.num_classes
    c, h, w = data.train.image_shape
    if method == "random":
        return Artifact(s.data, ipc, k * ipc * c * h * w, 0.0, None, None)
    if method == "real":
        return Artifact(s.data, None, len(data.train) * c * h * w, 0.0, None, None,
                        {"source_file_bytes": data.train.source_bytes})
    raise SystemExit(f"unknown method {method!r}; valid: {', '.join(METHODS)}")

