"""Live curves: hit rate, KV usage, queue and tokens/s, redrawn while runs go.

`LiveCurves` is a context manager around any runs (``run_table``, ``run_orderings``,
``run_batch``, a sweep; offline engine or ``server_url``): every ``interval_s`` seconds it
reads each run's latest pass from the collectors' step logs
(`ggr_kv.collector.live.watch`) and redraws one figure of four panels, one line per
ordering. In JupyterLab the figure is shown under the cell and updated in place
(``display=True``, the default there); elsewhere it is only drawn. At the end it is
drawn once more from the final step logs, the same tables the run folders keep
(``steps.parquet``, the last repeat), and `LiveCurves.save` writes it::

    with LiveCurves() as live:
        results = run_orderings(ds, ["original", "ggr"], query, engine=engine)
    live.save(folder / "live_curves")
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ggr_kv.analysis.plots import RC, color_for, save_figure
from ggr_kv.collector.live import LiveState, watch
from ggr_kv.core.display import in_notebook

__all__ = ["PANELS", "LiveCurves", "live_series"]

#: panel -> (title, y label)
PANELS: dict[str, tuple[str, str]] = {
    "hit_rate": ("prefix-cache hit rate (cumulative)", "hit rate"),
    "kv_usage": ("KV-cache usage", "blocks in use"),
    "queue": ("requests running (solid) and waiting (dashed)", "requests"),
    "tokens_s": ("tokens/s (prompt + generated, over up to 8 steps)", "tokens/s"),
}
_RATE_STEPS = 8


def live_series(steps: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The curves of one pass's steps: series name -> (t_s, values).

    ``hit_rate`` (cumulative, 0-1), ``kv_usage`` (0-1), ``running`` and ``waiting``
    (requests), ``tokens_s`` (prompt + generated tokens per second over the last
    `_RATE_STEPS` steps, fewer for passes of few steps). Rows without the field are left out of that series.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if steps is None or not len(steps) or "t_s" not in steps:
        return out
    s = steps.sort_values("step") if "step" in steps else steps
    t = s["t_s"].to_numpy(float)
    for name, col in (("hit_rate", "hit_rate_cum"), ("kv_usage", "kv_cache_usage"),
                      ("running", "num_running"), ("waiting", "num_waiting")):
        if col in s:
            v = s[col].to_numpy(float)
            keep = ~np.isnan(v)
            out[name] = (t[keep], v[keep])
    if {"prompt_tokens", "generation_tokens"} <= set(s.columns):
        tok = np.nan_to_num(s["prompt_tokens"].to_numpy(float)) + np.nan_to_num(
            s["generation_tokens"].to_numpy(float))
        cum = np.cumsum(tok)
        k = max(1, min(_RATE_STEPS, (len(cum) - 1) // 3))  # short passes: fewer steps
        if len(cum) > k:
            dt = t[k:] - t[:-k]
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where(dt > 0, (cum[k:] - cum[:-k]) / dt, np.nan)
            keep = ~np.isnan(rate)
            out["tokens_s"] = (t[k:][keep], rate[keep])
    return out


class LiveCurves:
    """Curves of the runs under way, redrawn every ``interval_s`` seconds.

    Parameters
    ----------
    display : show and update the figure under the notebook cell (default: in Jupyter).
    interval_s : seconds between redraws.
    title : the figure's title.

    Attributes
    ----------
    updates : updates while runs went (not counting the final one); without ``display``
        the figure is drawn only at the end.
    states : what the last redraw showed (`ggr_kv.collector.live.LiveState` per run).
    figure : the figure (one, redrawn in place).
    """

    def __init__(self, *, display: bool | None = None, interval_s: float = 1.0,
                 title: str = "Live: the runs under way") -> None:
        self.display = in_notebook() if display is None else bool(display)
        self.interval_s = float(interval_s)
        self.title = title
        self.updates = 0
        self.states: list[LiveState] = []
        self.figure = Figure(figsize=(10, 5.6), layout="constrained")
        self._handle: Any = None
        self._cm: Any = None
        self._lock = threading.Lock()

    # -- the watch callback ------------------------------------------------------------
    def update(self, states: list[LiveState], final: bool) -> None:
        """Redraw from ``states``; shown in place when displaying."""
        with self._lock:
            self.states = states
            if not final:
                if not any(st.running for st in states):
                    return
                self.updates += 1
                if not self.display:  # nobody looks: draw once, at the end (CPU for vLLM)
                    return
            self.draw()
            if self._handle is not None:
                self._handle.update(self.figure)

    def data(self) -> dict[str, pd.DataFrame]:
        """Run label -> the steps drawn (the latest pass of each run)."""
        return {st.label: st.steps for st in self.states}

    def draw(self) -> Figure:
        """Draw the figure from `states`."""
        fig = self.figure
        fig.clear()
        with mpl.rc_context(RC):
            axes = fig.subplots(2, 2).ravel()
            for ax, (panel, (title, ylabel)) in zip(axes, PANELS.items()):
                ax.set_title(title)
                ax.set_xlabel("seconds since the pass started")
                ax.set_ylabel(ylabel)
            for st in self.states:
                ser = live_series(st.steps)
                color = color_for(st.label.split()[-1])
                label = st.label + (" (running)" if st.running else "")
                gid = f"live:{st.key}"
                for ax, name in zip(axes, ("hit_rate", "kv_usage", "running", "tokens_s")):
                    if name in ser:
                        ax.plot(*ser[name], color=color, label=label, gid=f"{gid}:{name}")
                if "waiting" in ser:
                    axes[2].plot(*ser["waiting"], "--", color=color, gid=f"{gid}:waiting")
            for ax in axes[:2]:
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
                ax.set_ylim(-0.02, 1.02)
            if self.states:
                axes[0].legend(loc="lower right", fontsize="small")
            else:
                axes[0].text(0.5, 0.5, "waiting for the first engine step", ha="center",
                             va="center", transform=axes[0].transAxes)
            fig.suptitle(self.title)
        return fig

    # -- context -----------------------------------------------------------------------
    def __enter__(self) -> LiveCurves:
        if self.display:
            from IPython.display import display

            self.draw()
            self._handle = display(self.figure, display_id=True)
        self._cm = watch(self.update, interval_s=self.interval_s)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        cm, self._cm = self._cm, None
        cm.__exit__(*exc)

    def save(self, path: str | Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
        """Write the final figure as ``PATH.<fmt>`` (never overwriting; see
        `ggr_kv.analysis.plots.save_figure`)."""
        path = Path(path)
        return save_figure(self.figure, path.parent, path.name, formats)
