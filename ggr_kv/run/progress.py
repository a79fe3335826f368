"""Progress of a batch: one bar per run (ordering) with an ETA, from the live step logs.

`RunBars` is a `ggr_kv.collector.live.watch` callback. In a terminal and in Jupyter
(``tqdm.auto``: widget bars there) it draws one bar per run: prompts done out of
repeats x prompts, updated while a pass goes. Where the output is not a terminal (a
log, a pipe) it prints one line per finished pass instead, with the batch's ETA.
vLLM's own progress bars are off; its logs are the caller's business
(`ggr_kv.engine.logs`).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from ggr_kv.collector.live import LiveState
from ggr_kv.core.display import in_notebook

__all__ = ["RunBars"]


class RunBars:
    """One progress bar per run.

    Parameters
    ----------
    runs : ``(key, label, repeats, prompts)`` per run, in display order.
    enabled : False shows nothing.
    file : where bars / lines go (default ``sys.stderr``, read when drawing starts).
    """

    def __init__(self, runs: list[tuple[str, str, int, int]], *, enabled: bool = True,
                 file: IO[str] | None = None) -> None:
        self.runs = runs
        self.enabled = enabled and bool(runs)
        self.file = file
        self.bars: dict[str, Any] = {}
        self.lines: dict[str, int] = {}
        self.t0 = time.monotonic()
        out = file or sys.stderr
        self.notebook = in_notebook()
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        #: seconds between updates
        self.interval_s = 0.5 if (self.tty or self.notebook) else 1.0

    def _open(self) -> None:
        from tqdm.auto import tqdm

        width = max(len(label) for _, label, _, _ in self.runs)
        for k, (key, label, repeats, prompts) in enumerate(self.runs):
            self.bars[key] = tqdm(total=repeats * prompts, desc=f"{label:<{width}}",
                                  unit="prompt", position=k, leave=True, file=self.file,
                                  dynamic_ncols=True, mininterval=0.2)

    def _print_passes(self, states: list[LiveState]) -> None:
        total = sum(r * p for _, _, r, p in self.runs)
        done = sum(st.prompts_done for st in states)
        elapsed = time.monotonic() - self.t0
        for st in states:
            if st.passes_done > self.lines.get(st.key, 0):
                self.lines[st.key] = st.passes_done
                eta = elapsed * (total - done) / done if done else float("nan")
                left = f"; about {eta:.0f} s left" if done < total and eta == eta else ""
                print(f"  {st.label}: pass {st.passes_done}/{st.repeats} done "
                      f"({elapsed:.0f} s{left})", file=self.file or sys.stderr, flush=True)

    def __call__(self, states: list[LiveState], final: bool) -> None:
        if not self.enabled:
            return
        if not (self.tty or self.notebook):
            self._print_passes(states)
            return
        if not self.bars:
            self._open()
        for st in states:
            bar = self.bars.get(st.key)
            if bar is not None and st.prompts_done != bar.n:
                bar.n = st.prompts_done
                bar.refresh()
        if final:
            for bar in self.bars.values():
                bar.close()
