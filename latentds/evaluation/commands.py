"""The ``eval`` subcommand (train on TRAIN, test on real images): ``register(add)`` adds it to the CLI.

    latentds eval cifar10_ipc10.lds --test cifar10 --epochs 300 --seeds 3 --json eval.json
    latentds eval /data/cifar10-jpeg --ipc 10 --test /data/cifar10-jpeg      # random real subset
    latentds eval gan:cifar10_ipc10.lds --ipc 10 --test cifar10               # plain GAN samples
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentds.argtypes import positive_int
from latentds.evaluation.config import DECODE_MODES, EvalConfig

if TYPE_CHECKING:  # the parser is built without torch; the command imports the rest when it runs
    from latentds.evaluation.result import EvalResult

__all__ = ["cmd_eval", "curve_summary", "register", "result_json"]

_DEFAULTS = EvalConfig()


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 64}}', got {text!r}")
    return value


logger = logging.getLogger(__name__)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``eval`` through ``add(name, func, help) -> parser`` (the parser already has -q/--quiet)."""
    p = add("eval", cmd_eval, "train fresh networks on TRAIN and report their final-epoch accuracy on real test images")
    p.add_argument(
        "train",
        metavar="TRAIN",
        help="a .lds/.lds.zst file; gan:FILE (plain GAN samples of a .lds's or checkpoint's generator, needs --ipc); "
        "or real images: cifar10, an image folder, an .npz/.h5 (with --ipc: a random subset per class)",
    )
    p.add_argument("--test", required=True, metavar="SOURCE",
                   help="the real test set: its test split (cifar10, DIR/test/, an .npz's test arrays), or the whole "
                        "of a source without splits (DIR/<class>/, an .npz with images/labels)")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                   help="resize real images (TRAIN and --test) to NxN, antialiased, e.g. to match a .lds")
    p.add_argument("--arch", default=_DEFAULTS.arch, help=f"evaluation network (default {_DEFAULTS.arch}; see `latentds models`)")
    p.add_argument("--model-args", type=_json_object, default={}, metavar="JSON", help="extra architecture arguments, e.g. '{\"width\": 64}'")
    p.add_argument("--epochs", type=positive_int, default=_DEFAULTS.epochs)
    p.add_argument("--seeds", type=positive_int, default=_DEFAULTS.seeds, help="networks to train (default %(default)s)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="first network seed (default %(default)s)")
    p.add_argument("--ipc", type=positive_int, help="images per class: a random subset of TRAIN, or GAN samples to draw")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the --ipc subset or the GAN latents (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=_DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr)
    p.add_argument("--no-dsa", action="store_true", help="train without DSA augmentation")
    p.add_argument("--dsa-per-batch", action="store_true", help="one DSA transform per batch instead of per image")
    p.add_argument("--eval-every", type=int, default=0, metavar="N", help="also test every N epochs, for the curve")
    p.add_argument("--device", default=_DEFAULTS.device, help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=_DEFAULTS.precision,
                   help="training and decoding precision: auto (the hardware class's rule, never a timing; "
                        "`latentds info --system` shows it), "
                        "fp32 or bf16; also $LATENTDS_PRECISION (default: %(default)s)")
    p.add_argument("--root", help="where named datasets (cifar10, cifar100) live (default: the user cache dir)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch cifar10/cifar100 into --root when missing (default: yes; needs a network)")
    p.add_argument("--decode", choices=DECODE_MODES, default="once", help="a .lds: decode once up front (default) or every epoch")
    p.add_argument("--json", metavar="OUT", help="write the result as JSON to OUT")


def curve_summary(result: EvalResult, points: int = 5) -> str:
    """One line: mean test accuracy at up to ``points`` checkpoints, else mean train loss at evenly spaced epochs."""
    import numpy as np

    curves = result.curves
    tested = curves[0]["test_epochs"]
    if len(tested) > 1:
        picks = sorted({int(i) for i in np.linspace(0, len(tested) - 1, min(points, len(tested))).round()})
        accs = np.mean([c["test_acc"] for c in curves], axis=0)
        return "test acc: " + " | ".join(f"ep {tested[i]} {accs[i]:.2f}" for i in picks)
    epochs = len(curves[0]["loss"])
    picks = sorted({int(i) for i in np.linspace(0, epochs - 1, min(points, epochs)).round()})
    losses = np.mean([c["loss"] for c in curves], axis=0)
    return "train loss: " + " | ".join(f"ep {i + 1} {losses[i]:.3f}" for i in picks)


def result_json(args: argparse.Namespace, result: EvalResult) -> dict[str, Any]:
    """The --json document."""
    return {
        "train": args.train,
        "test": args.test,
        "ipc": args.ipc,
        "arch": result.config["arch"],
        "epochs": result.config["epochs"],
        "seeds": len(result.seeds),
        "seed_values": result.seeds,
        "accs": result.accs,
        "acc_mean": result.acc_mean,
        "acc_std": result.acc_std,
        "acc_std_ddof": 0,
        "bytes": result.train["bytes"],
        "eval_s": result.eval_s,
        "seed_s": result.seed_s,
        "curves": result.curves,
        "config": result.config,
        "train_set": result.train,
        "test_set": result.test,
    }


def cmd_eval(args: argparse.Namespace) -> int:
    from latentds.evaluation.run import evaluate_sources

    quiet = bool(getattr(args, "quiet", False))
    say: Callable[[str], None] = (lambda _: None) if quiet else logger.info  # chatter; results go to stdout
    cfg = EvalConfig(
        arch=args.arch,
        model_args=dict(args.model_args or {}),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        dsa=not args.no_dsa,
        dsa_per_image=not args.dsa_per_batch,
        seeds=args.seeds,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        eval_every=args.eval_every,
    )
    result = evaluate_sources(args.train, args.test, cfg, ipc=args.ipc, data_seed=args.data_seed, root=args.root,
                              download=args.download, decode=args.decode, image_size=args.image_size,
                              progress=not quiet, log=None if quiet else say)
    n = len(result.seeds)
    report = sys.stderr if args.json == "-" else sys.stdout  # --json -: stdout holds the JSON document alone
    print(f"accuracy: {result.acc_mean:.2f} +- {result.acc_std:.2f} % "
          f"({n} seed{'s' if n != 1 else ''}, {cfg.arch}, {cfg.epochs} epochs)", file=report)
    say(curve_summary(result))
    if args.json == "-":  # the document alone on stdout (the accuracy line went to stderr)
        print(json.dumps(result_json(args, result), indent=2))
    elif args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result_json(args, result), indent=2) + "\n")
        say(f"wrote {out}")
    return 0
