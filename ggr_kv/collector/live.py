"""The collectors' step logs while runs go: what progress bars and live curves read.

A runner marks each pass over a run's prompts with `live_pass` (a key, a label, the
repeat and the number of prompts); every `VLLMMetricsCollector` started inside it
registers here (`collector_started` / `collector_stopped`). `watch(callback,
interval_s)` calls ``callback(states, final)`` from a thread every ``interval_s``
seconds while runs go, and once more with ``final=True`` at the end; ``states`` is one
`LiveState` per run key: its latest pass's steps (the collector's step log, the same
table the run folder keeps) and how many prompts are done. Offline engines and server
scrapes feed it alike (both fill a collector's step log).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

__all__ = ["LiveState", "collector_started", "collector_stopped", "live_pass", "states", "watch"]


@dataclass(frozen=True)
class LiveState:
    """One run as the live view sees it.

    Attributes
    ----------
    key : the run's unique key (its run id).
    label : what to call it (e.g. the ordering).
    repeat, repeats : the pass under way (or last done), of how many.
    prompts : prompts per pass.
    passes_done : passes finished.
    running : whether a pass is under way now.
    steps : the latest pass's steps (``VLLMMetricsCollector.steps()``), empty before any.
    """

    key: str
    label: str
    repeat: int
    repeats: int
    prompts: int
    passes_done: int = 0
    running: bool = False
    steps: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def prompts_done(self) -> int:
        """Prompts finished over all passes (the running pass: prompts no longer queued or
        running at its latest step)."""
        done = self.passes_done * self.prompts
        if self.running and len(self.steps):
            last = self.steps.iloc[-1]
            left = sum(float(last.get(c, 0) or 0) for c in ("num_running", "num_waiting")
                       if pd.notna(last.get(c)))
            done += max(0, min(self.prompts, self.prompts - int(left)))
        return min(done, self.repeats * self.prompts)


class _Board:
    """Process-wide registry of live passes (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: LiveState | None = None
        self.active: dict[str, tuple[LiveState, Any]] = {}
        self.done: dict[str, LiveState] = {}
        self.watchers = 0


_BOARD = _Board()


@contextlib.contextmanager
def live_pass(key: str, label: str, repeat: int, repeats: int, prompts: int) -> Iterator[None]:
    """Mark one pass of run ``key``: collectors started inside belong to it."""
    with _BOARD.lock:
        prev = _BOARD.done.get(key)
        _BOARD.current = LiveState(key, label, repeat, repeats, prompts,
                                   prev.passes_done if prev else 0)
    try:
        yield
    finally:
        with _BOARD.lock:
            _BOARD.current = None


def collector_started(collector: Any) -> None:
    """Called by ``VLLMMetricsCollector.start``: its steps are the current pass's."""
    with _BOARD.lock:
        cur = _BOARD.current
        if cur is not None and _BOARD.watchers:
            _BOARD.active[cur.key] = (replace(cur, running=True), collector)


def collector_stopped(collector: Any) -> None:
    """Called by ``VLLMMetricsCollector.stop``: keep the pass's final steps."""
    with _BOARD.lock:
        found = [k for k, (_, c) in _BOARD.active.items() if c is collector]
    for key in found:
        steps = collector.steps()
        with _BOARD.lock:
            st, _ = _BOARD.active.pop(key)
            # repeats are numbered from 1: after repeat r, r passes are done (a multi-stage
            # query's stages count once)
            _BOARD.done[key] = replace(st, running=False, steps=steps, passes_done=st.repeat)


def states() -> list[LiveState]:
    """Every run seen since the first watcher started: finished passes and those running."""
    with _BOARD.lock:
        done = dict(_BOARD.done)
        active = list(_BOARD.active.values())
    out = dict(done)
    for st, col in active:
        try:
            steps = col.steps()
        except Exception:  # noqa: BLE001 - a window closing right now: show what we have
            steps = pd.DataFrame()
        out[st.key] = replace(st, steps=steps)
    return list(out.values())


@contextlib.contextmanager
def watch(callback: Callable[[list[LiveState], bool], None],
          interval_s: float = 1.0) -> Iterator[None]:
    """Call ``callback(states(), final)`` every ``interval_s`` s from a thread while the
    block runs, and once with ``final=True`` at its end (in the calling thread).

    An exception in the callback stops the updates (it is raised at the end)."""
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
    with _BOARD.lock:
        if not _BOARD.watchers:
            _BOARD.done.clear()
        _BOARD.watchers += 1
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                callback(states(), False)
            except BaseException as e:  # noqa: BLE001 - reported at the end
                errors.append(e)
                return

    t = threading.Thread(target=loop, name="ggr-kv-live", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        try:
            callback(states(), True)
        finally:
            with _BOARD.lock:
                _BOARD.watchers -= 1
    if errors:
        raise errors[0]
