#!/usr/bin/env python
"""Quality figures of a generator: a real-data classifier's accuracy on its samples, and a Fréchet distance in
that classifier's feature space (no Inception weights can be downloaded here, so not FID).

    python tools/gan_quality.py                                    # the benchmark generator, its classifier
    python tools/gan_quality.py --generator G.safetensors --classifier C.safetensors --per-class 1000

The classifier is the benchmark's real-data ConvNet-3 (``--classifier``, e.g. ``WORK/classifier/classifier.safetensors``
from ``bench/run_cifar10.py``); without it one is trained with the benchmark's CPU schedule into ``--work``.
Its test accuracy is reported too: the samples' accuracy is read against it. Writes
``bench/results/generator-quality-<device>.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import machine, rel, save_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import run_cifar10 as rc

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", type=Path, default=REPO / rc.DEFAULT_GENERATOR)
    p.add_argument("--classifier", type=Path, default=None)
    p.add_argument("--data", default=str(rc.DEFAULT_DATA))
    p.add_argument("--work", type=Path, default=Path("/tmp/latentds-quality"))
    p.add_argument("--per-class", type=int, default=1000, help="samples (and real images) per class")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    import torch

    from latentds.checkpoint import load_model
    from latentds.encoding import accuracy, gan_quality, load_classifier
    from latentds.sources import load_source

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    train, test = load_source(args.data, "train", progress=False), load_source(args.data, "test", progress=False)
    command = ["python", "tools/gan_quality.py", *(argv if argv is not None else sys.argv[1:])]
    if args.classifier is None:
        s = rc.settings_from_args(rc.build_parser().parse_args(["--work", str(args.work), "--data", args.data]), [])
        folder = rc.ensure_classifier(s, rc.Data(args.data, print), rc.Log(args.work / "quality.log"))
        args.classifier = folder / "classifier.safetensors"
    classifier = load_classifier(args.classifier, device)
    norm = classifier.normalization
    generator = load_model(args.generator, device).eval()
    test_acc = accuracy(classifier, test.images, test.labels, norm["mean"], norm["std"], device)
    with torch.no_grad():
        q = gan_quality(generator, classifier, train.num_classes, args.per_class, 0, device, real=train)
    info = rc.generator_info(args.generator)
    result = {
        "generator": {k: info[k] for k in ("file", "sha256", "bytes", "arch", "args", "tensor_elements", "gan_config",
                                           "train_s", "train_device")},
        "classifier": {"file": str(args.classifier), "arch": type(classifier).__name__, "test_acc": test_acc},
        "sample_accuracy": q["accuracy"],
        "per_class_accuracy": q["per_class_accuracy"],
        "frechet_convnet": q["frechet"],
        "frechet_convnet_real_floor": q["frechet_real"],
        "frechet_feature": q["frechet_feature"],
        "samples_per_class": args.per_class,
        "n": q["frechet_n"],
        "seconds": time.perf_counter() - t0,
        "machine": machine(),
        "what": "sample_accuracy: the real-data classifier's top-1 on class-conditional samples (z ~ N(0, I)); "
                "frechet_convnet: FID's formula on that classifier's embed features between the samples and as many "
                "real training images of the same classes; frechet_convnet_real_floor: the same between two disjoint "
                "real draws of that size. Not comparable with Inception FID.",
    }
    out = args.json or REPO / "bench" / "results" / f"generator-quality-{'gpu' if device.type == 'cuda' else 'cpu'}.json"
    result["command"] = " ".join(command)
    result["generator"]["file"] = rel(args.generator)
    result["classifier"]["file"] = rel(args.classifier)
    save_result(result, out)
    print(f"{args.generator.name}: samples classified {q['accuracy']:.1f} % correctly by a classifier at "
          f"{test_acc:.1f} % test accuracy; Fréchet distance in its features {q['frechet']:.2f} "
          f"(two real draws: {q['frechet_real']:.2f}); {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
