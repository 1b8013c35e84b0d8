"""The command line as a user meets it: exit codes, one-line errors, and outputs that read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from latentds.cli import main
from latentds.dataset import LatentDataset
from latentds.sources import load_source
from tests.conftest import CLASSES


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_human_and_json(tiny_lds: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "info", str(tiny_lds))
    assert code == 0
    assert "24 latents x 128" in out and "cat, dog, ship" in out and "biggan32_tiny" in out
    code, out, _ = run(capsys, "info", str(tiny_lds), "--json")
    info = json.loads(out)
    assert code == 0 and info["manifest"]["num_samples"] == 24
    assert info["per_class"] == {"cat": 8, "dog": 8, "ship": 8}
    assert info["raw_uint8_pixel_bytes"] == 24 * 3 * 32 * 32


def test_verify_exit_codes(tiny_lds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(capsys, "verify", str(tiny_lds))[0] == 0
    data = bytearray(tiny_lds.read_bytes())
    data[-3] ^= 1  # last generator tensor
    bad = tmp_path / "bad.lds"
    bad.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", str(bad))
    assert code == 1 and "CORRUPT" in err and "'generator." in err
    short = tmp_path / "short.lds"
    short.write_bytes(tiny_lds.read_bytes()[:-100])
    code, _, err = run(capsys, "verify", str(short))
    assert code == 1 and "truncated" in err and "Traceback" not in err
    code, _, err = run(capsys, "verify", str(tmp_path / "missing.lds"))
    assert code == 2 and "no such file" in err


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    junk = tmp_path / "junk.lds"
    junk.write_bytes(b"\x00" * 3)
    code, out, err = run(capsys, "info", str(junk))
    assert code == 1 and err.count("\n") == 1 and err.startswith("latentds: error:") and str(junk) in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["verify"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def _decoded_uint8(path: Path) -> np.ndarray:
    images, _ = LatentDataset(path, normalize=False).decode(np.arange(24))
    return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_export_npz_reads_back_as_a_source(tiny_lds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.npz"
    assert run(capsys, "export", str(tiny_lds), str(out), "-q")[0] == 0
    with np.load(out, allow_pickle=False) as z:  # shuffled: each image says its .lds row
        assert sorted(z["rows"].tolist()) == list(range(24)) and z["rows"].tolist() != list(range(24))
        assert np.array_equal(z["images"], _decoded_uint8(tiny_lds)[z["rows"]])
        assert z["labels"].tolist() == [i % 3 for i in z["rows"].tolist()]
        assert z["classes"].tolist() == CLASSES
    back = load_source(str(out), progress=False)
    assert back.classes == CLASSES and len(back) == 24
    code, _, err = run(capsys, "export", str(tiny_lds), str(out), "-q")
    assert code == 2 and "already exists" in err  # a usage problem: exit 2, like argparse


def test_export_h5_and_folder(tiny_lds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = _decoded_uint8(tiny_lds)
    assert run(capsys, "export", str(tiny_lds), str(tmp_path / "out.h5"), "-q")[0] == 0
    with h5py.File(tmp_path / "out.h5") as f:
        rows = f["rows"][:]
        assert np.array_equal(f["images"][:], expected[rows])
        assert f["labels"][:].tolist() == [i % 3 for i in rows.tolist()]
    folder = tmp_path / "tree"
    assert run(capsys, "export", str(tiny_lds), str(folder), "-q")[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == [".latentds-export.json", *CLASSES]  # + what --force may replace
    assert torchvision.datasets.ImageFolder(str(folder)).classes == CLASSES  # the marker is no class to a reader
    assert len(list((folder / "dog").iterdir())) == 8
    assert np.array_equal(np.asarray(Image.open(folder / "dog" / "04.png")), expected[4])
    assert run(capsys, "export", str(tiny_lds), str(tmp_path / "x.tiff"))[0] == 1


def test_preview_grid(tiny_lds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grid.png"
    assert run(capsys, "preview", str(tiny_lds), str(out), "--per-class", "4", "-q")[0] == 0
    grid = Image.open(out)
    assert grid.size == (100 + 4 * 34 + 2, 3 * 34 + 2)  # a 100 px margin for the names, 32 px tiles, 2 px padding
    names = np.asarray(grid.convert("L"))[:, :100]
    assert all((names[2 + r * 34 : 34 + r * 34] < 128).any() for r in range(3))  # each row's class name is written
    assert run(capsys, "preview", str(tiny_lds), str(out), "--per-class", "4", "-q", "--force", "--scale", "2",
               "--no-names")[0] == 0
    grid2 = Image.open(out)
    assert grid2.size == (4 * 66 + 2, 3 * 66 + 2)  # 64 px tiles: each image twice its size, nearest-neighbour
    tile, big = np.asarray(grid.convert("RGB"))[2:34, 102:134], np.asarray(grid2.convert("RGB"))[2:66, 2:66]
    assert np.array_equal(big[::2, ::2], tile)
    with pytest.raises(SystemExit):  # argparse: choose 1, 2 or 4
        run(capsys, "preview", str(tiny_lds), str(out), "--scale", "3", "--force")


def test_pack_unpack(tiny_lds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "pack", str(tiny_lds), "-q")
    packed = Path(str(tiny_lds) + ".zst")
    assert code == 0 and packed.exists()
    assert run(capsys, "verify", str(packed))[0] == 0
    target = tmp_path / "back.lds"
    assert run(capsys, "unpack", str(packed), str(target), "-q")[0] == 0
    assert target.read_bytes() == tiny_lds.read_bytes()
    code, _, err = run(capsys, "unpack", str(tiny_lds), "-q")
    assert code == 2 and "does not end in .zst" in err
    junk = tmp_path / "junk.lds"
    junk.write_bytes(b"junk")
    assert run(capsys, "pack", str(junk), "-q")[0] == 1


def test_console_entry_point(tiny_lds: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "latentds", "verify", str(tiny_lds)], capture_output=True, text=True)
    assert proc.returncode == 0 and "OK" in proc.stdout


def test_info_piped_into_head_exits_quietly(tiny_lds: Path) -> None:
    proc = subprocess.run(f"{sys.executable} -m latentds info {tiny_lds} | head -1", shell=True, capture_output=True, text=True)
    assert proc.stdout.startswith("file") and "Traceback" not in proc.stderr


def test_info_says_larger_when_the_generator_dominates(tiny_lds: Path, capsys: pytest.CaptureFixture) -> None:
    _, out, _ = run(capsys, "info", str(tiny_lds))  # 24 images with their generator: bigger than their pixels
    assert "x larger (the generator dominates" in out


def test_parser_is_built_without_torch():
    """`latentds --help` / `encode --help` must not pay torch's import (seconds and ~800 MB)."""
    code = (
        "import sys\nfrom latentds.cli import main\n"
        "for argv in (['--help'], ['encode', '--help'], ['eval', '--help'], ['--version']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'torchvision', 'PIL'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in out.stderr, out.stderr[-500:]


def test_everyday_misuse_is_one_line(tmp_path, capsys):
    from latentds.cli import main
    from tests.conftest import make_lds

    src = make_lds(tmp_path / "a.lds", n=6)
    for argv in (["export", str(src), str(tmp_path / "x.npz"), "--batch-size", "0"],
                 ["pack", str(src), str(tmp_path / "p.zst"), "--level", "99"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()
    assert main(["-q", "pack", str(src), str(tmp_path / "p.zst")]) == 0  # -q before the verb works too
    assert capsys.readouterr().out == ""
    assert main(["pack", str(src), str(tmp_path / "p.zst")]) == 2  # one policy: no silent overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert main(["unpack", str(tmp_path / "p.zst"), str(src)]) == 2  # would replace an existing .lds
    assert main(["-q", "pack", str(src), str(tmp_path / "p.zst"), "--force"]) == 0
    assert main(["-q", "unpack", str(tmp_path / "p.zst"), str(tmp_path / "b.lds")]) == 0
    (tmp_path / "x.npz").write_bytes(b"old")
    assert main(["-q", "export", str(src), str(tmp_path / "x.npz")]) == 2
    assert (tmp_path / "x.npz").read_bytes() == b"old"
    assert main(["-q", "export", str(src), str(tmp_path / "x.npz"), "--force"]) == 0  # replaced atomically
    assert (tmp_path / "x.npz").read_bytes()[:2] == b"PK"


def test_progress_bars_stay_off_a_non_terminal_stderr(tiny_lds: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "latentds", "export", str(tiny_lds), str(tmp_path / "x.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "img/s" not in proc.stderr  # a log file gets no carriage-return debris
    assert proc.stdout.startswith("wrote ")


def test_library_log_records_reach_stderr_one_line_each(capsys: pytest.CaptureFixture) -> None:
    import logging

    from latentds.cli import configure_logging

    log = logging.getLogger("latentds.encoding.pipeline")
    try:
        configure_logging(quiet=False)
        log.info("[invert] class 3")
        log.warning("disk almost full")
        configure_logging(quiet=True)
        log.info("hidden by -q")
        out, err = capsys.readouterr()
        assert out == "" and err == "[invert] class 3\nlatentds: warning: disk almost full\n"
    finally:
        configure_logging(quiet=False)


def test_an_unusable_device_is_a_one_line_usage_error(tiny_lds: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(capsys, "export", str(tiny_lds), str(tmp_path / "x.npz"), "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err


# --- outputs are checked before any work (issue 26) -------------------------------------------------------------
def test_an_input_is_never_its_own_output(tiny_lds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = tiny_lds.read_bytes()
    for argv in (["export", str(tiny_lds), str(tiny_lds), "--format", "npz", "--force"],
                 ["preview", str(tiny_lds), str(tiny_lds), "--force"],
                 ["merge", str(tiny_lds), str(tiny_lds), str(tiny_lds), "--force"],
                 ["pack", str(tiny_lds), str(tiny_lds), "--force"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and ("input" in err or "suffix" in err), (argv, err)
    assert tiny_lds.read_bytes() == before


def test_preview_refuses_an_existing_path_without_force(tiny_lds: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.png"
    out.write_bytes(b"keep")
    code, _, err = run(capsys, "preview", str(tiny_lds), str(out), "-q")
    assert code == 2 and "--force" in err and out.read_bytes() == b"keep"
    assert run(capsys, "preview", str(tiny_lds), str(out), "-q", "--force")[0] == 0
    assert Image.open(out).size[0] > 0


def test_output_paths_are_checked_before_any_work(tiny_lds: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import latentds.export

    def no_decoding(*args, **kwargs):  # any decoding here means the check came too late
        raise AssertionError("decoded before the output path was checked")

    monkeypatch.setattr(latentds.export, "LatentDataset", no_decoding)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    (tmp_path / "target.png").write_bytes(b"keep")
    (tmp_path / "link.png").symlink_to(tmp_path / "target.png")
    cases = [
        (["preview", str(tiny_lds), str(tmp_path / "grid.tiff")], "suffix"),
        (["preview", str(tiny_lds), str(tmp_path / "link.png"), "--force"], "symbolic link"),
        (["export", str(tiny_lds), str(tmp_path / "afile" / "x.npz")], "not a folder"),
        (["export", str(tiny_lds), str(tmp_path / "missing" / "x.npz")], "does not exist"),
        (["export", str(tiny_lds), str(tmp_path / ("n" * 240 + ".npz"))], "shorter name"),
        (["export", str(tiny_lds), str(tmp_path / "link")], "symbolic link"),
    ]
    for argv, match in cases:
        code, _, err = run(capsys, *argv, "-q")
        assert code == 2 and match in err and err.count("\n") == 1, (argv, err)
    assert (tmp_path / "target.png").read_bytes() == b"keep" and not any((tmp_path / "dir").iterdir())


def test_sigterm_removes_the_staging_folder(tmp_path: Path) -> None:
    """SIGTERM during an export leaves nothing behind: the staging folder lives beside the output and is removed."""
    import os
    import signal
    import time

    from tests.conftest import make_lds

    src = make_lds(tmp_path / "big.lds", n=3000)
    out = tmp_path / "pngs"
    proc = subprocess.Popen([sys.executable, "-m", "latentds", "-q", "export", str(src), str(out), "--batch-size", "8"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.lds"]
