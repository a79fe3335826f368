"""Figures of what the prefix cache did in a comparison of orderings.

Every figure uses the same style (`RC`, applied with ``matplotlib.rc_context``, never
globally), the same color per ordering (`ORDERING_COLORS`), hit rates as percentages,
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

from ggr_kv.run.runs import DEFAULT_WINDOW_STEPS, add_windowed_rates, load_runs

__all__ = [
    "ORDERINGS",
    "ORDERING_COLORS",
    "RC",
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
    "plot_comparison",
    "save_figure",
]

#: orderings in display order
ORDERINGS: tuple[str, ...] = ("no_cache", "original", "sorted", "ggr", "ophr")

#: one fixed color per ordering in every figure (Okabe-Ito, color-blind safe);
#: ``simulated`` marks predictions of ``ggr_kv.simulate``
ORDERING_COLORS: dict[str, str] = {
    "no_cache": "#7f7f7f",
    "original": "#0072b2",
    "sorted": "#e69f00",
    "ggr": "#009e73",
    "ophr": "#cc79a7",
    "simulated": "#000000",
}
_EXTRA_COLORS = ("#d55e00", "#56b4e9", "#f0e442", "#8c564b", "#17becf", "#bcbd22")

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
    """The fixed color of ``ordering``; unknown labels get a stable extra color."""
    if ordering in ORDERING_COLORS:
        return ORDERING_COLORS[ordering]
    return _EXTRA_COLORS[zlib.crc32(ordering.encode()) % len(_EXTRA_COLORS)]


def _ordered(labels: Iterable[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    rank = {o: i for i, o in enumerate(ORDERINGS)}
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
    label = _values(runs["group_label"]) if "group_label" in runs else ""
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
    if "hit_rate_window" not in steps:
        steps = add_windowed_rates(steps, window)
    return steps


# -- curve figures ------------------------------------------------------------------
@_styled
def fig_hit_rate(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    *,
    group: int | None = None,
    window: int = DEFAULT_WINDOW_STEPS,
) -> Figure:
    """Measured prefix-cache hit rate per ordering: cumulative and windowed, vs time and step."""
    runs, steps = _one_group(runs, steps, group)
    steps = _steps_for(runs, steps, window)
    fig = _new_figure(2, 2)
    axes = fig.axes
    ylabel = "hit rate (% of prompt tokens)"
    cum = "cumulative: Σhits / Σqueries since start"
    win = f"windowed: Δhits / Δqueries over last {window} steps"
    _curve_panel(axes[0], steps, "t_s", "hit_rate_cum", cum, ylabel, pct=True)
    _curve_panel(axes[1], steps, "step", "hit_rate_cum", cum, ylabel, pct=True)
    _curve_panel(axes[2], steps, "t_s", "hit_rate_window", win, ylabel, pct=True)
    _curve_panel(axes[3], steps, "step", "hit_rate_window", win, ylabel, pct=True)
    note = None
    if (runs["ordering"] == "no_cache").any():
        note = "no_cache runs have prefix caching off: no lookups, so no hit-rate curve"
    return _finish(fig, "Prefix-cache hit rate (measured, tokens)", runs, note)


@_styled
def fig_kv_usage(runs: pd.DataFrame, steps: pd.DataFrame, *, group: int | None = None) -> Figure:
    """KV-cache usage (fraction of KV blocks held by live requests) vs time and step."""
    runs, steps = _one_group(runs, steps, group)
    fig = _new_figure(1, 2)
    ylabel = "KV-cache usage (% of blocks)"
    _curve_panel(fig.axes[0], steps, "t_s", "kv_cache_usage", "vs time", ylabel, pct=True)
    _curve_panel(fig.axes[1], steps, "step", "kv_cache_usage", "vs engine step", ylabel, pct=True)
    note = (
        "usage counts blocks referenced by running requests; cached but free blocks count as free"
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


@_styled
def fig_token_rates(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    *,
    group: int | None = None,
    window: int = DEFAULT_WINDOW_STEPS,
) -> Figure:
    """Prompt and generation token throughput (tokens/s, windowed) vs time."""
    runs, steps = _one_group(runs, steps, group)
    steps = _steps_for(runs, steps, window)
    fig = _new_figure(1, 2)
    win = f"Δtokens / Δt over last {window} steps"
    _curve_panel(fig.axes[0], steps, "t_s", "prompt_tok_s", f"prompt tokens\n{win}", "tokens/s")
    _curve_panel(
        fig.axes[1], steps, "t_s", "generation_tok_s", f"generated tokens\n{win}", "tokens/s"
    )
    for ax in fig.axes:
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    note = "prompt tokens are counted when their request first produces output"
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
def _bar_frame(runs: pd.DataFrame) -> pd.DataFrame:
    agg = (
        runs.groupby(["group", "group_label", "ordering"], sort=False)
        .agg(
            job_s=("job_s", "median"),
            hit_rate=("hit_rate", "median"),
            speedup_vs_original=("speedup_vs_original", "median"),
            speedup_vs_no_cache=("speedup_vs_no_cache", "median"),
            n=("run_id", "size"),
        )
        .reset_index()
    )
    return agg


def _bars(fig: Figure, runs: pd.DataFrame, y: str, ylabel: str, label_fn, pct=False) -> None:
    agg = _bar_frame(runs)
    groups = list(dict.fromkeys(agg.sort_values("group")["group_label"]))
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    for ax, g in zip(axes, groups):
        d = agg[agg["group_label"] == g]
        order = _ordered(d["ordering"])
        d = d.set_index("ordering").loc[order].reset_index()
        sns.barplot(
            data=d.fillna({y: 0.0}),
            x="ordering",
            y=y,
            hue="ordering",
            order=order,
            hue_order=order,
            palette={o: color_for(o) for o in order},
            legend=False,
            ax=ax,
            saturation=1,
        )
        for patch, o in zip(ax.patches, order):
            patch.set_gid(f"bar:{o}")
        top = max(float(d[y].max(skipna=True)) if d[y].notna().any() else 0.0, 1e-9)
        for i, row in d.iterrows():
            val = 0.0 if pd.isna(row[y]) else float(row[y])
            ax.annotate(
                label_fn(row),
                (i, val),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7.5,
            )
        ax.set_ylim(0, 1.18 if pct else top * 1.45)
        ax.set_title(g if len(groups) > 1 else "")
        ax.set_xlabel("ordering")
        ax.set_ylabel(ylabel)
        if pct:
            ax.yaxis.set_major_formatter(_PCT)


@_styled
def fig_job_time(runs: pd.DataFrame) -> Figure:
    """Job time (s, wall time of generate) per ordering, labelled with speedups.

    One panel per comparison group; repeated runs of an ordering show their median.
    """
    n = runs["group"].nunique()
    fig = Figure(figsize=(max(4.8, 3.6 * n), 3.9))

    def label(row):
        text = f"{row['job_s']:.2f} s"
        if pd.notna(row["speedup_vs_original"]) and row["ordering"] != "original":
            text += f"\n{row['speedup_vs_original']:.2f}× vs original"
        if pd.notna(row["speedup_vs_no_cache"]) and row["ordering"] != "no_cache":
            text += f"\n{row['speedup_vs_no_cache']:.2f}× vs no cache"
        return text

    _bars(fig, runs, "job_s", "job time (s, wall time of generate)", label)
    return _finish(fig, "Job time per ordering (speedup = baseline time / this time)", runs)


@_styled
def fig_hit_rate_bars(runs: pd.DataFrame) -> Figure:
    """Measured prefix-cache hit rate per ordering (cumulative over the whole run, %)."""
    n = runs["group"].nunique()
    fig = Figure(figsize=(max(4.8, 3.6 * n), 3.6))

    def label(row):
        return "n/a (cache off)" if pd.isna(row["hit_rate"]) else f"{100 * row['hit_rate']:.1f}%"

    _bars(fig, runs, "hit_rate", "hit rate (% of prompt tokens)", label, pct=True)
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
    sim_color = ORDERING_COLORS["simulated"]
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
            with open(p, "xb") as f:  # "x": fail rather than overwrite
                fig.savefig(f, format=fmt, metadata=meta)
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
