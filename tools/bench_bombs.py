"""Peak memory of the CLI on hostile and oversized inputs, against what they declare; seconds against hostile servers.

    python tools/bench_bombs.py [--mib 256] [--out bench/results/bombs-cpu.json]

Besides verify / unpack of large and bomb-like files, the resource bombs of issue 26: a generator whose
activations take gigabytes (export, preview), 65,536 classes for a preview grid, a deflated .pth record that
inflates 800-fold (import-itgan), each refused by the memory estimate before anything is built; and three servers
(one that drips a byte every 0.5 s, one that stalls after its headers, one that never answers) against the reader
of `info URL` (timed in this process) with LATENTDS_HTTP_TIMEOUT=5, each of which must end at its deadline (5 s plus
the request's size at the minimum rate) with a one-line error.

Each case runs the CLI in a fresh child process and reads the child's peak resident set size (VmHWM from
/proc/self/status at exit: unlike ru_maxrss, which Linux carries over from the parent through fork and exec,
it starts afresh with the new program). The figure that matters is the peak above the baseline (verify of a tiny file: Python, torch and the
reader) compared with the sizes the input declares: a hostile input may make latentds hold what it declares
(a file that really is that large would need it), never more than one decompression step above it.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine, run_cli, save_result  # noqa: E402

MIB = 1 << 20


def big_lds(path: Path, mib: int) -> Path:
    """A valid .lds whose latents (all zero: finite, and they compress to almost nothing) take ``mib`` MiB."""
    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan", num_classes=2, width=1, latent_dim=128, image_size=16, channels=1).eval()
    n = mib * MIB // (128 * 4)
    return save_lds(path, g, torch.zeros(n, 128), torch.arange(n) % 2, ["a", "b"],
                    image_spec([0.5], [0.25], (1, 16, 16), (-1.0, 1.0)), latent_dtype=torch.float32)


def zeros_frame(path: Path, size: int) -> Path:
    """One zstd frame (content size and checksum present) of ``size`` zero bytes: not a .lds inside."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    block = bytes(16 * MIB)
    with open(path, "wb") as f, cctx.stream_writer(f, size=size) as w:
        for lo in range(0, size, len(block)):
            w.write(block[: min(len(block), size - lo)])
    return path


def header_bomb(path: Path, kind: str) -> Path:
    """A plain file whose header is the 16 MiB maximum: one deep nesting, or 200,000 empty tensors."""
    if kind == "nesting":
        text = b"[" * (16 * MIB)
    else:
        entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(200_000))
        text = ("{" + entries + "}").encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


def activation_bomb(path: Path) -> Path:
    """A valid .lds of a 1024x1024 BigGAN (width 16): 1.4 M weights, but 256 MiB of activations per image."""
    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    torch.manual_seed(0)
    g = create_model("biggan", num_classes=2, width=16, image_size=1024, channels=1).eval()
    return save_lds(path, g, torch.zeros(4, 128), torch.arange(4) % 2, ["a", "b"],
                    image_spec([0.5], [0.25], (1, 1024, 1024), (-1.0, 1.0)), latent_dtype=torch.float32)


def class_bomb(path: Path) -> Path:
    """A valid .lds of 65,536 classes (width 1): a preview grid of 10 per class would be 655,360 images."""
    import torch

    from latentds import image_spec, save_lds
    from latentds.models import create_model

    k = 65_536
    torch.manual_seed(0)
    g = create_model("biggan", num_classes=k, width=1, image_size=16, channels=1).eval()
    return save_lds(path, g, torch.zeros(2, 128), torch.arange(2), [f"c{i}" for i in range(k)],
                    image_spec([0.5], [0.25], (1, 16, 16), (-1.0, 1.0)), latent_dtype=torch.float16)


def deflated_pth(path: Path, mib: int = 200) -> Path:
    """A zip-format .pth with one deflated record of ``mib`` MiB of zeros (about 200 KiB on disk)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            block = bytes(MIB)
            for _ in range(mib):
                f.write(block)
    return path


def server_cases(data: bytes) -> list[dict]:
    """Opening a URL (what `latentds info URL` does) against servers that drip, stall or never answer: seconds
    until the one-line error, against the deadline (LATENTDS_HTTP_TIMEOUT=5 plus 8 bytes at 64 KiB/s)."""
    import os
    import socket
    import threading
    import time

    def serve(kind: str, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            request = conn.recv(65536)
            spec = request.split(b"Range: bytes=")[1].split(b"\r\n")[0].decode()
            lo, hi = (int(v) for v in spec.split("-"))
            body = data[lo : hi + 1]
            head = b"HTTP/1.1 206 Partial\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n" % (
                lo, lo + len(body) - 1, len(data), len(body))
            try:
                if kind == "drip":
                    for i in range(len(head + body)):
                        if stop.wait(0.5):
                            break
                        conn.sendall((head + body)[i : i + 1])
                elif kind == "stall":
                    conn.sendall(head)
                    stop.wait(120)
                else:
                    stop.wait(120)
            except OSError:
                pass
            conn.close()

    from latentds.errors import LatentdsError
    from latentds.format import LdsReader

    cases = []
    os.environ["LATENTDS_HTTP_TIMEOUT"] = "5"
    for kind, what in (("drip", "drips one byte every 0.5 s"), ("stall", "sends its headers, then nothing"),
                       ("silent", "accepts the connection and never answers")):
        sock = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()
        threading.Thread(target=serve, args=(kind, sock, stop), daemon=True).start()
        start = time.perf_counter()
        try:  # in this process: the figure is the reader's, without a child's start-up
            LdsReader(f"http://127.0.0.1:{sock.getsockname()[1]}/f.lds").close()
            message = "opened"
        except LatentdsError as exc:
            message = str(exc).split(": ", 1)[-1]
        stop.set()
        sock.close()
        cases.append({"server": what, "seconds": round(time.perf_counter() - start, 2), "message": message[:160],
                      "deadline_s": round(5 + 8 / 65536, 3)})
        print(f"{cases[-1]['seconds']:6.2f} s  a server that {what}: {message[:120]}", flush=True)
    del os.environ["LATENTDS_HTTP_TIMEOUT"]
    return cases


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256, help="size of the large latents tensor")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/bombs-cpu.json")
    p.add_argument("--no-servers", action="store_true", help="skip the hostile-server timings")
    args = p.parse_args()
    from latentds.format import pack

    sys.path.insert(0, str(REPO))
    from tests.conftest import make_lds

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        tiny = make_lds(t / "tiny.lds", n=6)
        tiny_bytes = tiny.read_bytes()
        big = big_lds(t / "big.lds", args.mib)
        packed = pack(big, t / "big.lds.zst", level=3)
        zeros = zeros_frame(t / "zeros.lds.zst", 4 * 1024 * MIB)
        plan = [
            ("baseline: verify a 6-row .lds", tiny.stat().st_size, ("verify", str(tiny))),
            (f"verify a plain .lds with {args.mib} MiB of latents (memory-mapped)", big.stat().st_size,
             ("verify", str(big))),
            (f"verify a {packed.stat().st_size // 1024} KiB .lds.zst that inflates to a {args.mib} MiB .lds "
             "(inflated to a temporary file above 64 MiB, mapped)", big.stat().st_size, ("verify", str(packed))),
            (f"unpack the same {packed.stat().st_size // 1024} KiB .lds.zst to disk", big.stat().st_size,
             ("unpack", str(packed), str(t / "unpacked.lds"))),
            (f"verify a {zeros.stat().st_size // 1024} KiB zstd frame declaring 4 GiB of zeros (not a .lds)",
             4 * 1024 * MIB, ("verify", str(zeros))),
            ("unpack that 4 GiB zeros frame", 4 * 1024 * MIB, ("unpack", str(zeros), str(t / "zeros.lds"))),
            ("verify a 16 MiB header of nested '['", 16 * MIB, ("verify", str(header_bomb(t / "nest.lds", "nesting")))),
            ("verify a 16 MiB header listing 200,000 empty tensors", 16 * MIB,
             ("verify", str(header_bomb(t / "many.lds", "many")))),
        ]
        act = activation_bomb(t / "act.lds")
        classes = class_bomb(t / "classes.lds")
        pth = deflated_pth(t / "G_Pretrained_CIFAR10_exp0.pth")
        plan += [
            (f"export a {act.stat().st_size // 1024} KiB .lds whose 1024x1024 generator needs 256 MiB of activations "
             "per image (refused by the estimate)", act.stat().st_size, ("export", str(act), str(t / "act.npz"))),
            ("preview of that file", act.stat().st_size, ("preview", str(act), str(t / "act.png"))),
            (f"preview a {classes.stat().st_size // 1024} KiB .lds of 65,536 classes (a grid of 655,360 images)",
             classes.stat().st_size, ("preview", str(classes), str(t / "classes.png"))),
            (f"import-itgan of a {pth.stat().st_size // 1024} KiB .pth whose deflated record declares 200 MiB",
             pth.stat().st_size, ("import-itgan", str(pth), str(pth), str(t / "r.lds"), "--labels-from", "cifar10")),
        ]
        for what, declared, argv in plan:
            r = run_cli(*argv, env={"OMP_NUM_THREADS": "1"})
            r["message"] = r["message"].replace(f"{t}/", "")  # the scratch dir is this run's, not the reader's
            cases.append({"case": what, "declared_mib": round(declared / MIB, 1), **r})
            print(f"{r['peak_rss_mib']:8.1f} MiB  exit {r['exit']}  {what}: {r['message']}", flush=True)
    base = cases[0]["peak_rss_mib"]
    for c in cases:
        c["above_baseline_mib"] = round(c["peak_rss_mib"] - base, 1)
        c["above_declared_mib"] = round(c["peak_rss_mib"] - base - c["declared_mib"], 1)
    servers = server_cases(tiny_bytes) if not args.no_servers else []
    result = {
        "command": f"python tools/bench_bombs.py --mib {args.mib}",
        "machine": machine(),
        "note": "peak RSS of a fresh `latentds -q ...` child (VmHWM); above_declared = peak - baseline - "
                "declared size (negative: less than the input declares)",
        "cases": cases,
        "servers": servers,
    }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
