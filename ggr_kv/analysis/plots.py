"""Figures of what the prefix cache did in a comparison of orderings.

Every figure uses the same style (`RC`, applied with ``matplotlib.rc_context``, never
globally), the same color per ordering (`color_for`: the color of
``ggr_kv.reorder.registry``), hit rates as percentages,
axes with units, and a caption naming the model (and "dummy weights" when the run
used random weights), the vLLM version, the device and the KV block size.

Figures are `matplotlib.figure.Figure` objects made without pyplot, so they work on any
backend (Agg in scripts and tests, inline in notebooks) and hold no global state.

Hit rates come in two kinds, and each panel says which one it shows:

- cumulative: Σhits / Σqueries since the run started (``hit_rate_cum``);
- windowed: Δhits / Δqueries over the last N engine steps (``hit_rate_window``,
  ``ggr_kv.run.runs.add_windowed_rates``). vLLM's own "Prefix cache hit rate" log line is a
  third quantity (a sliding window over the last 1000 requests) and is not plotted.

Saving never overwrites: `save_figure` writes ``NAME.png`` + ``NAME.svg``, or, when
either exists, ``NAME-2.*``, ``NAME-3.*``, ... (the first suffix free for both formats),
and returns the paths it wrote.
"""

from __future__ import annotations

import functools
import textwrap
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter, StrMethodFormatter

from ggr_kv.core.atomic import write_atomic
from ggr_kv.reorder.registry import NO_CACHE, ORIGINAL, color_of, ordering_names
from ggr_kv.run.runs import DEFAULT_WINDOW_STEPS, add_windowed_rates, load_runs

__all__ = [
    "RC",
    "SIMULATED_COLOR",
    "ComparisonFigures",
    "caption",
    "color_for",
    "fig_hit_rate",
    "fig_hit_rate_bars",
    "fig_job_time",
    "fig_kv_usage",
    "fig_predicted_vs_measured",
    "fig_queue",
    "fig_reorder_scores",
    "fig_resources",
    "fig_token_rates",
    "full_window_rates",
    "plot_comparison",
    "save_figure",
    "windowed_equals_cumulative",
]

#: the color of predictions of ``ggr_kv.simulate`` (orderings: `color_for`)
SIMULATED_COLOR = "#000000"
_EXTRA_COLORS = ("#56b4e9", "#f0e442", "#8c564b", "#17becf", "#bcbd22")

#: the one style block of every figure
RC: dict[str, Any] = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("paper"),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "svg.fonttype": "none",  # text stays text in SVG (editable, searchable)
    "svg.hashsalt": "ggr-kv",  # stable element ids between saves
    "figure.constrained_layout.use": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 9.6,
    "figure.titlesize": 11,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
}

_TIME = ("t_s", "time since collector start (s)")
_STEP = ("step", "engine step")
_PCT = PercentFormatter(xmax=1.0, decimals=0)


def _styled(fn):
    """Run a figure function inside the module's style block."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def color_for(ordering: str) -> str:
    """The fixed color of ``ordering`` (``ggr_kv.reorder.registry``); other labels get a
    stable extra color."""
    registered = color_of(ordering)
    if registered is not None:
        return registered
    return _EXTRA_COLORS[zlib.crc32(ordering.encode()) % len(_EXTRA_COLORS)]


def _ordered(labels: Iterable[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    rank = {o: i for i, o in enumerate(ordering_names())}
    return sorted(labels, key=lambda o: (rank.get(o, len(rank)), o))


def _values(series: pd.Series, fmt: str = "{}") -> str:
    vals = [fmt.format(v) for v in dict.fromkeys(series.dropna().tolist())]
    return " / ".join(vals) if vals else "unknown"


def caption(runs: pd.DataFrame) -> str:
    """One line naming model (dummy weights), vLLM version, device and KV block size."""
    models = _values(
        runs.apply(
            lambda r: f"{r['model']} (dummy weights)" if r.get("dummy_weights") else r["model"],
            axis=1,
        )
    )
    parts = [
        f"model: {models}",
        f"vLLM {_values(runs['vllm_version'])}",
        f"device: {_values(runs['device'])}",
        f"KV block: {_values(runs['block_size'], '{:.0f}')} tokens",
    ]
    if "rows" in runs:
        parts.append(f"rows: {_values(runs['rows'], '{:.0f}')}")
    return " | ".join(parts)


def _one_group(runs: pd.DataFrame, steps: pd.DataFrame | None, group: int | None):
    groups = sorted(runs["group"].unique())
    if group is None:
        if len(groups) > 1:
            labels = runs.drop_duplicates("group").set_index("group")["group_label"].to_dict()
            raise ValueError(
                f"these runs form {len(groups)} comparison groups; pass group=. "
                f"Available groups: {labels}"
            )
        group = groups[0]
    if group not in groups:
        raise ValueError(f"no comparison group {group}; available: {groups}")
    r = runs[runs["group"] == group]
    s = None if steps is None else steps[steps["run_id"].isin(r["run_id"])]
    return r, s


def _new_figure(nrows: int, ncols: int, width: float = 4.2, height: float = 2.8) -> Figure:
    fig = Figure(figsize=(width * ncols, height * nrows + 0.6))
    fig.subplots(nrows, ncols, squeeze=False)
    return fig


def _finish(fig: Figure, title: str, runs: pd.DataFrame, note: str | None = None) -> Figure:
    # one comparison: its label under the title; several: each panel names its own
    label = ""
    if "group_label" in runs and runs["group_label"].nunique() == 1:
        label = str(runs["group_label"].iloc[0])
    fig.suptitle(f"{title}\n{label}" if label else title)
    text = caption(runs) + (f"\n{note}" if note else "")
    fig.supxlabel(text, fontsize=7.5, color="0.3")
    return fig


def _lines(
    ax,
    steps: pd.DataFrame,
    x: str,
    y: str,
    *,
    style: str = "-",
    suffix: str = "",
    drawstyle: str = "default",
) -> None:
    """One line per run, colored by ordering; gid ``line:<ordering>:<run_id>``."""
    for (ordering, run_id), s in steps.groupby(["ordering", "run_id"], sort=False):
        s = s.sort_values("step")
        ax.plot(
            s[x].to_numpy(float),
            s[y].to_numpy(float),
            style,
            drawstyle=drawstyle,
            color=color_for(ordering),
            label=f"{ordering}{suffix}",
            gid=f"line:{ordering}:{run_id}",
        )


def _legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    if seen:
        order = _ordered(seen)
        ax.legend([seen[o] for o in order], order, loc="best")


def _curve_panel(ax, steps, x, y, title, ylabel, pct=False, drawstyle="default") -> None:
    d = steps[steps[y].notna()] if y in steps else steps.iloc[:0]
    if d.empty:
        ax.text(0.5, 0.5, f"no {ylabel} recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        ordered = d.assign(_o=pd.Categorical(d["ordering"], _ordered(d["ordering"]), ordered=True))
        _lines(ax, ordered.sort_values(["_o", "run_id", "step"]), x, y, drawstyle=drawstyle)
        _legend(ax)
    ax.set_title(title)
    ax.set_xlabel(_TIME[1] if x == _TIME[0] else _STEP[1])
    ax.set_ylabel(ylabel)
    if pct:
        ax.yaxis.set_major_formatter(_PCT)
        ax.set_ylim(-0.02, 1.02)


def _steps_for(runs: pd.DataFrame, steps: pd.DataFrame, window: int) -> pd.DataFrame:
    """``steps`` with windowed rates over ``window`` steps (recomputed: a table loaded
    with another window must not be drawn under this window's label)."""
    return add_windowed_rates(steps, window)


# -- curve figures ------------------------------------------------------------------
def windowed_equals_cumulative(steps: pd.DataFrame) -> bool:
    """Whether every run's windowed hit rate equals its cumulative one at every step.

    True for runs no longer than the window (each window reaches back to the start), so
    a windowed panel would repeat the cumulative one.
    """
    if "hit_rate_window" not in steps or steps.empty:
        return True
    a = steps["hit_rate_window"].to_numpy(float)
    b = steps["hit_rate_cum"].to_numpy(float)
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))


@_styled
def fig_hit_rate(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    *,
    group: int | None = None,
    window: int = DEFAULT_WINDOW_STEPS,
) -> Figure:
    """Measured prefix-cache hit rate per ordering: cumulative and windowed, vs time and step.

    The windowed row is left out when it would equal the cumulative one (runs of at most
    ``window`` steps); the caption says so.
    """
    runs, steps = _one_group(runs, steps, group)
    steps = _steps_for(runs, steps, window)
    same = windowed_equals_cumulative(steps)
    fig = _new_figure(1 if same else 2, 2)
    axes = fig.axes
    ylabel = "hit rate (% of prompt tokens)"
    cum = "cumulative: Σhits / Σqueries since start"
    win = f"windowed: Δhits / Δqueries over last {window} steps"
    _curve_panel(axes[0], steps, "t_s", "hit_rate_cum", cum, ylabel, pct=True)
    _curve_panel(axes[1], steps, "step", "hit_rate_cum", cum, ylabel, pct=True)
    notes = []
    if same:
        looked = steps[steps["hit_rate_cum"].notna()]
        longest = int(looked.groupby("run_id").size().max()) if len(looked) else 0
        notes.append(
            f"windowed rate (last {window} steps) not drawn: these runs have at most "
            f"{longest} steps, so it equals the cumulative rate"
        )
    else:
        _curve_panel(axes[2], steps, "t_s", "hit_rate_window", win, ylabel, pct=True)
        _curve_panel(axes[3], steps, "step", "hit_rate_window", win, ylabel, pct=True)
    nc = runs[runs["ordering"] == NO_CACHE]
    if len(nc):  # prefix caching off: no lookups; a fresh cache_salt per request: 0% hits
        off = ~nc["enable_prefix_caching"].fillna(False).astype(bool)
        notes.append("no_cache: " + ("prefix caching off, no lookups, so no hit-rate curve"
                                     if off.all() else "a fresh cache_salt per request, "
                                     "so nothing can hit (0%)"))
    return _finish(fig, "Prefix-cache hit rate (measured, tokens)", runs, "\n".join(notes) or None)


@_styled
def fig_kv_usage(runs: pd.DataFrame, steps: pd.DataFrame, *, group: int | None = None) -> Figure:
    """KV-cache usage (fraction of KV blocks held by live requests) vs time and step.

    The y axis spans the data (0 to a little above the peak), not 0-100%, so that a run
    using a few percent of a large cache shows its shape; the caption gives the peak.
    """
    runs, steps = _one_group(runs, steps, group)
    fig = _new_figure(1, 2)
    blocks = _values(runs["num_kv_blocks"], "{:,.0f}") if "num_kv_blocks" in runs else "?"
    ylabel = f"KV-cache usage (% of {blocks} blocks)"
    _curve_panel(fig.axes[0], steps, "t_s", "kv_cache_usage", "vs time", ylabel)
    _curve_panel(fig.axes[1], steps, "step", "kv_cache_usage", "vs engine step", ylabel)
    usage = steps["kv_cache_usage"] if "kv_cache_usage" in steps else pd.Series(dtype=float)
    peak = float(usage.max()) if usage.notna().any() else 0.0
    top = min(1.0, max(peak * 1.15, 0.01))
    decimals = 0 if top >= 0.1 else 1 if top >= 0.01 else 2
    for ax in fig.axes:
        ax.set_ylim(0, top)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=decimals))
    note = (
        f"y axis scaled to the data (peak {100 * peak:.{max(decimals, 1)}f}% of the KV blocks), "
        "not 0-100%; usage counts blocks referenced by running requests (cached but free "
        "blocks count as free)"
    )
    return _finish(fig, "KV-cache usage (measured)", runs, note)


@_styled
def fig_queue(runs: pd.DataFrame, steps: pd.DataFrame, *, group: int | None = None) -> Figure:
    """Running and waiting requests after each engine step, vs time."""
    runs, steps = _one_group(runs, steps, group)
    fig = _new_figure(1, 2)
    # counts hold from one step to the next: drawn as steps, not slopes
    _curve_panel(
        fig.axes[0], steps, "t_s", "num_running", "running", "requests", drawstyle="steps-post"
    )
    _curve_panel(
        fig.axes[1], steps, "t_s", "num_waiting", "waiting", "requests", drawstyle="steps-post"
    )
    return _finish(fig, "Scheduler queue (measured)", runs)


def full_window_rates(steps: pd.DataFrame, window: int) -> pd.DataFrame:
    """Token rates over full windows only: Δtokens / Δt over the last ``window`` steps.

    Adds ``prompt_tok_s_full`` and ``generation_tok_s_full`` (tokens/s), NaN for a run's
    first ``window`` steps (a shorter window would reach back to the collector's start
    and draw a ramp, or a spike when one step's Δt is tiny). Needs ``run_id``.
    """
    out = steps.sort_values(["run_id", "step"], kind="stable").copy()
    g = out.groupby("run_id", sort=False)
    t = out["t_s"].astype(float)
    dt = t - g["t_s"].shift(window).astype(float)
    for col in ("prompt_tokens", "generation_tokens"):
        cum = g[col].cumsum().astype(float)
        d = cum - cum.groupby(out["run_id"], sort=False).shift(window)
        out[f"{col.split('_')[0]}_tok_s_full"] = (d / dt.where(dt > 0)).astype(float)
    return out


@_styled
def fig_token_rates(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    *,
    group: int | None = None,
    window: int = DEFAULT_WINDOW_STEPS,
) -> Figure:
    """Prompt and generated tokens vs time: running totals (the slope is the rate), and
    rates over full ``window``-step windows for runs long enough to have several."""
    runs, steps = _one_group(runs, steps, group)
    s = full_window_rates(steps, window)
    s["prompt_tokens_total"] = s.groupby("run_id", sort=False)["prompt_tokens"].cumsum()
    s["generation_tokens_total"] = s.groupby("run_id", sort=False)["generation_tokens"].cumsum()
    long_enough = len(s) and int(s.groupby("run_id").size().min()) >= 2 * window
    fig = _new_figure(2 if long_enough else 1, 2)
    axes = fig.axes
    _curve_panel(axes[0], s, "t_s", "prompt_tokens_total", "prompt tokens (running total)",
                 "tokens", drawstyle="steps-post")
    _curve_panel(axes[1], s, "t_s", "generation_tokens_total",
                 "generated tokens (running total)", "tokens", drawstyle="steps-post")
    if long_enough:
        win = f"Δtokens / Δt over the last {window} steps"
        _curve_panel(axes[2], s, "t_s", "prompt_tok_s_full", f"prompt tokens/s\n{win}",
                     "tokens/s")
        _curve_panel(axes[3], s, "t_s", "generation_tok_s_full", f"generated tokens/s\n{win}",
                     "tokens/s")
    for ax in axes:
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    note = "prompt tokens are counted when their request first produces output"
    if not long_enough:
        note += f"; rates over {window}-step windows need runs of at least {2 * window} steps"
    return _finish(fig, "Token throughput (measured)", runs, note)


@_styled
def fig_resources(runs: pd.DataFrame, steps: pd.DataFrame, *, group: int | None = None) -> Figure:
    """GPU utilization (%) vs time where sampled, and process CPU (%) where sampled.

    A quantity that was not sampled gets an empty panel saying so, never a curve.
    """
    runs, steps = _one_group(runs, steps, group)
    fig = _new_figure(1, 2)
    panels = [
        (
            "gpu_util",
            "GPU utilization (%)",
            "GPU utilization was not sampled in these runs (no NVIDIA GPU or NVML unavailable)",
        ),
        ("cpu_percent", "process CPU (% of one core)", "CPU use was not sampled in these runs"),
    ]
    for ax, (col, ylabel, missing) in zip(fig.axes, panels):
        if col in steps and steps[col].notna().any():
            _curve_panel(ax, steps, "t_s", col, ylabel.split(" (")[0], ylabel)
        else:
            ax.text(
                0.5,
                0.5,
                textwrap.fill(missing, 40),
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
                color="0.3",
                gid=f"note:{col}",
            )
            ax.set_axis_off()
    return _finish(fig, "Resources (sampled during the runs)", runs)


# -- bar figures ------------------------------------------------------------------
#: comparison groups per row of a bar figure
_BAR_COLUMNS = 3


def _bar_size(n_groups: int, width: float, height: float) -> tuple[float, float]:
    ncols = min(n_groups, _BAR_COLUMNS)
    return max(5.2, width * ncols), height * -(-n_groups // ncols) + 0.5


def _bars(
    fig: Figure,
    agg: pd.DataFrame,
    y: str,
    ylabel: str,
    label_fn,
    *,
    tick_fn=None,
    spread: tuple[str, str] | None = None,
    pct: bool = False,
) -> None:
    """One panel per comparison group, one bar per ordering (gid ``bar:<ordering>``).

    ``label_fn(row)`` is the text above a bar, ``tick_fn(row)`` its x tick label (default:
    the ordering); ``spread`` names the (min, max) columns drawn as an error bar.
    """
    groups = list(dict.fromkeys(agg.sort_values("group", kind="stable")["group_label"]))
    ncols = min(len(groups), _BAR_COLUMNS)
    nrows = -(-len(groups) // ncols)
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    axes = list(grid.ravel()[: len(groups)])
    for extra in grid.ravel()[len(groups):]:
        extra.set_axis_off()
    top = 0.0
    for ax, g in zip(axes, groups):
        d = agg[agg["group_label"] == g]
        order = _ordered(d["ordering"])
        d = d.set_index("ordering").loc[order].reset_index()
        vals = d[y].astype(float).fillna(0.0).to_numpy()
        x = np.arange(len(d))
        bars = ax.bar(x, vals, color=[color_for(o) for o in order], width=0.7)
        for patch, o in zip(bars, order):
            patch.set_gid(f"bar:{o}")
        heads = vals.copy()
        if spread is not None:
            lo = d[spread[0]].astype(float).to_numpy()
            hi = d[spread[1]].astype(float).to_numpy()
            has = (d.get("n", pd.Series(1, index=d.index)).to_numpy() > 1) & ~np.isnan(lo)
            if has.any():
                err = np.vstack([vals - lo, hi - vals])[:, has]
                eb = ax.errorbar(x[has], vals[has], yerr=err, fmt="none", ecolor="0.15",
                                 capsize=4, lw=1)
                eb.lines[2][0].set_gid(f"spread:{g}")  # the min-max bars of this panel
                heads[has] = hi[has]
        for xi, head, (_, row) in zip(x, heads, d.iterrows()):
            ax.annotate(label_fn(row), (xi, head), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7.5)
        top = max(top, float(np.nanmax(heads)) if len(heads) else 0.0)
        ax.set_xticks(x, [tick_fn(r) if tick_fn else r["ordering"] for _, r in d.iterrows()],
                      fontsize=7.5)
        ax.set_title(textwrap.fill(g, 48) if len(groups) > 1 else "")
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("ordering")
        ax.set_ylabel(ylabel)
        if pct:
            ax.yaxis.set_major_formatter(_PCT)
    for ax in axes:
        ax.set_ylim(0, 1.18 if pct else max(top, 1e-9) * 1.3)


@_styled
def fig_job_time(runs: pd.DataFrame) -> Figure:
    """Job time (s, wall time of generate) per ordering; speedups under the bars.

    One panel per comparison group. With repeats (several jobs of one ordering), the bar
    is the median and the error bar spans min to max; speedup = median job time of the
    baseline / median of this ordering.
    """
    from ggr_kv.analysis.summary import job_time_stats

    agg = job_time_stats(runs)
    fig = Figure(figsize=_bar_size(agg["group"].nunique(), 4.6, 3.9))

    def label(row):
        text = f"{row['job_s']:.2f} s"
        if row["n"] > 1:
            text += f"\n[{row['job_min_s']:.2f}-{row['job_max_s']:.2f}]"
        return text

    def tick(row):
        lines = [row["ordering"]]
        if pd.notna(row["speedup_vs_original"]) and row["ordering"] != ORIGINAL:
            lines.append(f"{row['speedup_vs_original']:.2f}× vs original")
        if pd.notna(row["speedup_vs_no_cache"]) and row["ordering"] != NO_CACHE:
            lines.append(f"{row['speedup_vs_no_cache']:.2f}× vs no cache")
        return "\n".join(lines)

    _bars(fig, agg, "job_s", "job time (s, wall time of generate)", label, tick_fn=tick,
          spread=("job_min_s", "job_max_s"))
    reps = sorted(set(agg["n"].astype(int)))
    note = None
    if max(reps) > 1:
        note = (f"bars: median of {'/'.join(map(str, reps))} jobs per ordering; "
                "error bars: min to max")
    return _finish(fig, "Job time per ordering (speedup = baseline time / this time)", runs,
                   note)


@_styled
def fig_hit_rate_bars(runs: pd.DataFrame) -> Figure:
    """Measured prefix-cache hit rate per ordering (cumulative over the whole run, %)."""
    agg = (
        runs.groupby(["group", "group_label", "ordering"], sort=False)["hit_rate"]
        .median()
        .reset_index()
    )
    fig = Figure(figsize=_bar_size(agg["group"].nunique(), 4.2, 3.2))

    def label(row):
        return "n/a (cache off)" if pd.isna(row["hit_rate"]) else f"{100 * row['hit_rate']:.1f}%"

    _bars(fig, agg, "hit_rate", "hit rate (% of prompt tokens)", label, pct=True)
    return _finish(fig, "Prefix-cache hit rate per ordering (cumulative: Σhits / Σqueries)", runs)


@_styled
def fig_reorder_scores(scores: pd.DataFrame, *, title: str = "") -> Figure:
    """Predicted prefix sharing per reorder method (no engine): PHC and hit rates.

    Parameters
    ----------
    scores : the table of ``ggr_kv.analysis.report.reorder_scores`` (one row per method).
    title : e.g. the dataset and row count.
    """
    panels = [
        ("char_hit_rate", "characters shared with the previous prompt"),
        ("token_hit_rate", "tokens shared with any earlier prompt"),
        ("block_hit_rate", "whole KV blocks hit, unbounded cache"),
    ]
    panels = [p for p in panels if p[0] in scores and scores[p[0]].notna().any()]
    fig = Figure(figsize=(3.3 * (len(panels) + 1), 3.6))
    axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
    order = _ordered(scores["method"])
    d = scores.set_index("method").loc[order].reset_index()
    palette = {o: color_for(o) for o in order}
    for ax, (col, what) in zip(axes, [("phc", "prefix hit count"), *panels]):
        sns.barplot(
            data=d,
            x="method",
            y=col,
            hue="method",
            order=order,
            hue_order=order,
            palette=palette,
            legend=False,
            ax=ax,
            saturation=1,
        )
        for patch, o in zip(ax.patches, order):
            patch.set_gid(f"bar:{o}")
        ax.set_xlabel("method")
        if col == "phc":
            ax.set_ylabel("PHC (characters²)")
            ax.set_title("PHC (paper Eq. 1)")
        else:
            ax.set_ylabel("hit rate (% of prompt)")
            ax.set_title(what)
            ax.yaxis.set_major_formatter(_PCT)
            ax.set_ylim(0, 1.05)
            for i, v in enumerate(d[col]):
                ax.annotate(
                    f"{100 * v:.1f}%",
                    (i, v),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                )
    fig.suptitle(f"Prefix sharing of each ordering (before running)\n{title}".rstrip())
    bits = []
    if "tokenizer" in scores and scores["tokenizer"].notna().any():
        bits.append(f"tokenizer: {_values(scores['tokenizer'])}")
    if "block_size" in scores and scores["block_size"].notna().any():
        bits.append(f"KV block: {_values(scores['block_size'], '{:.0f}')} tokens")
    bits.append(f"rows: {_values(scores['rows'], '{:.0f}')}")
    fig.supxlabel(" | ".join(bits), fontsize=7.5, color="0.3")
    return fig


# -- predicted vs measured ------------------------------------------------------------
def _predicted_steps(predicted: Any) -> pd.DataFrame:
    steps = getattr(predicted, "steps", predicted)
    if not isinstance(steps, pd.DataFrame):
        raise TypeError(
            f"a prediction must be a SimResult or a steps DataFrame, got {type(predicted).__name__}"
        )
    missing = [c for c in ("step", "hit_rate_cum", "kv_cache_usage") if c not in steps]
    if missing:
        raise ValueError(
            f"predicted steps lack columns {missing}. Available: {list(steps.columns)}"
        )
    return steps


@_styled
def fig_predicted_vs_measured(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    predicted: Mapping[str, Any],
    *,
    group: int | None = None,
) -> Figure:
    """Simulator predictions (dashed, ``simulated`` color) over measured curves, by step.

    Parameters
    ----------
    predicted : ordering -> ``SimResult`` (or its ``steps`` frame) for that ordering.
    """
    runs, steps = _one_group(runs, steps, group)
    known = set(runs["ordering"])
    unknown = sorted(set(predicted) - known)
    if unknown:
        raise ValueError(
            f"predictions for orderings {unknown} have no measured run; "
            f"measured orderings: {_ordered(known)}"
        )
    orderings = _ordered(predicted)
    if not orderings:
        raise ValueError("no predictions given")
    fig = _new_figure(len(orderings), 2)
    axes = np.array(fig.axes).reshape(len(orderings), 2)
    sim_color = SIMULATED_COLOR
    panels = [
        ("hit_rate_cum", "cumulative hit rate (% of prompt tokens)"),
        ("kv_cache_usage", "KV-cache usage (% of blocks)"),
    ]
    for row, o in zip(axes, orderings):
        meas = steps[steps["ordering"] == o]
        pred = _predicted_steps(predicted[o]).sort_values("step")
        for ax, (col, ylabel) in zip(row, panels):
            ax.set_title(f"{o}: {ylabel.split(' (')[0]}")
            if meas[col].isna().all() and pred[col].isna().all():
                ax.text(
                    0.5,
                    0.5,
                    "prefix caching off: no lookups, no hit rate",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=8,
                    color="0.3",
                )
                ax.set_axis_off()
                continue
            _lines(ax, meas, "step", col, suffix=" measured")
            ax.plot(
                pred["step"].to_numpy(float),
                pred[col].to_numpy(float),
                "--",
                color=sim_color,
                label=f"{o} predicted (simulator)",
                gid=f"line:simulated:{o}",
            )
            ax.legend(loc="best")
            ax.set_xlabel(_STEP[1])
            ax.set_ylabel(ylabel)
            ax.yaxis.set_major_formatter(_PCT)
            ax.set_ylim(-0.02, 1.02)
    note = "simulator steps are its own scheduler steps; they line up with engine steps only approximately"
    return _finish(fig, "Predicted (ggr_kv.simulate) vs measured", runs, note)


# -- saving ----------------------------------------------------------------------
def save_figure(
    fig: Figure, out_dir: str | Path, name: str, formats: tuple[str, ...] = ("png", "svg")
) -> list[Path]:
    """Write ``fig`` as ``out_dir/NAME.<fmt>`` for each format, never overwriting.

    When any ``NAME.<fmt>`` exists, ``NAME-2``, ``NAME-3``, ... is used instead (the
    first one free for every format). Returns the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        stem = name if k == 1 else f"{name}-{k}"
        paths = [out / f"{stem}.{fmt}" for fmt in formats]
        if not any(p.exists() for p in paths):
            break
        k += 1
    with mpl.rc_context(RC):
        for p, fmt in zip(paths, formats):
            meta = {"Date": None} if fmt == "svg" else {}
            write_atomic(p, lambda t, fmt=fmt, meta=meta: fig.savefig(t, format=fmt, metadata=meta),
                         overwrite=False)
    return paths


@dataclass
class ComparisonFigures:
    """What `plot_comparison` made.

    Attributes
    ----------
    runs, steps : the tables the figures were drawn from (``ggr_kv.run.runs.load_runs``).
    figures : figure name -> Figure.
    files : figure name -> files written (PNG, SVG); empty when nothing was saved.
    out_dir : the folder the files went to (None when not saved).
    """

    runs: pd.DataFrame
    steps: pd.DataFrame
    figures: dict[str, Figure] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)
    out_dir: Path | None = None


def comparison_dir(runs: pd.DataFrame) -> Path:
    """The folder holding all of ``runs``' run folders (their deepest common parent)."""
    import os

    parents = [str(Path(p).parent) for p in runs["path"]]
    return Path(os.path.commonpath(parents))


def plot_comparison(
    runs: str | Path | Iterable[str | Path] | pd.DataFrame,
    steps: pd.DataFrame | None = None,
    *,
    predicted: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    save: bool = True,
    window: int = DEFAULT_WINDOW_STEPS,
) -> ComparisonFigures:
    """Draw every comparison figure and (by default) save each as PNG + SVG.

    Parameters
    ----------
    runs : run folders / globs (loaded with ``load_runs``), or a runs table with
        ``steps`` given too.
    predicted : ordering -> simulator result, for the predicted-vs-measured figure
        (only with a single comparison group).
    out_dir : where figures go; default ``<comparison folder>/figures``.
    save : False draws without writing files.
    window : steps per window of the windowed hit rate and token rates.

    Curve figures are drawn per comparison group (names get ``_g<group>`` when there
    are several groups); the bar figures show all groups side by side.
    """
    if isinstance(runs, pd.DataFrame):
        if steps is None:
            raise ValueError("pass the steps table too when runs is a DataFrame")
        runs_df, steps_df = runs, _steps_for(runs, steps, window)
    else:
        runs_df, steps_df = load_runs(runs, window=window)
    res = ComparisonFigures(runs_df, steps_df)
    groups = sorted(runs_df["group"].unique())
    with mpl.rc_context(RC):
        for g in groups:
            sfx = "" if len(groups) == 1 else f"_g{g}"
            res.figures[f"hit_rate{sfx}"] = fig_hit_rate(runs_df, steps_df, group=g, window=window)
            res.figures[f"kv_usage{sfx}"] = fig_kv_usage(runs_df, steps_df, group=g)
            res.figures[f"queue{sfx}"] = fig_queue(runs_df, steps_df, group=g)
            res.figures[f"token_rates{sfx}"] = fig_token_rates(
                runs_df, steps_df, group=g, window=window
            )
            res.figures[f"resources{sfx}"] = fig_resources(runs_df, steps_df, group=g)
        res.figures["job_time"] = fig_job_time(runs_df)
        res.figures["hit_rate_bars"] = fig_hit_rate_bars(runs_df)
        if predicted:
            if len(groups) > 1:
                raise ValueError("predicted curves need runs of a single comparison group")
            res.figures["predicted_vs_measured"] = fig_predicted_vs_measured(
                runs_df, steps_df, predicted
            )
    if save:
        res.out_dir = Path(out_dir) if out_dir is not None else comparison_dir(runs_df) / "figures"
        for name, fig in res.figures.items():
            res.files[name] = save_figure(fig, res.out_dir, name)
    return res
