"""Progress bars appear on a terminal only: a run whose stderr goes to a file gets log lines, never bar debris."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from latentds.progress import progress_bar, shows_bar

ROOT = Path(__file__).resolve().parents[1]

# A tiny encode through the Python API (progress left at its default), then every exporter, a LatentDataset and an
# evaluation, all in one process whose stderr is a file: what `python train.py 2> log` or a batch job records.
SCRIPT = r"""
import logging, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO)
import latentds
from latentds.export import export, preview
from tests.fakedata import create_image_folder

work = Path({work!r})
data = create_image_folder(work / "data", (3, 32, 32), per_class=4)
fast = ["gan.iterations=2", "gan.ema_start=1", "gan.checkpoint_every=1", "gan.batch_size=4", "classifier.epochs=1",
        "invert.iterations=2", "condense.iterations=2", "condense.batch_syn=2", "condense.batch_real=4",
        "condense.eval_nets=1", "subset_size=4", "device=cpu"]
r = latentds.encode(data, work / "out.lds", preset="smoke", overrides=fast)
ds = latentds.LatentDataset(r.path)
ds.decode(range(len(ds)))
for name, fmt in (("folder", None), ("x.npz", None), ("x.h5", None), ("wds", "webdataset"), ("hf", "hf")):
    export(r.path, work / name, fmt=fmt)
preview(r.path, work / "p.png")
latentds.evaluate(r.path, data, epochs=2, seeds=1)
print("done", file=sys.stderr)
"""


def _bars(text: str) -> list[str]:
    """Lines that are bar debris: carriage returns, or tqdm's 'n/total [elapsed' shape."""
    return [line for line in text.replace("\r", "\n\r").splitlines()
            if line.startswith("\r") or ("%|" in line) or ("it/s]" in line) or ("/s]" in line and "|" in line)]


def test_no_bar_reaches_a_redirected_stderr(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT), work=str(tmp_path))],
                              stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=600, check=False)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert text.rstrip().endswith("done")
    assert "invert c" in text and "condense c" in text  # the log lines are there
    assert _bars(text) == [], _bars(text)[:5]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar_and_a_file_does_not() -> None:
    tty, log = _Terminal(), io.StringIO()
    for _ in progress_bar(range(3), file=tty, mininterval=0):
        pass
    for _ in progress_bar(range(3), file=log, mininterval=0):
        pass
    assert "3/3" in tty.getvalue() and log.getvalue() == ""
    assert shows_bar(True, tty) and not shows_bar(True, log) and not shows_bar(False, tty)
