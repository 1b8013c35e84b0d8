"""The evidence behind latentds.plan's rule for this machine's hardware class.

    python tools/bench_plan_rules.py              # writes bench/results/plan-rules-<class>.json

Times every numeric choice the plan could make here (decode dtype x memory format at the rule's chunk, a
ConvNet-3 width-128 training step per autocast dtype x memory format, decode chunk sizes for the rule's
choice) with ``latentds.plan.measure``, and records the machine and the rule next to the figures. The plan
itself never times anything: a new rule is a code change that cites a file written by this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from latentds.models import create_model  # noqa: E402
from latentds.plan import DTYPES, get_plan, images_per_second, machine_info, measure  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per candidate (default %(default)s)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    plan = get_plan(device, "auto")
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    figures = measure(device, seconds=args.seconds)
    g = create_model("biggan32", num_classes=10, width=16).eval().requires_grad_(False).to(device, DTYPES[plan.precision])
    if plan.channels_last:
        g = g.to(memory_format=torch.channels_last)
    chunks = {}
    for chunk in ((8, 16, 32, 64, 128, 256) if device.type == "cpu" else (256, 1024, 4096)):
        z = torch.randn(chunk, g.latent_dim, device=device, dtype=DTYPES[plan.precision])
        y = (torch.arange(chunk) % 10).to(device)
        with torch.no_grad():
            chunks[str(chunk)] = round(images_per_second(lambda: g(z, y), chunk, sync, args.seconds), 1)
    result = {
        "machine": machine_info(device),
        "plan": plan.to_dict(),
        "images_per_s": figures,
        "decode_chunk_images_per_s": {"dtype": plan.precision, "channels_last": plan.channels_last, **chunks},
        "workloads": "decode: BigGAN-32 width 16, random weights; train: ConvNet-3 width 128, batch 64 (CPU) / 256 (GPU), "
                     "forward + backward under autocast",
        "command": "python tools/bench_plan_rules.py" + ("" if args.device == "cpu" else f" --device {args.device}"),
    }
    out = args.out or REPO / "bench" / "results" / f"plan-rules-{plan.hardware}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
