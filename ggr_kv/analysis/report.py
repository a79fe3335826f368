"""A short Markdown report per comparison: the numbers behind each figure.

`write_report` writes ``report.md`` next to the figures of ``ggr_kv.analysis.plots`` (never
overwriting: ``report-2.md``, ... when it exists). Every number comes from the runs
table of ``ggr_kv.run.runs.load_runs``; rates are shown as percentages, times in seconds.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.analysis.plots import caption
from ggr_kv.core.atomic import write_atomic

__all__ = [
    "ReportData",
    "counts_table",
    "demo_table",
    "figure_numbers",
    "latency_table",
    "markdown_table",
    "objectives_table",
    "plan_preview",
    "reorder_scores",
    "report_data",
    "report_text",
    "speedup_table",
    "summary_table",
    "write_report",
]

Fmt = Callable[[Any], str]


def _num(decimals: int) -> Fmt:
    return lambda v: "" if pd.isna(v) else f"{v:,.{decimals}f}"


def _pct(v: Any) -> str:
    return "n/a" if pd.isna(v) else f"{100 * float(v):.1f}%"


def _x(v: Any) -> str:
    return "" if pd.isna(v) else f"{float(v):.2f}×"


def _int(v: Any) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def markdown_table(df: pd.DataFrame, formats: Mapping[str, Fmt] | None = None) -> str:
    """``df`` as a GitHub Markdown table; ``formats`` maps a column to a cell formatter."""
    formats = formats or {}
    cols = list(df.columns)

    def cell(c: str, v: Any) -> str:
        text = formats[c](v) if c in formats else ("" if v is None or v is pd.NA else str(v))
        return text.replace("|", "\\|").replace("\n", " ")

    numeric = {c for c in cols if pd.api.types.is_numeric_dtype(df[c])}
    lines = ["| " + " | ".join(cols) + " |"]
    lines.append("|" + "|".join("---:" if c in numeric else "---" for c in cols) + "|")
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(cols, row)) + " |")
    return "\n".join(lines)


def _sampled(v: Any) -> str:
    return "not sampled" if pd.isna(v) else f"{v:.1f}"


def _spread_s(row: Mapping[str, Any]) -> str:
    if pd.isna(row["job_s"]):
        return "n/a"
    text = f"{row['job_s']:.2f}"
    if row["n"] > 1:
        text += f" [{row['job_min_s']:.2f}-{row['job_max_s']:.2f}] (n={int(row['n'])})"
    return text


def _per_ordering(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, ordering): medians of the run columns, job time statistics."""
    from ggr_kv.analysis.summary import job_time_stats

    num = ["rows", "prompt_tokens", "hit_rate", "peak_kv_usage", "preemptions"]
    med = (
        runs.groupby(["group", "ordering"], sort=False)[[c for c in num if c in runs]]
        .median()
        .reset_index()
    )
    first = runs.groupby(["group", "ordering"], sort=False)[["dataset"]].first().reset_index()
    stats = job_time_stats(runs)
    out = stats.merge(med, on=["group", "ordering"]).merge(first, on=["group", "ordering"])
    out["job"] = out.apply(_spread_s, axis=1)
    return out


#: per-ordering column -> (report header, formatter)
_SUMMARY: dict[str, tuple[str, Fmt]] = {
    "dataset": ("dataset", str),
    "ordering": ("ordering", str),
    "rows": ("rows", _int),
    "prompt_tokens": ("prompt tokens", _int),
    "job": ("job s, median [min-max]", str),
    "speedup_vs_original": ("speedup vs original", _x),
    "speedup_vs_no_cache": ("speedup vs no cache", _x),
    "hit_rate": ("hit rate", _pct),
    "peak_kv_usage": ("peak KV usage", _pct),
    "preemptions": ("preemptions", _int),
}


def _table(runs: pd.DataFrame, spec: Mapping[str, tuple[str, Fmt]]) -> str:
    cols = [c for c in spec if c in runs]
    if runs["group"].nunique() > 1 and "group_label" not in cols:
        spec = {"group_label": ("group", str), **spec}
        cols = ["group_label", *cols]
    df = runs[cols].rename(columns={c: spec[c][0] for c in cols})
    return markdown_table(df, {spec[c][0]: spec[c][1] for c in cols})


def summary_table(runs: pd.DataFrame) -> str:
    """The main table, one row per ordering (per comparison group): dataset, rows, prompt
    tokens, job time (median [min-max] over repeats), speedups, hit rate, peak KV usage,
    preemptions (Markdown)."""
    return _table(_per_ordering(runs), _SUMMARY)


def _s(decimals: int = 3) -> Fmt:
    return lambda v: "n/a" if pd.isna(v) else f"{float(v):.{decimals}f}"


def latency_table(latency: pd.DataFrame) -> str:
    """TTFT and end-to-end latency p50 / p99 per ordering (seconds), Markdown."""
    return _table(latency, {
        "ordering": ("ordering", str),
        "requests": ("requests", _int),
        "ttft_p50_s": ("TTFT p50 s", _s()),
        "ttft_p99_s": ("TTFT p99 s", _s()),
        "e2e_p50_s": ("end-to-end p50 s", _s()),
        "e2e_p99_s": ("end-to-end p99 s", _s()),
    })


def _cache_off(ordering: str) -> bool:
    """Runs of ``ordering`` have prefix caching off (``no_cache``, ``<m>+no_cache``)."""
    from ggr_kv.reorder.registry import NO_CACHE, get_ordering

    o = get_ordering(ordering)
    return (o is not None and not o.prefix_caching) or ordering.endswith(f"+{NO_CACHE}")


def objectives_table(runs: pd.DataFrame, scores: pd.DataFrame | None) -> str:
    """What each ordering optimizes, its PHC and predicted block hit rate beside the
    measured hit rate (Markdown)."""
    from ggr_kv.analysis.summary import objective_of

    per = runs.groupby(["group", "group_label", "ordering"], sort=False).agg(
        hit_rate=("hit_rate", "median"), run_id=("run_id", "first"),
        block_size=("block_size", "first")).reset_index()
    per["optimizes"] = per["ordering"].map(objective_of)
    if scores is not None and len(scores):
        per = per.merge(scores, on="run_id", how="left")
    for c in ("phc", "block_hit_rate", "score_note", "tokenizer"):
        if c not in per:
            per[c] = np.nan if c != "score_note" else ""
    per["block"] = [
        "n/a (cache off)" if _cache_off(o)
        else _pct(b) if pd.notna(b) else (n or "n/a")
        for o, b, n in zip(per["ordering"], per["block_hit_rate"], per["score_note"])
    ]
    names = [(Path(str(t)).parent if str(t).endswith(".json") else Path(str(t))).name
             for t in per["tokenizer"].dropna().unique()]  # a model folder: its name
    toks = ", ".join(f"{n} tokenizer" for n in dict.fromkeys(names)) or "the run's tokenizer"
    sizes = "/".join(f"{int(b)}" for b in per["block_size"].dropna().unique()) or "?"
    return _table(per, {
        "ordering": ("ordering", str),
        "optimizes": ("optimizes", str),
        "phc": ("PHC (characters²)", lambda v: "n/a" if pd.isna(v) else f"{v:,.0f}"),
        "block": (f"block hit rate, predicted ({toks}, {sizes}-token blocks)", str),
        "hit_rate": ("hit rate, measured", _pct),
    })


def speedup_table(runs: pd.DataFrame) -> str:
    """Ideal speedup from hit rates, measured speedup and their ratio (and predicted vs
    measured job time where the runs recorded a prediction), Markdown."""
    from ggr_kv.analysis.summary import ideal_speedups, job_time_stats

    ideal = ideal_speedups(runs)
    stats = job_time_stats(runs)[["group", "ordering", "job_s"]]
    ideal = ideal.merge(stats, on=["group", "ordering"])
    spec: dict[str, tuple[str, Fmt]] = {
        "ordering": ("ordering", str),
        "hit_rate": ("hit rate", _pct),
        "ideal_speedup": ("ideal speedup (1-h_original)/(1-h)",
                          lambda v: "n/a" if pd.isna(v) else _x(v)),
        "speedup_vs_original": ("measured speedup", _x),
        "measured_over_ideal": ("measured / ideal",
                                lambda v: "n/a" if pd.isna(v) else f"{v:.2f}"),
        "job_s": ("measured job s (median)", _s(2)),
    }
    if "predicted_job_s" in runs and runs["predicted_job_s"].notna().any():
        pred = runs.groupby(["group", "ordering"], sort=False)["predicted_job_s"].median()
        ideal["predicted_job_s"] = [pred.get((g, o), np.nan)
                                    for g, o in zip(ideal["group"], ideal["ordering"])]
        ideal["predicted_over_measured"] = ideal["predicted_job_s"] / ideal["job_s"]
        spec["predicted_job_s"] = ("predicted job s", _s(2))
        spec["predicted_over_measured"] = (
            "predicted / measured", lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return _table(ideal, spec)


def counts_table(runs: pd.DataFrame, counts: pd.DataFrame) -> str:
    """Collector hits, summed num_cached_tokens and simulated hits per run, flagged."""
    d = counts.merge(runs[["run_id", "group", "group_label"]], on="run_id")
    d["check"] = ["ok" if a else f"MISMATCH: {why}" for a, why in zip(d["agree"],
                                                                       d["disagreement"])]
    return _table(d, {
        "ordering": ("ordering", str),
        "run_id": ("run", str),
        "collector_hits": ("collector hits (tokens)", lambda v: "n/a" if pd.isna(v)
                           else f"{int(v):,}"),
        "request_cached": ("Σ num_cached_tokens", lambda v: "n/a" if pd.isna(v)
                           else f"{int(v):,}"),
        "simulated_hits": ("simulator hits", lambda v: "not simulated" if pd.isna(v)
                           else f"{int(v):,}"),
        "check": ("check", str),
    })


def figure_numbers(
    runs: pd.DataFrame, predicted: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Figure name -> Markdown table of the numbers that figure shows."""
    per = _per_ordering(runs).merge(
        runs.groupby(["group", "ordering"], sort=False)[
            [c for c in ("prefix_queries", "prefix_hits", "request_hit_rate", "num_kv_blocks",
                         "block_size", "mean_kv_usage", "steps", "max_running", "max_waiting",
                         "prompt_tok_s", "generation_tokens", "generation_tok_s",
                         "mean_gpu_util", "mean_cpu_percent", "engine_start_s", "reorder_s")
             if c in runs]
        ].median().reset_index(),
        on=["group", "ordering"],
    )
    out = {
        "hit_rate": _table(per, {
            "ordering": ("ordering", str),
            "prefix_queries": ("looked-up tokens", _int),
            "prefix_hits": ("hit tokens", _int),
            "hit_rate": ("cumulative hit rate (end)", _pct),
            "request_hit_rate": ("cached / prompt tokens (per request)", _pct),
        }),
        "kv_usage": _table(per, {
            "ordering": ("ordering", str),
            "num_kv_blocks": ("KV blocks", _int),
            "block_size": ("block size (tokens)", _int),
            "peak_kv_usage": ("peak usage", _pct),
            "mean_kv_usage": ("mean usage (over steps)", _pct),
        }),
        "queue": _table(per, {
            "ordering": ("ordering", str),
            "steps": ("engine steps", _int),
            "max_running": ("max running", _int),
            "max_waiting": ("max waiting", _int),
            "preemptions": ("preemptions", _int),
        }),
        "token_rates": _table(per, {
            "ordering": ("ordering", str),
            "prompt_tok_s": ("prompt tokens/s (of job time)", _num(1)),
            "generation_tokens": ("generated tokens", _int),
            "generation_tok_s": ("generated tokens/s (of job time)", _num(1)),
        }),
        "resources": _table(per, {
            "ordering": ("ordering", str),
            "mean_gpu_util": ("mean GPU util (%)", _sampled),
            "mean_cpu_percent": ("mean process CPU (%)", _sampled),
        }),
        "job_time": _table(per, {
            "ordering": ("ordering", str),
            "job": ("job s, median [min-max]", str),
            "speedup_vs_original": ("speedup vs original", _x),
            "speedup_vs_no_cache": ("speedup vs no cache", _x),
            "engine_start_s": ("engine start s", _num(1)),
            "reorder_s": ("reorder s", _num(3)),
        }),
        "hit_rate_bars": _table(per, {
            "ordering": ("ordering", str),
            "hit_rate": ("hit rate", _pct),
        }),
    }
    if predicted:
        rows = []
        for o, pred in predicted.items():
            ps = getattr(pred, "steps", pred)
            meas = runs[runs["ordering"] == o]
            rows.append(
                {
                    "ordering": o,
                    "predicted hit rate (end)": float(ps["hit_rate_cum"].dropna().iloc[-1])
                    if ps["hit_rate_cum"].notna().any()
                    else np.nan,
                    "measured hit rate (end)": float(meas["hit_rate"].median()),
                    "predicted peak KV usage": float(ps["kv_cache_usage"].max()),
                    "measured peak KV usage": float(meas["peak_kv_usage"].median()),
                    "predicted steps": len(ps),
                    "measured steps": float(meas["steps"].median()),
                }
            )
        df = pd.DataFrame(rows)
        fm = {c: _pct for c in df.columns if "hit rate" in c or "KV" in c}
        fm.update({"predicted steps": _int, "measured steps": _int})
        out["predicted_vs_measured"] = markdown_table(df, fm)
    return out


_FIG_TITLES = {
    "hit_rate": "Prefix-cache hit rate over time and steps",
    "kv_usage": "KV-cache usage",
    "queue": "Running and waiting requests",
    "token_rates": "Prompt and generation throughput",
    "resources": "GPU / CPU utilization",
    "job_time": "Job time and speedups",
    "hit_rate_bars": "Hit rate per ordering",
    "predicted_vs_measured": "Simulator prediction vs measurement",
}


@dataclass
class ReportData:
    """Numbers a report shows beyond the runs table (`report_data` computes them).

    Attributes
    ----------
    latency : `ggr_kv.analysis.summary.latency_percentiles` (TTFT / end-to-end, s).
    scores : `ggr_kv.analysis.crosscheck.plan_scores` (PHC, predicted block hit rate), or None.
    counts : `ggr_kv.analysis.crosscheck.hit_counts` (three hit counts, flagged).
    predicted : ordering -> simulator result, for the predicted-vs-measured figure (one
        comparison group only; empty otherwise).
    notes : why something was left out (e.g. a run that could not be simulated).
    """

    latency: pd.DataFrame
    scores: pd.DataFrame | None
    counts: pd.DataFrame
    predicted: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def report_data(runs: pd.DataFrame, *, simulate: bool = True, score: bool = True,
                progress: bool = False) -> ReportData:
    """Load the requests, score each plan and (``simulate``) replay each ordering with
    ``ggr_kv.simulate`` (once per comparison group and ordering)."""
    from tqdm.auto import tqdm

    from ggr_kv.analysis.crosscheck import hit_counts, plan_scores, run_tokenizer
    from ggr_kv.analysis.summary import latency_percentiles
    from ggr_kv.run.runs import load_run, simulate_run

    bar = tqdm(total=len(runs) * (1 + simulate), desc="report", disable=not progress)
    reqs = []
    for r in runs.itertuples():
        reqs.append((r.run_id, load_run(r.path).requests))
    latency = latency_percentiles(runs, reqs)
    scores = plan_scores(runs) if score else None
    bar.update(len(runs))
    by_run: dict[str, Any] = {}
    by_ordering: dict[str, Any] = {}
    notes: list[str] = []
    if simulate:
        done: dict[tuple, Any] = {}
        for r in runs.itertuples():
            key = (r.group, r.ordering)
            if key not in done:
                run = load_run(r.path)
                try:
                    done[key] = simulate_run(run, tokenizer=run_tokenizer(run.meta))
                except (ValueError, FileNotFoundError, KeyError, OSError) as e:
                    done[key] = None
                    notes.append(f"{r.ordering} ({r.run_id}) not simulated: "
                                 f"{textwrap.shorten(str(e), 200)}")
            if done[key] is not None:
                by_run[r.run_id] = done[key]
            bar.update(1)
        if runs["group"].nunique() == 1:
            by_ordering = {o: p for (g, o), p in done.items() if p is not None}
    bar.close()
    return ReportData(latency, scores, hit_counts(runs, by_run), by_ordering, notes)


_OBJECTIVES_TEXT = (
    "PHC is the GGR paper's objective (characters² of shared leading cells); the block hit "
    "rate is what vLLM caches: whole KV blocks of identical token prefixes, predicted from "
    "the prompts alone for an unbounded cache."
)
_IDEAL_TEXT = (
    "If a job's time were all uncached prefill, a hit rate h would give the speedup "
    "(1 - h_original) / (1 - h) over the original order. Measured / ideal near 1: the job "
    "is prefill-bound and the cache's savings arrived; well below 1: decode or engine "
    "overhead takes the time."
)
_LATENCY_TEXT = (
    "Time to first token and end-to-end latency (arrival to last token) of every request, "
    "pooled over repeats, seconds."
)
_COUNTS_TEXT = (
    "Three counts of the same prompt tokens served from the prefix cache: the collector's "
    "hit counter, the sum of the requests' `num_cached_tokens`, and `ggr_kv.simulate`'s "
    "replay of the run. A MISMATCH (a gap above {tol:.1f}% of the looked-up prompt tokens) marks a run whose counters "
    "cannot be taken at face value."
)


def report_text(
    runs: pd.DataFrame,
    *,
    figures: Mapping[str, list[Path]] | None = None,
    predicted: Mapping[str, Any] | None = None,
    data: ReportData | None = None,
    title: str | None = None,
    relative_to: Path | None = None,
) -> str:
    """The report as Markdown text (see `write_report`)."""
    from ggr_kv import __version__

    if predicted is None and data is not None:
        predicted = data.predicted or None
    datasets = ", ".join(dict.fromkeys(runs["dataset"].astype(str)))
    lines = [
        f"# {title or 'Orderings compared: ' + datasets}",
        "",
        caption(runs),
        "",
        (
            f"Written {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by ggr_kv "
            f"{__version__} (Python {platform.python_version()}) from {len(runs)} run folders. "
            "Hit rates are measured prefix-cache hits over looked-up prompt tokens, cumulative "
            "over the run. Job time is the wall time of generate (the engine start, "
            "reordering and writing the run folder are outside it); with repeats, the median "
            "[min-max] of the jobs. Speedup = the baseline's median job time / this "
            "ordering's, within one comparison group."
        ),
        "",
        "## Runs",
        "",
        summary_table(runs),
        "",
        "## What each ordering optimizes, predicted and measured",
        "",
        _OBJECTIVES_TEXT,
        "",
        objectives_table(runs, data.scores if data else None),
        "",
        "## Speedup: ideal from hit rates vs measured",
        "",
        _IDEAL_TEXT,
        "",
        speedup_table(runs),
        "",
    ]
    if data is not None:
        lines += ["## Latency per request", "", _LATENCY_TEXT, "", latency_table(data.latency),
                  "", "## Cached tokens: collector, requests, simulator", "",
                  _COUNTS_TEXT.format(tol=100 * _tolerance()), "",
                  counts_table(runs, data.counts), ""]
        lines += [f"- {note}" for note in data.notes]
        if data.notes:
            lines.append("")
    numbers = figure_numbers(runs, predicted)
    figures = dict(figures or {})
    names = list(dict.fromkeys([*numbers, *figures]))
    for name in names:
        base = name.split("_g")[0] if name not in _FIG_TITLES else name
        lines += [f"## {_FIG_TITLES.get(base, name)}", ""]
        for p in figures.get(name, []):
            if Path(p).suffix == ".png":
                rel = os.path.relpath(Path(p).resolve(), relative_to) if relative_to else p
                lines += [f"![{name}]({Path(rel).as_posix()})", ""]
        if base in numbers and name == base:
            lines += [numbers[base], ""]
    lines += ["## Run folders", ""]
    lines += [f"- `{r.run_id}`: {r.ordering}, {Path(r.path).name}" for r in runs.itertuples()]
    return "\n".join(lines) + "\n"


def _tolerance() -> float:
    from ggr_kv.collector.checks import COUNTER_TOLERANCE

    return COUNTER_TOLERANCE


def write_report(
    runs: pd.DataFrame,
    out_dir: str | Path,
    *,
    figures: Mapping[str, list[Path]] | None = None,
    predicted: Mapping[str, Any] | None = None,
    data: ReportData | None = None,
    title: str | None = None,
    name: str = "report",
) -> Path:
    """Write the comparison report as Markdown in ``out_dir``, never overwriting.

    Parameters
    ----------
    runs : the runs table of ``ggr_kv.run.runs.load_runs``.
    out_dir : the figures folder (figure links are written relative to it).
    figures : figure name -> saved files (``ComparisonFigures.files``).
    predicted : ordering -> simulator result, for the predicted-vs-measured numbers
        (default: ``data.predicted``).
    data : `report_data` (latency percentiles, plan scores, hit-count cross-check);
        without it those sections are left out.

    Returns
    -------
    The path written: ``NAME.md``, or ``NAME-2.md``, ... when that exists.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = report_text(
        runs, figures=figures, predicted=predicted, data=data, title=title,
        relative_to=out.resolve(),
    )
    k = 1
    while (path := out / (f"{name}.md" if k == 1 else f"{name}-{k}.md")).exists():
        k += 1
    write_atomic(path, text, overwrite=False)
    return path


def reorder_scores(
    table: Any,
    methods: Sequence[str],
    *,
    fds: Any = None,
    query: str = "",
    instruction: str | None = None,
    tokenizer: Any = None,
    block_size: int | None = None,
    knobs: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Reorder ``table`` with each method and score each plan (``ggr_kv.reorder.metrics.score``).

    Parameters
    ----------
    table : a ``Table``, DataFrame, CSV/Parquet path or ``datasets.Dataset``.
    methods : names of ``ggr_kv.reorder.METHODS``.
    fds : FD groups for the reorder methods (default: a Dataset's own).
    knobs : method -> knobs for ``reorder`` (e.g. ``{"ophr": {"max_cells": 64}}``).
        A method that takes run facts (``Ordering.context``, e.g. ``blocks``) gets the
        scoring's tokenizer, block size, query and instruction unless its knobs say
        otherwise, so it optimizes the block hit rate reported here.

    Returns
    -------
    ``(scores, results)``: one row per method (``method``, ``rows``, ``phc``
    (characters^2), ``char_hit_rate``, ``token_hit_rate``, ``block_hit_rate`` (0-1),
    ``prompt_tokens``, ``token_hits`` and ``block_hits`` (tokens), ``solver_s`` (s),
    ``tokenizer``, ``block_size``, ``optimizes`` (the method's objective, in words)), and
    method -> ``ReorderResult``.
    """
    from ggr_kv.analysis.summary import objective_of
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.core.table import Table, load_table
    from ggr_kv.reorder.methods import reorder
    from ggr_kv.reorder.metrics import score
    from ggr_kv.reorder.registry import get_ordering

    frame = getattr(table, "frame", None)
    if isinstance(frame, pd.DataFrame):
        fds = fds if fds is not None else getattr(table, "fds", None)
        tbl = Table.from_frame(frame, source=str(getattr(table, "name", "<Dataset>")))
    else:
        tbl = load_table(table)
    rows, results = [], {}
    for m in methods:
        kw = dict((knobs or {}).get(m, {}))
        facts = {"tokenizer": tokenizer or "llama3", "block_size": block_size or 16,
                 "query": query, "instruction": instruction or DEFAULT_INSTRUCTION}
        o = get_ordering(m)  # one that takes run facts optimizes the score below
        kw = {**{k: facts[k] for k in (o.context if o is not None else ())}, **kw}
        res = reorder(tbl, m, fds=fds, **kw)
        s = score(
            tbl,
            res.plan,
            query=query,
            instruction=instruction or DEFAULT_INSTRUCTION,
            tokenizer=tokenizer,
            block_size=block_size,
        )
        d = s.to_dict()
        for kind in ("token", "block"):
            rate = d.get(f"{kind}_hit_rate")
            d[f"{kind}_hits"] = round(rate * d["prompt_tokens"]) if rate is not None else None
        rows.append({"method": m, **d, "solver_s": res.seconds, "optimizes": objective_of(m)})
        results[m] = res
    cols = [
        "method",
        "rows",
        "phc",
        "char_hit_rate",
        "token_hit_rate",
        "block_hit_rate",
        "prompt_tokens",
        "token_hits",
        "block_hits",
        "solver_s",
        "tokenizer",
        "block_size",
        "optimizes",
    ]
    return pd.DataFrame(rows)[cols], results


def plan_preview(table: Any, plan: Any, n: int = 8, width: int = 32) -> pd.DataFrame:
    """The first ``n`` prompts' rows in run order, fields in their planned order.

    Columns: ``slot``, ``row`` (original position), then ``field 1``, ``field 2``, ... each
    ``name: value`` cut to ``width`` characters. For showing what a reorder grouped.
    """
    from ggr_kv.core.table import Table, load_table

    frame = getattr(table, "frame", None)
    tbl = Table.from_frame(frame) if isinstance(frame, pd.DataFrame) else load_table(table)
    k = min(n, plan.n_rows)
    cols = np.asarray(tbl.columns, dtype=object)
    perm = plan.field_perm[:k]
    cells = tbl.cells[plan.row_order[:k][:, None], perm]
    text = np.char.add(np.char.add(cols[perm].astype(str), ": "), cells.astype(str))
    cut = np.vectorize(lambda s: s if len(s) <= width else s[: width - 1] + "…", otypes=[object])
    out = pd.DataFrame(
        cut(text) if text.size else text, columns=[f"field {j + 1}" for j in range(tbl.n_cols)]
    )
    out.insert(0, "row", plan.row_order[:k])
    out.insert(0, "slot", np.arange(k))
    return out


def demo_table(runs: pd.DataFrame, *, source: str | Path | None = None,
               demo: Mapping[str, Any] | None = None) -> str:
    """The README's demo table: per ordering, prompt tokens, job time median [min-max],
    speedup vs original and measured hit rate, then one line naming what ran where.

    Parameters
    ----------
    source : the folder the runs came from (named in the closing line).
    demo : the demo's ``demo.json`` (wall and CPU time, s; load average at its start and
        end), named in the closing line when given.
    """
    per = _per_ordering(runs)
    table = _table(per, {
        "ordering": ("ordering", str),
        "prompt_tokens": ("prompt tokens", _int),
        "job": ("job s, median [min-max]", str),
        "speedup_vs_original": ("speedup vs original", _x),
        "hit_rate": ("prefix-cache hit rate", lambda v: "n/a (cache off)" if pd.isna(v)
                     else _pct(v)),
    })
    reps = sorted(set(per["n"].astype(int)))
    hw = []
    for r in runs.itertuples():
        meta = json.loads((Path(r.path) / "run.json").read_text())
        cpus = (meta.get("hardware") or {}).get("cpu_count")
        if cpus:
            hw.append(f"{cpus} CPUs")
    bits = [caption(runs), f"jobs per ordering: {'/'.join(map(str, reps))}"]
    if hw:
        bits.append(" / ".join(dict.fromkeys(hw)))
    if demo and demo.get("wall_s") is not None:
        text = f"{demo.get('command', 'demo')} wall time {demo['wall_s']:.0f} s"
        if demo.get("cpu_s") is not None:
            text += f" (CPU time {demo['cpu_s']:.0f} s"
            loads = demo.get("load_average") or []
            if loads:
                text += (f"; the machine's load average was {loads[0]:.1f} at the start, "
                         f"{loads[-1]:.1f} at the end")
            text += ")"
        bits.append(text)
    if source is not None:
        bits.append(f"from `{Path(source).name}`")
    return table + "\n\n" + "; ".join(bits) + ".\n"
