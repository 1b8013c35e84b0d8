"""The `latentds` command line: a thin shell over the library. ``main(argv) -> exit code``.

Exit codes: 0 success; 1 the input is bad or corrupt (``verify``: the file is corrupt; a file that asks for
more memory than the budget); 2 usage error (bad arguments, a path or URL that does not exist, an output that
exists or cannot be written); 3 a remote file's server cannot be reached or read (refused connection, unknown
host, no answer in time, a broken answer); 4 the server refused (HTTP 401/403/4xx; a redirect latentds does not
follow); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Errors print as one line, without a
traceback, with every character a terminal would act on escaped. The verbs live with their library code:
``files.commands`` (info, verify, export, preview, pack, unpack, merge, import-itgan), ``encoding.commands``
(encode, train-gan) and ``evaluation.commands`` (eval).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from latentds.errors import (
    ConfigError,
    LatentdsError,
    LdsNotFoundError,
    RemoteReadError,
    RemoteRefusedError,
    SourceNotFoundError,
    UsageError,
)
from latentds.format.render import safe
from latentds.version import __version__

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EXIT_UNREACHABLE, EXIT_REFUSED = 3, 4  # a remote file: its server cannot be reached or read / refused


__all__ = ["Terminated", "build_parser", "configure_logging", "main"]


def cmd_models(args: argparse.Namespace) -> int:
    from latentds.models import list_models

    print("\n".join(list_models()))
    return EXIT_OK


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentds", description="Compressed datasets: a generator plus learned latents, in a .lds file."
    )
    parser.add_argument("--version", action="version", version=f"latentds {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or chatter (also after the verb)")
    parser.add_argument("--max-memory", metavar="SIZE", default=None,
                        help="memory a file may make latentds use (e.g. 8G; also after the verb); default "
                             "$LATENTDS_MAX_MEMORY, else 4G on a CPU")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars or chatter")
        p.add_argument("--max-memory", metavar="SIZE", default=argparse.SUPPRESS,
                       help="memory budget for this file (e.g. 8G); default $LATENTDS_MAX_MEMORY, else 4G on a CPU")
        return p

    from latentds.encoding.commands import register as register_encode
    from latentds.evaluation.commands import register as register_eval
    from latentds.files.commands import register as register_files

    register_files(add)
    add("models", cmd_models, "list registered architectures")
    register_encode(add)
    register_eval(add)
    return parser


class _LogHandler(logging.Handler):
    """The library's log records on stderr, one line each, written around a live progress bar (tqdm.write)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = safe(record.getMessage(), 100_000)
            if record.levelno >= logging.WARNING:
                line = f"latentds: {record.levelname.lower()}: {line}"
            if "tqdm" in sys.modules:  # a bar may be on screen: print above it, not through it
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def configure_logging(quiet: bool) -> None:
    """Send the ``latentds`` logger to stderr: info and up, or warnings only with ``-q``."""
    logger = logging.getLogger("latentds")
    if not any(isinstance(h, _LogHandler) for h in logger.handlers):
        logger.addHandler(_LogHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` and staging cleanup runs (like Ctrl-C)."""


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread (main() called from a worker thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _max_memory(size: str | None) -> Iterator[None]:
    """``--max-memory``: the budget as $LATENTDS_MAX_MEMORY for this command (DataLoader workers inherit it)."""
    if not size:
        yield
        return
    from latentds.budget import ENV_MAX_MEMORY, parse_size

    previous = os.environ.get(ENV_MAX_MEMORY)
    os.environ[ENV_MAX_MEMORY] = str(parse_size(size, "--max-memory"))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_MAX_MEMORY, None)
        else:
            os.environ[ENV_MAX_MEMORY] = previous


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(bool(getattr(args, "quiet", False)))
    try:
        with _sigterm_as_exception(), _max_memory(getattr(args, "max_memory", None)):
            return int(args.func(args))
    except RemoteReadError as exc:  # the network or the server, not the file: never "corrupt"
        print(f"latentds: error: {safe(exc, 4000)}", file=sys.stderr)
        return EXIT_REFUSED if isinstance(exc, RemoteRefusedError) else EXIT_UNREACHABLE
    except (ConfigError, LdsNotFoundError, SourceNotFoundError, UsageError) as exc:  # asked wrongly: usage
        print(f"latentds: error: {safe(exc, 4000)}", file=sys.stderr)
        return EXIT_USAGE
    except LatentdsError as exc:
        print(f"latentds: error: {safe(exc, 4000)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("latentds: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("latentds: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # `latentds info x.lds | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # silence the flush at exit
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
