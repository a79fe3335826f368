"""vLLM's output into a log file, the terminal kept for what the user asked for.

`engine_log(path)` sends everything this process writes to its stdout and stderr file
descriptors, Python's and C/C++'s alike (vLLM's and torch's logs, warnings, compile
messages), into ``path`` and yields a `Terminal`: streams on the original stdout and
stderr for progress bars and results. ``verbose=True`` changes nothing (everything
shows). The CLI's ``run`` and ``compare`` wrap engine work in it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["Terminal", "engine_log"]

#: loggers whose INFO lines go to the log file (the terminal shows none of them)
_LOGGERS = ("vllm", "transformers", "torch", "huggingface_hub", "py.warnings")


@dataclass
class Terminal:
    """Where the user's output goes while `engine_log` is on.

    Attributes
    ----------
    out, err : text streams on the original stdout / stderr.
    log : the log file (None with ``verbose``).
    """

    out: IO[str]
    err: IO[str]
    log: Path | None


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()


def _configure_transformers() -> None:
    """Make transformers add its own stderr handler now, while sys.stderr is still the
    process's: added later (on its first log line, transformers >= 5), it would write onto
    the terminal stream `engine_log` puts in sys.stderr's place."""
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.get_logger("transformers")


@contextlib.contextmanager
def engine_log(path: str | Path, *, verbose: bool = False) -> Iterator[Terminal]:
    """Redirect this process's stdout/stderr (file descriptors 1 and 2) to ``path``
    (appended) while the block runs; yield the terminal's streams.

    Library loggers log INFO into the file (their levels are put back afterwards).
    Where the descriptors cannot be redirected (no real file descriptors, e.g. inside
    Jupyter) only the loggers are redirected.
    """
    if verbose:
        yield Terminal(sys.stdout, sys.stderr, None)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - a log stream, closed below
    _flush()
    saved: list[int] = []
    try:
        for fd in (1, 2):
            saved.append(os.dup(fd))
    except (OSError, ValueError):
        for fd in saved:
            os.close(fd)
        saved = []
    _configure_transformers()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(name)s: %(message)s"))
    levels = {}
    for name in _LOGGERS:
        lg = logging.getLogger(name)
        levels[name] = (lg.level, [(h, getattr(h, "stream", None)) for h in lg.handlers])
        for h in lg.handlers:  # vLLM's own handler writes to the stream it was given
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setStream(log)
        if name != "vllm":  # vLLM's own handler writes to stderr, the file: no twice
            lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    # vLLM configures its handler when imported: onto the process's own stderr (fd 2, the
    # file now), not the terminal stream sys.stderr becomes below; engine processes too
    stream_was = os.environ.get("VLLM_LOGGING_STREAM")
    os.environ["VLLM_LOGGING_STREAM"] = "ext://sys.__stderr__"
    capturing = logging.captureWarnings  # Python warnings as log records, into the file
    capturing(True)
    # a record of a logger without handlers (vLLM's import-time warnings come before vLLM
    # configures its logger) goes to logging.lastResort, which writes to sys.stderr: the
    # terminal stream below; into the file instead
    last_resort, logging.lastResort = logging.lastResort, handler
    out = err = None
    streams = (sys.stdout, sys.stderr)
    try:
        if saved:
            out = io.TextIOWrapper(os.fdopen(os.dup(saved[0]), "wb", buffering=0),
                                   encoding="utf-8", line_buffering=True, write_through=True)
            err = io.TextIOWrapper(os.fdopen(os.dup(saved[1]), "wb", buffering=0),
                                   encoding="utf-8", line_buffering=True, write_through=True)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            # Python's own prints and progress bars go to the terminal; whatever writes
            # to the descriptors (C++, handlers made before) goes to the file
            sys.stdout, sys.stderr = out, err
        yield Terminal(out or sys.stdout, err or sys.stderr, path)
    finally:
        _flush()
        sys.stdout, sys.stderr = streams
        capturing(False)
        logging.lastResort = last_resort
        if stream_was is None:
            os.environ.pop("VLLM_LOGGING_STREAM", None)
        else:
            os.environ["VLLM_LOGGING_STREAM"] = stream_was
        if saved:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        for s in (out, err):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.flush()
                    s.close()
        for name, (level, handlers) in levels.items():
            lg = logging.getLogger(name)
            lg.removeHandler(handler)
            lg.setLevel(level)
            for h, stream in handlers:
                if stream is not None and isinstance(h, logging.StreamHandler):
                    h.setStream(stream)
        log.close()
